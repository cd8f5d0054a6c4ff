// The receiving half of a remote channel: a ChannelReceiver over a transport's FrameReceiver, decoding payloads with the port's codec, dead-lettering what fails, granting credit and answering requests.

import { BatchQueue } from '../batch-queue.js'
import { acceptsAll, check, guardOf, renderProblem } from '../codec.js'
import type { AnyCodec, Batch, ChannelInfo, ChannelReceiver, Header, ReplyTo } from '../contracts.js'
import type { FrameReceiver } from '../contracts/frames.js'
import { DecodeError, LaminaError, type Where } from '../errors.js'
import { ABORTED, LinkBrokenError, PayloadError } from './errors.js'
import { decodeMarkerPayload, decodeRecords, encodeReplyPayload, type Records } from './payload.js'
import { linkName } from './sender.js'

/** Options of `remoteReceiver`: the kernel's RemoteEnd fields for the receiving side. */
export interface RemoteReceiverOptions {
  readonly info: ChannelInfo
  /** Records this half holds: the credit granted to the sender. */
  readonly capacity: number
  /** The receiving port's codec: every value is decoded with it. */
  readonly codec: AnyCodec
  /** Records a value that fails the codec (`where.peer` names the sending peer). */
  readonly deadLetter: (where: Where, error: LaminaError, value: unknown) => void
  /** Milliseconds a half that got END keeps its side open for replies it still owes. @default 30000 */
  readonly replyGraceMs?: number
}

/** Counters of a receiving half. */
export interface RemoteReceiverStats {
  /** Records that arrived (dead letters included). */
  readonly received: number
  readonly queued: number
  readonly maxQueued: number
  /** Records of credit granted to the sender in all. */
  readonly granted: number
  readonly deadLetters: number
}

/** The receiving half of a remote channel, on the consumer's peer. */
export interface RemoteReceiver extends ChannelReceiver {
  /** The sending peer, once its stream arrived. */
  readonly peer: string | undefined
  /** Resolves when the sender's END arrived and every batch was taken; rejects with the link's failure. */
  readonly done: Promise<void>
  /** The link's failure, once it failed. */
  readonly error: LaminaError | undefined
  stats(): RemoteReceiverStats
  /** Tears the link down (the producer's peer hears ERR_JOB_ABORTED). Idempotent. */
  abort(reason?: unknown): void
}

/**
 * The receiving half of a remote channel over `frames`: grants `capacity` records of credit, and
 * gives credit back in chunks of a quarter of it (or whenever its queue empties). Every value is
 * decoded with the port's codec (process boundaries are always checked): one that fails is a dead
 * letter naming the sending peer and the path inside the value, and its credit goes straight
 * back. A request record gets a reply path that answers in a REPLY frame.
 *
 * ```ts
 * const channel = remoteReceiver(registry.receive({ info }), { info, capacity: 4096, codec: t.string, deadLetter })
 * channel.onReadable(() => { for (let b = channel.take(); typeof b === 'object'; b = channel.take()) handle(b) })
 * ```
 */
export function remoteReceiver(frames: FrameReceiver, options: RemoteReceiverOptions): RemoteReceiver {
  return new Receiver(frames, options)
}

class Receiver implements RemoteReceiver {
  readonly info: ChannelInfo
  error: LaminaError | undefined
  readonly done: Promise<void>
  private readonly link: string
  private readonly batches = new BatchQueue()
  private maxQueued = 0
  private received = 0
  private granted = 0
  private toReturn = 0
  private deadLetters = 0
  private ended = false
  private finished = false
  private readable: (() => void) | undefined
  private readonly guard: ((value: unknown) => boolean) | undefined
  private readonly returnAt: number
  private settleDone!: { resolve(): void; reject(error: unknown): void }
  /** Requests delivered here whose reply has not gone back yet. */
  private unanswered = 0
  /** END arrived while requests were unanswered: our side closes once they are (or after the grace). */
  private closeWhenAnswered: NodeJS.Timeout | undefined

