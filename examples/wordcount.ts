// Word count: prints the 10 most frequent words of a file (or of a generated text), as `<word> <count>`.
//
//   npm start                 counts a generated text (deterministic)
//   npm start -- FILE         counts FILE
//
// A word is a maximal run of Unicode letters and digits, lowercased. Ties in count are broken by
// the word, ascending.

import { createReadStream } from 'node:fs'
import { access } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'
import { atom, kernel, link, native, program, recordLayout, sink, source, stringLayout, t, type Layer, type Program, type SourceInput } from 'lamina'
import { explain, placement, planOf, requireTags, spread } from 'lamina/layers'

/** One word and how often it occurs. */
export const WordCount = t.type({ word: t.string, count: t.number })
export type WordCount = t.TypeOf<typeof WordCount>

const WORD = /[\p{L}\p{N}]+/gu

/** The words of a line, by the rule above (the native core's tokenizer implements the same rule). */
export function words(line: string): string[] {
  const found = line.match(WORD)
  return found === null ? [] : found.map((w) => w.toLowerCase())
}

/** Orders by count descending, then word ascending (by code unit, so the order is the same everywhere). */
export function byCountThenWord(a: WordCount, b: WordCount): number {
  return b.count - a.count || (a.word < b.word ? -1 : a.word > b.word ? 1 : 0)
}

/** Options of the word count program. */
export interface WordcountOptions {
  /** Lines of text to count (a function is called only where the source runs). */
  readonly lines: SourceInput<string>
  /** Where the top words go. */
  readonly out: (row: WordCount) => unknown
  /** How many words to report. @default 10 */
  readonly top?: number
  /** Instances of the tokenizer and of the counter. @default 2 */
  readonly parallelism?: number
}

/**
 * Builds the word count program: lines -> words (native: tokenize and count each instance's share
 * in one fused chain, as a combiner) -> count (keyed, stateful: sums the partial counts per word)
 * -> top -> out. Placement annotations (read when the placement layer is stacked, as `lamina run`
 * does through this module's `layers`): the tokenizers spread over the peers, the counter runs on
 * the peer the launcher tags `name=peer-0`.
 */
export function wordcount(options: WordcountOptions): Program {
  const top = options.top ?? 10
  const parallelism = options.parallelism ?? 2
  const lines = source('lines', t.string, options.lines)
  const partial = spread(
    native({
      name: 'words',
      input: t.string,
      output: WordCount,
      steps: [{ op: 'tokenize' }, { op: 'count' }],
      inputLayout: stringLayout(),
      outputLayout: recordLayout<WordCount>({ word: { column: 'key', type: 'string' }, count: { column: 'count', type: 'number' } }),
      annotations: { parallelism },
    }),
  )
  const count = requireTags(
    atom({
      name: 'count',
      inputs: { in: WordCount },
      outputs: { out: WordCount },
      key: (row) => row.word,
      state: { codec: t.number, init: () => 0 },
      on: {
        in: (row, ctx) => {
          ctx.state.update((n) => n + row.count)
        },
      },
      end: (ctx) => {
        for (const [word, count] of ctx.state.entries()) ctx.emit('out', { word: String(word), count })
      },
      annotations: { parallelism },
    }),
    'name=peer-0',
  )
  const best = atom({
    name: 'top',
    inputs: { in: WordCount },
    outputs: { out: WordCount },
    state: { codec: t.array(WordCount), init: (): WordCount[] => [] },
    on: {
      in: (row, ctx) => {
        // Keep at most `top` rows: insert in order, drop the tail.
        const rows = ctx.state.get()
        rows.push(row)
        rows.sort(byCountThenWord)
        if (rows.length > top) rows.length = top
      },
    },
    end: (ctx) => {
      for (const row of ctx.state.get()) ctx.emit('out', row)
    },
  })
  const print = sink('print', WordCount, options.out)
  return program('wordcount', {
    operators: [lines, partial, count, best, print],
    links: [
      link(lines.outputs.out, partial.inputs.in),
      link(partial.outputs.out, count.inputs.in),
      link(count.outputs.out, best.inputs.in),
      link(best.outputs.out, print.inputs.in),
    ],
  })
}

/** A deterministic text of `count` words with a skewed (Zipf-like) frequency, in lines of 12 words. */
export function* generatedText(count = 200_000, seed = 42): Generator<string> {
  const vocabulary = (
    'the of and to in a is that for it as was with be by on not he i this are or his from at which but have an they you were ' +
    'her she there been one all we their has would when if so no will more can out up who them some could time what into ' +
    'café naïve über straße ελληνικά москва 東京 données 2024 r2d2 mañana façade smörgåsbord 😀'
  ).split(' ')
  let state = seed >>> 0
  const random = (): number => {
    // xorshift32: small, fast and the same on every platform.
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    return (state >>> 0) / 0x100000000
  }
  // Zipf weights 1/rank, sampled through the cumulative distribution.
  const weights = vocabulary.map((_, rank) => 1 / (rank + 1))
  const total = weights.reduce((a, b) => a + b, 0)
  const cumulative: number[] = []
  weights.reduce((sum, w, i) => (cumulative[i] = sum + w / total), 0)
  let line: string[] = []
  for (let i = 0; i < count; i++) {
    const r = random()
    let lo = 0
    let hi = cumulative.length - 1
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (cumulative[mid]! < r) lo = mid + 1
      else hi = mid
    }
    const word = vocabulary[lo]!
    line.push(i % 7 === 0 ? word.toUpperCase() : word)
    if (line.length === 12) {
      yield line.join(i % 5 === 0 ? ', ' : ' ')
      line = []
    }
  }
  if (line.length > 0) yield line.join(' ')
}

/** The lines of a file, read as a stream (the source pulls them as fast as the counter keeps up). */
export function fileLines(path: string): AsyncIterable<string> {
  return createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity })
}

/** The layers `lamina run` stacks for this program on every peer. */
export const layers: Layer[] = [placement()]

/** Called by `lamina run` once the program is planned: the placement explanation, on stderr (stdout is the result). */
export function planned(program: Program): void {
  const plan = planOf(program)
  if (plan !== undefined) process.stderr.write(`placement:\n${explain(plan).text}\n`)
}

/**
 * The program module `lamina run examples/wordcount.ts [-- FILE]` deploys: every peer builds the
 * same program; the sink runs on the submitting peer and prints the top words in order.
 */
export default function build(args: readonly string[]): Program {
  const file = args[0]
  // The lines are opened only on the peer that runs the source (the submitter), not on every peer.
  return wordcount({ lines: () => (file === undefined ? generatedText() : fileLines(file)), out: (row) => void process.stdout.write(`${row.word} ${row.count}\n`) })
}

async function main(argv: readonly string[]): Promise<void> {
  const file = argv[0]
  if (file !== undefined) await access(file).catch((error: NodeJS.ErrnoException) => Promise.reject(new Error(`cannot read ${file}: ${error.code ?? error.message}`)))
  const rows: WordCount[] = []
  const job = kernel.run(wordcount({ lines: file === undefined ? generatedText() : fileLines(file), out: (row) => rows.push(row) }))
  const report = await job.done
  process.stdout.write(rows.map((row) => `${row.word} ${row.count}\n`).join(''))
  if (report.deadLetters.length > 0) {
    process.stderr.write(`${report.deadLetters.length} dead letters; first: ${report.deadLetters[0]!.message}\n`)
    process.exitCode = 1
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  // A reader that stops early (`| head`) is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error
  })
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`wordcount: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  })
}
