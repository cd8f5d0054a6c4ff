// Native operators: a chain of the Rust core's batch operators, run one native call per batch.
// Consecutive native operators on one peer are fused by the kernel's operator chaining.

import * as t from 'io-ts'
import type { Batch as Columns, StepSpec, Utf8Column, WindowStep } from '../../native/ts/native.js'
import { NativeChain, utf8Column, utf8Strings } from '../../native/ts/native.js'
import type { Annotations, AnyCodec, AtomContext, Fusible, Key, Operator, StateAccess } from '../contracts.js'
import { InvalidOptionError } from '../errors.js'
import { atom } from '../operator.js'

export type { StepSpec } from '../../native/ts/native.js'

/**
 * How records on ordinary links become the native core's columns, and back. Two native
 * operators fuse only when the first's output layout is the second's input layout (the same
 * value), so that the columns between them need no conversion.
 */
export interface NativeLayout<T> {
  readonly name: string
  toColumns(values: readonly T[]): Columns
  fromColumns(columns: Columns): T[]
}

/** Strings as the UTF-8 column `column` (default `s`, the name the expression language reads). */
export function stringLayout(column = 's'): NativeLayout<string> {
  return {
    name: `strings(${column})`,
    toColumns: (values) => ({ [column]: utf8Column(values) }),
    fromColumns: (columns) => utf8Strings(columnOf(columns, column) as Utf8Column),
  }
}

/** UTF-8 text as bytes (e.g. a file read in chunks of whole lines): values are Uint8Arrays. */
export const Utf8Bytes = new t.Type<Uint8Array, Uint8Array, unknown>(
  'Utf8Bytes',
  (u): u is Uint8Array => u instanceof Uint8Array,
  (u, c) => (u instanceof Uint8Array ? t.success(u) : t.failure(u, c)),
  t.identity,
)

/**
 * Chunks of UTF-8 text as the string column `s`, one row a chunk: text from a file reaches the
 * native core with no string conversion (a word never spans a newline, so chunks of whole lines
 * tokenize as their lines do). Chunks back to back in one buffer become a column without a copy;
 * others are copied once into one buffer.
 */
export const utf8ChunkLayout: NativeLayout<Uint8Array> = {
  name: 'utf8-chunks(s)',
  toColumns(chunks) {
    const n = chunks.length
    const offsets = new Uint32Array(n + 1)
    const first = chunks[0]
    let contiguous = first !== undefined
    for (let i = 0; i < n; i++) {
      const chunk = chunks[i]!
      offsets[i + 1] = offsets[i]! + chunk.length
      contiguous &&= chunk.buffer === first!.buffer && chunk.byteOffset === first!.byteOffset + offsets[i]!
    }
    if (contiguous) return { s: { data: new Uint8Array(first!.buffer, first!.byteOffset, offsets[n]!), offsets } }
    const data = new Uint8Array(offsets[n]!)
    for (let i = 0; i < n; i++) data.set(chunks[i]!, offsets[i]!)
    return { s: { data, offsets } }
  },
  fromColumns(columns) {
    const column = columnOf(columns, 's') as Utf8Column
    return Array.from({ length: column.offsets.length - 1 }, (_, i) => column.data.slice(column.offsets[i], column.offsets[i + 1]))
  },
}

/** Field kinds of a record layout: the column each field lives in and its type. */
export type RecordFields = { readonly [field: string]: { readonly column: string; readonly type: 'string' | 'number' } }

/** Objects whose fields map to columns: strings as UTF-8 columns, numbers as Float64Array. */
export function recordLayout<T extends Record<string, string | number>>(fields: RecordFields): NativeLayout<T> {
  const entries = Object.entries(fields)
  return {
    name: `records(${entries.map(([f, c]) => `${f}:${c.column}`).join(',')})`,
    toColumns: (values) => {
      const columns: Record<string, Columns[string]> = {}
      for (const [field, { column, type }] of entries) {
        columns[column] = type === 'number' ? Float64Array.from(values, (v) => v[field] as number) : utf8Column(values.map((v) => v[field] as string))
      }
      return columns
    },
    fromColumns: (columns) => {
      const decoded = entries.map(([field, { column, type }]) => {
        const data = columnOf(columns, column)
        return [field, type === 'number' ? (data as Float64Array) : utf8Strings(data as Utf8Column)] as const
      })
      const rows = decoded[0]?.[1].length ?? 0
      const out: T[] = new Array<T>(rows)
      for (let i = 0; i < rows; i++) {
        const row: Record<string, string | number> = {}
        for (const [field, values] of decoded) row[field] = values[i]!
        out[i] = row as T
      }
      return out
    },
  }
}

function columnOf(columns: Columns, column: string): Columns[string] {
  const data = columns[column]
  if (data === undefined) throw new TypeError(`the native chain's output has no column "${column}" (it has: ${Object.keys(columns).join(', ')})`)
  return data
}

