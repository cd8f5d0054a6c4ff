// Tests of the channel protocol's frames: round trips, strictness, and fuzzing the decoder with random and truncated bytes.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FrameError } from './errors.js'
import { decodeFrames, encodeCredit, encodeData, encodeDataLenient, encodeEnd, encodeError, encodeMarker, encodeOpen, encodeReply, FrameDecoder, FrameKind, type Frame } from './frames.js'

function encode(frame: Frame): Uint8Array {
  switch (frame.kind) {
    case 'open':
      return encodeOpen(frame)
    case 'data':
      return encodeData(frame.values, frame.headers, frame.requests)
    case 'credit':
      return encodeCredit(frame.records)
    case 'end':
      return encodeEnd()
    case 'error':
      return encodeError(frame.code, frame.message)
    case 'marker':
      return encodeMarker(frame.marker)
    case 'reply':
      return encodeReply(frame)
  }
}

const instance = fc.integer({ min: 0, max: 0x7fffffff })
const text = fc.string({ unit: 'grapheme', maxLength: 30 })
const headers = (count: number) => fc.option(fc.array(fc.option(fc.record({ fields: fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 })) }), { nil: undefined }), { minLength: count, maxLength: count }), { nil: undefined })
const valuesArb = fc.oneof(
  fc.array(fc.string({ unit: 'binary', maxLength: 200 }), { minLength: 1, maxLength: 50 }),
  fc.array(fc.double(), { minLength: 1, maxLength: 50 }),
  fc.array(fc.uint8Array({ maxLength: 40 }), { minLength: 1, maxLength: 20 }),
  fc.array(fc.jsonValue({ maxDepth: 3 }), { minLength: 1, maxLength: 20 }),
)
const requestsArb = (count: number) => fc.option(fc.array(fc.option(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), { nil: undefined }), { minLength: count, maxLength: count }).filter((r) => r.some((id) => id !== undefined)), { nil: undefined })
const dataArb = valuesArb.chain((values) =>
  fc.tuple(headers(values.length), requestsArb(values.length)).map(([h, r]) => ({ kind: 'data' as const, values, ...(h === undefined ? {} : { headers: h }), ...(r === undefined ? {} : { requests: r }) })),
)
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ kind: fc.constant('open' as const), job: text, link: text, from: instance, to: instance }),
  dataArb,
  fc.record({ kind: fc.constant('credit' as const), records: fc.integer({ min: 1, max: 0x7fffffff }) }),
  fc.constant({ kind: 'end' as const }),
  fc.record({ kind: fc.constant('error' as const), code: text, message: text }),
  fc.record({ kind: fc.constant('marker' as const), marker: fc.record({ kind: text, id: fc.maxSafeNat() }) }),
  fc.record({ kind: fc.constant('marker' as const), marker: fc.record({ kind: text, id: fc.nat(), data: fc.jsonValue({ maxDepth: 2 }).filter((d) => d !== null) }) }),
  fc.record({ kind: fc.constant('reply' as const), request: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), ok: fc.constant(true as const), value: fc.jsonValue({ maxDepth: 2 }) }),
  fc.record({ kind: fc.constant('reply' as const), request: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), ok: fc.constant(false as const), code: text, message: text }),
)

/** What a frame looks like after a round trip: JSON drops undefined header slots' absence, -0 in JSON, etc. */
function normalize(frame: Frame): unknown {
  if (frame.kind === 'marker' || frame.kind === 'reply') return JSON.parse(JSON.stringify(frame))
  if (frame.kind !== 'data') return frame
  const values = frame.values.map((v) => (v instanceof Uint8Array ? Array.from(v) : v))
  const jsonish = !frame.values.every((v) => typeof v === 'string') && !frame.values.every((v) => typeof v === 'number') && !frame.values.every((v) => v instanceof Uint8Array)
  // Headers without fields carry nothing: absent and all-empty are the same.
  const headers = frame.headers?.every((h) => h?.fields === undefined) ? undefined : frame.headers?.map((h) => (h?.fields === undefined ? undefined : { fields: JSON.parse(JSON.stringify(h.fields)) }))
  return { values: jsonish ? JSON.parse(JSON.stringify(values)) : values, headers, requests: frame.requests }
}

