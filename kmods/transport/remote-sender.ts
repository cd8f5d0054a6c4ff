// The producer's half of a remote channel at the byte level: a FrameSender over one libp2p stream, within the credit (records and bytes in flight) the consumer's peer grants.

import './polyfill.js'
import type { Stream } from '@libp2p/interface'
import type { ChannelInfo, FrameSender, FrameSenderHandler } from '../../kernel/index.js'
import { ABORTED, LinkProtocolError, RemoteLinkError, type FrameError, type LinkBrokenError } from './errors.js'
import { DATA_HEADROOM, dataFrameInPlace, encodeEnd, encodeMarker, encodeOpen, MAX_FRAME_BYTES, type Frame } from './frames.js'
import type { Logger } from './logger.js'
import type { DialTarget, PeerNode } from './node.js'
import { brokenBy, CHANNEL_PROTOCOL, channelKeyOf, describeClose, FrameStream } from './remote-channel.js'

/** Options of `openFrameSender`. */
export interface FrameSenderOptions {
  /** Aborting tears the link down: the consumer's peer gets an ERROR frame (ERR_JOB_ABORTED), both halves fail. */
  readonly signal?: AbortSignal
  /** Where problems are logged. @default the node's logger */
  readonly logger?: Logger
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
export interface FrameSenderStats {
  /** Records written to the stream. */
  readonly sent: number
  /** Records the consumer's peer has granted in all (its first grant is the channel's capacity). */
  readonly granted: number
  /** Records the sender may still send now (credit granted and not used). */
  readonly credit: number
  /** Records sent whose credit has not come back: never more than the first grant. */
  readonly inFlight: number
  /** The most records ever in flight. */
  readonly maxInFlight: number
  /** Bytes of DATA frames whose records' credit has not come back. */
  readonly bytesInFlight: number
  /** The most bytes ever in flight. */
  readonly maxBytesInFlight: number
  readonly bytesOut: number
}

/** The sending half of a channel over a libp2p stream. */
export interface StreamFrameSender extends FrameSender {
  /** Resolves once the stream is open and the first credit arrived; rejects with LinkBrokenError. */
  readonly opened: Promise<void>
  /** The link's failure, once it failed. */
  readonly error: LinkBrokenError | undefined
  stats(): FrameSenderStats
}

/**
 * Opens the sending half of a channel to the consumer's peer: dials `target`, opens a
 * `/lamina/channel/1.0.0` stream and sends OPEN; connects in the background, so it returns at
 * once and `credit` turns positive when the first credit arrives. DATA frames are written in the
 * order given, never past the granted credit; `credit` is 0 while too many bytes are in flight,
 * and `draining` is true while the stream's write buffer waits for its 'drain' event. MARKER and
 * END frames given before the stream is open wait for it; an abort made meanwhile reaches the
 * consumer's peer once the stream opens (OPEN, then ERROR). The kernel's `remoteSender` turns it
 * into a channel of values.
 *
 * ```ts
 * const channel = remoteSender(openFrameSender(node, consumerAddress, info), { info, deadLetter })
 * ```
 */
export function openFrameSender(node: PeerNode, target: DialTarget, info: ChannelInfo, options: FrameSenderOptions = {}): StreamFrameSender {
  return new Sender(node, target, info, options)
}

class Sender implements StreamFrameSender {
  peer: string
  readonly opened: Promise<void>
  error: LinkBrokenError | undefined
  readonly headroom = DATA_HEADROOM
  readonly maxPayloadBytes = MAX_FRAME_BYTES
  private readonly link: string
  private readonly logger: Logger
  private readonly byteWindow: number
  private handler: FrameSenderHandler | undefined
  /** DATA frames in flight, oldest first: their records not yet credited back, and their bytes. */
  private readonly unacked: { records: number; bytes: number }[] = []
  private bytesInFlight = 0
  private maxBytes = 0
  private frames: FrameStream | undefined
  /** MARKER and END frames given before the stream was open. */
  private early: Uint8Array[] = []
  private available = 0
  private granted = 0
  private firstGrant = 0
  private sent = 0
  private maxInFlight = 0
  private bytesOut = 0
  private endSent = false
  private finished = false
  /** Failed because a job stopped on purpose (here, or on the other peer): logged as info, not a warning. */
  private deliberate = false
  private settleOpened!: { resolve(): void; reject(error: unknown): void }
  /** The code and message of an abort made while still connecting: told to the consumer's peer once the stream opens. */
  private abortedEarly: { readonly code: string; readonly message: string } | undefined

