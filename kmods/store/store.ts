// The embedded durable store: a namespaced key-value store over SQLite (better-sqlite3, WAL mode).

import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import Database from 'better-sqlite3'
import { StoreArgumentError, StoreAsyncTransactionError, StoreClosedError, StoreIOError, StoreOpenError } from './errors.js'

/** A stored value: bytes, or text. A value comes back with the type it was put with. */
export type StoreValue = Uint8Array | string

/** One key and its value, as `list` returns them. */
export interface StoreEntry {
  readonly key: string
  readonly value: StoreValue
}

/** Options of `openStore`. All optional. */
export interface StoreOptions {
  /** Milliseconds a write waits for another connection's lock before failing with ERR_STORE_IO. @default 5000 */
  readonly busyTimeoutMs?: number
  /**
   * `full`: every committed transaction survives a power loss (SQLite `synchronous=FULL`);
   * `normal`: the last transactions may be lost on power loss, never corrupted (faster).
   * @default 'full'
   */
  readonly durability?: 'full' | 'normal'
  /** Open an existing database for reading only. @default false */
  readonly readonly?: boolean
  /**
   * Permissions of the database file: a new one is created with them, an existing one is set to
   * them (SQLite gives its `-wal` and `-shm` files the same). `0o600` for a store holding secrets
   * (the peer's private key). @default the process's default (0o666 less the umask)
   */
  readonly mode?: number
}

/** The operations on stored keys; a `Store` and the argument of `transaction` both offer them. */
export interface StoreOps {
  /** The value of `key` in namespace `ns`, or undefined. */
  get(ns: string, key: string): StoreValue | undefined
  /** Sets `key` in `ns` to `value` (bytes are copied). */
  put(ns: string, key: string, value: StoreValue): void
  /** Removes `key` from `ns`; true when it was there. */
  delete(ns: string, key: string): boolean
  /** Every entry of `ns` whose key starts with `prefix` (all of them without one), in key order (by UTF-8 bytes). */
  list(ns: string, prefix?: string): StoreEntry[]
  /** The keys of `ns` that start with `prefix`, in key order, without reading their values. */
  keys(ns: string, prefix?: string): string[]
  /** Removes every key of `ns` that starts with `prefix` (`''`: all of them); returns how many were removed. */
  deletePrefix(ns: string, prefix: string): number
}

/**
 * An open store. Every call is synchronous (SQLite in this thread); a write from another
 * connection holding the lock is waited for up to `busyTimeoutMs`.
 *
 * ```ts
 * const store = openStore('/tmp/peer/peer.db')
 * store.put('identity', 'key', bytes)
 * store.transaction((tx) => { tx.put('kv', 'a', '1'); tx.put('kv', 'b', '2') })
 * store.close()
 * ```
 */
export interface Store extends StoreOps {
  /** The database file (or `:memory:`). */
  readonly path: string
  /** True once `close()` was called. */
  readonly closed: boolean
  /**
   * Runs `fn` in one transaction: everything it writes commits together, or nothing does when it
   * throws (the error is rethrown). Nested calls become savepoints. `fn` must be synchronous.
   */
  transaction<T>(fn: (tx: StoreOps) => T): T
  /** Closes the database. Idempotent. */
  close(): void
}

interface Row {
  key: string
  value: Buffer | string
}

/**
 * Opens (creating when missing, with its parent directories) the store in the SQLite file at
 * `path`. Several connections, in one process or many, may open the same file at once.
 *
 * @throws StoreOpenError when the file cannot be opened or is not a Lamina store.
 */
