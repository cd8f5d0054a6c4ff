// The consumer's half of remote channels: a registry that accepts channel streams, matches them to local receivers, decodes values and grants credit.

import './polyfill.js'
import type { Connection, Stream } from '@libp2p/interface'
import { BatchQueue } from '../../kernel/batch-queue.js'
import { acceptsAll, check, guardOf, renderProblem } from '../../kernel/codec.js'
import type { AnyCodec, Batch, Channel, ChannelInfo, Header, ReplyTo } from '../../kernel/contracts.js'
import { DecodeError, LaminaError, type Where } from '../../kernel/errors.js'
import { ABORTED, ChannelSideError, DuplicateChannelError, LinkProtocolError, RemoteLinkError, UnknownChannelError, type FrameError, type LinkBrokenError } from './errors.js'
import { encodeCredit, encodeReply, type DataFrame, type Frame } from './frames.js'
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

/** What a receiver needs: the kernel's RemoteEnd fields for the receiving side. */
export interface ReceiveSpec {
  readonly info: ChannelInfo
  /** Records this half holds: the credit granted to the sender. */
  readonly capacity: number
  /** The receiving port's codec: every value is decoded with it. */
  readonly codec: AnyCodec
  /** Records a value that fails the codec (`where.peer` names the sending peer). */
  readonly deadLetter: (where: Where, error: LaminaError, value: unknown) => void
  /** When set, only this peer id may open the channel. */
  readonly expectPeer?: string
}

/** Counters of a receiving half. */
export interface RemoteReceiverStats {
  readonly received: number
  readonly queued: number
  readonly maxQueued: number
  readonly granted: number
  readonly deadLetters: number
  readonly bytesIn: number
}

/** The receiving half: the kernel's Channel on the consumer's peer (`send`/`whenReady` are not used there). */
export interface RemoteReceiver extends Channel {
  /** The sending peer's id, once its stream arrived. */
  readonly peer: string | undefined
  /** Resolves when the sender's END arrived and every batch was taken; rejects with LinkBrokenError. */
  readonly done: Promise<void>
  readonly error: LinkBrokenError | undefined
  stats(): RemoteReceiverStats
  /** Tears the link down (ERROR frame to the sender, reset). Idempotent. */
  abort(reason?: unknown): void
}

