// The audit layer of docs/guide-layers.md: the layer compliance suite every layer runs, its counts
// against a plain count (in one process, under checkpoints, and on three peer processes), and how
// it stacks with the built-in layers.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it, vi } from 'vitest'
import { kernel } from 'lamina'
import { CHECKPOINT_EVENTS, checkpoints, isolation, metadata, placement } from 'lamina/layers'
import { describeLayerCompliance, useCluster } from 'lamina/testing'
import { AUDIT, AUDIT_EVENTS, audit, layers, squares, type AuditCounts, type InstanceCounts } from './audit-layer.js'

// What every layer must keep true: records pass unchanged, markers keep their order, state round-trips, dispose is idempotent.
describeLayerCompliance('audit', () => audit())

/** The counts computed the plainest way: a loop over the same numbers. */
function plainCounts(below: number): AuditCounts {
  let multiples = 0
  for (let n = 0; n < below; n++) if (n % 3 === 0) multiples++
  return {
    numbers: { recordsIn: 0, recordsOut: below },
    multiples: { recordsIn: below, recordsOut: multiples },
    squares: { recordsIn: multiples, recordsOut: multiples },
    total: { recordsIn: multiples, recordsOut: 1 },
    print: { recordsIn: 1, recordsOut: 0 },
  }
}

/** The `counted` events of one job, summed by operator. */
function summed(events: readonly InstanceCounts[]): AuditCounts {
  const out: Record<string, { recordsIn: number; recordsOut: number }> = {}
  for (const e of events) {
    const c = (out[e.operator] ??= { recordsIn: 0, recordsOut: 0 })
    c.recordsIn += e.recordsIn
    c.recordsOut += e.recordsOut
  }
  return out
}

describe('the audit layer', () => {
  it('counts what a plain count gives, in its control answer and in its events; the program computes the same', async () => {
    const lines: string[] = []
    const counted: InstanceCounts[] = []
    const job = kernel.with(audit()).run(squares({ below: 10_000, out: (line) => void lines.push(line) }))
    job.events.subscribe((event) => {
      if (AUDIT_EVENTS.counted.is(event)) counted.push(event.data)
    })
    const report = await job.done
    expect(report.deadLetters).toEqual([])
    let sum = 0
    for (let n = 0; n < 10_000; n += 3) sum += n * n
    expect(lines).toEqual([`sum of the squares of the multiples of 3 below 10000: ${sum}`])
    expect(await job.control(AUDIT)).toEqual(plainCounts(10_000))
    expect(await job.control(AUDIT, { scope: 'peer' })).toEqual(plainCounts(10_000))
    // One event per instance: two sources, one filter, two maps, the total, the sink.
    expect(counted).toHaveLength(7)
    expect(summed(counted)).toEqual(plainCounts(10_000))
  })

  it('two stacks share nothing: each layer value counts its own jobs', async () => {
    const a = kernel.with(audit())
    const b = kernel.with(audit())
    const first = a.run(squares({ below: 300, out: () => undefined }))
    const second = b.run(squares({ below: 600, out: () => undefined }))
    await Promise.all([first.done, second.done])
    expect(await first.control(AUDIT)).toEqual(plainCounts(300))
    expect(await second.control(AUDIT)).toEqual(plainCounts(600))
  })

  it('stacks below checkpoints and above isolation, wherever it is declared', () => {
    expect(kernel.with(...layers).describe()).toEqual(['placement', 'checkpoints', 'audit'])
    expect(kernel.with(isolation(), metadata(), audit(), checkpoints()).describe()).toEqual(['metadata', 'checkpoints', 'audit', 'isolation'])
    expect(kernel.with(audit(), placement()).describe()).toEqual(['audit', 'placement'])
  })

  it('under checkpoints, which snapshot and restore through it while it counts: the same counts', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lamina-audit-'))
    try {
      const lines: string[] = []
      const job = kernel.with(audit(), checkpoints({ dir, intervalMs: 20 })).run(squares({ below: 200_000, out: (line) => void lines.push(line) }), { batchSize: 64 })
      let completed = 0
      job.events.subscribe((event) => {
        if (CHECKPOINT_EVENTS.completed.is(event)) completed++
      })
      await job.done
      expect(completed).toBeGreaterThan(0)
      expect(lines).toHaveLength(1)
      expect(await job.control(AUDIT)).toEqual(plainCounts(200_000))
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  describe('on three peer processes', () => {
    const fixture = useCluster({ peers: 3 })

    it("sums every peer's counts once the job succeeded (a `totals` event), equal to a plain count", async () => {
      // The sink runs in this process (the submitter) and prints there: keep what it prints.
      const printed: string[] = []
      const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => printed.push(String(chunk)) > 0)
      const module = new URL('./audit-layer.ts', import.meta.url).pathname
      const job = await fixture.cluster.submit(module, { args: ['30000'] })
      const counted: InstanceCounts[] = []
      let totals: AuditCounts | undefined
      job.events.subscribe((event) => {
        if (AUDIT_EVENTS.counted.is(event)) counted.push(event.data)
        if (AUDIT_EVENTS.totals.is(event)) totals = event.data
      })
      const report = await job.done.finally(() => write.mockRestore())
      expect(report.deadLetters).toEqual([])
      expect(printed.filter((line) => line.startsWith('sum of'))).toEqual(['sum of the squares of the multiples of 3 below 30000: 2999550015000\n'])
      expect(totals).toEqual(plainCounts(30_000))
      expect(summed(counted)).toEqual(plainCounts(30_000))
      // The instances ran on several peers, each counted where it ran.
      expect(new Set(Object.values(report.plan)).size).toBeGreaterThan(1)
    }, 60_000)
  })
})
