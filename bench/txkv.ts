// Benchmark `txkv`: Lamina's transactions (services/txkv) against etcd 3.4's txn, in one run.
//
//   npm run bench -- txkv [--seconds N] [--warmup-ms N] [--accounts N] [--seed N]
//
// The workload is a bank transfer: read two accounts, then write both (one debited, one
// credited). Lamina runs on 3 peers (`startCluster`) with 2 shards of 3 replicas (`startTxKv`),
// and every transfer's two accounts are on different shards, so each is a distributed
// transaction (two prepares, a commit point, two resolves). etcd runs 3 members on loopback; a
// transfer there reads both keys (one linearizable range read each) and commits one `txn` that
// compares both keys' mod revisions with what it read and puts both: etcd's compare-and-swap on
// two keys in one request. A txn whose compare failed is an abort and is retried, as Lamina's
// transact retries a conflict. Both fsync every commit. 1 and 64 concurrent clients, from this
// process: txn/s counts transfers committed inside the measured window; latency is per committed
// transfer (retries included); the abort rate is aborted attempts ÷ all attempts. After each cell
// the accounts' total must be what it was (the run fails otherwise).
//
// The last line of stdout is one JSON object: `ratio` is Lamina txn/s ÷ etcd txn/s at 64 clients
// (`ratio_1` at 1 client), `abort_rate` Lamina's at 64 clients, `p99_ms` Lamina's p99 at 64
// clients, and every cell's figures.

import '../kmods/transport/polyfill.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Etcd3 } from 'etcd3'
import { memoryLogger } from '../kmods/transport/index.js'
import { startCluster, type Cluster } from '../services/jobs/index.js'
import { startTxKv, type TxKvStore } from '../services/txkv/index.js'
import { etcdVersion, killEtcd, quantile, startEtcd } from './_etcd.js'
import { BenchCheckError, BenchUsageError, positiveInteger, progress, runMain, seededRandom } from './_harness.js'

const CLIENTS = [1, 64] as const
const BALANCE = 1_000_000
const USAGE = 'usage: txkv [--seconds N] [--warmup-ms N] [--accounts N] [--seed N]'

type System = 'etcd' | 'lamina'

/** One system's transfer and total: the only code that differs between the two. */
interface Target {
  /** Moves `amount` from `from` to `to`, atomically; resolves once committed, with the attempts it took. */
  transfer(from: string, to: string, amount: number): Promise<number>
  /** Every account's balance summed, read consistently. */
  total(accounts: readonly string[]): Promise<number>
  seed(accounts: readonly string[]): Promise<void>
}

interface Cell {
  readonly system: System
  readonly clients: number
  readonly txnPerS: number
  readonly abortRate: number
  readonly p50Ms: number
  readonly p99Ms: number
}

interface Options {
  readonly seconds: number
  readonly warmupMs: number
  readonly accounts: number
  readonly seed: number
}

/** Runs `clients` transfer loops for the warm-up, then measures `seconds`. */
async function runCell(target: Target, system: System, clients: number, sides: readonly [readonly string[], readonly string[]], options: Options): Promise<Cell> {
  let stop = false
  let failure: unknown
  const latencies: number[] = []
  let attempts = 0
  let committed = 0
  const start = performance.now()
  const from = start + options.warmupMs
  const to = from + options.seconds * 1000
  const loop = async (index: number): Promise<void> => {
    const random = seededRandom(options.seed * 1000 + index)
    while (!stop) {
      const began = performance.now()
      if (began >= to) break
      // One account from each side (shard), in a random direction.
      const a = sides[0][Math.floor(random() * sides[0].length)]!
      const b = sides[1][Math.floor(random() * sides[1].length)]!
      const [debit, credit] = random() < 0.5 ? [a, b] : [b, a]
      const took = await target.transfer(debit, credit, 1 + Math.floor(random() * 100))
      const ended = performance.now()
      if (ended >= from && ended < to) {
        latencies.push(ended - began)
        attempts += took
        committed++
      }
    }
  }
  await Promise.all(
    Array.from({ length: clients }, (_, i) =>
      loop(i).catch((error: unknown) => {
        failure ??= error
        stop = true
      }),
    ),
  )
  if (failure !== undefined) throw failure
  const sorted = Float64Array.from(latencies).sort()
  return {
    system,
    clients,
    txnPerS: committed / options.seconds,
    abortRate: attempts === 0 ? 0 : (attempts - committed) / attempts,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
  }
}

