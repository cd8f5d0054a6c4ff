// Contracts of codecs and ports: the types a port carries and how an operator names its ports.
// This file imports no implementation.

import type * as t from 'io-ts'

/**
 * Any io-ts codec. io-ts's own `Mixed` is the widest codec type its API accepts; a port's value
 * type is recovered from it with `t.TypeOf<C>`.
 */
export type AnyCodec = t.Mixed

/** A record of port names to codecs: the shape of an operator's inputs or outputs. */
export type PortCodecs = { readonly [port: string]: AnyCodec }

/** The value types of a record of port codecs. */
export type PortValues<P extends PortCodecs> = { [K in keyof P]: t.TypeOf<P[K]> }

/** A key that partitions records and scopes keyed state. */
export type Key = string | number

/** An input port of one operator; `T` is the type of the values it accepts. */
export interface InputPort<T = unknown> {
  readonly direction: 'in'
  readonly operator: string
  readonly port: string
  readonly codec: AnyCodec
  /** Type-level only: makes `link()` check that an output fits this input. */
  readonly _accepts?: (value: T) => void
}

/** An output port of one operator; `T` is the type of the values it emits. */
export interface OutputPort<T = unknown> {
  readonly direction: 'out'
  readonly operator: string
  readonly port: string
  readonly codec: AnyCodec
  /** Type-level only: makes `link()` check that this output fits an input. */
  readonly _emits?: T
}
