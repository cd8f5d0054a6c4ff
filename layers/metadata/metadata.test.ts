// The metadata layer in one process: lineage through map, filter, flatMap, stream bodies, batch
// handlers and keyed aggregates; sampling; sinks reading metadata; bounds.
import { map as rxMap } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { atom, filter, flatMap, isChannelSender, kernel, link, makeLink, map, program, sink, source, stream, t, wrapChannel, type Batch, type Layer } from 'lamina'
import { metadata, recordMetadata, tracedSink, type RecordMetadata } from './index.js'

/** A layer under test layers: records every batch sent on a channel. */
function channelSpy(): { layer: Layer; batches: { link: string; batch: Batch }[] } {
  const batches: { link: string; batch: Batch }[] = []
  const layer: Layer = {
    name: 'spy',
    channel: (channel, next) => {
      const inner = next(channel)
      if (!isChannelSender(inner)) return inner
      return wrapChannel(inner, {
        send: (batch) => {
          batches.push({ link: inner.info.link.id, batch })
          inner.send(batch)
        },
      })
    },
  }
  return { layer, batches }
}

const numbers = (n: number) => Array.from({ length: n }, (_, i) => i)

describe('metadata layer: lineage', () => {
  it('follows records through map, filter and flatMap', async () => {
    const tracing = metadata({ peer: 'here' })
    const src = source('src', t.number, numbers(8))
    const double = map('double', t.number, t.number, (n) => n * 2)
    const keep = filter('keep', t.number, (n) => n % 4 === 0)
    const split = flatMap('split', t.number, t.number, (n) => [n, n + 1])
    const rows: [number, RecordMetadata | undefined][] = []
    const out = tracedSink('out', t.number, (value, m) => void rows.push([value, m]))
    const p = program('chain', {
      operators: [src, double, keep, split, out],
      links: [link(src.outputs.out, double.inputs.in), link(double.outputs.out, keep.inputs.in), link(keep.outputs.out, split.inputs.in), link(split.outputs.out, out.inputs.in)],
    })
    await kernel.with(tracing).run(p).done
    expect(rows.map(([v]) => v)).toEqual([0, 1, 4, 5, 8, 9, 12, 13])
    for (const [value, m] of rows) {
      const input = Math.floor(value / 4) * 2 // the source record: n with 2n = value rounded down to a multiple of 4
      const lineage = tracing.lineage(m)!
      expect(lineage.inputs).toEqual([`src#0:${input}`])
      expect(lineage.trace).toBe(`src#0:${input}`)
      expect(lineage.dropped).toBe(0)
      expect(lineage.approximate).toBe(false)
      expect(lineage.operators.map((o) => `${o.operator}#${o.instance}@${o.peer}`)).toEqual(['src#0@here', 'double#0@here', 'keep#0@here', 'split#0@here'])
      expect(lineage.hops.every((h) => h.time > 1.6e12 && h.duration >= 0)).toBe(true)
    }
    // Both outputs of one flatMap input share its metadata.
    expect(rows[0]![1]).toBe(rows[1]![1])
  })

  it('gives a keyed aggregate the lineage of every record of the key, emitted at end or per record', async () => {
    const tracing = metadata({ peer: 'here' })
    const words = ['a', 'b', 'a', 'c', 'b', 'a', 'd', 'a']
    const src = source('words', t.string, words)
    const Row = t.type({ word: t.string, count: t.number })
    const count = atom({
      name: 'count',
      inputs: { in: t.string },
      outputs: { out: Row, running: Row },
      key: (w) => w,
      state: { codec: t.number, init: () => 0 },
      on: { in: (w, ctx) => void ctx.emit('running', { word: w, count: ctx.state.update((n) => n + 1) }) },
      end: (ctx) => {
        for (const [word, n] of ctx.state.entries()) ctx.emit('out', { word: String(word), count: n })
      },
      annotations: { parallelism: 2 },
    })
    const finals: [string, RecordMetadata | undefined][] = []
    const runnings: { word: string; count: number }[] = []
    const out = tracedSink('out', Row, (row, m) => void finals.push([row.word, m]))
    const running = sink('running', Row, runnings)
    const p = program('count', {
      operators: [src, count, out, running],
      links: [link(src.outputs.out, count.inputs.in), link(count.outputs.out, out.inputs.in), link(count.outputs.running, running.inputs.in)],
    })
    await kernel.with(tracing).run(p).done
    const idsOf = (word: string) => words.flatMap((w, i) => (w === word ? [`words#0:${i}`] : []))
    expect(finals.map(([w]) => w).sort()).toEqual(['a', 'b', 'c', 'd'])
    for (const [word, m] of finals) {
      const lineage = tracing.lineage(m)!
      expect(lineage.inputs).toEqual(idsOf(word))
      expect(lineage.operators.map((o) => o.operator)).toEqual(['words', 'count'])
    }
    // Running counts derive from the records of their key so far; the sink's WeakMap knows each row object.
    const thirdA = runnings.find((r) => r.word === 'a' && r.count === 3)!
    expect(tracing.lineage(thirdA)?.inputs).toEqual(idsOf('a').slice(0, 3))
    expect(tracing.metadataOf(thirdA)?.trace).toBe('words#0:0')
  })

  it('traces stream bodies record by record and batch handlers by batch', async () => {
    const tracing = metadata({ peer: 'here' })
    const src = source('src', t.number, numbers(10), {})
    const plus = stream({ name: 'plus', inputs: { in: t.number }, outputs: { out: t.number }, body: ({ in: xs }) => ({ out: xs.pipe(rxMap((x) => x + 100)) }) })
    const sum = atom({
      name: 'sum',
      inputs: { in: t.number },
      outputs: { out: t.number },
      onBatch: {
        in: (xs, ctx) =>
          ctx.emit(
            'out',
            xs.reduce((a, b) => a + b, 0),
          ),
      },
    })
    const plusRows: [number, RecordMetadata | undefined][] = []
    const sums: [number, RecordMetadata | undefined][] = []
    const seePlus = tracedSink('seePlus', t.number, (v, m) => void plusRows.push([v, m]))
    const seeSum = tracedSink('seeSum', t.number, (v, m) => void sums.push([v, m]))
    const p = program('forms', {
      operators: [src, plus, sum, seePlus, seeSum],
      links: [link(src.outputs.out, plus.inputs.in), link(plus.outputs.out, seePlus.inputs.in), link(src.outputs.out, sum.inputs.in), link(sum.outputs.out, seeSum.inputs.in)],
    })
    await kernel.with(tracing).run(p, { batchSize: 4 }).done
    expect(plusRows.map(([v, m]) => [v, m?.inputs])).toEqual(numbers(10).map((i) => [i + 100, [`src#0:${i}`]]))
    // Batches of 4: the sum of each batch derives from its 4 records.
    expect(sums.map(([v, m]) => [v, tracing.lineage(m)?.inputs])).toEqual([
      [6, ['src#0:0', 'src#0:1', 'src#0:2', 'src#0:3']],
      [22, ['src#0:4', 'src#0:5', 'src#0:6', 'src#0:7']],
      [17, ['src#0:8', 'src#0:9']],
    ])
    expect(tracing.lineage(sums[0]![1])?.operators.map((o) => o.operator)).toEqual(['src', 'sum'])
  })

  it('keeps bounds: maxInputs counts the rest in dropped, keys past maxKeys share an approximate lineage', async () => {
    const tracing = metadata({ peer: 'here', maxInputs: 3, maxKeys: 2 })
    const src = source('n', t.number, numbers(40))
    const Row = t.tuple([t.number, t.number])
    const count = atom({
      name: 'count',
      inputs: { in: t.number },
      outputs: { out: Row },
      key: (n) => n % 4,
      state: { codec: t.number, init: () => 0 },
      on: { in: (_n, ctx) => void ctx.state.update((c) => c + 1) },
      end: (ctx) => {
        for (const [k, c] of ctx.state.entries()) ctx.emit('out', [Number(k), c])
      },
    })
    const rows: [number, RecordMetadata | undefined][] = []
    const out = tracedSink('out', Row, ([k], m) => void rows.push([k, m]))
    await kernel.with(tracing).run(program('bounded', { operators: [src, count, out], links: [link(src.outputs.out, count.inputs.in), link(count.outputs.out, out.inputs.in)] }))
      .done
    const byKey = new Map(rows.map(([k, m]) => [k, tracing.lineage(m)!]))
    expect(byKey.get(0)).toMatchObject({ inputs: ['n#0:0', 'n#0:4', 'n#0:8'], dropped: 7, approximate: false })
    expect(byKey.get(1)).toMatchObject({ inputs: ['n#0:1', 'n#0:5', 'n#0:9'], dropped: 7, approximate: false })
    // Keys 2 and 3 came after the first two: one shared lineage, marked approximate.
    expect(byKey.get(2)).toMatchObject({ inputs: ['n#0:2', 'n#0:3', 'n#0:6'], dropped: 17, approximate: true })
    expect(byKey.get(3)?.approximate).toBe(true)
  })

  it('matches records to headers past values the kernel refused (codec checks)', async () => {
    const tracing = metadata({ peer: 'here' })
    const raw = source('raw', t.unknown, [1, 'x', 2, 2, 'y', 'z', 3])
    const double = map('double', t.number, t.number, (n) => n * 2)
    const rows: [number, RecordMetadata | undefined][] = []
    const out = tracedSink('out', t.number, (v, m) => void rows.push([v, m]))
    const p = program('refused', {
      operators: [raw, double, out],
      links: [makeLink({ operator: 'raw', port: 'out' }, { operator: 'double', port: 'in' }), link(double.outputs.out, out.inputs.in)],
    })
    const report = await kernel.with(tracing).run(p).done
    expect(report.deadLetters.map((d) => d.value)).toEqual(['x', 'y', 'z'])
    expect(rows.map(([v, m]) => [v, m?.inputs])).toEqual([
      [2, ['raw#0:0']],
      [4, ['raw#0:2']],
      [4, ['raw#0:3']],
      [6, ['raw#0:6']],
    ])
  })

  it('keeps the reply path of requests it stamps', async () => {
    const tracing = metadata({ peer: 'here' })
    const src = source('src', t.number, [1, 2, 3])
    const answers: number[] = []
    const asker = atom({
      name: 'asker',
      inputs: { in: t.number },
      outputs: { ask: t.number },
      on: { in: async (n, ctx) => void answers.push(await ctx.request<number>('ask', n)) },
    })
    const seen: (string | undefined)[] = []
    const square = atom({
      name: 'square',
      inputs: { in: t.number },
      on: {
        in: (n, ctx) => {
          seen.push(recordMetadata(ctx)?.trace)
          return n * n
        },
      },
    })
    const p = program('ask', { operators: [src, asker, square], links: [link(src.outputs.out, asker.inputs.in), link(asker.outputs.ask, square.inputs.in)] })
    const report = await kernel.with(tracing).run(p).done
    expect(report.deadLetters).toEqual([])
    expect(answers).toEqual([1, 4, 9])
    expect(seen).toEqual(['src#0:0', 'src#0:1', 'src#0:2'])
  })

  it('lets any handler read the metadata of its record, also after an await', async () => {
    const tracing = metadata({ peer: 'here' })
    const src = source('src', t.string, ['x', 'y'])
    const seen: [string, string | undefined][] = []
    const slow = atom({
      name: 'slow',
      inputs: { in: t.string },
      on: {
        in: async (v, ctx) => {
          await ctx.sleep(1)
          seen.push([v, recordMetadata(ctx)?.trace])
          seen.push([v, ((await ctx.call('metadata.current')) as RecordMetadata | undefined)?.trace])
        },
      },
    })
    await kernel.with(tracing).run(program('slow', { operators: [src, slow], links: [link(src.outputs.out, slow.inputs.in)] })).done
    expect(seen).toEqual([
      ['x', 'src#0:0'],
      ['x', 'src#0:0'],
      ['y', 'src#0:1'],
      ['y', 'src#0:1'],
    ])
  })
})

