// The fault tolerance layer's error classes: supervision, retries and checkpoints, each with a stable `code`.

import { describeCause, LaminaError, type InstanceCrashedError } from '../../kernel/index.js'

/**
 * Thrown (as the cause of the job's JobFailedError) when failures exceed the restart intensity
 * of every supervisor up to the root: supervision gives up and the job fails.
 */
export class SupervisionEscalatedError extends LaminaError {
  readonly code = 'ERR_SUPERVISION_ESCALATED'
  override readonly name = 'SupervisionEscalatedError'
  constructor(
    readonly operator: string,
    readonly instance: number,
    /** The supervisors that gave up, innermost first (the last is `root`); `maxRestarts` and `withinMs` are the root's. */
    readonly supervisors: readonly string[],
    readonly maxRestarts: number,
    readonly withinMs: number,
    cause: InstanceCrashedError,
  ) {
    super(
      `supervision gave up on ${operator}[${instance}]: ${supervisors.length === 1 ? 'supervisor' : 'supervisors'} ${supervisors.join(', ')} gave up ` +
        `(${supervisors[supervisors.length - 1]} allows ${maxRestarts} restart(s) within ${withinMs} ms) and the failure escalated to the job; ` +
        `last failure: ${describeCause(cause.cause ?? cause)}`,
      { cause },
    )
  }
}

/**
 * Thrown (and recorded as the record's dead letter) when a call still fails after every attempt
 * its retry policy allows; `cause` is the last attempt's error.
 */
export class RetriesExhaustedError extends LaminaError {
  readonly code = 'ERR_RETRIES_EXHAUSTED'
  override readonly name = 'RetriesExhaustedError'
  constructor(
    readonly operator: string,
    readonly instance: number,
    readonly attempts: number,
    cause: unknown,
  ) {
    super(`${operator}[${instance}]: gave up after ${attempts} attempt${attempts === 1 ? '' : 's'}; last error: ${describeCause(cause)}`, { cause })
  }
}

/**
 * Thrown (and recorded as the record's dead letter) when a call fails and its retry budget allows
 * no retry now; `cause` is the last attempt's error.
 */
export class RetryBudgetExceededError extends LaminaError {
  readonly code = 'ERR_RETRY_BUDGET'
  override readonly name = 'RetryBudgetExceededError'
  constructor(
    readonly operator: string,
    readonly instance: number,
    readonly attempts: number,
    cause: unknown,
  ) {
    super(`${operator}[${instance}]: retry budget spent, no retry after ${attempts} attempt${attempts === 1 ? '' : 's'}; last error: ${describeCause(cause)}`, { cause })
  }
}

/** Thrown when a restarted instance's snapshot is on no reachable peer. */
export class CheckpointMissingError extends LaminaError {
  readonly code = 'ERR_CHECKPOINT_MISSING'
  override readonly name = 'CheckpointMissingError'
  constructor(
    readonly instance: string,
    readonly checkpoint: number | 'final',
    readonly peers: readonly string[],
    cause?: unknown,
  ) {
    super(`the snapshot of ${instance} in checkpoint ${checkpoint} is on no reachable peer (tried ${peers.join(', ') || 'none'})`, { cause })
  }
}

/** Thrown when a restored operator's parallelism changed but its state cannot be split by key. */
export class RescaleStateError extends LaminaError {
  readonly code = 'ERR_RESCALE_STATE'
  override readonly name = 'RescaleStateError'
  constructor(
    readonly operator: string,
    from: number,
    to: number,
    reason: string,
  ) {
    super(`cannot restore ${operator} at parallelism ${to} from a checkpoint taken at ${from}: ${reason}`)
  }
}

/** Thrown when a control message of the checkpoint protocol is malformed, or a checkpoint option is out of range. */
export class CheckpointProtocolError extends LaminaError {
  readonly code = 'ERR_CHECKPOINT_PROTOCOL'
  override readonly name = 'CheckpointProtocolError'
  constructor(kind: string, reason: string) {
    super(`checkpoint message ${kind}: ${reason}`)
  }
}
