// The consumer's half of remote channels at the byte level: a registry that accepts channel streams, matches them to local FrameReceivers, checks and grants credit.

import './polyfill.js'
import type { Connection, Stream } from '@libp2p/interface'
import type { ChannelInfo, FrameReceiver, FrameReceiverHandler } from '../../kernel/index.js'
import { ABORTED, DuplicateChannelError, LinkProtocolError, RemoteLinkError, RemoteStopError, UnknownChannelError, type FrameError, type LinkBrokenError } from './errors.js'
import { encodeCredit, encodeReply, type Frame } from './frames.js'
import type { Logger } from './logger.js'
import type { PeerNode } from './node.js'
import { brokenBy, CHANNEL_PROTOCOL, channelKey, channelKeyOf, describeClose, FrameStream } from './remote-channel.js'

/** A problem with one incoming channel stream: its stream was reset, the node serves on. */
export type StreamProblem = FrameError | LinkProtocolError | UnknownChannelError | DuplicateChannelError

/** Where a stream problem happened. */
export interface StreamProblemContext {
  /** The sending peer. */
  readonly peer: string
  /** The channel, when the stream had opened one. */
  readonly channel?: string
}

/** Options of `createReceiverRegistry`. */
export interface ReceiverRegistryOptions {
  /** Milliseconds a stream may wait for its channel's receiver to be registered. @default 30000 */
  readonly matchTimeoutMs?: number
  /** Called for every stream reset because of a malformed frame or a protocol violation. */
  readonly onStreamProblem?: (problem: StreamProblem, context: StreamProblemContext) => void
  /** @default the node's logger */
  readonly logger?: Logger
  /** Largest frame accepted, in bytes. @default 16 MiB */
  readonly maxFrameBytes?: number
  /** Most channel streams one connection may carry into this peer. @default 65536 */
  readonly maxInboundStreams?: number
}

/** What a receiver is registered for. */
export interface ReceiveSpec {
  readonly info: ChannelInfo
  /** When set, only this peer id may open the channel. */
  readonly expectPeer?: string
}

/** Counters of a receiving half. */
export interface FrameReceiverStats {
  /** Records that arrived in DATA frames. */
  readonly received: number
  /** Records of credit granted to the sender (written to the stream). */
  readonly granted: number
  readonly bytesIn: number
}

/** The receiving half of a channel over a libp2p stream. */
export interface StreamFrameReceiver extends FrameReceiver {
  readonly error: LinkBrokenError | undefined
  stats(): FrameReceiverStats
}

/** Accepts channel streams on a peer and hands them to the receivers registered with `receive`. */
export interface ReceiverRegistry {
  /** Starts accepting `/lamina/channel/1.0.0` streams. */
  start(): Promise<void>
  /** Stops accepting; every open receiver fails with LinkBrokenError. Idempotent. */
  stop(): Promise<void>
  /** Registers the receiving half of a channel; a stream for it may arrive before or after. */
  receive(spec: ReceiveSpec): StreamFrameReceiver
  /** Receivers registered and not yet finished. */
  readonly active: number
}

/**
 * A registry of receiving halves on the consumer's peer. A stream is matched to its receiver by
 * (job, link id, from instance, to instance) from its OPEN frame; a stream whose receiver is not
 * registered yet waits up to `matchTimeoutMs`. A malformed frame or a protocol violation resets
 * that stream only, and is reported to `onStreamProblem`.
 *
 * ```ts
 * const registry = createReceiverRegistry(node)
 * await registry.start()
 * const channel = remoteReceiver(registry.receive({ info }), { info, capacity: 4096, codec: t.string, deadLetter })
 * ```
 */
export function createReceiverRegistry(node: PeerNode, options: ReceiverRegistryOptions = {}): ReceiverRegistry {
  return new Registry(node, options)
}

interface Parked {
  readonly stream: IncomingStream
  readonly timer: NodeJS.Timeout
}

/** A receiver aborted before its stream arrived: the stream, when it comes, hears why. */
interface Aborted {
  readonly error: Error & { readonly code: string }
  readonly timer: NodeJS.Timeout
}

class Registry implements ReceiverRegistry {
  private readonly receivers = new Map<string, Receiver>()
  private readonly parked = new Map<string, Parked>()
  private readonly aborted = new Map<string, Aborted>()
  private readonly streams = new Set<IncomingStream>()
  private started = false
  private stopped = false
  readonly logger: Logger

  constructor(
    private readonly node: PeerNode,
    readonly options: ReceiverRegistryOptions,
  ) {
    this.logger = options.logger ?? node.logger
  }

