// Event time in one process: watermarks combine by minimum across inputs, windows equal a plain
// computation whatever the disorder within the bound, late records go aside, and the native core's
// windows agree with these.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { atom, kernel, link, native, program, recordLayout, session, sink, sliding, source, t, tumbling, WATERMARK, window, type WindowAssigner } from 'lamina'

const Event = t.type({ k: t.string, time: t.number, v: t.number })
type Event = t.TypeOf<typeof Event>
const Stat = t.type({ count: t.number, sum: t.number })
const stat = { codec: Stat, init: () => ({ count: 0, sum: 0 }), add: (a: { count: number; sum: number }, e: Event) => ({ count: a.count + 1, sum: a.sum + e.v }) }
const merge = (a: { count: number; sum: number }, b: { count: number; sum: number }) => ({ count: a.count + b.count, sum: a.sum + b.sum })

/** Windows as sorted lines `key start end count sum`, for comparing multisets. */
const lines = (rows: readonly { key: string | number; start: number; end: number; value?: { count: number; sum: number }; count?: number; sum?: number }[]): string[] =>
  rows.map((r) => `${r.key} ${r.start} ${r.end} ${r.value?.count ?? r.count} ${r.value?.sum ?? r.sum}`).sort()

/** The windows a plain computation gives: every record in every window containing it, per key. */
function plain(events: readonly Event[], assigner: WindowAssigner): string[] {
  const windows = new Map<string, { count: number; sum: number }>()
  if (assigner.kind === 'session') {
    const byKey = new Map<string, number[]>()
    for (const e of events) byKey.set(e.k, [...(byKey.get(e.k) ?? []), e.time])
    const out: string[] = []
    for (const [k, times] of byKey) {
      const sorted = events.filter((e) => e.k === k).sort((a, b) => a.time - b.time)
      let start = sorted[0]!.time
      let end = start + assigner.gap
      let acc = { count: 0, sum: 0 }
      for (const e of sorted) {
        if (e.time >= end) {
          out.push(`${k} ${start} ${end} ${acc.count} ${acc.sum}`)
          start = e.time
          acc = { count: 0, sum: 0 }
        }
        end = Math.max(end, e.time + assigner.gap)
        acc = { count: acc.count + 1, sum: acc.sum + e.v }
      }
      out.push(`${k} ${start} ${end} ${acc.count} ${acc.sum}`)
      void times
    }
    return out.sort()
  }
  const slide = assigner.kind === 'sliding' ? assigner.slide : assigner.size
  for (const e of events) {
    for (let start = Math.floor(e.time / slide) * slide; start > e.time - assigner.size; start -= slide) {
      const id = `${e.k} ${start} ${start + assigner.size}`
      const w = windows.get(id) ?? { count: 0, sum: 0 }
      windows.set(id, { count: w.count + 1, sum: w.sum + e.v })
    }
  }
  return [...windows].map(([id, w]) => `${id} ${w.count} ${w.sum}`).sort()
}

/** Runs events through a source with event time (bound `outOfOrderMs`) into `window`; returns its output and dead letters. */
async function run(
  events: readonly Event[],
  assigner: WindowAssigner,
  options: { outOfOrderMs: number; allowedLatenessMs?: number; batchSize?: number; lateRecords?: 'port' | 'dead-letter' },
) {
  const events$ = source('events', Event, events, { eventTime: { timestamp: (e) => e.time, outOfOrderMs: options.outOfOrderMs } })
  const windows = window('windows', {
    input: Event,
    key: (e) => e.k,
    timestamp: (e) => e.time,
    window: assigner,
    aggregate: { ...stat, merge },
    ...(options.allowedLatenessMs === undefined ? {} : { allowedLatenessMs: options.allowedLatenessMs }),
    ...(options.lateRecords === undefined ? {} : { lateRecords: options.lateRecords }),
  })
  const out: { key: string | number; start: number; end: number; value: { count: number; sum: number }; late: boolean }[] = []
  const late: Event[] = []
  const sinkOut = sink('out', windows.outputs.out.codec, out)
  const sinkLate = sink('late', Event, late)
  const report = await kernel.run(
    program('windows', {
      operators: [events$, windows, sinkOut, sinkLate],
      links: [link(events$.outputs.out, windows.inputs.in), link(windows.outputs.out, sinkOut.inputs.in), link(windows.outputs.late, sinkLate.inputs.in)],
    }),
    { batchSize: options.batchSize ?? 16 },
  ).done
  return { out, late, deadLetters: report.deadLetters }
}

