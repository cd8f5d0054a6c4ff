// Benchmark `failover`: how long a checkpointed job on a real local cluster (4 peers and the
// submitter) stalls when a peer fails, for the two ways a peer fails. SIGKILL: the process is gone
// and its TCP connections reset at once. SIGSTOP (left stopped): a hung process, VM or host, or a
// pulled cable, whose connections stay open; only failure detection (membership declaring the
// peer dead) can tell. Each round submits the same job, waits for a completed checkpoint, fails a
// worker and measures the seconds from the signal to the first output of the recovered attempt;
// every run's output is checked against the fault-free reference. Rounds alternate the signal.
// Then, the same number of rounds without a master: a failover job (testing/failover-job.ts, into
// the transactional KV) submitted to a peer process, whose coordinating peer is SIGKILLed after its
// second recorded checkpoint; `coordinator_recovery_s` is the median of the seconds from the signal
// to the first output committed under its successor (the first key the sink writes after the
// successor claimed the job's record), each run's output checked key by key.
// Run: npm run bench -- failover [rounds=3] [records=4000000]
// Last line: {"bench":"failover","ratio":<SIGKILL recovery s ÷ SIGSTOP recovery s>,"stop_recovery_s":…,"kill_recovery_s":…,"coordinator_recovery_s":…,…}
//
// Detection time trades against false suspicion: membership declares a peer dead after
// `deadAfterMs` (2000 by default) without a heartbeat (every `heartbeatMs`, 200 by default). A
// shorter deadAfterMs recovers sooner from a frozen peer, and also declares dead a peer that is
// merely slow (a long GC pause, a saturated host); see docs/cluster.md, "Failure detection".

import '../kmods/transport/polyfill.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { filter, firstValueFrom } from 'rxjs'
import { appendFile } from 'node:fs/promises'
import { AdminClient, packProgram, type PackedProgram, startCluster, type Cluster } from '../services/jobs/index.js'
import { jobRecordKey, readJobRecord } from '../services/jobs/failover.js'
import { kvLayoutArg, startKv, type Kv } from '../services/kv/index.js'
import { failoverJob, keyedTotals } from '../testing/index.js'
import { loadOrCreateIdentity, memoryLogger, readPskFile } from '../kmods/transport/index.js'
import { BenchCheckError, median, positiveInteger, progress, runMain } from './_harness.js'

const rounds = positiveInteger('rounds', process.argv[2]) ?? 3
const records = positiveInteger('records', process.argv[3]) ?? 4_000_000
const PEERS = 4
const INTERVAL_MS = 500
const { arrivals, received, reference, results } = keyedTotals

type Failure = 'SIGKILL' | 'SIGSTOP'

/** Until every child peer is up (restarted ones too) and alive in the submitter's membership. */
async function allAlive(cluster: Cluster, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  for (;;) {
    const alive = new Set(
      cluster.self.membership
        .members()
        .filter((m) => m.status === 'alive')
        .map((m) => m.peerId),
    )
    const members = cluster.members()
    if (members.length === PEERS && members.every((m) => m.pid !== undefined && alive.has(m.peerId))) return
    if (Date.now() > deadline) throw new BenchCheckError(`the cluster did not heal within ${ms} ms`)
    // The next membership change, or a second: whichever comes first (a restarting peer is not an event yet).
    await Promise.race([firstValueFrom(cluster.self.membership.events, { defaultValue: undefined }), new Promise((resolve) => setTimeout(resolve, 1000))])
  }
}

