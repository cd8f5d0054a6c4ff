// Benchmark `durable`: durable requests (services/durable) to a no-op handler on a 3-peer cluster,
// against the raw put-and-commit rate of the same KV store (its Raft log: one shard, 3 replicas)
// in the same run. Both are driven from this process by `--clients` concurrent loops for
// `--seconds` each, in alternating rounds; the worker (`concurrency` = clients) runs here too.
//
//   npm run bench -- durable [--seconds N] [--rounds N] [--clients N]
//
// A durable call journals its request (create), is claimed (the record moved to running under the
// worker's lease) and journals its outcome: three writes of the log, against one for a raw put.
// The last line of stdout is one JSON object:
// `{"bench":"durable","ratio":<calls/s ÷ commits/s>,"calls_s":…,"commits_s":…,"p50_ms":…,"p99_ms":…}`.

import '../kmods/transport/polyfill.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { memoryLogger } from '../kmods/transport/index.js'
import { durable } from '../services/durable/index.js'
import { startCluster } from '../services/jobs/index.js'
import { startKv } from '../services/kv/index.js'
import { BenchCheckError, median, positiveInteger, progress, runMain } from './_harness.js'

const { values } = parseArgs({ options: { seconds: { type: 'string' }, rounds: { type: 'string' }, clients: { type: 'string' } } })
const seconds = positiveInteger('--seconds', values.seconds) ?? 5
const rounds = positiveInteger('--rounds', values.rounds) ?? 3
const clients = positiveInteger('--clients', values.clients) ?? 64

/** Runs `op` in `clients` loops for `seconds`; completed ops per second, and their latencies. */
async function drive(op: (loop: number, i: number) => Promise<unknown>): Promise<{ perSecond: number; latencies: number[] }> {
  const until = performance.now() + seconds * 1000
  const latencies: number[] = []
  let done = 0
  await Promise.all(
    Array.from({ length: clients }, async (_, loop) => {
      for (let i = 0; performance.now() < until; i++) {
        const start = performance.now()
        await op(loop, i)
        latencies.push(performance.now() - start)
        done++
      }
    }),
  )
  return { perSecond: done / seconds, latencies }
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0
}

runMain('durable', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-bench-durable-'))
  progress('starting 3 peers and the KV store (1 shard, 3 replicas)…')
  const cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger() })
  const kv = await startKv(cluster, { shards: 1, replicas: 3, readyTimeoutMs: 30_000 })
  const d = durable(kv)
  const worker = d.serve('noop', () => null, { concurrency: clients, sweepMs: 1000 })
  try {
    const commits: number[] = []
    const calls: number[] = []
    let callLatencies: number[] = []
    let run = 0
    for (let r = 1; r <= rounds; r++) {
      // Alternate which goes first, so drift on a noisy machine favours neither.
      const order = r % 2 === 1 ? (['raw', 'durable'] as const) : (['durable', 'raw'] as const)
      for (const which of order) {
        run++
        if (which === 'raw') {
          const result = await drive((loop, i) => kv.put(`bench/raw/${run}/${loop}/${i}`, 'x'))
          commits.push(result.perSecond)
          progress(`round ${r}/${rounds} raw puts: ${Math.round(result.perSecond)} commits/s`)
        } else {
          const result = await drive((loop, i) => d.call('noop', i, { idempotencyKey: `r${run}-${loop}-${i}` }))
          calls.push(result.perSecond)
          callLatencies = callLatencies.concat(result.latencies)
          progress(`round ${r}/${rounds} durable calls: ${Math.round(result.perSecond)} calls/s`)
        }
      }
    }
    if (calls.some((c) => c === 0)) throw new BenchCheckError('a round completed no durable call')
    const sorted = callLatencies.sort((a, b) => a - b)
    const callsS = median(calls)
    const commitsS = median(commits)
    console.log(
      JSON.stringify({
        bench: 'durable',
        ratio: Number((callsS / commitsS).toFixed(3)),
        calls_s: Math.round(callsS),
        commits_s: Math.round(commitsS),
        p50_ms: Number(quantile(sorted, 0.5).toFixed(1)),
        p99_ms: Number(quantile(sorted, 0.99).toFixed(1)),
        clients,
        seconds,
        rounds,
        worker: worker.stats(),
      }),
    )
  } finally {
    await worker.stop()
    await kv.stop()
    await cluster.stop()
    rmSync(dir, { recursive: true, force: true })
  }
})