  constructor(
    private readonly node: PeerNode,
    target: DialTarget,
    private readonly info: ChannelInfo,
    private readonly options: FrameSenderOptions,
  ) {
    this.peer = typeof target === 'string' ? target : target.toString()
    this.link = channelKeyOf(info)
    this.logger = options.logger ?? node.logger
    this.byteWindow = options.maxBytesInFlight ?? 16 * 1024 * 1024
    this.opened = new Promise<void>((resolve, reject) => (this.settleOpened = { resolve, reject }))
    this.opened.catch(() => undefined)
    if (options.signal !== undefined) {
      const signal = options.signal
      const onAbort = (): void =>
        this.abort(ABORTED, `aborted on this peer${signal.reason === undefined ? '' : `: ${signal.reason instanceof Error ? signal.reason.message : String(signal.reason)}`}`)
      if (signal.aborted) queueMicrotask(onAbort)
      else signal.addEventListener('abort', onAbort, { once: true })
    }
    void this.connect(target)
  }

  get credit(): number {
    if (this.frames === undefined || this.finished || this.endSent || this.bytesInFlight >= this.byteWindow) return 0
    return this.available
  }

  get draining(): boolean {
    return this.frames?.needsDrain === true
  }

  stats(): FrameSenderStats {
    return {
      sent: this.sent,
      granted: this.granted,
      credit: this.available,
      inFlight: this.sent - (this.granted - this.firstGrant),
      maxInFlight: this.maxInFlight,
      bytesInFlight: this.bytesInFlight,
      maxBytesInFlight: this.maxBytes,
      bytesOut: this.bytesOut,
    }
  }

  listen(handler: FrameSenderHandler): void {
    this.handler = handler
  }

  data(payload: Uint8Array, records: number): void {
    if (this.finished) return
    if (!Number.isInteger(records) || records < 1 || records > this.credit) throw new RangeError(`link ${this.link}: a DATA frame of ${records} records with ${this.credit} credit`)
    if (payload.byteLength > this.maxPayloadBytes)
      throw new RangeError(`link ${this.link}: a payload of ${payload.byteLength} bytes, more than the ${this.maxPayloadBytes} a frame may`)
    const frame = dataFrameInPlace(payload, records)
    this.available -= records
    this.sent += records
    const inFlight = this.sent - (this.granted - this.firstGrant)
    if (inFlight > this.maxInFlight) this.maxInFlight = inFlight
    this.unacked.push({ records, bytes: frame.byteLength })
    this.bytesInFlight += frame.byteLength
    if (this.bytesInFlight > this.maxBytes) this.maxBytes = this.bytesInFlight
    this.write(frame)
  }

  marker(payload: Uint8Array): void {
    if (this.finished || this.endSent) return
    this.writeOrHold(encodeMarker(payload))
  }

  end(): void {
    if (this.finished || this.endSent) return
    this.endSent = true
    this.writeOrHold(encodeEnd())
    if (this.frames !== undefined) this.frames.closeWrite()
  }

  abort(code: string, message: string): void {
    if (this.finished) return
    const error = brokenBy(this.link, this.peer, message)
    this.deliberate = code === ABORTED
    // Still connecting: the connection goes on (within the open timeout), so that the consumer's
    // peer hears the abort rather than wait for a stream that never comes.
    if (this.frames === undefined) this.abortedEarly = { code, message }
    this.fail(error, code)
  }

  private async connect(target: DialTarget): Promise<void> {
    const timeout = AbortSignal.timeout(this.options.openTimeoutMs ?? 30_000)
    try {
      const connection = await this.node.dial(target, { signal: timeout })
      this.peer = connection.remotePeer.toString()
      const stream = await connection.newStream(CHANNEL_PROTOCOL, { signal: timeout, maxOutboundStreams: 1 << 16 })
      if (this.finished) {
        if (this.abortedEarly !== undefined) this.tellAborted(stream, this.abortedEarly)
        else stream.abort(this.error ?? new Error('link closed'))
        return
      }
      this.frames = new FrameStream(stream, {
        frames: (frames) => this.onFrames(frames),
        malformed: (error) => this.onMalformed(error),
        remoteEnd: () => this.onRemoteEnd(),
        closed: (error, local) => this.onClosed(error, local),
        drain: () => this.handler?.writable(),
      })
      this.write(encodeOpen({ job: this.info.job, link: this.info.link.id, from: this.info.from.instance, to: this.info.to.instance }))
      const early = this.early
      this.early = []
      for (const frame of early) this.write(frame)
      if (this.endSent) this.frames.closeWrite()
      const onTimeout = (): void => this.fail(brokenBy(this.link, this.peer, `no credit from the consumer's peer within ${this.options.openTimeoutMs ?? 30_000} ms of opening`))
      if (this.granted === 0) timeout.addEventListener('abort', onTimeout, { once: true })
      this.opened.then(
        () => timeout.removeEventListener('abort', onTimeout),
        () => undefined,
      )
    } catch (error) {
      if (this.finished) return
      const reason = timeout.aborted
        ? `cannot open the stream within ${this.options.openTimeoutMs ?? 30_000} ms`
        : `cannot open the stream: ${error instanceof Error ? error.message : String(error)}`
      this.fail(brokenBy(this.link, this.peer, reason, error))
    }
  }

