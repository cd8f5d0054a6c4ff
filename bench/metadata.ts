// Benchmark: what the metadata layer costs on a word count, without the layer, sampling 1% and sampling everything.
//
//   npm run bench -- metadata [--words N] [--rounds N] [--warmup N] [--batch N] [--seed N]
//
// One pipeline, lines -> words (flatMap) -> keyed count (emits at end) -> sink, runs in this process
// over the same pre-generated lines under three kernels: no layers, `metadata({ sampling: 0.01 })`
// and `metadata({ sampling: 1 })` (a new layer each run, so no run inherits another's trace log).
// Each variant is warmed up once on a smaller input, then the variants take turns for several
// rounds (the order rotates each round) and the median of each is reported. Progress goes to
// stderr; the last line of stdout is one JSON object:
//
// - `ratio`: words/s at sampling 0.01 ÷ words/s without the layer (target ≥ 0.9);
// - `ratio_full`: words/s at sampling 1 ÷ words/s without the layer (target ≥ 0.5);
// - `ratio_record`: words/s at sampling 0.01 by record (`sampleBy: 'record'`) ÷ without: independent
//   records put a traced record in nearly every batch, so this costs more than the default, which
//   traces whole source batches;
// - `*_words_per_s`, `*_ns_per_word`: the medians; `traced_*`: what the layer traced in its last run.

import { parseArgs } from 'node:util'
import { atom, flatMap, kernel, link, program, sink, source, t, type Kernel, type Program, type RunOptions } from 'lamina'
import { metadata, type MetadataInit, type MetadataLayer } from '../layers/metadata/index.js'
import { generatedText, words } from '../examples/wordcount.js'
import { BenchCheckError, BenchUsageError, collectGarbage, humanRate, median, positiveInteger, progress, round3, runMain, timed } from './_harness.js'

/** Lines of 12 words with Zipf-like frequencies, by a seeded generator: the example's own text. */
function generate(count: number, seed: number): string[] {
  return [...generatedText(count, seed)]
}

const WordCount = t.type({ word: t.string, count: t.number })

/** The word count program: lines -> words -> count (keyed; emits every count at end) -> sink. */
function wordcount(lines: readonly string[], counts: Map<string, number>): Program {
  const text = source('lines', t.string, lines)
  const split = flatMap('words', t.string, t.string, words)
  const count = atom({
    name: 'count',
    inputs: { in: t.string },
    outputs: { out: WordCount },
    key: (word) => word,
    state: { codec: t.number, init: () => 0 },
    on: {
      in: (_word, ctx) => {
        ctx.state.update((n) => n + 1)
      },
    },
    end: (ctx) => {
      for (const [word, n] of ctx.state.entries()) ctx.emit('out', { word: String(word), count: n })
    },
  })
  const collect = sink('collect', WordCount, (row) => void counts.set(row.word, row.count))
  return program('wordcount', {
    operators: [text, split, count, collect],
    links: [link(text.outputs.out, split.inputs.in), link(split.outputs.out, count.inputs.in), link(count.outputs.out, collect.inputs.in)],
  })
}

type Variant = 'without' | 'sampled' | 'full' | 'by-record'
const VARIANTS: readonly Variant[] = ['without', 'sampled', 'full', 'by-record']
const LAYERS: Record<Exclude<Variant, 'without'>, MetadataInit> = {
  sampled: { sampling: 0.01 },
  full: { sampling: 1 },
  'by-record': { sampling: 0.01, sampleBy: 'record' },
}

interface Outcome {
  readonly counts: Map<string, number>
  readonly ms: number
  readonly layer?: MetadataLayer
}

async function runVariant(variant: Variant, lines: readonly string[], options: RunOptions, seed: number): Promise<Outcome> {
  const counts = new Map<string, number>()
  const layer = variant === 'without' ? undefined : metadata({ ...LAYERS[variant], seed, peer: 'bench' })
  const stack: Kernel = layer === undefined ? kernel : kernel.with(layer)
  const p = wordcount(lines, counts)
  const { result: report, ms } = await timed(() => stack.run(p, options).done)
  if (report.deadLetters.length > 0) throw new BenchCheckError(`${variant}: ${report.deadLetters.length} dead letters; first: ${report.deadLetters[0]!.message}`)
  return layer === undefined ? { counts, ms } : { counts, ms, layer }
}

function sameCounts(variant: string, actual: ReadonlyMap<string, number>, expected: ReadonlyMap<string, number>): void {
  if (actual.size !== expected.size) throw new BenchCheckError(`${variant} counted ${actual.size} words, the run without the layer ${expected.size}`)
  for (const [word, n] of expected) if (actual.get(word) !== n) throw new BenchCheckError(`${variant} counted ${actual.get(word)} for ${word}, the run without the layer ${n}`)
}