/** Definition of a native operator. */
export interface NativeDefinition<I extends AnyCodec, O extends AnyCodec> {
  readonly name: string
  readonly input: I
  readonly output: O
  /** The native chain: tokenize, filter, map, partition, count, aggregate, window (see native/README.md). */
  readonly steps: readonly StepSpec[]
  readonly inputLayout: NativeLayout<t.TypeOf<I>>
  readonly outputLayout: NativeLayout<t.TypeOf<O>>
  /**
   * Makes the operator keyed: links into it hash-partition by this key. With a `count`,
   * `aggregate` or `window` step, return the value of that step's key column (as in
   * `(order) => order.customer` for `key: 'customer'`): checkpoints keep the chain's state per
   * value of that column, and a rescale moves each value's state to the instance its records now
   * go to. Without a key the state is one unkeyed slot, which a rescale cannot split.
   */
  readonly key?: (value: t.TypeOf<I>) => Key
  /**
   * With a `window` step: where records later than the step's `allowedLatenessMs` go. `'port'`
   * gives the operator a `late` output port (records in the `input` codec); `'dead-letter'` makes
   * each one a dead letter (code `ERR_REJECTED`, message `late record (ERR_LATE_RECORD): …`), as
   * the `window` operator does. Late rows are decoded with `inputLayout` from the columns that
   * reached the window step (steps before it that keep the input's columns, such as `filter`,
   * keep them decodable); rows it cannot decode become one dead letter `{ lateRows, columns }`.
   * @default 'dead-letter'
   */
  readonly lateRecords?: 'port' | 'dead-letter'
  readonly annotations?: Annotations
}

/** Steps that keep keyed state between batches, which checkpoints take (see saveChainState). */
const STATEFUL = new Set(['count', 'aggregate', 'window'])

/** Steps after which a chain produces only at `finish` (or in n parts): nothing can follow them. */
const TERMINAL = new Set(['count', 'aggregate', 'window', 'partition'])

const definitions = new WeakMap<object, NativeDefinition<AnyCodec, AnyCodec>>()

const fusible: Fusible = {
  kind: 'native',
  fuse(self, next) {
    const a = definitions.get(self.body)
    const b = definitions.get(next.body)
    if (a === undefined || b === undefined || a.outputLayout !== b.inputLayout || b.key !== undefined) return undefined
    if (a.steps.some((s) => TERMINAL.has(s.op))) return undefined
    return native({
      name: `${a.name}+${b.name}`,
      input: a.input,
      output: b.output,
      steps: [...a.steps, ...b.steps],
      inputLayout: a.inputLayout,
      outputLayout: b.outputLayout,
      ...(a.key === undefined ? {} : { key: a.key }),
      ...(b.lateRecords === undefined ? {} : { lateRecords: b.lateRecords }),
      annotations: { ...b.annotations, ...a.annotations },
    })
  },
}

/** The ports of a native operator whose late records go to a port (`lateRecords: 'port'`). */
export type NativeLatePorts<I extends AnyCodec, O extends AnyCodec> = { out: O; late: I }

/**
 * An operator that runs a chain of native batch operators on each input batch, in one native call:
 * port `in` takes records, converted by `inputLayout`; the chain's output batches (per push, or at
 * the end for aggregates) leave on `out` through `outputLayout`. Consecutive native operators
 * linked forward on one peer are fused into one chain automatically. With a `window` step it fires
 * at the watermark, and its late records go to dead letters or, with `lateRecords: 'port'`, to a
 * `late` port.
 *
 * ```ts
 * const counts = native({
 *   name: 'counts', input: t.string, output: WordCount,
 *   steps: [{ op: 'tokenize' }, { op: 'count' }],
 *   inputLayout: stringLayout(), outputLayout: recordLayout({ word: { column: 'key', type: 'string' }, count: { column: 'count', type: 'number' } }),
 * })
 * ```
 */
