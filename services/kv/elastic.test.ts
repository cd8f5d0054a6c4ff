// Elasticity of the KV service on real peer processes: when a peer joins, replicas move onto it
// by the hash ring; when one leaves, its replicas move off. Writers run throughout, and every
// acknowledged write is there afterwards.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCluster, type Cluster } from 'lamina/cluster'
import { memoryLogger } from 'lamina/transport'
import { until } from 'lamina/testing'
import { afterEach, describe, expect, it } from 'vitest'
import { startKv, type Kv } from './index.js'

let dir = ''
let cluster: Cluster | undefined
let kv: Kv | undefined
afterEach(async () => {
  await kv?.stop()
  await cluster?.stop()
  if (dir !== '') await rm(dir, { recursive: true, force: true })
})

describe('an elastic KV service', () => {
  it('moves replicas onto a peer that joins and off one that leaves, losing no acknowledged write', async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-kv-elastic-'))
    cluster = await startCluster({ peers: 3, spares: 1, workdir: dir, logger: memoryLogger() })
    kv = await startKv(cluster, { shards: 2, replicas: 3, elastic: true, timeoutMs: 15_000 })
    const store = kv
    const first = store.layout.map((s) => Object.keys(s.members).sort())

    // Writers: each owns its keys, so the last acknowledged value of each key is known.
    const acked = new Map<string, string>()
    let running = true
    const writers = Array.from({ length: 4 }, async (_, w) => {
      for (let n = 0; running; n++) {
        const key = `w${w}/k${n % 10}`
        await store.put(key, String(n))
        acked.set(key, String(n))
      }
    })
    try {
      const joined = await cluster.addPeer!()
      // The ring over four peers puts some replica on the new one; every shard keeps three.
      await until(() => store.layout.some((s) => joined.peerId in s.members), 60_000, 'a replica to move onto the new peer')
      // Queued behind the rebalance the join started: resolves once the layout is settled.
      expect(await store.rebalance()).toEqual([])
      await until(async () => (await store.status()).filter((s) => s.isLeader).length === 2, 30_000, 'every shard led')
      expect(store.layout.every((s) => Object.keys(s.members).length === 3)).toBe(true)
      expect(store.layout.map((s) => Object.keys(s.members).sort())).not.toEqual(first)

      // A peer that hosts replicas leaves: they move to the others.
      const leaving = cluster.members().findIndex((m) => store.layout.some((s) => m.peerId in s.members && m.peerId !== joined.peerId))
      const gone = cluster.members()[leaving]!.peerId
      await cluster.removePeer!(leaving)
      await until(() => store.layout.every((s) => !(gone in s.members)), 60_000, 'the replicas of the peer that left to move off it')
      expect(await store.rebalance()).toEqual([])
      expect(store.layout.every((s) => Object.keys(s.members).length === 3)).toBe(true)
    } finally {
      running = false
      await Promise.all(writers)
    }
    expect(acked.size).toBe(40)
    for (const [key, value] of acked) expect((await store.get(key))?.value, key).toBe(value)
    // Every replica in the layout has the data (serializable reads on each replica's own state).
    const status = await store.status()
    for (const s of store.layout)
      expect(status.filter((x) => x.shard === s.shard).map((x) => [...x.members].sort())).toEqual(Object.keys(s.members).map(() => Object.keys(s.members).sort()))
  }, 180_000)
})
