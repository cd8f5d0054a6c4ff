// The operator bench/isolation.ts runs in-process and in worker threads (a module, so a worker can rebuild it).

import { atom, t, type Operator } from 'lamina'

/** What `crunch` is built with. */
export interface CrunchArgs {
  /** Iterations of arithmetic per record: about 2.5 ns each, so 1200 is a few microseconds. */
  readonly iterations: number
}

/**
 * The arithmetic `crunch` does on one record: a deterministic mix of float and integer steps that
 * the JIT cannot fold away, returning a small integer (so the sum of the outputs checks the run).
 */
export function work(n: number, iterations: number): number {
  let x = n + 0.5
  let h = n | 0
  for (let i = 0; i < iterations; i++) {
    x = x * 1.000001 + (h & 7)
    h = Math.imul(h ^ (h >>> 13), 0x5bd1e995) + i
  }
  return ((h >>> 0) % 1000) + (x > 0 ? 1 : 0)
}

/** A stateless CPU-bound operator: `work` on every number. */
export function crunch(args: CrunchArgs): Operator<{ in: t.NumberC }, { out: t.NumberC }> {
  const iterations = args.iterations
  return atom({
    name: 'crunch',
    inputs: { in: t.number },
    outputs: { out: t.number },
    on: { in: (n, ctx) => ctx.emit('out', work(n, iterations)) },
  })
}