  /** Opens the channel on `stream` only to report an abort made while connecting: OPEN, then ERROR, then the reset. */
  private tellAborted(stream: Stream, aborted: { readonly code: string; readonly message: string }): void {
    const ignore = (): void => undefined
    const frames = new FrameStream(stream, { frames: ignore, malformed: ignore, remoteEnd: ignore, closed: ignore, drain: ignore })
    try {
      frames.write(encodeOpen({ job: this.info.job, link: this.info.link.id, from: this.info.from.instance, to: this.info.to.instance }))
    } catch {
      // the stream is going away already: the reset below is all there is to do
    }
    frames.reset(Object.assign(new Error(aborted.message), { code: aborted.code }))
  }

  private writeOrHold(frame: Uint8Array): void {
    if (this.frames === undefined) this.early.push(frame)
    else this.write(frame)
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

  private write(frame: Uint8Array): void {
    try {
      this.bytesOut += frame.byteLength
      this.frames!.write(frame)
    } catch (error) {
      this.fail(brokenBy(this.link, this.peer, `cannot write to the stream: ${error instanceof Error ? error.message : String(error)}`, error))
    }
  }

  private onFrames(frames: Frame[]): void {
    let credited = false
    for (const frame of frames) {
      if (this.finished) return
      switch (frame.kind) {
        case 'credit': {
          if (this.granted === 0) this.firstGrant = frame.records
          // Every grant after the first gives back credit for records the consumer took.
          else this.acknowledge(frame.records)
          this.granted += frame.records
          this.available += frame.records
          credited = true
          if (this.granted === frame.records) this.settleOpened.resolve()
          break
        }
        case 'reply':
          this.handler?.reply(frame.payload)
          break
        case 'error': {
          const remote = new RemoteLinkError(this.peer, frame.code, frame.message)
          this.deliberate = frame.code === ABORTED
          this.fail(brokenBy(this.link, this.peer, `the consumer's peer reported ${frame.code}: ${frame.message}`, remote))
          return
        }
        default: {
          const violation = new LinkProtocolError(this.link, this.peer, `the consumer's peer sent a ${frame.kind.toUpperCase()} frame (it may send only CREDIT, REPLY and ERROR)`)
          const error = brokenBy(this.link, this.peer, violation.message, violation)
          this.fail(error, error.code)
          return
        }
      }
    }
    if (credited && !this.finished) this.handler?.writable()
  }

  private onMalformed(error: FrameError): void {
    // The stream was reset already (and `onClosed` failed the link); this names the cause.
    this.logger.warn(`link ${this.link}: malformed frame from peer ${this.peer}: ${error.message}; stream reset`)
  }

  private onRemoteEnd(): void {
    if (this.endSent) return this.complete()
    this.fail(brokenBy(this.link, this.peer, "the consumer's peer closed the stream before the end"))
  }

  private onClosed(error: Error | undefined, local: boolean): void {
    if (this.finished) return
    if (error === undefined && this.endSent) return this.complete()
    this.fail(brokenBy(this.link, this.peer, describeClose(error, local), error))
  }

  /** END went and the consumer's peer closed its side after it: a clean end. */
  private complete(): void {
    if (this.finished) return
    this.finished = true
    this.handler?.closed(undefined)
  }

  /**
   * Fails the link; `code`, when given, means this side breaks it: the consumer's peer gets an
   * ERROR frame with that code (and the stream is reset), else the stream is just aborted.
   */
  private fail(error: LinkBrokenError, code?: string): void {
    if (this.finished) return
    this.finished = true
    this.error = error
    if (code !== undefined) this.frames?.reset(Object.assign(new Error(error.message), { code }))
    else this.frames?.stream.abort(error)
    this.early = []
    if (this.deliberate) this.logger.info(error.message)
    else this.logger.warn(error.message)
    this.settleOpened.reject(error)
    this.handler?.closed(error)
  }
}
