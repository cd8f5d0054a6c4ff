import { describe, it, expect } from 'vitest'
import fc from 'fast-check'

import { runChain, utf8Column, utf8Strings } from './batch.js'
import { NativeCoreError } from './errors.js'
import { nativeEngine } from './native.js'
import { referenceEngine } from './reference.js'
import { canonical, canonicalAll, outcome, type Outcome } from './testing.js'
import type { Batch, BatchEngine } from './types.js'

/** A corrupted input and the typed error it must produce. */
interface Case {
  readonly kind: string
  /** Builds the (malformed) argument; `what` is how the operator names a whole batch. */
  readonly input: unknown
  /** Which operators to feed it to. */
  readonly ops: readonly Op[]
  readonly code: string
  /** The column the error must name, given how the operator names the whole batch and string column `s`. */
  readonly column: (names: Names) => string
  readonly index?: number
}

interface Names {
  /** How the operator names the batch argument. */
  readonly batch: string
  /** How the operator names string column `s`. */
  readonly s: string
}

type Op = 'pass' | 'count' | 'partition' | 'joinLeft' | 'joinRight' | 'tokenizeColumn' | 'window' | 'wordcount'

const NAMES: Record<Op, Names> = {
  pass: { batch: 'batch', s: 's' },
  count: { batch: 'batch', s: 's' },
  partition: { batch: 'batch', s: 's' },
  joinLeft: { batch: 'left', s: 's' },
  joinRight: { batch: 'right', s: 's' },
  tokenizeColumn: { batch: 'column', s: 'column' },
  window: { batch: 'batch', s: 's' },
  wordcount: { batch: 'text', s: 'text' },
}

const GOOD: Batch = { s: utf8Column(['a', 'b']), x: Float64Array.from([1, 2]) }

function run(engine: BatchEngine, op: Op, input: unknown): Outcome {
  const b = input as Batch
  switch (op) {
    case 'pass':
      return outcome(() => engine.compile([]).push(b))
    case 'count':
      return outcome(() => engine.compile([{ op: 'count' }]).push(b))
    case 'partition':
      return outcome(() => engine.hashPartition(b, 3, 's'))
    case 'joinLeft':
      return outcome(() => engine.hashJoin(b, GOOD, { leftKey: 's' }))
    case 'joinRight':
      return outcome(() => engine.hashJoin(GOOD, b, { leftKey: 's' }))
    case 'tokenizeColumn':
      // The standalone tokenizer takes the string column itself.
      return outcome(() => engine.tokenize((input as { s: never }).s ?? (input as never)))
    case 'window':
      return outcome(() => engine.compile([{ op: 'window', size: 10 }]).push(b))
    case 'wordcount':
      return outcome(() => engine.wordcount(input as Uint8Array))
  }
}

const BATCH_OPS: readonly Op[] = ['pass', 'count', 'partition', 'joinLeft', 'joinRight']
const ASCII = fc.string({ unit: 'grapheme-ascii', maxLength: 8 })
const MULTIBYTE = fc.string({ unit: fc.constantFrom('a', 'é', 'Σ', '中', '😀', '𐐀', 'İ', ' '), minLength: 1, maxLength: 6 })
const NOT_A_BATCH = [null, 42, 'text', [1, 2], new Float64Array(2), undefined, true, Symbol('batch'), 10n, () => 1]
const NOT_A_COLUMN = [[1, 2], 'str', null, 5, undefined, true, new Int32Array(2), new Uint8Array(2), new Float32Array(2), new BigInt64Array(2)]
const NOT_DATA = [new Int8Array(2), [97], undefined, new Uint8ClampedArray(2), new Float64Array(1), 'ab', null, new Uint16Array(1)]
const NOT_OFFSETS = [new Int32Array([0, 1]), new Float64Array([0, 1]), undefined, [0, 1], new Uint16Array([0, 1]), 'x', new BigUint64Array(2)]

function base(strings: readonly string[]): { s: { data: Uint8Array; offsets: Uint32Array }; x: Float64Array } {
  const s = utf8Column(strings)
  return { s: { data: s.data.slice(), offsets: s.offsets.slice() }, x: Float64Array.from(strings, (_, i) => i) }
}

