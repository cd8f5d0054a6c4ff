// The state of tumbling and sliding windows: kept by start in memory, written into keyed state
// (`[start, end, value, fired]` per window) before a snapshot, read back after a restore.
import { describe, expect, it } from 'vitest'
import { kernel, link, program, sink, source, t, tumbling, window, type Layer, type StateSnapshot } from 'lamina'

const Event = t.type({ k: t.string, time: t.number, v: t.number })
type Event = t.TypeOf<typeof Event>
const Stat = t.type({ count: t.number, sum: t.number })
type Stat = t.TypeOf<typeof Stat>
const stat = { codec: Stat, init: (): Stat => ({ count: 0, sum: 0 }), add: (a: Stat, e: Event): Stat => ({ count: a.count + 1, sum: a.sum + e.v }) }

/**
 * Runs `events` (one a batch, watermark = largest time so far) through a tumbling(10) window with
 * 100 ms of allowed lateness. A layer restores `restoreFrom` into the window instance when it is
 * made and snapshots it just before it ends (before the end fires what is left), through the
 * instance hooks fault tolerance uses; with `snapshotAfter`, also after that many batches.
 */
async function run(events: readonly Event[], restoreFrom?: StateSnapshot, snapshotAfter = 0) {
  let taken: StateSnapshot | undefined
  let earlier: StateSnapshot | undefined
  let batches = 0
  const snapshots: Layer = {
    name: 'snapshots',
    instance: (spec, next) => {
      const inner = next(spec)
      if (spec.operator.name !== 'windows') return inner
      if (restoreFrom !== undefined) inner.restore(restoreFrom)
      return {
        info: inner.info,
        start: () => inner.start(),
        process: async (port, batch) => {
          await inner.process(port, batch)
          if (++batches === snapshotAfter) earlier = inner.snapshot()
        },
        run: () => inner.run(),
        snapshot: () => inner.snapshot(),
        restore: (snapshot) => inner.restore(snapshot),
        marker: (marker) => inner.marker?.(marker),
        dispose: () => inner.dispose?.(),
        end: () => ((taken = inner.snapshot()), inner.end()),
      }
    },
  }
  const from = source('events', Event, events, { eventTime: { timestamp: (e) => e.time, outOfOrderMs: 0 } })
  const windows = window('windows', { input: Event, key: (e) => e.k, timestamp: (e) => e.time, window: tumbling(10), aggregate: stat, allowedLatenessMs: 100 })
  const out: t.TypeOf<typeof windows.outputs.out.codec>[] = []
  const into = sink('out', windows.outputs.out.codec, out)
  const report = await kernel.with(snapshots).run(
    program('p', {
      operators: [from, windows, into],
      links: [link(from.outputs.out, windows.inputs.in), link(windows.outputs.out, into.inputs.in)],
    }),
    { batchSize: 1 },
  ).done
  expect(report.deadLetters).toEqual([])
  return { out, taken, earlier }
}

describe('tumbling window state', () => {
  it('snapshots every key windows with whether they fired, and a restore takes them back', async () => {
    const first = await run([
      { k: 'a', time: 1, v: 1 },
      { k: 'a', time: 2, v: 2 },
      { k: 'b', time: 21, v: 5 },
      { k: 'a', time: 25, v: 4 },
    ])
    // [0, 10) fired at watermark 21 and is kept for its lateness; [20, 30) has not fired.
    expect(first.taken?.entries).toEqual([
      [
        'a',
        [
          [0, 10, { count: 2, sum: 3 }, true],
          [20, 30, { count: 1, sum: 4 }, false],
        ],
      ],
      ['b', [[20, 30, { count: 1, sum: 5 }, false]]],
    ])
    expect(first.out).toEqual([
      { key: 'a', start: 0, end: 10, value: { count: 2, sum: 3 }, late: false },
      { key: 'b', start: 20, end: 30, value: { count: 1, sum: 5 }, late: false },
      { key: 'a', start: 20, end: 30, value: { count: 1, sum: 4 }, late: false },
    ])

    // Restored: a record for the fired window fires it again, late; the open one fires once, at the end.
    const second = await run(
      [
        { k: 'a', time: 5, v: 7 },
        { k: 'b', time: 22, v: 1 },
      ],
      first.taken,
    )
    expect(second.out).toEqual([
      { key: 'a', start: 0, end: 10, value: { count: 3, sum: 10 }, late: true },
      { key: 'a', start: 20, end: 30, value: { count: 1, sum: 4 }, late: false },
      { key: 'b', start: 20, end: 30, value: { count: 2, sum: 6 }, late: false },
    ])
  })

  it('after a rescale, a window that fired at one old instance and not at another fires only where it had not', async () => {
    // Keys a and b of window [0, 10) came from two old instances whose watermarks differed.
    const restored: StateSnapshot = {
      operator: 'windows',
      entries: [
        ['a', [[0, 10, { count: 1, sum: 1 }, true]]],
        ['b', [[0, 10, { count: 1, sum: 2 }, false]]],
      ],
    }
    const { out, taken } = await run([{ k: 'a', time: 3, v: 10 }], restored)
    expect(out).toEqual([
      { key: 'a', start: 0, end: 10, value: { count: 2, sum: 11 }, late: true },
      { key: 'b', start: 0, end: 10, value: { count: 1, sum: 2 }, late: false },
    ])
    expect(taken?.entries).toEqual([
      ['a', [[0, 10, { count: 2, sum: 11 }, true]]],
      ['b', [[0, 10, { count: 1, sum: 2 }, false]]],
    ])
  })

  it('removes the saved windows of a key once they all closed, and saves the rest again', async () => {
    // Lateness 100: [0, 10) closes at watermark 110; key a has nothing else, so its state goes.
    const { taken, earlier } = await run(
      [
        { k: 'a', time: 1, v: 1 },
        { k: 'b', time: 105, v: 2 },
        { k: 'b', time: 111, v: 3 },
      ],
      undefined,
      2,
    )
    // Taken after the second record, before the watermark that follows it.
    expect(earlier?.entries).toEqual([
      ['a', [[0, 10, { count: 1, sum: 1 }, false]]],
      ['b', [[100, 110, { count: 1, sum: 2 }, false]]],
    ])
    // Watermark 111: [0, 10) is past its lateness, so key a has no window left; [100, 110) fired.
    expect(taken?.entries).toEqual([
      [
        'b',
        [
          [100, 110, { count: 1, sum: 2 }, true],
          [110, 120, { count: 1, sum: 3 }, false],
        ],
      ],
    ])
  })
})
