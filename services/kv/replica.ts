// One replica of one KV shard: the state machine (state.ts) driven by a Raft group (kmods/raft).
// Writes go through the log; a linearizable read waits for ReadIndex, a serializable one reads
// the local state at once.
//
// Leases follow etcd's design: granting and revoking go through the log, but the countdown is the
// leader's alone (keep-alives are not logged). A new leader restarts every lease's countdown at
// its full TTL, so a lease never ends earlier than TTL after its last acknowledged keep-alive; it
// may last longer, by up to an election. The only clock assumption is that each peer's monotonic
// clock runs at about the right rate; no clocks are compared between peers.

import { RaftStorage, startRaftGroup } from '../../kmods/raft/index.js'
import type { Store } from '../../kmods/store/index.js'
import type { PeerNode } from '../../kmods/transport/index.js'
import { KvLeaseNotFoundError } from './errors.js'
import { type KvCommand, type KvEntry, type KvEvent, type KvResult, type KvScan, KvState, type TxShardCommand } from './state.js'

/** Options of `startKvReplica`. */
export interface KvReplicaOptions {
  readonly node: PeerNode
  /** Every replica of the shard: peer id → address. */
  readonly members: Readonly<Record<string, string>>
  /** The store the shard's log and snapshots live in (one SQLite file may hold many shards). */
  readonly store: Store
  /** The shard's name (its Raft group). @default 'kv-0' */
  readonly shard?: string
  /** Compact the log every this many applied commands. @default 10000 */
  readonly compactEvery?: number
  /** @default 50 */
  readonly tickMs?: number
  /** Watch-history events kept for watches to resume from. @default 10000 */
  readonly history?: number
}

/** A watch on one replica: `cancel()` ends it. */
export interface KvReplicaWatch {
  /** The revision the watch started after (`after`, or this replica's revision when `after` was negative). */
  readonly after: number
  cancel(): void
}

/** How a read is served: `linearizable` (ReadIndex on the leader) or `serializable` (this replica's state, possibly behind). */
export type KvConsistency = 'linearizable' | 'serializable'

/** A running replica of a KV shard. Writes and linearizable reads work on the leader; elsewhere they reject with RaftNotLeaderError (retryable, naming the leader). */
export interface KvReplica {
  readonly shard: string
  readonly isLeader: boolean
  readonly leader: string | undefined
  put(key: string, value: string): Promise<KvResult>
  delete(key: string): Promise<KvResult>
  /** Writes `value` if the key's value is `ifValue` and/or its last change was at `ifModRevision` (0: absent). */
  cas(key: string, value: string, compare: { readonly ifValue?: string; readonly ifModRevision?: number }): Promise<KvResult>
  get(key: string, options?: { readonly consistency?: KvConsistency }): Promise<KvEntry | undefined>
  scan(scan: KvScan, options?: { readonly consistency?: KvConsistency }): Promise<KvEntry[]>
  /** This replica's revision (applied writes). */
  readonly revision: number
  /** The term of the replica's Raft group, as it knows it. */
  readonly term: number
  /**
   * Proposes any write command (put with a lease, a request id: see KvCommand) and resolves with
   * its result once applied. Rejects with KvLeaseNotFoundError when it names a lease the shard
   * does not hold.
   */
  write(command: KvCommand | TxShardCommand): Promise<KvResult>
  /** Reads the shard's state through `read` once it is current (linearizable: after ReadIndex). */
  inspect<T>(read: (state: KvState) => T, options?: { readonly consistency?: KvConsistency }): Promise<T>
  /** Grants (or re-grants, with a new TTL) lease `id` on this shard. */
  grant(id: string, ttlMs: number): Promise<void>
  /** Restarts the countdown of lease `id` on the leader; rejects with KvLeaseNotFoundError once it expired or was revoked. */
  keepAlive(id: string): Promise<{ readonly ttlMs: number }>
  /** Revokes lease `id`: its keys are deleted. Resolves with whether the lease existed. */
  revoke(id: string): Promise<boolean>
  /**
   * Calls `onEvents` with every event of keys under `prefix` after revision `after` (negative: from
   * now), in order, as this replica applies them (it may be behind the leader, never out of
   * order), with the revision it has caught up to. `onError` gets
   * KvCompactedError if events after `after` were compacted away; the watch ends then.
   */
  watch(prefix: string, after: number, onEvents: (events: KvEvent[], revision: number) => void, onError: (error: Error) => void): KvReplicaWatch
  /** The shard's replicas in force, with their addresses. */
  readonly members: Readonly<Record<string, string>>
  /** Adds or removes one replica (leader only; see RaftGroup.changeMembers). Resolves once committed. */
  changeMembers(members: Readonly<Record<string, string>>): Promise<void>
  stop(): Promise<void>
}

