// A Raft group of 3 real libp2p peers on loopback (noise, yamux, the private-network key), each
// with its log in its own SQLite file: election, replication, a leader stopped, a restart from
// disk, and hostile frames refused with the group serving on.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { lpStream } from '@libp2p/utils'
import { until } from 'lamina/testing'
import { afterEach, describe, expect, it } from 'vitest'
import { openStore, type Store } from '../store/index.js'
import { createPeerNode, generatePsk, memoryLogger, type PeerNode } from '../transport/index.js'
import { RAFT_PROTOCOL, RaftNotLeaderError, RaftStorage, startRaftGroup, type RaftGroup } from './index.js'

const psk = generatePsk()
let dir = ''
const nodes: PeerNode[] = []
const stores: Store[] = []
const groups: RaftGroup[] = []

afterEach(async () => {
  await Promise.all(groups.splice(0).map((g) => g.stop()))
  await Promise.all(nodes.splice(0).map((n) => n.stop()))
  for (const s of stores.splice(0)) s.close()
  if (dir !== '') rmSync(dir, { recursive: true, force: true })
  dir = ''
})

interface Member {
  node: PeerNode
  group: RaftGroup
  applied: string[]
  logger: ReturnType<typeof memoryLogger>
}

async function startMembers(n: number, compactEvery = 0): Promise<{ members: Member[]; addresses: Record<string, string>; restart: (i: number) => Promise<Member> }> {
  dir = mkdtempSync(join(tmpdir(), 'lamina-raft-group-'))
  const started: PeerNode[] = []
  const loggers = Array.from({ length: n }, () => memoryLogger())
  for (let i = 0; i < n; i++) started.push(await createPeerNode({ workdir: join(dir, `p${i}`), psk, logger: loggers[i]! }))
  nodes.push(...started)
  const addresses = Object.fromEntries(started.map((node) => [node.peerId, node.multiaddrs()[0]!]))
  const member = async (i: number, node: PeerNode): Promise<Member> => {
    const store = openStore(join(dir, `p${i}`, 'raft.db'))
    stores.push(store)
    const applied: string[] = []
    // The state machine is the list of applied commands; its snapshot is that list as JSON.
    const snapshot = { every: compactEvery, take: () => JSON.stringify(applied), load: (data: string) => void applied.splice(0, applied.length, ...(JSON.parse(data) as string[])) }
    const group = await startRaftGroup({
      node,
      group: 'g',
      members: addresses,
      storage: new RaftStorage(store, 'g'),
      apply: (data) => void applied.push(data),
      tickMs: 20,
      ...(compactEvery > 0 ? { snapshot } : {}),
    })
    groups.push(group)
    return { node, group, applied, logger: loggers[i]! }
  }
  const members = await Promise.all(started.map((node, i) => member(i, node)))
  const restart = async (i: number): Promise<Member> => {
    const old = members[i]!
    await old.group.stop()
    stores.find((s) => s.path === join(dir, `p${i}`, 'raft.db'))?.close()
    members[i] = await member(i, old.node)
    return members[i]!
  }
  return { members, addresses, restart }
}

async function leaderOf(members: readonly Member[], except?: string): Promise<Member> {
  let found: Member | undefined
  await until(
    () => {
      found = members.find((m) => m.group.isLeader && m.node.peerId !== except)
      return found !== undefined
    },
    15_000,
    'a leader',
  )
  return found!
}

