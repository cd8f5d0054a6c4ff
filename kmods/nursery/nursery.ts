// A nursery of child processes: start them, wait until each says it is ready, restart or fail by
// policy when one dies, and stop every one of them when the nursery ends. No orphans.

import { fork, type ChildProcess } from 'node:child_process'
import { Subject, type Observable } from 'rxjs'
import { ChildFailedError, ChildStartError } from './errors.js'

/** What a child sends its parent over IPC once it can serve. */
export interface ReadyMessage {
  readonly type: 'ready'
  readonly info: unknown
}

/** What happens when a child dies while the nursery runs. */
export type RestartPolicy =
  | { readonly kind: 'fail' }
  | {
      readonly kind: 'restart' /** Restarts allowed within `withinMs` before the nursery fails. @default 3 */
      readonly max?: number /** @default 60000 */
      readonly withinMs?: number
    }

/** Options of a nursery. */
export interface NurseryOptions {
  /** The module each child runs (a .js file, or .ts when `execArgv` loads tsx). */
  readonly module: string
  /** Arguments of child `i`. */
  readonly args: (index: number) => readonly string[]
  readonly count: number
  /** Node flags of the children. @default [] */
  readonly execArgv?: readonly string[]
  /** @default { kind: 'fail' } */
  readonly policy?: RestartPolicy
  /** Milliseconds a child may take to say it is ready. @default 20000 */
  readonly readyTimeoutMs?: number
  /** Milliseconds a child gets to exit after SIGTERM before SIGKILL. @default 3000 */
  readonly stopTimeoutMs?: number
  readonly env?: NodeJS.ProcessEnv
  readonly signal?: AbortSignal
}

/** Events of a nursery. */
export type NurseryEvent =
  | { readonly type: 'ready'; readonly index: number; readonly pid: number; readonly info: unknown }
  | { readonly type: 'exit'; readonly index: number; readonly pid: number; readonly code: number | null; readonly signal: string | null }
  | { readonly type: 'restart'; readonly index: number; readonly attempt: number }
  | { readonly type: 'failed'; readonly error: ChildFailedError }

interface Slot {
  retired?: boolean
  child: ChildProcess | undefined
  info: unknown
  restarts: number[]
}

/**
 * Child processes supervised as one unit. `start()` resolves when every child is ready; `failed`
 * rejects when a child dies and the policy does not (or can no longer) restart it; `stop()` ends
 * all children (SIGTERM, then SIGKILL) and is idempotent. The parent's exit, SIGINT and SIGTERM
 * stop the children too, and each child should exit when its IPC channel closes (see `watchParent`).
 */
