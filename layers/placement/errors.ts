// The placement layer's error classes: unsatisfiable annotations, malformed annotations, bad solver input.

import { LaminaError } from '../../kernel/index.js'

/** Which annotation (or default rule) a placement problem is about, and the operator carrying it. */
export interface ConstraintRef {
  /**
   * `pin`, `tags`, `avoid`, `resources`; `submitter` (the default that keeps sources and sinks on
   * the submitting peer); `membership` when there is no live peer at all.
   */
  readonly kind: 'pin' | 'tags' | 'avoid' | 'resources' | 'submitter' | 'membership'
  /** The operator whose annotation it is (for a co-located group: the member that carries it). */
  readonly operator: string
  /** The constraint as text: `pin "gpu-box"`, `tags region=eu, ssd`, `resources cpu=2` … */
  readonly text: string
}

/** One peer the solver considered for an instance, and why it was rejected. */
export interface RejectedPeer {
  readonly peer: string
  /** Every reason the peer could not take the instance, one line each. */
  readonly reasons: readonly string[]
}

const SHOWN_PEERS = 20

/**
 * Thrown when no peer can take an operator instance: its annotations (with those of the operators
 * co-located with it) rule out every live peer. `constraint` is the one that rejected the last
 * remaining peers, checked in the order submitter, pin, avoid, tags, resources; `considered` lists
 * every peer with all the reasons it was rejected.
 */
export class PlacementUnsatisfiableError extends LaminaError {
  readonly code = 'ERR_PLACEMENT_UNSATISFIABLE'
  override readonly name = 'PlacementUnsatisfiableError'
  constructor(
    readonly operator: string,
    readonly instance: number,
    readonly constraint: ConstraintRef,
    readonly considered: readonly RejectedPeer[],
    /** Instances placed together with this one (co-location), `name#i` each. */
    readonly colocated: readonly string[] = [],
  ) {
    const lines = considered.slice(0, SHOWN_PEERS).map((p) => `  - ${p.peer}: ${p.reasons.join('; ')}`)
    if (considered.length > SHOWN_PEERS) lines.push(`  … and ${considered.length - SHOWN_PEERS} more`)
    const group = colocated.length > 0 ? ` (co-located with ${colocated.join(', ')})` : ''
    super(
      `cannot place ${operator}#${instance}${group}: no peer satisfies ${constraint.text}` +
        `${constraint.operator === operator ? '' : ` (of ${constraint.operator})`}${constraint.kind === 'membership' ? '' : ' together with the constraints before it'}; ` +
        `${considered.length} peer${considered.length === 1 ? '' : 's'} considered:\n${lines.join('\n')}`,
    )
  }
}

/** Thrown when a placement annotation is malformed: an empty pin, a negative resource, a co-location with an operator not in the program … */
export class PlacementAnnotationError extends LaminaError {
  readonly code = 'ERR_PLACEMENT_ANNOTATION'
  override readonly name = 'PlacementAnnotationError'
  constructor(
    readonly operator: string,
    readonly annotation: string,
    readonly reason: string,
  ) {
    super(`${operator}: placement annotation "${annotation}" ${reason}`)
  }
}

/** Thrown when the solver's input is inconsistent: a peer listed twice with different tags, a plan made for another program … */
export class PlacementInputError extends LaminaError {
  readonly code = 'ERR_PLACEMENT_INPUT'
  override readonly name = 'PlacementInputError'
  constructor(reason: string) {
    super(`placement: ${reason}`)
  }
}
