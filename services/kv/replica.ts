// One replica of one KV shard: the state machine (state.ts) driven by a Raft group (kmods/raft).
// Writes go through the log; a linearizable read waits for ReadIndex, a serializable one reads
// the local state at once.

import { RaftStorage, startRaftGroup } from '../../kmods/raft/index.js'
import type { Store } from '../../kmods/store/index.js'
import type { PeerNode } from '../../kmods/transport/index.js'
import { type KvCommand, type KvEntry, type KvResult, type KvScan, KvState } from './state.js'

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
  stop(): Promise<void>
}

/** Starts this peer's replica of a shard, recovering its state from `store`. */
export async function startKvReplica(options: KvReplicaOptions): Promise<KvReplica> {
  const shard = options.shard ?? 'kv-0'
  const state = new KvState()
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
      } catch (error) {
        options.node.logger.warn(`kv ${shard}: entry ${entry.index} refused by every replica: ${error instanceof Error ? error.message : String(error)}`)
      }
    },
    snapshot: { every: options.compactEvery ?? 10_000, take: () => state.snapshot(), load: (data) => state.load(data) },
  })
  const write = async (command: KvCommand): Promise<KvResult> => {
    KvState.check(command)
    const index = await group.propose(JSON.stringify(command))
    const result = results.get(index)
    results.delete(index)
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
    put: (key, value) => write({ op: 'put', key, value }),
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
    stop: () => group.stop(),
  }
}