  constructor(
    private readonly frames: FrameReceiver,
    private readonly options: RemoteReceiverOptions,
  ) {
    this.info = options.info
    this.link = linkName(options.info)
    this.guard = acceptsAll(options.codec) ? undefined : guardOf(options.codec)
    this.returnAt = Math.max(1, Math.floor(options.capacity / 4))
    this.done = new Promise<void>((resolve, reject) => (this.settleDone = { resolve, reject }))
    this.done.catch(() => undefined)
    frames.listen({
      data: (payload, records) => this.onData(payload, records),
      marker: (payload) => this.onMarker(payload),
      end: () => this.onEnd(),
      closed: (error) => this.fail(error),
    })
    if (!this.finished) {
      this.granted = options.capacity
      frames.grant(options.capacity)
    }
  }

  get peer(): string | undefined {
    return this.frames.peer
  }

  get queued(): number {
    return this.batches.records
  }

  stats(): RemoteReceiverStats {
    return { received: this.received, queued: this.batches.records, maxQueued: this.maxQueued, granted: this.granted, deadLetters: this.deadLetters }
  }

  take(): Batch | 'end' | undefined {
    const batch = this.batches.shift()
    if (batch !== undefined) {
      this.giveBack(batch.values.length)
      if (this.ended && this.batches.length === 0) this.complete()
      return batch
    }
    if (this.error !== undefined) throw this.error
    return this.ended ? 'end' : undefined
  }

  onReadable(fn: () => void): void {
    this.readable = fn
  }

