// The kernel's error classes: every failure that crosses an API boundary is one of these, with a stable `code`.

import type { Batch } from './contracts.js'

/** Where in a program a problem sits: operator, port and (for parallel operators) instance. */
export interface Where {
  readonly operator?: string
  readonly port?: string
  readonly instance?: number
  readonly peer?: string
}

/** Base class of every Lamina error. Tests and callers branch on `code`, never on the message. */
export abstract class LaminaError extends Error {
  /** A stable, machine-readable identifier of the kind of failure. */
  abstract readonly code: string

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }

  /**
   * `error instanceof LaminaError` also holds for errors of the native core's binding
   * (native/ts/errors.ts), which cannot import the kernel (the kernel imports it): they carry the
   * {@link LAMINA_ERROR} brand and a string `code`. Subclasses keep the plain prototype check.
   */
  // biome-ignore-start lint/complexity/noThisInStatic: `this` is the class `instanceof` was called on (a subclass or LaminaError itself).
  static override [Symbol.hasInstance](value: unknown): boolean {
    if (Function.prototype[Symbol.hasInstance].call(this, value)) return true
    return (
      this === LaminaError && value instanceof Error && (value as { [LAMINA_ERROR]?: unknown })[LAMINA_ERROR] === true && typeof (value as { code?: unknown }).code === 'string'
    )
  }
  // biome-ignore-end lint/complexity/noThisInStatic: -
}

/** The brand a coded error outside the kernel carries to count as a LaminaError (a registered symbol: no import needed). */
export const LAMINA_ERROR: unique symbol = Symbol.for('lamina.error') as never

function portName(operator: string, port: string): string {
  return `${operator}.${port}`
}

/** Thrown when a program fails validation; `problems` lists every problem found, each a typed error. */
export class InvalidProgramError extends LaminaError {
  readonly code = 'ERR_INVALID_PROGRAM'
  override readonly name = 'InvalidProgramError'
  constructor(
    readonly program: string,
    readonly problems: readonly LaminaError[],
  ) {
    super(`program "${program}" is invalid:\n${problems.map((p) => `  - [${p.code}] ${p.message}`).join('\n')}`)
  }
}

/** Thrown when a link joins two ports whose codecs disagree. */
export class PortTypeMismatchError extends LaminaError {
  readonly code = 'ERR_PORT_TYPE_MISMATCH'
  override readonly name = 'PortTypeMismatchError'
  constructor(
    readonly from: { operator: string; port: string; type: string },
    readonly to: { operator: string; port: string; type: string },
  ) {
    super(`link ${portName(from.operator, from.port)} -> ${portName(to.operator, to.port)}: ` + `output type ${from.type} does not match input type ${to.type}`)
  }
}

/** Thrown when an input port has no link feeding it. */
export class DanglingInputError extends LaminaError {
  readonly code = 'ERR_DANGLING_INPUT'
  override readonly name = 'DanglingInputError'
  constructor(
    readonly operator: string,
    readonly port: string,
  ) {
    super(`input ${portName(operator, port)} has no link feeding it`)
  }
}

/** Thrown when two operators of one program share a name. */
export class DuplicateOperatorError extends LaminaError {
  readonly code = 'ERR_DUPLICATE_OPERATOR'
  override readonly name = 'DuplicateOperatorError'
  constructor(readonly operator: string) {
    super(`two operators are named "${operator}": names must be unique within a program`)
  }
}

/** Thrown when a link names an operator the program does not contain. */
export class UnknownOperatorError extends LaminaError {
  readonly code = 'ERR_UNKNOWN_OPERATOR'
  override readonly name = 'UnknownOperatorError'
  constructor(
    readonly operator: string,
    readonly link: string,
  ) {
    super(`link ${link} refers to operator "${operator}", which is not in the program`)
  }
}

/** Thrown when a link names a port its operator does not have (or has in the other direction). */
export class UnknownPortError extends LaminaError {
  readonly code = 'ERR_UNKNOWN_PORT'
  override readonly name = 'UnknownPortError'
  constructor(
    readonly operator: string,
    readonly port: string,
    readonly direction: 'in' | 'out',
    known: readonly string[],
  ) {
    super(`operator "${operator}" has no ${direction === 'in' ? 'input' : 'output'} port "${port}"` + ` (it has: ${known.length === 0 ? 'none' : known.join(', ')})`)
  }
}

/** Thrown when a link or operator option is out of range (capacity, parallelism, partitioning). */
export class InvalidOptionError extends LaminaError {
  readonly code = 'ERR_INVALID_OPTION'
  override readonly name = 'InvalidOptionError'
  constructor(
    readonly where: string,
    readonly option: string,
    readonly reason: string,
  ) {
    super(`${where}: option "${option}" ${reason}`)
  }
}

/** Thrown when a value does not fit a port's codec; carries the io-ts path inside the value. */
export class DecodeError extends LaminaError {
  readonly code = 'ERR_DECODE'
  override readonly name = 'DecodeError'
  constructor(
    readonly where: Where,
    readonly details: readonly string[],
  ) {
    super(`${where.operator ?? '?'}.${where.port ?? '?'}: ${details.join('; ')}`)
  }
}

