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

/** A put, cas or keep-alive named a lease the shard does not hold (it expired, was revoked, or never was granted there). */
export class KvLeaseNotFoundError extends LaminaError {
  readonly code = 'ERR_KV_LEASE_NOT_FOUND'
  override readonly name = 'KvLeaseNotFoundError'
  readonly retryable = false
  constructor(
    readonly shard: string,
    readonly lease: string,
  ) {
    super(`kv shard ${shard}: no lease ${JSON.stringify(lease)} (expired, revoked, or never granted)`)
  }
}

/**
 * A call that did not get an answer in time, from any replica of its shard (no leader, peers
 * unreachable). Retryable. A write's outcome is unknown then; retrying it with the same client is
 * safe, since writes carry request ids and a shard applies each id once.
 */
export class KvUnavailableError extends LaminaError {
  readonly code = 'ERR_KV_UNAVAILABLE'
  override readonly name = 'KvUnavailableError'
  readonly retryable = true
  constructor(
    readonly shard: string,
    readonly call: string,
    reason: string,
  ) {
    super(`kv shard ${shard}: ${call} got no answer: ${reason}`)
  }
}

/** A request or answer on the KV protocol that does not fit it (names the field), or an answer with an error the client does not know. */
export class KvProtocolError extends LaminaError {
  readonly code = 'ERR_KV_PROTOCOL'
  override readonly name = 'KvProtocolError'
  readonly retryable = false
  constructor(
    readonly peer: string,
    reason: string,
  ) {
    super(`kv protocol, peer ${peer}: ${reason}`)
  }
}

/** An error a KV replica answered with, as the client sees it: the remote `code`, message, and whether it is retryable. */
export class KvRemoteError extends LaminaError {
  override readonly name = 'KvRemoteError'
  constructor(
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    readonly peer: string,
  ) {
    super(`${message} (from ${peer})`)
  }
}

/** A call reached a peer that runs no replica of the shard (it moved away, or is not started there yet). Retryable on the shard's other replicas. */
export class KvNotHereError extends LaminaError {
  readonly code = 'ERR_KV_NOT_HERE'
  override readonly name = 'KvNotHereError'
  readonly retryable = true
  constructor(
    readonly shard: string,
    readonly peer: string,
  ) {
    super(`kv: peer ${peer} runs no replica of shard ${shard}`)
  }
}

/** A message stamped with a fencing token older than one already admitted (`Fence.admit`): it comes from a holder that lost its role. */
export class KvFencedError extends LaminaError {
  readonly code = 'ERR_KV_FENCED'
  override readonly name = 'KvFencedError'
  readonly retryable = false
  constructor(
    readonly role: string,
    readonly token: number,
    readonly newest: number,
  ) {
    super(`kv: role ${JSON.stringify(role)}: token ${token} is older than token ${newest}, already admitted: its holder lost the role`)
  }
}
