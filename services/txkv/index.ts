// lamina/txkv: a strictly serializable transactional KV store over the KV store's shards.

import { type Kv, type KvCluster, type StartKvOptions, startKv } from '../kv/index.js'
import { TxKv, type TxKvOptions } from './txkv.js'

export { TxAbortedError, TxClosedError, TxConflictError, TxIndeterminateError, TxLimitError, TxRetriesExhaustedError } from './errors.js'
export { sinkMarkerKey, txkvSink, type TxKvSinkOptions } from './sink.js'
export {
  Transaction,
  TxKv,
  TXKV_LIMITS,
  type TxAttempt,
  type TxEntry,
  type TxIsolation,
  type TxKvOptions,
  type TxOp,
  type TxOptions,
  type TxRetryOptions,
  type TxRunResult,
  type TxScan,
} from './txkv.js'

/** Options of `startTxKv`: the KV store's (shards, replicas, placement …) and the transactions'. */
export interface StartTxKvOptions extends Omit<StartKvOptions, 'consistency'>, TxKvOptions {}

/** A running transactional store: `transact`, the KV store under it (`kv`), and `stop()`. */
export interface TxKvStore extends TxKv {
  /** The KV store the transactions run on (its plain reads see committed values; do not write to it directly). */
  readonly kv: Kv
  /** Stops the store (its data stays on disk: a later `startTxKv` with the same name recovers it). */
  stop(): Promise<void>
}

/**
 * Starts a transactional KV store on `cluster`: a KV store (linearizable shards on Raft groups)
 * and transactions over it.
 *
 * ```ts
 * const db = await startTxKv(cluster, { shards: 2, replicas: 3 })
 * await db.transact(async (tx) => {
 *   const a = Number((await tx.get('a')) ?? 0)
 *   tx.put('b', String(a + 1))
 * })
 * await db.stop()
 * ```
 */
export async function startTxKv(cluster: KvCluster, options: StartTxKvOptions = {}): Promise<TxKvStore> {
  const { retry, onAttempt, clockSkewMs, isolation, ...kvOptions } = options
  const kv = await startKv(cluster, { name: 'txkv', ...kvOptions })
  const store = new TxKv(kv, {
    ...(retry === undefined ? {} : { retry }),
    ...(isolation === undefined ? {} : { isolation }),
    ...(onAttempt === undefined ? {} : { onAttempt }),
    ...(clockSkewMs === undefined ? {} : { clockSkewMs }),
  })
  return Object.assign(store, {
    kv,
    stop: async () => {
      await store.settled()
      await kv.stop()
    },
  }) as TxKvStore
}
