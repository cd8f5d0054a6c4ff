// The base instance of an atom-form operator: runs handlers one record at a time with its syscalls.

import type {
  AtomBody,
  Marker,
  AtomContext,
  AtomObserver,
  Batch,
  Header,
  Instance,
  InstanceInfo,
  InstanceSpec,
  Key,
  Operator,
  Outputs,
  PortCodecs,
  RecordHook,
  RequestOptions,
  Spawned,
  SpawnOptions,
  StateSnapshot,
  TimerHandle,
  SinkBatch,
} from '../contracts.js'
import { acceptsAll, check, guardOf, renderProblem } from '../codec.js'
import {
  type CrashPhase,
  DecodeError,
  HandlerError,
  InstanceCrashedError,
  InvalidOptionError,
  JobAbortedError,
  LaminaError,
  RejectedError,
  StateRestoreError,
  UnknownOutputError,
} from '../errors.js'
import { WATERMARK } from '../time.js'
import { replyError, replyOk, type AtomServices } from './services.js'
import { StateStore } from './state.js'

/** The context object handed to every handler of one atom instance. */
class Context implements AtomContext {
  key: Key | undefined = undefined
  /** The last port checked by `emit`: most handlers emit on one port, so most emits skip the check. */
  private lastPort: string | undefined
  /** Timers set through this context and not yet done: cancelled when the instance is disposed. */
  private readonly timers = new Set<TimerHandle>()

  constructor(
    private readonly outputs: Outputs,
    private readonly services: AtomServices,
    readonly state: StateStore<unknown>,
    private readonly outputPorts: ReadonlySet<string>,
    /** Whether the operator has input ports (then it passes watermarks on, and emits none of its own). */
    private readonly hasInputs: boolean,
  ) {}

  get info(): InstanceInfo {
    return this.services.info
  }

  get signal(): AbortSignal {
    return this.services.stopSignal
  }

  emit(port: string, value: unknown): void {
    if (port !== this.lastPort) {
      if (!this.outputPorts.has(port)) throw new UnknownOutputError(this.services.info.operator, port)
      this.lastPort = port
    }
    this.outputs.emit(port, value)
  }

  emitAll(port: string, values: readonly unknown[]): void {
    if (!this.outputPorts.has(port)) throw new UnknownOutputError(this.services.info.operator, port)
    const outputs = this.outputs
    if (outputs.emitAll !== undefined) outputs.emitAll(port, values)
    else for (let i = 0; i < values.length; i++) outputs.emit(port, values[i])
  }

  flush(): Promise<void> {
    return this.services.flush()
  }

  request<R>(port: string, value: unknown, options?: RequestOptions): Promise<R> {
    if (!this.outputPorts.has(port)) return Promise.reject(new UnknownOutputError(this.services.info.operator, port))
    return this.services.request(port, value, options, (header) => this.outputs.emit(port, value, header)) as Promise<R>
  }

  timer(ms: number, fn: () => unknown): TimerHandle {
    const handle = this.services.timer(
      ms,
      () => {
        this.timers.delete(handle)
        return fn()
      },
      false,
    )
    return this.track(handle)
  }

  every(ms: number, fn: () => unknown): TimerHandle {
    return this.track(this.services.timer(ms, fn, true))
  }

  /** Cancels every timer still set (the instance is discarded). */
  cancelTimers(): void {
    for (const handle of [...this.timers]) handle.cancel()
  }

  private track(handle: TimerHandle): TimerHandle {
    this.timers.add(handle)
    return {
      cancel: () => {
        this.timers.delete(handle)
        handle.cancel()
      },
    }
  }

  sleep(ms: number): Promise<void> {
    return this.services.sleep(ms)
  }

  spawn<I extends PortCodecs>(operator: Operator<I, PortCodecs>, options?: SpawnOptions): Spawned<I> {
    return this.services.spawn(operator, options)
  }

  call(name: string, argument?: unknown): Promise<unknown> {
    return this.services.call(name, argument)
  }

