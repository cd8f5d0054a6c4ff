// The live progress display of `lamina run`: records per second per operator, then a summary.

import type { JobStats } from '../../kernel/index.js'

/** Totals per operator (all instances, all peers). */
export interface OperatorTotals {
  readonly operator: string
  readonly instances: number
  readonly recordsIn: number
  readonly recordsOut: number
  readonly deadLetters: number
}

/** Sums the instance counters of one or more stats snapshots (one per peer) by operator. */
export function totals(snapshots: readonly JobStats[]): OperatorTotals[] {
  const byOperator = new Map<string, { operator: string; instances: number; recordsIn: number; recordsOut: number; deadLetters: number }>()
  for (const stats of snapshots) {
    for (const i of stats.instances) {
      const t = byOperator.get(i.operator) ?? { operator: i.operator, instances: 0, recordsIn: 0, recordsOut: 0, deadLetters: 0 }
      t.instances++
      t.recordsIn += i.recordsIn
      t.recordsOut += i.recordsOut
      t.deadLetters += i.deadLetters
      byOperator.set(i.operator, t)
    }
  }
  return [...byOperator.values()]
}

function rate(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : `${Math.round(n)}`
}

/**
 * Renders progress: one line per operator with records in, out and the rate since the last call.
 * On a terminal it redraws in place; elsewhere it prints a block every call.
 */
export class ProgressDisplay {
  private last = new Map<string, number>()
  private lastTime = Date.now()
  private drawn = 0
  private readonly started = Date.now()

  constructor(private readonly out: NodeJS.WritableStream & { isTTY?: boolean } = process.stderr) {}

  /** Draws the current state. */
  update(current: readonly OperatorTotals[], peers: number): void {
    const now = Date.now()
    const seconds = Math.max((now - this.lastTime) / 1000, 1e-3)
    const lines = [`lamina: ${peers} peers, ${((now - this.started) / 1000).toFixed(1)} s`]
    for (const t of current) {
      const count = t.recordsIn + (t.recordsIn === 0 ? t.recordsOut : 0)
      // Counts start again with each attempt of a job (a recovery, a rescale): count from zero then.
      const before = this.last.get(t.operator) ?? 0
      const perSecond = (count >= before ? count - before : count) / seconds
      this.last.set(t.operator, t.recordsIn + (t.recordsIn === 0 ? t.recordsOut : 0))
      lines.push(
        `  ${t.operator.padEnd(24)} x${t.instances}  in ${rate(t.recordsIn).padStart(7)}  out ${rate(t.recordsOut).padStart(7)}  ${rate(perSecond).padStart(7)}/s${t.deadLetters > 0 ? `  dead letters ${t.deadLetters}` : ''}`,
      )
    }
    this.lastTime = now
    if (this.out.isTTY === true && this.drawn > 0) this.out.write(`\x1b[${this.drawn}A\x1b[J`)
    this.out.write(lines.join('\n') + '\n')
    this.drawn = lines.length
  }

  /** The final summary. */
  summary(current: readonly OperatorTotals[], elapsedMs: number, deadLetters: number): string {
    const lines = [`lamina: finished in ${(elapsedMs / 1000).toFixed(2)} s, ${deadLetters} dead letters`]
    for (const t of current)
      lines.push(
        `  ${t.operator.padEnd(24)} x${t.instances}  in ${t.recordsIn}  out ${t.recordsOut}  (${rate((t.recordsIn || t.recordsOut) / Math.max(elapsedMs / 1000, 1e-3))}/s)`,
      )
    return lines.join('\n')
  }
}
