// Hashing: the one FNV-1a every partitioner (TypeScript and native) agrees on, key groups, and the one seeded random generator.

import type { Key } from './contracts.js'

/**
 * FNV-1a, 32 bits, over the UTF-16 code units of `text` (basis 2166136261, prime 16777619).
 * Deterministic across processes and peers; the native core implements the same function
 * (native/src/hash.rs), so both partition alike. The one FNV-1a of the TypeScript code: hash
 * rings, samplers and partitioners build on it.
 *
 * ```ts
 * fnv1a('a') // 3826002220
 * ```
 */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193)
  return hash >>> 0
}

/** The hash of a key: FNV-1a of its string form (`hashKey(1.5) === hashKey('1.5')`). */
export function hashKey(key: Key): number {
  return fnv1a(typeof key === 'string' ? key : String(key))
}

/**
 * Number of key groups keyed state is divided into: the most instances a keyed operator can have.
 * State moves between instances by whole key groups (as Flink's max parallelism).
 */
export const KEY_GROUPS = 128

/** The key group of a key. */
export function keyGroupOf(key: Key, groups: number = KEY_GROUPS): number {
  return hashKey(key) % groups
}

/**
 * The instance that owns a key group when an operator runs `parallelism` instances: contiguous
 * ranges of groups per instance, so a rescale moves whole ranges.
 */
export function instanceOfKeyGroup(group: number, parallelism: number, groups: number = KEY_GROUPS): number {
  return Math.floor((group * parallelism) / groups)
}

/** The instance that owns a key. */
export function instanceOfKey(key: Key, parallelism: number, groups: number = KEY_GROUPS): number {
  return instanceOfKeyGroup(keyGroupOf(key, groups), parallelism, groups)
}

/**
 * A deterministic source of uniform numbers in [0, 1) from a 32-bit seed: mulberry32 (Tommy
 * Ettinger's small generator), the same on every platform. The one seeded generator of Lamina:
 * retry jitter, metadata sampling, tests and benchmarks draw from it.
 *
 * ```ts
 * const random = seededRandom(42)
 * random() // the same number on every run
 * ```
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 0x100000000
  }
}
