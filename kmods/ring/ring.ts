// The one hash ring: which nodes own a key (rendezvous hashing) and which instance owns a key group.
//
// Checkpoint copies choose their peers with `Ring`, rescales move keyed state by `KeyGroups`, and
// the KV service will place its shards with `Ring` too. Both build on the kernel's FNV-1a and key
// groups, so what the hash partitioner routes and what a rescale moves agree.

import { fnv1a, instanceOfKeyGroup, KEY_GROUPS, keyGroupOf, type Key } from '../../kernel/index.js'
import { RingArgumentError } from './errors.js'

/** murmur3's 32-bit finalizer: every bit of the input reaches every bit of the output. */
function mix32(value: number): number {
  let h = value ^ (value >>> 16)
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * The weight of `node` for `key` in rendezvous hashing: FNV-1a of both, finalized by murmur3's
 * mixer so that node names differing in their last character still weigh independently.
 */
export function weight(key: string, node: string): number {
  return mix32(fnv1a(`${key}\u0000${node}`))
}

/**
 * Rendezvous (highest random weight) hashing over a set of nodes, after Thaler and Ravishankar,
 * "Using name-based mappings to increase hit rates" (1998): a key is owned by the nodes that weigh
 * most for it. Every process computes the same owners from the same node names, with no state to
 * share; adding a node moves only the keys it now wins, removing one moves only the keys it
 * owned, and the keys spread evenly. Immutable: `with` and `without` return new rings.
 *
 * ```ts
 * const ring = new Ring(['peer-a', 'peer-b', 'peer-c'])
 * ring.owners('job/count#0', 2) // the two peers that hold copies, best first
 * ```
 */
export class Ring {
  /** The nodes, sorted and without repeats. */
  readonly nodes: readonly string[]

  constructor(nodes: Iterable<string>) {
    const unique = new Set<string>()
    for (const node of nodes) {
      if (typeof node !== 'string' || node === '') throw new RingArgumentError('node', `must be a non-empty string, got ${JSON.stringify(node)}`)
      unique.add(node)
    }
    this.nodes = Object.freeze([...unique].sort())
    Object.freeze(this)
  }

  /** How many nodes the ring has. */
  get size(): number {
    return this.nodes.length
  }

  /**
   * The `n` nodes that own `key`, best first (all of them when there are fewer). The first is the
   * key's owner; the next are where its copies go. Ties (equal weights) go to the smaller name.
   */
  owners(key: string, n = 1): string[] {
    if (!Number.isInteger(n) || n < 0) throw new RingArgumentError('n', `must be an integer of at least 0, got ${n}`)
    const weighed = this.nodes.map((node) => ({ node, w: weight(key, node) }))
    weighed.sort((a, b) => b.w - a.w || (a.node < b.node ? -1 : 1))
    return weighed.slice(0, n).map((x) => x.node)
  }

  /** The node that owns `key`, or undefined on an empty ring. */
  owner(key: string): string | undefined {
    let best: string | undefined
    let bestWeight = -1
    for (const node of this.nodes) {
      const w = weight(key, node)
      if (w > bestWeight || (w === bestWeight && best !== undefined && node < best)) {
        best = node
        bestWeight = w
      }
    }
    return best
  }

  /** A ring with these nodes added. */
  with(...nodes: string[]): Ring {
    return new Ring([...this.nodes, ...nodes])
  }

  /** A ring with these nodes removed. */
  without(...nodes: string[]): Ring {
    const gone = new Set(nodes)
    return new Ring(this.nodes.filter((node) => !gone.has(node)))
  }
}

/** A key group changing owner in a rescale. */
export interface KeyGroupMove {
  readonly group: number
  /** Its owner at the old parallelism. */
  readonly from: number
  /** Its owner at the new parallelism. */
  readonly to: number
}

/**
 * Key groups (as Flink's max parallelism): keys hash into `count` groups, and instance i of n owns
 * a contiguous range of them. The kernel's hash partitioner routes records by the same functions
 * (`keyGroupOf`, `instanceOfKeyGroup`), so state a rescale moves by key group lands on the instance
 * its key's records now reach.
 *
 * ```ts
 * keyGroups.ownerOfKey('user-7', 4) // the instance of 4 that holds user-7's state
 * keyGroups.moves(2, 3).length      // key groups whose state moves when 2 instances become 3
 * ```
 */
export class KeyGroups {
  constructor(readonly count: number = KEY_GROUPS) {
    if (!Number.isInteger(count) || count < 1) throw new RingArgumentError('count', `of key groups must be a positive integer, got ${count}`)
    Object.freeze(this)
  }

  /** The key group of a key. */
  of(key: Key): number {
    return keyGroupOf(key, this.count)
  }

  /** The instance that owns `group` when the operator runs `parallelism` instances. */
  owner(group: number, parallelism: number): number {
    this.check(parallelism)
    if (!Number.isInteger(group) || group < 0 || group >= this.count) throw new RingArgumentError('group', `must be an integer from 0 to ${this.count - 1}, got ${group}`)
    return instanceOfKeyGroup(group, parallelism, this.count)
  }

  /** The instance that owns `key` at `parallelism` (where the hash partitioner sends its records). */
  ownerOfKey(key: Key, parallelism: number): number {
    this.check(parallelism)
    return instanceOfKeyGroup(keyGroupOf(key, this.count), parallelism, this.count)
  }

  /** The groups instance `instance` of `parallelism` owns: `start` up to, not including, `end`. */
  range(instance: number, parallelism: number): { readonly start: number; readonly end: number } {
    this.check(parallelism)
    if (!Number.isInteger(instance) || instance < 0 || instance >= parallelism)
      throw new RingArgumentError('instance', `must be an integer from 0 to ${parallelism - 1}, got ${instance}`)
    // Group g belongs to floor(g * p / G): the first group of instance i is ceil(i * G / p).
    const first = (i: number): number => Math.ceil((i * this.count) / parallelism)
    return { start: first(instance), end: first(instance + 1) }
  }

  /** The key groups whose owner changes when `from` instances become `to`, in group order. */
  moves(from: number, to: number): KeyGroupMove[] {
    this.check(from)
    this.check(to)
    const moves: KeyGroupMove[] = []
    for (let group = 0; group < this.count; group++) {
      const a = instanceOfKeyGroup(group, from, this.count)
      const b = instanceOfKeyGroup(group, to, this.count)
      if (a !== b) moves.push({ group, from: a, to: b })
    }
    return moves
  }

  private check(parallelism: number): void {
    if (!Number.isInteger(parallelism) || parallelism < 1 || parallelism > this.count)
      throw new RingArgumentError('parallelism', `must be an integer from 1 to ${this.count} (the key groups), got ${parallelism}`)
  }
}

/** The key groups of keyed state in Lamina: `KEY_GROUPS` of them, as the kernel partitions. */
export const keyGroups = new KeyGroups()