export function openStore(path: string, options: StoreOptions = {}): Store {
  let db: Database.Database
  try {
    if (path !== ':memory:' && options.readonly !== true) mkdirSync(dirname(path), { recursive: true })
    if (path !== ':memory:' && options.readonly !== true && options.mode !== undefined) {
      // Created (or tightened) before SQLite opens it, so the secret is never readable by others.
      closeSync(openSync(path, 'a', options.mode))
      chmodSync(path, options.mode)
    }
    db = new Database(path, { readonly: options.readonly === true, fileMustExist: options.readonly === true, timeout: options.busyTimeoutMs ?? 5000 })
  } catch (error) {
    throw new StoreOpenError(path, error)
  }
  try {
    if (options.readonly !== true) {
      db.pragma('journal_mode = WAL')
      db.pragma(`synchronous = ${options.durability === 'normal' ? 'NORMAL' : 'FULL'}`)
      db.exec('CREATE TABLE IF NOT EXISTS entries (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID')
    }
    return new SqliteStore(path, db)
  } catch (error) {
    db.close()
    throw new StoreOpenError(path, error)
  }
}

class SqliteStore implements Store {
  private readonly getStmt: Database.Statement<[string, string], { value: Buffer | string }>
  private readonly putStmt: Database.Statement<[string, string, Buffer | string]>
  private readonly deleteStmt: Database.Statement<[string, string]>
  private readonly listAllStmt: Database.Statement<[string], Row>
  private readonly listFromStmt: Database.Statement<[string, string], Row>
  private readonly listRangeStmt: Database.Statement<[string, string, string], Row>
  private readonly keysFromStmt: Database.Statement<[string, string], { key: string }>
  private readonly keysRangeStmt: Database.Statement<[string, string, string], { key: string }>
  private readonly deleteFromStmt: Database.Statement<[string, string]>
  private readonly deleteRangeStmt: Database.Statement<[string, string, string]>
  private isClosed = false
  private readonly ops: StoreOps

  constructor(
    readonly path: string,
    private readonly db: Database.Database,
  ) {
    try {
      this.getStmt = db.prepare('SELECT value FROM entries WHERE ns = ? AND key = ?')
      this.putStmt = db.prepare('INSERT INTO entries (ns, key, value) VALUES (?, ?, ?) ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value')
      this.deleteStmt = db.prepare('DELETE FROM entries WHERE ns = ? AND key = ?')
      this.listAllStmt = db.prepare('SELECT key, value FROM entries WHERE ns = ? ORDER BY key')
      this.listFromStmt = db.prepare('SELECT key, value FROM entries WHERE ns = ? AND key >= ? ORDER BY key')
      this.listRangeStmt = db.prepare('SELECT key, value FROM entries WHERE ns = ? AND key >= ? AND key < ? ORDER BY key')
      this.keysFromStmt = db.prepare('SELECT key FROM entries WHERE ns = ? AND key >= ? ORDER BY key')
      this.keysRangeStmt = db.prepare('SELECT key FROM entries WHERE ns = ? AND key >= ? AND key < ? ORDER BY key')
      this.deleteFromStmt = db.prepare('DELETE FROM entries WHERE ns = ? AND key >= ?')
      this.deleteRangeStmt = db.prepare('DELETE FROM entries WHERE ns = ? AND key >= ? AND key < ?')
    } catch (error) {
      // A file without our table (opened read-only), or another program's database.
      throw new StoreOpenError(path, error)
    }
    this.ops = {
      get: (ns, key) => this.get(ns, key),
      put: (ns, key, value) => this.put(ns, key, value),
      delete: (ns, key) => this.delete(ns, key),
      list: (ns, prefix) => this.list(ns, prefix),
      keys: (ns, prefix) => this.keys(ns, prefix),
      deletePrefix: (ns, prefix) => this.deletePrefix(ns, prefix),
    }
  }

  get closed(): boolean {
    return this.isClosed
  }

  get(ns: string, key: string): StoreValue | undefined {
    this.check('get', ns, key)
    const row = this.run('get', () => this.getStmt.get(ns, key))
    return row === undefined ? undefined : fromColumn(row.value)
  }

  put(ns: string, key: string, value: StoreValue): void {
    this.check('put', ns, key)
    let column: Buffer | string
    if (typeof value === 'string') column = value
    else if (value instanceof Uint8Array) column = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
    else throw new StoreArgumentError(this.path, `put ${ns}/${key}`, `value must be a Uint8Array or a string, got ${describeType(value)}`)
    this.run(`put ${ns}/${key}`, () => this.putStmt.run(ns, key, column))
  }