/** True when `frame` is a well-typed frame (what the decoder promises besides FrameError). */
function isValidFrame(frame: Frame): boolean {
  const isInstance = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 0
  switch (frame.kind) {
    case 'open':
      return typeof frame.job === 'string' && typeof frame.link === 'string' && isInstance(frame.from) && isInstance(frame.to)
    case 'data':
      return (
        Array.isArray(frame.values) &&
        frame.values.length > 0 &&
        (frame.headers === undefined || (frame.headers.length === frame.values.length && frame.headers.every((h) => h === undefined || typeof h === 'object'))) &&
        (frame.requests === undefined || (frame.requests.length === frame.values.length && frame.requests.every((r) => r === undefined || (Number.isSafeInteger(r) && r > 0))))
      )
    case 'credit':
      return Number.isInteger(frame.records) && frame.records > 0
    case 'end':
      return true
    case 'error':
      return typeof frame.code === 'string' && typeof frame.message === 'string'
    case 'marker':
      return typeof frame.marker.kind === 'string' && Number.isSafeInteger(frame.marker.id)
    case 'reply':
      return Number.isSafeInteger(frame.request) && frame.request > 0 && (frame.ok || (typeof frame.code === 'string' && typeof frame.message === 'string'))
    default:
      return false
  }
}

/** Decodes `bytes` split into chunks at `cuts`; returns the frames, or the FrameError. */
function decodeChunked(bytes: Uint8Array, cuts: number[]): Frame[] | FrameError {
  const decoder = new FrameDecoder()
  const frames: Frame[] = []
  const points = [...new Set(cuts.map((c) => c % (bytes.byteLength + 1)))].sort((a, b) => a - b)
  let from = 0
  try {
    for (const point of [...points, bytes.byteLength]) {
      frames.push(...decoder.push(bytes.subarray(from, point)))
      from = point
    }
    decoder.end()
    return frames
  } catch (error) {
    if (error instanceof FrameError) return error
    throw error
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts)
}

