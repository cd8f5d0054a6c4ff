// Benchmark: word count over generated text, four ways: the native core driven by the kernel, the
// TypeScript reference chain, a plain rxjs pipeline, and the pure Rust loop of the addon.
//
//   npm run bench -- native [--mb N] [--chunk-kb N] [--chunks N] [--batch N] [--rounds N] [--warmup N] [--vocabulary N] [--seed N] [--only V,V]
//
// `--only` runs some of the variants, to profile one (Node 20 refuses --cpu-prof in NODE_OPTIONS):
//   node --expose-gc --cpu-prof --cpu-prof-dir=prof dist/bench/native.js --only native-lines
//   node bench/cpuprofile-summary.mjs prof/*.cpuprofile
// The figures of the variants left out are then null.
//
// The text (at least `--mb` MB of UTF-8, lines of 60 to 100 characters, words drawn from a Zipf
// distribution over a seeded vocabulary that includes non-ASCII words) is generated once before any
// timing: as one UTF-8 buffer (the lines joined by '\n'), as that buffer cut into chunks of about
// `--chunk-kb` KiB at line ends, and as an array of line strings. MB/s is always the buffer's bytes
// over the seconds one variant takes:
//
// - `native` (a): kernel.run of source(UTF-8 chunks) → native [tokenize] → native [count] → sink.
//   The kernel fuses the two native operators into one chain (checked on `job.program`) and runs it
//   once per batch of `--chunks` chunks (consecutive, so a batch crosses as one view, no copy).
//   Chunks rather than lines because that is what a file reader produces, and the native core
//   reads UTF-8 as it is: a line as a JavaScript string must first be encoded to UTF-8 at the
//   boundary, which costs about two thirds of what the native word count itself does (see
//   `native-lines`). Chunks end at line ends and '\n' is never part of a word, so the counts are
//   the same;
// - `native-lines`: the same program over a source of line strings, `--batch` lines a batch,
//   converted by the kernel's string layout (utf8Column): reported beside (a), not hidden;
// - `reference` (b): native/ts/reference.ts's chain [tokenize, count] over the batches of (a),
//   built before timing (this times the chain, not the batching);
// - `rxjs` (c): from(lines) → mergeMap(words by `[\p{L}\p{N}]+`gu and toLowerCase) → reduce into a Map;
// - `rust` (d): the addon's `wordcount(bytes)`, one call over the whole buffer: no batches, no
//   crossings, the bound the fused chain can approach.
//
// All of them must count the same words the same number of times, or the run fails. Each variant is
// warmed up once on a smaller text, then the variants take turns for several rounds (the order
// rotates each round) and medians are reported. Progress goes to stderr; the last line of stdout is
// one JSON object: `ratio` is native ÷ rxjs throughput, `vs_rust` native ÷ rust, and `lines_ratio`,
// `lines_vs_rust` the same for native-lines.