/** Starts this peer's replica of a shard, recovering its state from `store`. */
export async function startKvReplica(options: KvReplicaOptions): Promise<KvReplica> {
  const shard = options.shard ?? 'kv-0'
  const state = new KvState(options.history)
  const watchers = new Set<{ prefix: string; after: number; onEvents: (events: KvEvent[], revision: number) => void; onError: (error: Error) => void }>()
  // Watchers catch up once per turn of the event loop, with everything applied since.
  let notifying = false
  const notify = (): void => {
    if (notifying || watchers.size === 0) return
    notifying = true
    setImmediate(() => {
      notifying = false
      for (const w of watchers) deliver(w)
    })
  }
  const deliver = (w: typeof watchers extends Set<infer W> ? W : never): void => {
    if (state.revision <= w.after) return
    let events: KvEvent[]
    try {
      events = state.eventsAfter(w.after)
    } catch (error) {
      watchers.delete(w)
      w.onError(error instanceof Error ? error : new Error(String(error)))
      return
    }
    w.after = state.revision
    const mine = events.filter((e) => e.key.startsWith(w.prefix))
    if (mine.length > 0) w.onEvents(mine, w.after)
  }
  // Results of applied commands by log index, for the proposer to pick up (it does so as soon as
  // its proposal commits; the newest 10,000 are kept, for proposals on this replica).
  const results = new Map<number, KvResult>()
  const group = await startRaftGroup({
    node: options.node,
    group: shard,
    members: options.members,
    storage: new RaftStorage(options.store, shard),
    tickMs: options.tickMs ?? 50,
    apply: (data, entry) => {
      // Commands were checked before they were proposed; one that fails here fails the same way on
      // every replica and changes nothing on any.
      try {
        results.set(entry.index, state.apply(JSON.parse(data)))
        if (results.size > 10_000) results.delete(results.keys().next().value!)
        notify()
      } catch (error) {
        options.node.logger.warn(`kv ${shard}: entry ${entry.index} refused by every replica: ${error instanceof Error ? error.message : String(error)}`)
      }
    },
    snapshot: {
      every: options.compactEvery ?? 10_000,
      take: () => state.snapshot(),
      load: (data) => {
        state.load(data)
        notify()
      },
    },
  })
  // The leader's lease countdowns: deadline by lease id, restarted whenever leadership (the term) changes.
  const deadlines = new Map<string, number>()
  let countingTerm = -1
  const revoking = new Set<string>()
  const leaseTimer = setInterval(
    () => {
      if (!group.isLeader) {
        countingTerm = -1
        return
      }
      const now = performance.now()
      if (countingTerm !== group.term) {
        countingTerm = group.term
        deadlines.clear()
      }
      for (const [id, ttlMs] of state.leaseTtls()) {
        const deadline = deadlines.get(id)
        if (deadline === undefined) deadlines.set(id, now + ttlMs)
        else if (deadline <= now && !revoking.has(id)) {
          revoking.add(id)
          group
            .propose(JSON.stringify({ op: 'revoke', lease: id } satisfies KvCommand))
            .catch(() => undefined) // a lost revoke is proposed again by whoever leads next
            .finally(() => revoking.delete(id))
        }
      }
      for (const id of deadlines.keys()) if (!state.hasLease(id)) deadlines.delete(id)
    },
    Math.max(20, options.tickMs ?? 50),
  )
  leaseTimer.unref()
  const write = async (command: KvCommand | TxShardCommand): Promise<KvResult> => {
    KvState.check(command)
    const index = await group.propose(JSON.stringify(command))
    const result = results.get(index)
    results.delete(index)
    if (result?.missingLease !== undefined) throw new KvLeaseNotFoundError(shard, result.missingLease)
    // The entry committed and was applied before propose resolved; a refusal there was logged.
    return result ?? { ok: false, revision: state.revision, prev: undefined }
  }
  const consistent = async (options?: { readonly consistency?: KvConsistency }): Promise<void> => {
    if ((options?.consistency ?? 'linearizable') === 'linearizable') await group.read()
  }
  return {
    shard,
    get isLeader() {
      return group.isLeader
    },
    get leader() {
      return group.leader
    },
    get revision() {
      return state.revision
    },
    get term() {
      return group.term
    },
    put: (key, value) => write({ op: 'put', key, value }),
    write,
    grant: async (id, ttlMs) => {
      await write({ op: 'grant', lease: id, ttlMs })
    },
    keepAlive: async (id) => {
      // On the leader only (its countdown is the one that counts), after a barrier that proves it still leads.
      await group.read()
      const lease = state.lease(id)
      if (lease === undefined || revoking.has(id)) throw new KvLeaseNotFoundError(shard, id)
      deadlines.set(id, performance.now() + lease.ttlMs)
      return { ttlMs: lease.ttlMs }
    },
    revoke: async (id) => (await write({ op: 'revoke', lease: id })).ok,
    watch: (prefix, after, onEvents, onError) => {
      const w = { prefix, after: after < 0 ? state.revision : after, onEvents, onError }
      const from = w.after
      watchers.add(w)
      deliver(w)
      return { after: from, cancel: () => watchers.delete(w) }
    },
    delete: (key) => write({ op: 'delete', key }),
    cas: (key, value, compare) => write({ op: 'cas', key, value, ...compare }),
    get: async (key, opts) => {
      await consistent(opts)
      return state.get(key)
    },
    scan: async (scan, opts) => {
      await consistent(opts)
      return state.scan(scan)
    },
    inspect: async (read, opts) => {
      await consistent(opts)
      return read(state)
    },
    get members() {
      return group.members
    },
    changeMembers: (members) => group.changeMembers(members),
    stop: () => {
      clearInterval(leaseTimer)
      watchers.clear()
      return group.stop()
    },
  }
}
