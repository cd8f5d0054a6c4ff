// Links as immutable values, and the partitionings that spread records over receiving instances.

import type { InputPort, Key, Link, OutputPort, Partitioning } from './contracts.js'
import { InvalidOptionError } from './errors.js'

/** Options of a link. All optional. */
export interface LinkOptions {
  /** How records spread over the receiver's instances. @default hash by the receiver's key when it is keyed, else forward */
  readonly partitioning?: Partitioning
  /** Records the channel holds before its producer waits. @default the job's capacity (4096) */
  readonly capacity?: number
}

/**
 * Joins an output port to an input port. The value types must agree (checked by TypeScript here
 * and by `program()` at run time).
 *
 * ```ts
 * link(words.outputs.out, count.inputs.in, { partitioning: hash(), capacity: 1024 })
 * ```
 */
export function link<T>(from: OutputPort<T>, to: InputPort<T>, options: LinkOptions = {}): Link {
  if (from?.direction !== 'out') throw new InvalidOptionError('link', 'from', 'must be an output port (operator.outputs.<port>)')
  if (to?.direction !== 'in') throw new InvalidOptionError('link', 'to', 'must be an input port (operator.inputs.<port>)')
  return makeLink({ operator: from.operator, port: from.port }, { operator: to.operator, port: to.port }, options)
}

/** Builds a link from operator and port names (used by layers that rewrite programs). */
export function makeLink(from: { readonly operator: string; readonly port: string }, to: { readonly operator: string; readonly port: string }, options: LinkOptions = {}): Link {
  const id = `${from.operator}.${from.port} -> ${to.operator}.${to.port}`
  const capacity = options.capacity
  if (capacity !== undefined && (!Number.isInteger(capacity) || capacity < 1)) {
    throw new InvalidOptionError(`link ${id}`, 'capacity', `must be a positive integer, got ${capacity}`)
  }
  return Object.freeze({
    from: Object.freeze({ ...from }),
    to: Object.freeze({ ...to }),
    partitioning: options.partitioning,
    capacity,
    id,
  })
}

/** Each producer instance feeds the receiver instance with its own index (or spreads batches when counts differ). */
export function forward(): Partitioning {
  return { kind: 'forward' }
}

/** Records go to the instance owning their key's key group; by default the receiver's own key. */
export function hash<T>(key?: (value: T) => Key): Partitioning {
  return key === undefined ? { kind: 'hash' } : { kind: 'hash', key: key as (value: unknown) => Key }
}

/** Every record goes to every receiver instance. */
export function broadcast(): Partitioning {
  return { kind: 'broadcast' }
}

/** Records go to receiver instances in turn, one record each. */
export function roundRobin(): Partitioning {
  return { kind: 'round-robin' }
}

/** Renders a partitioning as text. */
export function describePartitioning(partitioning: Partitioning | undefined): string {
  return partitioning === undefined ? 'default' : partitioning.kind
}
