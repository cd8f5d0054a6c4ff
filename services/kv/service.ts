// startKv: the KV service started from the program that starts the cluster, as the design's
// single-program systems start services. It places each shard's replicas on the cluster's peers
// by the hash ring (or where the caller pins them), asks each peer's KV host to run its replicas,
// waits until every shard has a leader, and hands back a client.
//
// Placement is deterministic (rendezvous hashing of the shard's name over the peer ids, which live
// in the peers' work directories), so a later `startKv` on the same work directories places every
// shard where it was and the replicas recover their data from their stores.

import '../../kmods/transport/polyfill.js'
import type { Observable } from 'rxjs'
import { Ring } from '../../kmods/ring/index.js'
import type { PeerNode } from '../../kmods/transport/index.js'
import { KvClient, type KvShardLayout } from './client.js'
import { KvCommandError, KvUnavailableError } from './errors.js'
import { setLocalKvNode } from './local.js'
import type { KvShardStatus } from './protocol.js'
import type { KvConsistency } from './replica.js'

/** What `startKv` needs of a cluster (a `Cluster` of `lamina/cluster` is one). */
export interface KvCluster {
  /** The program's own peer: the client dials from its node; with `elastic`, its membership says who joins and leaves. */
  readonly self: {
    readonly node: PeerNode
    readonly membership?: {
      readonly events: Observable<{ readonly type: string; readonly member: { readonly peerId: string } }>
      members(): readonly { readonly peerId: string; readonly status: string }[]
    }
  }
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
  /**
   * `linearizable` (the default): each shard is a Raft group, and reads are linearizable unless a
   * call asks for `serializable`. `eventual`: any replica answers at once from its own copy, last
   * writer wins by a hybrid logical clock, and replicas converge by anti-entropy (eventual.ts);
   * no cas, watch or leases then.
   */
  readonly consistency?: KvConsistency | 'eventual'
  /** Compact each shard's log every this many writes. @default 10000 */
  readonly compactEvery?: number
  /**
   * Elasticity: when a member joins, leaves or is declared dead, move replicas so that each shard
   * sits where the hash ring over the live members puts it (one replica at a time; see
   * `rebalance`). Pinned shards stay. @default false
   */
  readonly elastic?: boolean
}

