// Byte-level helpers shared by the two wire formats: the transport's frames (kmods/transport) and
// the kernel adapter's payloads (kernel/remote): unsigned LEB128 varints and a bounds-checked reader.

import { isUtf8 } from 'node:buffer'

/** Bytes `n` (0..2^32-1) takes as an unsigned LEB128 varint. */
export function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5
}

/** Writes `n` as an unsigned LEB128 varint at `at`; returns the offset after it. */
export function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80
    n = Math.floor(n / 128)
  }
  out[at++] = n
  return at
}

/** How a value that is not what a field expects is named in an error (`the number 3`, `missing`). */
export function typeName(value: unknown): string {
  if (value === null) return 'null'
  if (value === undefined) return 'missing'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'number') return `the number ${value}`
  return `a ${typeof value}`
}

/**
 * A bounds-checked cursor over `data[at..end)`. Each wire format subclasses it with its own
 * `fail`, which throws its own error class (FrameError, PayloadError) with the offset, and names
 * what it reads (`unit`: frame, payload) in messages.
 */
export abstract class ByteReader {
  /** Where the last JSON text started: field errors point there. */
  protected jsonAt = 0

  constructor(
    readonly data: Uint8Array,
    public at: number,
    readonly end: number,
    private readonly unit: string,
  ) {}

  /** Throws the format's error for a problem at offset `at` of `data`. */
  abstract fail(at: number, reason: string): never

  need(bytes: number, what: string): void {
    if (bytes > this.end - this.at) this.fail(this.at, `${what} needs ${bytes} bytes, the ${this.unit} has ${this.end - this.at} left`)
  }

  /** An unsigned LEB128 varint of at most 5 bytes, minimally encoded, at most 2^32-1. */
  varint(what: string): number {
    const start = this.at
    let result = 0
    let scale = 1
    for (let i = 0; i < 5; i++) {
      if (this.at >= this.end) this.fail(start, `${what}: truncated varint`)
      const b = this.data[this.at++]!
      result += (b & 0x7f) * scale
      if ((b & 0x80) === 0) {
        if (result > 0xffffffff) this.fail(start, `${what}: varint ${result} is too large`)
        if (i > 0 && b === 0) this.fail(start, `${what}: varint is not minimally encoded`)
        return result
      }
      scale *= 128
    }
    return this.fail(start, `${what}: varint longer than 5 bytes`)
  }

  /** `length` bytes of valid UTF-8, as a string. */
  utf8(length: number, what: string): string {
    this.need(length, what)
    const bytes = this.data.subarray(this.at, this.at + length)
    if (!isUtf8(bytes)) this.fail(this.at, `${what} is not valid UTF-8`)
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
    this.at += length
    return text
  }

  /** `length` bytes of JSON text, parsed. */
  json(what: string, length: number): unknown {
    const at = this.at
    this.jsonAt = at
    const text = this.utf8(length, what)
    try {
      return JSON.parse(text) as unknown
    } catch (error) {
      return this.fail(at, `${what} is not valid JSON: ${error instanceof Error ? error.message : String(error)}`)
    }
  }

  object(value: unknown, what: string): Record<string, unknown> {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) this.fail(this.jsonAt, `${what} is ${typeName(value)}, not an object`)
    return value as Record<string, unknown>
  }

  string(object: Record<string, unknown>, field: string, what: string): string {
    const value = object[field]
    if (typeof value !== 'string') this.fail(this.jsonAt, `${what} field "${field}" is ${typeName(value)}, not a string`)
    return value
  }

  /** Fails when bytes are left after a `what` frame or payload. */
  done(what: string): void {
    if (this.at !== this.end) this.fail(this.at, `${this.end - this.at} unexpected bytes at the end of a ${what} ${this.unit}`)
  }
}
