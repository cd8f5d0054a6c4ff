// Starts a transport peer (transport-peer.ts) in a child process and talks to it: for cross-process tests and benchmarks of remote channels.

import { fork, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { POLYFILL_URL } from '../kmods/transport/index.js'
import type { TransportPeerCommand, TransportPeerReport } from './transport-peer.js'

/** A running transport peer. */
export interface TransportPeerProcess {
  readonly child: ChildProcess
  readonly pid: number
  readonly peerId: string
  /** Its first listen address, with `/p2p/<id>`. */
  readonly address: string
  send(command: TransportPeerCommand): void
  /** The next report of `type` (and `id`), or a rejection after `timeoutMs` or when the process exits. */
  next<T extends TransportPeerReport['type']>(type: T, id?: string, timeoutMs?: number): Promise<Extract<TransportPeerReport, { type: T }>>
  /** Resolves with the exit code or signal once the process has exited. */
  readonly exited: Promise<number | string>
  /** Kills it with SIGKILL (if still running) and waits for the exit. */
  kill(): Promise<void>
}

/** Forks `transport-peer.ts` with its work directory under `dir`; resolves once it reports ready. */
export async function startTransportPeer(dir: string, name: string, pskFile: string): Promise<TransportPeerProcess> {
  // From sources (tests) the peer is transport-peer.ts; from dist (benchmarks) transport-peer.js.
  const script = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './transport-peer.ts' : './transport-peer.js', import.meta.url))
  // The polyfill preloaded by path too, as every child entry point may do.
  const child = fork(script, [join(dir, name), pskFile], {
    execArgv: ['--import', import.meta.resolve('tsx'), '--import', POLYFILL_URL],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const reports: TransportPeerReport[] = []
  const waiting: { type: string; id: string | undefined; resolve: (report: TransportPeerReport) => void; reject: (error: Error) => void }[] = []
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code ?? -1)))
  child.on('message', (report: TransportPeerReport) => {
    const at = waiting.findIndex((w) => w.type === report.type && (w.id === undefined || ('id' in report && w.id === report.id)))
    if (at === -1) reports.push(report)
    else waiting.splice(at, 1)[0]!.resolve(report)
  })
  void exited.then((how) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`transport peer ${name} exited (${how}) while waiting for a ${w.type} report`))
  })
  const next = <T extends TransportPeerReport['type']>(type: T, id?: string, timeoutMs = 30_000): Promise<Extract<TransportPeerReport, { type: T }>> => {
    const at = reports.findIndex((r) => r.type === type && (id === undefined || ('id' in r && r.id === id)))
    if (at !== -1) return Promise.resolve(reports.splice(at, 1)[0] as Extract<TransportPeerReport, { type: T }>)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`transport peer ${name}: no ${type} report within ${timeoutMs} ms`)), timeoutMs)
      timer.unref()
      waiting.push({
        type,
        id,
        resolve: (report) => {
          clearTimeout(timer)
          resolve(report as Extract<TransportPeerReport, { type: T }>)
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
