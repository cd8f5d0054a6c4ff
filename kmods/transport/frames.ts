// Length-prefixed frames of the channel protocol (OPEN, DATA, CREDIT, END, ERROR, MARKER, REPLY): encoders and a strict, incremental decoder. Payloads are opaque bytes.
//
// A frame is `u32 length (big-endian) | u8 kind | body`, where `length` counts the kind byte and
// the body. Bodies:
//   OPEN   UTF-8 JSON {"job": string, "link": string, "from": uint, "to": uint}
//   DATA   uvarint records (>= 1) | payload   (the records take that much credit)
//   CREDIT uvarint records (>= 1)
//   END    (empty)
//   ERROR  UTF-8 JSON {"code": string, "message": string}
//   MARKER payload   (in order with the data; takes no credit)
//   REPLY  payload   (consumer to producer; takes no credit)
// The transport never looks inside a payload: the kernel's remote-channel adapter encodes values,
// headers, markers and replies into them (kernel/remote/payload.ts).

import { ByteReader, typeName, varintSize, writeVarint } from '../../kernel/internal.js'
import { FrameError } from './errors.js'

/** Frame kinds, as the byte on the wire. */
export const FrameKind = { OPEN: 1, DATA: 2, CREDIT: 3, END: 4, ERROR: 5, MARKER: 6, REPLY: 7 } as const

/** The largest frame the decoder accepts by default (length field included): 16 MiB. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024

/** Bytes a DATA payload leaves free at its start for the frame header (length, kind, record count): see `dataFrameInPlace`. */
export const DATA_HEADROOM = 4 + 1 + 5

/** Opens a channel: the first frame on a channel stream, from the producer's peer. */
export interface OpenFrame {
  readonly kind: 'open'
  readonly job: string
  /** The link's id (`from.port -> to.port`). */
  readonly link: string
  /** Producer instance. */
  readonly from: number
  /** Consumer instance. */
  readonly to: number
}

/** `records` records in an opaque payload (a view into the bytes received). */
export interface DataFrame {
  readonly kind: 'data'
  readonly records: number
  readonly payload: Uint8Array
}

/** Credit granted by the consumer's peer: the producer may send this many more records. */
export interface CreditFrame {
  readonly kind: 'credit'
  readonly records: number
}

/** End of stream: the producer sends nothing more. */
export interface EndFrame {
  readonly kind: 'end'
}

/** A failure reported by one side before it resets the stream. */
export interface ErrorFrame {
  readonly kind: 'error'
  readonly code: string
  readonly message: string
}

/** A marker flowing in order with the data (an opaque payload); it takes no credit. */
export interface MarkerFrame {
  readonly kind: 'marker'
  readonly payload: Uint8Array
}

/** The reply to a request record, from the consumer's peer back to the producer's (an opaque payload). */
export interface ReplyFrame {
  readonly kind: 'reply'
  readonly payload: Uint8Array
}

/** Any decoded frame. */
export type Frame = OpenFrame | DataFrame | CreditFrame | EndFrame | ErrorFrame | MarkerFrame | ReplyFrame

const HEADER_BYTES = 5
const MAX_RECORDS = 0x7fffffff

// ---------------------------------------------------------------------------------------------
// Encoding

/** Encodes an OPEN frame. */
export function encodeOpen(open: Omit<OpenFrame, 'kind'>): Uint8Array {
  return jsonFrame(FrameKind.OPEN, { job: open.job, link: open.link, from: open.from, to: open.to })
}

/** Encodes a CREDIT frame granting `records` (a positive integer below 2^31). */
export function encodeCredit(records: number): Uint8Array {
  checkRecords(records, 'credit')
  const out = Buffer.allocUnsafe(HEADER_BYTES + varintSize(records))
  const end = writeVarint(out, HEADER_BYTES, records)
  return finish(out, FrameKind.CREDIT, end)
}

/** Encodes an END frame. */
export function encodeEnd(): Uint8Array {
  return finish(Buffer.allocUnsafe(HEADER_BYTES), FrameKind.END, HEADER_BYTES)
}

/** Encodes an ERROR frame. */
export function encodeError(code: string, message: string): Uint8Array {
  return jsonFrame(FrameKind.ERROR, { code, message })
}

/** Encodes a DATA frame of `records` records around a copy of `payload`. */
export function encodeData(payload: Uint8Array, records: number): Uint8Array {
  const buffer = Buffer.allocUnsafe(DATA_HEADROOM + payload.byteLength)
  buffer.set(payload, DATA_HEADROOM)
  return dataFrameInPlace(buffer, records)
}

/**
 * The DATA frame of `records` records whose payload follows the first `DATA_HEADROOM` bytes of
 * `buffer`: the header is written into those bytes (right before the payload), so the frame is a
 * view of `buffer` and the payload is never copied.
 */