import { availableParallelism, loadavg } from 'node:os'
import { parseArgs } from 'node:util'
import { from, lastValueFrom, mergeMap, reduce } from 'rxjs'
import { kernel, link, native, program, recordLayout, sink, source, stringLayout, t, utf8ChunkLayout, Utf8Bytes, type Program, type RunOptions } from 'lamina'
import { utf8Strings, wordcount, type Batch, type WordCounts } from '../native/ts/native.js'
import { ReferenceChain } from '../native/ts/reference.js'
import {
  BenchCheckError,
  BenchUsageError,
  collectGarbage,
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

/** One word and how often it occurs (the records the native count emits). */
const WordCount = t.type({ word: t.string, count: t.number })
type WordCount = t.TypeOf<typeof WordCount>

/** The fused operator's name: the kernel names a fused pair `a+b`. */
const FUSED = 'tokenize+count'

// --- the text ---------------------------------------------------------------------------------------

/**
 * Real non-ASCII words, placed among the frequent ranks so every batch has some: accents, German
 * ß, Greek with a final sigma (ΟΔΟΣ lowercases to οδος with ς), Turkish İ (lowercases to two code
 * units), Cyrillic, CJK, and digits.
 */
const FOREIGN = [
  'café',
  'naïve',
  'über',
  'straße',
  'ελληνικά',
  'ΟΔΟΣ',
  'москва',
  '東京',
  'données',
  'mañana',
  'façade',
  'smörgåsbord',
  'İstanbul',
  'ÆBLE',
  'øre',
  'crème',
  'brûlée',
  'jalapeño',
  'Ἀθῆναι',
  'ǅemal',
  'r2d2',
  '2024',
]

/** Separators between words other than a space (which is 85% of them); the emoji is not a word character. */
const PUNCTUATION = [', ', ', ', '. ', '. ', ' — ', '; ', ' (', ') ', '! ', ': ', ' "', '" ', ' 😀 ']

const CONSONANTS = 'bcdfghjklmnprstvwz'
const VOWELS = 'aeiouy'
const ACCENTED = 'éèüöñçåøà'

/** `size` distinct words, shorter at the frequent ranks (as in real text), about 3% with an accented letter. */
function vocabulary(size: number, random: () => number): string[] {
  const seen = new Set<string>()
  const words: string[] = []
  const pick = (alphabet: string): string => alphabet[Math.floor(random() * alphabet.length)]!
  let foreign = 0
  while (words.length < size) {
    const rank = words.length
    if (rank >= 8 && rank % 40 === 8 && foreign < FOREIGN.length) {
      words.push(FOREIGN[foreign++]!)
      continue
    }
    // 1 syllable at the top ranks, up to 4 in the tail: about 5 letters a word on average, as in English text.
    const syllables = 1 + Math.floor(random() * Math.min(4, 1 + Math.log10(rank + 1)))
    let word = ''
    for (let i = 0; i < syllables; i++) word += pick(CONSONANTS) + pick(VOWELS) + (random() < 0.3 ? pick(CONSONANTS) : '')
    if (random() < 0.03) {
      const at = Math.floor(random() * word.length)
      word = word.slice(0, at) + pick(ACCENTED) + word.slice(at + 1)
    }
    if (seen.has(word)) continue
    seen.add(word)
    words.push(word)
  }
  return words
}

/** How a word is written in the text: mostly as is, sometimes capitalized or in capitals. */
function spelling(word: string, random: () => number): string {
  const r = random()
  if (r < 0.1) return word[0]!.toUpperCase() + word.slice(1)
  if (r < 0.11) return word.toUpperCase()
  return word
}

/** The generated text, three ways: lines of 60–100 characters; their UTF-8 with '\n' between them; that cut at line ends. */
interface Text {
  readonly lines: string[]
  readonly bytes: Uint8Array
  /** Consecutive views into `bytes`, each of whole lines ('\n' included, as a file reader that cuts at line ends gives them). */
  readonly chunks: Uint8Array[]
}

/** Cuts `bytes` into consecutive chunks of at least `size` bytes, each ending just after a '\n' (or at the end). */
function chunksOf(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks: Uint8Array[] = []
  let start = 0
  while (start < bytes.length) {
    const newline = bytes.indexOf(0x0a, Math.min(bytes.length, start + size))
    const end = newline < 0 ? bytes.length : newline + 1
    chunks.push(bytes.subarray(start, end))
    start = end
  }
  return chunks
}

function generate(bytes: number, vocabularySize: number, seed: number, chunkSize: number): Text {
  const random = seededRandom(seed)
  const words = vocabulary(vocabularySize, random)
  // Zipf (s = 1) over ranks, sampled through the cumulative distribution.
  const cumulative = new Float64Array(words.length)
  let total = 0
  for (let rank = 0; rank < words.length; rank++) cumulative[rank] = total += 1 / (rank + 1)
  for (let rank = 0; rank < words.length; rank++) cumulative[rank]! /= total
  const draw = (): string => {
    const r = random()
    let lo = 0
    let hi = words.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cumulative[mid]! < r) lo = mid + 1
      else hi = mid
    }
    return words[lo]!
  }
  const lines: string[] = []
  let size = 0
  while (size < bytes) {
    const target = 60 + Math.floor(random() * 41)
    // Built as parts and joined, so every line is one flat string (not a rope that the first
    // variant to read it would pay to flatten).
    const parts = [spelling(draw(), random)]
    let length = parts[0]!.length
    for (;;) {
      const separator = random() < 0.85 ? ' ' : PUNCTUATION[Math.floor(random() * PUNCTUATION.length)]!
      const word = spelling(draw(), random)
      if (length + separator.length + word.length > 100) break
      parts.push(separator, word)
      length += separator.length + word.length
      if (length >= target) break
    }
    const line = parts.join('')
    lines.push(line)
    size += Buffer.byteLength(line, 'utf8') + 1
  }
  const encoded = new TextEncoder().encode(lines.join('\n'))
  return { lines, bytes: encoded, chunks: chunksOf(encoded, chunkSize) }
}

