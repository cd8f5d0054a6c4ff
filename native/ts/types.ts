// The contracts of the native core: the columnar batch layout, chain specs, and the engine interface
// that both the native binding and the TypeScript reference implement.

/**
 * A string column: row `i` is the UTF-8 text `data[offsets[i] .. offsets[i + 1]]`, so `offsets`
 * has one more entry than there are rows. Offsets must not decrease, must lie within `data`, must
 * not split a character, and the bytes they cover must be valid UTF-8.
 */
export interface Utf8Column {
  readonly data: Uint8Array
  readonly offsets: Uint32Array
}

/** A column: numbers in a `Float64Array`, or strings as a {@link Utf8Column}. */
export type Column = Float64Array | Utf8Column

/**
 * A batch: named columns of equal length. Columns cross into Rust without copying.
 *
 * By convention the expression language calls a string column `s`, a numeric one `x`, and
 * windows read event times (numbers, e.g. epoch milliseconds) from `t`.
 */
export type Batch = { readonly [name: string]: Column }

/** Splits string column `input` (default `s`) into lowercase words, written to `output` (default: `input`); other columns repeat per word. */
export interface TokenizeStep {
  readonly op: 'tokenize'
  readonly input?: string
  readonly output?: string
}

/** Keeps the rows where a boolean expression holds, e.g. `len(s) > 2` or `x > 3 && x < 10`. */
export interface FilterStep {
  readonly op: 'filter'
  readonly expr: string
}

/** Adds or replaces a column with a number or string expression, e.g. `x * 2 + 1`; `as` defaults to `x` for numbers and `s` for strings. */
export interface MapStep {
  readonly op: 'map'
  readonly expr: string
  readonly as?: string
}

/** Splits each batch into `n` batches by `hashKey(String(row[key]))` (key default `s`). Must be last. */
export interface PartitionStep {
  readonly op: 'partition'
  readonly n: number
  readonly key?: string
}

/** Counts rows per key (default `s`); the result `{ key, count }` comes out of `finish`. Must be last. */
export interface CountStep {
  readonly op: 'count'
  readonly key?: string
}

/** Count, sum, min, max and mean of `value` (default `x`) per key (default `s`), on `finish`. Must be last. */
export interface AggregateStep {
  readonly op: 'aggregate'
  readonly key?: string
  readonly value?: string
}

/** What every window step has: key, value and time columns, and the allowed lateness. */
export interface WindowStepBase {
  readonly op: 'window'
  /** The key column. @default 's' */
  readonly key?: string
  /** A number column to sum, min, max and mean besides the count. @default undefined (counts only) */
  readonly value?: string
  /** The event-time column (numbers, e.g. epoch ms). @default 't' */
  readonly time?: string
  /**
   * How long after its end a window is kept for late rows: a row with `t < watermark -
   * allowedLatenessMs` is late; one within it whose key's window fired updates it and fires it
   * again (the row returned by `push`, with `late` 1). @default 0
   */
  readonly allowedLatenessMs?: number
}

/**
 * Keyed event-time windows `[k·slide, k·slide + size)` (tumbling when `slide` is omitted), with
 * times from `time` (default `t`). Counts per key, plus sum/min/max/mean when `value` is given.
 * `advance(watermark)` fires windows whose end is at or below the watermark (`late` 0); `finish`
 * the rest. Rows with a time below the watermark less the allowed lateness are late: counted in
 * `late`, kept for `takeLate`, not aggregated.
 */
export interface FixedWindowStep extends WindowStepBase {
  readonly size: number
  readonly slide?: number
  readonly gap?: undefined
}

/**
 * Keyed session windows: a row at `t` opens `[t, t + gap)` and merges with every window of its
 * key that it overlaps (counts and sums add, min and max combine). Fires, keeps and refires as
 * {@link FixedWindowStep} does.
 */
export interface SessionWindowStep extends WindowStepBase {
  readonly gap: number
  readonly size?: undefined
  readonly slide?: undefined
}

/** A window step: fixed windows (`size`, `slide`) or session windows (`gap`). Output columns: `key, start, end, count`, with `value` also `sum, min, max, mean`, then `late` (1 for a window fired again by a row within the allowed lateness, else 0). */
export type WindowStep = FixedWindowStep | SessionWindowStep

/** One step of a fused chain. */
export type StepSpec = TokenizeStep | FilterStep | MapStep | PartitionStep | CountStep | AggregateStep | WindowStep

/**
 * A compiled chain with its state. Every call returns the batches it produced: a chain without a
 * sink gives one batch per `push`; `partition` gives `n` per `push`; `count`/`aggregate` give one on
 * `finish`; `window` gives one on each `advance` that fires a window (none when none fires), one on
 * `finish`, and one on a `push` whose rows within the allowed lateness fired windows again. A
 * failing call changes no state.
 */
export interface Chain {
  push(batch: Batch): Batch[]
  advance(watermark: number): Batch[]
  finish(): Batch[]
  /**
   * The keyed state of a count, aggregate or window chain as at most one batch of rows (`key`,
   * `start` for windows, `count`, `sum`, `min`, `max` with values, then `end` and `fired` (0 or 1)
   * for windows), leaving it unchanged. The
   * batch may have no rows (its key column keeps the key kind); there is no batch before the
   * chain's sink has seen input, or for a chain without such a sink. The watermark and the late
   * count are not part of it.
   */
  snapshot(): Batch[]
  /**
   * Adds a snapshot's rows (all of them, or the rows of some keys after a rescale) to the chain's
   * state; rows of a key the chain has already combine with it (counts and sums add). A bad row
   * fails the call (a NativeBatchError naming the column and row) with the state unchanged.
   */
  restore(batch: Batch): void
  /**
   * The late rows of the last `push` of a window chain, with the columns that reached the window
   * step (the input's, after any filter or map), as at most one batch; taking them clears them,
   * and the next push replaces them.
   */
  takeLate(): Batch[]
  /** Rows of a window chain that arrived later than the allowed lateness (all pushes so far). */
  readonly late: number
  readonly finished: boolean
}

/** The words of a tokenized column and, for each word, the row it came from. */
export interface Tokenized {
  readonly words: Utf8Column
  readonly rows: Uint32Array
}

/** Word counts in first-seen order. */
export interface WordCounts {
  readonly key: Utf8Column
  readonly count: Float64Array
}

/** A join's output and, per output row, the left and right row it came from. */
export interface Joined {
  readonly batch: Batch
  readonly left: Uint32Array
  readonly right: Uint32Array
}

/** Options of {@link BatchEngine.hashJoin}. */
export interface JoinOptions {
  /** @default 'key' */
  readonly leftKey?: string
  /** @default leftKey */
  readonly rightKey?: string
  /** Prefix for the right side's column names. @default '' */
  readonly rightPrefix?: string
}

/** The operators, as implemented natively and by the TypeScript reference, with the same semantics. */
export interface BatchEngine {
  readonly name: 'native' | 'reference'
  /** FNV-1a (32-bit) over the UTF-16 code units of `String(key)`: the partitioning hash. */
  hashKey(key: string | number): number
  tokenize(column: Utf8Column): Tokenized
  /** Compiles a fused chain once; see {@link StepSpec}. */
  compile(steps: readonly StepSpec[]): Chain
  hashPartition(batch: Batch, n: number, key?: string): Batch[]
  hashJoin(left: Batch, right: Batch, options?: JoinOptions): Joined
  /** Word count of a whole UTF-8 buffer in one call (words of UTF-16 length >= `minLength`). */
  wordcount(text: Uint8Array, minLength?: number): WordCounts
}
