// Benchmark: one map → filter → keyed count pipeline through Lamina and through a plain rxjs pipe.
//
//   npm run bench -- pipeline [--batch N] [--records N] [--rounds N] [--warmup N] [--keys N] [--seed N]
//
// Both run in this process over the same pre-generated records. Each variant is warmed up once on
// a smaller input, then the variants take turns for several rounds (the order rotates each round)
// and the median of each is reported, which resists noise from the machine and from GC. Progress
// goes to stderr; the last line of stdout is one JSON object with the figures:
//
// - `ratio`: Lamina records/s ÷ rxjs records/s, Lamina checking port codecs (the default);
// - `lamina_novalidate_*`, `novalidate_ratio`: Lamina with `validate: 'none'`, and
//   `validate_cost_ns_per_record`, the difference: what the codec checks cost;
// - `*_gc_ms`: median garbage-collector pause inside one timed run;
// - `peak_rss_mb`: the process's peak RSS, of which `data_rss_mb` is the records themselves.

import { parseArgs } from 'node:util'
import { from, lastValueFrom, filter as rxFilter, map as rxMap, reduce as rxReduce } from 'rxjs'
import { atom, filter, kernel, link, map, program, sink, source, t, type Program, type RunOptions } from 'lamina'
import {
  BenchCheckError,
  BenchUsageError,
  collectGarbage,
  GcPauses,
  humanRate,
  median,
  peakRssMiB,
  positiveInteger,
  progress,
  round3,
  rssMiB,
  runMain,
  seededRandom,
  timed,
} from './_harness.js'

/** One input record: a small event by a user. */
const Click = t.type({ id: t.number, user: t.string })
type Click = t.TypeOf<typeof Click>

/** What the map stage makes of a click. */
const Scored = t.type({ user: t.string, score: t.number })
type Scored = t.TypeOf<typeof Scored>

/** One final count. */
const UserCount = t.type({ user: t.string, count: t.number })

// The stage functions, shared by both variants so they do exactly the same work. They are kept
// cheap on purpose: the benchmark measures what the runtime adds around user code.
const score = (click: Click): Scored => ({ user: click.user, score: click.id & 1023 })
const keep = (scored: Scored): boolean => scored.score < 768
const increment = (n: number): number => n + 1

/** `count` records over `keys` distinct users, the users drawn uniformly by a seeded generator. */
function generate(count: number, keys: number, seed: number): Click[] {
  const random = seededRandom(seed)
  const users = Array.from({ length: keys }, (_, i) => `user-${String(i).padStart(5, '0')}`)
  const records = new Array<Click>(count)
  for (let id = 0; id < count; id++) records[id] = { id, user: users[Math.floor(random() * keys)]! }
  return records
}

/** The Lamina program: source → map → filter → keyed count (its `end` emits the counts) → sink. */
function laminaProgram(records: readonly Click[], counts: Map<string, number>, seen: { batchSize?: number }): Program {
  const clicks = source('clicks', Click, records)
  const scored = map('score', Click, Scored, score)
  const kept = filter('keep', Scored, keep)
  const count = atom({
    name: 'count',
    inputs: { in: Scored },
    outputs: { out: UserCount },
    key: (value) => value.user,
    state: { codec: t.number, init: () => 0 },
    on: {
      in: (_value, ctx) => {
        ctx.state.update(increment)
      },
    },
    end: (ctx) => {
      seen.batchSize = ctx.info.batchSize
      for (const [user, n] of ctx.state.entries()) ctx.emit('out', { user: String(user), count: n })
    },
    annotations: { parallelism: 1 },
  })
  const collect = sink('collect', UserCount, (row) => void counts.set(row.user, row.count))
  return program('pipeline', {
    operators: [clicks, scored, kept, count, collect],
    links: [
      link(clicks.outputs.out, scored.inputs.in),
      link(scored.outputs.out, kept.inputs.in),
      link(kept.outputs.out, count.inputs.in),
      link(count.outputs.out, collect.inputs.in),
    ],
  })
}

/** What one timed run gives: the counts, when it started, its milliseconds, and (Lamina) the batch size it ran with. */
interface Outcome {
  readonly counts: Map<string, number>
  readonly start: number
  readonly ms: number
  readonly batchSize?: number
}

