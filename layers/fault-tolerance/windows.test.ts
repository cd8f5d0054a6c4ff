// Event-time windows are keyed state: on a 3-peer cluster a windowed job gives exactly the windows
// of a plain computation when a peer holding window instances is killed (the windows restore from
// the last checkpoint) and when the window operator is rescaled while it runs (its windows move by
// key group). Both for the kernel's window operator and for the native core's window step, whose
// windows live in Rust and reach checkpoints through the operator's saveState/loadState.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type Cluster, type SubmittedJob } from 'lamina/cluster'
import { memoryLogger } from 'lamina/transport'
import { waitFor } from 'lamina/testing'
import { received, reference, results } from './fixtures/windowed-program.js'

const fixture = join(import.meta.dirname, 'fixtures', 'windowed-program.ts')
const RECORDS = 200_000
const expected = reference(RECORDS)

describe.each(['ts', 'native'])('%s windows under checkpoints on a 3-peer cluster', (engine) => {
  let dir: string
  let cluster: Cluster

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-windows-'))
    cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger(), policy: { kind: 'restart', max: 10, withinMs: 600_000 } })
  }, 60_000)
  afterAll(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  function submit(micros: number): Promise<SubmittedJob> {
    results.length = 0
    return cluster.submit(fixture, { args: [String(RECORDS), '200', '2', String(micros), engine] })
  }

  it('fault-free: the windows equal a plain computation', async () => {
    const report = await (await submit(0)).done
    expect(received()).toEqual(expected)
    expect(report.deadLetters).toEqual([])
  }, 60_000)

  it('a peer holding window instances killed mid-job: the job recovers and the windows are exact', async () => {
    const job = await submit(15)
    await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, 'a checkpoint')
    const index = cluster.members().findIndex((m) => Object.entries(job.plan).some(([instance, peer]) => instance.startsWith('windows#') && peer === m.peerId))
    expect(index).toBeGreaterThanOrEqual(0)
    const restarted = waitFor(cluster.events!, (e) => e.type === 'ready' && e.index === index, 30_000, 'the peer to restart')
    process.kill(cluster.members()[index]!.pid!, 'SIGKILL')
    const report = await job.done
    await restarted
    expect(report.recoveries).toBeGreaterThanOrEqual(1)
    expect(received()).toEqual(expected)
  }, 90_000)

  it('the window operator rescaled 2 -> 3 while it runs: its windows move by key group and stay exact', async () => {
    const job = await submit(15)
    await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, 'a checkpoint')
    const rescaled = await job.rescale('windows', 3)
    expect(rescaled.changes).toEqual({ windows: { from: 2, to: 3 } })
    const report = await job.done
    expect(report.rescales).toBe(1)
    expect(received()).toEqual(expected)
  }, 90_000)
})