describe('metadata layer: sampling', () => {
  const pipeline = (n: number, rows: [number, RecordMetadata | undefined][]) => {
    const src = source('src', t.number, numbers(n))
    const inc = map('inc', t.number, t.number, (x) => x + 1)
    const out = tracedSink('out', t.number, (v, m) => void rows.push([v, m]))
    return program('sampled', { operators: [src, inc, out], links: [link(src.outputs.out, inc.inputs.in), link(inc.outputs.out, out.inputs.in)] })
  }

  it('at 0 adds no headers and no hook', async () => {
    const tracing = metadata({ sampling: 0 })
    expect(tracing.instance).toBeUndefined()
    expect(tracing.channel).toBeUndefined()
    const spy = channelSpy()
    const rows: [number, RecordMetadata | undefined][] = []
    await kernel.with(tracing, spy.layer).run(pipeline(5000, rows)).done
    expect(rows).toHaveLength(5000)
    expect(rows.every(([, m]) => m === undefined)).toBe(true)
    expect(spy.batches.length).toBeGreaterThan(0)
    expect(spy.batches.every(({ batch }) => batch.headers === undefined)).toBe(true)
    expect(tracing.toChromeTrace().traceEvents).toEqual([])
  })

  const traced = async (init: Parameters<typeof metadata>[0], n: number, batchSize?: number) => {
    const tracing = metadata(init)
    const rows: [number, RecordMetadata | undefined][] = []
    await kernel.with(tracing).run(pipeline(n, rows), batchSize === undefined ? {} : { batchSize }).done
    expect(rows).toHaveLength(n)
    // Every traced record names its own source record.
    for (const [v, m] of rows) if (m !== undefined) expect(m.inputs).toEqual([`src#0:${v - 1}`])
    const picked = rows.filter(([, m]) => m !== undefined).map(([v]) => v - 1)
    expect(tracing.stats()).toMatchObject({ records: n, sampled: picked.length })
    return picked
  }

  it('at 0.5 by record traces about half, the same records for the same seed', async () => {
    const a = await traced({ sampling: 0.5, sampleBy: 'record', seed: 7 }, 10_000)
    expect(a.length).toBeGreaterThan(4700)
    expect(a.length).toBeLessThan(5300)
    expect(await traced({ sampling: 0.5, sampleBy: 'record', seed: 7 }, 10_000)).toEqual(a)
    expect(await traced({ sampling: 0.5, sampleBy: 'record', seed: 8 }, 10_000)).not.toEqual(a)
  })

  it('at 0.5 by batch traces about half, in whole source batches, the same for the same seed', async () => {
    const a = await traced({ sampling: 0.5, seed: 7 }, 16_000, 16)
    expect(a.length).toBeGreaterThan(7000)
    expect(a.length).toBeLessThan(9000)
    const batches = new Set(a.map((i) => Math.floor(i / 16)))
    expect(a.length).toBe(batches.size * 16)
    expect(await traced({ sampling: 0.5, seed: 7 }, 16_000, 16)).toEqual(a)
    expect(await traced({ sampling: 0.5, seed: 9 }, 16_000, 16)).not.toEqual(a)
  })

  it('at 0.01 leaves untraced batches without headers', async () => {
    for (const sampleBy of ['batch', 'record'] as const) {
      const tracing = metadata({ sampling: 0.01, seed: 1, sampleBy })
      const spy = channelSpy()
      const rows: [number, RecordMetadata | undefined][] = []
      await kernel.with(tracing, spy.layer).run(pipeline(100_000, rows), { batchSize: 16 }).done
      const picked = rows.filter(([, m]) => m !== undefined).length
      expect(picked).toBeGreaterThan(sampleBy === 'batch' ? 600 : 800)
      expect(picked).toBeLessThan(sampleBy === 'batch' ? 1400 : 1200)
      const plain = spy.batches.filter(({ batch }) => batch.headers === undefined).length
      expect(plain / spy.batches.length).toBeGreaterThan(sampleBy === 'batch' ? 0.97 : 0.8)
    }
  })

  it('refuses a rate outside 0..1', () => {
    expect(() => metadata({ sampling: 1.5 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => metadata({ sampling: Number.NaN })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => metadata({ sampleBy: 'trace' as 'batch' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})
