// Batches as one transferable buffer: how records cross into a worker thread or child process and back.
//
// A batch crosses the isolation boundary as one ArrayBuffer, handed over by transfer (worker threads)
// or copied once (child processes), never record by record. Homogeneous batches of numbers or
// strings take compact forms (a Float64Array; UTF-16 lengths then one UTF-8 run), as the kernel's
// DATA frames do; anything else is one structured clone (`v8.serialize`, what `postMessage` does),
// so values keep the same types they would have crossing to a worker by hand (Dates, Maps,
// BigInts, undefined). The kernel's frame codec (lamina/transport) is not reused here: importing
// that entry loads the libp2p stack, about half a second at every worker start.

import { deserialize, serialize } from 'node:v8'

/** How an encoded batch lays out its values. */
export type BatchLayout = 'numbers' | 'strings' | 'structured'

/** A batch of values in one buffer; `buffer` is owned by the batch (safe to transfer). */
export interface EncodedBatch {
  readonly layout: BatchLayout
  readonly count: number
  readonly buffer: ArrayBuffer
}

/** Encodes `values` into one buffer of its own. Throws what `v8.serialize` throws for uncloneable values (functions, symbols). */
export function encodeBatch(values: readonly unknown[]): EncodedBatch {
  const count = values.length
  if (count > 0) {
    const first = values[0]
    if (typeof first === 'number') {
      const numbers = encodeNumbers(values)
      if (numbers !== undefined) return numbers
    } else if (typeof first === 'string') {
      const strings = encodeStrings(values)
      if (strings !== undefined) return strings
    }
  }
  return { layout: 'structured', count, buffer: ownBuffer(serialize(values)) }
}

/** Decodes a batch made by `encodeBatch`. */
export function decodeBatch(batch: EncodedBatch): unknown[] {
  switch (batch.layout) {
    case 'numbers':
      return Array.from(new Float64Array(batch.buffer, 0, batch.count))
    case 'strings':
      return decodeStrings(batch)
    case 'structured':
      return deserialize(new Uint8Array(batch.buffer)) as unknown[]
  }
}

function encodeNumbers(values: readonly unknown[]): EncodedBatch | undefined {
  const count = values.length
  const out = new Float64Array(count)
  for (let i = 0; i < count; i++) {
    const value = values[i]
    if (typeof value !== 'number') return undefined
    out[i] = value
  }
  return { layout: 'numbers', count, buffer: out.buffer }
}

/** Layout: `count` u32 UTF-16 lengths, then the strings' UTF-8 bytes concatenated. */
function encodeStrings(values: readonly unknown[]): EncodedBatch | undefined {
  const count = values.length
  const lengths = new Uint32Array(count)
  // `+=` builds a rope that one native write flattens (cheaper than a write per string).
  let joined = ''
  for (let i = 0; i < count; i++) {
    const value = values[i]
    if (typeof value !== 'string') return undefined
    lengths[i] = value.length
    joined += value
  }
  // A lone surrogate would not survive UTF-8: such batches go structured.
  if (!(joined as unknown as { isWellFormed(): boolean }).isWellFormed()) return undefined
  const bytes = Buffer.byteLength(joined, 'utf8')
  const buffer = new ArrayBuffer(count * 4 + bytes)
  new Uint32Array(buffer, 0, count).set(lengths)
  Buffer.from(buffer, count * 4, bytes).write(joined, 'utf8')
  return { layout: 'strings', count, buffer }
}

function decodeStrings(batch: EncodedBatch): string[] {
  const count = batch.count
  const lengths = new Uint32Array(batch.buffer, 0, count)
  const text = Buffer.from(batch.buffer, count * 4).toString('utf8')
  const out = new Array<string>(count)
  let at = 0
  for (let i = 0; i < count; i++) {
    const end = at + lengths[i]!
    out[i] = text.slice(at, end)
    at = end
  }
  return out
}

/** The bytes of `view` in an ArrayBuffer of their own (a view of a shared pool must not be transferred). */
function ownBuffer(view: Uint8Array): ArrayBuffer {
  const buffer = view.buffer
  if (view.byteOffset === 0 && view.byteLength === buffer.byteLength && buffer instanceof ArrayBuffer) return buffer
  return view.slice().buffer as ArrayBuffer
}
