// Keyed event-time windows of the reference, tumbling or sliding; mirrors native/src/window.rs.

import { NativeBatchError } from '../errors.js'
import { KeyedAgg, checkKeyKind } from './agg.js'
import { colLen, f64Col, keyAt, type KeyValue, type RCol } from './batch.js'
import type { Rows } from './state.js'

/** Most windows one event may fall in (size / slide). */
export const MAX_WINDOWS_PER_EVENT = 10_000
/** Largest magnitude of an event time, and of an event time over the slide (2^53). */
export const MAX_TIME = 9007199254740992

/** Keyed aggregates per event-time window `[k·slide, k·slide + size)`, emitted once the watermark passes a window's end. */
export class Windows {
  private kind: 'f64' | 'utf8' | undefined
  private watermark = -Infinity
  late = 0
  private readonly open = new Map<number, KeyedAgg>()
  private readonly maxPerEvent: number

  constructor(
    private readonly size: number,
    private readonly slide: number,
    private readonly withValues: boolean,
    bad: (m: string) => Error,
  ) {
    if (!(Number.isFinite(size) && size > 0)) throw bad(`window size must be a finite number > 0, got ${size}`)
    if (!(Number.isFinite(slide) && slide > 0)) throw bad(`window slide must be a finite number > 0, got ${slide}`)
    const perEvent = Math.ceil(size / slide)
    if (perEvent > MAX_WINDOWS_PER_EVENT) throw bad(`window size / slide must be at most ${MAX_WINDOWS_PER_EVENT}, got ${size / slide}`)
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

  push(keyName: string, keys: RCol, values: Float64Array | undefined, times: Float64Array): void {
    checkKeyKind(this.kind, keyName, keys)
    this.kind = keys.kind
    times.forEach((t, row) => {
      if (t < this.watermark) {
        this.late++
        return
      }
      const value = values?.[row] ?? 0
      const kmax = Math.floor(t / this.slide)
      for (let i = 0; i <= this.maxPerEvent; i++) {
        const start = (kmax - i) * this.slide + 0
        if (start + this.size <= t) break
        if (start > t) continue
        let agg = this.open.get(start)
        if (agg === undefined) {
          agg = new KeyedAgg(keys.kind, this.withValues)
          this.open.set(start, agg)
        }
        agg.add(keyAt(keys, row), value)
      }
    })
  }

  advance(w: number): Array<[string, RCol]> {
    if (w > this.watermark) this.watermark = w
    return this.emit((start) => start + this.size <= this.watermark)
  }

  finish(): Array<[string, RCol]> {
    return this.emit(() => true)
  }

  /** The kind of key column seen so far, if any input came. */
  get keyKind(): 'f64' | 'utf8' | undefined {
    return this.kind
  }

  /** The open windows as state rows (`key, start, count` and `sum, min, max` with values), leaving them open. */
  snapshot(): Array<[string, RCol]> {
    const keys: KeyValue[] = []
    const start: number[] = []
    const stats: number[][] = this.withValues ? [[], [], [], []] : [[]]
    for (const s of [...this.open.keys()].sort((a, b) => a - b)) {
      const cols = (this.open.get(s) as KeyedAgg).snapshot()
      const keyCol = (cols[0] as [string, RCol])[1]
      const n = colLen(keyCol)
      for (let i = 0; i < n; i++) {
        keys.push(keyAt(keyCol, i))
        start.push(s)
      }
      cols.slice(1).forEach(([, c], j) => (stats[j] as number[]).push(...(c as { values: Float64Array }).values))
    }
    const kind = this.kind ?? 'utf8'
    const out: Array<[string, RCol]> = [
      ['key', kind === 'utf8' ? { kind: 'utf8', strings: keys as string[] } : f64Col(keys as number[])],
      ['start', f64Col(start)],
    ]
    const names = this.withValues ? ['count', 'sum', 'min', 'max'] : ['count']
    names.forEach((name, j) => out.push([name, f64Col(stats[j] as number[])]))
    return out
  }

  /** Adds checked state rows to the open windows; a bad row fails the call with the state unchanged. */
  restore(rows: Rows): void {
    checkKeyKind(this.kind, 'key', rows.keys)
    const starts = rows.start
    if (starts === undefined) throw new NativeBatchError('start', undefined, 'missing column')
    starts.forEach((s, i) => {
      if (Math.round(s / this.slide) * this.slide + 0 !== s) throw new NativeBatchError('start', i, `${s} is not the start of a window of slide ${this.slide}`)
    })
    this.kind = rows.keys.kind
    starts.forEach((s, row) => {
      let agg = this.open.get(s)
      if (agg === undefined) {
        agg = new KeyedAgg(rows.keys.kind, this.withValues)
        this.open.set(s, agg)
      }
      agg.merge(rows, row)
    })
  }

  private emit(closes: (start: number) => boolean): Array<[string, RCol]> {
    const starts = [...this.open.keys()].filter(closes).sort((a, b) => a - b)
    const keys: KeyValue[] = []
    const start: number[] = []
    const end: number[] = []
    const stats: number[][] = this.withValues ? [[], [], [], [], []] : [[]]
    for (const s of starts) {
      const agg = this.open.get(s) as KeyedAgg
      this.open.delete(s)
      const cols = agg.finish()
      const keyCol = (cols[0] as [string, RCol])[1]
      for (let i = 0; i < agg.size; i++) {
        keys.push(keyAt(keyCol, i))
        start.push(s)
        end.push(s + this.size)
      }
      cols.slice(1).forEach(([, c], j) => (stats[j] as number[]).push(...(c as { values: Float64Array }).values))
    }
    const kind = this.kind ?? 'utf8'
    const out: Array<[string, RCol]> = [
      ['key', kind === 'utf8' ? { kind: 'utf8', strings: keys as string[] } : f64Col(keys as number[])],
      ['start', f64Col(start)],
      ['end', f64Col(end)],
    ]
    const names = this.withValues ? ['count', 'sum', 'min', 'max', 'mean'] : ['count']
    names.forEach((name, j) => out.push([name, f64Col(stats[j] as number[])]))
    return out
  }
}
