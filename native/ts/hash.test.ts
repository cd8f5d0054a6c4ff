import { describe, it, expect } from 'vitest'
import fc from 'fast-check'

import * as native from './native.js'
import * as reference from './reference.js'
import { TRICKY_CHARS } from './testing.js'

const unicodeText = fc.string({
  unit: fc.oneof(fc.constantFrom(...TRICKY_CHARS), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })),
  maxLength: 40,
})

/** The hash exactly as specified, written independently of both implementations. */
function fnv1aUtf16(text: string): number {
  let h = 2166136261
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 16777619) >>> 0
  }
  return h
}

/** Doubles with few fractional bits: the digits of their shortest form can tie, which must round to even. */
const nearTies = fc
  .tuple(fc.integer({ min: 2 ** 20, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 2 ** 22 - 1 }), fc.integer({ min: -12, max: 80 }))
  .map(([hi, lo, e]) => (hi * 2 ** 22 + lo) * 2 ** e)

const anyNumber = fc.oneof(
  fc.double(),
  fc.integer(),
  nearTies,
  nearTies.map((x) => -x),
  fc.constantFrom(NaN, Infinity, -Infinity, 0, -0, 1e21, 1e-7, 123e-20, 5e-324, Number.MAX_VALUE, Number.MAX_SAFE_INTEGER, 0.1 + 0.2, 1387720790384734.2, 2 ** 60),
)

describe('hashKey', () => {
  it('is FNV-1a over UTF-16 code units, natively and in the reference', () => {
    fc.assert(
      fc.property(fc.oneof(unicodeText, fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme', maxLength: 300 })), (s) => {
        const expected = fnv1aUtf16(s)
        expect(reference.hashKey(s)).toBe(expected)
        // Lone surrogates cannot cross into Rust as UTF-8; native hashing of such strings is not defined.
        if (!/\p{Cs}/u.test(s)) expect(native.hashKey(s)).toBe(expected)
      }),
      { numRuns: 1000 },
    )
    expect(native.hashKey('')).toBe(2166136261)
  })

  it('hashes numbers by their String(k) form', () => {
    fc.assert(
      fc.property(anyNumber, (x) => {
        expect(native.hashKey(x)).toBe(fnv1aUtf16(String(x)))
        expect(reference.hashKey(x)).toBe(fnv1aUtf16(String(x)))
      }),
      { numRuns: 2000 },
    )
  })

  it('formats numbers as String(x) does', () => {
    const binding = native.loadNativeCore()
    fc.assert(
      fc.property(anyNumber, (x) => {
        expect(binding.numberToString(x)).toBe(String(x))
      }),
      { numRuns: 20000 },
    )
  })

  it('hashes very long keys', () => {
    const long = 'ключ🔑'.repeat(100_000)
    expect(native.hashKey(long)).toBe(fnv1aUtf16(long))
  })
})
