// The isolation layer's error classes: faults of an isolated instance, modules that cannot be loaded, unsupported uses.

import { LaminaError } from '../../kernel/index.js'

/** Where an isolated instance runs: a worker thread of the peer's process, or a child process of it. */
export type IsolatedMode = 'worker' | 'process'

/**
 * What went wrong with an isolated instance's thread or process:
 * - `watchdog`: its code held the thread longer than `watchdogMs` without yielding (a busy loop);
 * - `memory`: it reached its memory limit (`memoryMb`);
 * - `exit`: it exited on its own (`process.exit`);
 * - `crash`: it died of anything else (an uncaught error outside a handler, a signal, a failed start).
 */
export type FaultReason = 'watchdog' | 'memory' | 'exit' | 'crash'

/**
 * Thrown when an isolated instance's worker thread or child process is lost: the watchdog stopped
 * a busy loop, it hit its memory limit, it exited, or it crashed. The instance is stopped; the
 * error is the cause of the InstanceCrashedError its calls reject with (a supervision layer
 * restarts it), and the record being handled, when known, is a dead letter with this error.
 */
export class IsolationFaultError extends LaminaError {
  readonly code = 'ERR_ISOLATION_FAULT'
  override readonly name = 'IsolationFaultError'
  constructor(
    readonly operator: string,
    readonly instance: number,
    readonly mode: IsolatedMode,
    readonly reason: FaultReason,
    /** What happened, in words (the exit code, the limit, the last line the child wrote on stderr …). */
    readonly detail: string,
  ) {
    super(`${operator}[${instance}] (isolated in a ${mode === 'worker' ? 'worker thread' : 'child process'}) was stopped: ${reason}: ${detail}`)
  }
}

/**
 * Thrown when the module an isolation annotation names cannot give the operator: it does not
 * load, lacks the export, the export does not build an atom-form operator, or that operator's
 * ports differ from the annotated operator's.
 */
export class IsolationModuleError extends LaminaError {
  readonly code = 'ERR_ISOLATION_MODULE'
  override readonly name = 'IsolationModuleError'
  constructor(
    readonly operator: string,
    readonly module: string,
    readonly exportName: string,
    readonly reason: string,
  ) {
    super(`${operator}: cannot build the isolated operator from ${exportName} of ${module}: ${reason}`)
  }
}

/** Thrown when an isolation annotation is malformed (an unknown mode, a missing module, a bad limit). */
export class IsolationAnnotationError extends LaminaError {
  readonly code = 'ERR_ISOLATION_ANNOTATION'
  override readonly name = 'IsolationAnnotationError'
  constructor(
    readonly operator: string,
    readonly option: string,
    readonly reason: string,
  ) {
    super(`${operator}: isolation option "${option}" ${reason}`)
  }
}

/**
 * Thrown when an isolated operator uses something that cannot cross the isolation boundary:
 * `ctx.spawn`, or a stream-form body.
 */
export class IsolationUnsupportedError extends LaminaError {
  readonly code = 'ERR_ISOLATION_UNSUPPORTED'
  override readonly name = 'IsolationUnsupportedError'
  constructor(
    readonly operator: string,
    readonly feature: string,
  ) {
    super(`${operator}: ${feature} is not available to an isolated operator`)
  }
}

/**
 * Stands on the host for a Lamina error raised inside an isolated operator (an emit on an
 * undeclared port, a syscall that failed …): it keeps the original's `code`, name and message, so
 * dead letters read the same as for an operator running in-process.
 */
export class IsolatedOperatorError extends LaminaError {
  readonly code: string
  override readonly name: string
  constructor(code: string, name: string, message: string, stack?: string) {
    super(message)
    this.code = code
    this.name = name
    if (stack !== undefined) this.stack = stack
  }
}
