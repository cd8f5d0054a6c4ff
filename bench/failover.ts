// Benchmark `failover`: how long a checkpointed job on a real local cluster (4 peers and the
// submitter) stalls when a peer fails, for the two ways a peer fails. SIGKILL: the process is gone
// and its TCP connections reset at once. SIGSTOP (left stopped): a hung process, VM or host, or a
// pulled cable, whose connections stay open; only failure detection (membership declaring the
// peer dead) can tell. Each round submits the same job, waits for a completed checkpoint, fails a
// worker and measures the seconds from the signal to the first output of the recovered attempt;
// every run's output is checked against the fault-free reference. Rounds alternate the signal.
// Run: npm run bench -- failover [rounds=3] [records=4000000]
// Last line: {"bench":"failover","ratio":<SIGKILL recovery s ÷ SIGSTOP recovery s>,"stop_recovery_s":…,"kill_recovery_s":…,…}
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
import { startCluster, type Cluster } from '../services/jobs/index.js'
import { keyedTotals } from '../testing/index.js'
import { memoryLogger } from '../kmods/transport/index.js'
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