  delete(ns: string, key: string): boolean {
    this.check('delete', ns, key)
    return this.run(`delete ${ns}/${key}`, () => this.deleteStmt.run(ns, key)).changes > 0
  }

  list(ns: string, prefix?: string): StoreEntry[] {
    this.check('list', ns, prefix ?? '')
    const rows = this.run(`list ${ns}`, () => {
      if (prefix === undefined || prefix === '') return this.listAllStmt.all(ns)
      const end = prefixEnd(prefix)
      return end === undefined ? this.listFromStmt.all(ns, prefix) : this.listRangeStmt.all(ns, prefix, end)
    })
    return rows.map((row) => ({ key: row.key, value: fromColumn(row.value) }))
  }

  keys(ns: string, prefix = ''): string[] {
    this.check('keys', ns, prefix)
    const end = prefixEnd(prefix)
    const rows = this.run(`keys ${ns}`, () => (end === undefined ? this.keysFromStmt.all(ns, prefix) : this.keysRangeStmt.all(ns, prefix, end)))
    return rows.map((row) => row.key)
  }

  deletePrefix(ns: string, prefix: string): number {
    this.check('deletePrefix', ns, prefix)
    const end = prefixEnd(prefix)
    return this.run(`deletePrefix ${ns}/${prefix}`, () => (end === undefined ? this.deleteFromStmt.run(ns, prefix) : this.deleteRangeStmt.run(ns, prefix, end))).changes
  }

  transaction<T>(fn: (tx: StoreOps) => T): T {
    if (this.isClosed) throw new StoreClosedError(this.path, 'run a transaction')
    const wrapped = this.db.transaction(() => {
      const result = fn(this.ops)
      if (isPromiseLike(result)) {
        ;(result as Promise<unknown>).catch(() => undefined)
        throw new StoreAsyncTransactionError(this.path)
      }
      return result
    })
    try {
      return wrapped()
    } catch (error) {
      // BEGIN or COMMIT failed (busy, I/O); errors of `fn` itself are rethrown unchanged.
      if (error instanceof Database.SqliteError) throw new StoreIOError(this.path, 'transaction', error)
      throw error
    }
  }

  close(): void {
    if (this.isClosed) return
    this.isClosed = true
    this.db.close()
  }

  private check(operation: string, ns: string, key: string): void {
    if (this.isClosed) throw new StoreClosedError(this.path, operation)
    if (typeof ns !== 'string' || ns === '') throw new StoreArgumentError(this.path, operation, `namespace must be a non-empty string, got ${describeType(ns)}`)
    if (typeof key !== 'string') throw new StoreArgumentError(this.path, operation, `key must be a string, got ${describeType(key)}`)
  }

  private run<R>(operation: string, fn: () => R): R {
    try {
      return fn()
    } catch (error) {
      throw new StoreIOError(this.path, operation, error)
    }
  }
}

/** A plain Uint8Array view of a BLOB column (no copy), or the TEXT as is. */
function fromColumn(value: Buffer | string): StoreValue {
  return typeof value === 'string' ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
}

/**
 * The smallest string greater than every string starting with `prefix`, in SQLite's BINARY
 * (UTF-8 byte) order, which is code point order: the prefix with its last code point incremented
 * (dropping trailing U+10FFFF). Undefined when no such bound exists.
 */
export function prefixEnd(prefix: string): string | undefined {
  const points = Array.from(prefix, (c) => c.codePointAt(0)!)
  while (points.length > 0) {
    let last = points.pop()!
    if (last >= 0x10ffff) continue
    last++
    if (last >= 0xd800 && last <= 0xdfff) last = 0xe000
    points.push(last)
    return String.fromCodePoint(...points)
  }
  return undefined
}

function isPromiseLike(value: unknown): boolean {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
}

function describeType(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value
}