  reject(value: unknown, reason: string): void {
    const where = { operator: this.services.info.operator, instance: this.services.info.instance }
    this.services.deadLetter(where, new RejectedError(this.services.info.operator, reason), value)
  }

  emitWatermark(time: number): void {
    const info = this.services.info
    if (this.hasInputs)
      throw new InvalidOptionError(`operator ${info.operator}`, 'emitWatermark', 'only sources emit watermarks: an operator with inputs passes on the minimum of theirs')
    if (this.services.watermark === undefined)
      throw new InvalidOptionError(`operator ${info.operator}`, 'emitWatermark', 'this instance runs where watermarks cannot be emitted (an isolated atom)')
    this.services.watermark(time)
  }

  markIdle(): void {
    const info = this.services.info
    if (this.hasInputs) throw new InvalidOptionError(`operator ${info.operator}`, 'markIdle', 'only sources declare idleness: an operator with inputs is idle when all of them are')
    if (this.services.markIdle === undefined)
      throw new InvalidOptionError(`operator ${info.operator}`, 'markIdle', 'this instance runs where watermarks cannot be emitted (an isolated atom)')
    this.services.markIdle()
  }
}

/** Options of `atomInstance`. All optional. */
export interface AtomInstanceOptions {
  /**
   * The state store `ctx.state` is (one built for this operator: its name, state spec and keyed-ness).
   * @default a new StateStore of the operator, told of state reads by `spec.observer.stateKey`
   */
  readonly state?: StateStore<unknown>
}

/**
 * The kernel's own instance of an atom-form operator, running on `services`: its record loop, its
 * `ctx` (the syscalls, emitting into `spec.outputs`), its state and its dead letters, exactly as
 * in a job. A job builds every atom instance this way over its driver; a layer that runs an atom
 * elsewhere passes its own services (the isolation layer's forward syscalls from a worker thread).
 * `spec.observer` watches the record loop.
 *
 * ```ts
 * const instance = atomInstance({ info, operator, outputs: { emit: (port, value) => sent.push([port, value]) } }, services)
 * await instance.start()
 * await instance.process('in', { values: ['a', 'b'] })
 * ```
 */
export function atomInstance(spec: InstanceSpec, services: AtomServices, options: AtomInstanceOptions = {}): Instance {
  return new AtomInstance(spec, services, options)
}

/**
 * Runs an atom body. Records of a batch go through their port's handler strictly one at a time:
 * a handler that returns a promise is awaited before the next record (the cooperative model:
 * awaiting yields to the runtime loop, which may resolve this atom's futures meanwhile).
 */
export class AtomInstance implements Instance {
  private readonly body: AtomBody
  private readonly ctx: Context
  private readonly state: StateStore<unknown>
  private readonly keyFn: ((value: unknown, port: string) => Key) | undefined
  private readonly checks: ReadonlyMap<string, { readonly codec: Operator['inputs'][string]['codec']; readonly is: (value: unknown) => boolean } | undefined>
  /** The operator declares `onError: 'crash'`: a failure of its code ends the instance (InstanceCrashedError). */
  private readonly crashes: boolean
  private readonly observer: AtomObserver | undefined
  /** A sink with its own commit (SinkCommit): checkpoint `id`'s output, written and recorded by the operator. */
  readonly commitStage?: (id: number, batches: readonly SinkBatch[]) => Promise<void>
  /** A sink with its own commit: the newest checkpoint it holds. */
  readonly lastCommitted?: () => Promise<number>

