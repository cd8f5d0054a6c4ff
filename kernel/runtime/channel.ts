// The in-memory channel: a bounded queue of batches with credit counted in records; telling a channel's ends apart.

import type { Batch, Channel, ChannelEnd, ChannelInfo, ChannelReceiver, ChannelSender } from '../contracts.js'
import { BatchQueue } from '../batch-queue.js'
import { JobAbortedError } from '../errors.js'

/**
 * A channel between two instances on one thread. The producer may send while fewer than
 * `capacity` records are queued; the consumer's `take` returns credit and wakes a waiting
 * producer. Memory per channel is bounded by the capacity plus one batch.
 */
export class LocalChannel implements Channel {
  private readonly batches = new BatchQueue()
  private ended = false
  private readable: (() => void) | undefined
  private writers: (() => void)[] = []
  maxQueued = 0
  records = 0

  constructor(
    readonly info: ChannelInfo,
    readonly capacity: number,
  ) {}

  send(batch: Batch): void {
    const n = batch.values.length
    if (n === 0) {
      // A marker takes no credit but keeps its place in the queue.
      if (batch.marker === undefined) return
      this.batches.push(batch)
      this.readable?.()
      return
    }
    this.batches.push(batch)
    this.records += n
    const queued = this.batches.records
    if (queued > this.maxQueued) this.maxQueued = queued
    if (queued === n) this.readable?.()
  }

  /** Records queued now. */
  get queued(): number {
    return this.batches.records
  }

  ready(): boolean {
    return this.batches.records < this.capacity
  }

  whenReady(signal?: AbortSignal): Promise<void> {
    if (this.ready()) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(new JobAbortedError(this.info.job, signal.reason))
      const onAbort = () => reject(new JobAbortedError(this.info.job, signal?.reason))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.writers.push(() => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      })
    })
  }

  end(): void {
    if (this.ended) return
    this.ended = true
    this.readable?.()
  }

  take(): Batch | 'end' | undefined {
    const batch = this.batches.shift()
    if (batch !== undefined) {
      if (this.writers.length > 0 && this.ready()) {
        const writers = this.writers
        this.writers = []
        for (const wake of writers) wake()
      }
      return batch
    }
    return this.ended ? 'end' : undefined
  }

  onReadable(fn: () => void): void {
    this.readable = fn
  }
}

/**
 * True when `end` can send (the sending end of a channel, or an in-memory channel).
 *
 * ```ts
 * channel: (ch, next) => { const inner = next(ch); return isChannelSender(inner) ? wrapChannel(inner, { send: (b) => { seen += b.values.length; inner.send(b) } }) : inner }
 * ```
 */
export function isChannelSender(end: ChannelEnd): end is ChannelSender {
  return typeof (end as Partial<ChannelSender>).send === 'function'
}

/** True when `end` can be taken from (the receiving end of a channel, or an in-memory channel). */
export function isChannelReceiver(end: ChannelEnd): end is ChannelReceiver {
  return typeof (end as Partial<ChannelReceiver>).take === 'function'
}

/** The sending end of an in-memory channel alone: what layers' channel hooks wrap on the producer's side. */
export function senderOf(channel: Channel): ChannelSender {
  return {
    info: channel.info,
    get queued() {
      return channel.queued
    },
    send: (batch) => channel.send(batch),
    ready: () => channel.ready(),
    whenReady: (signal) => channel.whenReady(signal),
    end: () => channel.end(),
  }
}

/** The receiving end of an in-memory channel alone: what layers' channel hooks wrap on the consumer's side. */
export function receiverOf(channel: Channel): ChannelReceiver {
  return {
    info: channel.info,
    get queued() {
      return channel.queued
    },
    take: () => channel.take(),
    onReadable: (fn) => channel.onReadable(fn),
  }
}
