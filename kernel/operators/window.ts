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
  const definition = {
    name,
    inputs: { in: options.input },
    outputs: { out: windowResult(aggregate.codec), late: options.input },
    key,
    state: { codec: Windows as unknown as t.Type<Open<A>[], unknown, unknown>, init: (): Open<A>[] => [] },
    annotations: { ...options.annotations, ...(options.parallelism === undefined ? {} : { parallelism: options.parallelism }) },
  }
  const late = (ctx: Ctx, value: t.TypeOf<C>, time: number, watermark: number): void => {
    if (toPort) ctx.emit('late', value)
    else ctx.reject(value, `late record (ERR_LATE_RECORD): event time ${time} is below the watermark ${watermark} less the allowed lateness ${lateness} ms`)
  }
  if (assigner.kind !== 'session') {
    const size = assigner.size
    const slide = assigner.kind === 'sliding' ? assigner.slide : size
    return atom<{ in: C }, { out: ReturnType<typeof windowResult<A>>; late: C }, Open<A>[]>({
      ...definition,
      ...paneWindows<C, A>(size, slide, lateness, timestamp, aggregate, late),
    })
  }
  const gap = assigner.gap
  // Per instance, in memory only: the watermark seen, and the earliest end of a window not fired
  // yet (a watermark below it has nothing to fire). A restored instance starts at -∞ and scans once.
  const clocks = new WeakMap<object, { watermark: number; nextEnd: number }>()
  const clockOf = (ctx: Ctx): { watermark: number; nextEnd: number } => {
    let clock = clocks.get(ctx)
    if (clock === undefined) clocks.set(ctx, (clock = { watermark: Number.NEGATIVE_INFINITY, nextEnd: Number.NEGATIVE_INFINITY }))
    return clock
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
  // Session windows are the keyed state itself: a key's sessions merge with each record.
  return atom<{ in: C }, { out: ReturnType<typeof windowResult<A>>; late: C }, Open<A>[]>({
    ...definition,
    on: {
      in: (value, ctx) => {
        const time = timestamp(value)
        if (!Number.isFinite(time)) return ctx.reject(value, `event time ${String(time)} is not a finite number`)
        const clock = clockOf(ctx)
        const watermark = clock.watermark
        if (time < watermark - lateness) return late(ctx, value, time, watermark)
        const windows = ctx.state.get()
        const merged = addToSession(windows, time, value, gap, aggregate, watermark)
        if (merged[3]) ctx.emit('out', { key: ctx.key!, start: merged[0], end: merged[1], value: merged[2], late: true })
        ctx.state.set(windows)
        for (const w of windows) if (!w[3] && w[1] < clock.nextEnd) clock.nextEnd = w[1]
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
 * The windows `[start, start + size)` of every key that share a start: they open, fire and close
 * together, so tumbling and sliding windows are kept by start (as a hand-written loop keeps them),
 * each pane holding the value of every key that has records in it. Firing takes the panes whose end
 * the watermark passed, in start order, and emits each key's value in the order keys arrived.
 */
interface Pane<A> {
  readonly start: number
  readonly end: number
  /** Every key's window in this pane fired (at the watermark, or before a restore). */
  fired: boolean
  /** After a restore only: keys whose window fired already in a pane that has not. */
  firedKeys: Set<Key> | undefined
  readonly values: Map<Key, A>
  /** Changed since the last `saveState`: its keys' state is written again. */
  dirty: boolean
}

/** One instance's tumbling or sliding windows, in memory (see `paneWindows`). */
class Panes<A> {
  watermark = Number.NEGATIVE_INFINITY
  /** The earliest end of a pane not fired yet: a watermark below it has nothing to fire. */
  nextEnd = Number.POSITIVE_INFINITY
  readonly panes = new Map<number, Pane<A>>()
  /** The pane the last record went to: most records go to the same one. */
  last: Pane<A> | undefined
  /** Once state was saved or loaded: keys of panes closed since, whose saved windows must go. */
  closedKeys: Set<Key> | undefined

  constructor(private readonly size: number) {}

  /** The pane starting at `start`, opened if it is not there. */
  at(start: number): Pane<A> {
    let pane = this.panes.get(start)
    if (pane === undefined) {
      pane = { start, end: start + this.size, fired: false, firedKeys: undefined, values: new Map(), dirty: true }
      this.panes.set(start, pane)
      if (pane.end < this.nextEnd) this.nextEnd = pane.end
    }
    this.last = pane
    return pane
  }
}

/**
 * Tumbling (`slide === size`) and sliding windows. They live in memory by start, not in `ctx.state`
 * record by record: `saveState` writes each key's windows (`[start, end, value, fired]`, as session
 * windows keep them) into its keyed state before a snapshot, only for keys of panes that changed or
 * closed since the last one, and `loadState` reads them back after a restore or a rescale. The state
 * a checkpoint takes, and how a rescale moves it, are those of any keyed operator.
 */
function paneWindows<C extends AnyCodec, A>(
  size: number,
  slide: number,
  lateness: number,
  timestamp: (value: t.TypeOf<C>) => number,
  aggregate: WindowAggregate<t.TypeOf<C>, A>,
  late: (ctx: AtomContext<{ out: ReturnType<typeof windowResult<A>>; late: C }, Open<A>[]>, value: t.TypeOf<C>, time: number, watermark: number) => void,
) {
  type Ctx = AtomContext<{ out: ReturnType<typeof windowResult<A>>; late: C }, Open<A>[]>
  // Each instance's panes. The last instance's are kept at hand: an instance handles a whole batch
  // at a time, so most records skip the WeakMap lookup.
  const instances = new WeakMap<object, Panes<A>>()
  let lastCtx: Ctx | undefined
  let lastPanes: Panes<A> | undefined
  const panesOf = (ctx: Ctx): Panes<A> => {
    if (ctx === lastCtx) return lastPanes!
    let panes = instances.get(ctx)
    if (panes === undefined) instances.set(ctx, (panes = new Panes<A>(size)))
    lastCtx = ctx
    lastPanes = panes
    return panes
  }
  const add = (ctx: Ctx, pane: Pane<A>, key: Key, value: t.TypeOf<C>): void => {
    const values = pane.values
    const acc = values.get(key)
    const next = aggregate.add(acc === undefined ? aggregate.init() : acc, value)
    if (next !== acc) values.set(key, next)
    pane.dirty = true
    if (pane.fired || pane.firedKeys?.has(key) === true) ctx.emit('out', { key, start: pane.start, end: pane.end, value: next, late: true })
  }
  const fire = (ctx: Ctx, upTo: number): void => {
    const panes = panesOf(ctx)
    const due: Pane<A>[] = []
    let earliest = Number.POSITIVE_INFINITY
    for (const pane of panes.panes.values()) {
      if (pane.fired) continue
      if (pane.end <= upTo) due.push(pane)
      else if (pane.end < earliest) earliest = pane.end
    }
    due.sort((a, b) => a.start - b.start)
    for (const pane of due) {
      const { start, end, firedKeys } = pane
      for (const [key, value] of pane.values) if (firedKeys === undefined || !firedKeys.has(key)) ctx.emit('out', { key, start, end, value, late: false })
      pane.fired = true
      pane.firedKeys = undefined
      pane.dirty = true
    }
    // Fired panes past their lateness take no more records: gone.
    for (const [start, pane] of panes.panes) {
      if (!pane.fired || pane.end + lateness > upTo) continue
      panes.panes.delete(start)
      if (panes.last === pane) panes.last = undefined
      if (panes.closedKeys !== undefined) for (const key of pane.values.keys()) panes.closedKeys.add(key)
    }
    panes.nextEnd = earliest
  }
  const tumblingSize = slide === size ? size : 0
  return {
    on: {
      in: (value: t.TypeOf<C>, ctx: Ctx) => {
        const time = timestamp(value)
        if (!Number.isFinite(time)) return ctx.reject(value, `event time ${String(time)} is not a finite number`)
        const panes = panesOf(ctx)
        const watermark = panes.watermark
        if (time < watermark - lateness) return late(ctx, value, time, watermark)
        const key = ctx.key!
        if (tumblingSize > 0) {
          const start = Math.floor(time / tumblingSize) * tumblingSize
          const last = panes.last
          return add(ctx, last !== undefined && last.start === start ? last : panes.at(start), key, value)
        }
        // Every k with k·slide <= time < k·slide + size, newest first.
        for (let start = Math.floor(time / slide) * slide; start > time - size; start -= slide) add(ctx, panes.at(start), key, value)
      },
    },
    watermark: (time: number, ctx: Ctx) => {
      const panes = panesOf(ctx)
      panes.watermark = time
      if (time >= panes.nextEnd) fire(ctx, time)
    },
    end: (ctx: Ctx) => fire(ctx, Number.POSITIVE_INFINITY),
    saveState: (ctx: Ctx) => {
      const panes = panesOf(ctx)
      const keys = panes.closedKeys ?? new Set<Key>()
      const sorted = [...panes.panes.values()].sort((a, b) => a.start - b.start)
      for (const pane of sorted) if (pane.dirty) for (const key of pane.values.keys()) keys.add(key)
      const rows = new Map<Key, Open<A>[]>()
      for (const pane of sorted) {
        pane.dirty = false
        for (const [key, value] of pane.values) {
          if (!keys.has(key)) continue
          let windows = rows.get(key)
          if (windows === undefined) rows.set(key, (windows = []))
          windows.push([pane.start, pane.end, value, pane.fired || pane.firedKeys?.has(key) === true])
        }
      }
      for (const key of keys) {
        const windows = rows.get(key)
        if (windows === undefined) ctx.state.deleteOf(key)
        else ctx.state.setOf(key, windows)
      }
      panes.closedKeys = new Set()
    },
    loadState: (ctx: Ctx) => {
      const panes = new Panes<A>(size)
      instances.set(ctx, panes)
      if (lastCtx === ctx) lastPanes = panes
      // Windows of one start from several old instances (a rescale) fired or not at each one's
      // own watermark: a pane counts as fired only when all did, else it remembers the keys that did.
      const unfired = new Set<Pane<A>>()
      for (const [key, windows] of ctx.state.entries()) {
        for (const [start, , value, fired] of windows) {
          const pane = panes.at(start)
          pane.values.set(key, value)
          pane.dirty = false
          if (fired) (pane.firedKeys ??= new Set()).add(key)
          else unfired.add(pane)
        }
      }
      panes.last = undefined
      panes.nextEnd = Number.POSITIVE_INFINITY
      for (const pane of panes.panes.values()) {
        if (unfired.has(pane)) {
          if (pane.end < panes.nextEnd) panes.nextEnd = pane.end
          continue
        }
        pane.fired = true
        pane.firedKeys = undefined
      }
      panes.closedKeys = new Set()
    },
  }
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
