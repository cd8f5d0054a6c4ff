// The KV service's error classes, each with a stable `code`; `retryable` says whether the same call may succeed later.

import { LaminaError } from '../../kernel/index.js'

/** A command or call that breaks a documented limit (key or value size, page size): names the field and the limit. */
export class KvLimitError extends LaminaError {
  readonly code = 'ERR_KV_LIMIT'
  override readonly name = 'KvLimitError'
  readonly retryable = false
  constructor(
    readonly field: string,
    readonly limit: number,
    readonly actual: number,
  ) {
    super(`kv: ${field} is ${actual} bytes or items, more than the limit of ${limit}`)
  }
}

/** A command the state machine cannot read (a bad field): names the field path. The store is unchanged. */
export class KvCommandError extends LaminaError {
  readonly code = 'ERR_KV_COMMAND'
  override readonly name = 'KvCommandError'
  readonly retryable = false
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`kv: command field ${field}: ${reason}`)
  }
}

/** A watch or read from a revision the store no longer keeps history for: start again from `oldest` or later. */
export class KvCompactedError extends LaminaError {
  readonly code = 'ERR_KV_COMPACTED'
  override readonly name = 'KvCompactedError'
  readonly retryable = false
  constructor(
    readonly revision: number,
    readonly oldest: number,
  ) {
    super(`kv: revision ${revision} is compacted; the oldest revision kept is ${oldest}`)
  }
}