export function dataFrameInPlace(buffer: Uint8Array, records: number): Uint8Array {
  checkRecords(records, 'a DATA frame')
  if (buffer.byteLength < DATA_HEADROOM) throw new RangeError(`a DATA buffer starts with ${DATA_HEADROOM} bytes of headroom, got ${buffer.byteLength} bytes`)
  const start = DATA_HEADROOM - HEADER_BYTES - varintSize(records)
  const length = buffer.byteLength - start - 4
  buffer[start] = length >>> 24
  buffer[start + 1] = (length >>> 16) & 0xff
  buffer[start + 2] = (length >>> 8) & 0xff
  buffer[start + 3] = length & 0xff
  buffer[start + 4] = FrameKind.DATA
  writeVarint(buffer, start + HEADER_BYTES, records)
  return start === 0 ? buffer : buffer.subarray(start)
}

/** Encodes a MARKER frame around a marker's payload. */
export function encodeMarker(payload: Uint8Array): Uint8Array {
  return payloadFrame(FrameKind.MARKER, payload)
}

/** Encodes a REPLY frame around a reply's payload. */
export function encodeReply(payload: Uint8Array): Uint8Array {
  return payloadFrame(FrameKind.REPLY, payload)
}

function checkRecords(records: number, what: string): void {
  if (!Number.isInteger(records) || records < 1 || records > MAX_RECORDS) throw new RangeError(`${what} must count an integer in 1..${MAX_RECORDS} records, got ${records}`)
}

function payloadFrame(kind: number, payload: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.byteLength)
  out.set(payload, HEADER_BYTES)
  return finish(out, kind, out.byteLength)
}

function jsonFrame(kind: number, body: unknown): Uint8Array {
  return payloadFrame(kind, Buffer.from(JSON.stringify(body), 'utf8'))
}

