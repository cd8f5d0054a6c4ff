// Benchmark: a keyed tumbling event-time window (count and sum per key per window) over records
// that arrive out of order within a bound, three ways: Lamina's window operator, a hand-written
// TypeScript loop (the baseline), and the native core's window step, both of the first and last
// driven by the kernel with watermarks.
//
//   npm run bench -- windows [--records N] [--keys N] [--window-ms N] [--events-per-ms N] [--disorder-pct N]
//                            [--out-of-order-ms N] [--batch N] [--rounds N] [--warmup N] [--seed N] [--only V,V]
//
// `--only` runs some of the variants, to profile one (Node 20 refuses --cpu-prof in NODE_OPTIONS):
//   node --expose-gc --max-old-space-size=8192 --cpu-prof --cpu-prof-dir=prof dist/bench/windows.js --only lamina
//   node bench/cpuprofile-summary.mjs prof/*.cpuprofile
// The figures of the variants left out are then null.
//
// The records `{ key, time, value }` are generated once, before any timing: record i happens at
// `floor(i / events-per-ms)` ms, and `disorder-pct` percent of them are moved back by 1 to
// `out-of-order-ms` ms (not below 0), so no record is more than the bound behind one before it;
// keys are drawn uniformly from `keys` integers, values from 0..99 (sums are exact). The default of
// 10 events per ms gives 1-second windows of 10,000 records, about 10 per key: at 1 event per ms
// (the `--events-per-ms 1` run) a window holds 1.6 records per key and emitting the results, nearly
// as many as the records, is most of the work.
//
// Every variant sees the same watermark rule: after each batch of `--batch` records the watermark
// is the largest time seen less the bound; a record below the watermark is late (counted, not
// aggregated); a window `[k·size, (k+1)·size)` fires once `end <= watermark`, and the rest at the end.
//
// - `lamina`: kernel.run of source(records, { eventTime: { timestamp, outOfOrderMs } }) →
//   window(tumbling, count + sum) → sink; late records are dead letters (ERR_LATE_RECORD);
// - `handwritten` (the baseline): one loop over the records in batches, a Map of windows by start,
//   each a Map of accumulators by key; windows fire at the end of each batch;
// - `native`: kernel.run of the same source → native([{ op: 'window', size, key, value, time }])
//   → sink, records converted to columns by `recordLayout` (one Float64Array a field per batch) and
//   results back to objects;
// - `native-columns`: the same native step, but the source's values are the records already in the
//   native layout, one value a batch of `--batch` records (three Float64Arrays, built before
//   timing), with the source's event time the batch's largest time and a kernel batch of one such
//   value, so the watermark still follows every `--batch` records; the results stay columns up to
//   the sink. This is the fastest honest path: the same query through the kernel with watermarks,
//   no per-record conversion at the boundary;
// - `native-raw`: no kernel at all, the ceiling of the native paths: a loop that hands the same
//   batches to a NativeChain of the same step (`push`), computes each batch's largest time and calls
//   `advance` with the same watermark, and digests the windows it returns. It is not a way to run
//   Lamina; it says how much of a native path's time is the native core's own.
//
// Every variant feeds each window it fires (key, start, end, count, sum) into the same
// order-independent digest; the digests and the number of late records must agree (and no record
// may be late: the bound holds by construction), or the run fails. The warm-up also compares every
// window exactly. Each variant is warmed up once on a smaller input, then the variants take turns
// for several rounds (the order rotates each round) and medians are reported. Progress goes to
// stderr; the last line of stdout is one JSON object: `ratio` is lamina ÷ handwritten records/s,
// `native_ratio` the faster of the two native paths ÷ handwritten (which one is `native_path`), and
// `native_raw_ratio` the native core alone ÷ handwritten (the most any native path could reach).

