// Membership's error classes, each with a stable `code`.

import { LaminaError } from '../../kernel/index.js'

/** Thrown by `startMembership` when no bootstrap address answered: the peer could not join. */
export class MembershipJoinError extends LaminaError {
  readonly code = 'ERR_MEMBERSHIP_JOIN'
  override readonly name = 'MembershipJoinError'
  constructor(
    readonly bootstrap: readonly string[],
    readonly failures: readonly string[],
    /** Rounds tried (all addresses each), the last one's failures listed. */
    readonly rounds = 1,
  ) {
    super(`cannot join through any of ${bootstrap.length} bootstrap address(es)${rounds > 1 ? ` after ${rounds} rounds` : ''}:\n${failures.map((f) => `  - ${f}`).join('\n')}`)
  }
}

/** Reported (logged, and the stream reset) when a peer sends a gossip message that is not a valid member table. */
export class MembershipMessageError extends LaminaError {
  readonly code = 'ERR_MEMBERSHIP_MESSAGE'
  override readonly name = 'MembershipMessageError'
  constructor(
    readonly peer: string,
    reason: string,
  ) {
    super(`malformed membership message from peer ${peer}: ${reason}`)
  }
}

/** Thrown when a membership that was stopped (or left) is asked to leave again or to join. */
export class MembershipStoppedError extends LaminaError {
  readonly code = 'ERR_MEMBERSHIP_STOPPED'
  override readonly name = 'MembershipStoppedError'
  constructor(operation: string) {
    super(`membership is stopped: cannot ${operation}`)
  }
}

/** Thrown when membership options are out of range (e.g. deadAfterMs not above suspectAfterMs). */
export class MembershipOptionError extends LaminaError {
  readonly code = 'ERR_MEMBERSHIP_OPTION'
  override readonly name = 'MembershipOptionError'
  constructor(
    readonly option: string,
    reason: string,
  ) {
    super(`membership option ${option} ${reason}`)
  }
}
