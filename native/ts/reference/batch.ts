// Columnar batches of the reference: reading, validation, gathering; mirrors native/src/batch.rs.

import { utf8Column } from '../batch.js'
import { NativeBatchError } from '../errors.js'
import type { Batch, Utf8Column } from '../types.js'
import { describeKind, field, kindOf } from './js.js'
import { decoder, utf8ValidUpTo } from './utf8.js'

/** A decoded column: numbers, or the strings of a UTF-8 column. */
export type RCol = { readonly kind: 'f64'; readonly values: Float64Array } | { readonly kind: 'utf8'; readonly strings: readonly string[] }

/** A decoded batch: named columns of `rows` rows each, in the order they were read. */
export interface RBatch {
  readonly cols: ReadonlyArray<readonly [string, RCol]>
  readonly rows: number
}

/** The strings of a UTF-8 column, after checking its offsets and bytes in the native core's order. */
export function validateUtf8(column: string, data: Uint8Array, offsets: Uint32Array): string[] {
  const offsetsName = `${column}.offsets`
  if (offsets.length === 0) throw new NativeBatchError(offsetsName, undefined, 'offsets must have one more entry than there are rows')
  const n = data.length
  let prev = 0
  for (let i = 0; i < offsets.length; i++) {
    const o = offsets[i] as number
    if (o > n) throw new NativeBatchError(offsetsName, i, `offset ${o} is past the end of data (${n} bytes)`)
    if (i > 0 && o < prev) throw new NativeBatchError(offsetsName, i, `offsets must not decrease (${prev} then ${o})`)
    prev = o
  }
  const first = offsets[0] as number
  const last = offsets[offsets.length - 1] as number
  const valid = utf8ValidUpTo(data, first, last)
  if (valid !== last) throw new NativeBatchError(`${column}.data`, valid, 'invalid UTF-8')
  for (let i = 0; i < offsets.length; i++) {
    const o = offsets[i] as number
    if (o < n && ((data[o] as number) & 0xc0) === 0x80) throw new NativeBatchError(offsetsName, i, 'offset splits a UTF-8 character')
  }
  const strings: string[] = []
  for (let i = 0; i + 1 < offsets.length; i++) strings.push(decoder.decode(data.subarray(offsets[i], offsets[i + 1])))
  return strings
}

/** Checks the types of a string column's `data` and `offsets`. */
export function utf8Parts(column: string, data: unknown, offsets: unknown): [Uint8Array, Uint32Array] {
  const dk = kindOf(data)
  if (dk !== 'Uint8Array') throw new NativeBatchError(`${column}.data`, undefined, `expected a Uint8Array, got ${describeKind(dk)}`)
  const ok = kindOf(offsets)
  if (ok !== 'Uint32Array') throw new NativeBatchError(`${column}.offsets`, undefined, `expected a Uint32Array, got ${describeKind(ok)}`)
  return [data as Uint8Array, offsets as Uint32Array]
}

/** Reads and validates one string column (the argument of `tokenize`). */
export function decodeUtf8Column(v: unknown, column: string): string[] {
  const k = kindOf(v)
  if (k !== 'object') throw new NativeBatchError(column, undefined, `expected a string column, got ${describeKind(k)}`)
  const [data, offsets] = utf8Parts(column, field(v, 'data'), field(v, 'offsets'))
  return validateUtf8(column, data, offsets)
}

/** A column as read, before validation. */
export type PendingColumn = { f64: Float64Array } | { data: unknown; offsets: unknown }

/** Phase one of reading a batch: every property read happens here, as in the native core. */
export function readBatch(v: unknown, what: string): Array<[string, PendingColumn]> {
  const k = kindOf(v)
  if (k !== 'object') throw new NativeBatchError(what, undefined, `expected a batch (a plain object of columns), got ${describeKind(k)}`)
  const pending: Array<[string, PendingColumn]> = []
  for (const name of Object.keys(v as object)) {
    const value = field(v, name)
    const vk = kindOf(value)
    if (vk === 'Float64Array') pending.push([name, { f64: value as Float64Array }])
    else if (vk === 'object') pending.push([name, { data: field(value, 'data'), offsets: field(value, 'offsets') }])
    else throw new NativeBatchError(name, undefined, `expected a Float64Array or a string column, got ${describeKind(vk)}`)
  }
  return pending
}

/** Phase two: validates the columns in the same order as the native core. */
export function validateBatch(pending: Array<[string, PendingColumn]>): RBatch {
  const cols: Array<[string, RCol]> = []
  let rows: [number, string] | undefined
  for (const [name, p] of pending) {
    const col: RCol = 'f64' in p ? { kind: 'f64', values: p.f64 } : { kind: 'utf8', strings: validateUtf8(name, ...utf8Parts(name, p.data, p.offsets)) }
    const len = colLen(col)
    if (rows === undefined) rows = [len, name]
    else if (rows[0] !== len) throw new NativeBatchError(name, undefined, `has ${len} rows but column ${JSON.stringify(rows[1])} has ${rows[0]}`)
    cols.push([name, col])
  }
  return { cols, rows: rows?.[0] ?? 0 }
}

/** Reads then validates a batch. */
export function decodeBatch(v: unknown, what: string): RBatch {
  return validateBatch(readBatch(v, what))
}

/** The number of rows of a column. */
export function colLen(c: RCol): number {
  return c.kind === 'f64' ? c.values.length : c.strings.length
}

/** The rows `idx` of a column, in that order. */
export function gather(c: RCol, idx: readonly number[]): RCol {
  return c.kind === 'f64' ? { kind: 'f64', values: Float64Array.from(idx, (i) => c.values[i] as number) } : { kind: 'utf8', strings: idx.map((i) => c.strings[i] as string) }
}

/** The rows `idx` of every column of a batch. */
export function gatherBatch(b: RBatch, idx: readonly number[]): RBatch {
  return { cols: b.cols.map(([n, c]) => [n, gather(c, idx)] as const), rows: idx.length }
}

/** A decoded batch in the layout that crosses to callers (fresh arrays, never the input's). */
export function encodeBatch(b: RBatch): Batch {
  const out: Record<string, Float64Array | Utf8Column> = {}
  for (const [name, c] of b.cols) out[name] = c.kind === 'f64' ? Float64Array.from(c.values) : utf8Column(c.strings)
  return out
}

/** The column named `name`, if the batch has one. */
export function getCol(b: RBatch, name: string): RCol | undefined {
  return b.cols.find(([n]) => n === name)?.[1]
}

/** The column named `name`, which must exist and be of `kind`. */
export function requireCol(b: RBatch, name: string, kind: 'f64' | 'utf8'): RCol {
  const c = getCol(b, name)
  if (c === undefined) throw new NativeBatchError(name, undefined, 'missing column')
  if (c.kind !== kind) throw new NativeBatchError(name, undefined, `expected a ${kind} column, got a ${c.kind} column`)
  return c
}

/** One row's value of a key column. */
export type KeyValue = string | number

/** The value of row `i` of a key column. */
export function keyAt(c: RCol, i: number): KeyValue {
  return c.kind === 'f64' ? (c.values[i] as number) : (c.strings[i] as string)
}

/** A numeric column of `xs`. */
export function f64Col(xs: number[]): RCol {
  return { kind: 'f64', values: Float64Array.from(xs) }
}
