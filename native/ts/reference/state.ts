// The state of a chain's keyed sink as rows, for checkpoints; mirrors native/src/state.rs.

import { NativeBatchError } from '../errors.js'
import { getCol, requireCol, type RBatch, type RCol } from './batch.js'
import { MAX_TIME } from './window.js'

/** A snapshot's rows, checked: columns `key`, `start` (windows), `count`, `sum`, `min`, `max` with values, and optionally `end`, `fired` (windows). */
export interface Rows {
  readonly keys: RCol
  readonly start: Float64Array | undefined
  readonly count: Float64Array
  readonly values: readonly [Float64Array, Float64Array, Float64Array] | undefined
  readonly end: Float64Array | undefined
  readonly fired: Float64Array | undefined
}

/** Reads `batch` as the rows of a sink with or without values, with window starts when `windowed`. */
export function readRows(batch: RBatch, withValues: boolean, windowed: boolean): Rows {
  const expected = ['key', ...(windowed ? ['start'] : []), 'count', ...(withValues ? ['sum', 'min', 'max'] : []), ...(windowed ? ['end', 'fired'] : [])]
  const extra = batch.cols.find(([name]) => !expected.includes(name))
  if (extra !== undefined) throw new NativeBatchError(extra[0], undefined, `is not a column of this chain's state (its columns: ${expected.join(', ')})`)
  const keys = getCol(batch, 'key')
  if (keys === undefined) throw new NativeBatchError('key', undefined, 'missing column')
  const f64s = (name: string): Float64Array => (requireCol(batch, name, 'f64') as { values: Float64Array }).values
  const start = windowed ? f64s('start') : undefined
  const count = f64s('count')
  const values = withValues ? ([f64s('sum'), f64s('min'), f64s('max')] as const) : undefined
  count.forEach((c, i) => {
    if (!(c >= 1 && Number.isInteger(c) && c <= MAX_TIME)) throw new NativeBatchError('count', i, `must be a whole number of rows >= 1, got ${c}`)
  })
  const bad = start?.findIndex((s) => !Number.isFinite(s) || Math.abs(s) > MAX_TIME) ?? -1
  if (bad >= 0) throw new NativeBatchError('start', bad, `must be a finite event time, got ${start![bad]}`)
  const optional = (name: string): Float64Array | undefined => (windowed && getCol(batch, name) !== undefined ? f64s(name) : undefined)
  const end = optional('end')
  const badEnd = end?.findIndex((e) => !Number.isFinite(e)) ?? -1
  if (badEnd >= 0) throw new NativeBatchError('end', badEnd, `must be a finite event time, got ${end![badEnd]}`)
  const fired = optional('fired')
  const badFired = fired?.findIndex((f) => f !== 0 && f !== 1) ?? -1
  if (badFired >= 0) throw new NativeBatchError('fired', badFired, `must be 0 or 1, got ${fired![badFired]}`)
  return { keys, start, count, values, end, fired }
}
