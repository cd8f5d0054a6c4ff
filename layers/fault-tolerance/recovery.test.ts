// End to end: a keyed aggregation under checkpoints on a real 4-peer local cluster (plus the
// submitting peer), where peers are killed with SIGKILL; every output must equal a fault-free run's.
import { existsSync, readdirSync, readlinkSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFailed } from 'vitest'
import { seededRandom } from 'lamina/layers'
import { memoryLogger } from 'lamina/transport'
import { waitFor, keyedTotals } from 'lamina/testing'
import { filter, firstValueFrom } from 'rxjs'
import { openStore } from '../../kmods/store/index.js'
import { startCluster, type Cluster, type ClusterJobEvent, type SubmittedJob } from 'lamina/cluster'

const fixture = keyedTotals.MODULE
const { arrivals, received, reference, results } = keyedTotals
const RECORDS = 400_000
const PEERS = 4
const expected = reference(RECORDS)
/** A longer job for the tests that wait for checkpoints and recoveries before killing. */
const LONG = 2_000_000

describe('exactly-once recovery on a 4-peer cluster', () => {
  let dir: string
  let cluster: Cluster
  let cleanMs = 0

  /** Until every child peer is up and alive in the submitter's membership again. */
  async function allAlive(): Promise<void> {
    const deadline = Date.now() + 30_000
    for (;;) {
      const ids = cluster.members().map((m) => m.peerId)
      const alive = new Set(
        cluster.self.membership
          .members()
          .filter((m) => m.status === 'alive')
          .map((m) => m.peerId),
      )
      if (ids.length === PEERS && cluster.members().every((m) => m.pid !== undefined) && ids.every((id) => alive.has(id))) return
      if (Date.now() > deadline) throw new Error(`peers not all alive again within 30 s: ${ids.filter((id) => !alive.has(id)).join(', ')}`)
      await waitFor(cluster.self.membership.events, () => true, 5_000, 'a membership event').catch(() => undefined)
    }
  }

  /** Kills child `index` with SIGKILL; resolves once the nursery has restarted it and it is alive. */
  function kill(index: number): { peer: string; restarted: Promise<void> } {
    const member = cluster.members()[index]!
    const ready = waitFor(cluster.events!, (e) => e.type === 'ready' && e.index === index, 30_000, `peer ${index} to restart`)
    process.kill(member.pid!, 'SIGKILL')
    return { peer: member.peerId, restarted: ready.then(() => allAlive()) }
  }

  /** Descriptors child `index` has open on its checkpoints.db (Linux: /proc/PID/fd), or undefined when it cannot be told. */
  function storeDescriptors(index: number): number | undefined {
    const pid = cluster.members()[index]?.pid
    if (pid === undefined || !existsSync(`/proc/${pid}/fd`)) return undefined
    const file = join(dir, `peer-${index}`, 'checkpoints.db')
    let n = 0
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === file) n++
      } catch {
        // Closed since it was listed.
      }
    }
    return n
  }

  /** What the nursery and the jobs did, printed when a test fails (the cluster's side of the story). */
  let story: string[] = []
  const tell = (line: string): void => void story.push(`${new Date().toISOString().slice(11, 23)} ${line}`)

  /** The lines received but not expected, and expected but not received (a readable failure). */
  function compare(got: readonly string[], want: readonly string[]): { extra: string[]; missing: string[] } {
    const counts = new Map<string, number>()
    for (const line of want) counts.set(line, (counts.get(line) ?? 0) + 1)
    const extra: string[] = []
    for (const line of got) {
      const n = counts.get(line) ?? 0
      if (n === 0) extra.push(line)
      else counts.set(line, n - 1)
    }
    const missing = [...counts].flatMap(([line, n]) => Array.from({ length: n }, () => line))
    return { extra, missing }
  }

  function submit(records = RECORDS): Promise<SubmittedJob> {
    results.length = 0
    arrivals.length = 0
    return cluster.submit(fixture, { args: [String(records)] })
  }

  function recoveries(job: SubmittedJob): ClusterJobEvent[] {
    const seen: ClusterJobEvent[] = []
    job.events.subscribe((e) => {
      if (e.type === 'recovering' || (e.type === 'layer' && e.layer === 'checkpoints')) seen.push(e)
      if (e.type === 'recovering') tell(`job ${job.id}: recovering (attempt ${e.attempt}, lost ${e.lost.join(', ')}): ${e.reason}`)
      else if (e.type === 'layer' && e.kind !== 'checkpoint-start') tell(`job ${job.id}: ${e.layer} ${e.kind}: ${e.message}`)
    })
    return seen
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-recovery-'))
    cluster = await startCluster({ peers: PEERS, workdir: dir, logger: memoryLogger(), policy: { kind: 'restart', max: 100, withinMs: 600_000 } })
    cluster.events!.subscribe((e) =>
      tell(`nursery: ${JSON.stringify(e.type === 'failed' ? { type: e.type, error: e.error.message } : e.type === 'ready' ? { type: e.type, index: e.index, pid: e.pid } : e)}`),
    )
  }, 60_000)

  // Every test starts on a whole cluster (a failed test before may have left a peer restarting),
  // and a failing one prints what the cluster did.
  beforeEach(async () => {
    story = []
    onTestFailed(() => console.error(`what the cluster did:\n${story.join('\n')}`))
    await allAlive()
  }, 40_000)

  afterAll(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('a fault-free run equals the reference, with checkpoints completing; once it succeeded only its savepoint is kept', async () => {
    const started = Date.now()
    const job = await submit()
    const seen = recoveries(job)
    // A savepoint once a checkpoint completed: it must outlive the job, with its copies.
    const savepoint = firstValueFrom(job.events.pipe(filter((e) => e.type === 'layer' && e.kind === 'checkpoint'))).then(() => job.savepoint())
    const report = await job.done
    cleanMs = Date.now() - started
    expect(compare(received(), expected)).toEqual({ extra: [], missing: [] })
    expect(report.attempts).toBe(1)
    expect(seen.filter((e) => e.type === 'layer' && e.kind === 'checkpoint').length).toBeGreaterThan(0)
    const kept = await savepoint
    expect(kept.lineage).toBe(job.id)
    expect(seen.some((e) => e.type === 'layer' && e.kind === 'checkpoints-collected')).toBe(true)
    // The submitter keeps the savepoint's record; every snapshot it names is in the store of its own
    // peer and of at least one other. Nothing else of the job is left on any peer.
    const stores = [join(dir, 'launcher'), ...Array.from({ length: PEERS }, (_, i) => join(dir, `peer-${i}`))].map((d) => openStore(join(d, 'checkpoints.db'), { readonly: true }))
    try {
      const record = stores[0]!.get('checkpoint.savepoint', `${job.id}/${String(kept.checkpoint).padStart(12, '0')}`)
      expect(record).toBeDefined()
      const completed = JSON.parse(String(record)) as { id: number; snapshots: Record<string, { peers: string[]; final: boolean }> }
      expect(Object.keys(completed.snapshots).sort()).toEqual(['events#0', 'events#1', 'out#0', 'totals#0', 'totals#1', 'totals#2', 'totals#3'])
      for (const [key, where] of Object.entries(completed.snapshots)) {
        expect(where.peers.length, key).toBeGreaterThanOrEqual(2)
        const id = where.final ? 'final' : String(completed.id).padStart(12, '0')
        const holders = stores.filter((s) => s.get('checkpoint.snapshot', `${job.id}/${id}/${key}`) !== undefined)
        expect(holders.length, `copies of ${key}`).toBeGreaterThanOrEqual(2)
      }
      const keptIds = new Set([String(kept.checkpoint).padStart(12, '0'), 'final'])
      for (const store of stores) {
        expect(store.keys('checkpoint.snapshot', `${job.id}/`).filter((key) => !keptIds.has(key.split('/')[1]!))).toEqual([])
        expect(store.keys('checkpoint.completed', `${job.id}/`)).toEqual([])
      }
    } finally {
      for (const store of stores) store.close()
    }
  }, 60_000)

  it('20 seeded runs: SIGKILL a random non-submitting peer at a random moment; every output equals the reference', async () => {
    const summary: string[] = []
    for (let seed = 1; seed <= 20; seed++) {
      const random = seededRandom(seed)
      const victim = Math.floor(random() * PEERS)
      // A moment within the first 60% of a fault-free run's time, so nearly every kill lands mid-job.
      const delay = Math.floor(50 + random() * Math.max(200, cleanMs * 0.6))
      const job = await submit()
      tell(`seed ${seed}: job ${job.id}, peer ${victim} to be killed at ${delay} ms`)
      const seen = recoveries(job)
      const moment = new Promise<ReturnType<typeof kill>>((resolve) => setTimeout(() => resolve(kill(victim)), delay))
      try {
        const report = await job.done
        expect(compare(received(), expected), `seed ${seed}: victim ${victim} killed at ${delay} ms`).toEqual({ extra: [], missing: [] })
        summary.push(`seed ${seed}: peer ${victim} at ${delay} ms -> ${report.attempts} attempt(s), ${seen.filter((e) => e.type === 'recovering').length} recovery`)
      } finally {
        // Pass or fail, the next run starts with the victim back.
        await (await moment).restarted
      }
    }
    console.log(summary.join('\n'))
    // Most kills must have hit a running job (the rest came after it had finished).
    expect(summary.filter((line) => line.includes('1 recovery')).length).toBeGreaterThanOrEqual(10)
  }, 900_000)

  /** Runs `body` on a job; whatever happens, the job ends and every peer killed is back before the next test. */
  async function withJob(job: SubmittedJob, body: (killed: ReturnType<typeof kill>[]) => Promise<void>): Promise<void> {
    const killed: ReturnType<typeof kill>[] = []
    try {
      await body(killed)
    } finally {
      job.abort('the test is over')
      await job.done.catch(() => undefined)
      await Promise.all(killed.map((k) => k.restarted))
    }
  }

  it('two peers killed one after the other: the job recovers twice and the output equals the reference', async () => {
    const job = await submit(LONG)
    const seen = recoveries(job)
    await withJob(job, async (killed) => {
      // The first kill once a checkpoint has completed; the second once the job recovered from it.
      await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, 'a first checkpoint')
      killed.push(kill(1))
      await waitFor(job.events, (e) => e.type === 'recovering', 30_000, 'the first recovery')
      await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, 'a checkpoint after the first recovery')
      killed.push(kill(2))
      const report = await job.done
      expect(compare(received(), reference(LONG))).toEqual({ extra: [], missing: [] })
      expect(report.attempts).toBe(3)
      const lost = seen.flatMap((e) => (e.type === 'recovering' ? [e.lost] : []))
      expect(lost[0]).toContain(killed[0]!.peer)
      expect(lost[1]).toContain(killed[1]!.peer)
      // Peers 0 and 3 ran all three attempts (and the jobs of the tests before): each still has
      // at most one connection to its checkpoint store, not one more per attempt.
      for (const index of [0, 3]) {
        const open = storeDescriptors(index)
        if (open !== undefined) expect(open, `descriptors of peer ${index} on its checkpoints.db`).toBeLessThanOrEqual(1)
      }
    })
  }, 120_000)

  it('a peer frozen by SIGSTOP and left stopped: membership declares it dead, the job recovers without it and the output equals the reference', async () => {
    const job = await submit(LONG)
    const seen = recoveries(job)
    const victim = cluster.members()[2]!
    let frozen = false
    try {
      await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, 'a first checkpoint')
      // A frozen process keeps its TCP connections open: only failure detection can tell.
      process.kill(victim.pid!, 'SIGSTOP')
      frozen = true
      const stoppedAt = Date.now()
      const recovering = await waitFor(job.events, (e) => e.type === 'recovering', 20_000, 'a recovery after the SIGSTOP')
      const detectedMs = Date.now() - stoppedAt
      tell(`recovery began ${detectedMs} ms after the SIGSTOP`)
      const report = await job.done
      expect(compare(received(), reference(LONG))).toEqual({ extra: [], missing: [] })
      expect(report.attempts).toBe(2)
      expect(recovering.type === 'recovering' && recovering.lost).toContain(victim.peerId)
      expect(recovering.type === 'recovering' && recovering.reason).toMatch(/declared dead by membership/)
      expect(seen.filter((e) => e.type === 'recovering')).toHaveLength(1)
      // Membership's default: dead after 2 s without a heartbeat; the rest is the abort.
      expect(detectedMs).toBeLessThan(10_000)
    } finally {
      job.abort('the test is over')
      await job.done.catch(() => undefined)
      if (frozen) {
        // The nursery restarts it as a new generation, which the next test's cluster waits for.
        const restarted = waitFor(cluster.events!, (e) => e.type === 'ready' && e.index === 2, 30_000, 'peer 2 to restart')
        process.kill(victim.pid!, 'SIGKILL')
        await restarted
        await allAlive()
      }
    }
  }, 120_000)

  it('a peer killed while a checkpoint is in flight: that checkpoint never completes, recovery uses the one before', async () => {
    const job = await submit(LONG)
    const seen = recoveries(job)
    await withJob(job, async (killed) => {
      await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, 'a first checkpoint')
      const started = await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint-start', 30_000, 'the next checkpoint to start')
      const inflight = (started as { data?: { id: number } }).data!.id
      killed.push(kill(3))
      const report = await job.done
      expect(compare(received(), reference(LONG))).toEqual({ extra: [], missing: [] })
      expect(report.attempts).toBe(2)
      const completed = seen.flatMap((e) => (e.type === 'layer' && e.kind === 'checkpoint' ? [(e.data as { id: number }).id] : []))
      expect(completed).not.toContain(inflight)
    })
  }, 120_000)
})
