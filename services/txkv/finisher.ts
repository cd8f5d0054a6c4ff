// Batches a coordinator's resolves and forgets per shard: while one `tx-finish` is on its way to a
// shard, what other transactions ask of that shard waits and goes in the next, so at many
// concurrent transactions the finishing work costs one request and one log entry per shard per
// round, not two per transaction. With one transaction at a time nothing waits: its request goes
// out at once.

import { randomBytes } from 'node:crypto'
import type { KvClient } from '../kv/client.js'
import { TX_FINISH_MAX } from '../kv/txn.js'

interface Item {
  readonly resolve?: { readonly tx: string; readonly commit: boolean }
  readonly forget?: string
  readonly done: (error?: Error) => void
}

/** One coordinator's batches, per shard (see the header). */
export class Finisher {
  private readonly queues = new Map<string, Item[]>()
  private readonly sending = new Set<string>()
  private readonly prefix = randomBytes(4).toString('hex')
  private batches = 0

  constructor(private readonly kv: KvClient) {}

  /** Applies (commit) or drops `tx`'s writes on `shard` and releases its locks there. */
  resolve(shard: string, tx: string, commit: boolean): Promise<void> {
    return this.push(shard, { resolve: { tx, commit } })
  }

  /** Drops `tx`'s finished record on its primary `shard`. */
  forget(shard: string, tx: string): Promise<void> {
    return this.push(shard, { forget: tx })
  }

  private push(shard: string, item: Omit<Item, 'done'>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let queue = this.queues.get(shard)
      if (queue === undefined) this.queues.set(shard, (queue = []))
      queue.push({ ...item, done: (error) => (error === undefined ? resolve() : reject(error)) })
      if (!this.sending.has(shard)) void this.send(shard)
    })
  }

  private async send(shard: string): Promise<void> {
    this.sending.add(shard)
    try {
      for (;;) {
        const queue = this.queues.get(shard) ?? []
        if (queue.length === 0) return
        const batch = queue.splice(0, TX_FINISH_MAX)
        const command = {
          op: 'tx-finish',
          tx: `${this.prefix}-f${++this.batches}`,
          resolve: batch.flatMap((i) => (i.resolve === undefined ? [] : [i.resolve])),
          forget: batch.flatMap((i) => (i.forget === undefined ? [] : [i.forget])),
        } as const
        try {
          await this.kv.tx(shard, command)
          for (const i of batch) i.done()
        } catch (error) {
          for (const i of batch) i.done(error instanceof Error ? error : new Error(String(error)))
        }
      }
    } finally {
      this.sending.delete(shard)
    }
  }
}