  get active(): number {
    return this.receivers.size
  }

  async start(): Promise<void> {
    if (this.started) return
    this.started = true
    await this.node.libp2p.handle(CHANNEL_PROTOCOL, (stream, connection) => this.accept(stream, connection), {
      maxInboundStreams: this.options.maxInboundStreams ?? 1 << 16,
      maxOutboundStreams: this.options.maxInboundStreams ?? 1 << 16,
    })
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.started && !this.node.stopped) await this.node.libp2p.unhandle(CHANNEL_PROTOCOL).catch(() => undefined)
    for (const { stream, timer } of this.parked.values()) {
      clearTimeout(timer)
      stream.frames.reset(new RemoteStopError())
    }
    this.parked.clear()
    for (const { timer } of this.aborted.values()) clearTimeout(timer)
    this.aborted.clear()
    for (const receiver of [...this.receivers.values()]) receiver.abort(ABORTED, 'aborted on this peer: the consuming peer stopped its receivers')
    for (const stream of this.streams) stream.frames.reset(new RemoteStopError())
  }

  receive(spec: ReceiveSpec): StreamFrameReceiver {
    const key = channelKeyOf(spec.info)
    if (this.receivers.has(key)) throw new DuplicateChannelError(key)
    this.forgetAborted(key)
    const receiver: Receiver = new Receiver(spec, key, this.logger, () => this.release(key, receiver))
    this.receivers.set(key, receiver)
    if (this.stopped) receiver.abort(ABORTED, 'aborted on this peer: the consuming peer stopped its receivers')
    const parked = this.parked.get(key)
    if (parked !== undefined) {
      this.parked.delete(key)
      clearTimeout(parked.timer)
      this.attach(parked.stream, receiver)
    }
    return receiver
  }

  /** Reports a stream reset for a malformed frame or a protocol violation. */
  problem(problem: StreamProblem, context: StreamProblemContext): void {
    this.logger.warn(`channel stream from peer ${context.peer}${context.channel === undefined ? '' : ` (channel ${context.channel})`} reset: ${problem.message}`)
    try {
      this.options.onStreamProblem?.(problem, context)
    } catch (error) {
      this.logger.error(`onStreamProblem threw: ${error instanceof Error ? error.message : String(error)}`)
    }
  }

  private accept(stream: Stream, connection: Connection): void {
    if (this.stopped) {
      stream.abort(new RemoteStopError())
      return
    }
    const incoming = new IncomingStream(stream, connection.remotePeer.toString(), this)
    this.streams.add(incoming)
    incoming.onGone = () => {
      this.streams.delete(incoming)
      if (incoming.key !== undefined && this.parked.get(incoming.key)?.stream === incoming) {
        clearTimeout(this.parked.get(incoming.key)!.timer)
        this.parked.delete(incoming.key)
      }
    }
  }

  /** Called by an incoming stream once its OPEN frame arrived. */
  opened(incoming: IncomingStream, key: string): void {
    const receiver = this.receivers.get(key)
    if (receiver !== undefined) {
      this.attach(incoming, receiver)
      return
    }
    const aborted = this.aborted.get(key)
    if (aborted !== undefined) {
      this.forgetAborted(key)
      incoming.frames.reset(aborted.error)
      return
    }
    if (this.parked.has(key)) {
      incoming.violation(new DuplicateChannelError(key))
      return
    }
    const waitMs = this.options.matchTimeoutMs ?? 30_000
    const timer = setTimeout(() => {
      this.parked.delete(key)
      incoming.violation(new UnknownChannelError(key, incoming.peer, waitMs))
    }, waitMs)
    timer.unref()
    this.parked.set(key, { stream: incoming, timer })
  }

  /**
   * A receiver is done (END, or a failure). One aborted before its stream arrived is remembered
   * for as long as a stream may wait for its receiver: the producer's peer then hears the abort's
   * code and message, not that nobody receives the channel.
   */
  private release(key: string, receiver: Receiver): void {
    if (this.receivers.get(key) === receiver) this.receivers.delete(key)
    if (receiver.abortedWith === undefined || receiver.peer !== undefined || this.stopped) return
    this.forgetAborted(key)
    const timer = setTimeout(() => this.aborted.delete(key), this.options.matchTimeoutMs ?? 30_000)
    timer.unref()
    this.aborted.set(key, { error: receiver.abortedWith, timer })
  }

  private forgetAborted(key: string): void {
    const aborted = this.aborted.get(key)
    if (aborted === undefined) return
    clearTimeout(aborted.timer)
    this.aborted.delete(key)
  }

  private attach(incoming: IncomingStream, receiver: Receiver): void {
    if (receiver.spec.expectPeer !== undefined && receiver.spec.expectPeer !== incoming.peer) {
      incoming.violation(new LinkProtocolError(receiver.key, incoming.peer, `only peer ${receiver.spec.expectPeer} may open this channel`))
      return
    }
    if (!receiver.attach(incoming)) incoming.violation(new DuplicateChannelError(receiver.key))
  }
}