/** Accepts channel streams on a peer and hands them to the receivers registered with `receive`. */
export interface ReceiverRegistry {
  /** Starts accepting `/lamina/channel/1.0.0` streams. */
  start(): Promise<void>
  /** Stops accepting; every open receiver fails with LinkBrokenError. Idempotent. */
  stop(): Promise<void>
  /** Registers the receiving half of a channel; a stream for it may arrive before or after. */
  receive(spec: ReceiveSpec): RemoteReceiver
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
 * const channel = registry.receive({ info, capacity: 4096, codec: t.string, deadLetter })
 * ```
 */
export function createReceiverRegistry(node: PeerNode, options: ReceiverRegistryOptions = {}): ReceiverRegistry {
  return new Registry(node, options)
}

interface Parked {
  readonly stream: IncomingStream
  readonly timer: NodeJS.Timeout
}

class Registry implements ReceiverRegistry {
  private readonly receivers = new Map<string, Receiver>()
  private readonly parked = new Map<string, Parked>()
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
    for (const receiver of [...this.receivers.values()]) receiver.abort('the consuming peer stopped its receivers')
    for (const stream of this.streams) stream.frames.reset(new RemoteStopError())
  }

  receive(spec: ReceiveSpec): RemoteReceiver {
    const key = channelKeyOf(spec.info)
    if (this.receivers.has(key)) throw new DuplicateChannelError(key)
    const receiver = new Receiver(spec, key, this.logger, () => this.receivers.delete(key))
    this.receivers.set(key, receiver)
    if (this.stopped) receiver.abort('the consuming peer stopped its receivers')
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

  private attach(incoming: IncomingStream, receiver: Receiver): void {
    if (receiver.spec.expectPeer !== undefined && receiver.spec.expectPeer !== incoming.peer) {
      incoming.violation(new LinkProtocolError(receiver.key, incoming.peer, `only peer ${receiver.spec.expectPeer} may open this channel`))
      return
    }
    if (!receiver.attach(incoming)) incoming.violation(new DuplicateChannelError(receiver.key))
  }
}

/** Sent to senders whose streams are reset because this peer stopped receiving. */
class RemoteStopError extends Error {
  readonly code = 'ERR_RECEIVER_STOPPED'
  constructor() {
    super('the consuming peer stopped receiving channels')
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

class Receiver implements RemoteReceiver {
  error: LinkBrokenError | undefined
  readonly done: Promise<void>
  private incoming: IncomingStream | undefined
  private readonly batches = new BatchQueue()
  private maxQueued = 0
  private received = 0
  private granted = 0
  private toReturn = 0
  private deadLetters = 0
  private ended = false
  private finished = false
  /** Failed because a job stopped on purpose (here, or on the other peer): logged as info, not a warning. */
  private deliberate = false
  private readable: (() => void) | undefined
  private readonly guard: ((value: unknown) => boolean) | undefined
  private readonly returnAt: number
  private settleDone!: { resolve(): void; reject(error: unknown): void }
  /** Requests delivered here whose reply has not gone back yet. */
  private unanswered = 0
  /** END arrived while requests were unanswered: our side closes once they are (or after `REPLY_GRACE_MS`). */
  private closeWhenAnswered: NodeJS.Timeout | undefined

  constructor(
    readonly spec: ReceiveSpec,
    readonly key: string,
    private readonly logger: Logger,
    private readonly release: () => void,
  ) {
    this.guard = acceptsAll(spec.codec) ? undefined : guardOf(spec.codec)
    // Credit goes back in chunks of a quarter of the capacity, or whenever the queue empties.
    this.returnAt = Math.max(1, Math.floor(spec.capacity / 4))
    this.done = new Promise<void>((resolve, reject) => (this.settleDone = { resolve, reject }))
    this.done.catch(() => undefined)
  }

  get info(): ChannelInfo {
    return this.spec.info
  }

  get peer(): string | undefined {
    return this.incoming?.peer
  }

  get queued(): number {
    return this.batches.records
  }

  stats(): RemoteReceiverStats {
    return { received: this.received, queued: this.batches.records, maxQueued: this.maxQueued, granted: this.granted, deadLetters: this.deadLetters, bytesIn: this.incoming?.frames.bytesIn ?? 0 }
  }

  send(): void {
    throw new ChannelSideError(this.key, 'receiver', 'send')
  }

  ready(): boolean {
    return false
  }

  whenReady(): Promise<void> {
    return Promise.reject(new ChannelSideError(this.key, 'receiver', 'whenReady'))
  }

  end(): void {
    // Only the producer ends a channel; the consumer's half has nothing to end.
  }

  take(): Batch | 'end' | undefined {
    const batch = this.batches.shift()
    if (batch !== undefined) {
      const n = batch.values.length
      this.giveBack(n)
      if (this.ended && this.batches.records === 0) this.complete()
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
    const error = brokenBy(this.key, this.peer ?? '(not connected)', `aborted on this peer${reason === undefined ? '' : `: ${reason instanceof Error ? reason.message : String(reason)}`}`, reason)
    this.deliberate = true
    this.fail(error)
    // Tell the producer's peer the job stopped here on purpose.
    this.incoming?.frames.reset(Object.assign(new Error(error.message), { code: ABORTED }))
  }

  /** Takes over a matched stream: returns false when one is already attached. */
  attach(incoming: IncomingStream): boolean {
    if (this.incoming !== undefined) return false
    this.incoming = incoming
    incoming.receiver = this
    if (this.finished) {
      incoming.frames.reset(this.error ?? new Error('receiver closed'))
      return true
    }
    const early = incoming.takeEarly()
    this.granted = this.spec.capacity
    this.writeCredit(this.spec.capacity)
    if (early.length > 0) this.onFrames(early)
    if (incoming.remoteEnded) this.remoteEnd()
    return true
  }

  onFrames(frames: Frame[]): void {
    let arrived = false
    for (const frame of frames) {
      if (this.finished) return
      switch (frame.kind) {
        case 'data':
          if (this.ended) return this.violation('DATA after END')
          if (this.received + frame.values.length > this.granted) return this.violation(`${frame.values.length} records arrived with ${this.granted - this.received} credit left`)
          this.received += frame.values.length
          if (this.deliver(frame)) arrived = true
          break
        case 'marker':
          if (this.ended) return this.violation('MARKER after END')
          this.batches.push({ values: [], marker: frame.marker })
          arrived = true
          break
        case 'end':
          if (this.ended) return this.violation('a second END')
          this.ended = true
          arrived = true
          // Nothing more to read: close our side too, so the sender knows END arrived; replies
          // still owed go first (for at most REPLY_GRACE_MS).
          if (this.unanswered === 0) this.closeWrite()
          else {
            this.closeWhenAnswered = setTimeout(() => this.closeWrite(), REPLY_GRACE_MS)
            this.closeWhenAnswered.unref?.()
          }
          if (this.batches.records === 0) this.complete()
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
    if (arrived) this.readable?.()
  }

  remoteEnd(): void {
    if (!this.ended) this.fail(brokenBy(this.key, this.peer ?? '?', "the producer's peer closed the stream before END"))
  }

  closed(error: Error | undefined, local: boolean): void {
    // After END everything has arrived: how the stream goes away no longer matters.
    if (this.finished || this.ended) return
    this.fail(brokenBy(this.key, this.peer ?? '?', describeClose(error, local), error))
  }

  drain(): void {
    if (this.toReturn > 0) this.giveBack(0)
  }

  /** Decodes a batch with the port's codec; dead-letters what fails. Returns true when something was queued. */
  private deliver(frame: DataFrame): boolean {
    let values = frame.values
    let headers = frame.headers as readonly (Header | undefined)[] | undefined
    const requests = frame.requests
    if (requests !== undefined) {
      // A request's reply goes back on this stream, in a REPLY frame naming its id.
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
    const batch: Batch = headers === undefined ? { values } : { values, headers }
    this.batches.push(batch)
    if (this.batches.records > this.maxQueued) this.maxQueued = this.batches.records
    return true
  }

  private decode(value: unknown): { ok: true; value: unknown } | { ok: false; error: DecodeError } {
    let details: string[]
    try {
      const result = this.spec.codec.decode(value)
      if (result._tag === 'Right') return { ok: true, value: result.right }
      details = (check(this.spec.codec, value) ?? [{ path: '', expected: this.spec.codec.name, actual: value }]).map(renderProblem)
    } catch (error) {
      // A codec that throws refuses the value like one that fails.
      details = [`the codec threw: ${error instanceof Error ? error.message : String(error)}`]
    }
    const info = this.spec.info
    const where: Where = { operator: info.to.operator, port: info.to.port, instance: info.to.instance, peer: this.peer }
    this.deadLetters++
    const error = new DecodeError(where, details)
    try {
      this.spec.deadLetter(where, error, value)
    } catch (thrown) {
      this.logger.error(`dead letter callback of ${this.key} threw: ${thrown instanceof Error ? thrown.message : String(thrown)}`)
    }
    return { ok: false, error }
  }

  /**
   * The reply path of request `id`: writes its REPLY frame (once). A value JSON cannot carry
   * becomes a failure that says so; a reply after the link is gone has nowhere to go.
   */
  private replier(id: number): ReplyTo {
    this.unanswered++
    let answered = false
    return (outcome) => {
      if (answered) return
      answered = true
      this.unanswered--
      let frame: Uint8Array
      try {
        frame = encodeReply(outcome.ok ? { request: id, ok: true, value: outcome.value } : { request: id, ...failureOf(outcome.error) })
      } catch (error) {
        frame = encodeReply({ request: id, ok: false, code: 'ERR_UNENCODABLE', message: `the reply cannot be sent to peer ${this.peer ?? '?'}: ${error instanceof Error ? error.message : String(error)}` })
      }
      const frames = this.incoming?.frames
      if (frames !== undefined && frames.writable && this.error === undefined) {
        try {
          frames.write(frame)
        } catch (error) {
          this.logger.info(`link ${this.key}: reply to request ${id} not sent: ${error instanceof Error ? error.message : String(error)}`)
        }
      }
      if (this.unanswered === 0 && this.closeWhenAnswered !== undefined) this.closeWrite()
    }
  }

  /** Closes our side of the stream after END (once every owed reply went, or the grace ran out). */
  private closeWrite(): void {
    clearTimeout(this.closeWhenAnswered)
    this.closeWhenAnswered = undefined
    this.incoming?.frames.closeWrite()
  }

  /** Returns `n` records of credit, in chunks (or at once when the queue is empty). */
  private giveBack(n: number): void {
    this.toReturn += n
    if (this.toReturn === 0 || this.ended || this.finished) return
    if (this.toReturn < this.returnAt && this.batches.records > 0) return
    const frames = this.incoming?.frames
    if (frames === undefined || frames.needsDrain || !frames.writable) return
    const records = this.toReturn
    this.toReturn = 0
    this.granted += records
    this.writeCredit(records)
  }

  private writeCredit(records: number): void {
    try {
      this.incoming!.frames.write(encodeCredit(records))
    } catch (error) {
      this.fail(brokenBy(this.key, this.peer ?? '?', `cannot write credit: ${error instanceof Error ? error.message : String(error)}`, error))
    }
  }

  private violation(reason: string): void {
    const problem = new LinkProtocolError(this.key, this.peer ?? '?', reason)
    this.fail(brokenBy(this.key, this.peer ?? '?', problem.message, problem))
    this.incoming?.violation(problem)
  }

  private complete(): void {
    if (this.finished) return
    this.finished = true
    this.release()
    this.settleDone.resolve()
  }

  private fail(error: LinkBrokenError): void {
    if (this.finished) return
    this.finished = true
    this.error = error
    clearTimeout(this.closeWhenAnswered)
    this.release()
    if (this.deliberate) this.logger.info(error.message)
    else this.logger.warn(error.message)
    this.settleDone.reject(error)
    this.readable?.()
  }
}

/** How long a receiver that got END keeps its side open for replies still owed. */
const REPLY_GRACE_MS = 30_000

/** A failed request's code and message, as a REPLY frame carries them. */
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
