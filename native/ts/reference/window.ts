// Keyed event-time windows of the reference, fixed (tumbling or sliding) and session; mirrors native/src/window.rs.

import { NativeBatchError } from '../errors.js'
import { KeyedAgg, checkKeyKind } from './agg.js'
import { colLen, f64Col, keyAt, type KeyValue, type RCol } from './batch.js'
import type { Rows } from './state.js'

/** Most windows one event may fall in (size / slide). */
export const MAX_WINDOWS_PER_EVENT = 10_000
/** Largest magnitude of an event time, and of an event time over the slide (2^53). */
export const MAX_TIME = 9007199254740992

function checkLateness(lateness: number, bad: (m: string) => Error): void {
  if (!(Number.isFinite(lateness) && lateness >= 0)) throw bad(`window allowedLatenessMs must be a finite number >= 0, got ${lateness}`)
}

/** Fired windows built row by row, in the columns of a window chain's output. */
class OutRows {
  readonly keys: KeyValue[] = []
  readonly start: number[] = []
  readonly end: number[] = []
  readonly count: number[] = []
  readonly sum: number[] = []
  readonly min: number[] = []
  readonly max: number[] = []
  readonly late: number[] = []

  constructor(
    private readonly kind: 'f64' | 'utf8',
    private readonly withValues: boolean,
  ) {}

  get length(): number {
    return this.start.length
  }

  push(key: KeyValue, start: number, end: number, count: number, vals: readonly [number, number, number], late: boolean): void {
    this.keys.push(key)
    this.start.push(start)
    this.end.push(end)
    this.count.push(count)
    if (this.withValues) {
      this.sum.push(vals[0])
      this.min.push(vals[1])
      this.max.push(vals[2])
    }
    this.late.push(late ? 1 : 0)
  }

  /** A row of key `slot` of a fixed window. */
  pushSlot(agg: KeyedAgg, slot: number, start: number, end: number, late: boolean): void {
    const vals: [number, number, number] = this.withValues ? [agg.sum[slot]!, agg.min[slot]!, agg.max[slot]!] : [0, Infinity, -Infinity]
    this.push(agg.keys[slot]!, start, end, agg.count[slot]!, vals, late)
  }

  keyCol(): RCol {
    return this.kind === 'utf8' ? { kind: 'utf8', strings: this.keys as string[] } : f64Col(this.keys as number[])
  }

  finish(): Array<[string, RCol]> {
    const out: Array<[string, RCol]> = [
      ['key', this.keyCol()],
      ['start', f64Col(this.start)],
      ['end', f64Col(this.end)],
      ['count', f64Col(this.count)],
    ]
    if (this.withValues) {
      out.push(['sum', f64Col(this.sum)], ['min', f64Col(this.min)], ['max', f64Col(this.max)], ['mean', f64Col(this.sum.map((s, i) => s / this.count[i]!))])
    }
    out.push(['late', f64Col(this.late)])
    return out
  }
}

/** One fixed window: its keyed aggregate, whether it fired as a whole, and (after a restore) which keys (slots) have fired. */
interface Win {
  readonly agg: KeyedAgg
  paneFired: boolean
  fired: boolean[]
}

function hasFired(w: Win, slot: number): boolean {
  return w.paneFired || w.fired[slot] === true
}

/**
 * Keyed aggregates per event-time window `[k·slide, k·slide + size)`: a window fires once the
 * watermark passes its end and is kept for the allowed lateness; rows within it that reach a fired
 * key fire it again.
 */
export class Windows {
  private kind: 'f64' | 'utf8' | undefined
  private watermark = -Infinity
  late = 0
  private lateRows: number[] = []
  private readonly open = new Map<number, Win>()
  private readonly maxPerEvent: number

  constructor(
    private readonly size: number,
    private readonly slide: number,
    private readonly lateness: number,
    private readonly withValues: boolean,
    bad: (m: string) => Error,
  ) {
    if (!(Number.isFinite(size) && size > 0)) throw bad(`window size must be a finite number > 0, got ${size}`)
    if (!(Number.isFinite(slide) && slide > 0)) throw bad(`window slide must be a finite number > 0, got ${slide}`)
    const perEvent = Math.ceil(size / slide)
    if (perEvent > MAX_WINDOWS_PER_EVENT) throw bad(`window size / slide must be at most ${MAX_WINDOWS_PER_EVENT}, got ${size / slide}`)
    checkLateness(lateness, bad)
    this.maxPerEvent = perEvent
  }