/** Writes the length and kind, and returns the frame (a view of `out` up to `end`). */
function finish(out: Buffer, kind: number, end: number): Uint8Array {
  out.writeUInt32BE(end - 4, 0)
  out[4] = kind
  return end === out.byteLength ? out : out.subarray(0, end)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** Options of the decoder. */
export interface DecoderOptions {
  /** Frames longer than this (bytes, length field included) are refused. @default MAX_FRAME_BYTES */
  readonly maxFrameBytes?: number
}

/**
 * An incremental decoder: feed it the chunks of a stream with `push`, in order; it returns the
 * frames completed so far. Any malformed input throws FrameError with the absolute byte offset in
 * the stream, and the decoder is then unusable (the stream must be reset). Payloads are views
 * into the chunks pushed (or into one joined buffer when a frame spans chunks).
 */
export class FrameDecoder {
  private readonly maxFrameBytes: number
  private chunks: Uint8Array[] = []
  private buffered = 0
  private consumed = 0
  private failed: FrameError | undefined

  constructor(options: DecoderOptions = {}) {
    this.maxFrameBytes = options.maxFrameBytes ?? MAX_FRAME_BYTES
  }

  /** Bytes of the stream decoded into complete frames so far. */
  get offset(): number {
    return this.consumed
  }

  /** Bytes waiting for the rest of their frame. */
  get pending(): number {
    return this.buffered
  }

  /** Adds the next chunk of the stream; returns the frames it completed. */
  push(chunk: Uint8Array): Frame[] {
    if (this.failed !== undefined) throw this.failed
    const frames: Frame[] = []
    try {
      this.pushInto(chunk, frames)
    } catch (error) {
      if (error instanceof FrameError) this.failed = error
      throw error
    }
    return frames
  }

  /** The stream ended: throws FrameError when it stopped inside a frame. */
  end(): void {
    if (this.failed !== undefined) throw this.failed
    if (this.buffered > 0) {
      this.failed = new FrameError(this.consumed + this.buffered, `stream ended inside a frame (${this.buffered} bytes of an incomplete frame starting at byte ${this.consumed})`)
      throw this.failed
    }
  }

  private pushInto(chunk: Uint8Array, frames: Frame[]): void {
    if (chunk.byteLength === 0) return
    let data: Uint8Array
    if (this.buffered === 0) data = chunk
    else {
      // Join only once the pending frame is complete (or its length is still unknown).
      this.chunks.push(chunk)
      this.buffered += chunk.byteLength
      const needed = this.neededBytes()
      if (needed === undefined || this.buffered < needed) return
      data = Buffer.concat(this.chunks, this.buffered)
      this.chunks = []
      this.buffered = 0
    }
    let at = 0
    while (data.byteLength - at >= 4) {
      const length = readU32(data, at)
      this.checkLength(length, this.consumed)
      if (data.byteLength - at < 4 + length) break
      frames.push(decodeBody(data, at + 4, at + 4 + length, this.consumed))
      at += 4 + length
      this.consumed += 4 + length
    }
    if (at < data.byteLength) {
      this.chunks = [data.subarray(at)]
      this.buffered = data.byteLength - at
    }
  }

  /** Total bytes the pending frame needs, or undefined while its length field is incomplete. */
  private neededBytes(): number | undefined {
    if (this.buffered < 4) return undefined
    const head = new Uint8Array(4)
    let filled = 0
    for (const chunk of this.chunks) {
      const take = Math.min(4 - filled, chunk.byteLength)
      head.set(chunk.subarray(0, take), filled)
      filled += take
      if (filled === 4) break
    }
    const length = readU32(head, 0)
    this.checkLength(length, this.consumed)
    return 4 + length
  }

  private checkLength(length: number, offset: number): void {
    if (length === 0) throw new FrameError(offset, 'frame length is 0 (a frame has at least its kind byte)')
    if (length + 4 > this.maxFrameBytes) throw new FrameError(offset, `frame length ${length} exceeds the maximum of ${this.maxFrameBytes - 4} bytes`)
  }
}

/** Decodes a whole buffer of frames; throws FrameError when anything is malformed or incomplete. */
export function decodeFrames(bytes: Uint8Array, options?: DecoderOptions): Frame[] {
  const decoder = new FrameDecoder(options)
  const frames = decoder.push(bytes)
  decoder.end()
  return frames
}

/** Decodes one frame's kind and body, `data[start..end)` (after the length); `base` is the frame's offset in the stream. */
function decodeBody(data: Uint8Array, start: number, end: number, base: number): Frame {
  const kind = data[start]!
  // The frame's length field sits at `start - 4` in `data` and at `base` in the stream.
  const reader = new Reader(data, start + 1, end, base - (start - 4))
  switch (kind) {
    case FrameKind.OPEN:
      return decodeOpen(reader)
    case FrameKind.DATA: {
      const records = reader.records('DATA record count')
      // Every record takes at least one byte of payload (as the kernel encodes them): a count past the frame's size is a lie.
      if (records > reader.end - reader.at) reader.fail(start + 1, `DATA says ${records} records, the frame has ${reader.end - reader.at} bytes of payload`)
      return { kind: 'data', records, payload: data.subarray(reader.at, end) }
    }
    case FrameKind.CREDIT: {
      const records = reader.records('credit')
      reader.done('CREDIT')
      return { kind: 'credit', records }
    }
    case FrameKind.END:
      reader.done('END')
      return { kind: 'end' }
    case FrameKind.ERROR: {
      const object = reader.object(reader.json('ERROR body', reader.end - reader.at), 'ERROR body')
      const code = reader.string(object, 'code', 'ERROR')
      const message = reader.string(object, 'message', 'ERROR')
      return { kind: 'error', code, message }
    }
    case FrameKind.MARKER:
      return { kind: 'marker', payload: data.subarray(reader.at, end) }
    case FrameKind.REPLY:
      return { kind: 'reply', payload: data.subarray(reader.at, end) }
    default:
      return reader.fail(start, `unknown frame kind ${kind}`)
  }
}

function decodeOpen(reader: Reader): OpenFrame {
  const object = reader.object(reader.json('OPEN body', reader.end - reader.at), 'OPEN body')
  const job = reader.string(object, 'job', 'OPEN')
  const link = reader.string(object, 'link', 'OPEN')
  const from = reader.instance(object, 'from')
  const to = reader.instance(object, 'to')
  return { kind: 'open', job, link, from, to }
}

/** A bounds-checked cursor over one frame body; every failure is a FrameError at a stream offset. */
class Reader extends ByteReader {
  /** `shift + position in data` is the offset in the stream. */
  constructor(
    data: Uint8Array,
    at: number,
    end: number,
    private readonly shift: number,
  ) {
    super(data, at, end, 'frame')
  }

  fail(at: number, reason: string): never {
    throw new FrameError(this.shift + at, reason)
  }

  /** A record count: 1..2^31-1. */
  records(what: string): number {
    const at = this.at
    const records = this.varint(what)
    if (records < 1 || records > MAX_RECORDS) this.fail(at, `${what} ${records} is outside 1..${MAX_RECORDS}`)
    return records
  }

  instance(object: Record<string, unknown>, field: string): number {
    const value = object[field]
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_RECORDS)
      this.fail(this.jsonAt, `OPEN field "${field}" is ${typeName(value)}, not an instance number`)
    return value
  }
}

function readU32(data: Uint8Array, at: number): number {
  return ((data[at]! << 24) >>> 0) + (data[at + 1]! << 16) + (data[at + 2]! << 8) + data[at + 3]!
}
