// Tests of marker alignment at an instance with two inputs: markers of two kinds, in the same and in crossing orders, align per kind at consistent cuts.
import { describe, expect, it } from 'vitest'
import { atom, isChannelSender, kernel, type Layer, link, type Marker, program, sink, source, t, wrapChannel, wrapInstance } from 'lamina'

/** Per input port of the join: the markers to put on its channel, each after that many of the channel's values. */
type Script = Readonly<Record<'a' | 'b', readonly (readonly [after: number, marker: string])[]>>

/** A marker the join or the sink saw: `A1` is kind A, id 1; `cut` counts the values it had processed per input port. */
interface Seen {
  readonly marker: string
  readonly cut: Readonly<Record<string, number>>
}

const parse = (name: string): Marker => ({ kind: name.slice(0, 1), id: Number(name.slice(1)) })

/**
 * A layer that puts the script's markers on the channels into the join (on the sending end, so
 * each marker sits at an exact place among the values) and records the markers the join and the
 * sink see, with how many values each had processed by then.
 */
function scripted(script: Script, seen: { join: Seen[]; out: Seen[] }): Layer {
  return {
    name: 'scripted-markers',
    channel: (end, next) => {
      const inner = next(end)
      if (!isChannelSender(inner) || inner.info.to.operator !== 'join') return inner
      const plan = [...script[inner.info.to.port as 'a' | 'b']]
      let sent = 0
      const due = (all: boolean): void => {
        while (plan.length > 0 && (all || plan[0]![0] <= sent)) inner.send({ values: [], marker: parse(plan.shift()![1]) })
      }
      return wrapChannel(inner, {
        send: (batch) => {
          if (batch.marker !== undefined) return inner.send(batch)
          const values = batch.values
          for (let from = 0; from < values.length; ) {
            due(false)
            const until = plan.length > 0 ? Math.min(values.length, from + plan[0]![0] - sent) : values.length
            inner.send({ values: values.slice(from, until) })
            sent += until - from
            from = until
          }
          due(false)
        },
        end: () => {
          due(true)
          inner.end()
        },
      })
    },
    instance: (spec, next) => {
      const inner = next(spec)
      const at = spec.info.operator
      if (at !== 'join' && at !== 'out') return inner
      const cut: Record<string, number> = {}
      return wrapInstance(inner, {
        process: (port, batch) => {
          cut[port] = (cut[port] ?? 0) + batch.values.length
          return inner.process(port, batch)
        },
        marker: (marker) => {
          seen[at].push({ marker: `${marker.kind}${marker.id}`, cut: { ...cut } })
          return inner.marker?.(marker)
        },
      })
    },
  }
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i)

/** Runs a → join ← b → out with the script's markers on a and b, sources sending `batchSize` values at a time; fails if the job does not finish within 10 s. */
async function run(script: Script, lengths: { a: number; b: number }, batchSize: number) {
  const a = range(0, lengths.a)
  const b = range(100_000, lengths.b)
  const seen = { join: [] as Seen[], out: [] as Seen[] }
  const sa = source('sa', t.number, a)
  const sb = source('sb', t.number, b)
  const join = atom({
    name: 'join',
    inputs: { a: t.number, b: t.number },
    outputs: { out: t.number },
    on: { a: (n, ctx) => ctx.emit('out', n), b: (n, ctx) => ctx.emit('out', n) },
  })
  const out: number[] = []
  const into = sink('out', t.number, out)
  const p = program('alignment', {
    operators: [sa, sb, join, into],
    links: [link(sa.outputs.out, join.inputs.a), link(sb.outputs.out, join.inputs.b), link(join.outputs.out, into.inputs.in)],
  })
  const job = kernel.with(scripted(script, seen)).run(p, { batchSize, fuse: false })
  const guard = setTimeout(() => job.abort('the job did not finish within 10 s'), 10_000)
  await job.done.finally(() => clearTimeout(guard))
  // Every value arrives, each input's in its order.
  expect(out.filter((n) => n < 100_000)).toEqual(a)
  expect(out.filter((n) => n >= 100_000)).toEqual(b)
  return { seen, lengths }
}

/**
 * Checks what passed: each marker once at the join and once at the sink, in the same order, each
 * kind in id order, each at its cut (on each input, exactly the values before it there; an input
 * that ended before the marker counts with all its values).
 */
