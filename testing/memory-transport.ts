// An in-memory frame-channel pair: both sides of one remote channel in one process, for fast logic tests of remote links without processes or sockets.

import { LinkBrokenError, RemoteLinkError, type FrameReceiver, type FrameReceiverHandler, type FrameSender, type FrameSenderHandler, type LaminaError } from '../kernel/index.js'

/** Options of `memoryFrameChannel`. All optional. */
export interface MemoryFrameChannelOptions {
  /** How errors name the link. @default 'memory' */
  readonly link?: string
  /** The producing peer, as the receiving side names it. @default 'producer' */
  readonly producer?: string
  /** The consuming peer, as the sending side names it. @default 'consumer' */
  readonly consumer?: string
  /** The largest DATA payload, in bytes. @default 16 MiB */
  readonly maxPayloadBytes?: number
}

/** Counters of the sending side. */
export interface MemorySenderStats {
  /** Records sent in DATA frames. */
  readonly sent: number
  /** Records the receiving side granted in all. */
  readonly granted: number
  /** DATA frames sent. */
  readonly frames: number
  /** Payload bytes sent in DATA frames. */
  readonly bytes: number
}

/** Counters of the receiving side. */
export interface MemoryReceiverStats {
  /** Records delivered in DATA frames. */
  readonly received: number
  /** Records of credit granted in all. */
  readonly granted: number
  /** REPLY frames sent. */
  readonly replies: number
}

/** The sending side of an in-memory frame channel. */
export interface MemoryFrameSender extends FrameSender {
  stats(): MemorySenderStats
}

/** The receiving side of an in-memory frame channel. */
export interface MemoryFrameReceiver extends FrameReceiver {
  stats(): MemoryReceiverStats
}

/** Both sides of one in-memory frame channel. */
export interface MemoryFrameChannel {
  readonly sender: MemoryFrameSender
  readonly receiver: MemoryFrameReceiver
  /** Breaks the link as a lost connection would: frames still in flight are lost, both sides fail with LinkBrokenError. */
  sever(reason?: string): void
  /** Resolves once every frame sent so far, in both directions, has been delivered (to a side that listens). */
  settled(): Promise<void>
}

/**
 * Two sides of one remote channel, joined in memory: what a transport does, without one. Frames
 * arrive in order, each in a later microtask than the call that sent it (never inside it, as
 * over a network); payloads are copied. Credit is counted in records: a DATA frame past the
 * credit granted throws RangeError at the sender (a transport would reset the stream). Abort and
 * `sever` fail both sides with LinkBrokenError; after END, `receiver.close()` ends the sender's
 * side cleanly.
 *
 * ```ts
 * const { sender, receiver } = memoryFrameChannel()
 * const out = remoteSender(sender, { info, deadLetter })
 * const into = remoteReceiver(receiver, { info, capacity: 16, codec: t.number, deadLetter })
 * out.send({ values: [1, 2, 3] })
 * out.end()
 * ```
 */
export function memoryFrameChannel(options: MemoryFrameChannelOptions = {}): MemoryFrameChannel {
  const link = options.link ?? 'memory'
  const producer = options.producer ?? 'producer'
  const consumer = options.consumer ?? 'consumer'
  const sender = new Sender(link, consumer, options.maxPayloadBytes ?? 16 * 1024 * 1024)
  const receiver = new Receiver(link, producer)
  sender.other = receiver
  receiver.other = sender
  return {
    sender,
    receiver,
    sever: (reason = 'the connection was lost') => {
      sender.severed(reason)
      receiver.severed(reason)
    },
    settled: async () => {
      while (sender.busy || receiver.busy) await new Promise<void>((resolve) => queueMicrotask(resolve))
    },
  }
}

/** Events for one side, delivered in order in a later microtask, once it listens. */
class Inbox<H> {
  private readonly queue: ((handler: H) => void)[] = []
  private scheduled = false
  handler: H | undefined

  get busy(): boolean {
    return this.queue.length > 0 && this.handler !== undefined
  }

  post(event: (handler: H) => void): void {
    this.queue.push(event)
    this.schedule()
  }

  listen(handler: H): void {
    if (this.handler !== undefined) throw new RangeError('a frame channel side has one handler: listen was called twice')
    this.handler = handler
    this.schedule()
  }

  /** Forgets what was not delivered yet (a lost connection). */
  drop(): void {
    this.queue.length = 0
  }

  private schedule(): void {
    if (this.scheduled || this.handler === undefined || this.queue.length === 0) return
    this.scheduled = true
    queueMicrotask(() => {
      this.scheduled = false
      // Events posted while delivering go in the same round, in order.
      while (this.queue.length > 0) this.queue.shift()!(this.handler!)
    })
  }
}

class Sender implements MemoryFrameSender {
  other!: Receiver
  readonly headroom = 0
  /** Nothing buffers in memory: never draining. */
  readonly draining = false
  readonly inbox = new Inbox<FrameSenderHandler>()
  private available = 0
  private granted = 0
  private sent = 0
  private frames = 0
  private bytes = 0
  private endSent = false
  private finished = false

  constructor(
    private readonly link: string,
    readonly peer: string,
    readonly maxPayloadBytes: number,
  ) {}

  get credit(): number {
    return this.finished || this.endSent ? 0 : this.available
  }