describe('a Raft group over libp2p', () => {
  it('elects a leader, commits proposals on every member in one order, and survives its leader stopping', async () => {
    const { members } = await startMembers(3)
    const leader = await leaderOf(members)
    const follower = members.find((m) => m !== leader)!
    await expect(follower.group.propose('x')).rejects.toBeInstanceOf(RaftNotLeaderError)
    for (let i = 0; i < 20; i++) await leader.group.propose(`a${i}`)
    const first = Array.from({ length: 20 }, (_, i) => `a${i}`)
    // A linearizable read on the leader sees every acknowledged write; a follower refuses one.
    await leader.group.read()
    expect(leader.applied).toEqual(first)
    await expect(follower.group.read()).rejects.toBeInstanceOf(RaftNotLeaderError)
    await until(() => members.every((m) => m.applied.length === 20), 10_000, 'every member applied 20 commands')
    for (const m of members) expect(m.applied).toEqual(first)
    // The leader stops; the other two elect one of themselves and go on.
    await leader.group.stop()
    const survivors = members.filter((m) => m !== leader)
    const next = await leaderOf(survivors)
    expect(next.group.term).toBeGreaterThan(leader.group.term)
    await next.group.propose('b0')
    await until(() => survivors.every((m) => m.applied.at(-1) === 'b0'), 10_000, 'the survivors applied b0')
    for (const m of survivors) expect(m.applied).toEqual([...first, 'b0'])
  }, 60_000)

  it('a member restarted from its SQLite file applies the whole log again and catches up', async () => {
    const { members, restart } = await startMembers(3)
    const leader = await leaderOf(members)
    for (let i = 0; i < 10; i++) await leader.group.propose(`c${i}`)
    const index = members.findIndex((m) => m !== leader)
    await until(() => members[index]!.applied.length === 10, 10_000, 'the follower applied 10')
    const again = await restart(index)
    for (let i = 10; i < 15; i++) await (await leaderOf(members)).group.propose(`c${i}`)
    await until(() => again.applied.length === 15, 10_000, 'the restarted member applied all 15')
    expect(again.applied).toEqual(Array.from({ length: 15 }, (_, i) => `c${i}`))
  }, 60_000)

  it("with compaction, a member stopped while the log moves on rejoins from the leader's snapshot, and restarts from its own", async () => {
    const { members, restart } = await startMembers(3, 5)
    const leader = await leaderOf(members)
    const index = members.findIndex((m) => m !== leader)
    await members[index]!.group.stop()
    for (let i = 0; i < 30; i++) await leader.group.propose(`d${i}`)
    const all = Array.from({ length: 30 }, (_, i) => `d${i}`)
    const again = await restart(index)
    await until(() => again.applied.length === 30, 10_000, 'the returning member caught up')
    expect(again.applied).toEqual(all)
    // Its own snapshot is on disk now: a second restart loads it and applies only what follows.
    await (await leaderOf(members)).group.propose('d30')
    await until(() => again.applied.at(-1) === 'd30', 10_000, 'd30 applied')
    const third = await restart(index)
    await until(() => third.applied.length === 31, 10_000, 'restarted from its snapshot')
    expect(third.applied).toEqual([...all, 'd30'])
  }, 60_000)

  it('a snapshot bigger than a frame travels in chunks', async () => {
    const { members, restart } = await startMembers(3, 5)
    const leader = await leaderOf(members)
    const index = members.findIndex((m) => m !== leader)
    await members[index]!.group.stop()
    // 12 commands of 256 KiB: a snapshot of about 3 MiB of data, 3 chunks.
    const big = (i: number): string => `${i}:`.padEnd(256 * 1024, String(i % 10))
    for (let i = 0; i < 12; i++) await leader.group.propose(big(i))
    const again = await restart(index)
    await until(() => again.applied.length === 12, 20_000, 'the returning member caught up from the chunked snapshot')
    expect(again.applied.map((a) => a.length)).toEqual(Array.from({ length: 12 }, () => 256 * 1024))
    expect(again.applied[11]).toBe(big(11))
    expect(again.group.refused).toBe(0)
  }, 60_000)

  it('refuses malformed, spoofed and unknown-group frames with a line naming the peer, and keeps serving', async () => {
    const { members } = await startMembers(3)
    const leader = await leaderOf(members)
    const target = members.find((m) => m !== leader)!
    // A fourth peer with the swarm key (an admitted peer) sends garbage on the Raft protocol.
    const intruder = await createPeerNode({ workdir: join(dir, 'intruder'), psk, logger: memoryLogger() })
    nodes.push(intruder)
    const lp = lpStream(await intruder.dialProtocol(target.node.multiaddrs()[0]!, RAFT_PROTOCOL))
    const send = (value: unknown) => lp.write(new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value)))
    await send('{not json')
    await send({ group: 'g', message: { type: 'append', from: intruder.peerId, to: target.node.peerId, term: 'high' } })
    await send({ group: 'g', message: { type: 'vote', from: leader.node.peerId, to: target.node.peerId, term: 999, lastIndex: 999, lastTerm: 999 } })
    await send({ group: 'nope', message: { type: 'vote-reply', from: intruder.peerId, to: target.node.peerId, term: 1, granted: true } })
    await until(() => target.group.refused >= 4, 10_000, 'four frames refused')
    const lines = target.logger.lines.filter((l) => l.includes('raft: refused a message from'))
    expect(lines.every((l) => l.includes(intruder.peerId))).toBe(true)
    expect(lines.join('\n')).toMatch(/not JSON/)
    expect(lines.join('\n')).toMatch(/bad field .*term/)
    expect(lines.join('\n')).toMatch(new RegExp(`claims to come from ${leader.node.peerId}`))
    expect(lines.join('\n')).toMatch(/group "nope" does not run here/)
    // The spoofed vote of term 999 changed nothing; the group still commits.
    expect(target.group.term).toBeLessThan(999)
    await (await leaderOf(members)).group.propose('after')
    await until(() => members.every((m) => m.applied.at(-1) === 'after'), 10_000, 'every member applied "after"')
  }, 60_000)
})
