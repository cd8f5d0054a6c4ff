// The reference of the partitioning hash; mirrors native/src/hash.rs.

/**
 * The partitioning hash: FNV-1a (32-bit) over the UTF-16 code units of `String(key)`, each unit
 * mixed as one 16-bit value. The kernel's JavaScript partitioner uses this same function.
 *
 * @example
 * hashKey('a') // 3826002220
 * hashKey(1.5) === hashKey('1.5') // true
 */
export function hashKey(key: string | number): number {
  const text = typeof key === 'string' ? key : String(key)
  let h = 2166136261
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 16777619) >>> 0
  }
  return h
}
