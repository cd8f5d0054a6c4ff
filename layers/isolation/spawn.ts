// Starting an isolated instance's worker thread or child process, and the one interface the host talks to both through.

import { fork } from 'node:child_process'
import type { Socket } from 'node:net'
import { Worker } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'
import type { IsolatedMode } from './errors.js'
import type { HostMessage, IsolateMessage } from './protocol.js'

/** How an isolated side ended. */
export interface ExitInfo {
  readonly code: number | null
  readonly signal: string | null
  /** The worker's error event (an uncaught error, ERR_WORKER_OUT_OF_MEMORY), or a failure to spawn. */
  readonly error?: Error
  /** The end of what a child process wrote on stderr. */
  readonly stderr: string
}

/** The host's handle on a worker thread or child process. */
export interface IsolateChannel {
  readonly mode: IsolatedMode
  /** Posts a message; worker threads take `transfer`'s buffers over, child processes copy them. */
  send(message: HostMessage, transfer?: readonly ArrayBuffer[]): void
  /** Stops it now (terminate, SIGKILL). */
  kill(): void
  /** Lets the process exit while it runs (no call in flight). */
  unref(): void
  /** Keeps the process alive while a call is in flight. */
  ref(): void
}

/** What `spawnIsolate` needs. */
export interface SpawnSpec {
  readonly mode: IsolatedMode
  /** Heap limit in MiB. */
  readonly memoryMb: number
  /** The operator's module URL: a `.ts` module needs tsx in the isolated side. */
  readonly moduleUrl: string
  /** Copy what a child process writes on stderr to this process's stderr (it is always kept for fault reports). */
  readonly forwardStderr: boolean
  readonly onMessage: (message: IsolateMessage) => void
  readonly onExit: (exit: ExitInfo) => void
}

/** A child's exit code after an uncaught error (isolate-main.ts). */
export const FATAL_EXIT = 70

const STDERR_TAIL = 8192

/**
 * Where the isolated side's entry is: the compiled `.js` next to this file, or the `.ts` source
 * when running from sources (tests, tsx), which then needs tsx and the `source` export condition
 * (so `lamina` resolves to the sources too), as the cluster launcher does for peers.
 */
function entry(): { readonly url: URL; readonly typescript: boolean } {
  const typescript = import.meta.url.endsWith('.ts')
  return { url: new URL(`./isolate-main.${typescript ? 'ts' : 'js'}`, import.meta.url), typescript }
}

function isTypeScript(url: string): boolean {
  return /\.[mc]?ts$/.test(url)
}

/**
 * A worker thread starts from this script when it must load TypeScript: it registers tsx's ESM
 * hooks inside the worker (an `--import` in a worker's execArgv does not reach its entry), then
 * imports the entry.
 */
const TSX_BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
(async () => {
  (await import(workerData.tsx)).register();
  await import(workerData.entry);
})().catch((error) => { setImmediate(() => { throw error }) });
`

/** Starts the worker thread or child process of one isolated instance. */
export function spawnIsolate(spec: SpawnSpec): IsolateChannel {
  return spec.mode === 'worker' ? spawnWorker(spec) : spawnChild(spec)
}

function spawnWorker(spec: SpawnSpec): IsolateChannel {
  const { url, typescript } = entry()
  const tsx = typescript || isTypeScript(spec.moduleUrl)
  // execArgv is always given: a worker inheriting the peer's (--max-old-space-size, --expose-gc …) would not start.
  const options = {
    execArgv: typescript ? ['--conditions', 'source'] : [],
    resourceLimits: { maxOldGenerationSizeMb: spec.memoryMb },
  }
  const worker = tsx ? new Worker(TSX_BOOTSTRAP, { ...options, eval: true, workerData: { tsx: import.meta.resolve('tsx/esm/api'), entry: url.href } }) : new Worker(url, options)
  let error: Error | undefined
  worker.on('message', (message: IsolateMessage) => spec.onMessage(message))
  worker.on('error', (e: Error) => {
    error ??= e
  })
  worker.on('exit', (code) => spec.onExit({ code, signal: null, ...(error === undefined ? {} : { error }), stderr: '' }))
  return {
    mode: 'worker',
    send: (message, transfer) => worker.postMessage(message, transfer === undefined ? [] : (transfer as ArrayBuffer[])),
    kill: () => void worker.terminate(),
    ref: () => worker.ref(),
    unref: () => worker.unref(),
  }
}

function spawnChild(spec: SpawnSpec): IsolateChannel {
  const { url, typescript } = entry()
  const tsx = typescript || isTypeScript(spec.moduleUrl)
  const execArgv = [
    `--max-old-space-size=${Math.round(spec.memoryMb)}`,
    ...(tsx ? ['--import', import.meta.resolve('tsx')] : []),
    ...(typescript ? ['--conditions', 'source'] : []),
  ]
  const child = fork(fileURLToPath(url), [], { execArgv, serialization: 'advanced', stdio: ['ignore', 'inherit', 'pipe', 'ipc'] })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    if (spec.forwardStderr) process.stderr.write(chunk)
    stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_TAIL)
  })
  let spawnError: Error | undefined
  child.on('error', (e) => {
    spawnError ??= e
  })
  child.on('message', (message) => spec.onMessage(message as IsolateMessage))
  // 'close' comes after stderr has been read to its end.
  child.on('close', (code, signal) => spec.onExit({ code, signal, ...(spawnError === undefined ? {} : { error: spawnError }), stderr }))
  const send = (message: HostMessage): void => {
    if (child.connected) child.send(message)
  }
  return {
    mode: 'process',
    send,
    kill: () => void child.kill('SIGKILL'),
    ref: () => {
      child.ref()
      child.channel?.ref()
      ;(child.stderr as Socket | null)?.ref()
    },
    unref: () => {
      child.unref()
      child.channel?.unref()
      ;(child.stderr as Socket | null)?.unref()
    },
  }
}
