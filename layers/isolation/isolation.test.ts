// What an isolated operator can do, in a worker thread and in a child process: the same output,
// state, syscalls, timers, requests, sources and checkpoints as in-process.

import { alive, until } from 'lamina/testing'
import { describe, expect, it } from 'vitest'
import {
  atom,
  kernel,
  link,
  program,
  sink,
  source,
  t,
  wrapInstance,
  type Instance,
  type InstanceInfo,
  type Layer,
  type Link,
  type Marker,
  type Operator,
  type Program,
  type StateSnapshot,
} from 'lamina'
import { supervision } from '../fault-tolerance/index.js'
import { isolate, isolation, type IsolatedMode, type JsonValue } from './index.js'
import { HERE, batchSum, counter, counting, doubler, nativeCounter, scale, summer, syscalls, whereAmI } from './fixtures/operators.js'

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i)

/** `src -> op -> out` over `input`. */
function pipeline<T, U>(op: Operator, codecIn: t.Type<T>, input: readonly T[], out: U[], codecOut: t.Type<U> = t.unknown as unknown as t.Type<U>): Program {
  const src = source('src', codecIn, input)
  const into = sink('out', codecOut, out)
  return program('p', {
    operators: [src, op, into],
    links: [link(src.outputs.out, op.inputs['in']!), link(op.outputs['out']!, into.inputs.in)],
  })
}

/** A layer that restores snapshots before start and records snapshots at markers and at the end (it sits above isolation). */
function probe(
  init: { restore?: Record<string, StateSnapshot>; markers?: (info: InstanceInfo, marker: Marker, snapshot: StateSnapshot, seen: number) => void } = {},
): Layer & { finals: Map<string, StateSnapshot> } {
  const finals = new Map<string, StateSnapshot>()
  return {
    name: 'probe',
    finals,
    instance(spec, next): Instance {
      const inner = next(spec)
      const preset = init.restore?.[spec.info.operator]
      if (preset !== undefined) inner.restore(preset)
      let seen = 0
      return wrapInstance(inner, {
        process: (port, batch) => {
          seen += batch.values.length
          return inner.process(port, batch)
        },
        marker: (marker) => {
          init.markers?.(spec.info, marker, inner.snapshot(), seen)
          return inner.marker?.(marker)
        },
        end: async () => {
          await inner.end()
          finals.set(spec.info.operator, inner.snapshot())
        },
      })
    },
  }
}

/**
 * Runs `src -> op -> out` under `layer` and isolation, the source yielding to the event loop every
 * 500 records while a probe marker is injected every 3 ms, so that markers land mid-stream.
 */
async function runProbed(layer: Layer, op: Operator, input: readonly string[], out: unknown[]): Promise<void> {
  const src = source(
    'src',
    t.string,
    (async function* () {
      for (let i = 0; i < input.length; i++) {
        if (i % 500 === 0) await new Promise((resolve) => setImmediate(resolve))
        yield input[i]!
      }
    })(),
  )
  const into = sink('out', t.unknown, out)
  const p = program('p', { operators: [src, op, into], links: [link(src.outputs.out, op.inputs['in']!), link(op.outputs['out']!, into.inputs.in)] })
  const job = kernel.with(layer, isolation()).run(p, { batchSize: 100 })
  let id = 0
  const injector = setInterval(() => job.inject({ kind: 'probe', id: ++id }), 3)
  await job.done.finally(() => clearInterval(injector))
}

const sorted = (entries: readonly (readonly [unknown, unknown])[]): [unknown, unknown][] =>
  [...entries].map(([k, v]): [unknown, unknown] => [k, v]).sort((a, b) => String(a[0]).localeCompare(String(b[0])))

const WORDS = ['apple', 'pear', 'fig', 'kiwi', 'plum', 'lime', 'date']
const words = (n: number): string[] => range(n).map((i) => WORDS[(i * 7 + (i >> 3)) % WORDS.length]!)

function wordCounts(input: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const word of input) counts.set(word, (counts.get(word) ?? 0) + 1)
  return counts
}

