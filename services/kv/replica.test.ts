// A KV shard replicated on 3 real libp2p peers (each with its own SQLite file): writes through the
// Raft log, linearizable reads on the leader, serializable reads on followers, typed refusals.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { until } from 'lamina/testing'
import { afterEach, describe, expect, it } from 'vitest'
import { RaftNotLeaderError } from '../../kmods/raft/index.js'
import { openStore, type Store } from '../../kmods/store/index.js'
import { createPeerNode, generatePsk, memoryLogger, type PeerNode } from '../../kmods/transport/index.js'
import { KvLimitError, startKvReplica, type KvReplica } from './index.js'

let dir = ''
const nodes: PeerNode[] = []
const stores: Store[] = []
const replicas: KvReplica[] = []
afterEach(async () => {
  await Promise.all(replicas.splice(0).map((r) => r.stop()))
  await Promise.all(nodes.splice(0).map((n) => n.stop()))
  for (const s of stores.splice(0)) s.close()
  rmSync(dir, { recursive: true, force: true })
})

describe('a KV shard on 3 peers', () => {
  it('writes through the log, reads linearizably on the leader and serializably anywhere', async () => {
    dir = mkdtempSync(join(tmpdir(), 'lamina-kv-'))
    const psk = generatePsk()
    for (let i = 0; i < 3; i++) nodes.push(await createPeerNode({ workdir: join(dir, `p${i}`), psk, logger: memoryLogger() }))
    const members = Object.fromEntries(nodes.map((n) => [n.peerId, n.multiaddrs()[0]!]))
    for (const [i, node] of nodes.entries()) {
      const store = openStore(join(dir, `p${i}`, 'kv.db'))
      stores.push(store)
      replicas.push(await startKvReplica({ node, members, store, tickMs: 20 }))
    }
    await until(() => replicas.some((r) => r.isLeader), 15_000, 'a leader')
    const leader = replicas.find((r) => r.isLeader)!
    const follower = replicas.find((r) => !r.isLeader)!

    expect(await leader.put('a', '1')).toMatchObject({ ok: true, revision: 1 })
    expect(await leader.cas('lock', 'me', { ifModRevision: 0 })).toMatchObject({ ok: true, revision: 2 })
    expect(await leader.cas('lock', 'you', { ifModRevision: 0 })).toMatchObject({ ok: false, revision: 2 })
    expect(await leader.put('a', '3')).toMatchObject({ ok: true, revision: 3, prev: { value: '1' } })
    expect(await leader.get('a')).toMatchObject({ value: '3', createRevision: 1, modRevision: 3, version: 2 })
    expect((await leader.scan({ prefix: '' })).map((e) => e.key)).toEqual(['a', 'lock'])
    expect(await leader.delete('a')).toMatchObject({ ok: true, revision: 4 })
    expect(await leader.get('a')).toBeUndefined()

    // A follower serves serializable reads from its own state (it catches up), refuses the rest.
    await until(() => follower.leader !== undefined, 5_000, 'the follower knows the leader')
    let entry: Awaited<ReturnType<KvReplica['get']>>
    await until(
      () => {
        void follower.get('lock', { consistency: 'serializable' }).then((e) => (entry = e))
        return entry !== undefined
      },
      5_000,
      'the follower applied the lock',
    )
    expect(entry).toMatchObject({ value: 'me', modRevision: 2 })
    await expect(follower.get('lock')).rejects.toBeInstanceOf(RaftNotLeaderError)
    await expect(follower.put('b', '1')).rejects.toMatchObject({ code: 'ERR_RAFT_NOT_LEADER', retryable: true, leader: expect.any(String) })
    // Limits are checked before anything is proposed.
    await expect(leader.put('k'.repeat(2000), 'x')).rejects.toBeInstanceOf(KvLimitError)
    expect((await leader.get('lock'))?.modRevision).toBe(2)
  }, 60_000)
})
