// Contracts of links: how records are partitioned between producer and consumer instances.
// This file imports no implementation.

import type { Key } from './ports.js'

/** How records on a link are spread over the instances of the receiving operator. */
export type Partitioning =
  | { readonly kind: 'forward' }
  | { readonly kind: 'hash'; readonly key?: (value: unknown) => Key }
  | { readonly kind: 'broadcast' }
  | { readonly kind: 'round-robin' }

/** A link: an immutable value joining an output port to an input port. */
export interface Link {
  readonly from: { readonly operator: string; readonly port: string }
  readonly to: { readonly operator: string; readonly port: string }
  readonly partitioning: Partitioning | undefined
  /** Records the channel holds before its producer waits. @default 4096 */
  readonly capacity: number | undefined
  /** `from.port -> to.port` as text. */
  readonly id: string
}