/** The first lines of `text` holding about `bytes` bytes, as a text of their own. */
function prefix(text: Text, bytes: number, chunkSize: number): Text {
  let size = 0
  let n = 0
  while (n < text.lines.length && size < bytes) size += Buffer.byteLength(text.lines[n++]!, 'utf8') + 1
  const lines = text.lines.slice(0, n)
  const encoded = new TextEncoder().encode(lines.join('\n'))
  return { lines, bytes: encoded, chunks: chunksOf(encoded, chunkSize) }
}

// --- the four variants --------------------------------------------------------------------------------

type Counts = Map<string, number>

/** The words of a line, as examples/wordcount.ts defines them. */
const WORD = /[\p{L}\p{N}]+/gu
function words(line: string): string[] {
  const found = line.match(WORD)
  return found === null ? [] : found.map((w) => w.toLowerCase())
}

/**
 * The word count program: source → native [tokenize] → native [count] → sink into `counts`.
 * The source's values are UTF-8 chunks (`chunks`) or line strings (`lines`).
 */
function nativeProgram(input: { chunks: readonly Uint8Array[] } | { lines: readonly string[] }, counts: Counts): Program {
  // One layout value between the two native operators: that is what lets the kernel fuse them.
  const words = stringLayout()
  const count = native({
    name: 'count',
    input: t.string,
    output: WordCount,
    steps: [{ op: 'count' }],
    inputLayout: words,
    outputLayout: recordLayout<WordCount>({ word: { column: 'key', type: 'string' }, count: { column: 'count', type: 'number' } }),
  })
  const collect = sink('collect', WordCount, (row) => void counts.set(row.word, row.count))
  const build = <C extends t.Mixed>(text: ReturnType<typeof source<C>>, tokenize: ReturnType<typeof native<C, typeof t.string>>): Program =>
    program('native-wordcount', {
      operators: [text, tokenize, count, collect],
      links: [link(text.outputs.out, tokenize.inputs.in), link(tokenize.outputs.out, count.inputs.in), link(count.outputs.out, collect.inputs.in)],
    })
  if ('chunks' in input) {
    const text = source('text', Utf8Bytes, input.chunks)
    return build(text, native({ name: 'tokenize', input: Utf8Bytes, output: t.string, steps: [{ op: 'tokenize' }], inputLayout: utf8ChunkLayout, outputLayout: words }))
  }
  const text = source('lines', t.string, input.lines)
  return build(text, native({ name: 'tokenize', input: t.string, output: t.string, steps: [{ op: 'tokenize' }], inputLayout: words, outputLayout: words }))
}

/** What one timed run gives: the counts, when it started and its milliseconds. */
interface Outcome {
  readonly counts: Counts
  readonly start: number
  readonly ms: number
}

async function runNative(input: Parameters<typeof nativeProgram>[0], options: RunOptions, variant: string): Promise<Outcome> {
  const counts: Counts = new Map()
  const wordcounter = nativeProgram(input, counts)
  const job = kernel.run(wordcounter, options)
  const { result: report, start, ms } = await timed(() => job.done)
  if (report.deadLetters.length > 0) throw new BenchCheckError(`${variant}: ${report.deadLetters.length} dead letters; first: ${report.deadLetters[0]!.message}`)
  const operators = job.program.operators.map((o) => o.name)
  if (!operators.includes(FUSED)) throw new BenchCheckError(`${variant}: the kernel did not fuse tokenize and count into ${FUSED}; the program has ${operators.join(', ')}`)
  return { counts, start, ms }
}

async function runReference(batches: readonly Batch[]): Promise<Outcome> {
  const { result, start, ms } = await timed(async () => {
    const chain = new ReferenceChain([{ op: 'tokenize' }, { op: 'count' }])
    for (const batch of batches) chain.push(batch)
    return chain.finish()
  })
  const [out] = result
  if (out === undefined || result.length !== 1) throw new BenchCheckError(`reference: expected one output batch, got ${result.length}`)
  return { counts: countsOf(out as unknown as WordCounts), start, ms }
}

async function runRxjs(lines: readonly string[]): Promise<Outcome> {
  const pipe = from(lines).pipe(
    mergeMap(words),
    reduce((counts, word) => counts.set(word, (counts.get(word) ?? 0) + 1), new Map<string, number>()),
  )
  const { result: counts, start, ms } = await timed(() => lastValueFrom(pipe))
  return { counts, start, ms }
}

async function runRust(bytes: Uint8Array): Promise<Outcome> {
  const { result, start, ms } = await timed(async () => wordcount(bytes))
  return { counts: countsOf(result), start, ms }
}

function countsOf(result: WordCounts): Counts {
  const keys = utf8Strings(result.key)
  const counts: Counts = new Map()
  keys.forEach((key, i) => counts.set(key, result.count[i]!))
  return counts
}

