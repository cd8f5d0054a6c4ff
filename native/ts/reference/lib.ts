// The reference's stand-alone operators and engine, with the native entries' argument checks; mirrors native/src/lib.rs.

import { utf8Column } from '../batch.js'
import { NativeArgError, NativeBatchError } from '../errors.js'
import type { Batch, BatchEngine, Joined, JoinOptions, Tokenized, Utf8Column, WordCounts } from '../types.js'
import { decodeBatch, decodeUtf8Column, encodeBatch, readBatch, validateBatch } from './batch.js'
import { hashKey } from './hash.js'
import { joinBatches } from './join.js'
import { describeKind, kindOf } from './js.js'
import { MAX_PARTITIONS, partitionBatch } from './partition.js'
import { ReferenceChain } from './plan.js'
import { tokenizeStrings } from './tokenize.js'
import { countWords } from './wordcount.js'

function argString(v: unknown, what: string): string | undefined {
  const k = kindOf(v)
  if (k === 'undefined') return undefined
  if (k === 'string') return v as string
  throw new NativeArgError(`${what} must be a string, got ${describeKind(k)}`)
}

function argNumber(v: unknown, what: string): number {
  const k = kindOf(v)
  if (k === 'number') return v as number
  throw new NativeArgError(`${what} must be a number, got ${describeKind(k)}`)
}

/** Reference of `tokenize`: the lowercase words of every row, and the row of each word. */
export function tokenize(column: Utf8Column): Tokenized {
  const t = tokenizeStrings(decodeUtf8Column(column, 'column'))
  return { words: utf8Column(t.words), rows: Uint32Array.from(t.rows) }
}

/** Reference of `hashPartition`: `n` batches, row `i` in batch `hashKey(String(key[i])) % n`. */
export function hashPartition(batch: Batch, n: number, key?: string): Batch[] {
  const k = argString(key, 'key') ?? 's'
  const count = argNumber(n, 'n')
  if (!(Number.isInteger(count) && count >= 1 && count <= MAX_PARTITIONS)) {
    throw new NativeArgError(`n must be an integer from 1 to ${MAX_PARTITIONS}, got ${count}`)
  }
  return partitionBatch(decodeBatch(batch, 'batch'), k, count).map(encodeBatch)
}

/** Reference of `hashJoin`: inner join, left row order then right row order, keys compared as a `Map` does. */
export function hashJoin(left: Batch, right: Batch, options: JoinOptions = {}): Joined {
  const lk = argString(options.leftKey, 'leftKey') ?? 'key'
  const rk = argString(options.rightKey, 'rightKey') ?? lk
  const prefix = argString(options.rightPrefix, 'rightPrefix') ?? ''
  const pendingLeft = readBatch(left, 'left')
  const pendingRight = readBatch(right, 'right')
  const l = validateBatch(pendingLeft)
  const r = validateBatch(pendingRight)
  const j = joinBatches(l, r, lk, rk, prefix)
  return { batch: encodeBatch(j.batch), left: Uint32Array.from(j.left), right: Uint32Array.from(j.right) }
}

/** Reference of `wordcount`: counts of the lowercase words of a UTF-8 buffer, first-seen order. */
export function wordcount(text: Uint8Array, minLength?: number): WordCounts {
  const min = kindOf(minLength) === 'undefined' ? 0 : argNumber(minLength, 'minLength')
  if (!(min >= 0 && Number.isInteger(min))) throw new NativeArgError(`minLength must be a non-negative integer, got ${min}`)
  const k = kindOf(text)
  if (k !== 'Uint8Array') throw new NativeBatchError('text', undefined, `expected a Uint8Array, got ${describeKind(k)}`)
  return countWords(text, min)
}

/** The reference engine: every operator in plain TypeScript. */
export const referenceEngine: BatchEngine = {
  name: 'reference',
  hashKey(key) {
    const k = kindOf(key)
    if (k !== 'string' && k !== 'number') throw new NativeArgError(`key must be a string or a number, got ${describeKind(k)}`)
    return hashKey(key)
  },
  tokenize,
  compile: (steps) => new ReferenceChain(steps),
  hashPartition,
  hashJoin,
  wordcount,
}
