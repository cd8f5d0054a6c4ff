// Tests of remote channels' payloads: records, markers and replies round-trip exactly; malformed payloads give PayloadError with the offset; random bytes never crash the decoders.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { PayloadError } from './errors.js'
import {
  decodeMarkerPayload,
  decodeRecords,
  decodeReplyPayload,
  encodeMarkerPayload,
  encodeRecords,
  encodeRecordsLenient,
  encodeReplyPayload,
  type Records,
  ValueEncoding,
} from './payload.js'

const headersArb = (count: number) =>
  fc.option(
    fc.array(fc.option(fc.record({ fields: fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 })) }), { nil: undefined }), {
      minLength: count,
      maxLength: count,
    }),
    { nil: undefined },
  )
const valuesArb = fc.oneof(
  fc.array(fc.string({ unit: 'binary', maxLength: 200 }), { minLength: 1, maxLength: 50 }),
  fc.array(fc.double(), { minLength: 1, maxLength: 50 }),
  fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 20 }),
  fc.array(fc.jsonValue({ maxDepth: 3 }), { minLength: 1, maxLength: 20 }),
)
const requestsArb = (count: number) =>
  fc.option(
    fc
      .array(fc.option(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), { nil: undefined }), { minLength: count, maxLength: count })
      .filter((r) => r.some((id) => id !== undefined)),
    { nil: undefined },
  )
const recordsArb: fc.Arbitrary<Records> = valuesArb.chain((values) =>
  fc
    .tuple(headersArb(values.length), requestsArb(values.length))
    .map(([headers, requests]) => ({ values, ...(headers === undefined ? {} : { headers }), ...(requests === undefined ? {} : { requests }) })),
)

/** What records look like after a round trip: JSON's view of mixed values, header slots without fields are absent. */
function normalize(records: Records): unknown {
  const values = records.values.map((v) => (v instanceof Uint8Array ? Array.from(v) : v))
  const jsonish =
    !records.values.every((v) => typeof v === 'string') && !records.values.every((v) => typeof v === 'number') && !records.values.every((v) => v instanceof Uint8Array)
  const headers = records.headers?.every((h) => h?.fields === undefined)
    ? undefined
    : records.headers?.map((h) => (h?.fields === undefined ? undefined : { fields: JSON.parse(JSON.stringify(h.fields)) }))
  return { values: jsonish ? JSON.parse(JSON.stringify(values)) : values, headers, requests: records.requests }
}

/** True when `records` is what the decoder promises besides PayloadError. */
function isValid(records: Records, count: number): boolean {
  return (
    Array.isArray(records.values) &&
    records.values.length === count &&
    (records.headers === undefined || (records.headers.length === count && records.headers.every((h) => h === undefined || typeof h === 'object'))) &&
    (records.requests === undefined || (records.requests.length === count && records.requests.every((r) => r === undefined || (Number.isSafeInteger(r) && r > 0))))
  )
}

function failure(fn: () => unknown): PayloadError {
  try {
    fn()
  } catch (error) {
    if (error instanceof PayloadError) return error
    throw error
  }
  throw new Error('expected a PayloadError')
}