export class Nursery {
  private readonly slots: Slot[]
  private readonly eventSubject = new Subject<NurseryEvent>()
  private stopping = false
  private failure: ChildFailedError | undefined
  private failListeners: ((error: ChildFailedError) => void)[] = []
  private readonly onProcessExit = (): void => this.killAll('SIGKILL')
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    void this.stop().finally(() => {
      process.off(signal, this.onSignal)
      // Die of the signal as the process would have without us, unless the program handles it
      // itself (then it decides when to exit: it may have its own clean-up to finish).
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    })
  }

  constructor(private readonly options: NurseryOptions) {
    this.slots = Array.from({ length: options.count }, () => ({ child: undefined, info: undefined, restarts: [] }))
  }

  /** Events: ready, exit, restart, failed. */
  get events(): Observable<NurseryEvent> {
    return this.eventSubject.asObservable()
  }

  /** Process ids of the running children. */
  pids(): number[] {
    return this.slots.flatMap((s) => (s.child?.pid === undefined || s.child.exitCode !== null || s.child.signalCode !== null ? [] : [s.child.pid]))
  }

  /** Process id of child `index` while it runs. */
  pidOf(index: number): number | undefined {
    const child = this.slots[index]?.child
    return child?.pid === undefined || child.exitCode !== null || child.signalCode !== null ? undefined : child.pid
  }

  /** What each child sent with its ready message. */
  infos(): unknown[] {
    return this.slots.map((s) => s.info)
  }

  /** Rejects when the nursery fails (a child died and was not restarted). */
  readonly failed: Promise<never> = new Promise<never>((_, reject) => {
    this.failListeners.push(reject)
  })

  /** Starts every child and resolves when all are ready. */
  async start(): Promise<void> {
    this.failed.catch(() => undefined)
    process.once('exit', this.onProcessExit)
    process.once('SIGINT', this.onSignal)
    process.once('SIGTERM', this.onSignal)
    this.options.signal?.addEventListener('abort', () => void this.stop(), { once: true })
    try {
      await Promise.all(this.slots.map((_, index) => this.spawn(index)))
    } catch (error) {
      await this.stop()
      throw error
    }
  }

  private spawn(index: number): Promise<void> {
    const slot = this.slots[index]!
    const child = fork(this.options.module, [...this.options.args(index)], {
      execArgv: [...(this.options.execArgv ?? [])],
      env: this.options.env ?? process.env,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    slot.child = child
    const timeoutMs = this.options.readyTimeoutMs ?? 20_000
    return new Promise<void>((resolve, reject) => {
      let ready = false
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new ChildStartError(index, `not ready within ${timeoutMs} ms`))
      }, timeoutMs)
      child.on('message', (message: unknown) => {
        if (ready || (message as ReadyMessage | undefined)?.type !== 'ready') return
        ready = true
        clearTimeout(timer)
        slot.info = (message as ReadyMessage).info
        this.eventSubject.next({ type: 'ready', index, pid: child.pid!, info: slot.info })
        resolve()
      })
      child.on('error', (error) => {
        clearTimeout(timer)
        if (!ready) reject(new ChildStartError(index, error.message))
      })
      child.on('exit', (code, signal) => {
        clearTimeout(timer)
        this.eventSubject.next({ type: 'exit', index, pid: child.pid ?? -1, code, signal })
        if (!ready) return reject(new ChildStartError(index, `exited with ${signal ?? `code ${code}`} before it was ready`))
        if (!this.stopping) this.died(index, code, signal)
      })
    })
  }

  /** Starts one more child (index = the number of children so far); resolves with its index once ready. */
  async add(): Promise<number> {
    if (this.stopping) throw new ChildStartError(this.slots.length, 'the nursery is stopping')
    const index = this.slots.length
    this.slots.push({ child: undefined, info: undefined, restarts: [] })
    await this.spawn(index)
    return index
  }

  /**
   * Retires child `index` gracefully: asks it to leave (an IPC `leave` message: a peer moves its
   * work off first), does not restart it, and resolves when it has exited (SIGKILL after `graceMs`).
   */
  async retire(index: number, graceMs = 20_000): Promise<void> {
    const slot = this.slots[index]
    if (slot === undefined) throw new RangeError(`no child ${index}: the nursery has ${this.slots.length}`)
    const child = slot.child
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    slot.retired = true
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.send({ type: 'leave' })
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs)
    await exited
    clearTimeout(kill)
  }

  private died(index: number, code: number | null, signal: string | null): void {
    if (this.slots[index]?.retired === true) return
    const policy = this.options.policy ?? { kind: 'fail' }
    const slot = this.slots[index]!
    const now = Date.now()
    if (policy.kind === 'restart') {
      const within = policy.withinMs ?? 60_000
      slot.restarts = slot.restarts.filter((t) => now - t < within)
      if (slot.restarts.length < (policy.max ?? 3)) {
        slot.restarts.push(now)
        this.eventSubject.next({ type: 'restart', index, attempt: slot.restarts.length })
        this.spawn(index).catch((error: unknown) => this.fail(new ChildFailedError(index, code, signal, error)))
        return
      }
    }
    this.fail(new ChildFailedError(index, code, signal))
  }

  private fail(error: ChildFailedError): void {
    if (this.failure !== undefined || this.stopping) return
    this.failure = error
    this.eventSubject.next({ type: 'failed', error })
    for (const reject of this.failListeners) reject(error)
    void this.stop()
  }

  private killAll(signal: NodeJS.Signals): void {
    for (const slot of this.slots) if (slot.child !== undefined && slot.child.exitCode === null && slot.child.signalCode === null) slot.child.kill(signal)
  }

  /** Stops every child: SIGTERM, then SIGKILL after the grace time. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true
    process.off('exit', this.onProcessExit)
    process.off('SIGINT', this.onSignal)
    process.off('SIGTERM', this.onSignal)
    const running = this.slots.map((s) => s.child).filter((c): c is ChildProcess => c !== undefined && c.exitCode === null && c.signalCode === null)
    const exited = running.map((c) => new Promise<void>((resolve) => c.once('exit', () => resolve())))
    for (const c of running) c.kill('SIGTERM')
    const grace = setTimeout(() => this.killAll('SIGKILL'), this.options.stopTimeoutMs ?? 3000)
    await Promise.all(exited)
    clearTimeout(grace)
    if (!this.eventSubject.closed) this.eventSubject.complete()
  }
}

/**
 * For a child process: exit when the parent goes away (its IPC channel closes), so a parent killed
 * with SIGKILL leaves no orphans behind. Calls `cleanup` first when given.
 */
export function watchParent(cleanup?: () => Promise<void>): void {
  if (process.send === undefined) return
  process.on('disconnect', () => {
    const exit = (): never => process.exit(0)
    if (cleanup === undefined) exit()
    else void cleanup().finally(exit)
  })
}

/** For a child process: tells the parent it is ready, with what it wants the parent to know. */
export function reportReady(info: unknown): void {
  process.send?.({ type: 'ready', info } satisfies ReadyMessage)
}
