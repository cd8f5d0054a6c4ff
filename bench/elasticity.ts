// Benchmark `elasticity`: a CPU-bound keyed operator (40 µs of arithmetic per record) at
// parallelism 1 and 2 on a local cluster of 2 peer processes (each instance in its own process, so
// both cores work), same run, alternating; then the pause of a rescale 1 -> 2 of a keyed operator
// holding 100,000 keys of state: from stopping the old attempt to the last instance of the new one
// having restored its keys.
// Run: npm run bench -- elasticity [records=160000] [rounds=3]
// Last line: {"bench":"elasticity","ratio":<throughput at 2 ÷ at 1>,"rescale_pause_ms":…,…}

import '../kmods/transport/polyfill.js'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { filter, firstValueFrom, take, toArray } from 'rxjs'
import { startCluster, type Cluster } from '../services/jobs/index.js'
import { memoryLogger } from '../kmods/transport/index.js'
import { BenchCheckError, humanRate, median, positiveInteger, progress, runMain } from './_harness.js'
import { keyedTotals } from '../testing/index.js'

const records = positiveInteger('records', process.argv[2]) ?? 160_000
const rounds = positiveInteger('rounds', process.argv[3]) ?? 3
const WORK_US = 40
const STATE_KEYS = 100_000
const STATE_RECORDS = 4_000_000
const module = keyedTotals.MODULE
const { received, reference, results } = keyedTotals

function check(what: string, expected: string[]): void {
  const got = received()
  if (got.length !== expected.length || got.some((line, i) => line !== expected[i]))
    throw new BenchCheckError(`${what}: the output differs from the reference (${got.length} totals, expected ${expected.length})`)
}

/** Records per second of the CPU-bound job with `counters` instances of its keyed operator. */
async function throughput(cluster: Cluster, counters: number, expected: string[]): Promise<number> {
  results.length = 0
  const started = performance.now()
  const job = await cluster.submit(module, { args: [String(records), 'off', String(counters), String(WORK_US)] })
  await job.done
  const seconds = (performance.now() - started) / 1000
  check(`parallelism ${counters}`, expected)
  return records / seconds
}

/** Rescales a keyed operator holding STATE_KEYS keys from 1 to 2 instances; the pause it took. */
async function rescalePause(cluster: Cluster): Promise<{ pauseMs: number; keys: number }> {
  results.length = 0
  const job = await cluster.submit(module, { args: [String(STATE_RECORDS), '1000', '1', '0', '-', String(STATE_KEYS)] })
  // A first checkpoint (a second in): by then the sources have gone past nearly every key.
  await firstValueFrom(
    job.events.pipe(
      filter((e) => e.type === 'layer' && e.kind === 'checkpoint'),
      take(1),
      toArray(),
    ),
  )
  const report = await job.rescale('totals', 2)
  await job.done
  check('rescale run', reference(STATE_RECORDS, STATE_KEYS))
  return { pauseMs: report.pauseMs, keys: STATE_KEYS }
}

/**
 * What this machine gives two processes at once: the same arithmetic in one process alone, then
 * in two at the same time (2 × work ÷ the time two take). A shared VM often gives less than 2.
 */
async function machineSpeedup(): Promise<number> {
  const code = 'let x = 1; for (let i = 0; i < 3e8; i++) x = Math.imul(x ^ (x >>> 13), 0x5bd1e995) + i; if (x === 42) console.log(x)'
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', code], { stdio: 'ignore' })
      child.once('error', reject)
      child.once('exit', (status) => (status === 0 ? resolve() : reject(new BenchCheckError(`the arithmetic process exited with ${status}`))))
    })
  let started = performance.now()
  await one()
  const alone = performance.now() - started
  started = performance.now()
  await Promise.all([one(), one()])
  const together = performance.now() - started
  return (2 * alone) / together
}

runMain('elasticity', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-bench-elasticity-'))
  progress('starting 2 peers…')
  const cluster = await startCluster({ peers: 2, workdir: dir, logger: memoryLogger() })
  try {
    const expected = reference(records)
    progress(`warm-up (${records} records, ${WORK_US} µs each)…`)
    await throughput(cluster, 1, expected)
    const one: number[] = []
    const two: number[] = []
    for (let round = 1; round <= rounds; round++) {
      for (const counters of round % 2 === 1 ? [1, 2] : [2, 1]) {
        const rps = await throughput(cluster, counters, expected)
        ;(counters === 1 ? one : two).push(rps)
        progress(`round ${round}/${rounds} parallelism ${counters}: ${humanRate(rps)} records/s`)
      }
    }
    progress('what two processes get on this machine…')
    const machine = await machineSpeedup()
    progress(`two processes of arithmetic run ${machine.toFixed(2)}x as fast as one`)
    progress(`rescale 1 -> 2 with ${STATE_KEYS} keys of state…`)
    const pause = await rescalePause(cluster)
    progress(`rescale pause: ${pause.pauseMs} ms`)
    console.log(
      JSON.stringify({
        bench: 'elasticity',
        ratio: Number((median(two) / median(one)).toFixed(3)),
        rescale_pause_ms: pause.pauseMs,
        machine_two_process_speedup: Number(machine.toFixed(3)),
        records_per_s_at_1: Math.round(median(one)),
        records_per_s_at_2: Math.round(median(two)),
        work_us_per_record: WORK_US,
        state_keys: pause.keys,
        isolation: 'process (one peer process per instance)',
        records,
        rounds,
      }),
    )
  } finally {
    await cluster.stop()
    rmSync(dir, { recursive: true, force: true })
  }
})
