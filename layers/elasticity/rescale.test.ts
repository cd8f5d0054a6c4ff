// End to end: rescaling a running keyed operator on a real local cluster moves its keyed state by
// key group, and the output equals a fault-free run's exactly.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EmptyError, filter, firstValueFrom, timeout, type Observable } from 'rxjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { memoryLogger } from 'lamina/transport'
import { startCluster, type Cluster, type SubmittedJob } from 'lamina/cluster'
import { received, reference, results } from '../../bench/_keyed-totals.js'

const fixture = new URL('../../bench/_keyed-totals.ts', import.meta.url).pathname
const RECORDS = 3_000_000

function waitFor<T>(events: Observable<T>, predicate: (event: T) => boolean, ms: number, what: string): Promise<T> {
  return firstValueFrom(events.pipe(filter(predicate), timeout({ first: ms, with: () => { throw new Error(`timed out after ${ms} ms waiting for ${what}`) } }))).catch((error: unknown) => {
    throw error instanceof EmptyError ? new Error(`the events ended before ${what}`) : error
  })
}

describe('rescaling a running keyed operator', () => {
  let dir: string
  let cluster: Cluster

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-rescale-'))
    cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger() })
  }, 60_000)

  afterAll(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('a keyed count rescaled 1 -> 4 -> 2 -> 3 while it runs gives exactly the reference output', async () => {
    results.length = 0
    const job: SubmittedJob = await cluster.submit(fixture, { args: [String(RECORDS), '200', '1'] })
    const parallelism = (): number => Object.keys(job.plan).filter((k) => k.startsWith('totals#')).length
    expect(parallelism()).toBe(1)
    const reports = []
    for (const n of [4, 2, 3]) {
      // Each step once the job has made progress (a checkpoint completed) at the previous shape.
      await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, `a checkpoint before rescaling to ${n}`)
      const report = await job.rescale('totals', n)
      expect(report.changes['totals']!.to).toBe(n)
      expect(parallelism()).toBe(n)
      reports.push(report)
    }
    const done = await job.done
    expect(received()).toEqual(reference(RECORDS))
    expect(reports.map((r) => r.changes['totals'])).toEqual([
      { from: 1, to: 4 },
      { from: 4, to: 2 },
      { from: 2, to: 3 },
    ])
    expect(done.attempts).toBe(4)
    for (const r of reports) expect(r.pauseMs).toBeLessThan(5_000)
  }, 180_000)
})
