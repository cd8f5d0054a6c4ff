// The sending half of a remote channel: a ChannelSender over a transport's FrameSender, encoding batches into payloads within the credit, and carrying requests' replies back.

import type { Batch, ChannelInfo, ChannelSender, Header, ReplyTo } from '../contracts.js'
import type { FrameSender } from '../contracts/frames.js'
import { JobAbortedError, type LaminaError, type Where } from '../errors.js'
import { ABORTED, ChannelEndedError, LinkBrokenError, PayloadError, RemoteRequestError, UnencodableValueError } from './errors.js'
import { decodeReplyPayload, encodeMarkerPayload, encodeRecordsLenient, type Reply } from './payload.js'

/** Options of `remoteSender`: the kernel's RemoteEnd fields for the sending side, and frame sizes. */
export interface RemoteSenderOptions {
  readonly info: ChannelInfo
  /** Records a value that cannot be sent (cannot be encoded, or is larger than a frame). */
  readonly deadLetter: (where: Where, error: LaminaError, value: unknown) => void
  /** Most records in one DATA frame. @default 4096 */
  readonly maxFrameRecords?: number
  /** Strings and byte arrays are cut into frames of about this many bytes (a larger single value gets a frame of its own). @default 1 MiB */
  readonly frameBytes?: number
}

/** Counters of a sending half. */
export interface RemoteSenderStats {
  /** Records handed to the transport. */
  readonly sent: number
  /** Records accepted by `send` but not yet handed to the transport (waiting for credit). */
  readonly pending: number
  /** Values dropped as dead letters because they could not be encoded. */
  readonly unencodable: number
  /** Requests sent and not answered yet. */
  readonly awaitingReplies: number
}

/** The sending half of a remote channel, on the producer's peer. */
export interface RemoteSender extends ChannelSender {
  /** The consumer's peer (as the transport names it). */
  readonly peer: string
  /** Resolves once END went and the consumer's peer closed its side; rejects with the link's failure. */
  readonly done: Promise<void>
  /** The link's failure, once it failed. */
  readonly error: LaminaError | undefined
  stats(): RemoteSenderStats
  /** Tears the link down (the consumer's peer hears ERR_JOB_ABORTED); pending `whenReady` calls reject. Idempotent. */
  abort(reason?: unknown): void
}

/**
 * The sending half of a remote channel over `frames`. Batches are encoded in order, never past
 * the credit the transport has (a batch larger than the credit is split across frames), one
 * payload per DATA frame; markers go as soon as the data before them has gone. A request's reply
 * path stays here: its record carries a request id, and the consumer's REPLY names it.
 *
 * ```ts
 * const channel = remoteSender(openFrameSender(node, consumerAddress, info), { info, deadLetter })
 * await channel.whenReady()
 * channel.send({ values: ['a', 'b'] })
 * channel.end()
 * await channel.done
 * ```
 */
export function remoteSender(frames: FrameSender, options: RemoteSenderOptions): RemoteSender {
  return new Sender(frames, options)
}

/** How a remote channel is named in errors: job, link, producer and consumer instances. */
export function linkName(info: ChannelInfo): string {
  return `${info.job}/${info.link.id}#${info.from.instance}->${info.to.instance}`
}

/**
 * How many of the first `limit` values to put in one frame so that it stays near `bytes`: counted
 * for strings (UTF-16 length) and byte arrays, where the size is known before encoding; other
 * values are counted by `limit` only (an oversized frame is split after encoding).
 */
function fitFrame(values: readonly unknown[], limit: number, bytes: number): number {
  let size = 0
  for (let i = 0; i < limit; i++) {
    const value = values[i]
    if (typeof value === 'string') size += value.length
    else if (value instanceof Uint8Array) size += value.byteLength
    else return limit
    if (size > bytes) return Math.max(1, i)
  }
  return limit
}

interface Waiter {
  resolve(): void
  reject(error: unknown): void
}

class Sender implements RemoteSender {
  readonly info: ChannelInfo
  readonly done: Promise<void>
  error: LaminaError | undefined
  private readonly link: string
  private readonly maxFrameRecords: number
  private readonly frameBytes: number
  private pending: Batch[] = []
  private pendingRecords = 0
  private sent = 0
  private unencodable = 0
  private ending = false
  private endSent = false
  private finished = false
  private waiters: Waiter[] = []
  private settleDone!: { resolve(): void; reject(error: unknown): void }
  /** Requests sent and not answered yet, by request id: their replies come back in REPLY frames. */
  private readonly replies = new Map<number, ReplyTo>()
  private nextRequest = 1
  /** True while `pump` runs: a `writable` event inside it (a transport delivering at once) does not re-enter. */
  private pumping = false