function laminaTarget(db: TxKvStore, attemptsOf: Map<string, number>): Target {
  let transfers = 0
  return {
    transfer: async (from, to, amount) => {
      const id = `t${++transfers}`
      let tries = 0
      await db.transact(async (tx) => {
        tries++
        const [a, b] = await Promise.all([tx.get(from), tx.get(to)])
        tx.put(from, String(Number(a) - amount))
        tx.put(to, String(Number(b) + amount))
      })
      attemptsOf.delete(id)
      return tries
    },
    total: (accounts) => db.transact(async (tx) => (await Promise.all(accounts.map((a) => tx.get(a)))).reduce((s, v) => s + Number(v), 0)),
    seed: async (accounts) => {
      for (let i = 0; i < accounts.length; i += 200)
        await db.transact(async (tx) => {
          for (const a of accounts.slice(i, i + 200)) tx.put(a, String(BALANCE))
        })
    },
  }
}

function etcdTarget(client: Etcd3): Target {
  return {
    transfer: async (from, to, amount) => {
      for (let tries = 1; ; tries++) {
        const [a, b] = await Promise.all([client.get(from).exec(), client.get(to).exec()])
        const ka = a.kvs[0]!
        const kb = b.kvs[0]!
        const result = await client
          .if(from, 'Mod', '==', Number(ka.mod_revision))
          .and(to, 'Mod', '==', Number(kb.mod_revision))
          .then(client.put(from).value(String(Number(ka.value.toString()) - amount)), client.put(to).value(String(Number(kb.value.toString()) + amount)))
          .commit()
        if (result.succeeded) return tries
      }
    },
    total: async (accounts) => {
      const all = await client.getAll().prefix('acct/').strings()
      return accounts.reduce((s, a) => s + Number(all[a]), 0)
    },
    seed: async (accounts) => {
      for (const a of accounts) await client.put(a).value(String(BALANCE))
    },
  }
}

/** Runs both cells on one system; checks the total after each. */
async function measure(target: Target, system: System, accounts: readonly [readonly string[], readonly string[]], options: Options, cells: Cell[]): Promise<void> {
  const all = [...accounts[0], ...accounts[1]]
  await target.seed(all)
  const expected = all.length * BALANCE
  for (const clients of CLIENTS) {
    const cell = await runCell(target, system, clients, accounts, options)
    const total = await target.total(all)
    if (total !== expected) throw new BenchCheckError(`${system}, ${clients} clients: the accounts total ${total}, not ${expected}: a transfer was lost or half-applied`)
    progress(
      `txkv: ${system.padEnd(6)} ${String(clients).padStart(2)} clients: ${Math.round(cell.txnPerS).toLocaleString('en').padStart(6)} txn/s, abort rate ${(cell.abortRate * 100).toFixed(1)}%, ` +
        `p50 ${cell.p50Ms.toFixed(2)} ms, p99 ${cell.p99Ms.toFixed(2)} ms (total ${total} kept; load ${loadavg()[0]!.toFixed(2)})`,
    )
    cells.push(cell)
  }
}

