// Pure TypeScript reference implementations of every native operator, with the same semantics,
// the same validation order and the same error codes; property tests hold the two equal.

import { utf8Column } from './batch.js'
import { NativeArgError, NativeBatchError, NativeExprError, NativePlanError, NativeStateError } from './errors.js'
import { bindExpr, parseExpr, type Ast, type ExprColumns } from './expr.js'
import type { Batch, BatchEngine, Chain, Joined, JoinOptions, StepSpec, Tokenized, Utf8Column, WordCounts } from './types.js'

// ---------------------------------------------------------------------------------------------
// Hashing

/**
 * The partitioning hash: FNV-1a (32-bit) over the UTF-16 code units of `String(key)`, each unit
 * mixed as one 16-bit value. The kernel's JavaScript partitioner uses this same function.
 *
 * @example
 * hashKey('a') // 3826002220
 * hashKey(1.5) === hashKey('1.5') // true
 */
export function hashKey(key: string | number): number {
  const text = typeof key === 'string' ? key : String(key)
  let h = 2166136261
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 16777619) >>> 0
  }
  return h
}

// ---------------------------------------------------------------------------------------------
// Reading JavaScript values the way the native binding does

/** The kind of a value as the native core classifies it: a typeof name, `array`, `object`, or a typed array's name. */
function kindOf(v: unknown): string {
  if (v === null) return 'null'
  const t = typeof v
  if (t !== 'object') return t
  if (Array.isArray(v)) return 'array'
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Object.prototype.toString.call(v).slice(8, -1)
  return 'object'
}

function describeKind(k: string): string {
  if (k === 'undefined' || k === 'null') return k
  if (k.endsWith('Array')) return /^[AEIOU]/.test(k) ? `an ${k}` : `a ${k}`
  return /^[aeiou]/.test(k) ? `an ${k}` : `a ${k}`
}

type RCol = { readonly kind: 'f64'; readonly values: Float64Array } | { readonly kind: 'utf8'; readonly strings: readonly string[] }

interface RBatch {
  readonly cols: ReadonlyArray<readonly [string, RCol]>
  readonly rows: number
}

const decoder = new TextDecoder('utf-8', { ignoreBOM: true })

/** Index of the first byte of the first invalid UTF-8 sequence in `bytes[start..end)`, or `end`. */
function utf8ValidUpTo(bytes: Uint8Array, start: number, end: number): number {
  let i = start
  while (i < end) {
    const b = bytes[i] as number
    if (b < 0x80) {
      i++
      continue
    }
    let need: number
    let lo = 0x80
    let hi = 0xbf
    if (b >= 0xc2 && b <= 0xdf) need = 1
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2
      if (b === 0xe0) lo = 0xa0
      if (b === 0xed) hi = 0x9f
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3
      if (b === 0xf0) lo = 0x90
      if (b === 0xf4) hi = 0x8f
    } else return i
    for (let j = 1; j <= need; j++) {
      if (i + j >= end) return i // the sequence is cut short
      const c = bytes[i + j] as number
      const [l, h] = j === 1 ? [lo, hi] : [0x80, 0xbf]
      if (c < l || c > h) return i
    }
    i += need + 1
  }
  return end
}