/** One round: fails worker 1 with `signal` after a checkpoint; seconds from the signal to the recovery and to the first new output. */
async function round(cluster: Cluster, signal: Failure, expected: readonly string[]): Promise<{ recoveryS: number; detectS: number }> {
  results.length = 0
  arrivals.length = 0
  const job = await cluster.submit(keyedTotals.MODULE, { args: [String(records), String(INTERVAL_MS)] })
  const recovering = firstValueFrom(job.events.pipe(filter((e) => e.type === 'recovering')))
  await firstValueFrom(job.events.pipe(filter((e) => e.type === 'layer' && e.kind === 'checkpoint')))
  const index = 1
  const victim = cluster.members()[index]!
  const restarted = firstValueFrom(cluster.events!.pipe(filter((e) => e.type === 'ready' && e.index === index)))
  const failedAt = Date.now()
  process.kill(victim.pid!, signal)
  try {
    await recovering
    const recoveredAt = Date.now()
    const report = await job.done
    const got = received()
    if (got.length !== expected.length || got.some((line, i) => line !== expected[i])) {
      throw new BenchCheckError(`${signal} run: the output differs from the reference (${got.length} totals, expected ${expected.length})`)
    }
    if (report.attempts !== 2) throw new BenchCheckError(`${signal} run: ${report.attempts} attempts, expected 2`)
    const firstAfter = arrivals.find((t) => t >= recoveredAt)
    if (firstAfter === undefined) throw new BenchCheckError(`${signal} run: the recovered job emitted no output`)
    return { recoveryS: (firstAfter - failedAt) / 1000, detectS: (recoveredAt - failedAt) / 1000 }
  } finally {
    // A stopped peer is killed after the round (the nursery restarts it as a new generation).
    if (signal === 'SIGSTOP') process.kill(victim.pid!, 'SIGKILL')
    await restarted
    await allAlive(cluster)
  }
}

/** Resolves with the time of the first put under `prefix` for which `after()` is true (a KV watch); rejects after `ms`. */
function firstPut(kv: Kv, prefix: string, after: () => boolean, ms: number): { at: Promise<number>; cancel(): void } {
  let cancel = (): void => undefined
  const at = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchCheckError(`no output under ${prefix} within ${ms} ms`)), ms)
    const subscription = kv.watch(prefix).subscribe({
      next: (event) => {
        if (event.type !== 'put' || !after()) return
        clearTimeout(timer)
        subscription.unsubscribe()
        resolve(Date.now())
      },
      error: reject,
    })
    cancel = () => {
      clearTimeout(timer)
      subscription.unsubscribe()
    }
  })
  return { at, cancel }
}

