import { describe, expect, it } from 'vitest'
import { kernel, link, program, sink, source, t, type Layer, type StateSnapshot } from 'lamina'
import { native, recordLayout, stringLayout, utf8ChunkLayout, Utf8Bytes, type StepSpec } from './native.js'

const Count = t.type({ word: t.string, count: t.number })
type Count = t.TypeOf<typeof Count>
const words = stringLayout()
const counts = recordLayout<Count>({ word: { column: 'key', type: 'string' }, count: { column: 'count', type: 'number' } })

describe('native operators', () => {
  it('keep their native state in snapshots (saveState) and take it back on restore (loadState)', async () => {
    // Keyed by the word, as the count step keys its state, so each key's rows move with its group.
    const counter = () => native({ name: 'count', input: t.string, output: Count, steps: [{ op: 'count' }], inputLayout: words, outputLayout: counts, key: (w: string) => w })
    const run = async (input: string[], restoreFrom?: StateSnapshot) => {
      let taken: StateSnapshot | undefined
      let restoreError: unknown
      // A layer snapshots the instance before it ends and restores a given snapshot when it is
      // made, through the public instance hooks, as fault tolerance does.
      const snapshots: Layer = {
        name: 'snapshots',
        instance: (spec, next) => {
          const inner = next(spec)
          if (spec.operator.name !== 'count') return inner
          if (restoreFrom !== undefined)
            try {
              inner.restore(restoreFrom)
            } catch (error) {
              restoreError = error
            }
          return {
            info: inner.info,
            start: () => inner.start(),
            process: (port, batch) => inner.process(port, batch),
            run: () => inner.run(),
            snapshot: () => inner.snapshot(),
            restore: (snapshot) => inner.restore(snapshot),
            marker: (marker) => inner.marker?.(marker),
            dispose: () => inner.dispose?.(),
            end: () => ((taken = inner.snapshot()), inner.end()),
          }
        },
      }
      const out: Count[] = []
      const c = counter()
      const from = source('words', t.string, input)
      const into = sink('out', Count, out)
      await kernel.with(snapshots).run(program('p', { operators: [from, c, into], links: [link(from.outputs.out, c.inputs.in), link(c.outputs.out, into.inputs.in)] })).done
      return { counts: Object.fromEntries(out.map((x) => [x.word, x.count])), taken, restoreError }
    }
    const first = await run(['a', 'b', 'a'])
    expect(first.counts).toEqual({ a: 2, b: 1 })
    expect(first.taken?.entries).toEqual([
      ['a', [[2]]],
      ['b', [[1]]],
    ])
    const second = await run(['a', 'c'], first.taken)
    expect(second.restoreError).toBeUndefined()
    expect(second.counts).toEqual({ a: 3, b: 1, c: 1 })
    // Rows that do not fit the chain (a count row is one number) fail the restore with a typed error.
    const bad = await run(['a'], { operator: 'count', entries: [['a', [[1, 2]]]] })
    expect(bad.restoreError).toMatchObject({ code: 'ERR_STATE_RESTORE' })
    expect(String((bad.restoreError as Error).message)).toContain('each state row must be [count]')
  })

  /** A layer that snapshots operator `name` just before it ends and restores `restoreFrom` into it when it is made (as fault tolerance does). */
  const snapshotsOf = (name: string, restoreFrom?: StateSnapshot) => {
    const seen: { taken?: StateSnapshot; restoreError?: unknown } = {}
    const layer: Layer = {
      name: 'snapshots',
      instance: (spec, next) => {
        const inner = next(spec)
        if (spec.operator.name !== name) return inner
        if (restoreFrom !== undefined)
          try {
            inner.restore(restoreFrom)
          } catch (error) {
            seen.restoreError = error
          }
        return {
          info: inner.info,
          start: () => inner.start(),
          process: (port, batch) => inner.process(port, batch),
          run: () => inner.run(),
          snapshot: () => inner.snapshot(),
          restore: (snapshot) => inner.restore(snapshot),
          marker: (marker) => inner.marker?.(marker),
          dispose: () => inner.dispose?.(),
          end: () => ((seen.taken = inner.snapshot()), inner.end()),
        }
      },
    }
    return { layer, seen }
  }

  const Timed = t.type({ k: t.string, time: t.number })
  type Timed = t.TypeOf<typeof Timed>
  const Fired = t.type({ key: t.string, start: t.number, end: t.number, count: t.number, late: t.number })
  type Fired = t.TypeOf<typeof Fired>
  const timedLayout = recordLayout<Timed>({ k: { column: 'k', type: 'string' }, time: { column: 't', type: 'number' } })
  const firedLayout = recordLayout<Fired>({
    key: { column: 'key', type: 'string' },
    start: { column: 'start', type: 'number' },
    end: { column: 'end', type: 'number' },
    count: { column: 'count', type: 'number' },
    late: { column: 'late', type: 'number' },
  })
  /** Runs `records` (no watermarks: every window fires at the end) through a window step, snapshotting it at the end. */
  const runWindows = async (step: StepSpec, records: Timed[], restoreFrom?: StateSnapshot) => {
    const { layer, seen } = snapshotsOf('w', restoreFrom)
    const w = native({ name: 'w', input: Timed, output: Fired, steps: [step], inputLayout: timedLayout, outputLayout: firedLayout, key: (r: Timed) => r.k })
    const out: Fired[] = []
    const from = source('records', Timed, records)
    const into = sink('out', Fired, out)
    await kernel.with(layer).run(program('p', { operators: [from, w, into], links: [link(from.outputs.out, w.inputs.in), link(w.outputs.out, into.inputs.in)] })).done
    return { out: out.map((f) => `${f.key} ${f.start} ${f.end} ${f.count} ${f.late}`).sort(), ...seen }
  }

  it('keep session windows with their end and fired flag in snapshots, and take them back', async () => {
    const step: StepSpec = { op: 'window', gap: 10, key: 'k', allowedLatenessMs: 5 }
    const first = await runWindows(step, [
      { k: 'a', time: 0 },
      { k: 'a', time: 5 },
      { k: 'b', time: 100 },
    ])
    expect(first.out).toEqual(['a 0 15 2 0', 'b 100 110 1 0'])
    // Rows `[start, count, end, fired]` per key.
    expect(first.taken?.entries).toEqual([
      ['a', [[0, 2, 15, 0]]],
      ['b', [[100, 1, 110, 0]]],
    ])
    // Restored, a's session takes a record that overlaps it and merges: [0, 15) and [12, 22).
    const second = await runWindows(step, [{ k: 'a', time: 12 }], first.taken)
    expect(second.restoreError).toBeUndefined()
    expect(second.out).toEqual(['a 0 22 3 0', 'b 100 110 1 0'])
  })

  it('restore window rows of an older checkpoint, without end and fired', async () => {
    const restored = await runWindows({ op: 'window', size: 10, key: 'k' }, [{ k: 'a', time: 3 }], { operator: 'w', entries: [['a', [[0, 2]]]] })
    expect(restored.restoreError).toBeUndefined()
    expect(restored.out).toEqual(['a 0 10 3 0'])
    // Saved again in the current shape, `[start, count, end, fired]`.
    expect(restored.taken?.entries).toEqual([['a', [[0, 3, 10, 0]]]])
  })

  it('refuse a late port on a chain without a window step', () => {
    expect(() => native({ name: 'bad', input: t.string, output: Count, steps: [{ op: 'count' }], inputLayout: words, outputLayout: counts, lateRecords: 'port' })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_OPTION' }),
    )
  })

  it('send late records to the late port, or make each a dead letter naming it', async () => {
    const records: Timed[] = [
      { k: 'a', time: 100 },
      { k: 'a', time: 5 },
      { k: 'b', time: 7 },
    ]
    const step: StepSpec = { op: 'window', size: 10, key: 'k' }
    const definition = { name: 'w', input: Timed, output: Fired, steps: [step], inputLayout: timedLayout, outputLayout: firedLayout }
    // A batch of one record at a time: the watermark (the record's time) follows each.
    const eventTime = { eventTime: { timestamp: (r: Timed) => r.time, outOfOrderMs: 0 } }
    const toPort = native({ ...definition, lateRecords: 'port' })
    const late: Timed[] = []
    const from = source('records', Timed, records, eventTime)
    const into = sink('out', Fired, [])
    const aside = sink('late', Timed, late)
    const report = await kernel.run(
      program('p', {
        operators: [from, toPort, into, aside],
        links: [link(from.outputs.out, toPort.inputs.in), link(toPort.outputs.out, into.inputs.in), link(toPort.outputs.late, aside.inputs.in)],
      }),
      { batchSize: 1 },
    ).done
    expect(report.deadLetters).toEqual([])
    expect(late).toEqual(records.slice(1))
    const asDead = native(definition)
    const from2 = source('records', Timed, records, eventTime)
    const into2 = sink('out', Fired, [])
    const report2 = await kernel.run(
      program('p', { operators: [from2, asDead, into2], links: [link(from2.outputs.out, asDead.inputs.in), link(asDead.outputs.out, into2.inputs.in)] }),
      { batchSize: 1 },
    ).done
    expect(report2.deadLetters.map((d) => d.value)).toEqual(records.slice(1))
    expect(report2.deadLetters[0]!.message).toContain('late record (ERR_LATE_RECORD): event time 5 is below the watermark 100 less the allowed lateness 0 ms')
  })

  const lines = ['The cat sat on the mat', 'the CAT', 'Été été 東京']

  it('run a native chain per batch and emit what it produces at the end', async () => {
    const text = source('text', t.string, lines)
    const count = native({ name: 'count', input: t.string, output: Count, steps: [{ op: 'tokenize' }, { op: 'count' }], inputLayout: words, outputLayout: counts })
    const out: Count[] = []
    const into = sink('out', Count, out)
    await kernel.run(program('p', { operators: [text, count, into], links: [link(text.outputs.out, count.inputs.in), link(count.outputs.out, into.inputs.in)] }), { batchSize: 2 })
      .done
    expect(Object.fromEntries(out.map((c) => [c.word, c.count]))).toEqual({ the: 3, cat: 2, sat: 1, on: 1, mat: 1, été: 2, 東京: 1 })
  })

  it('fuse consecutive native operators on one peer into one chain', async () => {
    const text = source('text', t.string, lines)
    const tokenize = native({ name: 'tokenize', input: t.string, output: t.string, steps: [{ op: 'tokenize' }], inputLayout: words, outputLayout: words })
    const long = native({ name: 'long', input: t.string, output: t.string, steps: [{ op: 'filter', expr: 'len(s) > 2' }], inputLayout: words, outputLayout: words })
    const count = native({ name: 'count', input: t.string, output: Count, steps: [{ op: 'count' }], inputLayout: words, outputLayout: counts })
    const out: Count[] = []
    const into = sink('out', Count, out)
    const job = kernel.run(
      program('p', {
        operators: [text, tokenize, long, count, into],
        links: [
          link(text.outputs.out, tokenize.inputs.in),
          link(tokenize.outputs.out, long.inputs.in),
          link(long.outputs.out, count.inputs.in),
          link(count.outputs.out, into.inputs.in),
        ],
      }),
    )
    await job.done
    expect(job.program.operators.map((o) => o.name)).toEqual(['text', 'out', 'tokenize+long+count'])
    expect(Object.fromEntries(out.map((c) => [c.word, c.count]))).toEqual({ the: 3, cat: 2, sat: 1, mat: 1, été: 2 })
  })

  it('exchange batches with ordinary TypeScript operators over ordinary links', async () => {
    const text = source('text', t.string, lines)
    const tokenize = native({
      name: 'tokenize',
      input: t.string,
      output: t.string,
      steps: [{ op: 'tokenize' }],
      inputLayout: words,
      outputLayout: words,
      annotations: { parallelism: 2 },
    })
    const out: string[] = []
    const into = sink('out', t.string, out)
    await kernel.run(program('p', { operators: [text, tokenize, into], links: [link(text.outputs.out, tokenize.inputs.in), link(tokenize.outputs.out, into.inputs.in)] })).done
    expect(out.sort()).toEqual(['cat', 'cat', 'mat', 'on', 'sat', 'the', 'the', 'the', 'été', 'été', '東京'].sort())
  })

  it('refuse a bad chain when the operator is defined, with a typed error', () => {
    expect(() => native({ name: 'bad', input: t.string, output: t.string, steps: [{ op: 'count' }, { op: 'tokenize' }], inputLayout: words, outputLayout: words })).toThrow(
      expect.objectContaining({ code: 'ERR_NATIVE_BAD_PLAN' }),
    )
  })

  it('record a batch the native core refuses as a dead letter, and go on', async () => {
    // A map to a number column read back as strings: the layout cannot decode it.
    const text = source('text', t.string, ['a', 'b'])
    const broken = native({
      name: 'broken',
      input: t.string,
      output: t.string,
      steps: [{ op: 'map', expr: 'len(s)', as: 'x' }],
      inputLayout: words,
      outputLayout: stringLayout('x'),
    })
    const out: string[] = []
    const into = sink('out', t.string, out)
    const report = await kernel.run(program('p', { operators: [text, broken, into], links: [link(text.outputs.out, broken.inputs.in), link(broken.outputs.out, into.inputs.in)] }))
      .done
    expect(report.deadLetters).toHaveLength(1)
    expect(report.deadLetters[0]!.where).toMatchObject({ operator: 'broken', port: 'in' })
    expect(out).toEqual([])
  })

  it('count UTF-8 byte chunks of whole lines as they count the lines', async () => {
    const buffer = new TextEncoder().encode(lines.join('\n') + '\n')
    // Two chunks of whole lines, back to back in one buffer (as a file reader gives them).
    const cut = buffer.indexOf(10) + 1
    const chunks = [buffer.subarray(0, cut), buffer.subarray(cut)]
    const text = source('text', Utf8Bytes, chunks)
    const count = native({ name: 'count', input: Utf8Bytes, output: Count, steps: [{ op: 'tokenize' }, { op: 'count' }], inputLayout: utf8ChunkLayout, outputLayout: counts })
    const out: Count[] = []
    const into = sink('out', Count, out)
    await kernel.run(program('p', { operators: [text, count, into], links: [link(text.outputs.out, count.inputs.in), link(count.outputs.out, into.inputs.in)] })).done
    expect(Object.fromEntries(out.map((c) => [c.word, c.count]))).toEqual({ the: 3, cat: 2, sat: 1, on: 1, mat: 1, été: 2, 東京: 1 })
  })
})
