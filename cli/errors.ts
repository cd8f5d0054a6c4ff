// Errors of the `lamina` command.

import { LaminaError } from '../kernel/index.js'

/** A command line that does not parse: printed with a hint (`usage`), exit status 2. */
export class UsageError extends LaminaError {
  readonly code = 'ERR_USAGE'
  constructor(
    message: string,
    readonly usage: string,
  ) {
    super(message)
  }
}
