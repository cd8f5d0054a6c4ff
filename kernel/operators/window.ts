// Event-time windows over keyed state: tumbling, sliding and session windows that fire when the
// watermark passes their end, with allowed lateness and late records sent aside, never dropped.
//
// The semantics follow the Dataflow model as Flink implements it, with the native core's rules for
// what is late (native/README.md, "windows"), so the two agree:
// - window k of a tumbling or sliding assigner is `[k·slide, k·slide + size)` (slide = size when
//   tumbling); a record joins every window containing its time. A session window of a record is
//   `[t, t + gap)`, merged with every window of its key it overlaps;
// - when the watermark W rises, every window with `end <= W` fires once, emitting `{ key, start,
//   end, value, late: false }`; it is kept until `W >= end + allowedLatenessMs` for late records;
// - a record with `t < W - allowedLatenessMs` is late: it goes to the `late` port, or becomes a dead
//   letter (`ERR_LATE_RECORD`), and no window takes it. A record within the allowed lateness whose
//   window already fired updates it and fires it again, with `late: true`;
// - at the end of the input every window not fired yet fires (the watermark goes to +∞).
//
// The windows of a key are its state (one codec-typed value per key), so checkpoints snapshot them
// and a rescale moves them by key group like any keyed state.

import * as t from 'io-ts'
import type { Annotations, AnyCodec, AtomContext, Key, Operator } from '../contracts.js'
import { InvalidOptionError } from '../errors.js'
import { atom } from '../operator.js'

/** Which windows a record belongs to. */
export type WindowAssigner =
  | { readonly kind: 'tumbling'; readonly size: number }
  | { readonly kind: 'sliding'; readonly size: number; readonly slide: number }
  | { readonly kind: 'session'; readonly gap: number }

/** Fixed windows `[k·size, (k+1)·size)`. */
export function tumbling(sizeMs: number): WindowAssigner {
  return { kind: 'tumbling', size: sizeMs }
}

/** Overlapping windows `[k·slide, k·slide + size)`: a record joins `size / slide` of them. */
export function sliding(sizeMs: number, slideMs: number): WindowAssigner {
  return { kind: 'sliding', size: sizeMs, slide: slideMs }
}

/** Windows of activity per key: a record opens `[t, t + gap)`, and windows that overlap merge. */
export function session(gapMs: number): WindowAssigner {
  return { kind: 'session', gap: gapMs }
}

/** How records fold into a window's value. */
export interface WindowAggregate<T, A> {
  /** The value's codec: windows are state, so checkpoints encode them with it. */
  readonly codec: t.Type<A, unknown, unknown>
  /** The value of an empty window. */
  init(): A
  /** Adds one record (returns the new value; may update `acc` in place and return it). */
  add(acc: A, value: T): A
  /** Combines two windows' values (session windows that merge). Required for `session`. */
  merge?(a: A, b: A): A
}

/** Options of `window`. */
export interface WindowOptions<C extends AnyCodec, A> {
  /** The records' codec (the `in` port, and the `late` port). */
  readonly input: C
  /** The key windows are kept per (links into the operator hash-partition by it). */
  readonly key: (value: t.TypeOf<C>) => Key
  /** A record's event time in ms (the source's `eventTime.timestamp`, usually). */
  readonly timestamp: (value: t.TypeOf<C>) => number
  readonly window: WindowAssigner
  readonly aggregate: WindowAggregate<t.TypeOf<C>, A>
  /** How long after its end a window still takes late records (firing again each time). @default 0 */
  readonly allowedLatenessMs?: number
  /** Where records later than the allowed lateness go: the `late` port, or dead letters (ERR_LATE_RECORD). @default 'dead-letter' */
  readonly lateRecords?: 'port' | 'dead-letter'
  readonly parallelism?: number
  readonly annotations?: Annotations
}

/** What a window emits when it fires. */
export interface WindowResult<A> {
  readonly key: Key
  readonly start: number
  readonly end: number
  readonly value: A
  /** True for a firing caused by a late record (within the allowed lateness) after the window had fired. */
  readonly late: boolean
}

/** The codec of a window's results, given the value's codec. */
export function windowResult<A>(value: t.Type<A, unknown, unknown>) {
  return t.type({ key: t.union([t.string, t.number]), start: t.number, end: t.number, value, late: t.boolean })
}

/** One window of a key, as state: start, end, value, fired already. */
type Open<A> = [number, number, A, boolean]