/** Events at times i·step, each moved back by up to `disorder` ms (so out of order within that bound). */
const disordered = fc
  .record({
    n: fc.integer({ min: 1, max: 300 }),
    step: fc.integer({ min: 1, max: 40 }),
    disorder: fc.integer({ min: 0, max: 200 }),
    keys: fc.integer({ min: 1, max: 5 }),
    seed: fc.integer(),
  })
  .map(({ n, step, disorder, keys, seed }) => {
    let x = seed | 0
    const next = (): number => {
      x = (Math.imul(x, 1103515245) + 12345) | 0
      return (x >>> 8) / 0x1000000
    }
    const events = Array.from({ length: n }, (_, i) => ({ k: `k${Math.floor(next() * keys)}`, time: i * step - Math.floor(next() * (disorder + 1)), v: Math.floor(next() * 100) }))
    return { events, disorder }
  })
const assigners = fc.oneof(
  fc.integer({ min: 1, max: 500 }).map((size) => tumbling(size)),
  fc.tuple(fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 100 })).map(([k, slide]) => sliding(k * slide, slide)),
  fc.integer({ min: 1, max: 300 }).map((gap) => session(gap)),
)

describe('event-time windows', () => {
  it('equal a plain computation for any disorder within the bound: nothing is late (property)', async () => {
    await fc.assert(
      fc.asyncProperty(disordered, assigners, fc.integer({ min: 1, max: 64 }), async ({ events, disorder }, assigner, batchSize) => {
        const { out, deadLetters } = await run(events, assigner, { outOfOrderMs: disorder, batchSize })
        expect(deadLetters).toEqual([])
        expect(out.every((r) => !r.late)).toBe(true)
        expect(lines(out)).toEqual(plain(events, assigner))
      }),
      { numRuns: 100 },
    )
  })

  it('fires windows as the watermark passes them, before the input ends', async () => {
    let produced = 0
    const firstFired: number[] = []
    const events$ = source(
      'events',
      Event,
      () =>
        (function* () {
          for (let i = 0; i < 20_000; i++) {
            produced++
            yield { k: 'a', time: i * 10, v: 1 }
          }
        })(),
      { eventTime: { timestamp: (e) => e.time, outOfOrderMs: 0 } },
    )
    const windows = window('w', { input: Event, key: (e) => e.k, timestamp: (e) => e.time, window: tumbling(1000), aggregate: stat })
    const ends: number[] = []
    const watch = atom({
      name: 'watch',
      inputs: { in: windows.outputs.out.codec },
      on: {
        in: (w) => {
          if (ends.length === 0) firstFired.push(produced)
          ends.push(w.end)
        },
      },
    })
    await kernel.run(
      program('progress', { operators: [events$, windows, watch], links: [link(events$.outputs.out, windows.inputs.in), link(windows.outputs.out, watch.inputs.in)] }),
      {
        batchSize: 50,
      },
    ).done
    expect(ends).toEqual(Array.from({ length: 200 }, (_, i) => (i + 1) * 1000))
    // The first window fired while the source had produced a small part of its input.
    expect(firstFired[0]).toBeLessThan(10_000)
  })

  it('takes as watermark the minimum over the inputs, and an input that ended no longer holds it back', async () => {
    const fast = source(
      'fast',
      Event,
      Array.from({ length: 200 }, (_, i) => ({ k: 'f', time: i * 100, v: 1 })),
      { eventTime: { timestamp: (e) => e.time, outOfOrderMs: 0 } },
    )
    const slow = source(
      'slow',
      Event,
      Array.from({ length: 20 }, (_, i) => ({ k: 's', time: i * 10, v: 1 })),
      { eventTime: { timestamp: (e) => e.time, outOfOrderMs: 0 } },
    )
    const marks: number[] = []
    const both = atom({ name: 'both', inputs: { a: Event, b: Event }, on: { a: () => undefined, b: () => undefined }, watermark: (time) => void marks.push(time) })
    await kernel.run(program('min', { operators: [fast, slow, both], links: [link(fast.outputs.out, both.inputs.a), link(slow.outputs.out, both.inputs.b)] }), { batchSize: 4 })
      .done
    expect(marks.length).toBeGreaterThan(0)
    for (let i = 1; i < marks.length; i++) expect(marks[i]!).toBeGreaterThan(marks[i - 1]!)
    // While both were open the watermark never passed the slow input's (at most 190); once it ended, the fast one's counted alone.
    const whileSlow = marks.filter((m) => m <= 190)
    expect(whileSlow.length).toBeGreaterThan(0)
    expect(marks.at(-1)).toBeGreaterThan(190)
    expect(WATERMARK).toBe('watermark')
  })

  it('sends records later than the allowed lateness aside: dead letters by default, or the late port', async () => {
    // Time 5 arrives after time 1000 with no bound for it: the watermark (1000) passed its window.
    const events: Event[] = [
      { k: 'a', time: 1000, v: 1 },
      { k: 'a', time: 1001, v: 1 },
      { k: 'a', time: 5, v: 7 },
    ]
    const asDead = await run(events, tumbling(100), { outOfOrderMs: 0, batchSize: 1 })
    expect(asDead.deadLetters).toHaveLength(1)
    expect(asDead.deadLetters[0]).toMatchObject({ code: 'ERR_REJECTED', value: { k: 'a', time: 5, v: 7 } })
    expect(asDead.deadLetters[0]!.message).toContain('late record (ERR_LATE_RECORD): event time 5 is below the watermark 1001')
    expect(lines(asDead.out)).toEqual(['a 1000 1100 2 2'])
    const asPort = await run(events, tumbling(100), { outOfOrderMs: 0, batchSize: 1, lateRecords: 'port' })
    expect(asPort.deadLetters).toEqual([])
    expect(asPort.late).toEqual([{ k: 'a', time: 5, v: 7 }])
  })

  it('within the allowed lateness a late record updates its fired window and fires it again, marked late', async () => {
    const events: Event[] = [
      { k: 'a', time: 10, v: 1 },
      { k: 'a', time: 150, v: 1 }, // watermark 150: [0,100) fires with 1
      { k: 'a', time: 20, v: 5 }, // late by 130 ms, within 200: [0,100) fires again with 2
      { k: 'a', time: 400, v: 1 }, // watermark 400: [0,100) is dropped (100 + 200 <= 400)
      { k: 'a', time: 30, v: 9 }, // later than the lateness: a dead letter
    ]
    const { out, deadLetters } = await run(events, tumbling(100), { outOfOrderMs: 0, allowedLatenessMs: 200, batchSize: 1 })
    expect(out.filter((r) => r.start === 0)).toEqual([
      { key: 'a', start: 0, end: 100, value: { count: 1, sum: 1 }, late: false },
      { key: 'a', start: 0, end: 100, value: { count: 2, sum: 6 }, late: true },
    ])
    expect(deadLetters.map((d) => (d.value as Event).time)).toEqual([30])
  })

  it('makes a record whose event time is not a finite number a dead letter at the source, and windows the rest', async () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const events: Event[] = [
        { k: 'a', time: 10, v: 1 },
        { k: 'a', time: bad, v: 5 },
        { k: 'a', time: 20, v: 1 },
      ]
      const { out, deadLetters } = await run(events, tumbling(100), { outOfOrderMs: 0, batchSize: 8 })
      expect(deadLetters.map((d) => [d.where.operator, d.message.includes('is not a finite number')])).toEqual([['events', true]])
      expect(lines(out)).toEqual(['a 0 100 2 2'])
    }
  })

  it('refuses a window it cannot run, naming the option', () => {
    expect(() => window('w', { input: Event, key: (e) => e.k, timestamp: (e) => e.time, window: sliding(10, 20), aggregate: stat })).toThrow(
      /window\.slide.*must not exceed the size/,
    )
    expect(() => window('w', { input: Event, key: (e) => e.k, timestamp: (e) => e.time, window: session(10), aggregate: stat })).toThrow(
      /aggregate\.merge.*required for session windows/,
    )
    expect(() => window('w', { input: Event, key: (e) => e.k, timestamp: (e) => e.time, window: tumbling(0), aggregate: stat })).toThrow(/window\.size.*positive/)
  })
})