function expectAligned(result: Awaited<ReturnType<typeof run>>, script: Script): string[] {
  const { join, out } = result.seen
  const passed = join.map((s) => s.marker)
  expect(new Set(passed).size, 'each marker passes once').toBe(passed.length)
  expect(
    out.map((s) => s.marker),
    'the sink sees what the join passed, in order',
  ).toEqual(passed)
  for (const kind of new Set(passed.map((m) => m.slice(0, 1)))) {
    const ids = passed.filter((m) => m.startsWith(kind)).map((m) => parse(m).id)
    expect(ids, `kind ${kind} in id order`).toEqual([...ids].sort((x, y) => x - y))
  }
  for (const [i, s] of join.entries()) {
    const expected: Record<string, number> = {}
    for (const port of ['a', 'b'] as const) expected[port] = script[port].find(([, m]) => m === s.marker)?.[0] ?? result.lengths[port]
    expect({ a: 0, b: 0, ...s.cut }, `the join's cut at ${s.marker}`).toEqual(expected)
    expect(out[i]!.cut.in ?? 0, `the sink's cut at ${s.marker}`).toBe(expected.a! + expected.b!)
  }
  return passed
}

// Batch sizes change how the two inputs interleave at the join.
describe.each([1, 4, 16])('marker alignment with two inputs and two kinds (batches of %i)', (batchSize) => {
  it('passes every marker once, at its cut, when both inputs carry the kinds in the same order', async () => {
    const script: Script = {
      a: [
        [10, 'A1'],
        [20, 'B1'],
        [40, 'A2'],
        [40, 'B2'],
        [70, 'A3'],
      ],
      b: [
        [5, 'A1'],
        [30, 'B1'],
        [30, 'A2'],
        [50, 'B2'],
        [90, 'A3'],
      ],
    }
    const passed = expectAligned(await run(script, { a: 100, b: 100 }, batchSize), script)
    expect([...passed].sort()).toEqual(['A1', 'A2', 'A3', 'B1', 'B2'])
  })

  it('passes both kinds when they cross with no data between them (input a: A then B, input b: B then A)', async () => {
    const script: Script = {
      a: [
        [10, 'A1'],
        [10, 'B1'],
        [50, 'A2'],
        [50, 'B2'],
        [80, 'B3'],
        [80, 'A3'],
      ],
      b: [
        [20, 'B1'],
        [20, 'A1'],
        [60, 'B2'],
        [60, 'A2'],
        [70, 'A3'],
        [70, 'B3'],
      ],
    }
    const passed = expectAligned(await run(script, { a: 100, b: 100 }, batchSize), script)
    expect([...passed].sort()).toEqual(['A1', 'A2', 'A3', 'B1', 'B2', 'B3'])
  })

  it('gives up exactly one of two markers that cross with data between them, and aligns the later ones', async () => {
    // No cuts exist for both A1 and B1 (A1's holds b's values 15..24 and not a's 10..19, B1's the
    // reverse): the younger alignment gives way, the other passes.
    const script: Script = {
      a: [
        [10, 'A1'],
        [20, 'B1'],
        [60, 'A2'],
        [70, 'B2'],
      ],
      b: [
        [15, 'B1'],
        [25, 'A1'],
        [65, 'A2'],
        [75, 'B2'],
      ],
    }
    const passed = expectAligned(await run(script, { a: 100, b: 100 }, batchSize), script)
    expect(passed.filter((m) => m === 'A1' || m === 'B1')).toHaveLength(1)
    expect(passed.filter((m) => m !== 'A1' && m !== 'B1')).toEqual(['A2', 'B2'])
  })

  it('counts an input that ended as aligned for every kind', async () => {
    const script: Script = {
      a: [
        [10, 'A1'],
        [10, 'B1'],
      ],
      b: [
        [20, 'B1'],
        [20, 'A1'],
        [50, 'A2'],
        [60, 'B2'],
        [100, 'A3'],
      ],
    }
    const passed = expectAligned(await run(script, { a: 30, b: 100 }, batchSize), script)
    expect([...passed].sort()).toEqual(['A1', 'A2', 'A3', 'B1', 'B2'])
  })

  it('lets a newer marker of a kind supersede the one being aligned: the older never passes', async () => {
    // Input a is held for A1 and B1 at once; b never carries A1, and its A2 gives A1 up.
    const script: Script = {
      a: [
        [10, 'A1'],
        [10, 'B1'],
        [30, 'A2'],
      ],
      b: [
        [15, 'B1'],
        [20, 'A2'],
      ],
    }
    const passed = expectAligned(await run(script, { a: 50, b: 50 }, batchSize), script)
    expect(passed).toEqual(['B1', 'A2'])
  })
})
