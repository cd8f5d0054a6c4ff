// Native operators: a chain of the Rust core's batch operators, run one native call per batch.
// Consecutive native operators on one peer are fused by the kernel's operator chaining.

import * as t from 'io-ts'
import type { Batch as Columns, StepSpec, Utf8Column } from '../../native/ts/native.js'
import { NativeChain, utf8Column, utf8Strings } from '../../native/ts/native.js'
import type { Annotations, AnyCodec, AtomContext, Fusible, Key, Operator } from '../contracts.js'
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
  /** Makes the operator keyed: links into it hash-partition by this key. */
  readonly key?: (value: t.TypeOf<I>) => Key
  readonly annotations?: Annotations
}

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
      annotations: { ...b.annotations, ...a.annotations },
    })
  },
}

/**
 * An operator that runs a chain of native batch operators on each input batch, in one native call:
 * port `in` takes records, converted by `inputLayout`; the chain's output batches (per push, or at
 * the end for aggregates) leave on `out` through `outputLayout`. Consecutive native operators
 * linked forward on one peer are fused into one chain automatically.
 *
 * ```ts
 * const counts = native({
 *   name: 'counts', input: t.string, output: WordCount,
 *   steps: [{ op: 'tokenize' }, { op: 'count' }],
 *   inputLayout: stringLayout(), outputLayout: recordLayout({ word: { column: 'key', type: 'string' }, count: { column: 'count', type: 'number' } }),
 * })
 * ```
 */
export function native<I extends AnyCodec, O extends AnyCodec>(definition: NativeDefinition<I, O>): Operator<{ in: I }, { out: O }> {
  // Fail at definition time on a bad chain (a typed NativePlanError), not on the first batch.
  new NativeChain(definition.steps)
  // Each instance's chain, and the chain's late count after the last push (read once a push: a
  // getter on the chain is a call into native code).
  const chains = new WeakMap<object, { chain: NativeChain; late: number }>()
  const instanceOf = (ctx: AtomContext<{ out: O }, undefined>): { chain: NativeChain; late: number } => {
    let instance = chains.get(ctx)
    if (instance === undefined) chains.set(ctx, (instance = { chain: new NativeChain(definition.steps), late: 0 }))
    return instance
  }
  const chainOf = (ctx: AtomContext<{ out: O }, undefined>): NativeChain => instanceOf(ctx).chain
  const emit = (ctx: AtomContext<{ out: O }, undefined>, batches: readonly Columns[]): void => {
    for (const batch of batches) ctx.emitAll('out', definition.outputLayout.fromColumns(batch))
  }
  // A chain with a window step fires at the watermark; rows it finds late are counted, and each
  // batch's count is recorded as a dead letter (the chain keeps no late row itself).
  const windowed = definition.steps.some((step) => step.op === 'window')
  const op = atom<{ in: I }, { out: O }, undefined>({
    name: definition.name,
    inputs: { in: definition.input },
    outputs: { out: definition.output },
    ...(definition.key === undefined ? {} : { key: (value: t.TypeOf<I>) => definition.key!(value) }),
    onBatch: {
      in: (values, ctx) => {
        if (values.length === 0) return
        const instance = instanceOf(ctx)
        emit(ctx, instance.chain.push(definition.inputLayout.toColumns(values)))
        if (!windowed) return
        const late = instance.chain.late
        if (late > instance.late)
          ctx.reject({ lateRows: late - instance.late }, `${late - instance.late} of ${values.length} records are later than the watermark (ERR_LATE_RECORD): not aggregated`)
        instance.late = late
      },
    },
    ...(windowed ? { watermark: (time: number, ctx: AtomContext<{ out: O }, undefined>) => emit(ctx, chainOf(ctx).advance(time)) } : {}),
    end: (ctx) => emit(ctx, chainOf(ctx).finish()),
    fusible,
    ...(definition.annotations === undefined ? {} : { annotations: definition.annotations }),
  })
  definitions.set(op.body, definition as unknown as NativeDefinition<AnyCodec, AnyCodec>)
  return op
}