describe('native windows agree with the TypeScript ones', () => {
  const Row = t.type({ key: t.string, start: t.number, end: t.number, count: t.number, sum: t.number, late: t.number })
  const layoutIn = recordLayout<Event>({ k: { column: 'k', type: 'string' }, time: { column: 't', type: 'number' }, v: { column: 'v', type: 'number' } })
  const layoutOut = recordLayout<t.TypeOf<typeof Row>>({
    key: { column: 'key', type: 'string' },
    start: { column: 'start', type: 'number' },
    end: { column: 'end', type: 'number' },
    count: { column: 'count', type: 'number' },
    sum: { column: 'sum', type: 'number' },
    late: { column: 'late', type: 'number' },
  })
  /** Fired windows as sorted lines `key start end count sum late`, late firings included. */
  const firings = (
    rows: readonly { key: string | number; start: number; end: number; value?: { count: number; sum: number }; count?: number; sum?: number; late: boolean | number }[],
  ): string[] => rows.map((r) => `${r.key} ${r.start} ${r.end} ${r.value?.count ?? r.count} ${r.value?.sum ?? r.sum} ${r.late === true || r.late === 1 ? 1 : 0}`).sort()

  it('on the same stream, watermarks, allowed lateness, late firings and late records included (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        disordered,
        fc.oneof(
          fc.integer({ min: 1, max: 500 }).map((size) => tumbling(size)),
          fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 100 })).map(([k, slide]) => sliding(k * slide, slide)),
          fc.integer({ min: 1, max: 300 }).map((gap) => session(gap)),
        ),
        fc.integer({ min: 0, max: 100 }),
        fc.integer({ min: 1, max: 32 }),
        fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 300 })),
        fc.constantFrom<'port' | 'dead-letter'>('port', 'dead-letter'),
        async ({ events }, assigner, bound, batchSize, allowedLatenessMs, lateRecords) => {
          // The bound may be smaller than the disorder: both sides then find the same records late,
          // or within the allowed lateness, firing the same windows again.
          const events$ = source('events', Event, events, { eventTime: { timestamp: (e) => e.time, outOfOrderMs: bound } })
          const ts = window('ts', {
            input: Event,
            key: (e) => e.k,
            timestamp: (e) => e.time,
            window: assigner,
            aggregate: { ...stat, merge },
            allowedLatenessMs,
            lateRecords,
          })
          const shape = assigner.kind === 'session' ? { gap: assigner.gap } : { size: assigner.size, ...(assigner.kind === 'sliding' ? { slide: assigner.slide } : {}) }
          const definition = {
            name: 'rust',
            input: Event,
            output: Row,
            steps: [{ op: 'window' as const, ...shape, key: 'k', value: 'v', time: 't', allowedLatenessMs }],
            inputLayout: layoutIn,
            outputLayout: layoutOut,
          }
          const tsOut: { key: string | number; start: number; end: number; value: { count: number; sum: number }; late: boolean }[] = []
          const rustOut: t.TypeOf<typeof Row>[] = []
          const tsLate: Event[] = []
          const rustLate: Event[] = []
          const a = sink('a', ts.outputs.out.codec, tsOut)
          const b = sink('b', Row, rustOut)
          const la = sink('la', Event, tsLate)
          const lb = sink('lb', Event, rustLate)
          const links = [link(events$.outputs.out, ts.inputs.in), link(ts.outputs.out, a.inputs.in), link(ts.outputs.late, la.inputs.in)]
          let rust: ReturnType<typeof native>
          if (lateRecords === 'port') {
            const withPort = native({ ...definition, lateRecords })
            links.push(link(withPort.outputs.late, lb.inputs.in))
            rust = withPort
          } else rust = native(definition)
          links.push(link(events$.outputs.out, rust.inputs.in), link(rust.outputs.out, b.inputs.in))
          const operators = [events$, ts, rust, a, b, la, ...(lateRecords === 'port' ? [lb] : [])]
          const report = await kernel.run(program('agree', { operators, links }), { batchSize, fuse: false }).done
          expect(firings(rustOut)).toEqual(firings(tsOut))
          // The same late records, in the same order: on the late ports, or as dead letters naming them.
          expect(rustLate).toEqual(tsLate)
          const dead = (operator: string) =>
            report.deadLetters.filter((d) => d.where.operator === operator).map((d) => ({ value: d.value, message: d.message.replace(`${operator} `, '') }))
          expect(dead('rust')).toEqual(dead('ts'))
          if (lateRecords === 'port') expect(report.deadLetters).toEqual([])
        },
      ),
      { numRuns: 150 },
    )
  })
})
