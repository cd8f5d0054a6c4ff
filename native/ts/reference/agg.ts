// Keyed aggregates of the reference, in first-seen key order; mirrors native/src/agg.rs.

import { NativeBatchError } from '../errors.js'
import { colLen, f64Col, keyAt, type KeyValue, type RCol } from './batch.js'
import type { Rows } from './state.js'

/** Count, sum, min, max and mean per key, kept across batches in first-seen key order (keys compared as a `Map` does). */
export class KeyedAgg {
  private readonly index = new Map<KeyValue, number>()
  readonly keys: KeyValue[] = []
  readonly count: number[] = []
  readonly sum: number[] = []
  readonly min: number[] = []
  readonly max: number[] = []
  constructor(
    readonly kind: 'f64' | 'utf8',
    readonly withValues: boolean,
  ) {}

  get size(): number {
    return this.count.length
  }

  /** The slot of `key`, created (count 0, empty min/max) on first sight. */
  private slotOf(key: KeyValue): number {
    let slot = this.index.get(key)
    if (slot === undefined) {
      slot = this.count.length
      // A Map compares keys with SameValueZero and stores -0 as +0: say so explicitly for the key column.
      this.index.set(key, slot)
      this.keys.push(key === 0 ? 0 : key)
      this.count.push(0)
      if (this.withValues) {
        this.sum.push(0)
        this.min.push(Infinity)
        this.max.push(-Infinity)
      }
    }
    return slot
  }

  /** Adds one row; returns the key's slot. */
  add(key: KeyValue, value: number): number {
    const slot = this.slotOf(key)
    this.count[slot] = (this.count[slot] as number) + 1
    if (this.withValues) {
      this.sum[slot] = (this.sum[slot] as number) + value
      this.min[slot] = Math.min(this.min[slot] as number, value)
      this.max[slot] = Math.max(this.max[slot] as number, value)
    }
    return slot
  }

  /** The state as columns `key, count` (and `sum, min, max` with values), leaving it unchanged. */
  snapshot(): Array<[string, RCol]> {
    return this.finish().filter(([name]) => name !== 'mean')
  }

  /** Adds row `row` of a snapshot: its count, sum, min and max combine with what the key has. Returns the key's slot. */
  merge(rows: Rows, row: number): number {
    const slot = this.slotOf(keyAt(rows.keys, row))
    this.count[slot] = (this.count[slot] as number) + (rows.count[row] as number)
    if (this.withValues && rows.values !== undefined) {
      this.sum[slot] = (this.sum[slot] as number) + (rows.values[0][row] as number)
      this.min[slot] = Math.min(this.min[slot] as number, rows.values[1][row] as number)
      this.max[slot] = Math.max(this.max[slot] as number, rows.values[2][row] as number)
    }
    return slot
  }

  push(keys: RCol, values: Float64Array | undefined): void {
    const n = colLen(keys)
    for (let i = 0; i < n; i++) this.add(keyAt(keys, i), values?.[i] ?? 0)
  }

  finish(): Array<[string, RCol]> {
    const key: RCol = this.kind === 'utf8' ? { kind: 'utf8', strings: this.keys as string[] } : { kind: 'f64', values: Float64Array.from(this.keys as number[]) }
    const cols: Array<[string, RCol]> = [
      ['key', key],
      ['count', f64Col(this.count)],
    ]
    if (this.withValues) {
      cols.push(['sum', f64Col(this.sum)], ['min', f64Col(this.min)], ['max', f64Col(this.max)], ['mean', f64Col(this.sum.map((s, i) => s / (this.count[i] as number)))])
    }
    return cols
  }
}

/** Refuses a key column whose kind differs from the one earlier batches had. */
export function checkKeyKind(expected: 'f64' | 'utf8' | undefined, column: string, col: RCol): void {
  if (expected !== undefined && expected !== col.kind) {
    throw new NativeBatchError(column, undefined, `key column changed kind: earlier batches had ${expected}, this one has ${col.kind}`)
  }
}