  checkTimes(column: string, times: Float64Array): void {
    times.forEach((t, i) => {
      if (!Number.isFinite(t)) throw new NativeBatchError(column, i, `event time must be finite, got ${t}`)
      if (Math.abs(t) > MAX_TIME || Math.abs(t / this.slide) > MAX_TIME) {
        throw new NativeBatchError(column, i, `event time ${t} is out of range for slide ${this.slide}`)
      }
    })
  }

  private windowAt(start: number, kind: 'f64' | 'utf8'): Win {
    let w = this.open.get(start)
    if (w === undefined) {
      w = { agg: new KeyedAgg(kind, this.withValues), paneFired: false, fired: [] }
      this.open.set(start, w)
    }
    return w
  }

  /** Adds a batch; returns the windows rows within the allowed lateness fired again, if any. */
  push(keyName: string, keys: RCol, values: Float64Array | undefined, times: Float64Array): Array<[string, RCol]> | undefined {
    checkKeyKind(this.kind, keyName, keys)
    this.kind = keys.kind
    const lateBelow = this.watermark - this.lateness
    let refired: OutRows | undefined
    times.forEach((t, row) => {
      if (t < lateBelow) {
        this.late++
        this.lateRows.push(row)
        return
      }
      const value = values?.[row] ?? 0
      const kmax = Math.floor(t / this.slide)
      for (let i = 0; i <= this.maxPerEvent; i++) {
        const start = (kmax - i) * this.slide + 0
        if (start + this.size <= t) break
        if (start > t) continue
        const w = this.windowAt(start, keys.kind)
        const slot = w.agg.add(keyAt(keys, row), value)
        if (hasFired(w, slot)) (refired ??= new OutRows(keys.kind, this.withValues)).pushSlot(w.agg, slot, start, start + this.size, true)
      }
    })
    return refired?.finish()
  }

  /** The late rows of the pushes since the last call. */
  takeLateRows(): number[] {
    const rows = this.lateRows
    this.lateRows = []
    return rows
  }

  private sortedStarts(): number[] {
    return [...this.open.keys()].sort((a, b) => a - b)
  }

  advance(w: number): Array<[string, RCol]> {
    if (w > this.watermark) this.watermark = w
    const out = new OutRows(this.kind ?? 'utf8', this.withValues)
    for (const s of this.sortedStarts()) {
      const end = s + this.size
      if (!(end <= this.watermark)) break
      const win = this.open.get(s)!
      if (!win.paneFired) this.pushUnfired(out, s, win)
      win.paneFired = true
      win.fired = []
      if (end + this.lateness <= this.watermark) this.open.delete(s)
    }
    return out.finish()
  }

  finish(): Array<[string, RCol]> {
    const out = new OutRows(this.kind ?? 'utf8', this.withValues)
    for (const s of this.sortedStarts()) this.pushUnfired(out, s, this.open.get(s)!)
    this.open.clear()
    return out.finish()
  }

  private pushUnfired(out: OutRows, start: number, win: Win): void {
    for (let slot = 0; slot < win.agg.size; slot++) if (!hasFired(win, slot)) out.pushSlot(win.agg, slot, start, start + this.size, false)
  }

  /** The kind of key column seen so far, if any input came. */
  get keyKind(): 'f64' | 'utf8' | undefined {
    return this.kind
  }

  /** The windows as state rows (`key, start, count`, `sum, min, max` with values, `end`, `fired`), leaving them as they are. */
  snapshot(): Array<[string, RCol]> {
    const rows = new OutRows(this.kind ?? 'utf8', this.withValues)
    for (const s of this.sortedStarts()) {
      const win = this.open.get(s)!
      for (let slot = 0; slot < win.agg.size; slot++) rows.pushSlot(win.agg, slot, s, s + this.size, hasFired(win, slot))
    }
    return stateColumns(rows, this.withValues)
  }

