// Trace export: the Chrome trace event JSON written by exportTrace parses and holds one complete event per hop.
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { atom, kernel, link, map, program, source, t } from 'lamina'
import { metadata, tracedSink, type ChromeTrace } from './index.js'

function wordProgram(sinkRows: unknown[]) {
  const src = source('src', t.string, ['a b', 'b c', 'a', 'c c c'], {})
  const upper = map('upper', t.string, t.string, (s) => s.toUpperCase())
  const count = atom({
    name: 'count',
    inputs: { in: t.string },
    outputs: { out: t.tuple([t.string, t.number]) },
    key: (line) => line.length,
    state: { codec: t.number, init: () => 0 },
    on: { in: (_l, ctx) => void ctx.state.update((n) => n + 1) },
    end: (ctx) => {
      for (const [k, n] of ctx.state.entries()) ctx.emit('out', [String(k), n])
    },
  })
  const out = tracedSink('out', t.tuple([t.string, t.number]), (row, m) => void sinkRows.push([row, m]))
  return program('words', {
    operators: [src, upper, count, out],
    links: [link(src.outputs.out, upper.inputs.in), link(upper.outputs.out, count.inputs.in), link(count.outputs.out, out.inputs.in)],
  })
}

describe('trace export', () => {
  it('writes Chrome trace JSON with a complete event per hop, and names peers and instances', async () => {
    const tracing = metadata({ peer: 'peer-a' })
    const rows: unknown[] = []
    const job = kernel.with(tracing).run(wordProgram(rows), { batchSize: 2 })
    await job.done
    const dir = await mkdtemp(join(tmpdir(), 'lamina-trace-'))
    try {
      const path = join(dir, 'trace.json')
      await tracing.exportTrace(path)
      const trace = JSON.parse(await readFile(path, 'utf8')) as ChromeTrace
      expect(trace.displayTimeUnit).toBe('ms')
      const complete = trace.traceEvents.filter((e) => e.ph === 'X')
      // Batches of 2: src and upper see 2 batches each, count 2 batches plus its end; out 1 batch of results.
      const byOperator = (name: string) => complete.filter((e) => e.name === name)
      expect(byOperator('src')).toHaveLength(2)
      expect(byOperator('upper')).toHaveLength(2)
      expect(byOperator('count')).toHaveLength(3)
      expect(byOperator('out').length).toBeGreaterThanOrEqual(1)
      for (const e of complete) {
        expect(e).toMatchObject({ cat: 'lamina.hop', pid: 1 })
        expect(e.ts).toBeGreaterThanOrEqual(0)
        expect(e.dur).toBeGreaterThanOrEqual(0)
        expect(e.args).toMatchObject({ operator: e.name, instance: 0, peer: 'peer-a', job: job.id })
      }
      expect(byOperator('upper').reduce((n, e) => n + (e.args!.records as number), 0)).toBe(4)
      const names = trace.traceEvents.filter((e) => e.ph === 'M')
      expect(names).toContainEqual({ name: 'process_name', ph: 'M', pid: 1, tid: 0, args: { name: 'peer peer-a' } })
      expect(
        names
          .filter((e) => e.name === 'thread_name')
          .map((e) => e.args!.name)
          .sort(),
      ).toEqual(['count#0', 'out#0', 'src#0', 'upper#0'])
      // Each instance is one thread: events of one thread do not overlap.
      for (const tid of new Set(complete.map((e) => e.tid))) {
        const events = complete.filter((e) => e.tid === tid).sort((a, b) => a.ts! - b.ts!)
        for (let i = 1; i < events.length; i++) expect(events[i]!.ts!).toBeGreaterThanOrEqual(events[i - 1]!.ts! + events[i - 1]!.dur! - 0.001)
      }
      // The same trace is what the job's control message answers.
      expect(((await job.control('metadata.trace')) as ChromeTrace).traceEvents).toHaveLength(trace.traceEvents.length)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('keeps at most maxEvents, the newest, and counts the dropped', async () => {
    const tracing = metadata({ maxEvents: 3 })
    await kernel.with(tracing).run(wordProgram([]), { batchSize: 1 }).done
    const trace = tracing.toChromeTrace()
    expect(trace.traceEvents.filter((e) => e.ph === 'X')).toHaveLength(3)
    expect(trace.otherData.droppedEvents).toBeGreaterThan(0)
    expect(tracing.stats().events).toBe(3)
    tracing.clear()
    expect(tracing.toChromeTrace().traceEvents).toEqual([])
  })

  it('fails with a typed error when the file cannot be written', async () => {
    const tracing = metadata()
    await expect(tracing.exportTrace('/nonexistent-dir/trace.json')).rejects.toMatchObject({ code: 'ERR_TRACE_EXPORT', name: 'TraceExportError' })
  })
})