/** One incoming channel stream, before and after it is matched to a receiver. */
class IncomingStream {
  readonly frames: FrameStream
  key: string | undefined
  receiver: Receiver | undefined
  onGone: () => void = () => undefined
  /** Frames that arrived after OPEN while the stream waited for its receiver (only END is legal then). */
  private early: Frame[] = []
  private gone = false
  /** The sender closed its writing end. */
  remoteEnded = false

  constructor(
    stream: Stream,
    readonly peer: string,
    private readonly registry: Registry,
  ) {
    this.frames = new FrameStream(
      stream,
      {
        frames: (frames) => this.onFrames(frames),
        malformed: (error) => this.registry.problem(error, { peer, channel: this.key }),
        remoteEnd: () => {
          this.remoteEnded = true
          if (this.receiver !== undefined) this.receiver.remoteEnd()
          else if (this.key === undefined) this.violation(new LinkProtocolError('?', peer, 'the stream ended before its OPEN frame'))
        },
        closed: (error, local) => this.finish(error, local),
        drain: () => this.receiver?.drain(),
      },
      { maxFrameBytes: registry.options.maxFrameBytes },
    )
  }

  /** Frames held while waiting for a receiver; taken once by the receiver. */
  takeEarly(): Frame[] {
    const early = this.early
    this.early = []
    return early
  }

  /** Resets the stream for a protocol problem, and reports it. */
  violation(problem: StreamProblem): void {
    this.registry.problem(problem, { peer: this.peer, channel: this.key })
    this.frames.reset(problem)
  }

  private onFrames(frames: Frame[]): void {
    let i = 0
    if (this.key === undefined) {
      const first = frames[0]!
      if (first.kind !== 'open') return this.violation(new LinkProtocolError('?', this.peer, `the first frame is ${first.kind.toUpperCase()}, not OPEN`))
      this.key = channelKey(first.job, first.link, first.from, first.to)
      i = 1
      this.registry.opened(this, this.key)
      if (this.gone) return
    }
    const rest = i === 0 ? frames : frames.slice(i)
    if (rest.length === 0) return
    if (this.receiver !== undefined) this.receiver.onFrames(rest)
    else {
      for (const frame of rest) {
        if (frame.kind === 'end' || frame.kind === 'error') this.early.push(frame)
        else return this.violation(new LinkProtocolError(this.key, this.peer, `${frame.kind.toUpperCase()} frame before any credit was granted`))
      }
    }
  }

  private finish(error: Error | undefined, local: boolean): void {
    if (this.gone) return
    this.gone = true
    this.onGone()
    this.receiver?.closed(error, local)
  }
}

class Receiver implements StreamFrameReceiver {
  error: LinkBrokenError | undefined
  /** What the producer's peer hears after `abort`: its code and message. */
  abortedWith: (Error & { readonly code: string }) | undefined
  private incoming: IncomingStream | undefined
  private handler: FrameReceiverHandler | undefined
  /** Deliveries that happened before `listen`, in order. */
  private held: ((handler: FrameReceiverHandler) => void)[] = []
  private received = 0
  /** Credit written to the stream: the sender may have sent this many records in all. */
  private granted = 0
  /** Credit granted by the user and not written yet (no stream yet, or waiting for drain). */
  private owed = 0
  /** END arrived: everything did; only replies still go out. */
  private ended = false
  private failed = false
  /** Failed because a job stopped on purpose (here, or on the other peer): logged as info, not a warning. */
  private deliberate = false

  constructor(
    readonly spec: ReceiveSpec,
    readonly key: string,
    private readonly logger: Logger,
    private readonly release: () => void,
  ) {}

  get peer(): string | undefined {
    return this.incoming?.peer
  }

  stats(): FrameReceiverStats {
    return { received: this.received, granted: this.granted, bytesIn: this.incoming?.frames.bytesIn ?? 0 }
  }

  listen(handler: FrameReceiverHandler): void {
    this.handler = handler
    const held = this.held
    this.held = []
    for (const deliver of held) deliver(handler)
  }