export function native<I extends AnyCodec, O extends AnyCodec>(definition: NativeDefinition<I, O> & { readonly lateRecords: 'port' }): Operator<{ in: I }, NativeLatePorts<I, O>>
export function native<I extends AnyCodec, O extends AnyCodec>(definition: NativeDefinition<I, O>): Operator<{ in: I }, { out: O }>
export function native<I extends AnyCodec, O extends AnyCodec>(definition: NativeDefinition<I, O>): Operator<{ in: I }, { out: O }> | Operator<{ in: I }, NativeLatePorts<I, O>> {
  // Fail at definition time on a bad chain (a typed NativePlanError), not on the first batch.
  new NativeChain(definition.steps)
  type Ctx = AtomContext<NativeLatePorts<I, O>, unknown>
  // A chain with a window step fires at the watermark; the rows it finds late are taken back from
  // the chain after each push that had some (the late count, read once a push, says so: a getter on
  // the chain is a call into native code) and sent to the late port or to dead letters.
  const windowStep = definition.steps.find((step): step is WindowStep => step.op === 'window')
  const windowed = windowStep !== undefined
  const toPort = definition.lateRecords === 'port'
  if (toPort && !windowed) throw new InvalidOptionError(`operator ${definition.name}`, 'lateRecords', "is 'port', but the chain has no window step to find late records")
  const lateness = windowStep?.allowedLatenessMs ?? 0
  const timeColumn = windowStep?.time ?? 't'
  // Each instance's chain, the chain's late count after the last push, and the last watermark.
  interface Instance {
    chain: NativeChain
    late: number
    watermark: number
  }
  const chains = new WeakMap<object, Instance>()
  const instanceOf = (ctx: Ctx): Instance => {
    let instance = chains.get(ctx)
    if (instance === undefined) chains.set(ctx, (instance = { chain: new NativeChain(definition.steps), late: 0, watermark: Number.NEGATIVE_INFINITY }))
    return instance
  }
  const chainOf = (ctx: Ctx): NativeChain => instanceOf(ctx).chain
  const emit = (ctx: Ctx, batches: readonly Columns[]): void => {
    for (const batch of batches) ctx.emitAll('out', definition.outputLayout.fromColumns(batch))
  }
  /** Sends the `n` late rows of the last push aside, each as a record, or all as one dead letter when the input layout cannot decode them. */
  const sendLate = (ctx: Ctx, instance: Instance, n: number): void => {
    const [columns] = instance.chain.takeLate()
    let records: readonly t.TypeOf<I>[] | undefined
    let reason = 'the chain kept no late rows'
    if (columns !== undefined) {
      try {
        records = definition.inputLayout.fromColumns(columns)
      } catch (error) {
        reason = `the input layout cannot decode them: ${error instanceof Error ? error.message : String(error)}`
      }
    }
    if (records === undefined || records.length !== n) {
      ctx.reject(
        { lateRows: n, ...(columns === undefined ? {} : { columns }) },
        `${n} records are later than the watermark less the allowed lateness (ERR_LATE_RECORD), not aggregated; ${reason}`,
      )
      return
    }
    if (toPort) {
      ctx.emitAll('late', records)
      return
    }
    const times = columns?.[timeColumn]
    records.forEach((record, i) => {
      const time = times instanceof Float64Array ? times[i] : Number.NaN
      ctx.reject(record, `late record (ERR_LATE_RECORD): event time ${time} is below the watermark ${instance.watermark} less the allowed lateness ${lateness} ms`)
    })
  }
  const stateful = definition.steps.some((step) => STATEFUL.has(step.op))
  const keyed = definition.key !== undefined
  // The sink's state rows carry sum, min and max when it aggregates values.
  const sinkStep = definition.steps.find((step) => STATEFUL.has(step.op))
  const shape = { windowed, withValues: sinkStep?.op === 'aggregate' || (sinkStep?.op === 'window' && sinkStep['value'] !== undefined) }
  const op = atom<{ in: I }, NativeLatePorts<I, O>, unknown>({
    name: definition.name,
    inputs: { in: definition.input },
    // The late port exists only when asked for: an operator with one output fuses with the next.
    outputs: (toPort ? { out: definition.output, late: definition.input } : { out: definition.output }) as NativeLatePorts<I, O>,
    ...(keyed ? { key: (value: t.TypeOf<I>) => definition.key!(value) } : {}),
    onBatch: {
      in: (values, ctx) => {
        if (values.length === 0) return
        const instance = instanceOf(ctx)
        emit(ctx, instance.chain.push(definition.inputLayout.toColumns(values)))
        if (!windowed) return
        const late = instance.chain.late
        if (late > instance.late) sendLate(ctx, instance, late - instance.late)
        instance.late = late
      },
    },
    ...(windowed
      ? {
          watermark: (time: number, ctx: Ctx) => {
            const instance = instanceOf(ctx)
            instance.watermark = time
            emit(ctx, instance.chain.advance(time))
          },
        }
      : {}),
    end: (ctx) => emit(ctx, chainOf(ctx).finish()),
    // The chain's keyed state lives in the native core: checkpoints take it as rows per key
    // (keyed state, so a rescale moves it by key group) and a restore hands the rows back.
    ...(stateful
      ? {
          state: { codec: (keyed ? KeyRows : SlotRows) as unknown as t.Type<unknown, unknown, unknown>, init: () => [] },
          saveState: (ctx: Ctx) => saveChainState(chains.get(ctx)?.chain, ctx.state, keyed),
          loadState: (ctx: Ctx) => {
            const chain = new NativeChain(definition.steps)
            loadChainState(chain, ctx.state, keyed, shape)
            chains.set(ctx, { chain, late: 0, watermark: Number.NEGATIVE_INFINITY })
          },
        }
      : {}),
    fusible,
    ...(definition.annotations === undefined ? {} : { annotations: definition.annotations }),
  })
  definitions.set(op.body, definition as unknown as NativeDefinition<AnyCodec, AnyCodec>)
  return op
}

