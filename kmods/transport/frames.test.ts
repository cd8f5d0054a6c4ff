// Tests of the channel protocol's frames: round trips, payloads kept as bytes, strictness, and fuzzing the decoder with random and truncated bytes.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { FrameError } from './errors.js'
import {
  DATA_HEADROOM,
  dataFrameInPlace,
  decodeFrames,
  encodeCredit,
  encodeData,
  encodeEnd,
  encodeError,
  encodeMarker,
  encodeOpen,
  encodeReply,
  FrameDecoder,
  FrameKind,
  type Frame,
} from './frames.js'

function encode(frame: Frame): Uint8Array {
  switch (frame.kind) {
    case 'open':
      return encodeOpen(frame)
    case 'data':
      return encodeData(frame.payload, frame.records)
    case 'credit':
      return encodeCredit(frame.records)
    case 'end':
      return encodeEnd()
    case 'error':
      return encodeError(frame.code, frame.message)
    case 'marker':
      return encodeMarker(frame.payload)
    case 'reply':
      return encodeReply(frame.payload)
  }
}

const instance = fc.integer({ min: 0, max: 0x7fffffff })
const text = fc.string({ unit: 'grapheme', maxLength: 30 })
const records = fc.integer({ min: 1, max: 0x7fffffff })
const dataArb = fc
  .uint8Array({ minLength: 1, maxLength: 300 })
  .chain((payload) => fc.integer({ min: 1, max: payload.byteLength }).map((n) => ({ kind: 'data' as const, records: n, payload })))
const frameArb: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({ kind: fc.constant('open' as const), job: text, link: text, from: instance, to: instance }),
  dataArb,
  fc.record({ kind: fc.constant('credit' as const), records }),
  fc.constant({ kind: 'end' as const }),
  fc.record({ kind: fc.constant('error' as const), code: text, message: text }),
  fc.record({ kind: fc.constant('marker' as const), payload: fc.uint8Array({ maxLength: 60 }) }),
  fc.record({ kind: fc.constant('reply' as const), payload: fc.uint8Array({ maxLength: 60 }) }),
)

/** A frame as plain data: payloads as arrays of bytes (decoded payloads are views, sent ones may be copies). */
function normalize(frame: Frame): unknown {
  return 'payload' in frame ? { ...frame, payload: Array.from(frame.payload) } : frame
}

/** True when `frame` is a well-typed frame (what the decoder promises besides FrameError). */
function isValidFrame(frame: Frame): boolean {
  const isInstance = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 0
  switch (frame.kind) {
    case 'open':
      return typeof frame.job === 'string' && typeof frame.link === 'string' && isInstance(frame.from) && isInstance(frame.to)
    case 'data':
      return Number.isInteger(frame.records) && frame.records > 0 && frame.payload instanceof Uint8Array && frame.payload.byteLength >= frame.records
    case 'credit':
      return Number.isInteger(frame.records) && frame.records > 0
    case 'end':
      return true
    case 'error':
      return typeof frame.code === 'string' && typeof frame.message === 'string'
    case 'marker':
    case 'reply':
      return frame.payload instanceof Uint8Array
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

  it('writes the header of a DATA frame into the headroom of its payload: one buffer, no copy', () => {
    for (const n of [1, 127, 128, 70_000, 0x7fffffff]) {
      const content = Buffer.from(`payload of ${n} records`.padEnd(Math.min(n, 200), '.'))
      const buffer = Buffer.alloc(DATA_HEADROOM + content.byteLength)
      buffer.set(content, DATA_HEADROOM)
      const frame = dataFrameInPlace(buffer, n)
      expect(frame.buffer).toBe(buffer.buffer)
      expect(Buffer.from(frame).equals(Buffer.from(encodeData(content, n)))).toBe(true)
      if (content.byteLength >= n) expect(decodeFrames(frame).map(normalize)).toEqual([{ kind: 'data', records: n, payload: Array.from(content) }])
    }
    expect(() => dataFrameInPlace(Buffer.alloc(4), 1)).toThrow(RangeError)
    expect(() => encodeData(Buffer.from('x'), 0)).toThrow(RangeError)
  })

  it('delivers payloads as views of what arrived, never looking inside', () => {
    const chunk = Buffer.concat([encodeData(Buffer.from('{not json at all'), 3), encodeMarker(Buffer.from([0xff, 0xfe])), encodeReply(new Uint8Array(0))])
    const frames = decodeFrames(chunk)
    expect(frames.map(normalize)).toEqual([
      { kind: 'data', records: 3, payload: Array.from(Buffer.from('{not json at all')) },
      { kind: 'marker', payload: [0xff, 0xfe] },
      { kind: 'reply', payload: [] },
    ])
    expect((frames[0] as { payload: Uint8Array }).payload.buffer).toBe(chunk.buffer)
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
      [frameOf(FrameKind.DATA, Uint8Array.of(0, 1)), 5, /DATA record count 0 is outside/],
      [frameOf(FrameKind.DATA, Uint8Array.of(0x80)), 5, /DATA record count: truncated varint/],
      [frameOf(FrameKind.DATA, Uint8Array.of(100, 1)), 5, /DATA says 100 records, the frame has 1 bytes of payload/],
      [frameOf(FrameKind.ERROR, Uint8Array.of(0xc3, 0x28)), 5, /not valid UTF-8/],
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
          fc.tuple(fc.integer({ min: 1, max: 7 }), fc.uint8Array({ maxLength: 60 })).map(([kind, body]) => frameOf(kind, body)),
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
      fc.property(
        fc.array(frameArb, { minLength: 1, maxLength: 3 }),
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
        (frames, cut, flips) => {
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
        },
      ),
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
