// The frame-channel contract: a remote channel at the byte level, between a transport (bytes, frames, credit, end, error) and the kernel's remote-channel adapter (values).
//
// A transport moves opaque payloads and counts records for credit; it knows nothing of codecs,
// values or headers (as timely keeps `communication` apart from `timely`). The kernel's adapter
// (`remoteSender`, `remoteReceiver`) encodes a batch's values and headers into one payload per
// DATA frame, decodes them with the receiving port's codec, answers requests and moves markers.
// This file imports no implementation.

import type { LaminaError } from '../errors.js'

/**
 * The producing side of a frame channel, on the producer's peer. Frames go out in the order of
 * the calls. DATA frames take credit, counted in records: the consumer grants its capacity first,
 * then gives back what it consumed; nothing else takes credit.
 *
 * ```ts
 * frames.listen({ writable: pump, reply: (payload) => answer(payload), closed: (error) => finish(error) })
 * if (frames.credit >= 2) frames.data(payload, 2)
 * frames.end()
 * ```
 */
export interface FrameSender {
  /** The consuming peer: its id once connected, until then the address being dialled. */
  readonly peer: string
  /**
   * Records that may be sent: what the consumer granted and was not used yet, or 0 while the
   * channel is not open yet or too many bytes are in flight. It grows again with a `writable` event.
   */
  readonly credit: number
  /**
   * True while the transport's write buffer must drain: send nothing more until `writable`. Kept
   * apart from `credit` so that a producer may hand over its next batch meanwhile, and that batch
   * goes the moment the buffer drains (as with any pipelined write).
   */
  readonly draining: boolean
  /**
   * Bytes a DATA payload leaves free at its start for the transport's frame header: the transport
   * may write there and send the frame in one write, without a copy. 0 when it needs none.
   */
  readonly headroom: number
  /** The largest DATA payload (`headroom` included), in bytes. */
  readonly maxPayloadBytes: number
  /**
   * Sends a DATA frame of `records` records (1 ≤ records ≤ `credit`, not `draining`), which takes
   * that much credit. `payload`'s first `headroom` bytes belong to the transport; the rest is opaque to it,
   * and holds at least one byte per record (a receiving transport may refuse a frame that claims more
   * records than it has bytes: a cheap bound on what a hostile peer can make the consumer allocate;
   * the kernel's record encoding always meets it). The transport owns `payload` from then on.
   */
  data(payload: Uint8Array, records: number): void
  /** Sends a MARKER frame, in order with the data; it takes no credit. */
  marker(payload: Uint8Array): void
  /** Sends END: nothing more follows. `closed(undefined)` comes once the consumer closed its side. */
  end(): void
  /**
   * Tears the channel down: the consumer's side hears `code` and `message`, and this side's
   * handler gets `closed` with the failure. Idempotent; a no-op once the channel is over.
   */
  abort(code: string, message: string): void
  /** Sets the handler of the channel's events; called once, before anything is sent. */
  listen(handler: FrameSenderHandler): void
}

/** What a frame sender tells its user. */
export interface FrameSenderHandler {
  /** `credit` may have grown (a grant arrived), or the write buffer drained. */
  writable(): void
  /** A REPLY frame's payload, from the consumer. */
  reply(payload: Uint8Array): void
  /**
   * The channel is over, called once: `undefined` after a clean end (END sent, and the consumer
   * closed its side after it), else why it broke (a LinkBrokenError).
   */
  closed(error: LaminaError | undefined): void
}

/**
 * The consuming side of a frame channel, on the consumer's peer. It grants credit and answers
 * requests; a DATA frame past the credit granted breaks the channel (the transport checks it).
 */
export interface FrameReceiver {
  /** The producing peer, once its stream arrived. */
  readonly peer: string | undefined
  /**
   * Grants `records` more records of credit. The first grant is the channel's capacity; later
   * grants give back what was consumed. Grants before the producer is connected are kept for it.
   */
  grant(records: number): void
  /** Sends a REPLY frame; false when it cannot go any more (the channel is gone or closed). */
  reply(payload: Uint8Array): boolean
  /** After END: closes this side, so the producer knows everything arrived (call it once every reply owed went). */
  close(): void
  /**
   * Tears the channel down: the producer's side hears `code` and `message`, and this side's
   * handler gets `closed` with the failure (unless END had arrived). Idempotent.
   */
  abort(code: string, message: string): void
  /** Sets the handler of the channel's frames; called once. Frames that arrived before wait for it. */
  listen(handler: FrameReceiverHandler): void
}

/** What a frame receiver delivers, in the order the producer sent it. */
export interface FrameReceiverHandler {
  /** A DATA frame: `records` records in an opaque `payload` (a view the handler may keep). */
  data(payload: Uint8Array, records: number): void
  /** A MARKER frame's payload. */
  marker(payload: Uint8Array): void
  /** END: nothing more arrives. The channel stays open for replies until `close`. */
  end(): void
  /** The channel broke before END, called once: why (a LinkBrokenError). Never called after END. */
  closed(error: LaminaError): void
}