async function main(argv: readonly string[]): Promise<void> {
  let values: { [option: string]: string | boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: { words: { type: 'string' }, rounds: { type: 'string' }, warmup: { type: 'string' }, batch: { type: 'string' }, seed: { type: 'string' } },
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(`${error instanceof Error ? error.message : String(error)}\nusage: metadata [--words N] [--rounds N] [--warmup N] [--batch N] [--seed N]`)
  }
  const option = (name: string): string | undefined => values[name] as string | undefined
  const wordCount = positiveInteger('words', option('words')) ?? 3_000_000
  const rounds = positiveInteger('rounds', option('rounds')) ?? 7
  const warmupWords = Math.min(wordCount, positiveInteger('warmup', option('warmup')) ?? 300_000)
  const batchSize = positiveInteger('batch', option('batch'))
  const seed = positiveInteger('seed', option('seed')) ?? 42
  const options: RunOptions = batchSize === undefined ? {} : { batchSize }

  const generation = await timed(async () => generate(wordCount, seed))
  const lines = generation.result
  progress(`metadata: ${wordCount.toLocaleString('en')} words in ${lines.length.toLocaleString('en')} lines, seed ${seed}, generated in ${generation.ms.toFixed(0)} ms`)

  const warmLines = lines.slice(0, Math.ceil(warmupWords / 12))
  const warm = new Map<Variant, Outcome>()
  for (const variant of VARIANTS) {
    collectGarbage()
    warm.set(variant, await runVariant(variant, warmLines, options, seed))
  }
  for (const variant of VARIANTS) sameCounts(`${variant} (warm-up)`, warm.get(variant)!.counts, warm.get('without')!.counts)
  progress(`warm-up on ${warmupWords.toLocaleString('en')} words: ${VARIANTS.map((v) => `${v} ${warm.get(v)!.ms.toFixed(0)} ms`).join(', ')}`)

  const samples = new Map<Variant, number[]>(VARIANTS.map((v) => [v, []]))
  const last = new Map<Variant, Outcome>()
  let reference: Map<string, number> | undefined
  for (let round = 0; round < rounds; round++) {
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]!)
    const results: { variant: Variant; outcome: Outcome }[] = []
    for (const variant of order) {
      collectGarbage()
      const outcome = await runVariant(variant, lines, options, seed)
      samples.get(variant)!.push(outcome.ms)
      results.push({ variant, outcome })
      last.set(variant, outcome)
      progress(
        `round ${round + 1}/${rounds} ${variant.padEnd(9)} ${outcome.ms.toFixed(0).padStart(6)} ms  ${humanRate(wordCount / (outcome.ms / 1000))}words/s  ${((outcome.ms * 1e6) / wordCount).toFixed(1)} ns/word`,
      )
    }
    reference ??= results.find((r) => r.variant === 'without')!.outcome.counts
    for (const { variant, outcome } of results) sameCounts(variant, outcome.counts, reference)
  }

  const perSecond = (variant: Variant): number => wordCount / (median(samples.get(variant)!) / 1000)
  const without = perSecond('without')
  const sampled = perSecond('sampled')
  const full = perSecond('full')
  const byRecord = perSecond('by-record')
  const ratio = sampled / without
  const ratioFull = full / without
  const ratioRecord = byRecord / without
  const sampledStats = last.get('sampled')!.layer!.stats()
  const fullStats = last.get('full')!.layer!.stats()
  progress(
    `median of ${rounds}: without ${humanRate(without)}words/s, sampling 0.01 ${humanRate(sampled)}words/s (ratio ${ratio.toFixed(3)}), ` +
      `sampling 1 ${humanRate(full)}words/s (ratio ${ratioFull.toFixed(3)}), sampling 0.01 by record ${humanRate(byRecord)}words/s (ratio ${ratioRecord.toFixed(3)}); traced lines ${sampledStats.sampled}/${sampledStats.records} and ${fullStats.sampled}/${fullStats.records}`,
  )
  const result = {
    bench: 'metadata',
    ratio: round3(ratio),
    ratio_full: round3(ratioFull),
    ratio_record: round3(ratioRecord),
    without_words_per_s: Math.round(without),
    sampled_words_per_s: Math.round(sampled),
    full_words_per_s: Math.round(full),
    by_record_words_per_s: Math.round(byRecord),
    without_ns_per_word: round3(1e9 / without),
    sampled_ns_per_word: round3(1e9 / sampled),
    full_ns_per_word: round3(1e9 / full),
    by_record_ns_per_word: round3(1e9 / byRecord),
    traced_lines_sampled: sampledStats.sampled,
    traced_lines_full: fullStats.sampled,
    lines: lines.length,
    words: wordCount,
    rounds,
    batch_size: batchSize ?? null,
    node: process.version,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

runMain('metadata', () => main(process.argv.slice(2)))
