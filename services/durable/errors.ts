// Errors of durable requests: each names the request (its name and id) and what went wrong.

import { LaminaError } from '../../kernel/index.js'

/** A request used up its attempts (or failed in a way not worth retrying): it is a dead letter. */
export class RequestDeadError extends LaminaError {
  readonly code = 'ERR_REQUEST_DEAD'
  override readonly name = 'RequestDeadError'
  constructor(
    readonly request: string,
    readonly id: string,
    readonly attempts: number,
    /** The last attempt's failure. */
    readonly failure: { readonly code: string; readonly message: string },
  ) {
    super(`request ${request}/${id} is a dead letter after ${attempts} attempt(s): [${failure.code}] ${failure.message}`)
  }
}

/** An attempt ran past the request's `timeoutMs`: it is abandoned (its signal aborts) and the request retried. */
export class RequestTimeoutError extends LaminaError {
  readonly code = 'ERR_REQUEST_TIMEOUT'
  override readonly name = 'RequestTimeoutError'
  constructor(
    readonly request: string,
    readonly id: string,
    readonly timeoutMs: number,
  ) {
    super(`request ${request}/${id}: the handler did not answer within ${timeoutMs} ms`)
  }
}

/** A handler's answer (or a caller's input) does not fit the codec its worker declared. */
export class RequestCodecError extends LaminaError {
  readonly code = 'ERR_REQUEST_CODEC'
  override readonly name = 'RequestCodecError'
  constructor(
    readonly request: string,
    readonly id: string,
    /** `input` or `output`. */
    readonly side: 'input' | 'output',
    problems: string,
  ) {
    super(`request ${request}/${id}: its ${side} does not fit the codec: ${problems}`)
  }
}

/** A request was cancelled (`cancel`, `lamina requests cancel`) before it succeeded. */
export class RequestCancelledError extends LaminaError {
  readonly code = 'ERR_REQUEST_CANCELLED'
  override readonly name = 'RequestCancelledError'
  constructor(
    readonly request: string,
    readonly id: string,
  ) {
    super(`request ${request}/${id} was cancelled`)
  }
}

/** An idempotency key already names a request of another name or with another input. */
export class RequestConflictError extends LaminaError {
  readonly code = 'ERR_REQUEST_CONFLICT'
  override readonly name = 'RequestConflictError'
  constructor(
    readonly request: string,
    readonly id: string,
    reason: string,
  ) {
    super(`request ${request}/${id}: ${reason}`)
  }
}

/** No request of that name and id is journaled. */
export class UnknownRequestError extends LaminaError {
  readonly code = 'ERR_UNKNOWN_REQUEST'
  override readonly name = 'UnknownRequestError'
  constructor(
    readonly request: string,
    readonly id: string,
  ) {
    super(`no request ${request}/${id} is journaled`)
  }
}

/** A journaled record is not JSON of a request's shape (written by something else, or corrupt). */
export class RequestRecordError extends LaminaError {
  readonly code = 'ERR_REQUEST_RECORD'
  override readonly name = 'RequestRecordError'
  constructor(
    readonly key: string,
    reason: string,
  ) {
    super(`the request record at ${key} ${reason}`)
  }
}

/**
 * A workflow's code did something else on replay than it did the first time (another step at the
 * same place, or a step with another input): workflow code must be deterministic (see workflow.ts).
 */
export class WorkflowDeterminismError extends LaminaError {
  readonly code = 'ERR_WORKFLOW_DETERMINISM'
  override readonly name = 'WorkflowDeterminismError'
  constructor(
    readonly workflow: string,
    readonly id: string,
    readonly step: number,
    readonly journaled: string,
    readonly now: string,
  ) {
    super(
      `workflow ${workflow}/${id}, step ${step}: the journal has ${journaled}, but the code now asks for ${now}; workflow code must take the same steps with the same inputs on every run`,
    )
  }
}
