// Request handlers under isolation: the handler's module runs in a child process of its own, so a
// handler with its own dependencies, one that crashes its process, leaks or spins cannot take the
// worker's peer down (the manifesto's complaint about Airflow). One process per worker, started at
// the first call and again after it ended; an attempt that times out or is cancelled stops the
// process (a handler that spins cannot be stopped any other way), failing the attempts running
// in it with the same typed error, and they are retried as any failed attempt.

import { type ChildProcess, fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { LaminaError } from '../../kernel/index.js'
import type { RequestContext } from './durable.js'

/** The handler's process ended while an attempt ran in it (an exit, a crash, a timeout that stopped it). */
export class RequestHandlerCrashedError extends LaminaError {
  readonly code = 'ERR_REQUEST_HANDLER_CRASHED'
  override readonly name = 'RequestHandlerCrashedError'
  constructor(
    readonly request: string,
    readonly id: string,
    readonly exit: { readonly code: number | null; readonly signal: string | null },
    stderr: string,
  ) {
    super(
      `request ${request}/${id}: the handler's process ended (${exit.signal === null ? `exit code ${exit.code}` : `signal ${exit.signal}`})${stderr.trim() === '' ? '' : `; it wrote: ${stderr.trim().slice(-300)}`}`,
    )
  }
}

/** A handler given as a module's export, run in a child process (`Durable.serveIsolated`). */
export interface IsolatedHandler {
  /** The module (a path or file URL; `.ts` runs through tsx). */
  readonly module: string
  /** Its export to call as the handler. @default 'default' */
  readonly export?: string
}

interface Pending {
  readonly resolve: (value: unknown) => void
  readonly reject: (error: unknown) => void
  readonly ctx: RequestContext
}

/** One worker's handler process. */
export class HandlerProcess {
  private child: ChildProcess | undefined
  private ready: Promise<ChildProcess> | undefined
  private readonly pending = new Map<number, Pending>()
  private seq = 0
  private stderr = ''
  private closed = false

  constructor(private readonly spec: IsolatedHandler) {}

  /** Runs one attempt in the handler's process. */
  call(input: unknown, ctx: RequestContext): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const seq = ++this.seq
      this.pending.set(seq, { resolve, reject, ctx })
      ctx.signal.addEventListener(
        'abort',
        () => {
          if (!this.pending.has(seq)) return
          // Only stopping the process stops a handler; every attempt in it fails and is retried.
          const child = this.child
          this.pending.delete(seq)
          reject(ctx.signal.reason)
          child?.kill('SIGKILL')
        },
        { once: true },
      )
      this.started().then(
        (child) => child.send({ t: 'call', seq, input, ctx: { name: ctx.name, id: ctx.id, idempotencyKey: ctx.idempotencyKey, attempt: ctx.attempt, worker: ctx.worker } }),
        (error: unknown) => {
          this.pending.delete(seq)
          reject(error)
        },
      )
    })
  }

  /** Stops the process. */
  close(): void {
    this.closed = true
    this.child?.kill('SIGKILL')
  }

  private started(): Promise<ChildProcess> {
    if (this.closed) return Promise.reject(new Error('the handler process was closed'))
    this.ready ??= new Promise<ChildProcess>((resolve, reject) => {
      const typescript = import.meta.url.endsWith('.ts')
      const main = fileURLToPath(new URL(`./isolated-main.${typescript ? 'ts' : 'js'}`, import.meta.url))
      const loadsTs = typescript || /\.[mc]?ts$/.test(this.spec.module)
      const child = fork(main, [this.spec.module, this.spec.export ?? 'default'], {
        execArgv: loadsTs ? ['--import', import.meta.resolve('tsx'), ...(typescript ? ['--conditions', 'source'] : [])] : [],
        stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      })
      this.child = child
      this.stderr = ''
      child.stderr?.on('data', (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString()).slice(-4096)))
      child.on('message', (message: { t: string; seq?: number; value?: unknown; code?: string; message?: string }) => {
        if (message.t === 'ready') return resolve(child)
        if (message.t === 'fatal') return reject(new Error(message.message))
        const waiting = message.seq === undefined ? undefined : this.pending.get(message.seq)
        if (waiting === undefined) return
        this.pending.delete(message.seq!)
        if (message.t === 'ok') waiting.resolve(message.value)
        else waiting.reject(Object.assign(new Error(message.message ?? 'the handler failed'), { code: message.code ?? 'ERR_HANDLER' }))
      })
      child.on('exit', (code, signal) => {
        if (this.child === child) {
          this.child = undefined
          this.ready = undefined
        }
        reject(new Error(`the handler process exited before it was ready (${signal ?? code}): ${this.stderr.trim().slice(-300)}`))
        // Every attempt still running in it fails (and is retried); the next call starts another process.
        for (const [seq, waiting] of this.pending) {
          this.pending.delete(seq)
          waiting.reject(new RequestHandlerCrashedError(waiting.ctx.name, waiting.ctx.id, { code, signal }, this.stderr))
        }
      })
    })
    return this.ready
  }
}
