// Errors of the metadata layer.

import { LaminaError } from '../../kernel/index.js'

/** Thrown when the trace cannot be written to its file; `cause` holds the file system's error. */
export class TraceExportError extends LaminaError {
  readonly code = 'ERR_TRACE_EXPORT'
  override readonly name = 'TraceExportError'
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`cannot write the trace to ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  }
}
