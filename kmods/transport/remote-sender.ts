// The producer's half of a remote channel: sends batches over one libp2p stream within the credit the consumer's peer grants.

import './polyfill.js'
import type { Batch, Channel, ChannelInfo, Header, ReplyTo } from '../../kernel/contracts.js'
import { JobAbortedError, type LaminaError, type Where } from '../../kernel/errors.js'
import { ABORTED, ChannelEndedError, LinkProtocolError, RemoteLinkError, RemoteRequestError, UnencodableValueError, type FrameError } from './errors.js'
import { encodeDataLenient, encodeEnd, encodeMarker, encodeOpen, MAX_FRAME_BYTES, type Frame } from './frames.js'
import type { Logger } from './logger.js'
import type { DialTarget, PeerNode } from './node.js'
import { brokenBy, CHANNEL_PROTOCOL, describeClose, FrameStream } from './remote-channel.js'
import type { LinkBrokenError } from './errors.js'

/** Options of `openRemoteSender`. */
export interface RemoteSenderOptions {
  /** Aborting tears the link down: the consumer's peer gets an ERROR frame, both halves fail. */
  readonly signal?: AbortSignal
  /** Records a value that cannot be sent (cannot be encoded, or is larger than a frame). @default logged and dropped */
  readonly deadLetter?: (where: Where, error: LaminaError, value: unknown) => void
  /** Where problems are logged. @default the node's logger */
  readonly logger?: Logger
  /** Most records in one DATA frame. @default 4096 */
  readonly maxFrameRecords?: number
  /** Strings and byte arrays are cut into frames of about this many bytes (a larger single value gets a frame of its own). @default 1 MiB */
  readonly frameBytes?: number
  /**
   * Most bytes of DATA in flight (sent, their credit not back yet), besides the consumer's credit
   * in records: large records then cannot fill the consumer's memory with `capacity` of them. One
   * frame may always be in flight, however large. @default 16 MiB
   */
  readonly maxBytesInFlight?: number
  /** Milliseconds to connect, open the stream and receive the first credit. @default 30000 */
  readonly openTimeoutMs?: number
}

/** Counters of a sending half. */
export interface RemoteSenderStats {
  /** Records written to the stream. */
  readonly sent: number
  /** Records the consumer's peer has granted in all (its first grant is the channel's capacity). */
  readonly granted: number
  /** Records the sender may still send now. */
  readonly credit: number
  /** Records sent whose credit has not come back: never more than the first grant. */
  readonly inFlight: number
  /** The most records ever in flight. */
  readonly maxInFlight: number
  /** Bytes of DATA frames whose records' credit has not come back. */
  readonly bytesInFlight: number
  /** The most bytes ever in flight. */
  readonly maxBytesInFlight: number
  /** Records accepted by `send` but not yet written (waiting for credit or drain). */
  readonly pending: number
  /** Values dropped as dead letters because they could not be encoded. */
  readonly unencodable: number
  readonly bytesOut: number
}

/** The sending half: the kernel's Channel on the producer's peer (`take`/`onReadable` are not used there). */
export interface RemoteSender extends Channel {
  /** The consumer's peer id once connected, else the dial target. */
  readonly peer: string
  /** Resolves once the stream is open and the first credit arrived; rejects with LinkBrokenError. */
  readonly opened: Promise<void>
  /** Resolves once END was sent and the consumer's peer closed its side; rejects with LinkBrokenError. */
  readonly done: Promise<void>
  /** The link's failure, once it failed. */
  readonly error: LinkBrokenError | undefined
  stats(): RemoteSenderStats
  /** Tears the link down (ERROR frame, reset); pending `whenReady` calls reject. Idempotent. */
  abort(reason?: unknown): void
}

/**
 * Opens the sending half of a channel to the consumer's peer: dials `target`, opens a
 * `/lamina/channel/1.0.0` stream and sends OPEN; connects in the background, so it returns at
 * once and `ready()` turns true when the first credit arrives. Batches are written in order,
 * never past the granted credit (a batch larger than the credit is split), and wait for the
 * stream's 'drain' when its write buffer is full.
 *
 * ```ts
 * const channel = openRemoteSender(node, consumerAddress, info)
 * await channel.whenReady()
 * channel.send({ values: ['a', 'b'] })
 * channel.end()
 * await channel.done
 * ```
 */
