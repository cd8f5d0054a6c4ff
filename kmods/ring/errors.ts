// The ring's error classes, with a stable `code`.

import { LaminaError } from '../../kernel/index.js'

/** Thrown when a ring or key groups are built or asked with an argument out of range (an empty node name, a negative count, a parallelism above the key groups). */
export class RingArgumentError extends LaminaError {
  readonly code = 'ERR_RING_ARGUMENT'
  override readonly name = 'RingArgumentError'
  constructor(
    readonly argument: string,
    reason: string,
  ) {
    super(`ring: ${argument} ${reason}`)
  }
}
