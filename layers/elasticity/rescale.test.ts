// End to end: rescaling a running keyed operator on a real local cluster moves its keyed state by
// key group, and the output equals a fault-free run's exactly.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { memoryLogger } from 'lamina/transport'
import { waitFor, keyedTotals } from 'lamina/testing'
import { startCluster, type Cluster, type SubmittedJob } from 'lamina/cluster'

const fixture = keyedTotals.MODULE
const { received, reference, results } = keyedTotals
const RECORDS = 4_000_000
/** Long enough for three rescales, a join and a leave while it runs. */
const LONG = 12_000_000

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

  it('the automatic policy scales a backpressured keyed operator out, and the output stays exact', async () => {
    results.length = 0
    const records = 300_000
    // 20 µs of arithmetic per record in one counter: its input queues fill up.
    const job = await cluster.submit(fixture, { args: [String(records), '200', '1', '20', 'auto:3'] })
    const decided = waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'scale', 60_000, 'a scaling decision')
    const rescaled = waitFor(job.events, (e) => e.type === 'rescaling', 60_000, 'the rescale it asks for')
    const decision = await decided
    expect(decision.type === 'layer' && decision.data).toMatchObject({ operator: 'totals', from: 1, to: 2 })
    expect(decision.type === 'layer' && decision.message).toContain('backpressure')
    const rescaling = await rescaled
    expect(rescaling.type === 'rescaling' && rescaling.parallelism['totals']).toBe(2)
    const report = await job.done
    expect(received()).toEqual(reference(records))
    expect(Object.keys(report.plan).filter((k) => k.startsWith('totals#')).length).toBeGreaterThanOrEqual(2)
  }, 120_000)
})

describe('rescaling as members join and leave', () => {
  let dir: string
  let cluster: Cluster

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-rescale-members-'))
    cluster = await startCluster({ peers: 3, spares: 1, workdir: dir, logger: memoryLogger() })
  }, 60_000)

  afterAll(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('on a 3-peer cluster: rescaled 1 -> 4 -> 2 -> 3 while a 4th peer joins midway and one leaves gracefully; the output is exact', async () => {
    results.length = 0
    const job = await cluster.submit(fixture, { args: [String(LONG), '200', '1'] })
    const peersOf = (): Set<string> =>
      new Set(
        Object.entries(job.plan)
          .filter(([k]) => k.startsWith('totals#'))
          .map(([, p]) => p),
      )
    const checkpoint = (what: string) => waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, what)
    await checkpoint('a first checkpoint')
    expect((await job.rescale('totals', 4)).changes['totals']).toEqual({ from: 1, to: 4 })
    expect(peersOf().size).toBe(3)
    // A new member: capacity the next rescale uses.
    const joined = await cluster.addPeer!()
    expect(peersOf().has(joined.peerId)).toBe(false)
    await checkpoint('a checkpoint at 4')
    expect((await job.rescale('totals', 2)).changes['totals']).toEqual({ from: 4, to: 2 })
    await checkpoint('a checkpoint at 2')
    expect((await job.rescale('totals', 3)).changes['totals']).toEqual({ from: 2, to: 3 })
    // A member leaving gracefully: the job moves its instances off before it goes.
    await checkpoint('a checkpoint at 3')
    const leaving = cluster.members().find((m) => peersOf().has(m.peerId) && m.peerId !== joined.peerId)!
    const index = cluster.members().findIndex((m) => m.peerId === leaving.peerId)
    const moved = waitFor(job.events, (e) => e.type === 'rescaling' && e.reason.includes('leaving'), 30_000, 'the instances of the leaving peer to move')
    const gone = cluster.removePeer!(index)
    const rescaling = await moved
    expect(rescaling.type === 'rescaling' && Object.values(rescaling.plan).includes(leaving.peerId)).toBe(false)
    // Three instances over the three members left, the joined one among them.
    expect(peersOf().has(joined.peerId)).toBe(true)
    await gone
    const report = await job.done
    expect(received()).toEqual(reference(LONG))
    expect(Object.keys(report.plan).filter((k) => k.startsWith('totals#'))).toHaveLength(3)
    expect(Object.values(report.plan)).not.toContain(leaving.peerId)
    // Four reshapes (three rescales and the move), no recovery: nothing failed.
    expect(report).toMatchObject({ attempts: 5, rescales: 4, recoveries: 0 })
  }, 180_000)
})
