// Building and reading columnar batches, and running chains on any engine (native or reference).

import type { Batch, BatchEngine, Column, StepSpec, Utf8Column } from './types.js'

const encoder = new TextEncoder()
// ignoreBOM keeps a leading U+FEFF as text instead of swallowing it.
const decoder = new TextDecoder('utf-8', { ignoreBOM: true })

/**
 * A string column holding `strings`.
 *
 * @example
 * const words = utf8Column(['to', 'be'])
 * // words.offsets is Uint32Array [0, 2, 4]
 */
export function utf8Column(strings: readonly string[]): Utf8Column {
  const parts = strings.map((s) => encoder.encode(s))
  const offsets = new Uint32Array(parts.length + 1)
  let total = 0
  parts.forEach((p, i) => {
    total += p.length
    offsets[i + 1] = total
  })
  const data = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    data.set(p, at)
    at += p.length
  }
  return { data, offsets }
}

/** The rows of a string column as JavaScript strings. */
export function utf8Strings(column: Utf8Column): string[] {
  const out: string[] = []
  for (let i = 0; i + 1 < column.offsets.length; i++) {
    out.push(decoder.decode(column.data.subarray(column.offsets[i], column.offsets[i + 1])))
  }
  return out
}

/** True if `column` is a string column. */
export function isUtf8Column(column: Column): column is Utf8Column {
  return !(column instanceof Float64Array)
}

/** The number of rows of a batch (0 for a batch without columns). */
export function rowCount(batch: Batch): number {
  for (const column of Object.values(batch)) {
    return isUtf8Column(column) ? column.offsets.length - 1 : column.length
  }
  return 0
}

/** Pushes every batch through a freshly compiled chain, then finishes it; returns every output batch in order. */
export function runChain(engine: BatchEngine, steps: readonly StepSpec[], batches: Iterable<Batch>): Batch[] {
  const chain = engine.compile(steps)
  const out: Batch[] = []
  for (const batch of batches) out.push(...chain.push(batch))
  out.push(...chain.finish())
  return out
}

/** The rows of `batch` where a boolean expression holds, e.g. `filter(engine, batch, 'len(s) > 3')`. */
export function filter(engine: BatchEngine, batch: Batch, expr: string): Batch {
  return single(runChain(engine, [{ op: 'filter', expr }], [batch]))
}

/** `batch` with column `as` set to an expression, e.g. `map(engine, batch, 'x * 2 + 1')`. */
export function map(engine: BatchEngine, batch: Batch, expr: string, as?: string): Batch {
  return single(runChain(engine, [as === undefined ? { op: 'map', expr } : { op: 'map', expr, as }], [batch]))
}

/** `{ key, count }` per distinct value of column `key` (default `s`), in first-seen order. */
export function countByKey(engine: BatchEngine, batch: Batch, key = 's'): Batch {
  return single(runChain(engine, [{ op: 'count', key }], [batch]))
}

/** `{ key, count, sum, min, max, mean }` of column `value` (default `x`) per key (default `s`). */
export function aggregateByKey(engine: BatchEngine, batch: Batch, options: { key?: string; value?: string } = {}): Batch {
  return single(runChain(engine, [{ op: 'aggregate', key: options.key ?? 's', value: options.value ?? 'x' }], [batch]))
}

function single(batches: Batch[]): Batch {
  const [first] = batches
  if (first === undefined || batches.length !== 1) throw new RangeError(`expected exactly one output batch, got ${batches.length}`)
  return first
}
