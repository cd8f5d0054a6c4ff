// The in-memory channel: a bounded queue of batches with credit counted in records.

import type { Batch, Channel, ChannelInfo } from '../contracts.js'
import { JobAbortedError } from '../errors.js'

/**
 * A channel between two instances on one thread. The producer may send while fewer than
 * `capacity` records are queued; the consumer's `take` returns credit and wakes a waiting
 * producer. Memory per channel is bounded by the capacity plus one batch.
 */
export class LocalChannel implements Channel {
  private readonly batches: Batch[] = []
  private head = 0
  private ended = false
  private readable: (() => void) | undefined
  private writers: (() => void)[] = []
  queued = 0
  maxQueued = 0
  records = 0

  constructor(readonly info: ChannelInfo, readonly capacity: number) {}

  send(batch: Batch): void {
    const n = batch.values.length
    if (n === 0) return
    this.batches.push(batch)
    this.queued += n
    this.records += n
    if (this.queued > this.maxQueued) this.maxQueued = this.queued
    if (this.queued === n) this.readable?.()
  }

  ready(): boolean {
    return this.queued < this.capacity
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
    if (this.head < this.batches.length) {
      const batch = this.batches[this.head]!
      this.batches[this.head++] = EMPTY
      if (this.head > 64 && this.head * 2 > this.batches.length) {
        this.batches.splice(0, this.head)
        this.head = 0
      }
      this.queued -= batch.values.length
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

const EMPTY: Batch = Object.freeze({ values: Object.freeze([]) })