/** Runs the pipeline on Lamina; only `kernel.run` to `job.done` is timed by the caller. */
async function runLamina(records: readonly Click[], options: RunOptions): Promise<Outcome> {
  const counts = new Map<string, number>()
  const seen: { batchSize?: number } = {}
  const pipeline = laminaProgram(records, counts, seen)
  const { result: report, start, ms } = await timed(() => kernel.run(pipeline, options).done)
  if (report.deadLetters.length > 0) {
    throw new BenchCheckError(`lamina recorded ${report.deadLetters.length} dead letters; first: ${report.deadLetters[0]!.message}`)
  }
  return { counts, start, ms, batchSize: seen.batchSize }
}

/** Runs the pipeline as a plain rxjs pipe. */
async function runRxjs(records: readonly Click[]): Promise<Outcome> {
  const pipe = from(records).pipe(
    rxMap(score),
    rxFilter(keep),
    rxReduce((counts, scored) => counts.set(scored.user, increment(counts.get(scored.user) ?? 0)), new Map<string, number>()),
  )
  const { result: counts, start, ms } = await timed(() => lastValueFrom(pipe))
  return { counts, start, ms }
}

/** Throws BenchCheckError unless both variants counted the same keys with the same counts. */
function sameCounts(variant: string, actual: ReadonlyMap<string, number>, expected: ReadonlyMap<string, number>): void {
  if (actual.size !== expected.size) throw new BenchCheckError(`${variant} counted ${actual.size} keys, rxjs ${expected.size}: the results differ`)
  for (const [user, n] of expected) {
    const got = actual.get(user)
    if (got !== n) throw new BenchCheckError(`${variant} counted ${got} for ${user}, rxjs ${n}: the results differ`)
  }
}

type Variant = 'lamina' | 'lamina-novalidate' | 'rxjs'
const VARIANTS: readonly Variant[] = ['lamina', 'lamina-novalidate', 'rxjs']