  /** Adds checked state rows to the windows; a bad row fails the call with the state unchanged. */
  restore(rows: Rows): void {
    checkKeyKind(this.kind, 'key', rows.keys)
    const starts = rows.start
    if (starts === undefined) throw new NativeBatchError('start', undefined, 'missing column')
    starts.forEach((s, i) => {
      if (Math.round(s / this.slide) * this.slide + 0 !== s) throw new NativeBatchError('start', i, `${s} is not the start of a window of slide ${this.slide}`)
      const end = rows.end?.[i]
      if (end !== undefined && end !== s + this.size) throw new NativeBatchError('end', i, `${end} is not the end of a window of size ${this.size} starting at ${s}`)
    })
    this.kind = rows.keys.kind
    starts.forEach((s, row) => {
      const w = this.windowAt(s, rows.keys.kind)
      if (w.paneFired) {
        w.paneFired = false
        w.fired = Array.from({ length: w.agg.size }, () => true)
      }
      const before = w.agg.size
      const slot = w.agg.merge(rows, row)
      w.fired[slot] = rows.fired?.[row] === 1 && (slot >= before || w.fired[slot] === true)
    })
    // A window fired as a whole when all its keys did (as window.ts's loadState decides for a pane).
    for (const w of this.open.values()) {
      let all = w.fired.length > 0
      for (let slot = 0; slot < w.agg.size && all; slot++) all = w.fired[slot] === true
      if (all) {
        w.paneFired = true
        w.fired = []
      }
    }
  }
}

/** State columns from rows built by {@link OutRows} (`late` holds the fired flags). */
function stateColumns(rows: OutRows, withValues: boolean): Array<[string, RCol]> {
  const out: Array<[string, RCol]> = [
    ['key', rows.keyCol()],
    ['start', f64Col(rows.start)],
    ['count', f64Col(rows.count)],
  ]
  if (withValues) out.push(['sum', f64Col(rows.sum)], ['min', f64Col(rows.min)], ['max', f64Col(rows.max)])
  out.push(['end', f64Col(rows.end)], ['fired', f64Col(rows.late)])
  return out
}

/** One session window of a key. */
interface Session {
  start: number
  end: number
  count: number
  vals: [number, number, number]
  fired: boolean
}

/**
 * Keyed session windows: a row opens `[t, t + gap)` and merges with every window of its key it
 * overlaps (window.ts's `addToSession`). Keys in the order of a `Map` that deletes a key whose last
 * window goes.
 */
export class Sessions {
  private kind: 'f64' | 'utf8' | undefined
  private watermark = -Infinity
  late = 0
  private lateRows: number[] = []
  private nextEnd = -Infinity
  private readonly keys = new Map<KeyValue, Session[]>()

  constructor(
    private readonly gap: number,
    private readonly lateness: number,
    private readonly withValues: boolean,
    bad: (m: string) => Error,
  ) {
    if (!(Number.isFinite(gap) && gap > 0)) throw bad(`window gap must be a finite number > 0, got ${gap}`)
    checkLateness(lateness, bad)
  }

  checkTimes(column: string, times: Float64Array): void {
    times.forEach((t, i) => {
      if (!Number.isFinite(t)) throw new NativeBatchError(column, i, `event time must be finite, got ${t}`)
      if (Math.abs(t) > MAX_TIME) throw new NativeBatchError(column, i, `event time ${t} is out of range (at most 2^53 in magnitude)`)
    })
  }

  get keyKind(): 'f64' | 'utf8' | undefined {
    return this.kind
  }

  takeLateRows(): number[] {
    const rows = this.lateRows
    this.lateRows = []
    return rows
  }

  private windowsOf(key: KeyValue): Session[] {
    let windows = this.keys.get(key)
    if (windows === undefined) this.keys.set(key, (windows = []))
    return windows
  }