export function openRemoteSender(node: PeerNode, target: DialTarget, info: ChannelInfo, options: RemoteSenderOptions = {}): RemoteSender {
  return new Sender(node, target, info, options)
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
  peer: string
  readonly opened: Promise<void>
  readonly done: Promise<void>
  error: LinkBrokenError | undefined
  private readonly link: string
  private readonly logger: Logger
  private readonly maxFrameRecords: number
  private readonly frameBytes: number
  private readonly byteWindow: number
  /** DATA frames in flight, oldest first: their records not yet credited back, and their bytes. */
  private readonly unacked: { records: number; bytes: number }[] = []
  private bytesInFlight = 0
  private maxBytes = 0
  private frames: FrameStream | undefined
  private credit = 0
  private granted = 0
  private firstGrant = 0
  private sent = 0
  private maxInFlight = 0
  private unencodable = 0
  private bytesOut = 0
  private pending: Batch[] = []
  private pendingRecords = 0
  private ending = false
  private endSent = false
  private finished = false
  /** Failed because a job stopped on purpose (here, or on the other peer): logged as info, not a warning. */
  private deliberate = false
  private waiters: Waiter[] = []
  private settleOpened!: { resolve(): void; reject(error: unknown): void }
  private settleDone!: { resolve(): void; reject(error: unknown): void }
  private readonly connecting = new AbortController()
  /** Requests sent and not answered yet, by request id: their replies come back in REPLY frames. */
  private readonly replies = new Map<number, ReplyTo>()
  private nextRequest = 1

  constructor(
    private readonly node: PeerNode,
    target: DialTarget,
    readonly info: ChannelInfo,
    private readonly options: RemoteSenderOptions,
  ) {
    this.peer = typeof target === 'string' ? target : target.toString()
    this.link = `${info.job}/${info.link.id}#${info.from.instance}->${info.to.instance}`
    this.logger = options.logger ?? node.logger
    this.maxFrameRecords = options.maxFrameRecords ?? 4096
    this.frameBytes = options.frameBytes ?? 1024 * 1024
    this.byteWindow = options.maxBytesInFlight ?? 16 * 1024 * 1024
    this.opened = new Promise<void>((resolve, reject) => (this.settleOpened = { resolve, reject }))
    this.done = new Promise<void>((resolve, reject) => (this.settleDone = { resolve, reject }))
    this.opened.catch(() => undefined)
    this.done.catch(() => undefined)
    if (options.signal !== undefined) {
      if (options.signal.aborted) queueMicrotask(() => this.abort(options.signal!.reason))
      else options.signal.addEventListener('abort', () => this.abort(options.signal!.reason), { once: true })
    }
    void this.connect(target)
  }

  get queued(): number {
    return this.pendingRecords
  }

  stats(): RemoteSenderStats {
    return {
      sent: this.sent,
      granted: this.granted,
      credit: this.credit,
      inFlight: this.sent - (this.granted - this.firstGrant),
      maxInFlight: this.maxInFlight,
      bytesInFlight: this.bytesInFlight,
      maxBytesInFlight: this.maxBytes,
      pending: this.pendingRecords,
      unencodable: this.unencodable,
      bytesOut: this.bytesOut,
    }
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
    return this.error === undefined && this.frames !== undefined && this.credit > 0 && this.bytesInFlight < this.byteWindow && this.pendingRecords === 0 && !this.ending
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

  take(): Batch | 'end' | undefined {
    return undefined
  }

  onReadable(): void {
    // The producer's half is never read: the consumer reads on its own peer.
  }

  abort(reason?: unknown): void {
    if (this.finished) return
    const error = brokenBy(this.link, this.peer, `aborted on this peer${reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`}`, reason)
    this.connecting.abort(error)
    this.deliberate = true
    this.fail(error, true)
  }

  private async connect(target: DialTarget): Promise<void> {
    const timeout = AbortSignal.timeout(this.options.openTimeoutMs ?? 30_000)
    const signal = AbortSignal.any([timeout, this.connecting.signal])
    try {
      const connection = await this.node.dial(target, { signal })
      this.peer = connection.remotePeer.toString()
      const stream = await connection.newStream(CHANNEL_PROTOCOL, { signal, maxOutboundStreams: 1 << 16 })
      if (this.finished) {
        stream.abort(this.error ?? new Error('link closed'))
        return
      }
      this.frames = new FrameStream(stream, {
        frames: (frames) => this.onFrames(frames),
        malformed: (error) => this.onMalformed(error),
        remoteEnd: () => this.onRemoteEnd(),
        closed: (error, local) => this.onClosed(error, local),
        drain: () => this.pump(),
      })
      this.write(encodeOpen({ job: this.info.job, link: this.info.link.id, from: this.info.from.instance, to: this.info.to.instance }))
      this.pump()
      const onTimeout = (): void => this.fail(brokenBy(this.link, this.peer, `no credit from the consumer's peer within ${this.options.openTimeoutMs ?? 30_000} ms of opening`))
      if (this.granted === 0) timeout.addEventListener('abort', onTimeout, { once: true })
      this.opened.then(() => timeout.removeEventListener('abort', onTimeout), () => undefined)
    } catch (error) {
      if (this.finished) return
      const reason = timeout.aborted ? `cannot open the stream within ${this.options.openTimeoutMs ?? 30_000} ms` : `cannot open the stream: ${error instanceof Error ? error.message : String(error)}`
      this.fail(brokenBy(this.link, this.peer, reason, error))
    }
  }

  /** Writes pending batches while there is credit and the stream is not waiting for drain; then END. */
  private pump(): void {
    const frames = this.frames
    if (frames === undefined || this.finished) return
    while (this.pending.length > 0 && !frames.needsDrain) {
      const batch = this.pending[0]!
      if (batch.marker !== undefined) {
        // A marker takes no credit: it goes as soon as the data before it has gone.
        this.pending.shift()
        this.write(encodeMarker(batch.marker))
        if (this.finished) return
        continue
      }
      if (this.credit === 0 || this.bytesInFlight >= this.byteWindow) break
      const n = fitFrame(batch.values, Math.min(this.credit, batch.values.length, this.maxFrameRecords), this.frameBytes)
      let values = batch.values
      let headers = batch.headers
      if (n < batch.values.length) {
        values = batch.values.slice(0, n)
        headers = batch.headers?.slice(0, n)
        this.pending[0] = batch.headers === undefined ? { values: batch.values.slice(n) } : { values: batch.values.slice(n), headers: batch.headers.slice(n) }
      } else this.pending.shift()
      this.pendingRecords -= n
      this.credit -= n
      const kept = this.writeData(values, headers, this.requestIds(headers))
      // Values that could not be encoded took no room at the receiver: their credit stays here.
      this.credit += n - kept
      this.sent += kept
      const inFlight = this.sent - (this.granted - this.firstGrant)
      if (inFlight > this.maxInFlight) this.maxInFlight = inFlight
      if (this.finished) return
    }
    if (this.ending && !this.endSent && this.pending.length === 0 && !frames.needsDrain) {
      this.endSent = true
      this.write(encodeEnd())
      frames.closeWrite()
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

  /** Encodes and writes values (split when a frame would be too large); returns how many were written. */
  private writeData(values: readonly unknown[], headers: readonly (Header | undefined)[] | undefined, requests: readonly (number | undefined)[] | undefined): number {
    const failed: { value: unknown; index: number; error: unknown }[] = []
    const frame = encodeDataLenient(values, headers, (value, index, error) => failed.push({ value, index, error }), requests)
    for (const { value, index, error } of failed) this.unencodableValue(value, error instanceof Error ? error.message : String(error), error, requests?.[index])
    if (frame === undefined) return 0
    const written = values.length - failed.length
    if (frame.byteLength > MAX_FRAME_BYTES) {
      if (written === 1) {
        const index = values.findIndex((_, i) => !failed.some((f) => f.index === i))
        this.unencodableValue(values[index], `its frame would take ${frame.byteLength} bytes, more than the ${MAX_FRAME_BYTES} a frame may`, undefined, requests?.[index])
        return 0
      }
      const half = Math.ceil(values.length / 2)
      return this.writeData(values.slice(0, half), headers?.slice(0, half), requests?.slice(0, half)) + this.writeData(values.slice(half), headers?.slice(half), requests?.slice(half))
    }
    this.write(frame)
    if (written > 0) {
      this.unacked.push({ records: written, bytes: frame.byteLength })
      this.bytesInFlight += frame.byteLength
      if (this.bytesInFlight > this.maxBytes) this.maxBytes = this.bytesInFlight
    }
    return written
  }

  /** `records` came back as credit: the oldest frames in flight are consumed (a part of one, pro rata). */
  private acknowledge(records: number): void {
    let left = records
    while (left > 0 && this.unacked.length > 0) {
      const oldest = this.unacked[0]!
      if (oldest.records <= left) {
        left -= oldest.records
        this.bytesInFlight -= oldest.bytes
        this.unacked.shift()
      } else {
        const bytes = Math.floor((oldest.bytes * left) / oldest.records)
        oldest.records -= left
        oldest.bytes -= bytes
        this.bytesInFlight -= bytes
        left = 0
      }
    }
    if (this.unacked.length === 0) this.bytesInFlight = 0
  }

  private unencodableValue(value: unknown, reason: string, cause: unknown, request: number | undefined): void {
    this.unencodable++
    const where: Where = { operator: this.info.from.operator, port: this.info.from.port, instance: this.info.from.instance, peer: this.peer }
    const error = new UnencodableValueError(this.link, this.peer, reason, cause === undefined ? undefined : { cause })
    // A request that cannot be sent fails at once, with the reason.
    if (request !== undefined) this.answer(request, { ok: false, error })
    if (this.options.deadLetter !== undefined) this.options.deadLetter(where, error, value)
    else this.logger.warn(error.message)
  }

  /** Delivers the outcome of request `id` to its requester (once). */
  private answer(id: number, outcome: Parameters<ReplyTo>[0]): void {
    const reply = this.replies.get(id)
    if (reply === undefined) return
    this.replies.delete(id)
    reply(outcome)
  }

  private write(frame: Uint8Array): void {
    try {
      this.bytesOut += frame.byteLength
      this.frames!.write(frame)
    } catch (error) {
      this.fail(brokenBy(this.link, this.peer, `cannot write to the stream: ${error instanceof Error ? error.message : String(error)}`, error))
    }
  }

  private onFrames(frames: Frame[]): void {
    for (const frame of frames) {
      if (this.finished) return
      switch (frame.kind) {
        case 'credit': {
          if (this.granted === 0) this.firstGrant = frame.records
          // Every grant after the first gives back credit for records the consumer took.
          else this.acknowledge(frame.records)
          this.granted += frame.records
          this.credit += frame.records
          if (this.granted === frame.records) this.settleOpened.resolve()
          break
        }
        case 'reply': {
          // A reply to a request this side no longer waits for (it was answered) is ignored.
          this.answer(frame.request, frame.ok ? { ok: true, value: frame.value } : { ok: false, error: new RemoteRequestError(this.peer, frame.code, frame.message) })
          break
        }
        case 'error': {
          const remote = new RemoteLinkError(this.peer, frame.code, frame.message)
          this.deliberate = frame.code === ABORTED
          this.fail(brokenBy(this.link, this.peer, `the consumer's peer reported ${frame.code}: ${frame.message}`, remote))
          return
        }
        default: {
          const violation = new LinkProtocolError(this.link, this.peer, `the consumer's peer sent a ${frame.kind.toUpperCase()} frame (it may send only CREDIT, REPLY and ERROR)`)
          this.fail(brokenBy(this.link, this.peer, violation.message, violation), true)
          return
        }
      }
    }
    this.pump()
  }

  private onMalformed(error: FrameError): void {
    // The stream was reset already (and `onClosed` failed the link); this names the cause.
    this.logger.warn(`link ${this.link}: malformed frame from peer ${this.peer}: ${error.message}; stream reset`)
  }

  private onRemoteEnd(): void {
    if (this.endSent) {
      this.finished = true
      this.unanswered(brokenBy(this.link, this.peer, "the consumer's peer closed the link without answering the request"))
      this.settleDone.resolve()
      return
    }
    this.fail(brokenBy(this.link, this.peer, "the consumer's peer closed the stream before the end"))
  }

  private onClosed(error: Error | undefined, local: boolean): void {
    if (this.finished) return
    if (error === undefined && this.endSent) {
      this.finished = true
      this.unanswered(brokenBy(this.link, this.peer, "the consumer's peer closed the link without answering the request"))
      this.settleDone.resolve()
      return
    }
    this.fail(brokenBy(this.link, this.peer, describeClose(error, local), error))
  }

  private fail(error: LinkBrokenError, local = false): void {
    if (this.finished) return
    this.finished = true
    this.error = error
    // A deliberate abort (the job stops here) tells the other side so, and is no warning.
    if (local) this.frames?.reset(this.deliberate ? Object.assign(new Error(error.message), { code: ABORTED }) : error)
    else this.frames?.stream.abort(error)
    this.pending = []
    this.pendingRecords = 0
    if (this.deliberate) this.logger.info(error.message)
    else this.logger.warn(error.message)
    this.settleOpened.reject(error)
    this.settleDone.reject(error)
    this.unanswered(error)
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter.reject(error)
  }

  /** Fails every request still waiting for its reply: the link is gone. */
  private unanswered(error: LinkBrokenError): void {
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
