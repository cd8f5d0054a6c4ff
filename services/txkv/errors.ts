// The transactional KV store's error classes, each with a stable `code`; `retryable` says whether
// running the transaction again may succeed (transact does so by itself, within its budget).

import { LaminaError } from '../../kernel/index.js'

/**
 * The transaction lost to another one: what it read changed before it could commit (`stale`), or
 * another transaction held a lock it needed (`holder`). Nothing it wrote was applied. Retryable.
 */
export class TxConflictError extends LaminaError {
  readonly code = 'ERR_TXKV_CONFLICT'
  override readonly name = 'TxConflictError'
  readonly retryable = true
  constructor(
    /** The key in the way. */
    readonly key: string,
    /** The transaction holding a lock on it, when that was the reason (else the key changed). */
    readonly holder: string | undefined,
  ) {
    super(holder === undefined ? `txkv: key ${JSON.stringify(key)} changed since the transaction read it` : `txkv: key ${JSON.stringify(key)} is locked by transaction ${holder}`)
  }
}

/** The transaction was aborted before its commit point (it ran past its time limit and someone aborted it). Retryable. */
export class TxAbortedError extends LaminaError {
  readonly code = 'ERR_TXKV_ABORTED'
  override readonly name = 'TxAbortedError'
  readonly retryable = true
  constructor(
    readonly tx: string,
    reason: string,
  ) {
    super(`txkv: transaction ${tx} was aborted: ${reason}`)
  }
}

/**
 * A transaction breaks a documented limit (keys, bytes or duration; services/txkv/README.md),
 * naming which and by how much. Not retryable: the same transaction breaks it again.
 */
export class TxLimitError extends LaminaError {
  readonly code = 'ERR_TXKV_LIMIT'
  override readonly name = 'TxLimitError'
  readonly retryable = false
  constructor(
    readonly limit: 'keys' | 'bytes' | 'durationMs',
    readonly max: number,
    readonly actual: number,
  ) {
    super(`txkv: a transaction may use at most ${max} ${limit === 'durationMs' ? 'ms' : limit}, this one used ${actual}`)
  }
}

/**
 * The commit's outcome is unknown: the primary shard did not answer at the commit point and its
 * record could not be read afterwards. The transaction either committed or will be aborted by
 * whoever finds its locks; it is never half-applied. Not retried by transact (it might run twice).
 */
export class TxIndeterminateError extends LaminaError {
  readonly code = 'ERR_TXKV_INDETERMINATE'
  override readonly name = 'TxIndeterminateError'
  readonly retryable = false
  constructor(
    readonly tx: string,
    reason: string,
  ) {
    super(`txkv: the outcome of transaction ${tx} is unknown: ${reason}`)
  }
}

/** transact ran out of attempts or time, each attempt lost to a retryable error (the last is the cause). */
export class TxRetriesExhaustedError extends LaminaError {
  readonly code = 'ERR_TXKV_RETRIES'
  override readonly name = 'TxRetriesExhaustedError'
  readonly retryable = false
  constructor(
    readonly attempts: number,
    readonly elapsedMs: number,
    options: { readonly cause: unknown },
  ) {
    super(`txkv: gave up after ${attempts} attempts in ${Math.round(elapsedMs)} ms: ${options.cause instanceof Error ? options.cause.message : String(options.cause)}`, options)
  }
}

/** A transaction used after it ended (a put after commit, a read after an abort). */
export class TxClosedError extends LaminaError {
  readonly code = 'ERR_TXKV_CLOSED'
  override readonly name = 'TxClosedError'
  readonly retryable = false
  constructor(readonly tx: string) {
    super(`txkv: transaction ${tx} has ended; start another with transact`)
  }
}
