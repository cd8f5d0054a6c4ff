// Helpers shared by the benchmarks: seeded randomness, timing, medians, option parsing, output.

import { performance, PerformanceObserver } from 'node:perf_hooks'

/** Thrown when a benchmark's result is wrong: the runner reports it and exits non-zero. */
export class BenchCheckError extends Error {
  readonly code = 'ERR_BENCH_CHECK'
  override readonly name = 'BenchCheckError'
}

/** Thrown when a command-line option has a bad value. */
export class BenchUsageError extends Error {
  readonly code = 'ERR_BENCH_USAGE'
  override readonly name = 'BenchUsageError'
}

/** The kernel's seeded generator of floats in [0, 1), so every run (and every variant within a run) sees the same data. */
export { seededRandom } from '../kernel/index.js'

/** The median of some samples (the mean of the middle two for an even count). */
export function median(samples: readonly number[]): number {
  if (samples.length === 0) throw new RangeError('median of no samples')
  const sorted = [...samples].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Collects garbage when the runner gave `--expose-gc`, so one timed run does not pay for the last. */
export function collectGarbage(): void {
  ;(globalThis as { gc?: () => void }).gc?.()
}

/** Runs `fn` once and returns its result with when it started and the elapsed milliseconds. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ result: T; start: number; ms: number }> {
  const start = performance.now()
  const result = await fn()
  return { result, start, ms: performance.now() - start }
}

/**
 * Records the garbage collector's pauses, to tell how much of a timed run was spent collecting
 * (allocation per record shows up here, not in any function of a CPU profile).
 */
export class GcPauses {
  private readonly pauses: { start: number; end: number }[] = []
  private readonly observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) this.pauses.push({ start: entry.startTime, end: entry.startTime + entry.duration })
  })

  constructor() {
    this.observer.observe({ entryTypes: ['gc'] })
  }

  /** Milliseconds of pause inside [start, start + ms]. Entries arrive late: await `settle()` first. */
  within(start: number, ms: number): number {
    const end = start + ms
    let total = 0
    for (const pause of this.pauses) total += Math.max(0, Math.min(end, pause.end) - Math.max(start, pause.start))
    return total
  }

  /** Lets pending entries reach the observer. */
  settle(): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, 0))
  }

  stop(): void {
    this.observer.disconnect()
  }
}

/** Parses a positive integer option; `undefined` stays undefined. */
export function positiveInteger(option: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined
  const value = Number(text.replace(/_/g, ''))
  if (!Number.isSafeInteger(value) || value < 1) throw new BenchUsageError(`--${option} must be a positive integer, got ${JSON.stringify(text)}`)
  return value
}

/** Peak resident set size of this process so far, in MiB. */
export function peakRssMiB(): number {
  return process.resourceUsage().maxRSS / 1024
}

/** Current resident set size of this process, in MiB. */
export function rssMiB(): number {
  return process.memoryUsage.rss() / (1024 * 1024)
}

/** `12345678.9` as `12.35 M`: rates for progress lines. */
export function humanRate(perSecond: number): string {
  return perSecond >= 1e6 ? `${(perSecond / 1e6).toFixed(2)} M` : `${(perSecond / 1e3).toFixed(1)} k`
}

/** Writes a progress line to stderr (stdout carries only the result). */
export function progress(line: string): void {
  process.stderr.write(`${line}\n`)
}

/** Runs a benchmark's main: a check or usage failure prints one clear line and exits non-zero. */
export function runMain(name: string, main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    const code = error instanceof BenchUsageError ? 2 : 1
    process.stderr.write(
      `${name}: ${error instanceof Error ? (error instanceof BenchCheckError || error instanceof BenchUsageError ? error.message : (error.stack ?? error.message)) : String(error)}\n`,
    )
    process.exitCode = code
  })
}

/** What one timed run gives the rounds: when it started and how many milliseconds it took. */
export interface TimedRun {
  readonly start: number
  readonly ms: number
}

/** Each variant's milliseconds and garbage-collector pauses over the rounds, in run order. */
export interface RoundSamples<V extends string> {
  readonly ms: ReadonlyMap<V, readonly number[]>
  readonly gcMs: ReadonlyMap<V, readonly number[]>
}

/**
 * Runs every variant once per round for `rounds` rounds, taking turns: the order rotates each
 * round so that no variant always runs right after the same other one (the machine is noisy and a
 * run leaves caches and the heap to the next). Garbage is collected before each run; `after` sees
 * each outcome with the pauses inside it, to check its result and print progress.
 */
export async function rotatingRounds<V extends string, O extends TimedRun>(
  variants: readonly V[],
  rounds: number,
  run: (variant: V) => Promise<O>,
  after: (variant: V, outcome: O, round: number, gcMs: number) => void,
): Promise<RoundSamples<V>> {
  const gc = new GcPauses()
  const ms = new Map<V, number[]>(variants.map((v) => [v, []]))
  const gcMs = new Map<V, number[]>(variants.map((v) => [v, []]))
  try {
    for (let round = 0; round < rounds; round++) {
      const order = variants.map((_, i) => variants[(i + round) % variants.length]!)
      for (const variant of order) {
        collectGarbage()
        const outcome = await run(variant)
        await gc.settle()
        const paused = gc.within(outcome.start, outcome.ms)
        ms.get(variant)!.push(outcome.ms)
        gcMs.get(variant)!.push(paused)
        after(variant, outcome, round, paused)
      }
    }
  } finally {
    gc.stop()
  }
  return { ms, gcMs }
}

/** `x` rounded to three decimals (ratios in result lines). */
export function round3(x: number): number {
  return Math.round(x * 1000) / 1000
}
