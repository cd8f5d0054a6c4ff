import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { decodeBatch, encodeBatch } from './batch-codec.js'

const roundTrip = (values: readonly unknown[]): unknown[] => decodeBatch(encodeBatch(values))

describe('the isolation batch codec', () => {
  it('keeps numbers exactly in one Float64Array (NaN, -0, infinities included)', () => {
    const values = [0, -0, 1.5, NaN, Infinity, -Infinity, Number.MAX_SAFE_INTEGER, 5e-324]
    const encoded = encodeBatch(values)
    expect(encoded).toMatchObject({ layout: 'numbers', count: values.length })
    expect(encoded.buffer.byteLength).toBe(values.length * 8)
    expect(Object.is(roundTrip(values)[1], -0)).toBe(true)
    expect(roundTrip(values)).toEqual(values)
  })

  it('keeps strings exactly as lengths and one UTF-8 run; a lone surrogate goes structured', () => {
    const values = ['', 'a', 'héllo', '日本語', '🙂 emoji', 'x'.repeat(1000)]
    expect(encodeBatch(values).layout).toBe('strings')
    expect(roundTrip(values)).toEqual(values)
    const lone = ['ok', '\ud800']
    expect(encodeBatch(lone).layout).toBe('structured')
    expect(roundTrip(lone)).toEqual(lone)
  })

  it('clones anything else structurally: objects, mixed batches, Dates, Maps, undefined, BigInt, bytes', () => {
    const values = [{ a: 1, b: [1, 2] }, 3, 'x', new Date(0), new Map([[1, 'one']]), undefined, 10n, new Uint8Array([1, 2])]
    const encoded = encodeBatch(values)
    expect(encoded.layout).toBe('structured')
    expect(roundTrip(values)).toEqual(values)
    expect(roundTrip([])).toEqual([])
  })

  it('owns its buffer (it can be transferred without taking a shared pool along)', () => {
    for (const values of [[1, 2], ['a', 'b'], [{ a: 1 }]]) {
      const { buffer } = encodeBatch(values)
      const copy = structuredClone(buffer, { transfer: [buffer] })
      expect(buffer.byteLength).toBe(0)
      expect(copy.byteLength).toBeGreaterThan(0)
    }
  })

  it('throws on values that cannot be cloned (functions)', () => {
    expect(() => encodeBatch([() => 1])).toThrow()
  })

  it('round-trips any JSON-like batch', () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue()), (values) => {
        expect(roundTrip(values)).toEqual(values)
      }),
    )
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'grapheme' })), (values) => {
        expect(roundTrip(values)).toEqual(values)
      }),
    )
    fc.assert(
      fc.property(fc.array(fc.double()), (values) => {
        expect(roundTrip(values)).toEqual(values)
      }),
    )
  })
})
