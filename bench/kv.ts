// Benchmark `kv`: Lamina's KV store (services/kv) against etcd 3.4 on this machine, in one run.
//
//   npm run bench -- kv [--seconds N] [--warmup-ms N] [--etcd-endpoints all|leader] [--seed N]
//
// Both systems run as real processes on loopback and both fsync every commit (etcd without
// `--unsafe-no-fsync`; Lamina's Raft log in SQLite with synchronous=FULL). Each is measured with 1
// and 3 members: etcd members started here (data dirs in a temp dir), Lamina peers started by
// `startCluster` with one shard of 1 or 3 replicas (`startKv`). One workload generator drives both
// from this process, through one client object per system: Lamina's KvClient, and the `etcd3`
// package (gRPC) for etcd. Keys are 8 bytes (1024 of them, seeded random choice), values 256 bytes;
// 1 and 128 concurrent loops; ops `put`, linearizable `get` (etcd's default, serializable=false)
// and `cas` (etcd: a txn "if value == expected then put"; every loop owns its key, so every cas
// must succeed). A cell runs for a warm-up, then `--seconds`: ops/s counts the ops completed inside
// that window, p50/p99 are of their latencies. etcd's client spreads calls over every endpoint
// (`--etcd-endpoints all`, what a user configures; followers forward to the leader); `leader`
// points it at the leader alone, as Lamina's client does.
//
// The table goes to stderr; the last line of stdout is one JSON object:
// - `ratio`: Lamina 3-replica put/s ÷ etcd 3-member put/s at 128 clients (`ratio_get`,
//   `ratio_cas` the same for get and cas; `ratio_1` for put with 1 replica and 1 member);
// - `p99_ratio`: Lamina 3-replica put p99 ÷ etcd 3-member put p99 at 128 clients;
// - `<system>_<members>m_<clients>c_<op>_{ops_s,p50_ms,p99_ms}`: every cell; `failed`: the error
//   of each cell that has no figures (they are null). A failed cell does not stop the run (the
//   other cells are still measured), but the exit code is then non-zero.
//
// On a 2-core machine the workload client shares the cores with the servers, and the etcd3
// client (grpc-js over Node's http2) costs about a core per 5,000 calls/s: etcd's figures at 128
// clients are bounded by its client. `node --cpu-prof dist/bench/kv.js` profiles this process;
// Node 20 refuses `--cpu-prof` in NODE_OPTIONS, so profiling the peers takes a preloaded
// profiler (node:inspector's Profiler, by NODE_OPTIONS=--require, which they inherit).

import '../kmods/transport/polyfill.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Etcd3 } from 'etcd3'
import { memoryLogger } from '../kmods/transport/index.js'
import { startCluster, type Cluster } from '../services/jobs/index.js'
import { startKv, type Kv } from '../services/kv/index.js'
import { type EtcdCluster, etcdVersion, killEtcd, quantile, startEtcd } from './_etcd.js'
import { BenchCheckError, BenchUsageError, collectGarbage, humanRate, positiveInteger, progress, runMain, seededRandom } from './_harness.js'

const KEYS = 1024
const KEY_BYTES = 8
const VALUE_BYTES = 256
const VALUES = 64
/** Concurrent writers that fill the key space before a system's cells. */
const SEED_WRITERS = 8
const CLIENTS = [1, 128] as const
const MEMBERS = [1, 3] as const
const OPS = ['put', 'get', 'cas'] as const
const SYSTEMS = ['etcd', 'lamina'] as const
const USAGE = 'usage: kv [--seconds N] [--warmup-ms N] [--etcd-endpoints all|leader] [--seed N]'

type Op = (typeof OPS)[number]
type System = (typeof SYSTEMS)[number]

/** The three operations of the workload, on one system: the only code that differs between the two. */
interface Target {
  put(key: string, value: string): Promise<void>
  /** A linearizable read: the value, or undefined when the key does not exist. */
  get(key: string): Promise<string | undefined>
  /** Writes `value` if the key's value is `expected`; false when the comparison failed. */
  cas(key: string, value: string, expected: string): Promise<boolean>
}

interface Cell {
  readonly system: System
  readonly members: number
  readonly clients: number
  readonly op: Op
  readonly opsPerS: number
  readonly p50Ms: number
  readonly p99Ms: number
  /** Why the cell has no figures (they are NaN then): the first error of its loops, or of starting the system. */
  readonly error?: string
}

/** The key of index `i`: exactly KEY_BYTES bytes. */
function keyOf(i: number): string {
  return `k${i.toString(16).padStart(KEY_BYTES - 1, '0')}`
}

/** VALUES distinct values of VALUE_BYTES printable bytes, from a seeded generator. */
function makeValues(seed: number): string[] {
  const random = seededRandom(seed)
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'
  return Array.from({ length: VALUES }, (_, n) => {
    let value = `${n}:`
    while (value.length < VALUE_BYTES) value += alphabet[Math.floor(random() * alphabet.length)]
    return value
  })
}

