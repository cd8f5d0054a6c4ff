// Benchmark `checkpoint`: a keyed aggregation on a real local cluster (4 peers and the submitter)
// with checkpoints every second against the same job without checkpoints, in the same run; then the
// recovery time: seconds from a peer's SIGKILL to the first output the recovered job commits.
// Run: npm run bench -- checkpoint [records=6000000] [rounds=3]
// Last line: {"bench":"checkpoint","ratio":<with ÷ without throughput>,"recovery_s":…,…}

import '../kmods/transport/polyfill.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { filter, firstValueFrom } from 'rxjs'
import { startCluster, type Cluster, type SubmittedJob } from '../services/jobs/index.js'
import { memoryLogger } from '../kmods/transport/index.js'
import { BenchCheckError, humanRate, median, positiveInteger, progress, runMain } from './_harness.js'
import { keyedTotals } from '../testing/index.js'

const records = positiveInteger('records', process.argv[2]) ?? 6_000_000
const rounds = positiveInteger('rounds', process.argv[3]) ?? 3
const PEERS = 4
const INTERVAL_MS = 1000
const module = keyedTotals.MODULE
const { arrivals, received, reference, results } = keyedTotals

let expected: string[] | undefined

function submit(cluster: Cluster, interval: number | 'off'): Promise<SubmittedJob> {
  results.length = 0
  arrivals.length = 0
  return cluster.submit(module, { args: [String(records), String(interval)] })
}

function check(what: string): void {
  expected ??= reference(records)
  const got = received()
  if (got.length !== expected.length || got.some((line, i) => line !== expected![i])) {
    throw new BenchCheckError(`${what}: the output differs from the reference (${got.length} totals, expected ${expected.length})`)
  }
}

/** One run: records per second from submission to the end of the job, and checkpoints taken. */
async function run(cluster: Cluster, interval: number | 'off'): Promise<{ rps: number; checkpoints: number }> {
  const started = performance.now()
  const job = await submit(cluster, interval)
  let checkpoints = 0
  job.events.subscribe((e) => void (e.type === 'layer' && e.kind === 'checkpoint' && checkpoints++))
  await job.done
  const seconds = (performance.now() - started) / 1000
  check(`${interval === 'off' ? 'no checkpoints' : `checkpoints every ${interval} ms`}`)
  return { rps: records / seconds, checkpoints }
}

/** Kills a worker once a checkpoint has completed; measures kill -> recovery and kill -> first new output. */
async function recovery(cluster: Cluster): Promise<{ recoveryS: number; detectS: number; attempts: number }> {
  const job = await submit(cluster, INTERVAL_MS)
  const recovering = firstValueFrom(job.events.pipe(filter((e) => e.type === 'recovering')))
  await firstValueFrom(job.events.pipe(filter((e) => e.type === 'layer' && e.kind === 'checkpoint')))
  const victim = cluster.members()[1]!
  const killedAt = Date.now()
  process.kill(victim.pid!, 'SIGKILL')
  await recovering
  const recoveredAt = Date.now()
  const report = await job.done
  check('recovery run')
  const firstAfter = arrivals.find((t) => t >= recoveredAt)
  if (firstAfter === undefined) throw new BenchCheckError('the recovered job committed no output')
  return { recoveryS: (firstAfter - killedAt) / 1000, detectS: (recoveredAt - killedAt) / 1000, attempts: report.attempts }
}

runMain('checkpoint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-bench-checkpoint-'))
  progress(`starting ${PEERS} peers…`)
  const cluster = await startCluster({ peers: PEERS, workdir: dir, logger: memoryLogger(), policy: { kind: 'restart', max: 10, withinMs: 600_000 } })
  try {
    progress(`warm-up (${records} records)…`)
    await run(cluster, 'off')
    const without: number[] = []
    const withCheckpoints: number[] = []
    let checkpoints = 0
    for (let round = 1; round <= rounds; round++) {
      // Alternate the order, so drift on a noisy machine favours neither side.
      for (const mode of round % 2 === 1 ? (['off', INTERVAL_MS] as const) : ([INTERVAL_MS, 'off'] as const)) {
        const r = await run(cluster, mode)
        if (mode === 'off') without.push(r.rps)
        else {
          withCheckpoints.push(r.rps)
          checkpoints += r.checkpoints
        }
        progress(
          `round ${round}/${rounds} ${mode === 'off' ? 'without checkpoints' : `checkpoints every ${mode} ms`}: ${humanRate(r.rps)} records/s${mode === 'off' ? '' : `, ${r.checkpoints} checkpoints`}`,
        )
      }
    }
    progress('recovery: kill a peer after the first checkpoint…')
    const rec = await recovery(cluster)
    progress(`recovery: ${rec.recoveryS.toFixed(2)} s from the kill to the first new output (${rec.detectS.toFixed(2)} s to detect and restart)`)
    const ratio = median(withCheckpoints) / median(without)
    console.log(
      JSON.stringify({
        bench: 'checkpoint',
        ratio: Number(ratio.toFixed(3)),
        recovery_s: Number(rec.recoveryS.toFixed(2)),
        detect_s: Number(rec.detectS.toFixed(2)),
        with_records_per_s: Math.round(median(withCheckpoints)),
        without_records_per_s: Math.round(median(without)),
        checkpoints_per_run: Number((checkpoints / rounds).toFixed(1)),
        interval_ms: INTERVAL_MS,
        records,
        peers: PEERS,
        rounds,
      }),
    )
  } finally {
    await cluster.stop()
    rmSync(dir, { recursive: true, force: true })
  }
})