  constructor(
    spec: InstanceSpec,
    private readonly services: AtomServices,
    options: AtomInstanceOptions = {},
  ) {
    const body = spec.operator.body
    if (body.form !== 'atom') throw new TypeError(`AtomInstance needs an atom-form operator, got ${body.form}`)
    this.body = body
    this.crashes = spec.operator.annotations.onError === 'crash'
    this.keyFn = body.key
    const observer = spec.observer
    this.observer = observer?.batch === undefined ? undefined : observer
    const stateKey = observer?.stateKey === undefined ? undefined : (key: Key | undefined) => observer.stateKey!(key)
    this.state = options.state ?? new StateStore(spec.operator.name, body.state, body.key !== undefined, stateKey === undefined ? {} : { stateKey })
    this.ctx = new Context(spec.outputs, services, this.state, new Set(Object.keys(spec.operator.outputs)), Object.keys(spec.operator.inputs).length > 0)
    const commit = body.commit
    if (commit !== undefined) {
      this.commitStage = (id, batches) => {
        this.ctx.key = this.state.current = undefined
        return commit.write(id, batches, this.ctx)
      }
      this.lastCommitted = () => commit.committed(this.ctx)
    }
    this.checks = new Map(
      Object.entries(spec.operator.inputs).map(([port, input]) => [port, acceptsAll(input.codec) ? undefined : { codec: input.codec, is: guardOf(input.codec) }]),
    )
  }

  get info(): InstanceInfo {
    return this.services.info
  }

  start(): void | Promise<void> {
    return this.hook(this.body.start, 'start')
  }

  run(): void | Promise<void> {
    const run = this.body.run
    if (run === undefined) return
    return run(this.ctx).catch((error: unknown) => {
      // A run stopped because its job was aborted (a rescale, a recovery) has no record to blame.
      if (abortedBy(error)) return
      this.failed('run', undefined, undefined, error, 'run')
    })
  }

  end(): void | Promise<void> {
    return this.hook(this.body.end, 'end')
  }

  /** A watermark that rose reaches the atom's `watermark` hook; other markers are the layers' business. */
  marker(marker: Marker): void | Promise<void> {
    const hook = this.body.watermark
    if (marker.kind !== WATERMARK || hook === undefined) return
    return this.hook((ctx) => hook(marker.id, ctx), 'watermark')
  }

  process(port: string, batch: Batch): void | Promise<void> {
    const handler = this.body.handlers[port] as ((value: unknown, ctx: Context) => unknown) | undefined
    if (handler === undefined) return this.whole(port, batch)
    const hook = this.observer?.batch?.(port, batch)
    return this.loop(handler, port, batch, 0, hook)
  }

  snapshot(): StateSnapshot {
    // State kept outside ctx.state (the native core's) is written into it first; no key in scope.
    const save = this.body.saveState
    if (save !== undefined) {
      this.ctx.key = this.state.current = undefined
      save(this.ctx)
    }
    return this.state.snapshot()
  }