/**
 * One cell: `clients` concurrent loops of `op` for `warmupMs`, then `measureMs` whose completed
 * ops are counted and timed. Values of a cas loop chain (each one expects the last it wrote), so
 * a failed cas is a wrong answer, not contention.
 */
async function runCell(
  target: Target,
  op: Op,
  clients: number,
  warmupMs: number,
  measureMs: number,
  values: readonly string[],
  seed: number,
): Promise<{ ops: number; latencies: Float64Array }> {
  let stop = false
  let failure: unknown
  const latencies: number[] = []
  const start = performance.now()
  const from = start + warmupMs
  const to = from + measureMs
  const loop = async (index: number): Promise<void> => {
    const random = seededRandom(seed + index)
    // A cas loop owns key `index` and starts from its current value.
    const casKey = keyOf(index)
    let current = op === 'cas' ? await target.get(casKey) : undefined
    let turn = 0
    while (!stop) {
      const began = performance.now()
      if (began >= to) break
      const key = keyOf(Math.floor(random() * KEYS))
      if (op === 'put') await target.put(key, values[Math.floor(random() * VALUES)]!)
      else if (op === 'get') {
        const value = await target.get(key)
        if (value?.length !== VALUE_BYTES)
          throw new BenchCheckError(`get ${key}: expected a ${VALUE_BYTES}-byte value, got ${value === undefined ? 'no key' : `${value.length} bytes`}`)
      } else {
        const next = values[(index + ++turn) % VALUES]!
        if (current === undefined) throw new BenchCheckError(`cas ${casKey}: the key does not exist`)
        if (!(await target.cas(casKey, next, current))) throw new BenchCheckError(`cas ${casKey}: the comparison failed, though only this loop writes the key`)
        current = next
      }
      const ended = performance.now()
      if (ended >= from && ended < to) latencies.push(ended - began)
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
  return { ops: latencies.length, latencies: Float64Array.from(latencies).sort() }
}

/**
 * Writes every key once, so gets find them and cas loops have a value to expect. A few writers at
 * a time, not 128: a system that buckles under 128 concurrent writers still gets its reads and
 * its 1-client cells measured (its 128-client put cell then fails on its own).
 */
async function seedKeys(target: Target, values: readonly string[]): Promise<void> {
  const next = { i: 0 }
  await Promise.all(
    Array.from({ length: SEED_WRITERS }, async () => {
      for (let i = next.i++; i < KEYS; i = next.i++) await target.put(keyOf(i), values[i % VALUES]!)
    }),
  )
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error)
}

function cellName(system: System, members: number, clients: number, op: Op): string {
  return `${system}_${members}m_${clients}c_${op}`
}

/** Records a cell that has no figures, and says why on stderr. */
function failCell(cells: Cell[], system: System, members: number, clients: number, op: Op, error: string): void {
  cells.push({ system, members, clients, op, opsPerS: Number.NaN, p50Ms: Number.NaN, p99Ms: Number.NaN, error })
  progress(`kv: ${cellName(system, members, clients, op)} FAILED: ${error}`)
}

/** Records every cell of one system and size as failed (it did not start, or its keys could not be written). */
function failAll(cells: Cell[], system: System, members: number, error: unknown): void {
  for (const op of OPS) for (const clients of CLIENTS) failCell(cells, system, members, clients, op, describe(error))
}

/**
 * Runs every (clients, op) cell on one running system and reports each on stderr. A cell that
 * fails is recorded with its error and the next one runs: one broken side loses no other figures.
 */
async function measure(system: System, members: number, target: Target, options: Options, values: readonly string[], cells: Cell[]): Promise<void> {
  try {
    await seedKeys(target, values)
  } catch (error) {
    failAll(cells, system, members, `writing the ${KEYS} keys: ${describe(error)}`)
    return
  }
  for (const op of OPS) {
    for (const clients of CLIENTS) {
      collectGarbage()
      let run: { ops: number; latencies: Float64Array }
      try {
        run = await runCell(target, op, clients, options.warmupMs, options.seconds * 1000, values, options.seed)
      } catch (error) {
        failCell(cells, system, members, clients, op, describe(error))
        continue
      }
      const cell = { system, members, clients, op, opsPerS: run.ops / options.seconds, p50Ms: quantile(run.latencies, 0.5), p99Ms: quantile(run.latencies, 0.99) }
      cells.push(cell)
      progress(
        `kv: ${system.padEnd(6)} ${members} member${members === 1 ? ' ' : 's'} ${String(clients).padStart(3)} client${clients === 1 ? ' ' : 's'} ${op}: ${humanRate(cell.opsPerS)}ops/s, p50 ${cell.p50Ms.toFixed(2)} ms, p99 ${cell.p99Ms.toFixed(2)} ms`,
      )
    }
  }
}

// ---- etcd ----------------------------------------------------------------------------------

function etcdTarget(client: Etcd3): Target {
  return {
    put: async (key, value) => {
      await client.put(key).value(value)
    },
    get: async (key) => (await client.get(key).string()) ?? undefined,
    cas: async (key, value, expected) => (await client.if(key, 'Value', '==', expected).then(client.put(key).value(value)).commit()).succeeded,
  }
}

function laminaTarget(kv: Kv): Target {
  return {
    put: async (key, value) => {
      await kv.put(key, value)
    },
    get: async (key) => (await kv.get(key))?.value,
    cas: async (key, value, expected) => (await kv.cas(key, value, { ifValue: expected })).ok,
  }
}

// ---- the run -------------------------------------------------------------------------------

interface Options {
  readonly seconds: number
  readonly warmupMs: number
  readonly seed: number
  readonly etcdEndpoints: 'all' | 'leader'
}

function parseOptions(argv: readonly string[]): Options {
  let values: { [option: string]: string | boolean | undefined }
  try {
    values = parseArgs({
      args: [...argv],
      options: { seconds: { type: 'string' }, 'warmup-ms': { type: 'string' }, seed: { type: 'string' }, 'etcd-endpoints': { type: 'string' } },
      strict: true,
    }).values
  } catch (error) {
    throw new BenchUsageError(`${error instanceof Error ? error.message : String(error)}\n${USAGE}`)
  }
  const option = (name: string): string | undefined => values[name] as string | undefined
  const endpoints = option('etcd-endpoints') ?? 'all'
  if (endpoints !== 'all' && endpoints !== 'leader') throw new BenchUsageError(`--etcd-endpoints must be all or leader, got ${JSON.stringify(endpoints)}\n${USAGE}`)
  return {
    seconds: positiveInteger('seconds', option('seconds')) ?? 3,
    warmupMs: positiveInteger('warmup-ms', option('warmup-ms')) ?? 500,
    seed: positiveInteger('seed', option('seed')) ?? 42,
    etcdEndpoints: endpoints,
  }
}

async function benchEtcd(members: number, dir: string, options: Options, values: readonly string[], cells: Cell[]): Promise<void> {
  progress(`kv: starting etcd with ${members} member${members === 1 ? '' : 's'}…`)
  let etcd: EtcdCluster
  try {
    etcd = await startEtcd(members, join(dir, `etcd-${members}`))
  } catch (error) {
    failAll(cells, 'etcd', members, error)
    return
  }
  try {
    const hosts = options.etcdEndpoints === 'leader' ? [await etcd.leaderUrl()] : [...etcd.clientUrls]
    const client = new Etcd3({ hosts })
    try {
      await measure('etcd', members, etcdTarget(client), options, values, cells)
    } finally {
      client.close()
    }
  } finally {
    await etcd.stop()
  }
}

/** The Lamina cluster running now, so a signal can stop it before the process goes. */
let runningCluster: Cluster | undefined

async function benchLamina(replicas: number, dir: string, options: Options, values: readonly string[], cells: Cell[]): Promise<void> {
  progress(`kv: starting Lamina with ${replicas} peer${replicas === 1 ? '' : 's'} (1 shard, ${replicas} replica${replicas === 1 ? '' : 's'})…`)
  let cluster: Cluster
  try {
    cluster = await startCluster({ peers: replicas, workdir: join(dir, `lamina-${replicas}`), logger: memoryLogger() })
  } catch (error) {
    failAll(cells, 'lamina', replicas, error)
    return
  }
  runningCluster = cluster
  try {
    let kv: Kv
    try {
      kv = await startKv(cluster, { shards: 1, replicas })
    } catch (error) {
      failAll(cells, 'lamina', replicas, error)
      return
    }
    try {
      await measure('lamina', replicas, laminaTarget(kv), options, values, cells)
    } finally {
      await Promise.race([kv.stop(), new Promise((resolve) => setTimeout(resolve, 10_000).unref())])
    }
  } finally {
    await cluster.stop()
    runningCluster = undefined
  }
}

function find(cells: readonly Cell[], system: System, members: number, clients: number, op: Op): Cell | undefined {
  return cells.find((c) => c.system === system && c.members === members && c.clients === clients && c.op === op)
}

function table(cells: readonly Cell[]): string {
  const header = ['members', 'clients', 'op', 'etcd ops/s', 'lamina ops/s', 'ratio', 'etcd p50', 'lamina p50', 'etcd p99', 'lamina p99']
  const rows = [header]
  const ms = (x: number | undefined): string => (x === undefined || Number.isNaN(x) ? '-' : `${x.toFixed(2)} ms`)
  const rate = (c: Cell | undefined): string => (c === undefined ? '-' : c.error !== undefined ? 'failed' : Math.round(c.opsPerS).toLocaleString('en'))
  const ratio = (l: Cell | undefined, e: Cell | undefined): string =>
    l === undefined || e === undefined || l.error !== undefined || e.error !== undefined ? '-' : (l.opsPerS / e.opsPerS).toFixed(3)
  for (const members of MEMBERS)
    for (const clients of CLIENTS)
      for (const op of OPS) {
        const e = find(cells, 'etcd', members, clients, op)
        const l = find(cells, 'lamina', members, clients, op)
        rows.push([String(members), String(clients), op, rate(e), rate(l), ratio(l, e), ms(e?.p50Ms), ms(l?.p50Ms), ms(e?.p99Ms), ms(l?.p99Ms)])
      }
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  return rows.map((r) => r.map((text, i) => (i < 3 ? text.padEnd(widths[i]!) : text.padStart(widths[i]!))).join('  ')).join('\n')
}

/** A figure for the JSON line: rounded to 3 decimals, null when missing (a failed cell). */
function figure(x: number | undefined): number | null {
  return x === undefined || !Number.isFinite(x) ? null : Math.round(x * 1000) / 1000
}

async function main(argv: readonly string[]): Promise<void> {
  const options = parseOptions(argv)
  const version = etcdVersion()
  const values = makeValues(options.seed)
  const dir = mkdtempSync(join(tmpdir(), 'lamina-bench-kv-'))
  const cleanUp = (): void => {
    killEtcd()
    rmSync(dir, { recursive: true, force: true })
  }
  // Whatever ends the run, no etcd member or temp dir outlives it (the Lamina peers are the nursery's).
  process.once('exit', cleanUp)
  const onSignal = (signal: NodeJS.Signals): void => {
    killEtcd()
    void Promise.race([runningCluster?.stop(), new Promise((resolve) => setTimeout(resolve, 5000))]).finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  // `on`, not `once`: while this listens, the nursery leaves the exit to it (after its own clean-up).
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  progress(
    `kv: etcd ${version} vs Lamina, ${KEY_BYTES}-byte keys (${KEYS}), ${VALUE_BYTES}-byte values, clients ${CLIENTS.join(' and ')}, ${options.warmupMs} ms warm-up + ${options.seconds} s per cell, etcd endpoints: ${options.etcdEndpoints}`,
  )
  const cells: Cell[] = []
  // Other work on the machine skews every figure: the JSON says how busy it was around the run.
  const loadBefore = loadavg()[0]!
  try {
    for (const members of MEMBERS) {
      await benchEtcd(members, dir, options, values, cells)
      await benchLamina(members, dir, options, values, cells)
    }
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    cleanUp()
  }
  progress(`\n${table(cells)}\n`)
  const at128 = (system: System, members: number, op: Op): Cell | undefined => find(cells, system, members, 128, op)
  const ratio = (members: number, op: Op): number | null => figure(at128('lamina', members, op)!.opsPerS / at128('etcd', members, op)!.opsPerS)
  const raw: Record<string, number | null> = {}
  for (const c of cells) {
    const name = cellName(c.system, c.members, c.clients, c.op)
    raw[`${name}_ops_s`] = figure(Math.round(c.opsPerS))
    raw[`${name}_p50_ms`] = figure(c.p50Ms)
    raw[`${name}_p99_ms`] = figure(c.p99Ms)
  }
  const failed = cells.filter((c) => c.error !== undefined)
  const result = {
    bench: 'kv',
    ratio: ratio(3, 'put'),
    ratio_get: ratio(3, 'get'),
    ratio_cas: ratio(3, 'cas'),
    ratio_1: ratio(1, 'put'),
    p99_ratio: figure(at128('lamina', 3, 'put')!.p99Ms / at128('etcd', 3, 'put')!.p99Ms),
    ...raw,
    failed: Object.fromEntries(failed.map((c) => [cellName(c.system, c.members, c.clients, c.op), c.error!])),
    seconds: options.seconds,
    warmup_ms: options.warmupMs,
    etcd_endpoints: options.etcdEndpoints,
    etcd_version: version,
    keys: KEYS,
    key_bytes: KEY_BYTES,
    value_bytes: VALUE_BYTES,
    node: process.version,
    loadavg_1m_start: figure(loadBefore),
    loadavg_1m_end: figure(loadavg()[0]),
  }
  process.stdout.write(`${JSON.stringify(result)}\n`)
  if (failed.length > 0)
    throw new BenchCheckError(
      `${failed.length} of ${cells.length} cells failed; first: ${cellName(failed[0]!.system, failed[0]!.members, failed[0]!.clients, failed[0]!.op)}: ${failed[0]!.error}`,
    )
}

runMain('kv', () => main(process.argv.slice(2)))
