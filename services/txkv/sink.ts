// A dataflow sink into the transactional store: under the checkpoints layer, each completed
// checkpoint's output is written in one transaction together with the record of that checkpoint,
// so a job's output reaches the store exactly once even when the job dies between writing and
// recording (SinkCommit in kernel/contracts/operators.ts). Without checkpoints, each batch is one
// transaction.

import type * as t from 'io-ts'
import { type Annotations, type AnyCodec, atom, type AtomContext, type Operator, type PortCodecs } from '../../kernel/index.js'
import type { KvShardLayout } from '../kv/client.js'
import { clientFor } from '../kv/operators.js'
import { TxKv } from './txkv.js'

/** Options of `txkvSink`. */
export interface TxKvSinkOptions<I extends AnyCodec> {
  /** The store: a TxKv in this process, or a layout (`kvLayoutArg(db.kv)`) for instances on peers. */
  readonly store: TxKv | readonly KvShardLayout[]
  readonly input: I
  readonly key: (value: t.TypeOf<I>) => string
  readonly value: (value: t.TypeOf<I>) => string
  readonly annotations?: Annotations
}

/**
 * The key where instance `instance` of sink `name` of job `lineage` (its first attempt's id, the
 * same in every attempt: `InstanceInfo.lineage`) records the newest checkpoint it committed. Each
 * job has its own: a later job with a sink of the same name starts from nothing.
 */
export function sinkMarkerKey(lineage: string, name: string, instance: number): string {
  return `_lamina/sink/${lineage}/${name}/${instance}`
}

/**
 * A sink that puts `value(v)` at `key(v)` for every record. Under checkpoints, one transaction per
 * checkpoint carries that checkpoint's records and its id (at `sinkMarkerKey`); a write of a
 * checkpoint the store already holds changes nothing. A checkpoint's output must fit one
 * transaction's limits (TXKV_LIMITS): a larger one fails its commit with TxLimitError, reported as
 * a checkpoint commit failure.
 */
export function txkvSink<I extends AnyCodec>(name: string, options: TxKvSinkOptions<I>): Operator<{ in: I }, Record<never, never>> {
  const { store, key, value } = options
  let shared: TxKv | undefined
  const db = (): TxKv => {
    if (store instanceof TxKv) return store
    const client = clientFor(store, name)
    if (shared === undefined || shared.kv !== client) shared = new TxKv(client)
    return shared
  }
  const markerOf = (ctx: AtomContext<PortCodecs, unknown>): string => sinkMarkerKey(ctx.info.lineage, name, ctx.info.instance)
  return atom<{ in: I }, Record<never, never>>({
    name,
    inputs: { in: options.input } as { in: I },
    onBatch: {
      in: async (values) => {
        await db().transact(async (tx) => {
          for (const v of values) tx.put(key(v), value(v))
        })
      },
    },
    commit: {
      write: async (id, batches, ctx) => {
        const marker = markerOf(ctx)
        await db().transact(async (tx) => {
          const done = Number((await tx.get(marker)) ?? -1)
          if (done >= id) return
          for (const batch of batches) for (const v of batch.values as t.TypeOf<I>[]) tx.put(key(v), value(v))
          tx.put(marker, String(id))
        })
      },
      committed: async (ctx) => Number((await db().transact((tx) => tx.get(markerOf(ctx)))) ?? -1),
    },
    ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
  })
}