/** Every way of breaking a batch that the native core must reject with a typed error. */
const cases: fc.Arbitrary<Case> = fc.oneof(
  fc.constantFrom(...NOT_A_BATCH).map((v): Case => ({ kind: 'not a batch', input: v, ops: BATCH_OPS, code: 'ERR_NATIVE_BAD_BATCH', column: (n) => n.batch })),
  fc
    .tuple(fc.array(ASCII, { maxLength: 5 }), fc.constantFrom(...NOT_A_COLUMN))
    .map(([strings, v]): Case => ({ kind: 'column of the wrong type', input: { ...base(strings), x: v }, ops: BATCH_OPS, code: 'ERR_NATIVE_BAD_BATCH', column: () => 'x' })),
  fc.tuple(fc.array(ASCII, { maxLength: 5 }), fc.constantFrom(...NOT_DATA)).map(([strings, v]): Case => {
    const b = base(strings)
    return {
      kind: 'data of the wrong type',
      input: { ...b, s: { ...b.s, data: v } },
      ops: [...BATCH_OPS, 'tokenizeColumn'],
      code: 'ERR_NATIVE_BAD_BATCH',
      column: (n) => `${n.s}.data`,
    }
  }),
  fc.tuple(fc.array(ASCII, { maxLength: 5 }), fc.constantFrom(...NOT_OFFSETS)).map(([strings, v]): Case => {
    const b = base(strings)
    return {
      kind: 'offsets of the wrong type',
      input: { ...b, s: { ...b.s, offsets: v } },
      ops: [...BATCH_OPS, 'tokenizeColumn'],
      code: 'ERR_NATIVE_BAD_BATCH',
      column: (n) => `${n.s}.offsets`,
    }
  }),
  fc.array(ASCII, { maxLength: 5 }).map((strings): Case => {
    const b = base(strings)
    return {
      kind: 'no offsets',
      input: { ...b, s: { ...b.s, offsets: new Uint32Array(0) } },
      ops: [...BATCH_OPS, 'tokenizeColumn'],
      code: 'ERR_NATIVE_BAD_BATCH',
      column: (n) => `${n.s}.offsets`,
    }
  }),
  fc.tuple(fc.array(ASCII, { minLength: 1, maxLength: 5 }), fc.nat(), fc.integer({ min: 1, max: 2 ** 31 })).map(([strings, at, past]): Case => {
    const b = base(strings)
    const i = at % b.s.offsets.length
    b.s.offsets[i] = b.s.data.length + past
    return { kind: 'offset past the end', input: b, ops: [...BATCH_OPS, 'tokenizeColumn'], code: 'ERR_NATIVE_BAD_BATCH', column: (n) => `${n.s}.offsets`, index: i }
  }),
  fc.tuple(fc.array(ASCII, { minLength: 1, maxLength: 5 }), fc.nat(), fc.nat()).chain(([strings, at, by]) => {
    const b = base(strings)
    const candidates = [...b.s.offsets.keys()].filter((i) => i > 0 && (b.s.offsets[i - 1] as number) > 0)
    if (candidates.length === 0) return fc.constant<Case>({ kind: 'not a batch', input: null, ops: BATCH_OPS, code: 'ERR_NATIVE_BAD_BATCH', column: (n) => n.batch })
    const i = candidates[at % candidates.length] as number
    b.s.offsets[i] = (b.s.offsets[i - 1] as number) - 1 - (by % (b.s.offsets[i - 1] as number))
    return fc.constant<Case>({
      kind: 'decreasing offsets',
      input: b,
      ops: [...BATCH_OPS, 'tokenizeColumn'],
      code: 'ERR_NATIVE_BAD_BATCH',
      column: (n) => `${n.s}.offsets`,
      index: i,
    })
  }),
  fc.tuple(fc.array(ASCII, { minLength: 1, maxLength: 5 }), fc.nat(), fc.constantFrom(0xff, 0x80, 0xbf, 0xc0, 0xc1, 0xc3, 0xe2, 0xed, 0xf0, 0xf5)).chain(([strings, at, byte]) => {
    const b = base(strings)
    const first = b.s.offsets[0] as number
    const last = b.s.offsets[b.s.offsets.length - 1] as number
    if (last === first)
      return fc.constant<Case>({
        kind: 'no offsets',
        input: { ...b, s: { ...b.s, offsets: new Uint32Array(0) } },
        ops: BATCH_OPS,
        code: 'ERR_NATIVE_BAD_BATCH',
        column: (n) => `${n.s}.offsets`,
      })
    const p = first + (at % (last - first))
    b.s.data[p] = byte
    return fc.constant<Case>({ kind: 'invalid UTF-8', input: b, ops: [...BATCH_OPS, 'tokenizeColumn'], code: 'ERR_NATIVE_BAD_BATCH', column: (n) => `${n.s}.data`, index: p })
  }),
  fc.tuple(fc.array(MULTIBYTE, { minLength: 2, maxLength: 5 }), fc.nat(), fc.nat()).chain(([strings, at, pick]) => {
    const b = base(strings)
    const o = b.s.offsets
    const splits: Array<[number, number]> = []
    for (let i = 1; i + 1 < o.length; i++) {
      for (let p = (o[i - 1] as number) + 1; p < (o[i + 1] as number); p++) if (((b.s.data[p] as number) & 0xc0) === 0x80) splits.push([i, p])
    }
    const chosen = splits[(at + pick) % Math.max(1, splits.length)]
    if (chosen === undefined) return fc.constant<Case>({ kind: 'not a batch', input: 7, ops: BATCH_OPS, code: 'ERR_NATIVE_BAD_BATCH', column: (n) => n.batch })
    o[chosen[0]] = chosen[1]
    return fc.constant<Case>({
      kind: 'offset splitting a character',
      input: b,
      ops: [...BATCH_OPS, 'tokenizeColumn'],
      code: 'ERR_NATIVE_BAD_BATCH',
      column: (n) => `${n.s}.offsets`,
      index: chosen[0],
    })
  }),
  fc.tuple(fc.array(ASCII, { maxLength: 5 }), fc.integer({ min: 1, max: 3 }), fc.boolean()).map(([strings, d, longer]): Case => {
    const b = base(strings)
    const len = longer ? strings.length + d : Math.max(0, strings.length - d)
    const x = len === strings.length ? new Float64Array(len + 1) : new Float64Array(len)
    return { kind: 'columns of different lengths', input: { ...b, x }, ops: BATCH_OPS, code: 'ERR_NATIVE_BAD_BATCH', column: () => 'x' }
  }),
  fc.array(ASCII, { minLength: 1, maxLength: 5 }).map((strings): Case => {
    const b = base(strings)
    const buffer = new ArrayBuffer(8 * strings.length)
    const x = new Float64Array(buffer)
    structuredClone(buffer, { transfer: [buffer] }) // detaches: x now has length 0
    return { kind: 'detached column', input: { ...b, x }, ops: BATCH_OPS, code: 'ERR_NATIVE_BAD_BATCH', column: () => 'x' }
  }),
  fc.tuple(fc.array(ASCII, { minLength: 1, maxLength: 5 }), fc.nat(), fc.constantFrom(NaN, Infinity, -Infinity, 2 ** 60)).map(([strings, at, bad]): Case => {
    const b = base(strings)
    const t = Float64Array.from(strings, (_, i) => i)
    const i = at % strings.length
    t[i] = bad
    return { kind: 'bad event time', input: { ...b, t }, ops: ['window'], code: 'ERR_NATIVE_BAD_BATCH', column: () => 't', index: i }
  }),
  fc.array(ASCII, { maxLength: 5 }).map((strings): Case => {
    const b = base(strings)
    return { kind: 'missing column', input: { x: b.x }, ops: ['count', 'partition', 'joinLeft', 'joinRight'], code: 'ERR_NATIVE_BAD_BATCH', column: () => 's' }
  }),
  fc.tuple(fc.array(ASCII, { maxLength: 5 }), fc.nat(), fc.constantFrom(0xff, 0xc3, 0xed)).map(([strings, at, byte]): Case => {
    const bytes = new TextEncoder().encode(strings.join(' ') + '.')
    const p = at % bytes.length
    bytes[p] = byte
    return { kind: 'invalid UTF-8 text', input: bytes, ops: ['wordcount'], code: 'ERR_NATIVE_BAD_BATCH', column: () => 'text', index: p }
  }),
)