/** Throws BenchCheckError unless `actual` has exactly the words and counts of `expected`. */
function sameCounts(variant: string, actual: Counts, expected: Counts, against: string): void {
  if (actual.size !== expected.size) throw new BenchCheckError(`${variant} counted ${actual.size} distinct words, ${against} ${expected.size}: the results differ`)
  for (const [word, n] of expected) {
    const got = actual.get(word)
    if (got !== n) throw new BenchCheckError(`${variant} counted ${got} for ${JSON.stringify(word)}, ${against} ${n}: the results differ`)
  }
}

/** The chunks in columnar batches of `size` chunks, as the native operator of (a) builds them. */
function batchesOf(chunks: readonly Uint8Array[], size: number): Batch[] {
  const out: Batch[] = []
  for (let i = 0; i < chunks.length; i += size) out.push(utf8ChunkLayout.toColumns(chunks.slice(i, i + size)))
  return out
}

// --- the run ------------------------------------------------------------------------------------------

type Variant = 'native' | 'native-lines' | 'reference' | 'rxjs' | 'rust'
const VARIANTS: readonly Variant[] = ['native', 'native-lines', 'reference', 'rxjs', 'rust']

const USAGE = `usage: native [--mb N] [--chunk-kb N] [--chunks N] [--batch N] [--rounds N] [--warmup N] [--vocabulary N] [--seed N] [--only ${VARIANTS.join(',')}]`

