// The log's error classes: every failure of kmods/log is one of these (or a StoreError of kmods/store), with a stable `code`.

import { LaminaError } from '../../kernel/index.js'

/** Thrown when a log is opened or called with an argument out of range (an empty topic, a negative offset, values that are not an array). */
export class LogArgumentError extends LaminaError {
  readonly code = 'ERR_LOG_ARGUMENT'
  override readonly name = 'LogArgumentError'
  constructor(
    readonly topic: string,
    operation: string,
    reason: string,
  ) {
    super(`log ${JSON.stringify(topic)}: ${operation}: ${reason}`)
  }
}

/** Thrown by `append` when a value has no JSON form (undefined, a function, a BigInt, a cycle); nothing of the batch is appended. */
export class LogValueError extends LaminaError {
  readonly code = 'ERR_LOG_VALUE'
  override readonly name = 'LogValueError'
  constructor(
    readonly topic: string,
    readonly index: number,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`log ${JSON.stringify(topic)}: append: value [${index}] cannot be stored as JSON: ${reason}`, options)
  }
}

/** Thrown when what the store holds for a log is not what the log wrote: an entry below the length missing or not JSON, or a malformed length. */
export class LogCorruptError extends LaminaError {
  readonly code = 'ERR_LOG_CORRUPT'
  override readonly name = 'LogCorruptError'
  constructor(
    readonly topic: string,
    readonly offset: number | undefined,
    reason: string,
  ) {
    super(`log ${JSON.stringify(topic)}${offset === undefined ? '' : ` at offset ${offset}`} is corrupt: ${reason}`)
  }
}

/** Thrown when a log is used after `close()`. */
export class LogClosedError extends LaminaError {
  readonly code = 'ERR_LOG_CLOSED'
  override readonly name = 'LogClosedError'
  constructor(
    readonly topic: string,
    operation: string,
  ) {
    super(`log ${JSON.stringify(topic)} is closed: cannot ${operation}`)
  }
}
