// Idleness: a source quiet for `idleMs` stops holding back the watermark downstream, and counts
// again once it emits.
import { describe, expect, it } from 'vitest'
import { atom, kernel, link, program, sink, source, t, tumbling, window } from 'lamina'
import { until } from 'lamina/testing'

const Event = t.type({ k: t.string, time: t.number, v: t.number })
type Event = t.TypeOf<typeof Event>
const count = { codec: t.number, init: () => 0, add: (n: number) => n + 1 }

/** A gate a test opens: an async source waits at it. */
function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void
  const opened = new Promise<void>((resolve) => {
    open = resolve
  })
  return { open, opened }
}

/** An async input: each part's events, then a wait at the next gate (the last part ends the input). */
function parts(...steps: (readonly Event[] | Promise<void>)[]): AsyncIterable<Event> {
  return {
    async *[Symbol.asyncIterator]() {
      for (const step of steps) {
        if (step instanceof Promise) await step
        else yield* step
      }
    },
  }
}

type Fired = { key: string | number; start: number; end: number; value: number; late: boolean }

/** Two sources (`a`, `b`) with event time (bound 0) into one tumbling(100) window, fired windows kept in `fired`. */
function twoSources(a: AsyncIterable<Event>, b: AsyncIterable<Event>, idleMs: number | undefined, fired: Fired[]) {
  const eventTime = { timestamp: (e: Event) => e.time, outOfOrderMs: 0 }
  const fromA = source('a', Event, a, { eventTime })
  const fromB = source('b', Event, b, { eventTime: idleMs === undefined ? eventTime : { ...eventTime, idleMs } })
  const windows = window('windows', { input: Event, key: (e) => e.k, timestamp: (e) => e.time, window: tumbling(100), aggregate: count, parallelism: 1 })
  const out = sink('out', windows.outputs.out.codec, (w) => void fired.push(w))
  return program('idle', {
    operators: [fromA, fromB, windows, out],
    links: [link(fromA.outputs.out, windows.inputs.in), link(fromB.outputs.out, windows.inputs.in), link(windows.outputs.out, out.inputs.in)],
  })
}

const ofA = Array.from({ length: 1000 }, (_, i) => ({ k: 'a', time: i, v: 1 }))

describe('watermark idleness', () => {
  it('a source quiet for idleMs no longer holds back windows; once it emits again it counts, and what it sends behind the watermark is late', async () => {
    const endA = gate()
    const resumeB = gate()
    const endB = gate()
    const fired: Fired[] = []
    const job = kernel.run(
      twoSources(
        parts(ofA, endA.opened),
        parts(
          [{ k: 'b', time: 0, v: 1 }],
          resumeB.opened,
          [
            { k: 'b', time: 50, v: 1 },
            { k: 'b', time: 2000, v: 1 },
          ],
          endB.opened,
        ),
        20,
        fired,
      ),
    )
    // b is quiet after one record: a's watermark (999) alone fires every window ending by then.
    await until(() => fired.filter((w) => w.key === 'a').length === 9, 10_000, "a's windows [0, 100) .. [800, 900) to fire while b is idle")
    expect(fired).toContainEqual({ key: 'b', start: 0, end: 100, value: 1, late: false })
    // b emits again: a record behind the watermark is late, and b's watermark (2000) counts again.
    resumeB.open()
    endA.open()
    // With a ended, b's watermark alone fires [900, 1000): b is active, not ignored.
    await until(() => fired.some((w) => w.key === 'a' && w.start === 900), 10_000, 'window [900, 1000) of a to fire at the watermark of b')
    expect(fired.some((w) => w.key === 'b' && w.start === 2000)).toBe(false)
    endB.open()
    const report = await job.done
    expect(fired.filter((w) => w.key === 'b')).toEqual([
      { key: 'b', start: 0, end: 100, value: 1, late: false },
      { key: 'b', start: 2000, end: 2100, value: 1, late: false },
    ])
    expect(report.deadLetters).toHaveLength(1)
    expect(report.deadLetters[0]!.value).toEqual({ k: 'b', time: 50, v: 1 })
    expect(report.deadLetters[0]!.message).toContain('ERR_LATE_RECORD')
  })

  it('only sources declare idleness, and idleMs must be positive', async () => {
    expect(() => source('s', Event, [], { eventTime: { timestamp: (e) => e.time, outOfOrderMs: 0, idleMs: 0 } })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_OPTION', message: expect.stringContaining('eventTime.idleMs') }),
    )
    const from = source('numbers', t.number, [1])
    const mid = atom({ name: 'mid', inputs: { in: t.number }, on: { in: (_v, ctx) => ctx.markIdle() } })
    const report = await kernel.run(program('p', { operators: [from, mid], links: [link(from.outputs.out, mid.inputs.in)] })).done
    expect(report.deadLetters).toHaveLength(1)
    expect(report.deadLetters[0]).toMatchObject({ code: 'ERR_INVALID_OPTION', value: 1 })
    expect(report.deadLetters[0]!.message).toContain('only sources declare idleness')
  })
})