describe('malformed batches', () => {
  it('10,000 random malformed batches each give the expected typed error, natively and in the reference', () => {
    const seen = new Map<string, number>()
    let calls = 0
    fc.assert(
      fc.property(cases, fc.nat(), (c, pick) => {
        const op = c.ops[pick % c.ops.length] as Op
        const expected = {
          error: c.index === undefined ? { code: c.code, column: c.column(NAMES[op]) } : { code: c.code, column: c.column(NAMES[op]), index: c.index },
        }
        const got = run(nativeEngine, op, c.input)
        expect(got, `${c.kind} via ${op}`).toEqual(expected)
        expect(run(referenceEngine, op, c.input), `${c.kind} via ${op} (reference)`).toEqual(expected)
        seen.set(c.kind, (seen.get(c.kind) ?? 0) + 1)
        calls++
      }),
      { numRuns: 10_000 },
    )
    expect(calls).toBe(10_000)
    // Every kind of corruption was exercised many times.
    for (const kind of [
      'not a batch',
      'column of the wrong type',
      'data of the wrong type',
      'offsets of the wrong type',
      'no offsets',
      'offset past the end',
      'decreasing offsets',
      'invalid UTF-8',
      'offset splitting a character',
      'columns of different lengths',
      'detached column',
      'bad event time',
      'missing column',
      'invalid UTF-8 text',
    ]) {
      expect(seen.get(kind) ?? 0, kind).toBeGreaterThan(100)
    }
    // The process is still up and the core still works.
    expect(utf8Strings(nativeEngine.tokenize(utf8Column(['Still Here'])).words)).toEqual(['still', 'here'])
  })

  it('a getter that throws propagates its own error and leaves the core usable', () => {
    const hostile = Object.defineProperty({ s: utf8Column(['a']) }, 'x', {
      enumerable: true,
      get() {
        throw new RangeError('getter refused')
      },
    })
    expect(() => nativeEngine.compile([]).push(hostile as Batch)).toThrow('getter refused')
    expect(() => nativeEngine.compile([]).push(GOOD)).not.toThrow()
  })

  it('a getter that detaches an earlier column cannot make the core read freed memory', () => {
    const buffer = new ArrayBuffer(16)
    const x = new Float64Array(buffer)
    const batch = { x } as Record<string, unknown>
    Object.defineProperty(batch, 'y', {
      enumerable: true,
      get() {
        structuredClone(buffer, { transfer: [buffer] })
        return new Float64Array(2)
      },
    })
    // x is detached before any memory is borrowed, so it reads as 0 rows: a length mismatch, not a crash.
    const got = outcome(() => nativeEngine.compile([]).push(batch as Batch))
    expect(got).toEqual({ error: { code: 'ERR_NATIVE_BAD_BATCH', column: 'y' } })
  })

  it('a getter on the right side of a join that detaches the left side cannot make the core read freed memory', () => {
    const buffer = new ArrayBuffer(16)
    const left: Batch = { s: utf8Column(['a', 'b']), x: new Float64Array(buffer) }
    const right = { s: utf8Column(['a']) } as Record<string, unknown>
    Object.defineProperty(right, 'w', {
      enumerable: true,
      get() {
        structuredClone(buffer, { transfer: [buffer] })
        return new Float64Array(1)
      },
    })
    const expected = { error: { code: 'ERR_NATIVE_BAD_BATCH', column: 'x' } }
    expect(outcome(() => nativeEngine.hashJoin(left, right as Batch, { leftKey: 's' }))).toEqual(expected)
  })

  it('columns in shared memory are read as a snapshot and give the same results', () => {
    const strings = ['Shared Memory', 'ΣΊΣΥΦΟΣ', 'x']
    const plain = utf8Column(strings)
    const data = new Uint8Array(new SharedArrayBuffer(plain.data.length))
    data.set(plain.data)
    const offsets = new Uint32Array(new SharedArrayBuffer(plain.offsets.byteLength))
    offsets.set(plain.offsets)
    const x = new Float64Array(new SharedArrayBuffer(24))
    x.set([1, NaN, -0])
    const shared: Batch = { s: { data, offsets }, x }
    const steps = [{ op: 'tokenize' as const }, { op: 'count' as const }]
    const run = (engine: BatchEngine, b: Batch) => outcome(() => [...runChain(engine, steps, [b]), ...engine.compile([]).push(b)], canonicalAll)
    const expected = run(nativeEngine, { s: plain, x: Float64Array.from([1, NaN, -0]) })
    expect(expected).toEqual({
      ok: [{ key: ['utf8', 'shared', 'memory', 'σίσυφος', 'x'], count: ['f64', '1', '1', '1', '1'] }, canonical({ s: plain, x: Float64Array.from([1, NaN, -0]) })],
    })
    expect(run(nativeEngine, shared)).toEqual(expected)
    expect(run(referenceEngine, shared)).toEqual(expected)
  })

  it('errors are NativeCoreError instances with a name and a stable code', () => {
    try {
      nativeEngine.compile([]).push({ s: { data: new Uint8Array([0xff]), offsets: Uint32Array.from([0, 1]) } })
      expect.unreachable()
    } catch (error) {
      expect(error).toBeInstanceOf(NativeCoreError)
      expect((error as NativeCoreError).name).toBe('NativeBatchError')
      expect((error as NativeCoreError).code).toBe('ERR_NATIVE_BAD_BATCH')
      expect((error as Error).message).toContain('s.data')
    }
  })
})
