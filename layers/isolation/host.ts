// The host side of one isolated instance: starts its worker thread or child process, drives its calls, serves its syscalls, watches it.

import { JobAbortedError, type AtomContext, type AtomObserver, type Batch, type InstanceInfo, type Key, type RecordHook, type TimerHandle } from '../../kernel/index.js'
import { moduleUrl, type ModuleRef } from './annotations.js'
import { decodeBatch, encodeBatch } from './batch-codec.js'
import { IsolationFaultError, IsolationModuleError, IsolationUnsupportedError, type FaultReason, type IsolatedMode } from './errors.js'
import { serializeError, type DoneMessage, type HostMessage, type IsolateMessage, type SerializedError, type Sync, type TrailStep } from './protocol.js'
import { rebuildError } from './runtime.js'
import { FATAL_EXIT, spawnIsolate, type ExitInfo, type IsolateChannel } from './spawn.js'

/** How one isolated instance runs. */
export interface HostOptions {
  readonly mode: IsolatedMode
  readonly from: ModuleRef
  readonly memoryMb: number
  /** 0: no watchdog. */
  readonly watchdogMs: number
  readonly startTimeoutMs: number
  readonly forwardStderr: boolean
  /** Told once when the isolated side is lost (not when the host closes it). */
  readonly onFault: (fault: IsolationFaultError) => void
  /** Watches the operator's record loop (the `InstanceSpec.observer` the layers above passed): told what the isolated side did, in order. */
  readonly observer?: AtomObserver
}

/** What became of a batch sent to the isolated side. */
export type ProcessOutcome =
  | { readonly kind: 'done'; readonly done: DoneMessage }
  | {
      readonly kind: 'fault'
      readonly fault: IsolationFaultError
      /** The records blamed for the fault: the one being handled when it is known, else every record not done; `batch` for a batch handler. */
      readonly blamed: readonly number[] | 'batch'
      /** Records not done and not blamed: a restarted instance handles them. */
      readonly remaining: readonly number[]
    }

interface Call {
  readonly resolve: (done: DoneMessage) => void
  readonly reject: (error: unknown) => void
}

/** Runs one operator instance in a worker thread or child process, on behalf of the instance the kernel drives. */
export class IsolateHost {
  /** Set once the isolated side is lost: every later call fails with it. */
  fault: IsolationFaultError | undefined
  /** The operator's state as of the last sync, encoded by its state codec (`null`: an unkeyed operator's slot). */
  mirror = new Map<Key | null, unknown>()
  private channel: IsolateChannel | undefined
  private ctx: AtomContext | undefined
  private readonly calls = new Map<number, Call>()
  private readonly timers = new Map<number, TimerHandle>()
  private nextCall = 1
  private ready = false
  private closed = false
  /** Messages sent before the isolated side was ready (a restore). */
  private queued: HostMessage[] = []
  private booting: { readonly resolve: () => void; readonly reject: (error: unknown) => void; readonly timer: NodeJS.Timeout } | undefined
  /** The `process` call in flight, how many of its records are done (their output delivered), and the observer's hook for its records. */
  private processing: { id: number; count: number; done: number; hook: RecordHook | undefined } | undefined
  private readonly progress: Int32Array | undefined
  private readonly pings = new Map<number, number>()
  private nextPing = 1
  private watchdog: NodeJS.Timeout | undefined
  private fatal: SerializedError | undefined

  constructor(
    readonly info: InstanceInfo,
    /** `records`: the inputs with a record handler (the others have a batch handler). */
    private readonly ports: { readonly inputs: readonly string[]; readonly outputs: readonly string[]; readonly records: readonly string[] },
    private readonly crashes: boolean,
    private readonly options: HostOptions,
  ) {
    this.progress = options.mode === 'worker' ? new Int32Array(new SharedArrayBuffer(8)).fill(-1) : undefined
  }

