// Benchmark: one CPU-bound operator in-process, in a worker thread, and as two instances in two workers.
//
//   npm run bench -- isolation [--records N] [--iterations N] [--rounds N] [--warmup N] [--batch N]
//
// The program is source -> crunch -> sink over the same pre-generated numbers; `crunch` does a few
// microseconds of arithmetic per record (bench/_isolation-ops.ts). Variants, in this process:
// - `in-process`: crunch on the main thread, like any operator;
// - `worker`: crunch isolated in a worker thread (the isolation layer, `mode: 'worker'`): every
//   batch crosses to the worker as one transferred buffer and its output comes back the same way;
// - `worker-p2`: crunch with parallelism 2, each instance in its own worker (both cores work).
// Each variant is warmed up once on a smaller input, then the variants take turns for several
// rounds (the order rotates each round) and the median of each is reported. Throughput is measured
// in steady state, from the first output record to the end of the job (records after the first
// batch ÷ that time), so a worker's start (reported apart, as `worker_start_ms`) does not count;
// the whole-job figures are reported too. Every run checks the sum of the outputs. Progress goes to
// stderr; the last line of stdout is one JSON object:
//
// - `ratio`: worker records/s ÷ in-process records/s (target ≥ 0.5);
// - `ratio_p2`: two workers' records/s ÷ in-process records/s;
// - `ratio_whole_job`: the same as `ratio` over whole jobs, worker start included;
// - `*_records_per_s`, `*_ms`: the medians; `work_ns_per_record`: the arithmetic alone, measured;
// - `machine_two_thread_speedup`: what the machine allows `ratio_p2` at best: the same arithmetic in
//   two plain worker threads at once (no Lamina) ÷ in one, measured every round, median (2 on two
//   free cores; ~1 where two threads share one core's worth of compute, as on a busy shared VM).

import { parseArgs } from 'node:util'
import { Worker } from 'node:worker_threads'
import { kernel, link, program, sink, source, t, type Operator, type Program } from 'lamina'
import { isolate, isolation } from '../layers/isolation/index.js'
import { crunch, work } from './_isolation-ops.js'
import { BenchCheckError, BenchUsageError, collectGarbage, humanRate, median, positiveInteger, progress, round3, runMain, timed } from './_harness.js'

type Variant = 'in-process' | 'worker' | 'worker-p2'
const VARIANTS: readonly Variant[] = ['in-process', 'worker', 'worker-p2']

/** Where the worker finds `crunch`: the module next to this one (compiled `.js` under dist/, `.ts` from sources). */
const OPS_MODULE = new URL(`./_isolation-ops.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url).href

/** What one timed run gives. */
interface Outcome {
  readonly sum: number
  readonly count: number
  /** Whole job, from `kernel.run` to `job.done`. */
  readonly ms: number
  /** From the first output record to the end of the job. */
  readonly steadyMs: number
  /** Records that arrived after the first output batch. */
  readonly steadyRecords: number
  /** From `kernel.run` to the first output record. */
  readonly firstOutputMs: number
}

function crunchFor(variant: Variant, iterations: number): Operator<{ in: t.NumberC }, { out: t.NumberC }> {
  const op = crunch({ iterations })
  if (variant === 'in-process') return op
  const isolated = isolate(op, { mode: 'worker', from: { module: OPS_MODULE, export: 'crunch', args: { iterations } } })
  return variant === 'worker-p2' ? isolated.annotate({ parallelism: 2 }) : isolated
}

async function runOnce(variant: Variant, records: readonly number[], iterations: number, batchSize: number | undefined): Promise<Outcome> {
  let sum = 0
  let count = 0
  let firstAt = 0
  const src = source('numbers', t.number, records)
  const op = crunchFor(variant, iterations)
  const collect = sink('collect', t.number, (n) => {
    if (count === 0) firstAt = performance.now()
    sum += n
    count++
  })
  const p: Program = program('isolation-bench', { operators: [src, op, collect], links: [link(src.outputs.out, op.inputs.in), link(op.outputs.out, collect.inputs.in)] })
  const stack = variant === 'in-process' ? kernel : kernel.with(isolation())
  const started = performance.now()
  const { ms } = await timed(async () => {
    const report = await stack.run(p, batchSize === undefined ? {} : { batchSize }).done
    if (report.deadLetters.length > 0) throw new BenchCheckError(`${variant}: ${report.deadLetters.length} dead letters; first: ${report.deadLetters[0]!.message}`)
  })
  const ended = started + ms
  // The first output batch had arrived when its first record was counted.
  const firstBatch = Math.min(count, batchSize ?? 1024)
  return { sum, count, ms, steadyMs: ended - firstAt, steadyRecords: count - firstBatch, firstOutputMs: firstAt - started }
}

/**
 * How much faster `records` go through `work` split over two plain worker threads than in one: the
 * parallelism the machine really gives (no Lamina involved).
 */
async function twoThreadSpeedup(records: number, iterations: number): Promise<number> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const work = ${work.toString()};
    let s = 0;
    for (let n = workerData.from; n < workerData.to; n++) s += work(n, workerData.iterations);
    parentPort.postMessage(s);
  `
  const run = (from: number, to: number): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const worker = new Worker(code, { eval: true, workerData: { from, to, iterations } })
      worker.once('message', resolve)
      worker.once('error', reject)
    })
  const one = await timed(() => run(0, records))
  const two = await timed(() => Promise.all([run(0, records >> 1), run(records >> 1, records)]))
  return one.ms / two.ms
}

