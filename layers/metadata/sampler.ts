// Seeded sampling of source records: which records a source instance traces, the same on every run.

/**
 * Decides which records of one source instance are traced. Instead of drawing once per record it
 * draws the gap to the next traced record from a geometric distribution (the skip trick of
 * reservoir sampling, Vitter's algorithm Z): the same distribution as a coin per record, with
 * work only per traced record. Deterministic for a seed, an operator name and an instance.
 */
export class Sampler {
  private readonly random: () => number
  private readonly logMiss: number

  /** @param rate fraction of records traced, in (0, 1] */
  constructor(readonly rate: number, seed: number, operator: string, instance: number) {
    this.random = mulberry32(mix(seed, hashString(operator), instance))
    this.logMiss = rate >= 1 ? 0 : Math.log1p(-rate)
  }

  /** Records to let pass untraced before the next traced one. */
  gap(): number {
    if (this.logMiss === 0) return 0
    // 1 - u is in (0, 1]: its log is finite.
    return Math.floor(Math.log1p(-this.random()) / this.logMiss)
  }
}

/** mulberry32: a small, fast 32-bit generator, the same on every platform. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let z = state
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 0x100000000
  }
}

/** FNV-1a over UTF-16 code units. */
function hashString(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return h >>> 0
}

function mix(...parts: number[]): number {
  let h = 0x9e3779b9
  for (const part of parts) {
    h = Math.imul(h ^ (part >>> 0), 0x85ebca6b)
    h ^= h >>> 13
    h = Math.imul(h, 0xc2b2ae35)
    h ^= h >>> 16
  }
  return h >>> 0
}