  get busy(): boolean {
    return this.inbox.busy
  }

  stats(): MemorySenderStats {
    return { sent: this.sent, granted: this.granted, frames: this.frames, bytes: this.bytes }
  }

  listen(handler: FrameSenderHandler): void {
    this.inbox.listen(handler)
  }

  data(payload: Uint8Array, records: number): void {
    if (this.finished) return
    if (!Number.isInteger(records) || records < 1 || records > this.credit) throw new RangeError(`link ${this.link}: a DATA frame of ${records} records with ${this.credit} credit`)
    if (payload.byteLength > this.maxPayloadBytes)
      throw new RangeError(`link ${this.link}: a payload of ${payload.byteLength} bytes, more than the ${this.maxPayloadBytes} a frame may`)
    this.available -= records
    this.sent += records
    this.frames++
    this.bytes += payload.byteLength
    const copy = new Uint8Array(payload)
    this.other.inbox.post((handler) => this.other.onData(handler, copy, records))
  }

  marker(payload: Uint8Array): void {
    if (this.finished || this.endSent) return
    const copy = new Uint8Array(payload)
    this.other.inbox.post((handler) => this.other.onMarker(handler, copy))
  }

  end(): void {
    if (this.finished || this.endSent) return
    this.endSent = true
    this.other.inbox.post((handler) => this.other.onEnd(handler))
  }

  abort(code: string, message: string): void {
    if (this.finished) return
    this.fail(new LinkBrokenError(this.link, this.peer, message))
    this.other.inbox.post((handler) => this.other.onError(handler, code, message))
  }

  onCredit(handler: FrameSenderHandler, records: number): void {
    if (this.finished) return
    this.available += records
    this.granted += records
    handler.writable()
  }

  onReply(handler: FrameSenderHandler, payload: Uint8Array): void {
    if (!this.finished) handler.reply(payload)
  }

  onClose(handler: FrameSenderHandler): void {
    if (this.finished) return
    if (!this.endSent) return this.fail(new LinkBrokenError(this.link, this.peer, "the consumer's peer closed the stream before the end"))
    this.finished = true
    handler.closed(undefined)
  }

  onError(_handler: FrameSenderHandler, code: string, message: string): void {
    this.fail(new LinkBrokenError(this.link, this.peer, `the consumer's peer reported ${code}: ${message}`, { cause: new RemoteLinkError(this.peer, code, message) }))
  }

  severed(reason: string): void {
    this.inbox.drop()
    this.fail(new LinkBrokenError(this.link, this.peer, reason))
  }

  private fail(error: LaminaError): void {
    if (this.finished) return
    this.finished = true
    this.inbox.post((handler) => handler.closed(error))
  }
}

class Receiver implements MemoryFrameReceiver {
  other!: Sender
  readonly inbox = new Inbox<FrameReceiverHandler>()
  private received = 0
  private granted = 0
  private replies = 0
  private ended = false
  private closed = false
  private failed = false

  constructor(
    private readonly link: string,
    readonly peer: string,
  ) {}

  get busy(): boolean {
    return this.inbox.busy
  }

  stats(): MemoryReceiverStats {
    return { received: this.received, granted: this.granted, replies: this.replies }
  }

  listen(handler: FrameReceiverHandler): void {
    this.inbox.listen(handler)
  }

  grant(records: number): void {
    if (!Number.isInteger(records) || records < 1) throw new RangeError(`link ${this.link}: a grant of ${records} records`)
    if (this.ended || this.failed) return
    this.granted += records
    this.other.inbox.post((handler) => this.other.onCredit(handler, records))
  }

  reply(payload: Uint8Array): boolean {
    if (this.failed || this.closed) return false
    this.replies++
    const copy = new Uint8Array(payload)
    this.other.inbox.post((handler) => this.other.onReply(handler, copy))
    return true
  }

  close(): void {
    if (this.closed || this.failed) return
    this.closed = true
    this.other.inbox.post((handler) => this.other.onClose(handler))
  }

  abort(code: string, message: string): void {
    if (this.failed) return
    this.fail(new LinkBrokenError(this.link, this.peer, message))
    this.other.inbox.post((handler) => this.other.onError(handler, code, message))
  }

  onData(handler: FrameReceiverHandler, payload: Uint8Array, records: number): void {
    if (this.failed || this.ended) return
    this.received += records
    handler.data(payload, records)
  }

  onMarker(handler: FrameReceiverHandler, payload: Uint8Array): void {
    if (!this.failed && !this.ended) handler.marker(payload)
  }

  onEnd(handler: FrameReceiverHandler): void {
    if (this.failed || this.ended) return
    this.ended = true
    handler.end()
  }

  onError(_handler: FrameReceiverHandler, code: string, message: string): void {
    this.fail(new LinkBrokenError(this.link, this.peer, `the producer's peer reported ${code}: ${message}`, { cause: new RemoteLinkError(this.peer, code, message) }))
  }

  severed(reason: string): void {
    this.inbox.drop()
    this.fail(new LinkBrokenError(this.link, this.peer, reason))
  }

  /** Fails this side (after END, nothing is reported: everything had arrived). */
  private fail(error: LaminaError): void {
    if (this.failed) return
    this.failed = true
    if (this.ended) return
    this.inbox.post((handler) => handler.closed(error))
  }
}
