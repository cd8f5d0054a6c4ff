// Errors of the nursery: starting and supervising child processes.

import { describeCause, LaminaError } from '../../kernel/index.js'

/** Thrown when a peer process cannot be started or does not become ready in time. */
export class ChildStartError extends LaminaError {
  readonly code = 'ERR_PEER_START'
  override readonly name = 'ChildStartError'
  constructor(
    readonly index: number,
    reason: string,
  ) {
    super(`peer ${index} did not start: ${reason}`)
  }
}

/** Thrown when a supervised peer process dies and the restart policy does not bring it back. */
export class ChildFailedError extends LaminaError {
  readonly code = 'ERR_PEER_FAILED'
  override readonly name = 'ChildFailedError'
  constructor(
    readonly index: number,
    readonly exitCode: number | null,
    readonly signal: string | null,
    cause?: unknown,
  ) {
    super(`peer ${index} died (${signal ?? `exit code ${exitCode}`})${cause === undefined ? '' : `: restart failed: ${describeCause(cause)}`}`, { cause })
  }
}
