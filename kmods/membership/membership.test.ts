// Tests of gossip membership with real peer nodes on loopback, and a member in another process killed with SIGKILL.
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { filter, firstValueFrom, timeout } from 'rxjs'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { memoryLogger, createPeerNode, type PeerNode, generatePsk, writePskFile, type Psk } from '../transport/index.js'
import { createMembership, startMembership, type Membership, type MembershipEvent, type MembershipEventType, type MembershipOptions } from './index.js'

const FAST = { heartbeatMs: 100, suspectAfterMs: 600, deadAfterMs: 1200 } as const
/** The defaults of startMembership, used where the timing itself is under test. */
const DEFAULTS = { heartbeatMs: 200, suspectAfterMs: 1000, deadAfterMs: 2000 } as const

let dir: string
let psk: Psk
let cleanups: (() => Promise<unknown> | unknown)[] = []
let counter = 0

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lamina-membership-'))
  psk = generatePsk()
})
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
  cleanups = []
  rmSync(dir, { recursive: true, force: true })
})

async function peer(options: MembershipOptions = {}, tags: Record<string, string> = {}): Promise<{ node: PeerNode; membership: Membership; events: MembershipEvent[] }> {
  const node = await createPeerNode({ workdir: join(dir, `peer-${counter++}`), psk, tags, logger: memoryLogger() })
  cleanups.push(() => node.stop())
  const membership = createMembership(node, { ...FAST, ...options })
  cleanups.push(() => membership.stop())
  const events: MembershipEvent[] = []
  membership.events.subscribe((event) => events.push(event))
  await membership.start()
  return { node, membership, events }
}

/** The first event of `type` about `peerId`, within `ms`. */
function event(membership: Membership, type: MembershipEventType, peerId: string, ms = 10_000): Promise<MembershipEvent> {
  return firstValueFrom(
    membership.events.pipe(
      filter((e) => e.type === type && e.member.peerId === peerId),
      timeout(ms),
    ),
  )
}

/** Resolves once `membership` sees exactly these peers as live members. */
function converged(membership: Membership, peers: string[], ms = 10_000): Promise<void> {
  const done = (): boolean =>
    membership
      .members()
      .map((m) => m.peerId)
      .sort()
      .join() === [...peers].sort().join()
  if (done()) return Promise.resolve()
  return firstValueFrom(
    membership.events.pipe(
      filter(() => done()),
      timeout(ms),
    ),
  ).then(() => undefined)
}

