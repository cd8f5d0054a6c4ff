// The in-memory channel: a bounded queue of batches with credit counted in records.

import type { Batch, Channel, ChannelInfo } from '../contracts.js'
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

  constructor(readonly info: ChannelInfo, readonly capacity: number) {}

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