/** Thrown (and recorded as a dead letter) when an operator's handler throws or rejects. */
export class HandlerError extends LaminaError {
  readonly code = 'ERR_HANDLER'
  override readonly name = 'HandlerError'
  constructor(
    readonly where: Where,
    cause: unknown,
  ) {
    super(
      `${where.operator ?? '?'}${where.instance === undefined ? '' : `[${where.instance}]`}` +
        `${where.port === undefined ? '' : `.${where.port}`}: handler threw: ${describeCause(cause)}`,
      { cause },
    )
  }
}

/** Thrown when an operator refuses a value with `ctx.reject` (it is recorded as a dead letter, never raised to the caller). */
export class RejectedError extends LaminaError {
  readonly code = 'ERR_REJECTED'
  override readonly name = 'RejectedError'
  constructor(
    readonly operator: string,
    readonly reason: string,
  ) {
    super(`${operator} rejected a value: ${reason}`)
  }
}

/** The part of an instance's life in which it crashed. */
export type CrashPhase = 'start' | 'process' | 'run' | 'end' | 'watermark'

/**
 * Thrown out of an instance whose operator declares `onError: 'crash'` when its own code fails (a
 * handler, `run`, `start` or `end` threw). The failing record is a dead letter already (with
 * `cause`); a supervision layer restarts the instance and hands the fresh one `remaining`, and
 * without one the job fails with this error as its cause.
 */
export class InstanceCrashedError extends LaminaError {
  readonly code = 'ERR_INSTANCE_CRASHED'
  override readonly name = 'InstanceCrashedError'
  constructor(
    readonly where: Where & { readonly operator: string; readonly instance: number },
    readonly phase: CrashPhase,
    cause: LaminaError,
    /** Records of the batch being processed that the instance had not reached (phase `process`). */
    readonly remaining?: Batch,
  ) {
    super(`${where.operator}[${where.instance}] crashed in ${phase} (it declares onError: 'crash'): ${cause.message}`, { cause })
  }
}

/** Thrown when a request sent with `ctx.request` gets no reply within its timeout. */
export class RequestTimeoutError extends LaminaError {
  readonly code = 'ERR_REQUEST_TIMEOUT'
  override readonly name = 'RequestTimeoutError'
  constructor(
    readonly where: Where,
    readonly timeoutMs: number,
  ) {
    super(`${where.operator ?? '?'}.${where.port ?? '?'}: no reply within ${timeoutMs} ms`)
  }
}

/** Thrown to a requester when the operator serving its request failed (the reply carries the cause). */
export class RequestFailedError extends LaminaError {
  readonly code = 'ERR_REQUEST_FAILED'
  override readonly name = 'RequestFailedError'
  constructor(
    readonly where: Where,
    cause: unknown,
  ) {
    super(`request on ${where.operator ?? '?'}.${where.port ?? '?'} failed: ${describeCause(cause)}`, { cause })
  }
}

/** Thrown when a request cannot be routed: the port has no link, or its link broadcasts. */
export class RequestRoutingError extends LaminaError {
  readonly code = 'ERR_REQUEST_ROUTING'
  override readonly name = 'RequestRoutingError'
  constructor(
    readonly where: Where,
    reason: string,
  ) {
    super(`${where.operator ?? '?'}.${where.port ?? '?'}: cannot send a request: ${reason}`)
  }
}

/** Thrown when keyed state is read or written outside a keyed record's handler (e.g. in a timer). */
export class NoKeyInScopeError extends LaminaError {
  readonly code = 'ERR_NO_KEY_IN_SCOPE'
  override readonly name = 'NoKeyInScopeError'
  constructor(readonly operator: string) {
    super(`${operator}: keyed state accessed with no current key (use state.entries() or state.of(key) outside a record handler)`)
  }
}

/** Thrown when an operator emits on a port it does not declare. */
export class UnknownOutputError extends LaminaError {
  readonly code = 'ERR_UNKNOWN_OUTPUT'
  override readonly name = 'UnknownOutputError'
  constructor(
    readonly operator: string,
    readonly port: string,
  ) {
    super(`${operator}: emit on undeclared output port "${port}"`)
  }
}

/** Thrown when state restored from a snapshot does not fit the operator's state codec. */
export class StateRestoreError extends LaminaError {
  readonly code = 'ERR_STATE_RESTORE'
  override readonly name = 'StateRestoreError'
  constructor(
    readonly operator: string,
    details: string,
    options?: { cause?: unknown },
  ) {
    super(`${operator}: cannot restore state: ${details}`, options)
  }
}

/**
 * Thrown when a layer stack is malformed: duplicate names, cyclic order constraints, a capability
 * a layer requires and no layer provides, or two layers providing the same capability. `layers`
 * names the layers involved (the requiring one; the two duplicates), `capability` the capability.
 */