async function main(argv: readonly string[]): Promise<void> {
  let values: { [option: string]: string | boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: { records: { type: 'string' }, iterations: { type: 'string' }, rounds: { type: 'string' }, warmup: { type: 'string' }, batch: { type: 'string' } },
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(`${error instanceof Error ? error.message : String(error)}\nusage: isolation [--records N] [--iterations N] [--rounds N] [--warmup N] [--batch N]`)
  }
  const option = (name: string): string | undefined => values[name] as string | undefined
  const count = positiveInteger('records', option('records')) ?? 400_000
  const iterations = positiveInteger('iterations', option('iterations')) ?? 600
  const rounds = positiveInteger('rounds', option('rounds')) ?? 5
  const warmupCount = Math.min(count, positiveInteger('warmup', option('warmup')) ?? 50_000)
  const batchSize = positiveInteger('batch', option('batch'))

  const records = Array.from({ length: count }, (_, i) => i)
  // The reference: the arithmetic alone, in a plain loop (also its cost per record).
  const reference = await timed(async () => records.reduce((s, n) => s + work(n, iterations), 0))
  const expected = reference.result
  const workNs = (reference.ms * 1e6) / count
  const expectedWarm = records.slice(0, warmupCount).reduce((s, n) => s + work(n, iterations), 0)
  progress(`isolation: ${count.toLocaleString('en')} records, ${iterations} iterations (${(workNs / 1000).toFixed(2)} µs of arithmetic per record), ${rounds} rounds`)

  const check = (variant: Variant, outcome: Outcome, want: number, n: number): void => {
    if (outcome.count !== n || outcome.sum !== want) throw new BenchCheckError(`${variant}: ${outcome.count} outputs summing to ${outcome.sum}, expected ${n} summing to ${want}`)
  }

  const warmRecords = records.slice(0, warmupCount)
  for (const variant of VARIANTS) {
    collectGarbage()
    const outcome = await runOnce(variant, warmRecords, iterations, batchSize)
    check(variant, outcome, expectedWarm, warmupCount)
    progress(`warm-up ${variant}: ${outcome.ms.toFixed(0)} ms`)
  }

  const samples = new Map<Variant, Outcome[]>(VARIANTS.map((v) => [v, []]))
  const speedups: number[] = []
  for (let round = 0; round < rounds; round++) {
    // What the machine gives two threads now (a shared machine's share changes over a run).
    speedups.push(await twoThreadSpeedup(count, iterations))
    progress(`round ${round + 1}/${rounds}: two plain worker threads run the arithmetic ${speedups[round]!.toFixed(2)}x as fast as one`)
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]!)
    for (const variant of order) {
      collectGarbage()
      const outcome = await runOnce(variant, records, iterations, batchSize)
      check(variant, outcome, expected, count)
      samples.get(variant)!.push(outcome)
      progress(
        `round ${round + 1}/${rounds} ${variant}: ${outcome.ms.toFixed(0)} ms (${humanRate(outcome.steadyRecords / (outcome.steadyMs / 1000))} records/s steady, first output after ${outcome.firstOutputMs.toFixed(0)} ms)`,
      )
    }
  }

  const steady = (v: Variant): number => median(samples.get(v)!.map((o) => o.steadyRecords / (o.steadyMs / 1000)))
  const whole = (v: Variant): number => median(samples.get(v)!.map((o) => count / (o.ms / 1000)))
  const ms = (v: Variant): number => median(samples.get(v)!.map((o) => o.ms))
  const inProcess = steady('in-process')
  const worker = steady('worker')
  const worker2 = steady('worker-p2')
  const figures = {
    bench: 'isolation',
    ratio: round3(worker / inProcess),
    ratio_p2: round3(worker2 / inProcess),
    ratio_whole_job: round3(whole('worker') / whole('in-process')),
    in_process_records_per_s: Math.round(inProcess),
    worker_records_per_s: Math.round(worker),
    worker_p2_records_per_s: Math.round(worker2),
    in_process_ms: Math.round(ms('in-process')),
    worker_ms: Math.round(ms('worker')),
    worker_p2_ms: Math.round(ms('worker-p2')),
    worker_start_ms: Math.round(median(samples.get('worker')!.map((o) => o.firstOutputMs)) - median(samples.get('in-process')!.map((o) => o.firstOutputMs))),
    work_ns_per_record: Math.round(workNs),
    machine_two_thread_speedup: round3(median(speedups)),
    records: count,
    iterations,
    rounds,
  }
  progress(`in-process ${humanRate(inProcess)}/s, worker ${humanRate(worker)}/s (ratio ${figures.ratio}), two workers ${humanRate(worker2)}/s (ratio ${figures.ratio_p2})`)
  process.stdout.write(`${JSON.stringify(figures)}\n`)
}

runMain('isolation', () => main(process.argv.slice(2)))