function parseOptions(argv: readonly string[]): Options {
  let values: { [name: string]: string | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: { seconds: { type: 'string' }, 'warmup-ms': { type: 'string' }, accounts: { type: 'string' }, seed: { type: 'string' } },
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`)
  }
  return {
    seconds: positiveInteger('seconds', values['seconds']) ?? 5,
    warmupMs: positiveInteger('warmup-ms', values['warmup-ms']) ?? 1000,
    accounts: positiveInteger('accounts', values['accounts']) ?? 256,
    seed: positiveInteger('seed', values['seed']) ?? 1,
  }
}

/** Account names, split into the two shards of `db` (etcd uses the same names and sides). */
function sidesOf(db: TxKvStore, count: number): [string[], string[]] {
  const [left, right] = db.kv.shards as [string, string]
  const sides: [string[], string[]] = [[], []]
  for (let i = 0; sides[0].length + sides[1].length < count; i++) {
    const name = `acct/${String(i).padStart(6, '0')}`
    const shard = db.kv.shardOf(name)
    const side = shard === left ? sides[0] : shard === right ? sides[1] : undefined
    if (side !== undefined && side.length < count / 2) side.push(name)
  }
  return sides
}

let runningCluster: Cluster | undefined

async function main(argv: readonly string[]): Promise<void> {
  const options = parseOptions(argv)
  const version = etcdVersion()
  const dir = mkdtempSync(join(tmpdir(), 'lamina-bench-txkv-'))
  const cleanUp = (): void => {
    killEtcd()
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', cleanUp)
  const onSignal = (signal: NodeJS.Signals): void => {
    killEtcd()
    void Promise.race([runningCluster?.stop(), new Promise((resolve) => setTimeout(resolve, 5000))]).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  progress(
    `txkv: transfers between ${options.accounts} accounts, Lamina (3 peers, 2 shards x 3 replicas) vs etcd ${version} (3 members); clients ${CLIENTS.join(' and ')}, ${options.warmupMs} ms warm-up + ${options.seconds} s per cell`,
  )
  const cells: Cell[] = []
  const loadBefore = loadavg()[0]!
  let sides: [string[], string[]]
  try {
    progress('txkv: starting Lamina…')
    const cluster = await startCluster({ peers: 3, workdir: join(dir, 'lamina'), logger: memoryLogger() })
    runningCluster = cluster
    try {
      const db = await startTxKv(cluster, { shards: 2, replicas: 3, retry: { attempts: 1000, budgetMs: 60_000 } })
      sides = sidesOf(db, options.accounts)
      try {
        await measure(laminaTarget(db, new Map()), 'lamina', sides, options, cells)
      } finally {
        await Promise.race([db.stop(), new Promise((resolve) => setTimeout(resolve, 10_000).unref())])
      }
    } finally {
      await cluster.stop()
      runningCluster = undefined
    }
    progress('txkv: starting etcd…')
    const etcd = await startEtcd(3, join(dir, 'etcd'), 'lamina-bench-txkv')
    try {
      const client = new Etcd3({ hosts: [...etcd.clientUrls] })
      try {
        await measure(etcdTarget(client), 'etcd', sides, options, cells)
      } finally {
        client.close()
      }
    } finally {
      await etcd.stop()
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    cleanUp()
  }
  const cell = (system: System, clients: number): Cell => cells.find((c) => c.system === system && c.clients === clients)!
  const round = (x: number): number => Math.round(x * 1000) / 1000
  const raw: Record<string, number> = {}
  for (const c of cells) {
    raw[`${c.system}_${c.clients}c_txn_s`] = Math.round(c.txnPerS)
    raw[`${c.system}_${c.clients}c_abort_rate`] = round(c.abortRate)
    raw[`${c.system}_${c.clients}c_p50_ms`] = round(c.p50Ms)
    raw[`${c.system}_${c.clients}c_p99_ms`] = round(c.p99Ms)
  }
  const result = {
    bench: 'txkv',
    ratio: round(cell('lamina', 64).txnPerS / cell('etcd', 64).txnPerS),
    ratio_1: round(cell('lamina', 1).txnPerS / cell('etcd', 1).txnPerS),
    abort_rate: round(cell('lamina', 64).abortRate),
    p99_ms: round(cell('lamina', 64).p99Ms),
    ...raw,
    accounts: options.accounts,
    seconds: options.seconds,
    etcd_version: version,
    node: process.version,
    loadavg_1m_start: round(loadBefore),
    loadavg_1m_end: round(loadavg()[0]!),
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

runMain('txkv', () => main(process.argv.slice(2)))