  abort(reason?: unknown): void {
    if (this.finished) return
    const why = `aborted on this peer${reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`}`
    this.fail(new LinkBrokenError(this.link, this.peer ?? '(not connected)', why, reason === undefined ? undefined : { cause: reason }))
    // Tell the producer's peer the job stopped here on purpose.
    this.frames.abort(ABORTED, why)
  }

  private onData(payload: Uint8Array, records: number): void {
    if (this.finished) return
    this.received += records
    let decoded: Records
    try {
      decoded = decodeRecords(payload, records)
    } catch (error) {
      if (error instanceof PayloadError) return this.malformed(error, 'records')
      throw error
    }
    if (this.deliver(decoded)) this.arrived()
  }

  private onMarker(payload: Uint8Array): void {
    if (this.finished) return
    let marker: Batch['marker']
    try {
      marker = decodeMarkerPayload(payload)
    } catch (error) {
      if (error instanceof PayloadError) return this.malformed(error, 'a marker')
      throw error
    }
    this.batches.push({ values: [], marker })
    this.arrived()
  }

  private onEnd(): void {
    if (this.finished) return
    this.ended = true
    // Nothing more to read: close our side too, so the sender knows END arrived; replies still
    // owed go first (for at most the grace).
    if (this.unanswered === 0) this.frames.close()
    else {
      this.closeWhenAnswered = setTimeout(() => this.closeWrite(), this.options.replyGraceMs ?? 30_000)
      this.closeWhenAnswered.unref?.()
    }
    if (this.batches.length === 0) this.complete()
    this.readable?.()
  }

  /** Tells the consumer something is there to take, once per stretch of arrivals into an empty queue. */
  private arrived(): void {
    if (this.batches.length === 1) this.readable?.()
  }

  /** A payload the transport delivered intact cannot be decoded: the producer is broken, and so is the link. */
  private malformed(error: PayloadError, what: string): void {
    const why = `${what} from the producer's peer cannot be decoded: ${error.message}`
    this.fail(new LinkBrokenError(this.link, this.peer ?? '?', why, { cause: error }))
    this.frames.abort(error.code, why)
  }

  /** Decodes a batch with the port's codec; dead-letters what fails. Returns true when something was queued. */
  private deliver(records: Records): boolean {
    let values = records.values
    let headers = records.headers as readonly (Header | undefined)[] | undefined
    const requests = records.requests
    if (requests !== undefined) {
      // A request's reply goes back on this channel, in a REPLY frame naming its id.
      headers = values.map((_, i) => {
        const id = requests[i]
        const header = headers?.[i]
        return id === undefined ? header : { ...header, reply: this.replier(id) }
      })
    }
    const guard = this.guard
    if (guard !== undefined) {
      let bad = -1
      for (let i = 0; i < values.length; i++) {
        if (!safely(guard, values[i])) {
          bad = i
          break
        }
      }
      if (bad !== -1) {
        const keptValues: unknown[] = values.slice(0, bad)
        const keptHeaders: (Header | undefined)[] | undefined = headers?.slice(0, bad)
        for (let i = bad; i < values.length; i++) {
          const decoded = this.decode(values[i])
          if (decoded.ok) {
            keptValues.push(decoded.value)
            keptHeaders?.push(headers![i])
          } else headers?.[i]?.reply?.({ ok: false, error: decoded.error })
        }
        // Dead letters take no room in the queue: their credit goes straight back.
        this.giveBack(values.length - keptValues.length)
        values = keptValues
        headers = keptHeaders
        if (values.length === 0) return false
      }
    }
    this.batches.push(headers === undefined ? { values } : { values, headers })
    if (this.batches.records > this.maxQueued) this.maxQueued = this.batches.records
    return true
  }

  private decode(value: unknown): { ok: true; value: unknown } | { ok: false; error: DecodeError } {
    const codec = this.options.codec
    let details: string[]
    try {
      const result = codec.decode(value)
      if (result._tag === 'Right') return { ok: true, value: result.right }
      details = (check(codec, value) ?? [{ path: '', expected: codec.name, actual: value }]).map(renderProblem)
    } catch (error) {
      // A codec that throws refuses the value like one that fails.
      details = [`the codec threw: ${error instanceof Error ? error.message : String(error)}`]
    }
    const info = this.info
    const where: Where = { operator: info.to.operator, port: info.to.port, instance: info.to.instance, peer: this.peer }
    this.deadLetters++
    const error = new DecodeError(where, details)
    this.options.deadLetter(where, error, value)
    return { ok: false, error }
  }

  /**
   * The reply path of request `id`: sends its REPLY frame (once). A value JSON cannot carry
   * becomes a failure that says so; a reply after the link is gone has nowhere to go.
   */
  private replier(id: number): ReplyTo {
    this.unanswered++
    let answered = false
    return (outcome) => {
      if (answered) return
      answered = true
      this.unanswered--
      let payload: Uint8Array
      try {
        payload = encodeReplyPayload(outcome.ok ? { request: id, ok: true, value: outcome.value } : { request: id, ...failureOf(outcome.error) })
      } catch (error) {
        payload = encodeReplyPayload({
          request: id,
          ok: false,
          code: 'ERR_UNENCODABLE',
          message: `the reply cannot be sent to peer ${this.peer ?? '?'}: ${error instanceof Error ? error.message : String(error)}`,
        })
      }
      if (this.error === undefined) this.frames.reply(payload)
      if (this.unanswered === 0 && this.closeWhenAnswered !== undefined) this.closeWrite()
    }
  }

  /** Closes our side after END (once every owed reply went, or the grace ran out). */
  private closeWrite(): void {
    clearTimeout(this.closeWhenAnswered)
    this.closeWhenAnswered = undefined
    this.frames.close()
  }

  /** Returns `n` records of credit, in chunks (or at once when the queue is empty). */
  private giveBack(n: number): void {
    this.toReturn += n
    if (this.toReturn === 0 || this.ended || this.finished) return
    if (this.toReturn < this.returnAt && this.batches.records > 0) return
    const records = this.toReturn
    this.toReturn = 0
    this.granted += records
    this.frames.grant(records)
  }

  private complete(): void {
    if (this.finished) return
    this.finished = true
    this.settleDone.resolve()
  }

  private fail(error: LaminaError): void {
    if (this.finished) return
    this.finished = true
    this.error = error
    clearTimeout(this.closeWhenAnswered)
    this.settleDone.reject(error)
    this.readable?.()
  }
}

/** A failed request's code and message, as a reply carries them. */
function failureOf(error: unknown): { ok: false; code: string; message: string } {
  const code = error instanceof LaminaError ? error.code : typeof (error as { code?: unknown } | null)?.code === 'string' ? String((error as { code: string }).code) : 'ERR_HANDLER'
  const message = error instanceof Error ? error.message : String(error)
  return { ok: false, code, message }
}

/** A guard's verdict, false when it throws (the full decode then says why). */
function safely(guard: (value: unknown) => boolean, value: unknown): boolean {
  try {
    return guard(value)
  } catch {
    return false
  }
}
