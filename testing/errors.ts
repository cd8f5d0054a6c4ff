// The testing kit's error classes: what a fixture or a compliance check throws when a test's expectation is not met.

import { LaminaError } from '../kernel/index.js'

/** Thrown when a test waited for a condition or an event longer than it allowed. */
export class WaitTimeoutError extends LaminaError {
  readonly code = 'ERR_WAIT_TIMEOUT'
  override readonly name = 'WaitTimeoutError'
  constructor(
    readonly what: string,
    readonly ms: number,
  ) {
    super(`timed out after ${ms} ms waiting for ${what}`)
  }
}

/** Thrown when the events a test waited on ended before the one it waited for came. */
export class WaitEndedError extends LaminaError {
  readonly code = 'ERR_WAIT_ENDED'
  override readonly name = 'WaitEndedError'
  constructor(readonly what: string) {
    super(`the events ended before ${what}`)
  }
}

/** Thrown when processes a test cluster started are still alive after it stopped (they are then killed). */
export class OrphanProcessError extends LaminaError {
  readonly code = 'ERR_ORPHAN_PROCESS'
  override readonly name = 'OrphanProcessError'
  constructor(readonly pids: readonly number[]) {
    super(`processes still alive after the test cluster stopped (killed now): ${pids.join(', ')}`)
  }
}

/** Thrown when a test fixture is used before it started (a `useCluster` handle read outside a test). */
export class FixtureNotStartedError extends LaminaError {
  readonly code = 'ERR_FIXTURE_NOT_STARTED'
  override readonly name = 'FixtureNotStartedError'
  constructor(readonly fixture: string) {
    super(`${fixture} is read before its beforeAll started it (read it inside a test or a hook)`)
  }
}

/** Thrown when a fake channel is used against its contract (sending after end, feeding after end, negative credit). */
export class FakeChannelError extends LaminaError {
  readonly code = 'ERR_FAKE_CHANNEL'
  override readonly name = 'FakeChannelError'
  constructor(
    readonly channel: string,
    reason: string,
  ) {
    super(`fake channel ${channel}: ${reason}`)
  }
}
