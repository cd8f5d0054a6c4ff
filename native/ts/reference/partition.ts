// Hash partitioning of the reference; mirrors native/src/partition.rs.

import { NativeBatchError } from '../errors.js'
import { gatherBatch, getCol, keyAt, type RBatch } from './batch.js'
import { hashKey } from './hash.js'

/** Most outputs one partition step may have. */
export const MAX_PARTITIONS = 65_536

/** Splits a batch into `n` batches: row `i` goes to batch `hashKey(key[i]) % n`. */
export function partitionBatch(b: RBatch, key: string, n: number): RBatch[] {
  const keys = getCol(b, key)
  if (keys === undefined) throw new NativeBatchError(key, undefined, 'missing column')
  const buckets: number[][] = Array.from({ length: n }, () => [])
  for (let i = 0; i < b.rows; i++) (buckets[hashKey(keyAt(keys, i)) % n] as number[]).push(i)
  return buckets.map((rows) => gatherBatch(b, rows))
}