  constructor(
    private readonly frames: FrameSender,
    private readonly options: RemoteSenderOptions,
  ) {
    this.info = options.info
    this.link = linkName(options.info)
    this.maxFrameRecords = options.maxFrameRecords ?? 4096
    this.frameBytes = options.frameBytes ?? 1024 * 1024
    this.done = new Promise<void>((resolve, reject) => (this.settleDone = { resolve, reject }))
    this.done.catch(() => undefined)
    frames.listen({ writable: () => this.pump(), reply: (payload) => this.onReply(payload), closed: (error) => this.onClosed(error) })
  }

  get peer(): string {
    return this.frames.peer
  }

  get queued(): number {
    return this.pendingRecords
  }

  stats(): RemoteSenderStats {
    return { sent: this.sent, pending: this.pendingRecords, unencodable: this.unencodable, awaitingReplies: this.replies.size }
  }

  send(batch: Batch): void {
    if (this.error !== undefined) throw this.error
    if (this.ending) throw new ChannelEndedError(this.link)
    if (batch.values.length === 0 && batch.marker === undefined) return
    this.pending.push(batch)
    this.pendingRecords += batch.values.length
    this.pump()
  }

  ready(): boolean {
    return this.error === undefined && !this.ending && this.pendingRecords === 0 && this.frames.credit > 0
  }