async function main(argv: readonly string[]): Promise<void> {
  let values: { [option: string]: string | boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        mb: { type: 'string' },
        'chunk-kb': { type: 'string' },
        chunks: { type: 'string' },
        batch: { type: 'string' },
        rounds: { type: 'string' },
        warmup: { type: 'string' },
        vocabulary: { type: 'string' },
        seed: { type: 'string' },
        only: { type: 'string' },
      },
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`)
  }
  const option = (name: string): string | undefined => values[name] as string | undefined
  const mb = positiveInteger('mb', option('mb')) ?? 50
  // 64 KiB is what fs.createReadStream reads at a time; 16 of them make a batch of about 1 MiB.
  const chunkSize = (positiveInteger('chunk-kb', option('chunk-kb')) ?? 64) * 1024
  const chunksPerBatch = positiveInteger('chunks', option('chunks')) ?? 16
  // About as many bytes a batch as 16 chunks; the kernel's default of 1024 lines is 8 times smaller.
  const linesPerBatch = positiveInteger('batch', option('batch')) ?? 8192
  const rounds = positiveInteger('rounds', option('rounds')) ?? 5
  const warmupMb = Math.min(mb, positiveInteger('warmup', option('warmup')) ?? 5)
  const vocabularySize = positiveInteger('vocabulary', option('vocabulary')) ?? 20_000
  const seed = positiveInteger('seed', option('seed')) ?? 42
  const only = option('only')?.split(',')
  const unknown = only?.filter((v) => !(VARIANTS as readonly string[]).includes(v))
  if (unknown !== undefined && unknown.length > 0) throw new BenchUsageError(`--only: unknown variant ${unknown.join(', ')}\n${USAGE}`)
  const variants = only === undefined ? VARIANTS : VARIANTS.filter((v) => only.includes(v))
  if (variants.length === 0) throw new BenchUsageError(`--only names no variant\n${USAGE}`)

  // 2^20-byte megabytes for the size asked for, so "--mb 50" is at least 50 MB by either reading;
  // rates are in 10^6 bytes per second.
  const generation = await timed(async () => generate(mb * 2 ** 20, vocabularySize, seed, chunkSize))
  const text = generation.result
  const megabytes = text.bytes.length / 1e6
  const batches = batchesOf(text.chunks, chunksPerBatch)
  progress(
    `native: ${megabytes.toFixed(1)} MB of text, ${text.lines.length.toLocaleString('en')} lines, ${text.chunks.length} chunks of about ${chunkSize / 1024} KiB, ` +
      `vocabulary ${vocabularySize.toLocaleString('en')}, seed ${seed}, generated in ${generation.ms.toFixed(0)} ms; ` +
      `batches of ${chunksPerBatch} chunks (native, reference) and of ${linesPerBatch} lines (native-lines); load average ${loadavg()[0]!.toFixed(2)} on ${availableParallelism()} cores`,
  )

  const run = (variant: Variant, input: Text, inputBatches: readonly Batch[]): Promise<Outcome> => {
    switch (variant) {
      case 'native':
        return runNative({ chunks: input.chunks }, { batchSize: chunksPerBatch }, variant)
      case 'native-lines':
        return runNative({ lines: input.lines }, { batchSize: linesPerBatch }, variant)
      case 'reference':
        return runReference(inputBatches)
      case 'rxjs':
        return runRxjs(input.lines)
      case 'rust':
        return runRust(input.bytes)
    }
  }

  // Warm-up: every variant once on a smaller text, checked like the timed runs.
  const small = prefix(text, warmupMb * 2 ** 20, chunkSize)
  const smallBatches = batchesOf(small.chunks, chunksPerBatch)
  const warm = new Map<Variant, Outcome>()
  for (const variant of variants) {
    collectGarbage()
    warm.set(variant, await run(variant, small, smallBatches))
  }
  const [first] = variants
  for (const variant of variants) sameCounts(`${variant} (warm-up)`, warm.get(variant)!.counts, warm.get(first!)!.counts, first!)
  progress(`warm-up on ${(small.bytes.length / 1e6).toFixed(1)} MB: ${variants.map((v) => `${v} ${warm.get(v)!.ms.toFixed(0)} ms`).join(', ')}`)
  warm.clear()

  let expected: { variant: Variant; counts: Counts } | undefined
  const { ms: samples, gcMs: gcSamples } = await rotatingRounds(
    variants,
    rounds,
    (variant) => run(variant, text, batches),
    (variant, outcome, round, gcMs) => {
      // Every result is checked against the first one of the run, so one count map is kept alive.
      if (expected === undefined) expected = { variant, counts: outcome.counts }
      else sameCounts(variant, outcome.counts, expected.counts, expected.variant)
      const rate = megabytes / (outcome.ms / 1000)
      progress(`round ${round + 1}/${rounds} ${variant.padEnd(12)} ${outcome.ms.toFixed(0).padStart(6)} ms  ${rate.toFixed(1).padStart(7)} MB/s  (gc ${gcMs.toFixed(0)} ms)`)
    },
  )

  // Figures of a variant left out by --only are null.
  const rate = (variant: Variant): number | null => (samples.has(variant) ? megabytes / (median(samples.get(variant)!) / 1000) : null)
  const gcMs = (variant: Variant): number | null => (gcSamples.has(variant) ? Math.round(median(gcSamples.get(variant)!)) : null)
  const over = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : round3(a / b))
  const [nativeRate, linesRate, referenceRate, rxjsRate, rustRate] = VARIANTS.map(rate) as [number | null, number | null, number | null, number | null, number | null]
  const show = (x: number | null, digits: number): string => (x === null ? '-' : x.toFixed(digits))
  progress(
    `median of ${rounds}: ${variants.map((v) => `${v} ${show(rate(v), 1)} MB/s`).join(', ')}; ` +
      `ratio ${show(over(nativeRate, rxjsRate), 2)} (target >= 10), vs_rust ${show(over(nativeRate, rustRate), 3)} (target >= 0.7); ` +
      `over lines: ratio ${show(over(linesRate, rxjsRate), 2)}, vs_rust ${show(over(linesRate, rustRate), 3)}; ` +
      `gc pauses (median ms) ${variants.map((v) => `${v} ${show(gcMs(v), 0)}`).join(', ')}; peak rss ${peakRssMiB().toFixed(0)} MiB; ` +
      `load average ${loadavg()[0]!.toFixed(2)}`,
  )
  const result = {
    bench: 'native',
    ratio: over(nativeRate, rxjsRate),
    vs_rust: over(nativeRate, rustRate),
    native_mb_s: round1(nativeRate),
    reference_mb_s: round1(referenceRate),
    rxjs_mb_s: round1(rxjsRate),
    rust_mb_s: round1(rustRate),
    mb: round1(megabytes),
    native_lines_mb_s: round1(linesRate),
    lines_ratio: over(linesRate, rxjsRate),
    lines_vs_rust: over(linesRate, rustRate),
    lines: text.lines.length,
    chunks: text.chunks.length,
    chunk_kb: chunkSize / 1024,
    chunks_per_batch: chunksPerBatch,
    lines_per_batch: linesPerBatch,
    distinct_words: expected?.counts.size ?? 0,
    rounds,
    native_gc_ms: gcMs('native'),
    native_lines_gc_ms: gcMs('native-lines'),
    rxjs_gc_ms: gcMs('rxjs'),
    peak_rss_mb: Math.round(peakRssMiB()),
    node: process.version,
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

function round1<T extends number | null>(x: T): T {
  return (x === null ? null : Math.round(x * 10) / 10) as T
}

runMain('native', () => main(process.argv.slice(2)))
