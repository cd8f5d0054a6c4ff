// Shared by the benchmarks that compare against etcd (kv, txkv): starting and stopping etcd 3.4
// members on loopback, free ports, and quantiles of latencies.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { Etcd3 } from 'etcd3'
import { BenchCheckError } from './_harness.js'

/** The value at quantile `q` of sorted samples (nearest rank). */
export function quantile(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

/** etcd processes started by this run: killed on any way out, signals and crashes too. */
export const etcdProcesses = new Set<ChildProcess>()

export function killEtcd(): void {
  for (const child of etcdProcesses) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
}

/** The etcd binary's version, or a usage error saying how to install it. */
export function etcdVersion(): string {
  try {
    const out = execFileSync('etcd', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    return /etcd Version: (\S+)/.exec(out)?.[1] ?? 'unknown'
  } catch (error) {
    throw new BenchCheckError(
      `cannot run \`etcd --version\` (${error instanceof Error ? error.message : String(error)}): this benchmark compares against etcd 3.4.\n` +
        'Install it with `apt-get install -y etcd-server` (Debian; no daemon is needed: the bench starts its own members), then run again.',
    )
  }
}

/** A TCP port free on loopback right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))))
    })
  })
}

/** Stops processes with SIGTERM, then SIGKILL after `graceMs`; resolves once all have exited. */
export async function stopProcesses(children: readonly ChildProcess[], graceMs = 5000): Promise<void> {
  const running = children.filter((c) => c.exitCode === null && c.signalCode === null)
  const exited = running.map((c) => new Promise<void>((resolve) => c.once('exit', () => resolve())))
  for (const c of running) c.kill('SIGTERM')
  const timer = setTimeout(() => {
    for (const c of running) c.kill('SIGKILL')
  }, graceMs)
  await Promise.all(exited)
  clearTimeout(timer)
}

export interface EtcdCluster {
  readonly clientUrls: readonly string[]
  /** The client URL of the current leader. */
  leaderUrl(): Promise<string>
  stop(): Promise<void>
}

/** Starts `members` etcd members on loopback with data dirs under `dir`; resolves when every member reports healthy. */
export async function startEtcd(members: number, dir: string, token = 'lamina-bench'): Promise<EtcdCluster> {
  const names = Array.from({ length: members }, (_, i) => `m${i}`)
  const clientPorts = await Promise.all(names.map(() => freePort()))
  const peerPorts = await Promise.all(names.map(() => freePort()))
  const clientUrls = clientPorts.map((p) => `http://127.0.0.1:${p}`)
  const peerUrls = peerPorts.map((p) => `http://127.0.0.1:${p}`)
  const initialCluster = names.map((name, i) => `${name}=${peerUrls[i]}`).join(',')
  const logs = names.map(() => [] as string[])
  const children = names.map((name, i) => {
    const data = join(dir, name)
    mkdirSync(data, { recursive: true })
    const child = spawn(
      'etcd',
      [
        `--name=${name}`,
        `--data-dir=${data}`,
        `--listen-client-urls=${clientUrls[i]}`,
        `--advertise-client-urls=${clientUrls[i]}`,
        `--listen-peer-urls=${peerUrls[i]}`,
        `--initial-advertise-peer-urls=${peerUrls[i]}`,
        `--initial-cluster=${initialCluster}`,
        '--initial-cluster-state=new',
        `--initial-cluster-token=${token}-${process.pid}-${members}`,
        '--logger=zap',
        '--log-level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    etcdProcesses.add(child)
    child.on('exit', () => etcdProcesses.delete(child))
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (text: string) => {
      logs[i]!.push(text)
      if (logs[i]!.length > 50) logs[i]!.shift()
    })
    return child
  })
  const stop = (): Promise<void> => stopProcesses(children)
  const deadline = performance.now() + 30_000
  try {
    for (const [i, url] of clientUrls.entries()) {
      for (;;) {
        const child = children[i]!
        if (child.exitCode !== null || child.signalCode !== null)
          throw new BenchCheckError(`etcd member ${names[i]} exited (${child.exitCode ?? child.signalCode}):\n${logs[i]!.join('')}`)
        const healthy = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) })
          .then(async (r) => ((await r.json()) as { health?: string }).health === 'true')
          .catch(() => false)
        if (healthy) break
        if (performance.now() > deadline) throw new BenchCheckError(`etcd member ${names[i]} not healthy within 30 s:\n${logs[i]!.join('')}`)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  } catch (error) {
    await stop()
    throw error
  }
  const leaderUrl = async (): Promise<string> => {
    for (const url of clientUrls) {
      const probe = new Etcd3({ hosts: url })
      try {
        const status = await probe.maintenance.status()
        if (status.leader === status.header.member_id) return url
      } finally {
        probe.close()
      }
    }
    throw new BenchCheckError('no etcd member says it is the leader')
  }
  return { clientUrls, leaderUrl, stop }
}