describe.each(['worker', 'process'] as const)('an operator isolated in a %s', (mode: IsolatedMode) => {
  const iso = <O extends Operator>(op: O, exportName: string, args?: JsonValue): O =>
    isolate(op, { mode, from: { module: HERE, export: exportName, ...(args === undefined ? {} : { args }) } }) as O

  it('produces the same output as in-process, in order', async () => {
    const input = range(10_000)
    const out: number[] = []
    await kernel.with(isolation()).run(pipeline(iso(scale({ factor: 3 }), 'scale', { factor: 3 }), t.number, input, out, t.number)).done
    expect(out).toEqual(input.map((n) => n * 3))
  })

  it('keeps keyed state on its side, and the host has a copy: snapshots before and after, restore before start', async () => {
    const input = words(5000)
    const out: { word: string; count: number }[] = []
    const layer = probe({
      restore: {
        counter: {
          operator: 'counter',
          entries: [
            ['apple', 1000],
            ['mango', 7],
          ],
        },
      },
    })
    await kernel.with(layer, isolation()).run(pipeline(iso(counter(), 'counter'), t.string, input, out)).done
    const expected = wordCounts(input)
    expected.set('apple', (expected.get('apple') ?? 0) + 1000)
    expected.set('mango', 7)
    expect(new Map(out.map((c) => [c.word, c.count]))).toEqual(expected)
    expect(sorted(layer.finals.get('counter')!.entries)).toEqual(sorted([...expected]))
  })

  it('a native operator: a restore before start reaches Rust, and its state in Rust reaches the host copy', async () => {
    const input = words(20_000)
    const out: { word: string; count: number }[] = []
    const totals: number[] = []
    const layer = probe({
      restore: {
        counter: {
          operator: 'counter',
          entries: [
            ['apple', [[1000]]],
            ['mango', [[7]]],
          ],
        },
      },
      // What a checkpoint would take at each marker: the host's copy of the state, rows per key.
      markers: (info, _marker, snapshot) => {
        if (info.operator === 'counter') totals.push(snapshot.entries.reduce((sum, [, rows]) => sum + (rows as number[][])[0]![0]!, 0))
      },
    })
    await runProbed(layer, iso(nativeCounter(), 'nativeCounter'), input, out)
    const expected = wordCounts(input)
    expected.set('apple', (expected.get('apple') ?? 0) + 1000)
    expected.set('mango', 7)
    expect(new Map(out.map((c) => [c.word, c.count]))).toEqual(expected)
    // Mid-stream copies hold the restored rows plus what Rust counted so far, never less.
    const mid = totals.filter((n) => n > 1007 && n < 1007 + input.length)
    expect(mid.length).toBeGreaterThan(0)
    expect(totals.every((n) => n >= 1007 && n <= 1007 + input.length)).toBe(true)
    expect(totals).toEqual([...totals].sort((x, y) => x - y))
  })

  it('refuses a snapshot that does not fit the state codec, at once, with StateRestoreError', async () => {
    const layer = probe({ restore: { counter: { operator: 'counter', entries: [['apple', 'many']] } } })
    const failure = await kernel
      .with(layer, isolation())
      .run(pipeline(iso(counter(), 'counter'), t.string, ['a'], []))
      .done.then(
        () => undefined,
        (error: unknown) => error,
      )
    // The layer above threw while the job built its instances: the job fails with the error itself.
    expect(failure).toMatchObject({ code: 'ERR_STATE_RESTORE', operator: 'counter' })
  })

  it('reaches the host through its syscalls: ctx.call, timers, sleep, flush, reject; its state and end hook work', async () => {
    const out: unknown[] = []
    const calls: { argument: unknown; caller: string }[] = []
    const layer: Layer = {
      name: 'test-syscalls',
      control: (registry) =>
        registry.syscall('test.double', (argument, caller) => {
          calls.push({ argument, caller: `${caller.operator}[${caller.instance}]` })
          return (argument as number) * 2
        }),
    }
    const input = [1, 2, -1, 3]
    // A slow source: the timer set at start fires while records still arrive.
    const slow = source(
      'src',
      t.number,
      (async function* () {
        for (const n of input) {
          await new Promise((resolve) => setTimeout(resolve, 15))
          yield n
        }
      })(),
    )
    const op = iso(syscalls(), 'syscalls')
    const into = sink('out', t.unknown, out)
    const p = program('p', { operators: [slow, op, into], links: [link(slow.outputs.out, op.inputs.in), link(op.outputs.out, into.inputs.in)] })
    const job = kernel.with(layer, isolation()).run(p)
    const report = await job.done
    expect(out.filter((o) => (o as { n?: number }).n !== undefined)).toEqual([
      { n: 1, answer: 2 },
      { n: 2, answer: 4 },
      { n: 3, answer: 6 },
    ])
    expect(out).toContainEqual({ timer: 'fired', seen: expect.any(Number) })
    expect(out[out.length - 1]).toEqual({ end: 3 })
    expect(calls).toEqual([1, 2, 3].map((argument) => ({ argument, caller: 'syscalls[0]' })))
    expect(report.deadLetters.map((l) => [l.value, l.code, l.message])).toEqual([[-1, 'ERR_REJECTED', 'syscalls rejected a value: negative']])
  })

  it('answers requests: the reply of each record goes back to the requester', async () => {
    const asked = range(50)
    const answers: number[] = []
    const requester = atom({
      name: 'requester',
      outputs: { out: t.number },
      run: async (ctx) => {
        for (const n of asked) answers.push(await ctx.request<number>('out', n))
      },
    })
    const op = iso(doubler(), 'doubler')
    const p = program('p', { operators: [requester, op], links: [link(requester.outputs.out, op.inputs.in)] })
    await kernel.with(isolation()).run(p).done
    expect(answers).toEqual(asked.map((n) => n * 2))
  })

  it('runs a source on its side, with backpressure from a small channel, and its offset in state', async () => {
    const out: number[] = []
    const src = iso(counting({ count: 20_000 }), 'counting', { count: 20_000 })
    const slowSink = atom({
      name: 'out',
      inputs: { in: t.number },
      on: {
        in: async (n: number) => {
          out.push(n)
          if (n % 1000 === 0) await new Promise((resolve) => setImmediate(resolve))
        },
      },
    })
    const layer = probe()
    const links: Link[] = [link(src.outputs.out, slowSink.inputs.in, { capacity: 200 })]
    const job = kernel.with(layer, isolation()).run(program('p', { operators: [src, slowSink], links }))
    const report = await job.done
    expect(out).toEqual(range(20_000))
    expect(layer.finals.get('counting')!.entries).toEqual([[null, 20_000]])
    expect(Math.max(...report.stats.channels.map((c) => c.maxQueued))).toBeLessThanOrEqual(200 + 100)
  })

  it('runs batch handlers once per batch; a failing batch is one dead letter holding the batch, as in-process', async () => {
    const input = range(100)
    const out: number[] = []
    const op = iso(batchSum({ failOn: 50 }), 'batchSum', { failOn: 50 })
    const report = await kernel.with(isolation()).run(pipeline(op, t.number, input, out, t.number), { batchSize: 10 }).done
    const batches = range(10).map((b) => range(10, b * 10))
    expect(out).toEqual(batches.filter((b) => !b.includes(50)).map((b) => b.reduce((x, y) => x + y, 0)))
    expect(report.deadLetters.map((l) => [l.value, l.code])).toEqual([[range(10, 50), 'ERR_HANDLER']])
  })

  it('runs each instance of a parallel operator in its own worker or process', async () => {
    const out: unknown[] = []
    const op = iso(whereAmI(), 'whereAmI')
    const src = source('src', t.number, range(1000))
    const into = sink('out', t.number, out as number[])
    const places: number[] = []
    const where = sink('places', t.number, places)
    const p = program('p', {
      operators: [src, op, into, where],
      links: [link(src.outputs.out, op.inputs.in), link(op.outputs.out, into.inputs.in), link(op.outputs.thread, where.inputs.in)],
    })
    await kernel.with(isolation()).run(p).done
    expect([...(out as number[])].sort((a, b) => a - b)).toEqual(range(1000))
    expect(new Set(places).size).toBe(2)
    const here = process.pid
    if (mode === 'worker') expect(places.every((place) => place % 1_000_000 === here && place >= 1_000_000)).toBe(true)
    else {
      const pids = places.map((place) => place % 1_000_000)
      expect(pids.every((pid) => pid !== here)).toBe(true)
      // No orphans: the children are gone once the job is done.
      await Promise.all(pids.map((pid) => until(() => !alive(pid), 5000, `process ${pid} to exit`)))
    }
  })
})