/**
 * A keyed event-time window operator: `in` takes records, `out` emits each window's value when the
 * watermark passes its end, `late` takes records later than the allowed lateness (with
 * `lateRecords: 'port'`). Needs watermarks: a source with `eventTime` upstream.
 *
 * ```ts
 * const perMinute = window('per-minute', {
 *   input: Order, key: (o) => o.customer, timestamp: (o) => o.time, window: tumbling(60_000),
 *   aggregate: { codec: t.number, init: () => 0, add: (sum, o) => sum + o.amount },
 * })
 * ```
 */
export function window<C extends AnyCodec, A>(name: string, options: WindowOptions<C, A>): Operator<{ in: C }, { out: ReturnType<typeof windowResult<A>>; late: C }> {
  const assigner = options.window
  const lateness = options.allowedLatenessMs ?? 0
  checkAssigner(name, assigner, options.aggregate)
  if (!Number.isFinite(lateness) || lateness < 0) throw new InvalidOptionError(`operator ${name}`, 'allowedLatenessMs', `must be zero or more milliseconds, got ${lateness}`)
  const { key, timestamp, aggregate } = options
  const toPort = options.lateRecords === 'port'
  const Windows = t.array(t.tuple([t.number, t.number, aggregate.codec, t.boolean]))
  type Ctx = AtomContext<{ out: ReturnType<typeof windowResult<A>>; late: C }, Open<A>[]>
  // Per instance, in memory only: the watermark seen, and the earliest end of a window not fired
  // yet (a watermark below it has nothing to fire). A restored instance starts at -∞ and scans once.
  // The last instance's clock is kept at hand: an instance handles a whole batch at a time, so
  // most records skip the WeakMap lookup.
  const clocks = new WeakMap<object, { watermark: number; nextEnd: number }>()
  let lastCtx: Ctx | undefined
  let lastClock = { watermark: Number.NEGATIVE_INFINITY, nextEnd: Number.NEGATIVE_INFINITY }
  const clockOf = (ctx: Ctx): { watermark: number; nextEnd: number } => {
    if (ctx === lastCtx) return lastClock
    let clock = clocks.get(ctx)
    if (clock === undefined) clocks.set(ctx, (clock = { watermark: Number.NEGATIVE_INFINITY, nextEnd: Number.NEGATIVE_INFINITY }))
    lastCtx = ctx
    lastClock = clock
    return clock
  }
  // The assigner's numbers, read once: `tumblingSize` is 0 unless tumbling (its fast path).
  const size = assigner.kind === 'session' ? 0 : assigner.size
  const slide = assigner.kind === 'sliding' ? assigner.slide : size
  const tumblingSize = assigner.kind === 'tumbling' ? size : 0
  /**
   * The current key's window starting at `from`, opened if it is not there. A key's windows are
   * kept sorted by start (fire keeps their order, snapshots hold them sorted), so the window, or
   * its place, is found scanning back from the newest; only a new window can lower the earliest
   * end not fired yet.
   */
  const windowAt = (ctx: Ctx, windows: Open<A>[], from: number, clock: { nextEnd: number }): Open<A> => {
    let at = windows.length - 1
    while (at >= 0 && windows[at]![0] > from) at--
    const found = at >= 0 ? windows[at]! : undefined
    if (found !== undefined && found[0] === from) return found
    const w: Open<A> = [from, from + size, aggregate.init(), false]
    if (at === windows.length - 1) windows.push(w)
    else windows.splice(at + 1, 0, w)
    if (w[1] < clock.nextEnd) clock.nextEnd = w[1]
    ctx.state.set(windows)
    return w
  }
  const fire = (ctx: Ctx, upTo: number): void => {
    let earliest = Number.POSITIVE_INFINITY
    for (const [k, windows] of ctx.state.entries()) {
      let kept = 0
      for (const w of windows) {
        if (!w[3] && w[1] <= upTo) {
          ctx.emit('out', { key: k, start: w[0], end: w[1], value: w[2], late: false })
          w[3] = true
        }
        if (w[3] && w[1] + lateness <= upTo) continue // fired, and past its lateness: gone
        if (!w[3] && w[1] < earliest) earliest = w[1]
        windows[kept++] = w
      }
      windows.length = kept
      if (kept === 0) ctx.state.deleteOf(k)
    }
    clockOf(ctx).nextEnd = earliest
  }
  return atom<{ in: C }, { out: ReturnType<typeof windowResult<A>>; late: C }, Open<A>[]>({
    name,
    inputs: { in: options.input },
    outputs: { out: windowResult(aggregate.codec), late: options.input },
    key,
    state: { codec: Windows as unknown as t.Type<Open<A>[], unknown, unknown>, init: () => [] },
    annotations: { ...options.annotations, ...(options.parallelism === undefined ? {} : { parallelism: options.parallelism }) },
    on: {
      in: (value, ctx) => {
        const time = timestamp(value)
        if (!Number.isFinite(time)) return ctx.reject(value, `event time ${String(time)} is not a finite number`)
        const clock = clockOf(ctx)
        const watermark = clock.watermark
        if (time < watermark - lateness) {
          if (toPort) ctx.emit('late', value)
          else ctx.reject(value, `late record (ERR_LATE_RECORD): event time ${time} is below the watermark ${watermark} less the allowed lateness ${lateness} ms`)
          return
        }
        const windows = ctx.state.get()
        if (tumblingSize > 0) {
          // Most records fall in their key's newest window: check it before anything else.
          const from = Math.floor(time / tumblingSize) * tumblingSize
          const newest = windows.length - 1
          let w = newest >= 0 ? windows[newest]! : undefined
          if (w === undefined || w[0] !== from) w = windowAt(ctx, windows, from, clock)
          w[2] = aggregate.add(w[2], value)
          if (w[3]) ctx.emit('out', { key: ctx.key!, start: w[0], end: w[1], value: w[2], late: true })
          return
        }
        if (assigner.kind === 'session') {
          const merged = addToSession(windows, time, value, assigner.gap, aggregate, watermark)
          if (merged[3]) ctx.emit('out', { key: ctx.key!, start: merged[0], end: merged[1], value: merged[2], late: true })
          ctx.state.set(windows)
          for (const w of windows) if (!w[3] && w[1] < clock.nextEnd) clock.nextEnd = w[1]
          return
        }
        // Every k with k·slide <= time < k·slide + size, newest first.
        for (let from = Math.floor(time / slide) * slide; from > time - size; from -= slide) {
          const w = windowAt(ctx, windows, from, clock)
          w[2] = aggregate.add(w[2], value)
          if (w[3]) ctx.emit('out', { key: ctx.key!, start: w[0], end: w[1], value: w[2], late: true })
        }
      },
    },
    watermark: (time, ctx) => {
      const clock = clockOf(ctx)
      clock.watermark = time
      if (time >= clock.nextEnd) fire(ctx, time)
    },
    end: (ctx) => fire(ctx, Number.POSITIVE_INFINITY),
  })
}