function validateUtf8(column: string, data: Uint8Array, offsets: Uint32Array): string[] {
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

function utf8Parts(column: string, data: unknown, offsets: unknown): [Uint8Array, Uint32Array] {
  const dk = kindOf(data)
  if (dk !== 'Uint8Array') throw new NativeBatchError(`${column}.data`, undefined, `expected a Uint8Array, got ${describeKind(dk)}`)
  const ok = kindOf(offsets)
  if (ok !== 'Uint32Array') throw new NativeBatchError(`${column}.offsets`, undefined, `expected a Uint32Array, got ${describeKind(ok)}`)
  return [data as Uint8Array, offsets as Uint32Array]
}

function field(obj: unknown, name: string): unknown {
  return (obj as Record<string, unknown>)[name]
}

function decodeUtf8Column(v: unknown, column: string): string[] {
  const k = kindOf(v)
  if (k !== 'object') throw new NativeBatchError(column, undefined, `expected a string column, got ${describeKind(k)}`)
  const [data, offsets] = utf8Parts(column, field(v, 'data'), field(v, 'offsets'))
  return validateUtf8(column, data, offsets)
}

type PendingColumn = { f64: Float64Array } | { data: unknown; offsets: unknown }

/** Phase one of reading a batch: every property read happens here, as in the native core. */
function readBatch(v: unknown, what: string): Array<[string, PendingColumn]> {
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
function validateBatch(pending: Array<[string, PendingColumn]>): RBatch {
  const cols: Array<[string, RCol]> = []
  let rows: [number, string] | undefined
  for (const [name, p] of pending) {
    const col: RCol =
      'f64' in p ? { kind: 'f64', values: p.f64 } : { kind: 'utf8', strings: validateUtf8(name, ...utf8Parts(name, p.data, p.offsets)) }
    const len = colLen(col)
    if (rows === undefined) rows = [len, name]
    else if (rows[0] !== len) throw new NativeBatchError(name, undefined, `has ${len} rows but column ${JSON.stringify(rows[1])} has ${rows[0]}`)
    cols.push([name, col])
  }
  return { cols, rows: rows?.[0] ?? 0 }
}

function decodeBatch(v: unknown, what: string): RBatch {
  return validateBatch(readBatch(v, what))
}

function colLen(c: RCol): number {
  return c.kind === 'f64' ? c.values.length : c.strings.length
}

function gather(c: RCol, idx: readonly number[]): RCol {
  return c.kind === 'f64'
    ? { kind: 'f64', values: Float64Array.from(idx, (i) => c.values[i] as number) }
    : { kind: 'utf8', strings: idx.map((i) => c.strings[i] as string) }
}

function gatherBatch(b: RBatch, idx: readonly number[]): RBatch {
  return { cols: b.cols.map(([n, c]) => [n, gather(c, idx)] as const), rows: idx.length }
}

function encodeBatch(b: RBatch): Batch {
  const out: Record<string, Float64Array | Utf8Column> = {}
  for (const [name, c] of b.cols) out[name] = c.kind === 'f64' ? Float64Array.from(c.values) : utf8Column(c.strings)
  return out
}

function getCol(b: RBatch, name: string): RCol | undefined {
  return b.cols.find(([n]) => n === name)?.[1]
}

function requireCol(b: RBatch, name: string, kind: 'f64' | 'utf8'): RCol {
  const c = getCol(b, name)
  if (c === undefined) throw new NativeBatchError(name, undefined, 'missing column')
  if (c.kind !== kind) throw new NativeBatchError(name, undefined, `expected a ${kind} column, got a ${c.kind} column`)
  return c
}

function f64Column(b: RBatch, name: string): Float64Array {
  return (requireCol(b, name, 'f64') as { values: Float64Array }).values
}

// ---------------------------------------------------------------------------------------------
// Tokenizing

const WORD = /[\p{L}\p{N}]+/gu

/** The lowercase words of `text`: maximal runs of `[\p{L}\p{N}]`, each lowercased by `toLowerCase`. */
export function words(text: string): string[] {
  return (text.match(WORD) ?? []).map((w) => w.toLowerCase())
}

function tokenizeStrings(strings: readonly string[]): { words: string[]; rows: number[] } {
  const out: string[] = []
  const rows: number[] = []
  strings.forEach((s, r) => {
    for (const w of words(s)) {
      out.push(w)
      rows.push(r)
    }
  })
  return { words: out, rows }
}

// ---------------------------------------------------------------------------------------------
// Keyed aggregates and windows

type KeyValue = string | number

class KeyedAgg {
  private readonly index = new Map<KeyValue, number>()
  readonly keys: KeyValue[] = []
  readonly count: number[] = []
  readonly sum: number[] = []
  readonly min: number[] = []
  readonly max: number[] = []
  constructor(readonly kind: 'f64' | 'utf8', readonly withValues: boolean) {}

  get size(): number {
    return this.count.length
  }

  add(key: KeyValue, value: number): void {
    let slot = this.index.get(key)
    if (slot === undefined) {
      slot = this.count.length
      // A Map compares keys with SameValueZero and stores -0 as +0: say so explicitly for the key column.
      this.index.set(key, slot)
      this.keys.push(key === 0 ? 0 : key)
      this.count.push(0)
      if (this.withValues) {
        this.sum.push(0)
        this.min.push(Infinity)
        this.max.push(-Infinity)
      }
    }
    this.count[slot] = (this.count[slot] as number) + 1
    if (this.withValues) {
      this.sum[slot] = (this.sum[slot] as number) + value
      this.min[slot] = Math.min(this.min[slot] as number, value)
      this.max[slot] = Math.max(this.max[slot] as number, value)
    }
  }

  push(keys: RCol, values: Float64Array | undefined): void {
    const n = colLen(keys)
    for (let i = 0; i < n; i++) this.add(keyAt(keys, i), values?.[i] ?? 0)
  }

  finish(): Array<[string, RCol]> {
    const key: RCol =
      this.kind === 'utf8' ? { kind: 'utf8', strings: this.keys as string[] } : { kind: 'f64', values: Float64Array.from(this.keys as number[]) }
    const f = (xs: number[]): RCol => ({ kind: 'f64', values: Float64Array.from(xs) })
    const cols: Array<[string, RCol]> = [
      ['key', key],
      ['count', f(this.count)],
    ]
    if (this.withValues) {
      cols.push(['sum', f(this.sum)], ['min', f(this.min)], ['max', f(this.max)], ['mean', f(this.sum.map((s, i) => s / (this.count[i] as number)))])
    }
    return cols
  }
}

function keyAt(c: RCol, i: number): KeyValue {
  return c.kind === 'f64' ? (c.values[i] as number) : (c.strings[i] as string)
}

function checkKeyKind(expected: 'f64' | 'utf8' | undefined, column: string, col: RCol): void {
  if (expected !== undefined && expected !== col.kind) {
    throw new NativeBatchError(column, undefined, `key column changed kind: earlier batches had ${expected}, this one has ${col.kind}`)
  }
}

const MAX_WINDOWS_PER_EVENT = 10_000
const MAX_TIME = 9007199254740992

class Windows {
  private kind: 'f64' | 'utf8' | undefined
  private watermark = -Infinity
  late = 0
  private readonly open = new Map<number, KeyedAgg>()
  private readonly maxPerEvent: number

  constructor(
    private readonly size: number,
    private readonly slide: number,
    private readonly withValues: boolean,
    bad: (m: string) => Error,
  ) {
    if (!(Number.isFinite(size) && size > 0)) throw bad(`window size must be a finite number > 0, got ${size}`)
    if (!(Number.isFinite(slide) && slide > 0)) throw bad(`window slide must be a finite number > 0, got ${slide}`)
    const perEvent = Math.ceil(size / slide)
    if (perEvent > MAX_WINDOWS_PER_EVENT) throw bad(`window size / slide must be at most ${MAX_WINDOWS_PER_EVENT}, got ${size / slide}`)
    this.maxPerEvent = perEvent
  }

  checkTimes(column: string, times: Float64Array): void {
    times.forEach((t, i) => {
      if (!Number.isFinite(t)) throw new NativeBatchError(column, i, `event time must be finite, got ${t}`)
      if (Math.abs(t) > MAX_TIME || Math.abs(t / this.slide) > MAX_TIME) {
        throw new NativeBatchError(column, i, `event time ${t} is out of range for slide ${this.slide}`)
      }
    })
  }

  push(keyName: string, keys: RCol, values: Float64Array | undefined, times: Float64Array): void {
    checkKeyKind(this.kind, keyName, keys)
    this.kind = keys.kind
    times.forEach((t, row) => {
      if (t < this.watermark) {
        this.late++
        return
      }
      const value = values?.[row] ?? 0
      const kmax = Math.floor(t / this.slide)
      for (let i = 0; i <= this.maxPerEvent; i++) {
        const start = (kmax - i) * this.slide + 0
        if (start + this.size <= t) break
        if (start > t) continue
        let agg = this.open.get(start)
        if (agg === undefined) {
          agg = new KeyedAgg(keys.kind, this.withValues)
          this.open.set(start, agg)
        }
        agg.add(keyAt(keys, row), value)
      }
    })
  }

  advance(w: number): Array<[string, RCol]> {
    if (w > this.watermark) this.watermark = w
    return this.emit((start) => start + this.size <= this.watermark)
  }

  finish(): Array<[string, RCol]> {
    return this.emit(() => true)
  }

  private emit(closes: (start: number) => boolean): Array<[string, RCol]> {
    const starts = [...this.open.keys()].filter(closes).sort((a, b) => a - b)
    const keys: KeyValue[] = []
    const start: number[] = []
    const end: number[] = []
    const stats: number[][] = this.withValues ? [[], [], [], [], []] : [[]]
    for (const s of starts) {
      const agg = this.open.get(s) as KeyedAgg
      this.open.delete(s)
      const cols = agg.finish()
      const keyCol = (cols[0] as [string, RCol])[1]
      for (let i = 0; i < agg.size; i++) {
        keys.push(keyAt(keyCol, i))
        start.push(s)
        end.push(s + this.size)
      }
      cols.slice(1).forEach(([, c], j) => (stats[j] as number[]).push(...(c as { values: Float64Array }).values))
    }
    const kind = this.kind ?? 'utf8'
    const f = (xs: number[]): RCol => ({ kind: 'f64', values: Float64Array.from(xs) })
    const out: Array<[string, RCol]> = [
      ['key', kind === 'utf8' ? { kind: 'utf8', strings: keys as string[] } : f(keys as number[])],
      ['start', f(start)],
      ['end', f(end)],
    ]
    const names = this.withValues ? ['count', 'sum', 'min', 'max', 'mean'] : ['count']
    names.forEach((name, j) => out.push([name, f(stats[j] as number[])]))
    return out
  }
}

// ---------------------------------------------------------------------------------------------
// Chains

type JsVal = { readonly t: 'undefined' | 'null' } | { readonly t: 'bool'; readonly v: boolean } | { readonly t: 'num'; readonly v: number }
  | { readonly t: 'str'; readonly v: string } | { readonly t: 'arr'; readonly v: readonly JsVal[] }
  | { readonly t: 'obj'; readonly v: ReadonlyArray<readonly [string, JsVal]> } | { readonly t: 'other'; readonly d: string }

function readJsVal(v: unknown, depth: number): JsVal {
  const k = kindOf(v)
  switch (k) {
    case 'undefined':
    case 'null':
      return { t: k }
    case 'boolean':
      return { t: 'bool', v: v as boolean }
    case 'number':
      return { t: 'num', v: v as number }
    case 'string':
      return { t: 'str', v: v as string }
    case 'array':
      if (depth > 0) return { t: 'arr', v: Array.from({ length: (v as unknown[]).length }, (_, i) => readJsVal((v as unknown[])[i], depth - 1)) }
      break
    case 'object':
      if (depth > 0) return { t: 'obj', v: Object.keys(v as object).map((name) => [name, readJsVal(field(v, name), depth - 1)] as const) }
      break
  }
  return { t: 'other', d: describeKind(k) }
}

function describeVal(v: JsVal): string {
  switch (v.t) {
    case 'bool':
      return 'a boolean'
    case 'num':
      return 'a number'
    case 'str':
      return 'a string'
    case 'arr':
      return 'an array'
    case 'obj':
      return 'an object'
    case 'other':
      return v.d
    default:
      return v.t
  }
}

type Stage =
  | { readonly k: 'tokenize'; readonly input: string; readonly output: string }
  | { readonly k: 'filter'; readonly ast: Ast }
  | { readonly k: 'map'; readonly ast: Ast; readonly name: string | undefined }

type Sink =
  | { readonly k: 'pass' }
  | { readonly k: 'partition'; readonly key: string; readonly n: number }
  | { readonly k: 'agg'; readonly key: string; readonly value: string | undefined; state: KeyedAgg | undefined }
  | { readonly k: 'window'; readonly key: string; readonly value: string | undefined; readonly time: string; readonly state: Windows }

const MAX_PARTITIONS = 65_536

class StepFields {
  constructor(
    private readonly step: number,
    private readonly op: string,
    private readonly fields: ReadonlyArray<readonly [string, JsVal]>,
  ) {}

  bad(message: string): NativePlanError {
    return new NativePlanError(`step ${this.step} (${this.op}): ${message}`)
  }

  allow(names: readonly string[]): void {
    for (const [name, value] of this.fields) {
      if (name !== 'op' && !names.includes(name) && value.t !== 'undefined') throw this.bad(`unknown field ${JSON.stringify(name)}`)
    }
  }

  private get(name: string): JsVal | undefined {
    return this.fields.find(([n, v]) => n === name && v.t !== 'undefined')?.[1]
  }

  string(name: string): string | undefined {
    const v = this.get(name)
    if (v === undefined) return undefined
    if (v.t === 'str') return v.v
    throw this.bad(`field ${JSON.stringify(name)} must be a string, got ${describeVal(v)}`)
  }

  requiredString(name: string): string {
    const s = this.string(name)
    if (s === undefined) throw this.bad(`missing field ${JSON.stringify(name)}`)
    return s
  }

  number(name: string): number | undefined {
    const v = this.get(name)
    if (v === undefined) return undefined
    if (v.t === 'num') return v.v
    throw this.bad(`field ${JSON.stringify(name)} must be a number, got ${describeVal(v)}`)
  }
}

function compile(spec: JsVal): { stages: Stage[]; sink: Sink } {
  if (spec.t !== 'arr') throw new NativePlanError(`a chain spec must be an array of steps, got ${describeVal(spec)}`)
  const stages: Stage[] = []
  let sink: Sink = { k: 'pass' }
  spec.v.forEach((step, i) => {
    if (step.t !== 'obj') throw new NativePlanError(`step ${i} must be an object, got ${describeVal(step)}`)
    const opField = step.v.find(([n]) => n === 'op')?.[1]
    if (opField?.t !== 'str') throw new NativePlanError(`step ${i} needs a string field "op"`)
    const op = opField.v
    const f = new StepFields(i, op, step.v)
    if (sink.k !== 'pass') throw f.bad('no step may follow a partition, count, aggregate or window step')
    switch (op) {
      case 'tokenize': {
        f.allow(['input', 'output'])
        const input = f.string('input') ?? 's'
        stages.push({ k: 'tokenize', input, output: f.string('output') ?? input })
        break
      }
      case 'filter':
        f.allow(['expr'])
        stages.push({ k: 'filter', ast: parseExpr(f.requiredString('expr')) })
        break
      case 'map': {
        f.allow(['expr', 'as'])
        const ast = parseExpr(f.requiredString('expr'))
        stages.push({ k: 'map', ast, name: f.string('as') })
        break
      }
      case 'partition': {
        f.allow(['key', 'n'])
        const n = f.number('n')
        if (n === undefined) throw f.bad('missing field "n"')
        if (!(Number.isInteger(n) && n >= 1 && n <= MAX_PARTITIONS)) throw f.bad(`"n" must be an integer from 1 to ${MAX_PARTITIONS}, got ${n}`)
        sink = { k: 'partition', key: f.string('key') ?? 's', n }
        break
      }
      case 'count':
        f.allow(['key'])
        sink = { k: 'agg', key: f.string('key') ?? 's', value: undefined, state: undefined }
        break
      case 'aggregate':
        f.allow(['key', 'value'])
        sink = { k: 'agg', key: f.string('key') ?? 's', value: f.string('value') ?? 'x', state: undefined }
        break
      case 'window': {
        f.allow(['key', 'value', 'time', 'size', 'slide'])
        const size = f.number('size')
        if (size === undefined) throw f.bad('missing field "size"')
        const slide = f.number('slide') ?? size
        const value = f.string('value')
        const state = new Windows(size, slide, value !== undefined, (m) => f.bad(m))
        sink = { k: 'window', key: f.string('key') ?? 's', value, time: f.string('time') ?? 't', state }
        break
      }
      default:
        throw f.bad(`unknown op ${JSON.stringify(op)}`)
    }
  })
  return { stages, sink }
}

function schemaOf(b: RBatch): Array<[string, 'f64' | 'utf8']> {
  return b.cols.map(([n, c]) => [n, c.kind])
}

function exprColumns(b: RBatch): ExprColumns {
  return b.cols.map(([, c]) => (c.kind === 'f64' ? c.values : c.strings))
}

function applyStage(stage: Stage, cur: RBatch): RBatch {
  switch (stage.k) {
    case 'tokenize': {
      const text = requireCol(cur, stage.input, 'utf8') as { strings: readonly string[] }
      const t = tokenizeStrings(text.strings)
      const cols: Array<readonly [string, RCol]> = cur.cols
        .filter(([n]) => n !== stage.input && n !== stage.output)
        .map(([n, c]) => [n, gather(c, t.rows)] as const)
      cols.push([stage.output, { kind: 'utf8', strings: t.words }])
      return { cols, rows: t.rows.length }
    }
    case 'filter': {
      const pred = bindExpr(stage.ast, schemaOf(cur))
      if (pred.ty !== 'boolean') throw new NativeExprErrorAt0('filter needs a boolean expression')
      const values = exprColumns(cur)
      const keep: number[] = []
      for (let r = 0; r < cur.rows; r++) if (pred.eval(values, r)) keep.push(r)
      return keep.length === cur.rows ? cur : gatherBatch(cur, keep)
    }
    case 'map': {
      const e = bindExpr(stage.ast, schemaOf(cur))
      const values = exprColumns(cur)
      let col: RCol
      let defaultName: string
      if (e.ty === 'number') {
        col = { kind: 'f64', values: Float64Array.from({ length: cur.rows }, (_, r) => e.eval(values, r)) }
        defaultName = 'x'
      } else if (e.ty === 'string') {
        col = { kind: 'utf8', strings: Array.from({ length: cur.rows }, (_, r) => e.eval(values, r)) }
        defaultName = 's'
      } else {
        throw new NativeExprErrorAt0('map needs a number or string expression, got a boolean')
      }
      const name = stage.name ?? defaultName
      const cols = [...cur.cols]
      const at = cols.findIndex(([n]) => n === name)
      if (at >= 0) cols[at] = [name, col]
      else cols.push([name, col])
      return { cols, rows: cur.rows }
    }
  }
}

class NativeExprErrorAt0 extends NativeExprError {
  constructor(detail: string) {
    super(0, detail)
  }
}

function partitionBatch(b: RBatch, key: string, n: number): RBatch[] {
  const keys = getCol(b, key)
  if (keys === undefined) throw new NativeBatchError(key, undefined, 'missing column')
  const buckets: number[][] = Array.from({ length: n }, () => [])
  for (let i = 0; i < b.rows; i++) (buckets[hashKey(keyAt(keys, i)) % n] as number[]).push(i)
  return buckets.map((rows) => gatherBatch(b, rows))
}

/** The reference implementation of a fused chain; see {@link Chain}. */
export class ReferenceChain implements Chain {
  private readonly stages: Stage[]
  private readonly sink: Sink
  private done = false

  constructor(steps: readonly StepSpec[]) {
    const plan = compile(readJsVal(steps, 4))
    this.stages = plan.stages
    this.sink = plan.sink
  }

  get late(): number {
    return this.sink.k === 'window' ? this.sink.state.late : 0
  }

  get finished(): boolean {
    return this.done
  }

  private usable(call: string): void {
    if (this.done) throw new NativeStateError(`${call} after finish`)
  }

  push(batch: Batch): Batch[] {
    this.usable('push')
    let cur = decodeBatch(batch, 'batch')
    for (const stage of this.stages) cur = applyStage(stage, cur)
    const sink = this.sink
    switch (sink.k) {
      case 'pass':
        return [encodeBatch(cur)]
      case 'partition':
        return partitionBatch(cur, sink.key, sink.n).map(encodeBatch)
      case 'agg': {
        const keys = getCol(cur, sink.key)
        if (keys === undefined) throw new NativeBatchError(sink.key, undefined, 'missing column')
        const values = sink.value === undefined ? undefined : f64Column(cur, sink.value)
        checkKeyKind(sink.state?.kind, sink.key, keys)
        sink.state ??= new KeyedAgg(keys.kind, sink.value !== undefined)
        sink.state.push(keys, values)
        return []
      }
      case 'window': {
        const keys = getCol(cur, sink.key)
        if (keys === undefined) throw new NativeBatchError(sink.key, undefined, 'missing column')
        const values = sink.value === undefined ? undefined : f64Column(cur, sink.value)
        const times = f64Column(cur, sink.time)
        sink.state.checkTimes(sink.time, times)
        sink.state.push(sink.key, keys, values, times)
        return []
      }
    }
  }

  advance(watermark: number): Batch[] {
    this.usable('advance')
    const k = kindOf(watermark)
    if (k !== 'number') throw new NativeArgError(`watermark must be a number, got ${describeKind(k)}`)
    if (Number.isNaN(watermark)) throw new NativeArgError('the watermark must be a number, got NaN')
    return this.sink.k === 'window' ? [encodeBatch(toBatch(this.sink.state.advance(watermark)))] : []
  }

  finish(): Batch[] {
    this.usable('finish')
    let out: Batch[] = []
    if (this.sink.k === 'agg') {
      const state = this.sink.state ?? new KeyedAgg('utf8', this.sink.value !== undefined)
      this.sink.state = undefined
      out = [encodeBatch(toBatch(state.finish()))]
    } else if (this.sink.k === 'window') {
      out = [encodeBatch(toBatch(this.sink.state.finish()))]
    }
    this.done = true
    return out
  }
}

function toBatch(cols: Array<[string, RCol]>): RBatch {
  return { cols, rows: cols[0] === undefined ? 0 : colLen(cols[0][1]) }
}

// ---------------------------------------------------------------------------------------------
// Stand-alone operators

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
  const lkc = getCol(l, lk)
  if (lkc === undefined) throw new NativeBatchError(lk, undefined, 'missing key column on the left')
  const rkc = getCol(r, rk)
  if (rkc === undefined) throw new NativeBatchError(rk, undefined, 'missing key column on the right')
  if (lkc.kind !== rkc.kind) throw new NativeBatchError(rk, undefined, `key kinds differ: left has ${lkc.kind}, right has ${rkc.kind}`)
  const names = l.cols.map(([n]) => n)
  for (const [n] of r.cols) {
    if (n === rk) continue
    const renamed = prefix + n
    if (names.includes(renamed)) throw new NativePlanError(`join output would have two columns named ${JSON.stringify(renamed)}; pass a rightPrefix`)
    names.push(renamed)
  }
  const table = new Map<KeyValue, number[]>()
  for (let i = 0; i < r.rows; i++) {
    const key = keyAt(rkc, i)
    const rows = table.get(key)
    if (rows === undefined) table.set(key, [i])
    else rows.push(i)
  }
  const lrows: number[] = []
  const rrows: number[] = []
  for (let i = 0; i < l.rows; i++) {
    for (const j of table.get(keyAt(lkc, i)) ?? []) {
      lrows.push(i)
      rrows.push(j)
    }
  }
  const cols: Array<readonly [string, RCol]> = l.cols.map(([n, c]) => [n, gather(c, lrows)] as const)
  for (const [n, c] of r.cols) if (n !== rk) cols.push([prefix + n, gather(c, rrows)])
  return { batch: encodeBatch({ cols, rows: lrows.length }), left: Uint32Array.from(lrows), right: Uint32Array.from(rrows) }
}

/** Reference of `wordcount`: counts of the lowercase words of a UTF-8 buffer, first-seen order. */
export function wordcount(text: Uint8Array, minLength?: number): WordCounts {
  const min = kindOf(minLength) === 'undefined' ? 0 : argNumber(minLength, 'minLength')
  if (!(min >= 0 && Number.isInteger(min))) throw new NativeArgError(`minLength must be a non-negative integer, got ${min}`)
  const k = kindOf(text)
  if (k !== 'Uint8Array') throw new NativeBatchError('text', undefined, `expected a Uint8Array, got ${describeKind(k)}`)
  const valid = utf8ValidUpTo(text, 0, text.length)
  if (valid !== text.length) throw new NativeBatchError('text', valid, 'invalid UTF-8')
  const counts = new Map<string, number>()
  for (const w of words(decoder.decode(text))) {
    if (w.length < min) continue
    counts.set(w, (counts.get(w) ?? 0) + 1)
  }
  return { key: utf8Column([...counts.keys()]), count: Float64Array.from(counts.values()) }
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
