// Placement annotations on operators, and the typed helpers that write them (each returns a new operator).

import type { Operator, PortCodecs } from '../../kernel/index.js'
import { PlacementAnnotationError } from './errors.js'
import type { PlacementRecord } from './plan.js'

/**
 * Where an operator's instances may and should run. Every field is optional; write them with the
 * helpers below (`pin`, `requireTags`, `resources`, `colocate`, `spread`, `avoid`), which merge
 * into what the operator already has.
 */
export interface PlacementAnnotation {
  /** Every instance runs on this peer: a peer id, or the value of a peer's `name` tag. */
  readonly pin?: string
  /** Tags a peer must have: `k=v` (tag `k` with value `v`) or a bare `k` (tag `k` present, any value). */
  readonly tags?: readonly string[]
  /**
   * What each instance consumes of a peer's capacities, e.g. `{ cpu: 1, memoryMb: 512 }`. A peer
   * offers `PeerDescription.capacity` (or tags `capacity.<name>=<number>`); a capacity a peer does
   * not declare is unlimited there.
   */
  readonly resources?: Readonly<Record<string, number>>
  /**
   * Operators to run beside (by name). Instance i runs with instance i of each when their
   * parallelisms are equal; otherwise every instance of the whole co-located group runs on one
   * peer. Co-location is symmetric and transitive.
   */
  readonly colocate?: readonly string[]
  /** No two instances of the operator (or of its co-located group) on one peer while there are peers enough. */
  readonly spread?: boolean
  /** Peers never to use (ids or `name` tags). */
  readonly avoid?: readonly string[]
}

declare module '../../kernel/index.js' {
  interface Annotations {
    /** Where the operator's instances may run: read by the placement layer (see `pin`, `spread` …). */
    placement?: PlacementAnnotation
    /** What the placement layer decided for each instance of the operator, and why (see `planOf`). */
    placementExplanation?: PlacementRecord
  }
}

/** The operator's placement annotation (empty when it has none). */
export function placementOf(operator: Operator): PlacementAnnotation {
  return operator.annotations.placement ?? {}
}

function withPlacement<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, patch: PlacementAnnotation): Operator<I, O> {
  return operator.annotate({ placement: { ...placementOf(operator as Operator), ...patch } })
}

function checkName(operator: string, annotation: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) throw new PlacementAnnotationError(operator, annotation, `needs a non-empty string, got ${JSON.stringify(value)}`)
  return value
}

/** Appends to a list annotation, keeping the first occurrence of each value. */
function appended(existing: readonly string[] | undefined, added: readonly string[]): readonly string[] {
  return [...new Set([...(existing ?? []), ...added])]
}

/**
 * Pins every instance of `operator` to one peer, named by id or by its `name` tag.
 *
 * ```ts
 * const counter = pin(count, 'peer-1') // the peer started with tag name=peer-1
 * ```
 */
export function pin<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, peer: string): Operator<I, O> {
  return withPlacement(operator, { pin: checkName(operator.name, 'pin', peer) })
}

/**
 * Requires tags of the peers the operator runs on: `'ssd'` (present, any value) or `'region=eu'`.
 * Adds to the tags already required.
 *
 * ```ts
 * const store = requireTags(writer, 'ssd', 'region=eu')
 * ```
 */
export function requireTags<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, ...tags: string[]): Operator<I, O> {
  for (const tag of tags) {
    checkName(operator.name, 'tags', tag)
    if (tag.startsWith('=')) throw new PlacementAnnotationError(operator.name, 'tags', `"${tag}" has no tag name before "="`)
  }
  return withPlacement(operator, { tags: appended(placementOf(operator as Operator).tags, tags) })
}

/**
 * Declares what each instance consumes of a peer's capacities (merged over earlier declarations).
 *
 * ```ts
 * const heavy = resources(model, { cpu: 2, memoryMb: 4096 })
 * ```
 */
export function resources<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, needs: Readonly<Record<string, number>>): Operator<I, O> {
  for (const [name, amount] of Object.entries(needs)) checkResource(operator.name, name, amount)
  return withPlacement(operator, { resources: { ...(placementOf(operator as Operator).resources ?? {}), ...needs } })
}

/** Throws PlacementAnnotationError unless `amount` is a finite number ≥ 0. */
export function checkResource(operator: string, name: string, amount: unknown): number {
  if (typeof amount !== 'number' || !Number.isFinite(amount) || amount < 0) {
    throw new PlacementAnnotationError(operator, 'resources', `${name} must be a finite number ≥ 0, got ${JSON.stringify(amount)}`)
  }
  return amount
}

/**
 * Runs `operator` beside `other` (an operator or its name): instance i with instance i when their
 * parallelisms are equal, otherwise all instances of both on one peer. A link between co-located
 * instances is an in-memory channel.
 *
 * ```ts
 * const parse = colocate(parser, tokenizer)
 * ```
 */
export function colocate<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, other: Operator | string): Operator<I, O> {
  const name = checkName(operator.name, 'colocate', typeof other === 'string' ? other : other?.name)
  if (name === operator.name) throw new PlacementAnnotationError(operator.name, 'colocate', 'names the operator itself')
  return withPlacement(operator, { colocate: appended(placementOf(operator as Operator).colocate, [name]) })
}

/**
 * Spreads the operator's instances: no two on one peer while there are peers enough.
 *
 * ```ts
 * const tokenizers = spread(tokenize.annotate({ parallelism: 3 }))
 * ```
 */
export function spread<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>): Operator<I, O> {
  return withPlacement(operator, { spread: true })
}

/**
 * Keeps the operator off these peers (ids or `name` tags), in addition to those already avoided.
 *
 * ```ts
 * const worker = avoid(work, 'flaky-box')
 * ```
 */
export function avoid<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, ...peers: string[]): Operator<I, O> {
  for (const peer of peers) checkName(operator.name, 'avoid', peer)
  return withPlacement(operator, { avoid: appended(placementOf(operator as Operator).avoid, peers) })
}
