// Key hashing and key groups: the one hash every partitioner (TypeScript and native) agrees on.

import type { Key } from './contracts.js'

/**
 * FNV-1a, 32 bits, over the UTF-16 code units of the key's string form. Deterministic across
 * processes and peers; the native core implements the same function so both partition alike.
 */
export function hashKey(key: Key): number {
  const text = typeof key === 'string' ? key : String(key)
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
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