/** A running KV service: a client (get, put, delete, cas, scan, watch, grant) plus its layout and `stop()`. */
export interface Kv extends KvClient {
  /** Every replica's view of its shard (leader, term, revision), from each hosting peer. */
  status(): Promise<KvShardStatus[]>
  /**
   * Moves one replica of `shard` from peer `from` to peer `to` while the shard serves: starts a
   * replica on `to`, adds it to the shard's Raft group, removes `from`, and drops its data there.
   * No acknowledged write is lost: every step is a committed membership change of one replica.
   */
  move(shard: string, from: string, to: string): Promise<void>
  /**
   * Moves replicas until every unpinned shard sits on the peers the hash ring over the cluster's
   * live members (`members()`) chooses, one replica at a time. Resolves with the moves made.
   */
  rebalance(): Promise<{ readonly shard: string; readonly from: string; readonly to: string }[]>
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
  // The members that have an id and an address (a peer still starting may be listed without them).
  // A peer that left or died is not live, even while the cluster still lists it; gossip says which are alive.
  const members = (): { readonly peerId: string; readonly multiaddrs: readonly string[] }[] => {
    const gossip = cluster.self.membership?.members()
    const alive = gossip === undefined ? undefined : new Set(gossip.filter((m) => m.status === 'alive').map((m) => m.peerId))
    return cluster
      .members()
      .filter((m) => typeof m.peerId === 'string' && m.peerId !== '' && m.multiaddrs !== undefined && m.multiaddrs.length > 0 && (alive === undefined || alive.has(m.peerId)))
  }
  const addresses = new Map(members().map((m) => [m.peerId, m.multiaddrs[0]!]))
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
  const eventual = options.consistency === 'eventual'
  const layout: KvShardLayout[] = []
  for (let i = 0; i < shards; i++) {
    const shard = `${name}-${i}`
    const pinned = options.placement?.pin?.[i]
    if (pinned !== undefined && pinned.length !== replicas) throw new KvCommandError(`placement.pin.${i}`, `names ${pinned.length} peers; shard ${shard} has ${replicas} replicas`)
    const owners = pinned ?? ring.owners(shard, replicas)
    const members = Object.fromEntries(owners.map((id) => [id, addresses.get(id)!]))
    layout.push(eventual ? { shard, members, mode: 'eventual' } : { shard, members })
  }
  // A service started before on these work directories keeps the layout it had (replicas may
  // have moved since the ring placed them): the members remember it.
  const stored = await storedLayout(cluster.self.node, addresses, name)
  if (stored !== undefined && stored.length !== shards)
    throw new KvCommandError(
      'shards',
      `is ${shards}, but service ${JSON.stringify(name)} on these work directories has ${stored.length} shards (changing the number of shards is not supported): ask for ${stored.length}`,
    )
  if (stored?.every((s) => Object.keys(s.members).every((peer) => addresses.has(peer)))) {
    if (stored.some((s) => (s.mode === 'eventual') !== eventual))
      throw new KvCommandError(
        'consistency',
        `service ${JSON.stringify(name)} on these work directories was started ${eventual ? 'linearizable' : 'eventual'}: the mode cannot change`,
      )
    layout.splice(0, layout.length, ...stored.map((s) => ({ ...s, members: Object.fromEntries(Object.keys(s.members).map((peer) => [peer, addresses.get(peer)!])) })))
  }
  setLocalKvNode(cluster.self.node)
  const client = new KvClient({
    node: cluster.self.node,
    shards: layout,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    ...(options.consistency === undefined || options.consistency === 'eventual' ? {} : { consistency: options.consistency }),
  })
  await Promise.all(
    layout.flatMap((s) =>
      Object.keys(s.members).map((peer) =>
        client.askPeer(peer, s.members[peer]!, {
          type: 'open',
          shard: s.shard,
          members: s.members,
          ...(eventual ? { mode: 'eventual' } : {}),
          ...(options.compactEvery === undefined ? {} : { compactEvery: options.compactEvery }),
        }),
      ),
    ),
  )
  // Every member keeps the layout, so that a client started later (`lamina kv`) finds the shards.
  await Promise.all([...addresses].map(([peer, address]) => client.askPeer(peer, address, { type: 'layout', name, shards: layout })))
  const status = async (): Promise<KvShardStatus[]> => {
    const hosts = new Map(client.layout.flatMap((s) => Object.entries(s.members)))
    const answers = await Promise.allSettled([...hosts].map(([peer, address]) => client.askPeer(peer, address, { type: 'status' }, 3000) as Promise<KvShardStatus[]>))
    const names = new Set(client.layout.map((s) => s.shard))
    return answers.flatMap((a) => (a.status === 'fulfilled' ? a.value.filter((s) => names.has(s.shard)) : []))
  }
  const deadline = performance.now() + (options.readyTimeoutMs ?? 30_000)
  for (;;) {
    // A Raft shard is ready once it has a leader; an eventual one once its replicas run.
    const led = new Set((await status()).filter((s) => s.isLeader || s.mode === 'eventual').map((s) => s.shard))
    const missing = layout.filter((s) => !led.has(s.shard)).map((s) => s.shard)
    if (missing.length === 0) break
    if (performance.now() > deadline) {
      client.close()
      throw new KvUnavailableError(missing[0]!, 'start', `shards ${missing.join(', ')} have no leader after ${options.readyTimeoutMs ?? 30_000} ms`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  let stopping: Promise<void> | undefined
  const addressOf = (peer: string): string | undefined => {
    const member = members().find((m) => m.peerId === peer)
    return member?.multiaddrs[0] ?? addresses.get(peer)
  }
  // One change of layout at a time: moves and rebalances queue behind each other.
  let changing: Promise<unknown> = Promise.resolve()
  const serially = <T>(fn: () => Promise<T>): Promise<T> => {
    const next = changing.then(fn, fn)
    changing = next.catch(() => undefined)
    return next
  }
  const move = async (shard: string, from: string, to: string): Promise<void> => {
    const current = client.layout.find((s) => s.shard === shard)
    if (current === undefined) throw new KvCommandError('shard', `${JSON.stringify(shard)} is not a shard of ${name}`)
    if (!(from in current.members)) throw new KvCommandError('from', `peer ${from} has no replica of ${shard}`)
    if (to in current.members) throw new KvCommandError('to', `peer ${to} already has a replica of ${shard}`)
    if (current.mode === 'eventual') throw new KvCommandError('shard', `${shard} is in the eventual mode: its replicas do not move (yet)`)
    const toAddress = addressOf(to)
    if (toAddress === undefined) throw new KvCommandError('to', `peer ${to} is not a member of the cluster`)
    const grown = { ...current.members, [to]: toAddress }
    await client.askPeer(to, toAddress, { type: 'open', shard, members: grown, ...(options.compactEvery === undefined ? {} : { compactEvery: options.compactEvery }) })
    await client.reconfigure(shard, grown)
    const shrunk = Object.fromEntries(Object.entries(grown).filter(([peer]) => peer !== from))
    await client.reconfigure(shard, shrunk)
    // The replica moved away stops and drops its copy (if its peer is still there to ask).
    await client.askPeer(from, current.members[from]!, { type: 'close', shard, drop: true }, 3000).catch(() => undefined)
    await saveLayout()
  }
  const saveLayout = async (): Promise<void> => {
    await Promise.allSettled(members().map((m) => client.askPeer(m.peerId, m.multiaddrs[0]!, { type: 'layout', name, shards: client.layout }, 3000)))
  }
  const rebalance = async (): Promise<{ shard: string; from: string; to: string }[]> => {
    const live = members().map((m) => m.peerId)
    const moves: { shard: string; from: string; to: string }[] = []
    if (live.length < replicas) return moves
    const ring = new Ring(live)
    for (const [i, s] of client.layout.entries()) {
      if (options.placement?.pin?.[i] !== undefined || s.mode === 'eventual') continue
      const want = ring.owners(s.shard, replicas)
      for (;;) {
        const have = Object.keys(client.layout.find((x) => x.shard === s.shard)!.members)
        const to = want.find((p) => !have.includes(p))
        // Replicas on peers that are gone go first.
        const from = have.find((p) => !live.includes(p)) ?? have.find((p) => !want.includes(p))
        if (to === undefined || from === undefined) break
        await move(s.shard, from, to)
        moves.push({ shard: s.shard, from, to })
      }
    }
    return moves
  }
  const events = options.elastic === true ? cluster.self.membership?.events : undefined
  const subscription = events?.subscribe((event) => {
    if (event.type === 'suspect') return
    // Gossip may announce a peer before the cluster lists it (with its address): wait for that first.
    const listed = async (): Promise<void> => {
      const deadline = performance.now() + 20_000
      const inList = (): boolean => members().some((m) => m.peerId === event.member.peerId)
      while (performance.now() < deadline && inList() !== (event.type === 'join' || event.type === 'alive')) await new Promise((resolve) => setTimeout(resolve, 100))
    }
    void serially(async () => {
      await listed()
      return rebalance()
    }).catch((error: unknown) =>
      cluster.self.node.logger.warn(`kv ${name}: rebalancing after ${event.type} of ${event.member.peerId} failed: ${error instanceof Error ? error.message : String(error)}`),
    )
  })
  return Object.assign(client, {
    status,
    move: (shard: string, from: string, to: string) => serially(() => move(shard, from, to)),
    rebalance: () => serially(rebalance),
    stop: () =>
      (stopping ??= (async () => {
        subscription?.unsubscribe()
        await changing
        await Promise.allSettled(client.layout.flatMap((s) => Object.keys(s.members).map((peer) => client.askPeer(peer, s.members[peer]!, { type: 'close', shard: s.shard }))))
        client.close()
      })()),
  })
}

/** The layout of service `name` as the members remember it (the first that answers with one), if any. */
async function storedLayout(node: PeerNode, addresses: ReadonlyMap<string, string>, name: string): Promise<KvShardLayout[] | undefined> {
  const probe = KvClient.direct(node)
  try {
    const answers = await Promise.allSettled(
      [...addresses].map(([peer, address]) => probe.askPeer(peer, address, { type: 'layouts' }, 3000) as Promise<Record<string, KvShardLayout[]>>),
    )
    for (const a of answers) if (a.status === 'fulfilled' && a.value[name] !== undefined) return a.value[name]
    return undefined
  } finally {
    probe.close()
  }
}
