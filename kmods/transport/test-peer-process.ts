// Starts a test peer (test-peer.ts) in a child process and talks to it: for cross-process tests and measurements.

import { fork, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { POLYFILL_URL } from './polyfill.js'
import type { PeerCommand, PeerReport } from './test-peer.js'

/** A running test peer. */
export interface TestPeerProcess {
  readonly child: ChildProcess
  readonly pid: number
  readonly peerId: string
  /** Its first listen address, with `/p2p/<id>`. */
  readonly address: string
  send(command: PeerCommand): void
  /** The next report of `type` (and `id`), or a rejection after `timeoutMs` or when the process exits. */
  next<T extends PeerReport['type']>(type: T, id?: string, timeoutMs?: number): Promise<Extract<PeerReport, { type: T }>>
  /** Resolves with the exit code or signal once the process has exited. */
  readonly exited: Promise<number | string>
  /** Kills it with SIGKILL (if still running) and waits for the exit. */
  kill(): Promise<void>
}

/** Forks `test-peer.ts` with its work directory under `dir`; resolves once it reports ready. */
export async function startTestPeer(dir: string, name: string, pskFile: string): Promise<TestPeerProcess> {
  // From sources (tests) the peer is test-peer.ts; from dist (benchmarks) test-peer.js.
  const script = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './test-peer.ts' : './test-peer.js', import.meta.url))
  // The polyfill preloaded by path too, as every child entry point may do.
  const child = fork(script, [join(dir, name), pskFile], {
    execArgv: ['--import', import.meta.resolve('tsx'), '--import', POLYFILL_URL],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const reports: PeerReport[] = []
  const waiting: { type: string; id: string | undefined; resolve: (report: PeerReport) => void; reject: (error: Error) => void }[] = []
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code ?? -1)))
  child.on('message', (report: PeerReport) => {
    const at = waiting.findIndex((w) => w.type === report.type && (w.id === undefined || ('id' in report && w.id === report.id)))
    if (at === -1) reports.push(report)
    else waiting.splice(at, 1)[0]!.resolve(report)
  })
  void exited.then((how) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`test peer ${name} exited (${how}) while waiting for a ${w.type} report`))
  })
  const next = <T extends PeerReport['type']>(type: T, id?: string, timeoutMs = 30_000): Promise<Extract<PeerReport, { type: T }>> => {
    const at = reports.findIndex((r) => r.type === type && (id === undefined || ('id' in r && r.id === id)))
    if (at !== -1) return Promise.resolve(reports.splice(at, 1)[0] as Extract<PeerReport, { type: T }>)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`test peer ${name}: no ${type} report within ${timeoutMs} ms`)), timeoutMs)
      timer.unref()
      waiting.push({
        type,
        id,
        resolve: (report) => {
          clearTimeout(timer)
          resolve(report as Extract<PeerReport, { type: T }>)
        },
        reject: (error) => {
          clearTimeout(timer)
          reject(error)
        },
      })
    })
  }
  try {
    const ready = await next('ready', undefined, 20_000)
    return {
      child,
      pid: ready.pid,
      peerId: ready.peerId,
      address: ready.addresses[0]!,
      send: (command) => void child.send(command),
      next,
      exited,
      kill: async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        await exited
      },
    }
  } catch (error) {
    child.kill('SIGKILL')
    throw error
  }
}
