// Building and reading columnar batches, and running chains on any engine (native or reference).

import type { Batch, BatchEngine, Column, StepSpec, Utf8Column } from './types.js'

/**
 * A string column holding `strings`.
 *
 * Every string is written straight into one buffer for the whole column (`Buffer#write`, which
 * encodes lone surrogates as U+FFFD like `TextEncoder`): per string that is one call and no
 * intermediate array, which matters because the kernel converts every batch of strings bound for
 * the native core. The buffer is sized for ASCII plus slack and grows (doubling) when a string
 * might not fit; its unused tail is zeroed memory, never stale data.
 *
 * @example
 * const words = utf8Column(['to', 'be'])
 * // words.offsets is Uint32Array [0, 2, 4]
 */
export function utf8Column(strings: readonly string[]): Utf8Column {
  const n = strings.length
  const offsets = new Uint32Array(n + 1)
  let units = 0
  for (let i = 0; i < n; i++) units += strings[i]!.length
  // A UTF-16 unit takes at most 3 bytes of UTF-8; most text is nearly all one-byte characters.
  let buffer = bufferOf(units + (units >> 3) + 64)
  let at = 0
  for (let i = 0; i < n; i++) {
    const s = strings[i]!
    const room = s.length * 3
    if (buffer.length - at < room) {
      const grown = bufferOf(Math.max(buffer.length * 2, at + room + (units >> 3)))
      grown.set(buffer.subarray(0, at))
      buffer = grown
    }
    at += buffer.write(s, at)
    offsets[i + 1] = at
  }
  return { data: new Uint8Array(buffer.buffer, buffer.byteOffset, at), offsets }
}

/** A zeroed Buffer of `size` bytes with an ArrayBuffer of its own (not Node's shared pool). */
function bufferOf(size: number): Buffer {
  return Buffer.from(new ArrayBuffer(size))
}

/**
 * The rows of a string column as JavaScript strings. Decoded with `Buffer#toString`, which keeps
 * a leading U+FEFF and replaces invalid sequences exactly as `TextDecoder` does, at a fraction of
 * its cost per call (this runs once per output row of every native operator).
 */
export function utf8Strings(column: Utf8Column): string[] {
  const bytes = Buffer.from(column.data.buffer, column.data.byteOffset, column.data.byteLength)
  const offsets = column.offsets
  const out = new Array<string>(Math.max(0, offsets.length - 1))
  for (let i = 0; i < out.length; i++) out[i] = bytes.toString('utf8', offsets[i], offsets[i + 1])
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
