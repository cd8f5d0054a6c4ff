// The metadata layer over an isolated operator: provenance passes through a worker thread and a
// child process as it does in-process (hops, per-record and per-key lineage, sampling).

import { describe, expect, it } from 'vitest'
import { kernel, link, program, source, t, type Operator, type Program } from 'lamina'
import { metadata, tracedSink, type MetadataInit, type RecordMetadata } from '../metadata/index.js'
import { isolate, isolation, type IsolatedMode, type JsonValue } from './index.js'
import { HERE as OPERATORS, counter, scale } from './fixtures/operators.js'
import { HERE as TRACED, leaky } from './fixtures/traced.js'

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)
const WORDS = ['apple', 'pear', 'fig', 'kiwi', 'plum', 'lime', 'date']
const words = (n: number): string[] => range(n).map((i) => WORDS[(i * 7 + (i >> 3)) % WORDS.length]!)

/** What a lineage says, without times (which differ from run to run). */
interface Seen {
  readonly inputs: readonly string[]
  readonly operators: readonly string[]
  readonly approximate: boolean
}

/** Every record the sink got, with what its lineage says (undefined: not traced). */
type Rows = [unknown, Seen | undefined][]

/**
 * Runs `src -> op -> out` (and `op.tens -> tens` when it has that port) under `metadata(init)`,
 * with `op` isolated in `mode` (or in-process when `mode` is undefined).
 */
async function traced(
  op: Operator,
  build: { module: string; export: string; args?: JsonValue },
  input: readonly unknown[],
  init: MetadataInit,
  mode: IsolatedMode | undefined,
): Promise<{ out: Rows; tens: Rows; deadLetters: readonly { code: string }[] }> {
  const tracing = metadata({ peer: 'here', ...init })
  const seen = (m: RecordMetadata | undefined): Seen | undefined => {
    const lineage = m === undefined ? undefined : tracing.lineage(m)
    return lineage === undefined
      ? undefined
      : { inputs: lineage.inputs, operators: lineage.operators.map((o) => `${o.operator}#${o.instance}@${o.peer}`), approximate: lineage.approximate }
  }
  const out: Rows = []
  const tens: Rows = []
  const run = mode === undefined ? op : isolate(op, { mode, from: build })
  const src = source('src', input.length > 0 && typeof input[0] === 'string' ? t.string : t.number, input as never[])
  const into = tracedSink('out', t.unknown, (value, m) => void out.push([value, seen(m)]))
  const operators: Operator[] = [src, run, into]
  const links = [link(src.outputs.out, run.inputs['in']!), link(run.outputs['out']!, into.inputs.in)]
  if (run.outputs['tens'] !== undefined) {
    const intoTens = tracedSink('tens', t.number, (value, m) => void tens.push([value, seen(m)]))
    operators.push(intoTens)
    links.push(link(run.outputs['tens'], intoTens.inputs.in))
  }
  const p: Program = program('traced', { operators, links })
  const stack = mode === undefined ? kernel.with(tracing) : kernel.with(tracing, isolation())
  const report = await stack.run(p, { batchSize: 64 }).done
  return { out, tens, deadLetters: report.deadLetters }
}

describe.each(['worker', 'process'] as const)('tracing through an operator isolated in a %s', (mode: IsolatedMode) => {
  it('gives each output the lineage of its own input, naming the isolated operator, as in-process', async () => {
    const input = range(300)
    const build = { module: OPERATORS, export: 'scale', args: { factor: 3 } }
    const isolated = await traced(scale({ factor: 3 }), build, input, {}, mode)
    expect(isolated.out.map(([v]) => v)).toEqual(input.map((n) => n * 3))
    for (const [value, seen] of isolated.out) {
      expect(seen).toEqual({ inputs: [`src#0:${(value as number) / 3}`], operators: ['src#0@here', 'scale#0@here'], approximate: false })
    }
    const inProcess = await traced(scale({ factor: 3 }), build, input, {}, undefined)
    expect(isolated.out).toEqual(inProcess.out)
  })

  it('traces the same sampled records as in-process, and the others carry nothing', async () => {
    const input = range(2000)
    const build = { module: OPERATORS, export: 'scale', args: { factor: 2 } }
    const init: MetadataInit = { sampling: 0.2, sampleBy: 'record', seed: 11 }
    const isolated = await traced(scale({ factor: 2 }), build, input, init, mode)
    const inProcess = await traced(scale({ factor: 2 }), build, input, init, undefined)
    expect(isolated.out).toEqual(inProcess.out)
    const tracedRows = isolated.out.filter(([, seen]) => seen !== undefined)
    // About a fifth of the records, spread over batches that also hold untraced ones.
    expect(tracedRows.length).toBeGreaterThan(200)
    expect(tracedRows.length).toBeLessThan(600)
    for (const [value, seen] of tracedRows) expect(seen!.inputs).toEqual([`src#0:${(value as number) / 2}`])
  })

  it('gives a keyed aggregate that emits at its end the lineage of exactly the records of each key', async () => {
    const input = words(120)
    const build = { module: OPERATORS, export: 'counter' }
    const isolated = await traced(counter(), build, input, { maxInputs: 64 }, mode)
    expect(isolated.out).toHaveLength(WORDS.length)
    for (const [value, seen] of isolated.out) {
      const word = (value as { word: string }).word
      const records = input.flatMap((w, i) => (w === word ? [`src#0:${i}`] : []))
      expect([...seen!.inputs].sort()).toEqual(records.sort())
      expect(seen!.operators).toEqual(['src#0@here', 'counter#0@here'])
      expect(seen!.approximate).toBe(false)
    }
    const inProcess = await traced(counter(), build, input, { maxInputs: 64 }, undefined)
    expect(isolated.out).toEqual(inProcess.out)
  })

  it('gives a keyed aggregate that emits per record the lineage of its key so far, as in-process', async () => {
    const input = words(200)
    const build = { module: OPERATORS, export: 'counter', args: { running: true } }
    const isolated = await traced(counter({ running: true }), build, input, { maxInputs: 64 }, mode)
    expect(isolated.out).toHaveLength(input.length)
    const inProcess = await traced(counter({ running: true }), build, input, { maxInputs: 64 }, undefined)
    expect(isolated.out).toEqual(inProcess.out)
    const [value, seen] = isolated.out[isolated.out.length - 1]!
    const { word, count } = value as { word: string; count: number }
    expect(seen!.inputs).toHaveLength(count)
    expect(seen!.inputs).toContain(`src#0:${input.length - 1}`)
    expect(input.filter((w) => w === word)).toHaveLength(count)
  })

  it('keeps each output on its own record when some emissions cannot leave the isolated side, on every port', async () => {
    const input = range(200)
    const isolated = await traced(leaky(), { module: TRACED, export: 'leaky' }, input, {}, mode)
    // Every odd record's function was refused there, with the reason.
    expect(isolated.deadLetters.filter((d) => d.code === 'ERR_REJECTED')).toHaveLength(100)
    expect(isolated.out.map(([v]) => v)).toEqual(input)
    expect(isolated.tens.map(([v]) => v)).toEqual(input.map((n) => n * 10))
    for (const [value, seen] of isolated.out) expect(seen).toEqual({ inputs: [`src#0:${value as number}`], operators: ['src#0@here', 'leaky#0@here'], approximate: false })
    for (const [value, seen] of isolated.tens) expect(seen?.inputs).toEqual([`src#0:${(value as number) / 10}`])
  })
})