async function main(argv: readonly string[]): Promise<void> {
  let values: { [option: string]: string | boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        batch: { type: 'string' },
        records: { type: 'string' },
        rounds: { type: 'string' },
        warmup: { type: 'string' },
        keys: { type: 'string' },
        seed: { type: 'string' },
      },
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(
      `${error instanceof Error ? error.message : String(error)}\nusage: pipeline [--batch N] [--records N] [--rounds N] [--warmup N] [--keys N] [--seed N]`,
    )
  }
  const option = (name: string): string | undefined => values[name] as string | undefined
  const batchSize = positiveInteger('batch', option('batch'))
  const count = positiveInteger('records', option('records')) ?? 5_000_000
  const rounds = positiveInteger('rounds', option('rounds')) ?? 3
  const warmupCount = Math.min(count, positiveInteger('warmup', option('warmup')) ?? 500_000)
  const keys = positiveInteger('keys', option('keys')) ?? 1000
  const seed = positiveInteger('seed', option('seed')) ?? 42

  const baseOptions: RunOptions = batchSize === undefined ? {} : { batchSize }
  const run = (variant: Variant, records: readonly Click[]): Promise<Outcome> =>
    variant === 'rxjs' ? runRxjs(records) : runLamina(records, variant === 'lamina' ? baseOptions : { ...baseOptions, validate: 'none' })

  const generation = await timed(async () => generate(count, keys, seed))
  const records = generation.result
  collectGarbage()
  const dataRss = rssMiB()
  progress(`pipeline: ${count.toLocaleString('en')} records, ${keys} keys, seed ${seed}, generated in ${generation.ms.toFixed(0)} ms (rss ${dataRss.toFixed(0)} MiB)`)

  // Warm-up: every variant once on a smaller input, checked like the timed runs.
  const warmupRecords = records.slice(0, warmupCount)
  const warm = new Map<Variant, Outcome>()
  for (const variant of VARIANTS) {
    collectGarbage()
    warm.set(variant, await run(variant, warmupRecords))
  }
  for (const variant of VARIANTS) sameCounts(`${variant} (warm-up)`, warm.get(variant)!.counts, warm.get('rxjs')!.counts)
  progress(`warm-up on ${warmupCount.toLocaleString('en')} records: ${VARIANTS.map((v) => `${v} ${warm.get(v)!.ms.toFixed(0)} ms`).join(', ')}`)

  const gc = new GcPauses()
  const samples = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]))
  const gcSamples = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]))
  let reference: Map<string, number> | undefined
  let usedBatchSize = batchSize
  const pending: { variant: Variant; counts: Map<string, number> }[] = []
  for (let round = 0; round < rounds; round++) {
    // Rotate the order so no variant always runs right after the same other one.
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]!)
    for (const variant of order) {
      collectGarbage()
      const outcome = await run(variant, records)
      samples.get(variant)!.push(outcome.ms)
      await gc.settle()
      const gcMs = gc.within(outcome.start, outcome.ms)
      gcSamples.get(variant)!.push(gcMs)
      if (variant !== 'rxjs') usedBatchSize ??= outcome.batchSize
      if (variant === 'rxjs' && reference === undefined) reference = outcome.counts
      else pending.push({ variant, counts: outcome.counts })
      const perSecond = count / (outcome.ms / 1000)
      progress(
        `round ${round + 1}/${rounds} ${variant.padEnd(17)} ${outcome.ms.toFixed(0).padStart(6)} ms  ${humanRate(perSecond)}records/s  ${((outcome.ms * 1e6) / count).toFixed(1)} ns/record  (gc ${gcMs.toFixed(0)} ms)`,
      )
    }
    // Every result (later rxjs ones too) is checked against the first rxjs result at the end of
    // its round, so at most one round of results is kept alive.
    for (const { variant, counts } of pending.splice(0)) if (reference !== undefined) sameCounts(variant, counts, reference)
  }
  gc.stop()
  if (reference === undefined) throw new BenchCheckError('no rxjs run to check against')

  const figures = (variant: Variant): { perSecond: number; nsPerRecord: number; gcMs: number } => {
    const ms = median(samples.get(variant)!)
    return { perSecond: count / (ms / 1000), nsPerRecord: (ms * 1e6) / count, gcMs: median(gcSamples.get(variant)!) }
  }
  const lamina = figures('lamina')
  const novalidate = figures('lamina-novalidate')
  const rxjs = figures('rxjs')
  const peakRss = peakRssMiB()
  const ratio = lamina.perSecond / rxjs.perSecond
  progress(
    `median of ${rounds}: lamina ${humanRate(lamina.perSecond)}records/s (${lamina.nsPerRecord.toFixed(1)} ns), ` +
      `lamina validate:none ${humanRate(novalidate.perSecond)}records/s (${novalidate.nsPerRecord.toFixed(1)} ns), ` +
      `rxjs ${humanRate(rxjs.perSecond)}records/s (${rxjs.nsPerRecord.toFixed(1)} ns)`,
  )
  progress(
    `ratio ${ratio.toFixed(3)} (validate:none ${(novalidate.perSecond / rxjs.perSecond).toFixed(3)}); codec checks cost ${(lamina.nsPerRecord - novalidate.nsPerRecord).toFixed(1)} ns/record; ` +
      `gc pauses (median ms) lamina ${lamina.gcMs.toFixed(0)}, validate:none ${novalidate.gcMs.toFixed(0)}, rxjs ${rxjs.gcMs.toFixed(0)}; ` +
      `peak rss ${peakRss.toFixed(0)} MiB (${dataRss.toFixed(0)} MiB after generating the data)`,
  )
  const result = {
    bench: 'pipeline',
    ratio: round3(ratio),
    lamina_records_per_s: Math.round(lamina.perSecond),
    rxjs_records_per_s: Math.round(rxjs.perSecond),
    lamina_ns_per_record: round3(lamina.nsPerRecord),
    rxjs_ns_per_record: round3(rxjs.nsPerRecord),
    records: count,
    batch_size: usedBatchSize ?? null,
    lamina_novalidate_records_per_s: Math.round(novalidate.perSecond),
    lamina_novalidate_ns_per_record: round3(novalidate.nsPerRecord),
    novalidate_ratio: round3(novalidate.perSecond / rxjs.perSecond),
    validate_cost_ns_per_record: round3(lamina.nsPerRecord - novalidate.nsPerRecord),
    lamina_gc_ms: Math.round(lamina.gcMs),
    lamina_novalidate_gc_ms: Math.round(novalidate.gcMs),
    rxjs_gc_ms: Math.round(rxjs.gcMs),
    peak_rss_mb: Math.round(peakRss),
    data_rss_mb: Math.round(dataRss),
    rounds,
    keys,
    node: process.version,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

runMain('pipeline', () => main(process.argv.slice(2)))