  /** Adds a batch; returns the windows rows within the allowed lateness fired again, if any. */
  push(keyName: string, keys: RCol, values: Float64Array | undefined, times: Float64Array): Array<[string, RCol]> | undefined {
    checkKeyKind(this.kind, keyName, keys)
    this.kind = keys.kind
    const lateBelow = this.watermark - this.lateness
    let refired: OutRows | undefined
    times.forEach((t, row) => {
      if (t < lateBelow) {
        this.late++
        this.lateRows.push(row)
        return
      }
      const v = values?.[row] ?? 0
      const key = keyAt(keys, row)
      const one: Session = { start: t, end: t + this.gap, count: 1, vals: [0 + v, Math.min(Infinity, v), Math.max(-Infinity, v)], fired: false }
      const merged = this.add(this.windowsOf(key), one, true)
      if (merged.fired) (refired ??= new OutRows(keys.kind, this.withValues)).push(key === 0 ? 0 : key, merged.start, merged.end, merged.count, merged.vals, true)
      else if (merged.end < this.nextEnd) this.nextEnd = merged.end
    })
    return refired?.finish()
  }

  private add(windows: Session[], one: Session, records: boolean): Session {
    let merged = one
    let any = false
    let all = one.fired
    let kept = 0
    for (const w of [...windows]) {
      if (w.start < merged.end && merged.start < w.end) {
        merged = {
          start: Math.min(w.start, merged.start),
          end: Math.max(w.end, merged.end),
          count: w.count + merged.count,
          vals: [w.vals[0] + merged.vals[0], Math.min(w.vals[1], merged.vals[1]), Math.max(w.vals[2], merged.vals[2])],
          fired: false,
        }
        any ||= w.fired
        all &&= w.fired
      } else windows[kept++] = w
    }
    merged.fired = records ? any && merged.end <= this.watermark : all
    windows.length = kept
    const at = windows.findIndex((w) => !(w.start < merged.start))
    windows.splice(at < 0 ? windows.length : at, 0, merged)
    return merged
  }

  advance(w: number): Array<[string, RCol]> {
    if (w > this.watermark) this.watermark = w
    if (this.watermark < this.nextEnd) return new OutRows(this.kind ?? 'utf8', this.withValues).finish()
    return this.fire(this.watermark).finish()
  }

  finish(): Array<[string, RCol]> {
    return this.fire(Infinity).finish()
  }

  private fire(upTo: number): OutRows {
    const out = new OutRows(this.kind ?? 'utf8', this.withValues)
    let earliest = Infinity
    for (const [key, windows] of this.keys) {
      let kept = 0
      for (const w of [...windows]) {
        if (!w.fired && w.end <= upTo) {
          out.push(key, w.start, w.end, w.count, w.vals, false)
          w.fired = true
        }
        if (w.fired && w.end + this.lateness <= upTo) continue
        if (!w.fired && w.end < earliest) earliest = w.end
        windows[kept++] = w
      }
      windows.length = kept
      if (kept === 0) this.keys.delete(key)
    }
    this.nextEnd = earliest
    return out
  }

  snapshot(): Array<[string, RCol]> {
    const rows = new OutRows(this.kind ?? 'utf8', this.withValues)
    for (const [key, windows] of this.keys) for (const w of windows) rows.push(key, w.start, w.end, w.count, w.vals, w.fired)
    return stateColumns(rows, this.withValues)
  }

  restore(rows: Rows): void {
    checkKeyKind(this.kind, 'key', rows.keys)
    const starts = rows.start
    if (starts === undefined) throw new NativeBatchError('start', undefined, 'missing column')
    const ends = rows.end
    if (ends === undefined) throw new NativeBatchError('end', undefined, 'missing column (session windows keep their end)')
    starts.forEach((s, i) => {
      const e = ends[i]!
      if (!(Number.isFinite(e) && e > s)) throw new NativeBatchError('end', i, `must be a finite time after the start ${s}, got ${e}`)
    })
    this.kind = rows.keys.kind
    for (let row = 0; row < colLen(rows.keys); row++) {
      const vals: [number, number, number] =
        this.withValues && rows.values !== undefined ? [rows.values[0][row]!, rows.values[1][row]!, rows.values[2][row]!] : [0, Infinity, -Infinity]
      const one: Session = { start: starts[row]!, end: ends[row]!, count: rows.count[row]!, vals, fired: rows.fired?.[row] === 1 }
      this.add(this.windowsOf(keyAt(rows.keys, row)), one, false)
    }
    this.nextEnd = -Infinity
  }
}
