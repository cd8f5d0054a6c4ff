// The elasticity layer's error classes, with a stable `code`.

import { LaminaError } from '../../kernel/index.js'

/** Thrown when a rescale request is malformed or cannot be carried out here. */
export class RescaleError extends LaminaError {
  readonly code = 'ERR_RESCALE'
  override readonly name = 'RescaleError'
  constructor(
    readonly operator: string,
    reason: string,
  ) {
    super(`rescale ${operator}: ${reason}`)
  }
}