describe('isolated state across the boundary', () => {
  it('snapshots taken at markers match the output delivered before them', async () => {
    const input = words(30_000)
    const counterSnapshots = new Map<number, number>()
    const sinkSeen = new Map<number, number>()
    const layer = probe({
      markers: (info, marker, snapshot, seen) => {
        if (info.operator === 'counter')
          counterSnapshots.set(
            marker.id,
            snapshot.entries.reduce((sum, [, count]) => sum + (count as number), 0),
          )
        if (info.operator === 'out') sinkSeen.set(marker.id, seen)
      },
    })
    const out: unknown[] = []
    await runProbed(layer, isolate(counter({ running: true }), { from: { module: HERE, export: 'counter', args: { running: true } } }), input, out)
    expect(out).toHaveLength(input.length)
    const compared = [...sinkSeen.keys()].filter((markerId) => counterSnapshots.has(markerId))
    expect(compared.length).toBeGreaterThan(2)
    for (const markerId of compared) expect(counterSnapshots.get(markerId)).toBe(sinkSeen.get(markerId))
  })

  it.each(['worker', 'process'] as const)('a %s restarted by supervision with state "keep" goes on from the state of the output delivered', async (mode) => {
    const input = range(2000)
    const out: [number, number][] = []
    const op = isolate(summer({ hangOn: 1500 }), { mode, watchdogMs: 1000, from: { module: HERE, export: 'summer', args: { hangOn: 1500 } } })
    const job = kernel
      .with(supervision({ state: 'keep', maxRestarts: 1, withinMs: 60_000 }), isolation({ forwardStderr: false }))
      .run(pipeline(op, t.number, input, out), { batchSize: mode === 'worker' ? 128 : 8 })
    const report = await job.done
    const blamed = new Set(report.deadLetters.map((l) => l.value as number))
    expect(blamed.has(1500)).toBe(true)
    // The reference: running sums per key over every record that was not blamed, in order.
    const sums = new Map<number, number>()
    const expected = input.filter((n) => !blamed.has(n)).map((n): [number, number] => [n % 3, sums.set(n % 3, (sums.get(n % 3) ?? 0) + n).get(n % 3)!])
    expect(out).toEqual(expected)
  })
})