import { availableParallelism, loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { kernel, link, native, program, recordLayout, sink, source, t, tumbling, window, type NativeLayout, type Program, type RunOptions } from 'lamina'
import { type Batch, NativeChain } from '../native/ts/native.js'
import {
  BenchCheckError,
  BenchUsageError,
  collectGarbage,
  humanRate,
  median,
  peakRssMiB,
  positiveInteger,
  progress,
  rotatingRounds,
  round3,
  runMain,
  seededRandom,
  timed,
} from './_harness.js'

/** One input record: an event of a key at a time (ms), with a value to sum. */
const Event = t.type({ key: t.number, time: t.number, value: t.number })
type Event = t.TypeOf<typeof Event>

/** A window's value in Lamina: how many records and the sum of their values. */
const Stat = t.type({ count: t.number, sum: t.number })
type Stat = t.TypeOf<typeof Stat>

/** One fired window as the native step's output layout gives it back. */
const Row = t.type({ key: t.number, start: t.number, end: t.number, count: t.number, sum: t.number })

// --- the data -------------------------------------------------------------------------------------

interface Parameters {
  readonly records: number
  readonly keys: number
  readonly windowMs: number
  readonly eventsPerMs: number
  readonly disorderPct: number
  readonly outOfOrderMs: number
  readonly batchSize: number
  readonly seed: number
}

/** The records, in arrival order (see the header for how their times are made). */
function generate(p: Parameters, count: number): Event[] {
  const random = seededRandom(p.seed)
  const events = new Array<Event>(count)
  for (let i = 0; i < count; i++) {
    const base = Math.floor(i / p.eventsPerMs)
    const moved = random() * 100 < p.disorderPct
    const time = moved ? Math.max(0, base - 1 - Math.floor(random() * p.outOfOrderMs)) : base
    events[i] = { key: Math.floor(random() * p.keys), time, value: Math.floor(random() * 100) }
  }
  return events
}

/** A batch of records in the native layout: key `k`, time `t`, value `v`, and the batch's largest time. */
interface EventColumns {
  readonly k: Float64Array
  readonly t: Float64Array
  readonly v: Float64Array
}

const isEventColumns = (u: unknown): u is EventColumns =>
  typeof u === 'object' &&
  u !== null &&
  (u as EventColumns).k instanceof Float64Array &&
  (u as EventColumns).t instanceof Float64Array &&
  (u as EventColumns).v instanceof Float64Array
const EventColumns = new t.Type<EventColumns, EventColumns, unknown>('EventColumns', isEventColumns, (u, c) => (isEventColumns(u) ? t.success(u) : t.failure(u, c)), t.identity)

/** The records as native batches of `size` rows each (built before timing). */
function columnsOf(events: readonly Event[], size: number): EventColumns[] {
  const out: EventColumns[] = []
  for (let i = 0; i < events.length; i += size) {
    const n = Math.min(size, events.length - i)
    const batch = { k: new Float64Array(n), t: new Float64Array(n), v: new Float64Array(n) }
    for (let j = 0; j < n; j++) {
      const e = events[i + j]!
      batch.k[j] = e.key
      batch.t[j] = e.time
      batch.v[j] = e.value
    }
    out.push(batch)
  }
  return out
}

/** The largest event time of a native batch: its event time, as the source sees it. */
function maxTimeOf(batch: EventColumns): number {
  const times = batch.t
  let max = Number.NEGATIVE_INFINITY
  for (let i = 0; i < times.length; i++) if (times[i]! > max) max = times[i]!
  return max
}

/** Native batches of records as they are: one value a batch (several are concatenated). */
const eventColumnsLayout: NativeLayout<EventColumns> = {
  name: 'event-columns(k,t,v)',
  toColumns(values) {
    if (values.length === 1) return values[0] as unknown as Batch
    const n = values.reduce((sum, b) => sum + b.t.length, 0)
    const out = { k: new Float64Array(n), t: new Float64Array(n), v: new Float64Array(n) }
    let at = 0
    for (const b of values) {
      out.k.set(b.k, at)
      out.t.set(b.t, at)
      out.v.set(b.v, at)
      at += b.t.length
    }
    return out
  },
  fromColumns: () => {
    throw new TypeError('event-columns is an input layout only')
  },
}

/** A batch of fired windows as the native step gives them: key, start, end, count, sum (and min, max, mean, unused). */
interface WindowColumns {
  readonly key: Float64Array
  readonly start: Float64Array
  readonly end: Float64Array
  readonly count: Float64Array
  readonly sum: Float64Array
}

const isWindowColumns = (u: unknown): u is WindowColumns =>
  typeof u === 'object' && u !== null && (u as WindowColumns).key instanceof Float64Array && (u as WindowColumns).count instanceof Float64Array
const WindowColumns = new t.Type<WindowColumns, WindowColumns, unknown>(
  'WindowColumns',
  isWindowColumns,
  (u, c) => (isWindowColumns(u) ? t.success(u) : t.failure(u, c)),
  t.identity,
)

/** The native step's output as it is: one value a batch of fired windows. */
const windowColumnsLayout: NativeLayout<WindowColumns> = {
  name: 'window-columns',
  toColumns: () => {
    throw new TypeError('window-columns is an output layout only')
  },
  fromColumns: (columns) => ((columns.key as Float64Array).length === 0 ? [] : [columns as unknown as WindowColumns]),
}

// --- the check --------------------------------------------------------------------------------------

/**
 * What a variant's fired windows add up to, independent of the order they fire in: how many, the
 * records and values they hold, and two hashes (a wrapping sum and a xor) of every window's
 * `(key, start, end, count, sum)`. With `rows`, every window is also kept as a line, to compare exactly.
 */
class Digest {
  windows = 0
  records = 0
  sum = 0
  hashSum = 0
  hashXor = 0
  lateFirings = 0
  readonly rows: string[] | undefined

  constructor(keepRows: boolean) {
    this.rows = keepRows ? [] : undefined
  }

  add(key: number, start: number, end: number, count: number, sum: number): void {
    this.windows++
    this.records += count
    this.sum += sum
    let h = Math.imul(key | 0, 0x9e3779b1) ^ Math.imul(start | 0, 0x85ebca77) ^ Math.imul(end | 0, 0xc2b2ae3d)
    h = Math.imul(h ^ (h >>> 15), 0x27d4eb2f) ^ Math.imul(count | 0, 0x165667b1) ^ Math.imul(sum | 0, 0x2545f491)
    h = Math.imul(h ^ (h >>> 13), 0x9e3779b1)
    h ^= h >>> 16
    this.hashSum = (this.hashSum + h) | 0
    this.hashXor ^= h
    this.rows?.push(`${key} ${start} ${end} ${count} ${sum}`)
  }

  describe(): string {
    return `${this.windows} windows of ${this.records} records (sum ${this.sum}, hashes ${this.hashSum >>> 0}/${this.hashXor >>> 0})`
  }
}

/** What one timed run gives: its digest, late records, when it started, its milliseconds. */
interface Outcome {
  readonly digest: Digest
  readonly late: number
  readonly start: number
  readonly ms: number
}

/** Throws BenchCheckError unless `actual` fired the same windows as `expected`, with the same late records. */
function sameWindows(variant: string, actual: Outcome, against: string, expected: Outcome): void {
  const a = actual.digest
  const e = expected.digest
  if (a.lateFirings > 0) throw new BenchCheckError(`${variant} fired ${a.lateFirings} windows again for late records: none is late`)
  if (actual.late !== expected.late) throw new BenchCheckError(`${variant} found ${actual.late} late records, ${against} ${expected.late}: the results differ`)
  if (actual.late !== 0) throw new BenchCheckError(`${variant} found ${actual.late} late records, but every record is within the bound`)
  if (a.windows !== e.windows || a.records !== e.records || a.sum !== e.sum || a.hashSum !== e.hashSum || a.hashXor !== e.hashXor)
    throw new BenchCheckError(`${variant} fired ${a.describe()}, ${against} ${e.describe()}: the results differ`)
  if (a.rows !== undefined && e.rows !== undefined) {
    const x = [...a.rows].sort()
    const y = [...e.rows].sort()
    const at = x.findIndex((row, i) => row !== y[i])
    if (at >= 0 || x.length !== y.length) throw new BenchCheckError(`${variant} fired window "${x[at] ?? '-'}" where ${against} fired "${y[at] ?? '-'}": the results differ`)
  }
}

// --- the variants -------------------------------------------------------------------------------------

/** Lamina's aggregate: count and sum, updated in place (the operator allows it). */
const stat = {
  codec: Stat,
  init: (): Stat => ({ count: 0, sum: 0 }),
  add: (acc: Stat, e: Event): Stat => {
    acc.count++
    acc.sum += e.value
    return acc
  },
}

function laminaProgram(events: readonly Event[], p: Parameters, digest: Digest): Program {
  const records = source('events', Event, events, { eventTime: { timestamp: (e) => e.time, outOfOrderMs: p.outOfOrderMs } })
  const windows = window('windows', { input: Event, key: (e) => e.key, timestamp: (e) => e.time, window: tumbling(p.windowMs), aggregate: stat })
  const results = sink('results', windows.outputs.out.codec, (w) => {
    if (w.late) digest.lateFirings++
    digest.add(w.key as number, w.start, w.end, w.value.count, w.value.sum)
  })
  return program('windows', {
    operators: [records, windows, results],
    links: [link(records.outputs.out, windows.inputs.in), link(windows.outputs.out, results.inputs.in)],
  })
}

/** The native window step of every native variant: tumbling, count and sum per key `k` of `v`, by time `t`. */
const windowStep = (p: Parameters) => [{ op: 'window' as const, size: p.windowMs, key: 'k', value: 'v', time: 't' }]

function nativeProgram(events: readonly Event[], p: Parameters, digest: Digest): Program {
  const records = source('events', Event, events, { eventTime: { timestamp: (e) => e.time, outOfOrderMs: p.outOfOrderMs } })
  const windows = native({
    name: 'windows',
    input: Event,
    output: Row,
    steps: windowStep(p),
    inputLayout: recordLayout<Event>({ key: { column: 'k', type: 'number' }, time: { column: 't', type: 'number' }, value: { column: 'v', type: 'number' } }),
    outputLayout: recordLayout<t.TypeOf<typeof Row>>({
      key: { column: 'key', type: 'number' },
      start: { column: 'start', type: 'number' },
      end: { column: 'end', type: 'number' },
      count: { column: 'count', type: 'number' },
      sum: { column: 'sum', type: 'number' },
    }),
  })
  const results = sink('results', Row, (w) => void digest.add(w.key, w.start, w.end, w.count, w.sum))
  return program('native-windows', {
    operators: [records, windows, results],
    links: [link(records.outputs.out, windows.inputs.in), link(windows.outputs.out, results.inputs.in)],
  })
}

function nativeColumnsProgram(batches: readonly EventColumns[], p: Parameters, digest: Digest): Program {
  const records = source('events', EventColumns, batches, { eventTime: { timestamp: maxTimeOf, outOfOrderMs: p.outOfOrderMs } })
  const windows = native({ name: 'windows', input: EventColumns, output: WindowColumns, steps: windowStep(p), inputLayout: eventColumnsLayout, outputLayout: windowColumnsLayout })
  const results = sink('results', WindowColumns, (w) => {
    const { key, start, end, count, sum } = w
    for (let i = 0; i < key.length; i++) digest.add(key[i]!, start[i]!, end[i]!, count[i]!, sum[i]!)
  })
  return program('native-columns-windows', {
    operators: [records, windows, results],
    links: [link(records.outputs.out, windows.inputs.in), link(windows.outputs.out, results.inputs.in)],
  })
}

/** Runs a program; only `kernel.run` to `job.done` is timed. Late records are the window operator's dead letters. */
async function runProgram(variant: string, built: Program, digest: Digest, options: RunOptions): Promise<Outcome> {
  const { result: report, start, ms } = await timed(() => kernel.run(built, options).done)
  let late = 0
  for (const dead of report.deadLetters) {
    if (dead.where.operator !== 'windows') throw new BenchCheckError(`${variant}: a dead letter at ${dead.where.operator}: ${dead.message}`)
    const rows = (dead.value as { lateRows?: unknown }).lateRows
    late += typeof rows === 'number' ? rows : 1
  }
  return { digest, late, start, ms }
}

/** The native core alone (see the header): the same batches, step and watermarks, no kernel. */
async function runNativeRaw(batches: readonly EventColumns[], p: Parameters, digest: Digest): Promise<Outcome> {
  const take = (out: readonly Batch[]): void => {
    for (const w of out as unknown as WindowColumns[]) {
      const { key, start, end, count, sum } = w
      for (let i = 0; i < key.length; i++) digest.add(key[i]!, start[i]!, end[i]!, count[i]!, sum[i]!)
    }
  }
  const {
    result: late,
    start,
    ms,
  } = await timed(async () => {
    const chain = new NativeChain(windowStep(p))
    let watermark = Number.NEGATIVE_INFINITY
    let maxTime = Number.NEGATIVE_INFINITY
    for (const batch of batches) {
      take(chain.push(batch as unknown as Batch))
      const max = maxTimeOf(batch)
      if (max > maxTime) maxTime = max
      const next = maxTime - p.outOfOrderMs
      if (next > watermark) take(chain.advance((watermark = next)))
    }
    const late = chain.late
    take(chain.finish())
    return late
  })
  return { digest, late, start, ms }
}

/** An accumulator of the hand-written loop. */
interface Acc {
  count: number
  sum: number
}

/**
 * The baseline: the same query as a plain loop. Windows by start, each a Map of accumulators by
 * key; after each batch the watermark rises to the largest time seen less the bound and every
 * window with `end <= watermark` fires.
 */
async function runHandwritten(events: readonly Event[], p: Parameters, digest: Digest): Promise<Outcome> {
  const {
    result: late,
    start,
    ms,
  } = await timed(async () => {
    const size = p.windowMs
    const open = new Map<number, Map<number, Acc>>()
    const fire = (watermark: number): void => {
      for (const [from, accs] of open) {
        const end = from + size
        if (end > watermark) continue
        for (const [key, acc] of accs) digest.add(key, from, end, acc.count, acc.sum)
        open.delete(from)
      }
    }
    let maxTime = Number.NEGATIVE_INFINITY
    let watermark = Number.NEGATIVE_INFINITY
    let late = 0
    for (let i = 0; i < events.length; i += p.batchSize) {
      const last = Math.min(events.length, i + p.batchSize)
      for (let j = i; j < last; j++) {
        const e = events[j]!
        const time = e.time
        if (time > maxTime) maxTime = time
        if (time < watermark) {
          late++
          continue
        }
        const from = Math.floor(time / size) * size
        let accs = open.get(from)
        if (accs === undefined) open.set(from, (accs = new Map()))
        const acc = accs.get(e.key)
        if (acc === undefined) accs.set(e.key, { count: 1, sum: e.value })
        else {
          acc.count++
          acc.sum += e.value
        }
      }
      const next = maxTime - p.outOfOrderMs
      if (next > watermark) {
        watermark = next
        fire(watermark)
      }
    }
    fire(Number.POSITIVE_INFINITY)
    return late
  })
  return { digest, late, start, ms }
}

// --- the run ------------------------------------------------------------------------------------------

type Variant = 'lamina' | 'handwritten' | 'native' | 'native-columns' | 'native-raw'
const VARIANTS: readonly Variant[] = ['handwritten', 'lamina', 'native', 'native-columns', 'native-raw']

const USAGE =
  'usage: windows [--records N] [--keys N] [--window-ms N] [--events-per-ms N] [--disorder-pct N] [--out-of-order-ms N] [--batch N] ' +
  `[--rounds N] [--warmup N] [--seed N] [--only ${VARIANTS.join(',')}]`

async function main(argv: readonly string[]): Promise<void> {
  let values: { [option: string]: string | boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        ['records', 'keys', 'window-ms', 'events-per-ms', 'disorder-pct', 'out-of-order-ms', 'batch', 'rounds', 'warmup', 'seed', 'only'].map((name) => [
          name,
          { type: 'string' as const },
        ]),
      ),
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`)
  }
  const option = (name: string): string | undefined => values[name] as string | undefined
  const disorderPct = positiveInteger('disorder-pct', option('disorder-pct')) ?? 10
  if (disorderPct > 100) throw new BenchUsageError(`--disorder-pct must be at most 100, got ${disorderPct}\n${USAGE}`)
  const p: Parameters = {
    records: positiveInteger('records', option('records')) ?? 5_000_000,
    keys: positiveInteger('keys', option('keys')) ?? 1000,
    windowMs: positiveInteger('window-ms', option('window-ms')) ?? 1000,
    eventsPerMs: positiveInteger('events-per-ms', option('events-per-ms')) ?? 10,
    disorderPct,
    outOfOrderMs: positiveInteger('out-of-order-ms', option('out-of-order-ms')) ?? 200,
    batchSize: positiveInteger('batch', option('batch')) ?? 1024,
    seed: positiveInteger('seed', option('seed')) ?? 42,
  }
  const rounds = positiveInteger('rounds', option('rounds')) ?? 5
  const warmupCount = Math.min(p.records, positiveInteger('warmup', option('warmup')) ?? 500_000)
  const only = option('only')?.split(',')
  const unknown = only?.filter((v) => !(VARIANTS as readonly string[]).includes(v))
  if (unknown !== undefined && unknown.length > 0) throw new BenchUsageError(`--only: unknown variant ${unknown.join(', ')}\n${USAGE}`)
  const variants = only === undefined ? VARIANTS : VARIANTS.filter((v) => only.includes(v))
  if (variants.length === 0) throw new BenchUsageError(`--only names no variant\n${USAGE}`)

  const generation = await timed(async () => {
    const events = generate(p, p.records)
    return { events, columns: columnsOf(events, p.batchSize) }
  })
  const { events, columns } = generation.result
  const spanMs = events.length === 0 ? 0 : Math.floor((events.length - 1) / p.eventsPerMs) + 1
  progress(
    `windows: ${p.records.toLocaleString('en')} records over ${(spanMs / 1000).toFixed(0)} s of event time (${p.eventsPerMs} a ms), ${p.keys} keys, ` +
      `tumbling ${p.windowMs} ms windows (about ${Math.round(p.eventsPerMs * p.windowMs).toLocaleString('en')} records each), ` +
      `${p.disorderPct}% moved back by up to ${p.outOfOrderMs} ms, outOfOrderMs ${p.outOfOrderMs}, batches of ${p.batchSize}, seed ${p.seed}; ` +
      `generated in ${generation.ms.toFixed(0)} ms; load average ${loadavg()[0]!.toFixed(2)} on ${availableParallelism()} cores`,
  )

  const options: RunOptions = { batchSize: p.batchSize }
  const run = (variant: Variant, input: readonly Event[], batches: readonly EventColumns[], keepRows: boolean): Promise<Outcome> => {
    const digest = new Digest(keepRows)
    switch (variant) {
      case 'handwritten':
        return runHandwritten(input, p, digest)
      case 'lamina':
        return runProgram(variant, laminaProgram(input, p, digest), digest, options)
      case 'native':
        return runProgram(variant, nativeProgram(input, p, digest), digest, options)
      case 'native-columns':
        // One value is a batch of `batchSize` records: a kernel batch of one keeps the watermark after each.
        return runProgram(variant, nativeColumnsProgram(batches, p, digest), digest, { batchSize: 1 })
      case 'native-raw':
        return runNativeRaw(batches, p, digest)
    }
  }

  // Warm-up: every variant once on a smaller input, every window compared exactly.
  const warmEvents = events.slice(0, warmupCount)
  const warmColumns = columnsOf(warmEvents, p.batchSize)
  const warm = new Map<Variant, Outcome>()
  for (const variant of variants) {
    collectGarbage()
    warm.set(variant, await run(variant, warmEvents, warmColumns, true))
  }
  const [first] = variants
  for (const variant of variants) sameWindows(`${variant} (warm-up)`, warm.get(variant)!, first!, warm.get(first!)!)
  progress(
    `warm-up on ${warmupCount.toLocaleString('en')} records (${warm.get(first!)!.digest.windows.toLocaleString('en')} windows, every one compared): ` +
      variants.map((v) => `${v} ${warm.get(v)!.ms.toFixed(0)} ms`).join(', '),
  )
  warm.clear()

  let expected: { variant: Variant; outcome: Outcome } | undefined
  const { ms: samples, gcMs: gcSamples } = await rotatingRounds(
    variants,
    rounds,
    (variant) => run(variant, events, columns, false),
    (variant, outcome, round, gcMs) => {
      if (expected === undefined) {
        sameWindows(variant, outcome, variant, outcome)
        expected = { variant, outcome }
      } else sameWindows(variant, outcome, expected.variant, expected.outcome)
      progress(
        `round ${round + 1}/${rounds} ${variant.padEnd(14)} ${outcome.ms.toFixed(0).padStart(6)} ms  ${humanRate(p.records / (outcome.ms / 1000))}records/s  ` +
          `${((outcome.ms * 1e6) / p.records).toFixed(1)} ns/record  (gc ${gcMs.toFixed(0)} ms, load ${loadavg()[0]!.toFixed(2)})`,
      )
    },
  )

  // Figures of a variant left out by --only are null.
  const rate = (variant: Variant): number | null => (samples.has(variant) ? p.records / (median(samples.get(variant)!) / 1000) : null)
  const gcMs = (variant: Variant): number | null => (gcSamples.has(variant) ? Math.round(median(gcSamples.get(variant)!)) : null)
  const over = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : round3(a / b))
  const handwritten = rate('handwritten')
  const lamina = rate('lamina')
  const nativeRecords = rate('native')
  const nativeColumns = rate('native-columns')
  const nativeRaw = rate('native-raw')
  const nativePath: Variant | null = nativeRecords === null && nativeColumns === null ? null : (nativeColumns ?? 0) >= (nativeRecords ?? 0) ? 'native-columns' : 'native'
  const nativeRate = nativePath === null ? null : rate(nativePath)
  const show = (x: number | null): string => (x === null ? '-' : `${humanRate(x)}records/s`)
  progress(
    `median of ${rounds}: ${variants.map((v) => `${v} ${show(rate(v))}`).join(', ')}; ` +
      `ratio ${over(lamina, handwritten) ?? '-'} (target >= 0.5), native_ratio ${over(nativeRate, handwritten) ?? '-'} (${nativePath ?? '-'}, target >= 3), ` +
      `native over records ${over(nativeRecords, handwritten) ?? '-'}, the native core alone ${over(nativeRaw, handwritten) ?? '-'}; gc pauses (median ms) ${variants.map((v) => `${v} ${gcMs(v) ?? '-'}`).join(', ')}; ` +
      `peak rss ${peakRssMiB().toFixed(0)} MiB; load average ${loadavg()[0]!.toFixed(2)}`,
  )
  const round = (x: number | null): number | null => (x === null ? null : Math.round(x))
  const result = {
    bench: 'windows',
    ratio: over(lamina, handwritten),
    native_ratio: over(nativeRate, handwritten),
    lamina_records_per_s: round(lamina),
    native_records_per_s: round(nativeRate),
    handwritten_records_per_s: round(handwritten),
    records: p.records,
    native_path: nativePath,
    native_records_records_per_s: round(nativeRecords),
    native_records_ratio: over(nativeRecords, handwritten),
    native_columns_records_per_s: round(nativeColumns),
    native_columns_ratio: over(nativeColumns, handwritten),
    native_raw_records_per_s: round(nativeRaw),
    native_raw_ratio: over(nativeRaw, handwritten),
    windows: expected?.outcome.digest.windows ?? null,
    late_records: expected?.outcome.late ?? null,
    keys: p.keys,
    window_ms: p.windowMs,
    events_per_ms: p.eventsPerMs,
    disorder_pct: p.disorderPct,
    out_of_order_ms: p.outOfOrderMs,
    batch_size: p.batchSize,
    rounds,
    lamina_gc_ms: gcMs('lamina'),
    handwritten_gc_ms: gcMs('handwritten'),
    native_gc_ms: gcMs('native'),
    native_columns_gc_ms: gcMs('native-columns'),
    native_raw_gc_ms: gcMs('native-raw'),
    peak_rss_mb: Math.round(peakRssMiB()),
    node: process.version,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

runMain('windows', () => main(process.argv.slice(2)))