  /** Starts the worker thread or child process; resolves once it has built the operator. */
  boot(): Promise<void> {
    if (this.fault !== undefined) return Promise.reject(this.fault)
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.lose('crash', `it did not start within ${this.options.startTimeoutMs} ms`), this.options.startTimeoutMs)
      this.booting = { resolve, reject, timer }
      try {
        this.channel = spawnIsolate({
          mode: this.options.mode,
          memoryMb: this.options.memoryMb,
          moduleUrl: moduleUrl(this.options.from.module),
          forwardStderr: this.options.forwardStderr,
          onMessage: (message) => this.receive(message),
          onExit: (exit) => this.exited(exit),
        })
      } catch (error) {
        this.lose('crash', `it could not be started: ${error instanceof Error ? error.message : String(error)}`)
      }
      this.channel?.ref()
    })
  }

  /** The kernel's context of the instance: where emissions, syscalls and timers go. */
  attach(ctx: AtomContext): void {
    this.ctx = ctx
    const signal = ctx.signal
    const abort = (): void => this.post({ t: 'abort', reason: String(signal.reason ?? 'stopped') })
    if (signal.aborted) abort()
    else signal.addEventListener('abort', abort, { once: true })
  }

  /** Runs a lifecycle call (`start`, `run`, `end`); rejects with IsolationFaultError if the isolated side is lost. */
  lifecycle(op: 'start' | 'run' | 'end'): Promise<DoneMessage> {
    const id = this.nextCall++
    return this.call(id, { t: 'call', id, op }, [])
  }

  /** Fires a timer the operator set; throws what its callback threw. */
  async fireTimer(timer: number): Promise<void> {
    const id = this.nextCall++
    const done = await this.call(id, { t: 'call', id, op: 'timer', timer }, [])
    if (done.error !== undefined) throw rebuildError(done.error)
  }

  /** Sends a batch; resolves with the outcome, a fault included (it rejects only when the batch cannot be sent). */
  async process(port: string, batch: Batch): Promise<ProcessOutcome> {
    const values = batch.values
    let encoded
    try {
      encoded = encodeBatch(values)
    } catch (error) {
      throw new IsolationUnsupportedError(
        this.info.operator,
        `a batch with a value that cannot be copied to another thread (${error instanceof Error ? error.message : String(error)})`,
      )
    }
    const requests: number[] = []
    const headers = batch.headers
    if (headers !== undefined) for (let i = 0; i < headers.length; i++) if (headers[i]?.reply !== undefined) requests.push(i)
    const id = this.nextCall++
    // A handler port's records are watched as the kernel's record loop would be (batch handlers are not).
    const hook = this.ports.records.includes(port) ? this.options.observer?.batch?.(port, batch) : undefined
    const processing = { id, count: values.length, done: 0, hook }
    this.processing = processing
    try {
      const message: HostMessage = {
        t: 'call',
        id,
        op: 'process',
        port,
        batch: encoded,
        ...(requests.length === 0 ? {} : { requests }),
        ...(hook === undefined ? {} : { observe: true }),
      }
      const done = await this.call(id, message, [encoded.buffer])
      return { kind: 'done', done }
    } catch (error) {
      if (!(error instanceof IsolationFaultError)) throw error
      return { kind: 'fault', fault: error, ...this.blame(processing) }
    } finally {
      if (this.processing === processing) this.processing = undefined
    }
  }

  /** Replaces the isolated side's state (the entries were checked against the state codec) and the host's copy. */
  restore(entries: readonly (readonly [Key | null, unknown])[]): void {
    this.mirror = new Map(entries.map(([key, value]) => [key, value]))
    this.post({ t: 'restore', entries })
  }

  /** Ends the isolated side (the instance is done or discarded). Idempotent. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.stopWatching()
    this.cancelTimers()
    this.channel?.kill()
    if (this.booting !== undefined) {
      clearTimeout(this.booting.timer)
      this.booting = undefined
    }
    // Closed on purpose (the job ended or aborted, or the instance was discarded): calls in flight
    // end as an abort does, not as a fault of the operator (nothing is blamed on their records).
    const closedError = this.fault ?? new JobAbortedError(this.info.job, `${this.info.operator}[${this.info.instance}] was closed`)
    for (const call of this.calls.values()) call.reject(closedError)
    this.calls.clear()
  }

  // --- calls --------------------------------------------------------------------------------

  private call(id: number, message: HostMessage, transfer: readonly ArrayBuffer[]): Promise<DoneMessage> {
    if (this.fault !== undefined) return Promise.reject(this.fault)
    if (this.closed || this.channel === undefined || !this.ready)
      return Promise.reject(new JobAbortedError(this.info.job, `${this.info.operator}[${this.info.instance}] is not running`))
    return new Promise<DoneMessage>((resolve, reject) => {
      if (this.calls.size === 0) this.channel!.ref()
      this.calls.set(id, { resolve, reject })
      this.channel!.send(message, transfer)
    })
  }

  private post(message: HostMessage): void {
    if (this.closed || this.fault !== undefined) return
    if (!this.ready || this.channel === undefined) this.queued.push(message)
    else this.channel.send(message)
  }

  /** Which records of the batch in flight a fault is blamed on, and which a restarted instance should handle. */
  private blame(p: { id: number; count: number; done: number }): { blamed: readonly number[] | 'batch'; remaining: readonly number[] } {
    const notDone = Array.from({ length: Math.max(0, p.count - p.done) }, (_, i) => p.done + i)
    const progress = this.progress
    // A child process cannot say where it was: every record not done is blamed.
    if (progress === undefined) return { blamed: notDone, remaining: [] }
    // The worker writes the call id before anything else: without it, the batch never started.
    if (Atomics.load(progress, 0) !== p.id) return { blamed: [], remaining: notDone }
    const index = Atomics.load(progress, 1)
    if (index === -2) return { blamed: notDone, remaining: [] } // lost while decoding the batch
    if (index === -1) return { blamed: 'batch', remaining: [] } // a batch handler
    return { blamed: [index], remaining: notDone.filter((i) => i !== index) }
  }

  // --- messages -----------------------------------------------------------------------------

  private receive(message: IsolateMessage): void {
    try {
      this.handle(message)
    } catch (error) {
      // A fault of the host's side (the kernel refused an emission): the instance cannot go on.
      this.lose('crash', `the host could not take what it sent: ${error instanceof Error ? error.message : String(error)}`)
    }
  }

  private handle(message: IsolateMessage): void {
    switch (message.t) {
      case 'hello':
        this.channel?.send({
          t: 'init',
          from: this.options.from,
          info: {
            job: this.info.job,
            lineage: this.info.lineage,
            operator: this.info.operator,
            instance: this.info.instance,
            parallelism: this.info.parallelism,
            batchSize: this.info.batchSize,
            ...(this.info.peer === undefined ? {} : { peer: this.info.peer }),
          },
          inputs: this.ports.inputs,
          outputs: this.ports.outputs,
          crashes: this.crashes,
          ...(this.options.observer === undefined ? {} : { watched: true }),
          ...(this.progress === undefined ? {} : { progress: this.progress.buffer as SharedArrayBuffer }),
        })
        return
      case 'ready': {
        const booting = this.booting
        if (booting === undefined) return
        clearTimeout(booting.timer)
        this.booting = undefined
        this.ready = true
        for (const queued of this.queued.splice(0)) this.channel!.send(queued)
        this.watch()
        if (this.calls.size === 0) this.channel!.unref()
        booting.resolve()
        return
      }
      case 'init-failed': {
        const booting = this.booting
        const from = this.options.from
        this.close()
        booting?.reject(new IsolationModuleError(this.info.operator, from.module, from.export ?? 'default', message.reason))
        return
      }
      case 'pong':
        for (const n of this.pings.keys()) {
          if (n > message.n) break
          this.pings.delete(n)
        }
        return
      case 'fatal':
        this.fatal = message.error
        return
      case 'sys':
        this.apply(message.sync)
        this.syscall(message)
        return
      case 'timer': {
        const ctx = this.ctx
        if (ctx === undefined) return
        const id = message.timer
        const fire = (): Promise<void> => {
          if (!message.repeat) this.timers.delete(id)
          return this.fireTimer(id)
        }
        this.timers.set(id, message.repeat ? ctx.every(message.ms, fire) : ctx.timer(message.ms, fire))
        return
      }
      case 'cancel':
        this.timers.get(message.timer)?.cancel()
        this.timers.delete(message.timer)
        return
      case 'done': {
        this.apply(message.sync)
        const call = this.calls.get(message.id)
        if (call === undefined) return
        this.calls.delete(message.id)
        if (this.calls.size === 0) this.channel?.unref()
        call.resolve(message)
        return
      }
    }
  }

  /** Delivers what the operator did: its emissions into the kernel's outputs, its touched state into the copy, its rejections as dead letters. */
  private apply(sync: Sync): void {
    const ctx = this.ctx
    if (sync.trail !== undefined) this.replay(sync.trail, sync.out)
    else if (sync.out !== undefined && ctx !== undefined) for (const { port, batch } of sync.out) ctx.emitAll(port, decodeBatch(batch))
    const delta = sync.delta
    if (delta !== undefined) {
      for (const [key, value] of delta.set) this.mirror.set(key, value)
      for (const key of delta.deleted) this.mirror.delete(key)
    }
    if (sync.rejected !== undefined && ctx !== undefined) for (const { value, reason } of sync.rejected) ctx.reject(value, reason)
    if (sync.done !== undefined && this.processing !== undefined && sync.done > this.processing.done) this.processing.done = sync.done
  }

  /** Tells the observer what the isolated side did, in order, delivering each emission after the record it came from. */
  private replay(trail: readonly TrailStep[], out: Sync['out']): void {
    const ctx = this.ctx
    const emitted = new Map<string, { readonly values: unknown[]; at: number }>()
    for (const { port, batch } of out ?? []) emitted.set(port, { values: decodeBatch(batch), at: 0 })
    const observer = this.options.observer
    for (const step of trail) {
      if (step[0] === 0) this.processing?.hook?.(step[1], step[2])
      else if (step[0] === 1) observer?.stateKey?.(step[1])
      else {
        const values = emitted.get(step[1])
        if (values === undefined || ctx === undefined || step[2] === 0) continue
        ctx.emitAll(step[1], values.at === 0 && step[2] === values.values.length ? values.values : values.values.slice(values.at, values.at + step[2]))
        values.at += step[2]
      }
    }
  }

  private syscall(message: Extract<IsolateMessage, { t: 'sys' }>): void {
    const ctx = this.ctx
    const answer = (outcome: Promise<unknown>): void => {
      outcome.then(
        (value) => this.reply(message.id, { t: 'reply', id: message.id, ok: true, value }),
        (error: unknown) => this.reply(message.id, { t: 'reply', id: message.id, ok: false, error: serializeError(error) }),
      )
    }
    if (ctx === undefined) return answer(Promise.reject(new IsolationUnsupportedError(this.info.operator, 'a syscall before start')))
    switch (message.kind) {
      case 'flush':
        return answer(ctx.flush())
      case 'call':
        return answer(ctx.call(message.name, message.argument))
      case 'request':
        return answer(ctx.request(message.port, message.value, message.timeout === undefined ? undefined : { timeout: message.timeout }))
    }
  }

  private reply(id: number, message: HostMessage): void {
    if (this.closed || this.fault !== undefined) return
    try {
      this.channel?.send(message)
    } catch (error) {
      // The value cannot be copied to the isolated side: it gets the reason instead.
      this.channel?.send({
        t: 'reply',
        id,
        ok: false,
        error: serializeError(
          new IsolationUnsupportedError(this.info.operator, `a syscall result that cannot be copied (${error instanceof Error ? error.message : String(error)})`),
        ),
      })
    }
  }

  // --- faults -------------------------------------------------------------------------------

  /** The heartbeat: a ping every quarter of `watchdogMs`; one unanswered for longer than `watchdogMs` stops the instance. */
  private watch(): void {
    const limit = this.options.watchdogMs
    if (limit <= 0 || !Number.isFinite(limit)) return
    const period = Math.max(5, Math.min(1000, limit / 4))
    this.watchdog = setInterval(() => {
      const now = performance.now()
      const n = this.nextPing++
      this.pings.set(n, now)
      this.channel?.send({ t: 'ping', n })
      const oldest = this.pings.entries().next().value
      if (oldest === undefined || now - oldest[1] <= limit) return
      // Our own thread may have been the one blocked: let pongs already queued arrive, then look again.
      setImmediate(() => {
        const still = this.pings.get(oldest[0])
        if (still === undefined || this.closed || this.fault !== undefined) return
        this.lose('watchdog', `its code ran ${Math.round(performance.now() - still)} ms without yielding (watchdogMs ${limit})`)
      })
    }, period)
    this.watchdog.unref()
  }

  private stopWatching(): void {
    if (this.watchdog !== undefined) clearInterval(this.watchdog)
    this.watchdog = undefined
    this.pings.clear()
  }

  private cancelTimers(): void {
    for (const timer of this.timers.values()) timer.cancel()
    this.timers.clear()
  }

  /** The isolated side ended. Unless the host closed it, that is a fault. */
  private exited(exit: ExitInfo): void {
    if (this.closed || this.fault !== undefined) return
    const { reason, detail } = classify(this.options.mode, exit, this.fatal)
    this.lose(reason, detail)
  }

  /** Records a fault: stops the isolated side, fails every call in flight, tells the layer. */
  private lose(reason: FaultReason, detail: string): void {
    if (this.closed || this.fault !== undefined) return
    const fault = new IsolationFaultError(this.info.operator, this.info.instance, this.options.mode, reason, detail)
    this.fault = fault
    const booting = this.booting
    this.booting = undefined
    if (booting !== undefined) clearTimeout(booting.timer)
    this.stopWatching()
    this.cancelTimers()
    this.channel?.kill()
    for (const call of this.calls.values()) call.reject(fault)
    this.calls.clear()
    booting?.reject(fault)
    this.options.onFault(fault)
  }
}

