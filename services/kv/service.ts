// startKv: the KV service started from the program that starts the cluster, as the design's
// single-program systems start services. It places each shard's replicas on the cluster's peers
// by the hash ring (or where the caller pins them), asks each peer's KV host to run its replicas,
// waits until every shard has a leader, and hands back a client.
//
// Placement is deterministic (rendezvous hashing of the shard's name over the peer ids, which live
// in the peers' work directories), so a later `startKv` on the same work directories places every
// shard where it was and the replicas recover their data from their stores.

import '../../kmods/transport/polyfill.js'
import { Ring } from '../../kmods/ring/index.js'
import type { PeerNode } from '../../kmods/transport/index.js'
import { KvClient, type KvShardLayout } from './client.js'
import { KvCommandError, KvUnavailableError } from './errors.js'
import { setLocalKvNode } from './local.js'
import type { KvShardStatus } from './protocol.js'
import type { KvConsistency } from './replica.js'

/** What `startKv` needs of a cluster (a `Cluster` of `lamina/cluster` is one). */
export interface KvCluster {
  /** The program's own peer: the client dials from its node. */
  readonly self: { readonly node: PeerNode }
  /** The peers that host replicas. */
  members(): readonly { readonly peerId: string; readonly multiaddrs: readonly string[] }[]
}

/** Options of `startKv`. */
export interface StartKvOptions {
  /** Number of shards (each its own Raft group and revision counter). @default 1 */
  readonly shards?: number
  /** Replicas per shard (3 survives one failure, 5 two). @default 3, or fewer if the cluster has fewer peers */
  readonly replicas?: number
  /** The service's name: shards are `<name>-0` …; two services of different names are independent. @default 'kv' */
  readonly name?: string
  /**
   * Placement annotations: `pin` puts shard `i`'s replicas on the given peer ids (`replicas` of
   * them); other shards are spread by the hash ring over `spread` peers (default: all members).
   */
  readonly placement?: { readonly pin?: Readonly<Record<number, readonly string[]>>; readonly spread?: readonly string[] }
  /** Milliseconds a client call keeps trying before KvUnavailableError. @default 10000 */
  readonly timeoutMs?: number
  /** Milliseconds to wait for every shard to have a leader. @default 30000 */
  readonly readyTimeoutMs?: number
  /** Reads' consistency unless a call says otherwise. @default 'linearizable' */
  readonly consistency?: KvConsistency
  /** Compact each shard's log every this many writes. @default 10000 */
  readonly compactEvery?: number
}

/** A running KV service: a client (get, put, delete, cas, scan, watch, grant) plus its layout and `stop()`. */
export interface Kv extends KvClient {
  /** Where each shard's replicas run. */
  readonly layout: readonly KvShardLayout[]
  /** Every replica's view of its shard (leader, term, revision), from each hosting peer. */
  status(): Promise<KvShardStatus[]>
  /** Stops the client and every replica of the service (their data stays on disk: a later `startKv` recovers it). */
  stop(): Promise<void>
}

/**
 * Starts the KV service on `cluster` and resolves once every shard has a leader.
 *
 * ```ts
 * const cluster = await startCluster({ peers: 3, workdir: '.lamina' })
 * const kv = await startKv(cluster, { shards: 2, replicas: 3 })
 * await kv.put('greeting', 'hello')
 * console.log((await kv.get('greeting'))?.value)
 * await kv.stop()
 * ```
 *
 * @throws KvCommandError when the options do not fit the cluster (more replicas than peers, a pin naming a peer that is not a member).
 * @throws KvUnavailableError when a shard has no leader within `readyTimeoutMs`.
 */
export async function startKv(cluster: KvCluster, options: StartKvOptions = {}): Promise<Kv> {
  const members = cluster.members()
  const addresses = new Map(members.filter((m) => m.multiaddrs.length > 0).map((m) => [m.peerId, m.multiaddrs[0]!]))
  const shards = options.shards ?? 1
  const replicas = options.replicas ?? Math.min(3, addresses.size)
  const name = options.name ?? 'kv'
  if (!Number.isInteger(shards) || shards < 1) throw new KvCommandError('shards', `must be a whole number >= 1, got ${shards}`)
  if (!Number.isInteger(replicas) || replicas < 1) throw new KvCommandError('replicas', `must be a whole number >= 1, got ${replicas}`)
  const spread = options.placement?.spread ?? [...addresses.keys()]
  for (const id of [...spread, ...Object.values(options.placement?.pin ?? {}).flat()])
    if (!addresses.has(id)) throw new KvCommandError('placement', `names peer ${id}, which is not a member of the cluster (members: ${[...addresses.keys()].join(', ')})`)
  if (replicas > spread.length) throw new KvCommandError('replicas', `is ${replicas}, but only ${spread.length} peers can host replicas`)
  const ring = new Ring(spread)
  const layout: KvShardLayout[] = []
  for (let i = 0; i < shards; i++) {
    const shard = `${name}-${i}`
    const pinned = options.placement?.pin?.[i]
    if (pinned !== undefined && pinned.length !== replicas) throw new KvCommandError(`placement.pin.${i}`, `names ${pinned.length} peers; shard ${shard} has ${replicas} replicas`)
    const owners = pinned ?? ring.owners(shard, replicas)
    layout.push({ shard, members: Object.fromEntries(owners.map((id) => [id, addresses.get(id)!])) })
  }
  setLocalKvNode(cluster.self.node)
  const client = new KvClient({
    node: cluster.self.node,
    shards: layout,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    ...(options.consistency === undefined ? {} : { consistency: options.consistency }),
  })
  await Promise.all(
    layout.flatMap((s) =>
      Object.keys(s.members).map((peer) =>
        client.askPeer(peer, s.members[peer]!, {
          type: 'open',
          shard: s.shard,
          members: s.members,
          ...(options.compactEvery === undefined ? {} : { compactEvery: options.compactEvery }),
        }),
      ),
    ),
  )
  // Every member keeps the layout, so that a client started later (`lamina kv`) finds the shards.
  await Promise.all([...addresses].map(([peer, address]) => client.askPeer(peer, address, { type: 'layout', name, shards: layout })))
  const status = async (): Promise<KvShardStatus[]> => {
    const hosts = [...new Set(layout.flatMap((s) => Object.keys(s.members)))]
    const answers = await Promise.allSettled(hosts.map((peer) => client.askPeer(peer, addresses.get(peer)!, { type: 'status' }) as Promise<KvShardStatus[]>))
    const names = new Set(layout.map((s) => s.shard))
    return answers.flatMap((a) => (a.status === 'fulfilled' ? a.value.filter((s) => names.has(s.shard)) : []))
  }
  const deadline = performance.now() + (options.readyTimeoutMs ?? 30_000)
  for (;;) {
    const led = new Set((await status()).filter((s) => s.isLeader).map((s) => s.shard))
    const missing = layout.filter((s) => !led.has(s.shard)).map((s) => s.shard)
    if (missing.length === 0) break
    if (performance.now() > deadline) {
      client.close()
      throw new KvUnavailableError(missing[0]!, 'start', `shards ${missing.join(', ')} have no leader after ${options.readyTimeoutMs ?? 30_000} ms`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  let stopping: Promise<void> | undefined
  return Object.assign(client, {
    layout,
    status,
    stop: () =>
      (stopping ??= (async () => {
        await Promise.allSettled(layout.flatMap((s) => Object.keys(s.members).map((peer) => client.askPeer(peer, s.members[peer]!, { type: 'close', shard: s.shard }))))
        client.close()
      })()),
  })
}