/**
 * Adds a record to its key's session windows: opens `[t, t + gap)` and merges every window it
 * overlaps. The merged window counts as fired (a late firing, to emit now) when one of the windows
 * it merged had fired and it still ends at or below the watermark; one that grew past the
 * watermark fires when the watermark passes its new end. Returns the merged window.
 */
function addToSession<T, A>(windows: Open<A>[], time: number, value: T, gap: number, aggregate: WindowAggregate<T, A>, watermark: number): Open<A> {
  let merged: Open<A> = [time, time + gap, aggregate.add(aggregate.init(), value), false]
  let fired = false
  let kept = 0
  for (const w of windows) {
    if (w[0] < merged[1] && merged[0] < w[1]) {
      merged = [Math.min(w[0], merged[0]), Math.max(w[1], merged[1]), aggregate.merge!(w[2], merged[2]), false]
      fired ||= w[3]
    } else windows[kept++] = w
  }
  merged[3] = fired && merged[1] <= watermark
  windows.length = kept
  windows.push(merged)
  windows.sort((a, b) => a[0] - b[0])
  return merged
}

function checkAssigner(name: string, assigner: WindowAssigner, aggregate: { readonly merge?: unknown }): void {
  const positive = (field: string, value: number): void => {
    if (!Number.isFinite(value) || value <= 0) throw new InvalidOptionError(`operator ${name}`, `window.${field}`, `must be a positive number of milliseconds, got ${value}`)
  }
  if (assigner.kind === 'session') {
    positive('gap', assigner.gap)
    if (aggregate.merge === undefined)
      throw new InvalidOptionError(`operator ${name}`, 'aggregate.merge', 'is required for session windows: merging sessions combines their values')
  } else positive('size', assigner.size)
  if (assigner.kind === 'sliding') {
    positive('slide', assigner.slide)
    if (assigner.slide > assigner.size) throw new InvalidOptionError(`operator ${name}`, 'window.slide', `must not exceed the size (${assigner.size} ms), got ${assigner.slide}`)
  }
}