  grant(records: number): void {
    if (!Number.isInteger(records) || records < 1) throw new RangeError(`link ${this.key}: a grant of ${records} records`)
    if (this.ended || this.failed) return
    this.owed += records
    this.writeCredit()
  }

  reply(payload: Uint8Array): boolean {
    const frames = this.incoming?.frames
    if (this.failed || frames === undefined || !frames.writable) return false
    try {
      frames.write(encodeReply(payload))
      return true
    } catch (error) {
      this.logger.info(`link ${this.key}: a reply was not sent: ${error instanceof Error ? error.message : String(error)}`)
      return false
    }
  }

  close(): void {
    this.incoming?.frames.closeWrite()
  }

  abort(code: string, message: string): void {
    if (this.failed) return
    const error = brokenBy(this.key, this.peer ?? '(not connected)', message)
    this.deliberate = code === ABORTED
    this.abortedWith = Object.assign(new Error(error.message), { code })
    this.fail(error)
    this.incoming?.frames.reset(this.abortedWith)
  }

  /** Takes over a matched stream: returns false when one is already attached. */
  attach(incoming: IncomingStream): boolean {
    if (this.incoming !== undefined) return false
    this.incoming = incoming
    incoming.receiver = this
    if (this.failed) {
      incoming.frames.reset(this.abortedWith ?? this.error ?? new Error('receiver closed'))
      return true
    }
    const early = incoming.takeEarly()
    this.writeCredit()
    if (early.length > 0) this.onFrames(early)
    if (incoming.remoteEnded) this.remoteEnd()
    return true
  }

  onFrames(frames: Frame[]): void {
    for (const frame of frames) {
      if (this.failed) return
      switch (frame.kind) {
        case 'data': {
          if (this.ended) return this.violation('DATA after END')
          if (this.received + frame.records > this.granted) return this.violation(`${frame.records} records arrived with ${this.granted - this.received} credit left`)
          this.received += frame.records
          const { payload, records } = frame
          this.deliver((handler) => handler.data(payload, records))
          break
        }
        case 'marker': {
          if (this.ended) return this.violation('MARKER after END')
          const payload = frame.payload
          this.deliver((handler) => handler.marker(payload))
          break
        }
        case 'end':
          if (this.ended) return this.violation('a second END')
          this.ended = true
          this.release()
          this.deliver((handler) => handler.end())
          break
        case 'error': {
          const remote = new RemoteLinkError(this.peer ?? '?', frame.code, frame.message)
          this.deliberate = frame.code === ABORTED
          this.fail(brokenBy(this.key, this.peer ?? '?', `the producer's peer reported ${frame.code}: ${frame.message}`, remote))
          return
        }
        default:
          return this.violation(`unexpected ${frame.kind.toUpperCase()} frame from the producer's peer`)
      }
    }
  }

  remoteEnd(): void {
    if (!this.ended) this.fail(brokenBy(this.key, this.peer ?? '?', "the producer's peer closed the stream before END"))
  }

  closed(error: Error | undefined, local: boolean): void {
    // After END everything has arrived: how the stream goes away no longer matters.
    if (this.failed || this.ended) return
    this.fail(brokenBy(this.key, this.peer ?? '?', describeClose(error, local), error))
  }

  drain(): void {
    this.writeCredit()
  }

  private deliver(fn: (handler: FrameReceiverHandler) => void): void {
    if (this.handler !== undefined) fn(this.handler)
    else this.held.push(fn)
  }

  /** Writes the credit owed, unless the stream is missing or must drain first (`drain` comes back here). */
  private writeCredit(): void {
    const frames = this.incoming?.frames
    if (this.owed === 0 || frames === undefined || frames.needsDrain || !frames.writable || this.ended || this.failed) return
    const records = this.owed
    this.owed = 0
    this.granted += records
    try {
      frames.write(encodeCredit(records))
    } catch (error) {
      this.fail(brokenBy(this.key, this.peer ?? '?', `cannot write credit: ${error instanceof Error ? error.message : String(error)}`, error))
    }
  }

  private violation(reason: string): void {
    const problem = new LinkProtocolError(this.key, this.peer ?? '?', reason)
    this.fail(brokenBy(this.key, this.peer ?? '?', problem.message, problem))
    this.incoming?.violation(problem)
  }

  /** Fails the link (unless END arrived: then only replies were still possible, and they stop). */
  private fail(error: LinkBrokenError): void {
    if (this.failed) return
    this.failed = true
    if (this.ended) return
    this.error = error
    this.release()
    if (this.deliberate) this.logger.info(error.message)
    else this.logger.warn(error.message)
    this.deliver((handler) => handler.closed(error))
  }
}
