// Event time: the watermark, a marker that flows with the data and says how far event time has come.
//
// A source with event time (`source(…, { eventTime })`) stamps every record with a time taken from
// it and, after each batch it emits, a watermark W: a promise that no record it emits later has a
// time below W. W is the largest time seen less the bound on out-of-orderness (or what the user's
// function says). Watermarks travel like other markers, in order with the data, but are not aligned:
// an instance keeps the newest watermark of each of its inputs and its own is their minimum, passed
// on downstream whenever it rises (the rule of Flink and of the Dataflow model). Operators that care
// see it in `watermark(time, ctx)` of their atom definition; windows fire there (operators/window.ts).

/** The marker kind of watermarks. A watermark's `id` is its event time (whole milliseconds, rising). */
export const WATERMARK = 'watermark'

/**
 * The marker kind of idleness (`id` 0): the sender emits nothing for now. An instance leaves an idle
 * input out of the minimum until that input sends a record or a watermark again, and when every
 * input is idle it passes idleness on. A source declares it after `idleMs` without a record (or by
 * `ctx.markIdle()`); this is Flink's `withIdleness`. Records an input sends after idleness may be
 * late: the watermark moved on without it.
 */
export const WATERMARK_IDLE = 'watermark-idle'

/** How a source derives its watermark from the event times it emitted. */
export type WatermarkStrategy =
  /** Bounded out-of-orderness: no record comes more than `outOfOrderMs` after a later one. */
  | { readonly outOfOrderMs: number }
  /** The user's rule: the watermark given the largest event time emitted so far (and the number of records). */
  | { readonly watermark: (maxTime: number, records: number) => number }

/** Event time of a source: where a record's time is, and how the watermark follows it. */
export type EventTime<T> = {
  readonly timestamp: (value: T) => number
  /**
   * Processing-time milliseconds without a record after which the source declares itself idle
   * (WATERMARK_IDLE), so that a quiet input does not hold back the windows downstream. For inputs
   * read asynchronously (async iterables, Observables); arrays and iterables are never idle.
   * @default never idle
   */
  readonly idleMs?: number
} & WatermarkStrategy

/** The watermark `strategy` gives once the largest event time seen is `maxTime` after `records` records. */
export function watermarkOf(strategy: WatermarkStrategy, maxTime: number, records: number): number {
  return 'outOfOrderMs' in strategy ? maxTime - strategy.outOfOrderMs : strategy.watermark(maxTime, records)
}
