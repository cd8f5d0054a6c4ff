// An append-only durable log in the embedded store: JSON values at stable offsets 0, 1, 2 …, read by offset range.

import { openStore, type Store, type StoreOptions } from '../store/index.js'
import { LogArgumentError, LogClosedError, LogCorruptError, LogValueError } from './errors.js'

/** One entry of a log: its offset and its value. */
export interface LogEntry<T = unknown> {
  readonly offset: number
  readonly value: T
}

/**
 * An open log: one topic of a store. Appends are atomic and durable when they return (with the
 * store's `durability`); an entry never changes once appended, and its offset is the same for
 * every connection, process and reopen. Several connections, in one process or many, may append
 * to one topic at once: each batch gets consecutive offsets.
 *
 * ```ts
 * const log = openLog('/var/lamina/events.db', 'orders')
 * const first = log.append([{ id: 1 }, { id: 2 }]) // 0 on an empty log
 * log.read(first, 10) // [{ offset: 0, value: { id: 1 } }, { offset: 1, value: { id: 2 } }]
 * log.close()
 * ```
 */
export interface Log {
  readonly topic: string
  /** The store's database file. */
  readonly path: string
  /** Entries in the log: the offset the next append gets. Read from the store, so appends by other connections count. */
  readonly length: number
  /**
   * Appends `values` (each stored as its JSON text) in one transaction, and returns the offset of
   * the first (the length before, when `values` is empty).
   *
   * @throws LogValueError when a value has no JSON form; then nothing is appended.
   */
  append(values: readonly unknown[]): number
  /**
   * At most `max` entries from offset `from` on, in offset order: fewer at the end of the log,
   * none from `length` on. Values come back as `JSON.parse` gives them.
   *
   * @throws LogCorruptError when an entry below the length is missing or is not JSON.
   */
  read(from: number, max?: number): LogEntry[]
  /** Closes the log, and its store when `openLog` opened it from a path. Idempotent. */
  close(): void
}

/** Entries `read` returns when not told. */
const READ_MAX = 1000
/** Digits of an offset in a key: any safe integer fits, and keys sort as their offsets do. */
const DIGITS = 16
/** The namespace holding every topic's length (the key is the topic). */
const LENGTHS = 'log.length'
/** A namespace no one stores in: deleting from it starts a transaction with a write (see `append`). */
const WRITE_LOCK = 'log.write-lock'

/**
 * Opens `topic` of the store at path `store` (opened with `options`, created when missing), or of
 * an open Store (left open by `close`).
 *
 * Each entry is one key of the namespace `log.entries/<topic>`: its offset zero-padded to 16
 * digits, so that key order is offset order and a range of offsets is a few prefix listings (a
 * prefix of k fewer digits is an aligned block of 10^k offsets). The length is the key `<topic>`
 * of the namespace `log.length`, written in the same transaction as the entries.
 *
 * @throws LogArgumentError when `topic` is not a non-empty string.
 * @throws StoreOpenError when the store at the path cannot be opened.
 */
export function openLog(store: string | Store, topic: string, options: StoreOptions = {}): Log {
  if (typeof topic !== 'string' || topic === '') throw new LogArgumentError(String(topic), 'open', 'topic must be a non-empty string')
  if (typeof store === 'string') return new StoredLog(openStore(store, options), topic, true)
  return new StoredLog(store, topic, false)
}

class StoredLog implements Log {
  private readonly entries: string
  private isClosed = false

  constructor(
    private readonly store: Store,
    readonly topic: string,
    private readonly owned: boolean,
  ) {
    this.entries = `log.entries/${topic}`
  }

  get path(): string {
    return this.store.path
  }

  get length(): number {
    this.check('read the length')
    return this.lengthIn(this.store)
  }

  append(values: readonly unknown[]): number {
    this.check('append')
    if (!Array.isArray(values)) throw new LogArgumentError(this.topic, 'append', 'values must be an array')
    // Encoded before the transaction, so a bad value writes nothing and holds no lock.
    const texts = values.map((value, i) => this.encode(value, i))
    return this.store.transaction((tx) => {
      // better-sqlite3 begins a transaction DEFERRED: one that reads first and then writes fails
      // at once (SQLITE_BUSY_SNAPSHOT, no busy wait) when another connection appended in between.
      // A write first takes the write lock, waiting up to the store's busy timeout, as BEGIN
      // IMMEDIATE would; the length read after it is then the latest.
      tx.delete(WRITE_LOCK, this.topic)
      const first = this.lengthIn(tx)
      for (let i = 0; i < texts.length; i++) tx.put(this.entries, keyOf(first + i), texts[i]!)
      if (texts.length > 0) tx.put(LENGTHS, this.topic, String(first + texts.length))
      return first
    })
  }

  read(from: number, max: number = READ_MAX): LogEntry[] {
    this.check('read')
    if (!Number.isSafeInteger(from) || from < 0) throw new LogArgumentError(this.topic, 'read', `from must be a non-negative integer, got ${String(from)}`)
    if (!Number.isSafeInteger(max) || max <= 0) throw new LogArgumentError(this.topic, 'read', `max must be a positive integer, got ${String(max)}`)
    // Entries below the length never change, so the range read after it is consistent even while
    // other connections append.
    const end = Math.min(from + max, this.lengthIn(this.store))
    const out: LogEntry[] = []
    for (let at = from; at < end; ) {
      // The largest aligned block of 10^k offsets starting at `at` and ending by `end`: one listing.
      let size = 1
      let digits = DIGITS
      while (at % (size * 10) === 0 && at + size * 10 <= end) {
        size *= 10
        digits--
      }
      const rows = this.store.list(this.entries, keyOf(at).slice(0, digits))
      for (let i = 0; i < size; i++) {
        const row = rows[i]
        const offset = at + i
        if (row === undefined || row.key !== keyOf(offset)) throw new LogCorruptError(this.topic, offset, 'the entry is missing')
        out.push({ offset, value: this.decode(row.value, offset) })
      }
      at += size
    }
    return out
  }

  close(): void {
    if (this.isClosed) return
    this.isClosed = true
    if (this.owned) this.store.close()
  }

  private lengthIn(ops: Pick<Store, 'get'>): number {
    const stored = ops.get(LENGTHS, this.topic)
    if (stored === undefined) return 0
    const length = typeof stored === 'string' && /^(0|[1-9][0-9]*)$/.test(stored) ? Number(stored) : NaN
    if (!Number.isSafeInteger(length))
      throw new LogCorruptError(this.topic, undefined, `its length is not a count: ${JSON.stringify(typeof stored === 'string' ? stored : '<bytes>')}`)
    return length
  }

  private encode(value: unknown, index: number): string {
    let text: string | undefined
    try {
      text = JSON.stringify(value)
    } catch (error) {
      throw new LogValueError(this.topic, index, error instanceof Error ? error.message : String(error), { cause: error })
    }
    if (text === undefined) throw new LogValueError(this.topic, index, `${typeof value} has no JSON form`)
    return text
  }

  private decode(stored: string | Uint8Array, offset: number): unknown {
    if (typeof stored !== 'string') throw new LogCorruptError(this.topic, offset, 'the entry is bytes, not JSON text')
    try {
      return JSON.parse(stored)
    } catch {
      throw new LogCorruptError(this.topic, offset, 'the entry is not JSON')
    }
  }

  private check(operation: string): void {
    if (this.isClosed) throw new LogClosedError(this.topic, operation)
  }
}

function keyOf(offset: number): string {
  return String(offset).padStart(DIGITS, '0')
}