  restore(snapshot: StateSnapshot): void {
    this.state.restore(snapshot)
    const load = this.body.loadState
    if (load === undefined) return
    this.ctx.key = this.state.current = undefined
    try {
      load(this.ctx)
    } catch (error) {
      throw new StateRestoreError(this.services.info.operator, `loadState failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
    }
  }

  dispose(): void {
    this.ctx.cancelTimers()
  }

  /** Handles records from `start` on; switches to the async path at the first handler promise. */
  private loop(handler: (value: unknown, ctx: Context) => unknown, port: string, batch: Batch, start: number, hook: RecordHook | undefined): void | Promise<void> {
    // Checked ports are looked up per batch: spawning a child can add one while the atom runs.
    const guard = this.services.checkedPorts.has(port) ? this.checks.get(port)?.is : undefined
    const values = batch.values
    const headers = batch.headers
    const keyFn = this.keyFn
    const ctx = this.ctx
    const state = this.state
    for (let i = start; i < values.length; i++) {
      const value = values[i]
      const header = headers?.[i]
      if (guard !== undefined && !guard(value)) {
        this.undecodable(port, value, header, i)
        continue
      }
      let result: unknown
      try {
        if (keyFn !== undefined) ctx.key = state.current = keyFn(value, port)
        if (hook !== undefined) hook(i, ctx.key)
        result = handler(value, ctx)
      } catch (error) {
        this.failed(port, value, header, error, 'process', batch, i + 1, i)
        continue
      }
      if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
        return this.resume(result as PromiseLike<unknown>, handler, port, batch, i, header, hook)
      }
      if (header?.reply !== undefined) replyOk(header, result)
    }
    ctx.key = state.current = undefined
  }

  /** Runs a batch handler once for the batch; values that fail the port's codec become dead letters first. */
  private whole(port: string, batch: Batch): void | Promise<void> {
    const handler = this.body.batchHandlers?.[port] as ((values: readonly unknown[], ctx: Context) => unknown) | undefined
    if (handler === undefined) throw new UnknownOutputError(this.services.info.operator, `input ${port}`)
    const guard = this.services.checkedPorts.has(port) ? this.checks.get(port)?.is : undefined
    let values = batch.values
    if (guard !== undefined && !values.every(guard)) {
      values = values.filter((value, i) => {
        if (guard(value)) return true
        this.undecodable(port, value, undefined, i)
        return false
      })
    }
    batch.headers?.forEach((header) => replyOk(header, undefined))
    this.ctx.key = this.state.current = undefined
    try {
      const result = handler(values, this.ctx)
      if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
        return Promise.resolve(result).then(
          () => undefined,
          (error: unknown) => this.failed(port, values, undefined, error),
        )
      }
    } catch (error) {
      this.failed(port, values, undefined, error)
    }
  }

  private async resume(
    pending: PromiseLike<unknown>,
    handler: (value: unknown, ctx: Context) => unknown,
    port: string,
    batch: Batch,
    index: number,
    header: Header | undefined,
    hook: RecordHook | undefined,
  ): Promise<void> {
    try {
      const result = await pending
      if (header?.reply !== undefined) replyOk(header, result)
    } catch (error) {
      this.failed(port, batch.values[index], header, error, 'process', batch, index + 1, index)
    }
    await this.loop(handler, port, batch, index + 1, hook)
  }

  private undecodable(port: string, value: unknown, header: Header | undefined, index: number): void {
    const where = { operator: this.services.info.operator, port, instance: this.services.info.instance }
    const problems = check(this.checks.get(port)!.codec, value) ?? []
    const error = new DecodeError(where, problems.map(renderProblem))
    this.services.deadLetter(where, error, value, index)
    replyError(header, error)
  }

  /**
   * Records a failure of the operator's code as a dead letter (and fails the request it was
   * handling). Under `onError: 'crash'` it then throws InstanceCrashedError, carrying the records
   * of `batch` from `next` on, which the instance did not reach. `record` is the failed record's index in `batch`.
   */
  private failed(port: string, value: unknown, header: Header | undefined, cause: unknown, phase: CrashPhase = 'process', batch?: Batch, next?: number, record?: number): void {
    const where = this.where(port)
    // A kernel error raised by a syscall (emit on an unknown port, an unanswered request) keeps its
    // own code; anything else the handler threw is wrapped with where it happened.
    const error = cause instanceof LaminaError ? cause : new HandlerError(where, cause)
    this.services.deadLetter(where, error, value, record)
    replyError(header, error)
    if (!this.crashes) return
    const crashed = phase === 'process' ? where : { operator: where.operator, instance: where.instance }
    throw new InstanceCrashedError(crashed, phase, error, batch === undefined || next === undefined ? undefined : rest(batch, next))
  }

  private where(port: string): { operator: string; port: string; instance: number } {
    return { operator: this.services.info.operator, port, instance: this.services.info.instance }
  }

  private hook(fn: ((ctx: Context) => unknown) | undefined, name: 'start' | 'end' | 'watermark'): void | Promise<void> {
    if (fn === undefined) return
    this.ctx.key = this.state.current = undefined
    try {
      const result = fn(this.ctx)
      if (result !== null && typeof result === 'object' && typeof (result as PromiseLike<unknown>).then === 'function') {
        return Promise.resolve(result).then(
          () => undefined,
          (error: unknown) => this.failed(name, undefined, undefined, error, name),
        )
      }
    } catch (error) {
      this.failed(name, undefined, undefined, error, name)
    }
  }
}

/** The records of `batch` from `from` on (with their headers). */
function rest(batch: Batch, from: number): Batch {
  const values = batch.values.slice(from)
  return batch.headers === undefined ? { values } : { values, headers: batch.headers.slice(from) }
}

/** True when `error`, or an error it was caused by, is the job's abort. */
function abortedBy(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) if (e instanceof JobAbortedError) return true
  return false
}