  whenReady(signal?: AbortSignal): Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error)
    // Ready, or ended cleanly: nothing to wait for.
    if (this.ready() || this.finished) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted === true) return reject(new JobAbortedError(this.info.job, signal.reason))
      const onAbort = (): void => {
        this.waiters = this.waiters.filter((w) => w !== waiter)
        reject(new JobAbortedError(this.info.job, signal?.reason))
      }
      const waiter: Waiter = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort)
          resolve()
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort)
          reject(error)
        },
      }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(waiter)
    })
  }

  end(): void {
    if (this.ending || this.error !== undefined) return
    this.ending = true
    this.pump()
  }

  abort(reason?: unknown): void {
    if (this.finished) return
    const why = `aborted on this peer${reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`}`
    this.fail(new LinkBrokenError(this.link, this.peer, why, reason === undefined ? undefined : { cause: reason }))
    this.frames.abort(ABORTED, why)
  }

  /** Hands pending batches to the transport while it has credit; then END. */
  private pump(): void {
    if (this.finished || this.pumping) return
    this.pumping = true
    try {
      // Nothing goes while the transport's write buffer drains: its `writable` brings us back.
      while (this.pending.length > 0 && !this.frames.draining) {
        const batch = this.pending[0]!
        if (batch.marker !== undefined) {
          // A marker takes no credit: it goes as soon as the data before it has gone.
          this.pending.shift()
          this.frames.marker(encodeMarkerPayload(batch.marker))
          if (this.finished) return
          continue
        }
        const credit = this.frames.credit
        if (credit === 0) break
        const n = fitFrame(batch.values, Math.min(credit, batch.values.length, this.maxFrameRecords), this.frameBytes)
        let values = batch.values
        let headers = batch.headers
        if (n < batch.values.length) {
          values = batch.values.slice(0, n)
          headers = batch.headers?.slice(0, n)
          this.pending[0] = batch.headers === undefined ? { values: batch.values.slice(n) } : { values: batch.values.slice(n), headers: batch.headers.slice(n) }
        } else this.pending.shift()
        this.pendingRecords -= n
        this.writeData(values, headers, this.requestIds(headers))
        if (this.finished) return
      }
      if (this.ending && !this.endSent && this.pending.length === 0 && !this.frames.draining) {
        this.endSent = true
        this.frames.end()
      }
    } finally {
      this.pumping = false
    }
    this.wake()
  }

  /**
   * The request id of each record that is a request (its header has a `reply`), registered so
   * the REPLY frame that names it reaches the requester; undefined when none is.
   */
  private requestIds(headers: readonly (Header | undefined)[] | undefined): (number | undefined)[] | undefined {
    if (headers === undefined || !headers.some((h) => h?.reply !== undefined)) return undefined
    return headers.map((header) => {
      if (header?.reply === undefined) return undefined
      const id = this.nextRequest++
      this.replies.set(id, header.reply)
      return id
    })
  }

  /** Encodes and hands over values (split when a frame would be too large); returns how many went. */
  private writeData(values: readonly unknown[], headers: readonly (Header | undefined)[] | undefined, requests: readonly (number | undefined)[] | undefined): number {
    const failed = new Set<number>()
    const encoded = encodeRecordsLenient(
      values,
      headers,
      (value, index, error) => {
        failed.add(index)
        this.unencodableValue(value, error instanceof Error ? error.message : String(error), error, requests?.[index])
      },
      requests,
      this.frames.headroom,
    )
    if (encoded === undefined) return 0
    if (encoded.payload.byteLength > this.frames.maxPayloadBytes) {
      const keep = (_: unknown, i: number): boolean => !failed.has(i)
      const keptValues = failed.size === 0 ? values : values.filter(keep)
      const keptHeaders = failed.size === 0 ? headers : headers?.filter(keep)
      const keptRequests = failed.size === 0 ? requests : requests?.filter(keep)
      if (keptValues.length === 1) {
        this.unencodableValue(
          keptValues[0],
          `its frame would take ${encoded.payload.byteLength} bytes, more than the ${this.frames.maxPayloadBytes} a frame may`,
          undefined,
          keptRequests?.[0],
        )
        return 0
      }
      const half = Math.ceil(keptValues.length / 2)
      return (
        this.writeData(keptValues.slice(0, half), keptHeaders?.slice(0, half), keptRequests?.slice(0, half)) +
        this.writeData(keptValues.slice(half), keptHeaders?.slice(half), keptRequests?.slice(half))
      )
    }
    this.frames.data(encoded.payload, encoded.records)
    this.sent += encoded.records
    return encoded.records
  }

  private unencodableValue(value: unknown, reason: string, cause: unknown, request: number | undefined): void {
    this.unencodable++
    const where: Where = { operator: this.info.from.operator, port: this.info.from.port, instance: this.info.from.instance, peer: this.peer }
    const error = new UnencodableValueError(this.link, this.peer, reason, cause === undefined ? undefined : { cause })
    // A request that cannot be sent fails at once, with the reason.
    if (request !== undefined) this.answer(request, { ok: false, error })
    this.options.deadLetter(where, error, value)
  }

  /** Delivers the outcome of request `id` to its requester (once). */
  private answer(id: number, outcome: Parameters<ReplyTo>[0]): void {
    const reply = this.replies.get(id)
    if (reply === undefined) return
    this.replies.delete(id)
    reply(outcome)
  }

  private onReply(payload: Uint8Array): void {
    if (this.finished && this.error !== undefined) return
    let reply: Reply
    try {
      reply = decodeReplyPayload(payload)
    } catch (error) {
      if (!(error instanceof PayloadError)) throw error
      const why = `a malformed reply from the consumer's peer: ${error.message}`
      this.fail(new LinkBrokenError(this.link, this.peer, why, { cause: error }))
      this.frames.abort(error.code, why)
      return
    }
    // A reply to a request this side no longer waits for (it was answered) is ignored.
    this.answer(reply.request, reply.ok ? { ok: true, value: reply.value } : { ok: false, error: new RemoteRequestError(this.peer, reply.code, reply.message) })
  }

  private onClosed(error: LaminaError | undefined): void {
    if (this.finished) return
    if (error !== undefined) return this.fail(error)
    if (!this.endSent) return this.fail(new LinkBrokenError(this.link, this.peer, "the consumer's peer closed the link before the end"))
    this.finished = true
    this.unanswered(new LinkBrokenError(this.link, this.peer, "the consumer's peer closed the link without answering the request"))
    this.settleDone.resolve()
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter.resolve()
  }

  private fail(error: LaminaError): void {
    if (this.finished) return
    this.finished = true
    this.error = error
    this.pending = []
    this.pendingRecords = 0
    this.settleDone.reject(error)
    this.unanswered(error)
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter.reject(error)
  }

  /** Fails every request still waiting for its reply: the link is gone. */
  private unanswered(error: LaminaError): void {
    const replies = [...this.replies.values()]
    this.replies.clear()
    for (const reply of replies) reply({ ok: false, error })
  }

  private wake(): void {
    if (this.waiters.length === 0 || !this.ready()) return
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter.resolve()
  }
}