describe('frames', () => {
  it('round-trip any sequence of frames, whatever the chunking (property)', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (frames, cuts) => {
        const decoded = decodeChunked(concat(frames.map(encode)), cuts)
        expect(decoded).not.toBeInstanceOf(FrameError)
        expect((decoded as Frame[]).map(normalize)).toEqual(frames.map(normalize))
      }),
      { numRuns: 500 },
    )
  })

  it('keeps strings exactly, lone surrogates included, and numbers exactly, NaN and -0 included', () => {
    const strings = ['plain', '', 'ünïcödé 🎉', '\uD800 lone', 'x'.repeat(70_000)]
    expect((decodeFrames(encodeData(strings))[0] as { values: unknown[] }).values).toEqual(strings)
    const numbers = [0, -0, NaN, Infinity, -Infinity, 1.5e300, 42]
    const back = (decodeFrames(encodeData(numbers))[0] as { values: number[] }).values
    expect(back.map((n) => Object.is(n, -0) ? '-0' : String(n))).toEqual(['0', '-0', 'NaN', 'Infinity', '-Infinity', '1.5e+300', '42'])
  })

  it('uses the compact string encoding for string batches', () => {
    const values = Array.from({ length: 1000 }, (_, i) => `${'x'.repeat(90)}${String(i).padStart(10, '0')}`)
    const frame = encodeData(values)
    // 100 bytes per record plus one length byte each, plus a few header bytes.
    expect(frame.byteLength).toBeLessThan(1000 * 101 + 16)
    expect(frame.byteLength).toBeLessThan(Buffer.byteLength(JSON.stringify(values)))
  })

  it('leaves out values JSON cannot carry, reporting each', () => {
    const cyclic: { self?: unknown } = {}
    cyclic.self = cyclic
    const failures: number[] = []
    const frame = encodeDataLenient([1n, { ok: 1 }, cyclic, 'x'], undefined, (_value, index) => failures.push(index))
    expect(failures).toEqual([0, 2])
    expect((decodeFrames(frame!)[0] as { values: unknown[] }).values).toEqual([{ ok: 1 }, 'x'])
    expect(() => encodeData([1n])).toThrow(TypeError)
  })

  it('refuses malformed frames with FrameError naming the offset and the reason', () => {
    const open = encodeOpen({ job: 'j', link: 'a.out -> b.in', from: 0, to: 1 })
    const cases: [Uint8Array, number, RegExp][] = [
      [Uint8Array.of(0, 0, 0, 0), 0, /length is 0/],
      [Uint8Array.of(0xff, 0, 0, 0, 1), 0, /exceeds the maximum/],
      [concat([open, Uint8Array.of(0, 0, 0, 1, 99)]), open.byteLength + 4, /unknown frame kind 99/],
      [concat([open, open.subarray(0, 10)]), open.byteLength + 10, /stream ended inside a frame/],
      [frameOf(FrameKind.OPEN, '{"job":"j","link":"l","from":0'), 5, /not valid JSON/],
      [frameOf(FrameKind.OPEN, '{"job":1,"link":"l","from":0,"to":0}'), 5, /"job" is the number 1, not a string/],
      [frameOf(FrameKind.OPEN, '{"job":"j","link":"l","from":-1,"to":0}'), 5, /"from" is the number -1/],
      [frameOf(FrameKind.ERROR, '[1,2]'), 5, /ERROR body is an array/],
      [frameOf(FrameKind.CREDIT, Uint8Array.of(0)), 5, /credit 0/],
      [frameOf(FrameKind.END, Uint8Array.of(1)), 5, /unexpected bytes at the end of a END/],
      [frameOf(FrameKind.DATA, Uint8Array.of(0, 7, 1, 0)), 6, /unknown DATA value encoding 7/],
      [frameOf(FrameKind.DATA, Uint8Array.of(0, 1, 100, 1)), 7, /DATA count 100 exceeds/],
      [frameOf(FrameKind.DATA, Uint8Array.of(0, 1, 1, 2, 2, 0xc3, 0x28)), 10, /not valid UTF-8/],
      [frameOf(FrameKind.DATA, Uint8Array.of(0, 0, 1, 3, 0x31, 0x2c, 0x32)), 9, /DATA values is not valid JSON|DATA values are|not valid JSON/],
      [frameOf(FrameKind.DATA, Uint8Array.of(0, 0, 2, 3, 0x5b, 0x31, 0x5d)), 9, /count says 2 values, the JSON array has 1/],
    ]
    for (const [bytes, offset, reason] of cases) {
      let caught: unknown
      try {
        decodeFrames(bytes)
      } catch (error) {
        caught = error
      }
      expect(caught, `${reason}`).toBeInstanceOf(FrameError)
      expect((caught as FrameError).code).toBe('ERR_FRAME')
      expect((caught as FrameError).reason).toMatch(reason)
      expect((caught as FrameError).offset, `${reason}`).toBe(offset)
      expect((caught as FrameError).message).toContain(`at byte ${offset}`)
    }
  })

  it('never crashes on 10,000 random byte strings: each gives FrameError or valid frames (property)', () => {
    let errors = 0
    let valid = 0
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 64 }),
          // Random bodies behind a plausible header make the decoder reach every body parser.
          fc.tuple(fc.integer({ min: 1, max: 5 }), fc.uint8Array({ maxLength: 60 })).map(([kind, body]) => frameOf(kind, body)),
        ),
        fc.array(fc.nat(), { maxLength: 4 }),
        (bytes, cuts) => {
          const result = decodeChunked(bytes, cuts)
          if (result instanceof FrameError) {
            errors++
            expect(result.offset).toBeGreaterThanOrEqual(0)
            expect(result.offset).toBeLessThanOrEqual(bytes.byteLength)
          } else {
            valid++
            for (const frame of result) expect(isValidFrame(frame)).toBe(true)
          }
        },
      ),
      { numRuns: 10_000 },
    )
    expect(errors + valid).toBe(10_000)
    expect(errors).toBeGreaterThan(5000)
  })

  it('never crashes on 10,000 truncated or corrupted valid frames: each gives FrameError or valid frames (property)', () => {
    let truncatedErrors = 0
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 3 }), fc.nat(), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }), (frames, cut, flips) => {
        const whole = concat(frames.map(encode))
        // Truncated: any cut inside the last frame must be an error.
        const lastStart = whole.byteLength - encode(frames[frames.length - 1]!).byteLength
        const at = lastStart + (cut % (whole.byteLength - lastStart))
        const truncated = decodeChunked(whole.subarray(0, at), [cut])
        if (at > lastStart) {
          expect(truncated).toBeInstanceOf(FrameError)
          truncatedErrors++
        }
        // Corrupted: random bytes overwritten anywhere.
        const corrupted = Uint8Array.from(whole)
        for (const [position, value] of flips) corrupted[position % corrupted.byteLength] = value
        const result = decodeChunked(corrupted, [cut])
        if (!(result instanceof FrameError)) for (const frame of result) expect(isValidFrame(frame)).toBe(true)
      }),
      { numRuns: 10_000 },
    )
    expect(truncatedErrors).toBeGreaterThan(5000)
  })
})

function frameOf(kind: number, body: string | Uint8Array): Uint8Array {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body
  const out = Buffer.alloc(5 + bytes.byteLength)
  out.writeUInt32BE(1 + bytes.byteLength, 0)
  out[4] = kind
  out.set(bytes, 5)
  return out
}