const HEAP_LIMIT = /heap out of memory|Reached heap limit|Allocation failed/i

/** Tells how an isolated side ended, from its exit code, signal, error event, fatal report and stderr. */
function classify(mode: IsolatedMode, exit: ExitInfo, fatal: SerializedError | undefined): { reason: FaultReason; detail: string } {
  const error = exit.error as (Error & { code?: string }) | undefined
  if (error?.code === 'ERR_WORKER_OUT_OF_MEMORY') return { reason: 'memory', detail: `it reached its memory limit (${error.message})` }
  if (mode === 'process' && (HEAP_LIMIT.test(exit.stderr) || exit.signal === 'SIGABRT')) {
    return { reason: 'memory', detail: `it reached its memory limit (${lastLine(exit.stderr, HEAP_LIMIT) ?? `killed by ${exit.signal ?? `exit code ${exit.code}`}`})` }
  }
  if (fatal !== undefined) return { reason: 'crash', detail: `an error nothing caught: ${fatal.name}: ${fatal.message}` }
  if (error !== undefined) return { reason: 'crash', detail: `${error.name}: ${error.message}` }
  if (exit.signal !== null) return { reason: 'crash', detail: `killed by ${exit.signal}` }
  if (exit.code === FATAL_EXIT) return { reason: 'crash', detail: `it died of an uncaught error${exit.stderr === '' ? '' : `: ${lastLine(exit.stderr) ?? ''}`}` }
  return { reason: 'exit', detail: `it exited with code ${exit.code ?? '?'} (process.exit in the operator?)` }
}

function lastLine(text: string, matching?: RegExp): string | undefined {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
  const picked = matching === undefined ? lines : lines.filter((l) => matching.test(l))
  return picked[picked.length - 1]
}