describe('payloads', () => {
  it('round-trip any batch of records, with or without headroom (property)', () => {
    fc.assert(
      fc.property(recordsArb, fc.nat({ max: 16 }), (records, headroom) => {
        const payload = encodeRecords(records.values, records.headers, records.requests, headroom)
        const decoded = decodeRecords(payload.subarray(headroom), records.values.length)
        expect(normalize(decoded)).toEqual(normalize(records))
      }),
      { numRuns: 500 },
    )
  })

  it('keeps strings exactly, lone surrogates included, and numbers exactly, NaN and -0 included', () => {
    const strings = ['plain', '', 'ünïcödé 🎉', '\uD800 lone', 'x'.repeat(70_000)]
    expect(decodeRecords(encodeRecords(strings), strings.length).values).toEqual(strings)
    const numbers = [0, -0, NaN, Infinity, -Infinity, 1.5e300, 42]
    const back = decodeRecords(encodeRecords(numbers), numbers.length).values as number[]
    expect(back.map((n) => (Object.is(n, -0) ? '-0' : String(n)))).toEqual(['0', '-0', 'NaN', 'Infinity', '-Infinity', '1.5e+300', '42'])
  })

  it('uses the compact string encoding for string batches', () => {
    const values = Array.from({ length: 1000 }, (_, i) => `${'x'.repeat(90)}${String(i).padStart(10, '0')}`)
    const payload = encodeRecords(values)
    expect(payload[1]).toBe(ValueEncoding.STRINGS)
    // 100 bytes per record plus one length byte each, plus a few header bytes.
    expect(payload.byteLength).toBeLessThan(1000 * 101 + 16)
    expect(payload.byteLength).toBeLessThan(Buffer.byteLength(JSON.stringify(values)))
  })

  it('leaves out values JSON cannot carry, reporting each', () => {
    const cyclic: { self?: unknown } = {}
    cyclic.self = cyclic
    const failures: number[] = []
    const encoded = encodeRecordsLenient([1n, { ok: 1 }, cyclic, 'x'], undefined, (_value, index) => failures.push(index))
    expect(failures).toEqual([0, 2])
    expect(encoded?.records).toBe(2)
    expect(decodeRecords(encoded!.payload, 2).values).toEqual([{ ok: 1 }, 'x'])
    expect(() => encodeRecords([1n])).toThrow(TypeError)
    expect(encodeRecordsLenient([1n], undefined, () => undefined)).toBeUndefined()
  })

  it('round-trip markers and replies', () => {
    for (const marker of [
      { kind: 'checkpoint', id: 7 },
      { kind: 'x', id: 0, data: { at: [1, 2] } },
    ])
      expect(decodeMarkerPayload(encodeMarkerPayload(marker))).toEqual(marker)
    const ok = { request: 3, ok: true as const, value: { doubled: 10 } }
    expect(decodeReplyPayload(encodeReplyPayload(ok))).toEqual(ok)
    const failed = { request: 9, ok: false as const, code: 'ERR_HANDLER', message: 'no' }
    expect(decodeReplyPayload(encodeReplyPayload(failed))).toEqual(failed)
    expect(() => encodeReplyPayload({ request: 0, ok: true, value: 1 })).toThrow(RangeError)
  })

  it('refuse malformed payloads with PayloadError naming the offset and the reason', () => {
    const cases: [() => unknown, number, RegExp][] = [
      [() => decodeRecords(Uint8Array.of(2, 0), 1), 0, /unknown flags 0x2/],
      [() => decodeRecords(Uint8Array.of(0, 7, 1, 0), 1), 1, /unknown value encoding 7/],
      [() => decodeRecords(Uint8Array.of(0, 1, 1), 100), 2, /100 records cannot fit/],
      [() => decodeRecords(Uint8Array.of(0, 1, 2, 2, 0xc3, 0x28), 1), 4, /string run is not valid UTF-8/],
      [() => decodeRecords(Uint8Array.of(0, 1, 2, 3, 0x61, 0x62, 0x63), 1), 4, /string lengths add up to 2 characters, the run has 3/],
      [() => decodeRecords(Uint8Array.of(0, 0, 3, 0x31, 0x2c, 0x32), 1), 3, /values is not valid JSON/],
      [() => decodeRecords(Uint8Array.of(0, 0, 3, 0x5b, 0x31, 0x5d), 2), 3, /the frame says 2 records, the JSON array has 1/],
      [() => decodeRecords(Uint8Array.of(0, 2, 0, 0, 0), 1), 2, /numbers needs 8 bytes/],
      [() => decodeRecords(Uint8Array.of(0, 3, 1, 0x61, 9), 1), 4, /1 unexpected bytes at the end of a records payload/],
      [() => decodeRecords(Buffer.concat([Uint8Array.of(1, 3, 1, 0x61), Uint8Array.of(16), Buffer.from('[{"fields":[1]}]')]), 1), 5, /header 0 fields are an array, not an object/],
      [() => decodeRecords(Buffer.concat([Uint8Array.of(1, 3, 1, 0x61), Uint8Array.of(7), Buffer.from('[1,2,3]')]), 1), 5, /1 records and 3 headers/],
      [() => decodeRecords(Buffer.concat([Uint8Array.of(1, 3, 1, 0x61), Uint8Array.of(16), Buffer.from('[{"request":-1}]')]), 1), 5, /header 0 request is -1/],
      [() => decodeMarkerPayload(Buffer.from('{"kind":"x","id":1.5}')), 0, /marker id must be an integer/],
      [() => decodeMarkerPayload(Buffer.from('[1]')), 0, /marker is an array, not an object/],
      [() => decodeReplyPayload(Buffer.from('{"request":1,"ok":"yes"}')), 0, /reply ok must be true or false/],
      [() => decodeReplyPayload(Buffer.from('{"request":1,"ok":false,"code":7,"message":"m"}')), 0, /reply field "code" is the number 7/],
    ]
    for (const [decode, offset, reason] of cases) {
      const error = failure(decode)
      expect(error.code).toBe('ERR_PAYLOAD')
      expect(error.reason, `${reason}`).toMatch(reason)
      expect(error.offset, `${reason}`).toBe(offset)
      expect(error.message).toContain(`at byte ${offset}`)
    }
    // An empty header object (`{}`) is a header with nothing in it; a request-only header is the reply path.
    const payload = encodeRecords(['a', 'b'], [undefined, { fields: { t: 1 } }], [5, undefined])
    expect(decodeRecords(payload, 2)).toEqual({ values: ['a', 'b'], headers: [undefined, { fields: { t: 1 } }], requests: [5, undefined] })
  })

  it('never crash on 10,000 random or corrupted payloads: each gives PayloadError or valid records (property)', () => {
    let errors = 0
    let valid = 0
    const corrupted = fc
      .tuple(recordsArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }), fc.nat())
      .map(([records, flips, cut]) => {
        const bytes = Uint8Array.from(encodeRecords(records.values, records.headers, records.requests))
        for (const [position, value] of flips) bytes[position % bytes.byteLength] = value
        return { bytes: bytes.subarray(0, 1 + (cut % bytes.byteLength)), count: records.values.length }
      })
    const random = fc.record({ bytes: fc.uint8Array({ maxLength: 64 }), count: fc.integer({ min: 1, max: 8 }) })
    fc.assert(
      fc.property(fc.oneof(random, corrupted), ({ bytes, count }) => {
        try {
          const records = decodeRecords(bytes, count)
          valid++
          expect(isValid(records, count)).toBe(true)
        } catch (error) {
          if (!(error instanceof PayloadError)) throw error
          errors++
          expect(error.offset).toBeGreaterThanOrEqual(0)
          expect(error.offset).toBeLessThanOrEqual(bytes.byteLength)
        }
        for (const decode of [decodeMarkerPayload, decodeReplyPayload]) {
          try {
            decode(bytes)
          } catch (error) {
            if (!(error instanceof PayloadError)) throw error
          }
        }
      }),
      { numRuns: 10_000 },
    )
    expect(errors + valid).toBe(10_000)
    expect(errors).toBeGreaterThan(5000)
  })
})