export class LayerStackError extends LaminaError {
  readonly code = 'ERR_LAYER_STACK'
  override readonly name = 'LayerStackError'
  /** The layers the problem is about, e.g. the layer whose requirement is missing, or both providers. */
  readonly layers: readonly string[]
  /** The capability the problem is about, when it is one. */
  readonly capability: string | undefined
  constructor(reason: string, details: { readonly layers?: readonly string[]; readonly capability?: string } = {}) {
    super(`invalid layer stack: ${reason}`)
    this.layers = details.layers ?? []
    this.capability = details.capability
  }
}

/** Thrown when a control message kind or syscall is used that no layer registered. */
export class UnknownControlError extends LaminaError {
  readonly code = 'ERR_UNKNOWN_CONTROL'
  override readonly name = 'UnknownControlError'
  constructor(
    readonly kind: 'control' | 'syscall',
    readonly id: string,
    known: readonly string[],
  ) {
    super(`no layer registered the ${kind} "${id}" (registered: ${known.length === 0 ? 'none' : known.join(', ')})`)
  }
}

/** Thrown when a job fails: a dead letter under the `fail` policy, a kernel fault, or a layer error. */
export class JobFailedError extends LaminaError {
  readonly code = 'ERR_JOB_FAILED'
  override readonly name = 'JobFailedError'
  constructor(
    readonly job: string,
    cause: unknown,
  ) {
    super(`job "${job}" failed: ${describeCause(cause)}`, { cause })
  }
}

/** Thrown when a job is aborted (its signal fired or `abort()` was called) before it finished. */
export class JobAbortedError extends LaminaError {
  readonly code = 'ERR_JOB_ABORTED'
  override readonly name = 'JobAbortedError'
  constructor(
    readonly job: string,
    reason?: unknown,
  ) {
    super(`job "${job}" was aborted${reason === undefined ? '' : `: ${describeCause(reason)}`}`, { cause: reason })
  }
}

/** Thrown when more dead letters pile up than the job's `deadLetterLimit` allows. */
export class DeadLetterLimitError extends LaminaError {
  readonly code = 'ERR_DEAD_LETTER_LIMIT'
  override readonly name = 'DeadLetterLimitError'
  constructor(readonly limit: number) {
    super(`more than ${limit} dead letters: the job stops rather than pile up failures (raise deadLetterLimit to allow more)`)
  }
}

/** Thrown when a source's input cannot be read (the iterable or observable failed). */
export class SourceError extends LaminaError {
  readonly code = 'ERR_SOURCE'
  override readonly name = 'SourceError'
  constructor(
    readonly operator: string,
    cause: unknown,
  ) {
    super(`source ${operator} failed: ${describeCause(cause)}`, { cause })
  }
}

/** Renders an unknown thrown value as one line. */
export function describeCause(cause: unknown): string {
  if (cause instanceof Error) return cause.message
  if (typeof cause === 'string') return cause
  try {
    return JSON.stringify(cause) ?? String(cause)
  } catch {
    return String(cause)
  }
}

/**
 * Thrown (as the cause of the source's ERR_SOURCE dead letter) when a file source cannot read its
 * file: it is missing, not a regular file, not readable, or a read failed. `path` is the file;
 * `systemCode` is the system's code when there is one (`ENOENT`, `EACCES` …).
 */
export class SourceFileError extends LaminaError {
  readonly code = 'ERR_SOURCE_FILE'
  override readonly name = 'SourceFileError'
  readonly systemCode: string | undefined
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`cannot read ${path}: ${describeCause(cause)}`, { cause })
    const code = (cause as { code?: unknown } | null)?.code
    this.systemCode = typeof code === 'string' ? code : undefined
  }
}

/**
 * Thrown (as the cause of the source's ERR_SOURCE dead letter) when a line of a file source's
 * file is not valid UTF-8 or is longer than `maxLineBytes`. `line` is the line's number (from 0)
 * and `position` the byte it starts at, so the bad spot can be found with any hex viewer.
 */
export class SourceFileFormatError extends LaminaError {
  readonly code = 'ERR_SOURCE_FILE_FORMAT'
  override readonly name = 'SourceFileFormatError'
  constructor(
    readonly path: string,
    readonly line: number,
    readonly position: number,
    readonly reason: string,
  ) {
    super(`${path}: line ${line} (byte ${position}): ${reason}`)
  }
}

/**
 * Thrown before anything stops when a new version of a program cannot take over a running job's
 * state (`checkUpgrade`): an operator's state codec changed and the new version has no migration
 * from the old codec, or its state changed between keyed and not keyed.
 */
export class UpgradeStateError extends LaminaError {
  readonly code = 'ERR_UPGRADE_STATE'
  override readonly name = 'UpgradeStateError'
  constructor(
    readonly operator: string,
    /** The running version's state codec (its name; "none" for no state). */
    readonly fromCodec: string,
    /** The new version's. */
    readonly toCodec: string,
    details: string,
  ) {
    super(`${operator}: cannot upgrade its state from ${fromCodec} to ${toCodec}: ${details}`)
  }
}
