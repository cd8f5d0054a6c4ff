// Seeded sampling of source records: which records a source instance traces, the same on every run.

import { fnv1a, seededRandom } from '../../kernel/index.js'

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
  constructor(
    readonly rate: number,
    seed: number,
    operator: string,
    instance: number,
  ) {
    this.random = seededRandom(mix(seed, fnv1a(operator), instance))
    this.logMiss = rate >= 1 ? 0 : Math.log1p(-rate)
  }

  /** Records to let pass untraced before the next traced one. */
  gap(): number {
    if (this.logMiss === 0) return 0
    // 1 - u is in (0, 1]: its log is finite.
    return Math.floor(Math.log1p(-this.random()) / this.logMiss)
  }
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