describe('membership', () => {
  it('three peers joining through different members converge, with their tags', async () => {
    const a = await peer({}, { zone: 'a' })
    const b = await peer({ bootstrap: [a.node.multiaddrs()[0]!] }, { zone: 'b' })
    const c = await peer({ bootstrap: [b.node.multiaddrs()[0]!] }, { zone: 'c' })
    const ids = [a, b, c].map((p) => p.node.peerId)
    await Promise.all([a, b, c].map((p) => converged(p.membership, ids)))
    for (const p of [a, b, c]) {
      const view = p.membership.members()
      expect(view.filter((m) => m.self).map((m) => m.peerId)).toEqual([p.node.peerId])
      expect(Object.fromEntries(view.map((m) => [m.peerId, m.tags.zone]))).toEqual({ [a.node.peerId]: 'a', [b.node.peerId]: 'b', [c.node.peerId]: 'c' })
      expect(view.every((m) => m.status === 'alive')).toBe(true)
      // Each peer saw the two others join, once.
      expect(
        p.events
          .filter((e) => e.type === 'join')
          .map((e) => e.member.peerId)
          .sort(),
      ).toEqual(ids.filter((id) => id !== p.node.peerId).sort())
    }
    // c learnt of a only through gossip (it joined through b).
    expect(c.membership.members().find((m) => m.peerId === a.node.peerId)?.multiaddrs).toEqual(a.node.multiaddrs())
  })

  it('a member killed with SIGKILL is suspected, then declared dead by the others within the timeout', async () => {
    const a = await peer(DEFAULTS)
    const b = await peer({ ...DEFAULTS, bootstrap: [a.node.multiaddrs()[0]!] })
    const pskFile = join(dir, 'swarm.key')
    await writePskFile(pskFile, psk)
    const child: ChildProcess = fork(
      fileURLToPath(new URL('./fixtures/member.ts', import.meta.url)),
      [join(dir, 'child'), pskFile, String(DEFAULTS.heartbeatMs), String(DEFAULTS.suspectAfterMs), String(DEFAULTS.deadAfterMs), b.node.multiaddrs()[0]!],
      { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    )
    const exited = new Promise<string | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)))
    cleanups.push(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    })
    const ready = await new Promise<{ peerId: string; pid: number }>((resolve) => child.once('message', resolve))
    const ids = [a.node.peerId, b.node.peerId, ready.peerId]
    await Promise.all([converged(a.membership, ids, 20_000), converged(b.membership, ids, 20_000)])
    expect(a.membership.members().find((m) => m.peerId === ready.peerId)?.tags).toEqual({ role: 'child' })

    const suspects = Promise.all([a, b].map((p) => event(p.membership, 'suspect', ready.peerId)))
    const deaths = Promise.all([a, b].map((p) => event(p.membership, 'dead', ready.peerId)))
    const killedAt = Date.now()
    child.kill('SIGKILL')
    expect(await exited).toBe('SIGKILL')
    const [suspected, dead] = await Promise.all([suspects, deaths])
    for (let i = 0; i < 2; i++) {
      const afterKill = dead[i]!.at - killedAt
      // Its last heartbeat reached the others at most a gossip round before the kill, and they
      // check every heartbeat: dead between deadAfterMs - 2 rounds and deadAfterMs + 3 rounds (+ scheduling slack).
      expect(afterKill).toBeGreaterThanOrEqual(DEFAULTS.deadAfterMs - 2 * DEFAULTS.heartbeatMs)
      expect(afterKill).toBeLessThanOrEqual(DEFAULTS.deadAfterMs + 3 * DEFAULTS.heartbeatMs + 500)
      expect(suspected[i]!.at).toBeLessThan(dead[i]!.at)
      expect(suspected[i]!.at - killedAt).toBeGreaterThanOrEqual(DEFAULTS.suspectAfterMs - 2 * DEFAULTS.heartbeatMs)
    }
    expect(
      a.membership
        .members()
        .map((m) => m.peerId)
        .sort(),
    ).toEqual([a.node.peerId, b.node.peerId].sort())
    expect(a.membership.table().find((m) => m.peerId === ready.peerId)?.status).toBe('dead')
  })

  it('a graceful leave gives leave events, not suspicion', async () => {
    const a = await peer()
    const b = await peer({ bootstrap: [a.node.multiaddrs()[0]!] })
    const c = await peer({ bootstrap: [a.node.multiaddrs()[0]!] })
    const ids = [a, b, c].map((p) => p.node.peerId)
    await Promise.all([a, b, c].map((p) => converged(p.membership, ids)))
    const leaves = Promise.all([a, c].map((p) => event(p.membership, 'leave', b.node.peerId, 3000)))
    const started = Date.now()
    await b.membership.leave()
    const left = await leaves
    // Told directly, not found out by timeout.
    for (const e of left) expect(e.at - started).toBeLessThan(FAST.suspectAfterMs)
    for (const p of [a, c]) {
      expect(
        p.membership
          .members()
          .map((m) => m.peerId)
          .sort(),
      ).toEqual([a.node.peerId, c.node.peerId].sort())
      expect(p.events.filter((e) => e.member.peerId === b.node.peerId).map((e) => e.type)).toEqual(['join', 'leave'])
    }
    await expect(b.membership.leave()).rejects.toMatchObject({ code: 'ERR_MEMBERSHIP_STOPPED' })
  })

  it('a restarted member (same peer id, new generation) joins again', async () => {
    const a = await peer()
    const workdir = join(dir, 'restarting')
    const first = await createPeerNode({ workdir, psk, logger: memoryLogger() })
    const m1 = await startMembership(first, { ...FAST, bootstrap: [a.node.multiaddrs()[0]!] })
    await converged(a.membership, [a.node.peerId, first.peerId])
    await m1.stop()
    await first.stop()
    await event(a.membership, 'dead', first.peerId)
    const second = await createPeerNode({ workdir, psk, logger: memoryLogger() })
    cleanups.push(() => second.stop())
    const rejoined = event(a.membership, 'join', second.peerId)
    const m2 = await startMembership(second, { ...FAST, bootstrap: [a.node.multiaddrs()[0]!] })
    cleanups.push(() => m2.stop())
    expect(second.peerId).toBe(first.peerId)
    expect((await rejoined).member.status).toBe('alive')
  })

  it('fails to join with a typed error when no bootstrap address answers, and checks its options', async () => {
    const a = await peer()
    const address = a.node.multiaddrs()[0]!
    const node = await createPeerNode({ workdir: join(dir, 'lonely'), psk, logger: memoryLogger() })
    cleanups.push(() => node.stop())
    await a.membership.stop()
    await a.node.stop()
    await expect(startMembership(node, { ...FAST, bootstrap: [address] })).rejects.toMatchObject({ code: 'ERR_MEMBERSHIP_JOIN', message: expect.stringContaining(address) })
    await expect(startMembership(node, { heartbeatMs: 100, suspectAfterMs: 500, deadAfterMs: 400 })).rejects.toMatchObject({ code: 'ERR_MEMBERSHIP_OPTION' })
  })
})
