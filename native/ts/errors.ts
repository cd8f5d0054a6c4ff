// Error classes of the native core and of its TypeScript reference: each with a stable `code`.

/** The LaminaError brand: the registered symbol the kernel's LaminaError recognizes (see LAMINA_ERROR in kernel/errors.ts). */
const LAMINA_ERROR: unique symbol = Symbol.for('lamina.error') as never

/**
 * Base class of every native-core error. The native tier imports nothing of the kernel (the kernel
 * imports it), so instead of extending the kernel's LaminaError it carries its brand, the
 * registered symbol `lamina.error`: `error instanceof LaminaError` holds, and dead letters and job
 * failures keep the native code. Branch on `code`.
 */
export abstract class NativeCoreError extends Error {
  /** A stable, machine-readable identifier of the kind of failure. */
  abstract readonly code: string
  /** The LaminaError brand. */
  readonly [LAMINA_ERROR] = true
}

/**
 * Thrown when the native addon is missing, does not load, or was built for another Node (its
 * Unicode tables must match this Node's). There is no JavaScript fallback: build the addon with
 * `npm run build:native` (or `npm rebuild lamina` where lamina is installed).
 */
export class NativeCoreUnavailableError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_UNAVAILABLE'
  override readonly name = 'NativeCoreUnavailableError'
  constructor(
    readonly path: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(
      `the native core is unavailable (${reason}) at ${path}. ` +
        'Build it from source with `npm run build:native` in a lamina checkout, or `npm rebuild lamina` in a project that installed it (needs cargo, the Rust toolchain).',
      options,
    )
  }
}

/**
 * Thrown when a batch is malformed: a column of the wrong type, columns of different lengths,
 * offsets out of range, decreasing or splitting a character, invalid UTF-8, a missing column, or
 * an event time that is not finite. `column` names the column (`s.offsets` for a part of a string
 * column); `index` is the row, offset or byte index where it applies.
 */
export class NativeBatchError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_BAD_BATCH'
  override readonly name = 'NativeBatchError'
  constructor(
    readonly column: string,
    readonly index: number | undefined,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(index === undefined ? `bad batch: column ${JSON.stringify(column)}: ${detail}` : `bad batch: column ${JSON.stringify(column)} at index ${index}: ${detail}`, options)
  }
}

/** Thrown when a chain spec or operator options are invalid (unknown op or field, bad window size …). */
export class NativePlanError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_BAD_PLAN'
  override readonly name = 'NativePlanError'
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`bad plan: ${detail}`, options)
  }
}

/** Thrown when an expression does not parse or does not type check; `position` is its UTF-16 index. */
export class NativeExprError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_BAD_EXPR'
  override readonly name = 'NativeExprError'
  constructor(
    readonly position: number,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`bad expression at position ${position}: ${detail}`, options)
  }
}

/** Thrown when a scalar argument is invalid (partition count, watermark, minimum length). */
export class NativeArgError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_BAD_ARG'
  override readonly name = 'NativeArgError'
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`bad argument: ${detail}`, options)
  }
}

/** Thrown when a call does not fit the object's state (a push after finish, a plan poisoned by a panic). */
export class NativeStateError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_BAD_STATE'
  override readonly name = 'NativeStateError'
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`bad state: ${detail}`, options)
  }
}

/** Thrown when the Rust code panicked; the panic was caught before it could reach Node. */
export class NativePanicError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_PANIC'
  override readonly name = 'NativePanicError'
  constructor(detail: string, options?: { cause?: unknown }) {
    super(detail, options)
  }
}

/** Thrown when a Node-API call failed for a reason that is not the caller's (out of memory …). */
export class NativeInternalError extends NativeCoreError {
  readonly code = 'ERR_NATIVE_INTERNAL'
  override readonly name = 'NativeInternalError'
  constructor(detail: string, options?: { cause?: unknown }) {
    super(detail, options)
  }
}
