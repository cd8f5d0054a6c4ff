// A fake channel for unit tests: an in-memory Channel that records what a producer sent and lets the test feed a consumer and control credit.

import { JobAbortedError, type Batch, type Channel, type ChannelInfo, type Header, type Link, type Marker } from '../kernel/index.js'
import { FakeChannelError } from './errors.js'

/** Options of `FakeChannel`. All optional. */
export interface FakeChannelOptions {
  /** What the channel joins. @default `channelInfo()` */
  readonly info?: ChannelInfo
  /**
   * Records the producer may send before `ready()` turns false; the test adds more with `grant`.
   * Markers take none. @default Infinity (never full)
   */
  readonly credit?: number
  /**
   * Whatever the producer sends (and its `end`) is also queued for the consumer, so a wrapper's
   * `send` can be checked against its `take`. @default false
   */
  readonly loopback?: boolean
}

/** What a fake channel saw its producer do, in order. */
export type SentItem = { readonly batch: Batch } | { readonly end: true }

/**
 * An in-memory `Channel` under the test's control, for unit tests of code that sends into or takes
 * from a channel (a layer's channel hook, an operator driver). The producer side is recorded in
 * `sent`; the consumer side takes only what the test fed with `feed`, `feedMarker` and `feedEnd`
 * (or, with `loopback`, what was sent); credit is what the test granted.
 *
 * ```ts
 * const fake = new FakeChannel({ credit: 2 })
 * const wrapped = myLayer.channel!(fake, (c) => c)
 * wrapped.send({ values: [1, 2] })
 * expect(wrapped.ready()).toBe(false)
 * fake.grant(2)
 * fake.feed([3]).feedMarker({ kind: 'checkpoint', id: 1 }).feedEnd()
 * expect(wrapped.take()).toEqual({ values: [3] })
 * ```
 */
export class FakeChannel implements Channel {
  readonly info: ChannelInfo
  /** Everything the producer did, in order: each batch it sent (markers included) and its end. */
  readonly sent: SentItem[] = []
  private readonly inbox: Batch[] = []
  private inboxEnded = false
  private sentEnd = false
  private credit: number
  private readable: (() => void) | undefined
  private waiters: (() => void)[] = []
  private readonly loopback: boolean

  constructor(options: FakeChannelOptions = {}) {
    this.info = options.info ?? channelInfo()
    this.credit = options.credit ?? Number.POSITIVE_INFINITY
    if (!(this.credit >= 0)) throw new FakeChannelError(this.name, `credit must be zero or more, got ${this.credit}`)
    this.loopback = options.loopback ?? false
  }

  /** The channel as errors name it: `link from#i->to#j`. */
  get name(): string {
    return `${this.info.link.id} ${this.info.from.instance}->${this.info.to.instance}`
  }

  // --- the producer's side -----------------------------------------------------------------------

  send(batch: Batch): void {
    if (this.sentEnd) throw new FakeChannelError(this.name, 'send after end')
    this.sent.push({ batch })
    this.credit -= batch.values.length
    if (this.loopback) this.enqueue(batch)
  }

  ready(): boolean {
    return this.credit > 0
  }

  whenReady(signal?: AbortSignal): Promise<void> {
    if (this.ready()) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(new JobAbortedError(this.info.job, signal.reason))
      const onAbort = (): void => reject(new JobAbortedError(this.info.job, signal?.reason))
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(() => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      })
    })
  }

  end(): void {
    if (this.sentEnd) return
    this.sentEnd = true
    this.sent.push({ end: true })
    if (this.loopback) this.feedEnd()
  }

  /** True once the producer called `end`. */
  get ended(): boolean {
    return this.sentEnd
  }

  /** The values the producer sent, in order, across its batches (markers left out). */
  sentValues(): unknown[] {
    return this.sent.flatMap((item) => ('batch' in item ? item.batch.values : []))
  }

  /** The markers the producer sent, in order. */
  sentMarkers(): Marker[] {
    return this.sent.flatMap((item) => ('batch' in item && item.batch.marker !== undefined ? [item.batch.marker] : []))
  }

  /** Gives the producer credit for `records` more records, waking a producer waiting in `whenReady`. */
  grant(records: number): this {
    if (!(records >= 0)) throw new FakeChannelError(this.name, `grant takes zero or more records, got ${records}`)
    this.credit += records
    if (this.ready()) for (const wake of this.waiters.splice(0)) wake()
    return this
  }

  // --- the consumer's side -----------------------------------------------------------------------

  /** Queues a batch of `values` (with optional `headers`, parallel to them) for the consumer. */
  feed(values: readonly unknown[], headers?: readonly (Header | undefined)[]): this {
    return this.enqueue(headers === undefined ? { values } : { values, headers })
  }

  /** Queues a whole batch for the consumer (a marker batch too). */
  feedBatch(batch: Batch): this {
    return this.enqueue(batch)
  }

  /** Queues a marker for the consumer, in order with the data fed before and after it. */
  feedMarker(marker: Marker): this {
    return this.enqueue({ values: [], marker })
  }

  /** Ends the consumer's side: `take` returns `'end'` once what was fed is drained. Idempotent. */
  feedEnd(): this {
    if (this.inboxEnded) return this
    this.inboxEnded = true
    this.readable?.()
    return this
  }

  take(): Batch | 'end' | undefined {
    const batch = this.inbox.shift()
    if (batch !== undefined) return batch
    return this.inboxEnded ? 'end' : undefined
  }

  onReadable(fn: () => void): void {
    this.readable = fn
  }

  /** Records fed and not taken yet. */
  get queued(): number {
    return this.inbox.reduce((n, b) => n + b.values.length, 0)
  }

  private enqueue(batch: Batch): this {
    if (this.inboxEnded) throw new FakeChannelError(this.name, 'a batch fed after the end')
    // Like the kernel's channel: an empty batch that is no marker carries nothing.
    if (batch.values.length === 0 && batch.marker === undefined) return this
    this.inbox.push(batch)
    this.readable?.()
    return this
  }
}

/**
 * A `ChannelInfo` for tests: `from.out -> to.in`, instance 0 to 0, forward, in job `test`, with
 * any part replaced.
 */
export function channelInfo(
  parts: { readonly job?: string; readonly from?: string; readonly to?: string; readonly fromInstance?: number; readonly toInstance?: number; readonly capacity?: number } = {},
): ChannelInfo {
  const from = { operator: parts.from ?? 'from', port: 'out' }
  const to = { operator: parts.to ?? 'to', port: 'in' }
  const link: Link = { from, to, partitioning: { kind: 'forward' }, capacity: parts.capacity, id: `${from.operator}.${from.port} -> ${to.operator}.${to.port}` }
  return { job: parts.job ?? 'test', link, from: { ...from, instance: parts.fromInstance ?? 0 }, to: { ...to, instance: parts.toInstance ?? 0 } }
}