/** One round without a master: kills the peer coordinating a failover job; seconds from the signal to the first output under its successor. */
async function coordinatorRound(cluster: Cluster, kv: Kv, admin: AdminClient, code: PackedProgram, r: number): Promise<number> {
  await allAlive(cluster)
  const index = r % PEERS
  const victim = cluster.members()[index]!
  const listening = victim.multiaddrs[0]!.split('/p2p/')[0]!
  // A restarted peer listens elsewhere: the admin client must know its new address before submitting to it.
  for (const deadline = Date.now() + 60_000; ; ) {
    const rows = await admin.members()
    if (rows.some((m) => m.peerId === victim.peerId && m.status === 'alive' && m.multiaddrs.some((a) => a.startsWith(listening)))) break
    if (Date.now() > deadline) throw new BenchCheckError(`the members did not learn ${victim.peerId} at ${listening}`)
    await Promise.race([firstValueFrom(cluster.self.membership.events, { defaultValue: undefined }), new Promise((resolve) => setTimeout(resolve, 1000))])
  }
  const prefix = `bench-${r}-${Date.now().toString(36)}`
  const summary = await admin.submit(code, { on: victim.peerId, failover: true, args: [String(COORDINATOR_RECORDS), kvLayoutArg(kv), prefix] })
  const lineage = summary.id
  // After its second recorded checkpoint: the job is well under way.
  const checkpoints = new Set<number>()
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new BenchCheckError(`job ${lineage} recorded no 2 checkpoints within 60 s`)), 60_000)
    const subscription = kv.watch(jobRecordKey(lineage)).subscribe({
      next: (event) => {
        const id = (JSON.parse(event.value ?? '{}') as { checkpoint?: { id?: number } | null }).checkpoint?.id
        if (id !== undefined) checkpoints.add(id)
        if (checkpoints.size < 2) return
        clearTimeout(timer)
        subscription.unsubscribe()
        resolve()
      },
      error: reject,
    })
  })
  // The successor's claim of the record is seen through a watch; the first output after it is the figure.
  let successor: string | undefined
  const claims = kv.watch(jobRecordKey(lineage)).subscribe((event) => {
    const coordinator = (JSON.parse(event.value ?? '{}') as { coordinator?: string }).coordinator
    if (coordinator !== undefined && coordinator !== victim.peerId) successor ??= coordinator
  })
  const output = firstPut(kv, `${prefix}/`, () => successor !== undefined, 60_000)
  const restarted = firstValueFrom(cluster.events!.pipe(filter((e) => e.type === 'ready' && e.index === index)))
  const killedAt = Date.now()
  process.kill(victim.pid!, 'SIGKILL')
  try {
    const firstAt = await output.at
    for (const deadline = Date.now() + 120_000; ; ) {
      const found = await readJobRecord(kv, lineage).catch(() => undefined)
      if (found !== undefined && found.record.state !== 'running') {
        if (found.record.state !== 'finished') throw new BenchCheckError(`job ${lineage} ended ${found.record.state}: ${found.record.error?.message ?? ''}`)
        break
      }
      if (Date.now() > deadline) throw new BenchCheckError(`job ${lineage} did not end within 120 s of its coordinator's death`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    const expected = failoverJob.expectedOutput(COORDINATOR_RECORDS, prefix)
    const written = await kv.scan({ prefix: `${prefix}/` })
    const wrong = written.filter((e) => expected.get(e.key) !== e.value || e.version !== 1)
    if (written.length !== expected.size || wrong.length > 0)
      throw new BenchCheckError(`job ${lineage}: ${written.length} keys written, ${expected.size} expected, ${wrong.length} wrong or written twice`)
    return (firstAt - killedAt) / 1000
  } finally {
    output.cancel()
    claims.unsubscribe()
    await restarted
  }
}

/** Records of each failover job (about 3 s of paced input). */
const COORDINATOR_RECORDS = 120_000

runMain('failover', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-bench-failover-'))
  progress(`starting ${PEERS} peers…`)
  const cluster = await startCluster({ peers: PEERS, workdir: dir, logger: memoryLogger(), policy: { kind: 'restart', max: 100, withinMs: 600_000 } })
  try {
    const expected = reference(records)
    const seconds: Record<Failure, { recovery: number[]; detect: number[] }> = { SIGKILL: { recovery: [], detect: [] }, SIGSTOP: { recovery: [], detect: [] } }
    for (let r = 1; r <= rounds; r++) {
      // Alternate the order, so drift on a noisy machine favours neither signal.
      for (const signal of r % 2 === 1 ? (['SIGSTOP', 'SIGKILL'] as const) : (['SIGKILL', 'SIGSTOP'] as const)) {
        const result = await round(cluster, signal, expected)
        seconds[signal].recovery.push(result.recoveryS)
        seconds[signal].detect.push(result.detectS)
        progress(`round ${r}/${rounds} ${signal}: recovery began after ${result.detectS.toFixed(2)} s, first new output after ${result.recoveryS.toFixed(2)} s`)
      }
    }
    // No master: the coordinating peer itself dies.
    progress('starting the KV service for failover jobs…')
    const kv = await startKv(cluster, { shards: 1, replicas: 3, readyTimeoutMs: 30_000 })
    await appendFile(join(dir, 'allowlist'), `${(await loadOrCreateIdentity(join(dir, 'admin'))).peerId}\n`)
    const admin = await AdminClient.connect({
      cluster: cluster.members().map((m) => m.multiaddrs[0]!),
      psk: await readPskFile(join(dir, 'swarm.key')),
      workdir: join(dir, 'admin'),
    })
    const coordinator: number[] = []
    try {
      const code = await packProgram(failoverJob.MODULE)
      for (let r = 1; r <= rounds; r++) {
        const s = await coordinatorRound(cluster, kv, admin, code, r)
        coordinator.push(s)
        progress(`round ${r}/${rounds} coordinator SIGKILL: first output under its successor after ${s.toFixed(2)} s`)
      }
    } finally {
      await admin.close()
      await kv.stop()
    }
    const stop = median(seconds.SIGSTOP.recovery)
    const kill = median(seconds.SIGKILL.recovery)
    console.log(
      JSON.stringify({
        bench: 'failover',
        ratio: Number((kill / stop).toFixed(3)),
        stop_recovery_s: Number(stop.toFixed(2)),
        kill_recovery_s: Number(kill.toFixed(2)),
        stop_detect_s: Number(median(seconds.SIGSTOP.detect).toFixed(2)),
        kill_detect_s: Number(median(seconds.SIGKILL.detect).toFixed(2)),
        coordinator_recovery_s: Number(median(coordinator).toFixed(2)),
        records,
        peers: PEERS,
        interval_ms: INTERVAL_MS,
        rounds,
      }),
    )
  } finally {
    await cluster.stop()
    rmSync(dir, { recursive: true, force: true })
  }
})
