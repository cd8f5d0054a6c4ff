// The embedded store's error classes: every failure of kmods/store is one of these, with a stable `code`.

import { LaminaError } from '../../kernel/index.js'

/** Base class of the store's errors; `path` is the database file, `code` says what kind of failure. */
export abstract class StoreError extends LaminaError {
  abstract override readonly code: string
  constructor(
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/** Thrown when a database file cannot be opened or initialised (bad path, not a database, locked too long). */
export class StoreOpenError extends StoreError {
  readonly code = 'ERR_STORE_OPEN'
  override readonly name = 'StoreOpenError'
  constructor(path: string, cause: unknown) {
    super(path, `cannot open store at ${path}: ${describe(cause)}`, { cause })
  }
}

/** Thrown when a store is used after `close()`. */
export class StoreClosedError extends StoreError {
  readonly code = 'ERR_STORE_CLOSED'
  override readonly name = 'StoreClosedError'
  constructor(path: string, operation: string) {
    super(path, `store at ${path} is closed: cannot ${operation}`)
  }
}

/** Thrown when a namespace, key or value has the wrong type or shape (e.g. an empty namespace, a number as value). */
export class StoreArgumentError extends StoreError {
  readonly code = 'ERR_STORE_ARGUMENT'
  override readonly name = 'StoreArgumentError'
  constructor(path: string, operation: string, reason: string) {
    super(path, `store at ${path}: ${operation}: ${reason}`)
  }
}

/** Thrown when SQLite fails a read or write (disk full, I/O error, busy past the timeout). `sqliteCode` is SQLite's own code. */
export class StoreIOError extends StoreError {
  readonly code = 'ERR_STORE_IO'
  override readonly name = 'StoreIOError'
  readonly sqliteCode: string | undefined
  constructor(path: string, operation: string, cause: unknown) {
    super(path, `store at ${path}: ${operation} failed: ${describe(cause)}`, { cause })
    const code = (cause as { code?: unknown } | null)?.code
    this.sqliteCode = typeof code === 'string' ? code : undefined
  }
}

/** Thrown when `transaction(fn)` is given a function that returns a promise: SQLite transactions here are synchronous. */
export class StoreAsyncTransactionError extends StoreError {
  readonly code = 'ERR_STORE_ASYNC_TRANSACTION'
  override readonly name = 'StoreAsyncTransactionError'
  constructor(path: string) {
    super(path, `store at ${path}: transaction function returned a promise; it must be synchronous (it was rolled back)`)
  }
}

function describe(cause: unknown): string {
  return cause instanceof Error ? cause.message : String(cause)
}