// --- State of a chain in checkpoints ---------------------------------------------------------
// A chain's snapshot (see Chain.snapshot in native/ts/types.ts) is one batch of rows: `key`, then
// `start` for windows, `count`, `sum`, `min`, `max` with values, and `end`, `fired` for windows. As
// operator state each key keeps its rows as arrays of numbers (`[start?, count, sum?, min?, max?,
// end?, fired?]`; rows of fixed windows saved before `end` and `fired` existed restore as windows
// that have not fired); an unkeyed operator
// keeps `[key, row]` pairs in its one slot. Snapshots are JSON, so non-finite numbers (a min of
// Infinity, a NaN sum) are kept as the strings "Infinity", "-Infinity" and "NaN".

/** A number that survives JSON: non-finite values are encoded as strings. */
const Float = new t.Type<number, number | string, unknown>(
  'Float',
  (u): u is number => typeof u === 'number',
  (u, c) => {
    if (typeof u === 'number') return t.success(u)
    if (u === 'Infinity' || u === '-Infinity' || u === 'NaN') return t.success(Number(u))
    return t.failure(u, c, 'expected a number, or "Infinity", "-Infinity" or "NaN"')
  },
  (n) => (Number.isFinite(n) ? n : String(n)),
)
const Row = t.array(Float)
/** Keyed state of a native chain: the rows of one key. */
const KeyRows = t.array(Row)
type KeyRows = t.TypeOf<typeof KeyRows>
/** Unkeyed state of a native chain: every row with its key. */
const SlotRows = t.array(t.tuple([t.union([t.string, t.number]), Row]))
type SlotRows = t.TypeOf<typeof SlotRows>

/** Writes the chain's state rows into `state` (replacing what an earlier checkpoint wrote). */
function saveChainState(chain: NativeChain | undefined, state: StateAccess<unknown>, keyed: boolean): void {
  const [batch] = chain === undefined || chain.finished ? [] : chain.snapshot()
  const byKey = new Map<Key, number[][]>()
  if (batch !== undefined) {
    const { key, ...rest } = batch
    const keys: readonly Key[] = key instanceof Float64Array ? Array.from(key) : utf8Strings(key as Utf8Column)
    const columns = Object.values(rest) as Float64Array[]
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!
      let rows = byKey.get(k)
      if (rows === undefined) byKey.set(k, (rows = []))
      rows.push(columns.map((c) => c[i]!))
    }
  }
  if (!keyed) {
    state.set([...byKey].flatMap(([k, rows]) => rows.map((row) => [k, row] as const)))
    return
  }
  for (const [k] of [...state.entries()]) if (!byKey.has(k)) state.deleteOf(k)
  for (const [k, rows] of byKey) state.setOf(k, rows)
}

/** Restores the rows in `state` into a fresh chain, then empties `state` (the chain holds them). */
function loadChainState(chain: NativeChain, state: StateAccess<unknown>, keyed: boolean, shape: { windowed: boolean; withValues: boolean }): void {
  const pairs: (readonly [Key, readonly number[]])[] = keyed
    ? [...(state.entries() as IterableIterator<[Key, KeyRows]>)].flatMap(([k, rows]) => rows.map((row) => [k, row] as const))
    : (state.get() as SlotRows)
  if (pairs.length === 0) return
  const base = [...(shape.windowed ? ['start'] : []), 'count', ...(shape.withValues ? ['sum', 'min', 'max'] : [])]
  const full = [...base, ...(shape.windowed ? ['end', 'fired'] : [])]
  // Window rows of an older checkpoint have no end and fired: all rows must be of one shape.
  const names = shape.windowed && pairs[0]![1].length === base.length ? base : full
  if (pairs.some(([, row]) => row.length !== names.length)) throw new TypeError(`each state row must be [${names.join(', ')}]`)
  const strings = pairs.every(([k]) => typeof k === 'string')
  if (!strings && !pairs.every(([k]) => typeof k === 'number')) throw new TypeError('state keys mix strings and numbers')
  const batch: Record<string, Columns[string]> = {
    key: strings ? utf8Column(pairs.map(([k]) => k as string)) : Float64Array.from(pairs, ([k]) => k as number),
  }
  names.forEach((name, j) => {
    batch[name] = Float64Array.from(pairs, ([, row]) => row[j]!)
  })
  chain.restore(batch)
  if (keyed) for (const [k] of [...state.entries()]) state.deleteOf(k)
  else state.set([])
}
