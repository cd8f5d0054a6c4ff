// The isolation layer: runs annotated operator instances in worker threads or child processes, and contains their faults.

import {
  DecodeError,
  HandlerError,
  InstanceCrashedError,
  InvalidOptionError,
  type LaminaError,
  StateRestoreError,
  atom,
  check,
  renderProblem,
  t,
  type AtomBody,
  type AtomContext,
  type Batch,
  type ControlRegistry,
  type CrashPhase,
  type Header,
  type Instance,
  type InstanceInfo,
  type InstanceSpec,
  type Layer,
  type Marker,
  type Operator,
  type PortCodecs,
  type StateSnapshot,
} from '../../kernel/index.js'
import { checkAnnotation, isolationOf, type IsolationAnnotation } from './annotations.js'
import { IsolatedOperatorError, IsolationFaultError, IsolationUnsupportedError, type FaultReason, type IsolatedMode } from './errors.js'
import { IsolateHost } from './host.js'
import type { SerializedError } from './protocol.js'
import { rebuildError } from './runtime.js'

/** Options of the isolation layer: defaults for annotations that leave them out. All optional. */
export interface IsolationInit {
  /** Heap limit of each worker thread or child process, in MiB. @default 256 */
  readonly memoryMb?: number
  /** The watchdog (see `IsolationAnnotation.watchdogMs`); 0 turns it off. @default 30000 */
  readonly watchdogMs?: number
  /** How long a worker thread or child process may take to load the operator's module. @default 60000 */
  readonly startTimeoutMs?: number
  /** Copy what child processes write on stderr to this process's stderr (it is kept for fault reports either way). @default true */
  readonly forwardStderr?: boolean
}

/** The isolation layer: a `Layer` named `isolation`. */
export interface IsolationLayer extends Layer {
  readonly name: 'isolation'
}

/** The `data` of a `fault` layer event: an isolated instance was lost and stopped. */
export interface FaultEventData {
  readonly operator: string
  readonly instance: number
  readonly mode: IsolatedMode
  readonly reason: FaultReason
  readonly detail: string
}

/** One job share's isolated instances (a job id runs on several peers, in one process in tests). */
interface Share {
  readonly hosts: Set<IsolateHost>
  readonly notify: (kind: string, message: string, data: FaultEventData) => void
}

/**
 * The isolation layer. Operators annotated with `isolate(op, { mode: 'worker' | 'process', from })`
 * run each instance in a worker thread or a child process of their peer, rebuilt there from the
 * module `from` names; everything else runs in-process as usual. Batches cross the boundary as one
 * buffer each; emissions come back with the state they changed, so `snapshot()` is synchronous
 * and always matches the output delivered. When the worker or child is lost (the watchdog stops a
 * busy loop, the memory limit is hit, the operator calls `process.exit`, it crashes), the instance
 * fails with InstanceCrashedError caused by IsolationFaultError (`ERR_ISOLATION_FAULT`), the
 * record it was handling is a dead letter, and a `fault` layer event is reported; a supervision
 * layer restarts it, and without one the job fails. Other operators are not affected.
 *
 * ```ts
 * const job = kernel.with(supervision(), isolation({ memoryMb: 128, watchdogMs: 5000 })).run(p)
 * ```
 *
 * The layer sits below `supervision`, `checkpoints` and `metadata` (nearest the kernel), so a
 * restart builds a fresh worker and checkpoints snapshot through the host's copy of the state.
 */
export function isolation(init: IsolationInit = {}): IsolationLayer {
  const memoryMb = positive('memoryMb', init.memoryMb ?? 256, 8)
  const watchdogMs = positive('watchdogMs', init.watchdogMs ?? 30_000, 0)
  const startTimeoutMs = positive('startTimeoutMs', init.startTimeoutMs ?? 60_000, 1)
  const forwardStderr = init.forwardStderr ?? true
  const shares = new Map<string, Share>()

  return {
    name: 'isolation',
    after: ['supervision', 'checkpoints', 'metadata'],
    control(registry: ControlRegistry) {
      const key = shareKey(registry.job.id, registry.cluster.self)
      const share: Share = { hosts: new Set(), notify: (kind, message, data) => registry.notify(kind, message, data) }
      shares.set(key, share)
      const forget = (): void => {
        // Whatever is still running when the job ends (it failed, or was aborted) is stopped: no orphans.
        for (const host of share.hosts) host.close()
        share.hosts.clear()
        shares.delete(key)
      }
      registry.job.events.subscribe({ next: (event) => (event.type === 'finished' || event.type === 'failed' ? forget() : undefined), complete: forget })
    },
    instance(spec: InstanceSpec, next: (spec: InstanceSpec) => Instance): Instance {
      const annotation = isolationOf(spec.operator)
      if (annotation === undefined) return next(spec)
      checkAnnotation(spec.operator.name, annotation)
      if (spec.operator.body.form !== 'atom') throw new IsolationUnsupportedError(spec.operator.name, `a ${spec.operator.body.form}-form body`)
      const share = shares.get(shareKey(spec.info.job, spec.info.peer ?? 'local'))
      return new IsolatedInstance(spec, next, annotation, { memoryMb, watchdogMs, startTimeoutMs, forwardStderr }, share)
    },
  }
}

function shareKey(job: string, peer: string): string {
  return `${job}\u0000${peer}`
}

function positive(option: string, value: number, min: number): number {
  if (typeof value !== 'number' || Number.isNaN(value) || value < min)
    throw new InvalidOptionError('isolation layer', option, `must be a number ≥ ${min}, got ${JSON.stringify(value)}`)
  return value
}

/**
 * One isolated operator instance, as the kernel drives it. The work happens on the isolated side;
 * on this side a stand-in atom (built by the layers below, so it has the kernel's own syscalls)
 * delivers emissions, serves syscalls and fires timers, and records dead letters the way the
 * kernel does: its handlers throw the error each failed record is recorded with.
 */
class IsolatedInstance implements Instance {
  readonly info: InstanceInfo
  private readonly operator: Operator
  private readonly host: IsolateHost
  private readonly inner: Instance
  private readonly crashes: boolean
  /** The errors the stand-in's handlers throw, one per record handed to it, in order. */
  private letters: LaminaError[] = []
  /** A failure of start, run or end that ends the instance (a fault, or any failure under `onError: 'crash'`). */
  private crash: InstanceCrashedError | undefined

  constructor(
    spec: InstanceSpec,
    next: (spec: InstanceSpec) => Instance,
    annotation: IsolationAnnotation,
    defaults: { readonly memoryMb: number; readonly watchdogMs: number; readonly startTimeoutMs: number; readonly forwardStderr: boolean },
    private readonly share: Share | undefined,
  ) {
    this.info = spec.info
    this.operator = spec.operator
    this.crashes = spec.operator.annotations.onError === 'crash'
    const mode = annotation.mode as IsolatedMode
    this.host = new IsolateHost(
      spec.info,
      { inputs: Object.keys(spec.operator.inputs), outputs: Object.keys(spec.operator.outputs), records: Object.keys((spec.operator.body as AtomBody).handlers) },
      this.crashes,
      {
        mode,
        from: annotation.from!,
        memoryMb: annotation.memoryMb ?? defaults.memoryMb,
        watchdogMs: annotation.watchdogMs ?? defaults.watchdogMs,
        startTimeoutMs: defaults.startTimeoutMs,
        forwardStderr: defaults.forwardStderr,
        // A layer above watching the record loop (metadata) is told what the isolated side did.
        ...(spec.observer === undefined ? {} : { observer: spec.observer }),
        onFault: (fault) =>
          share?.notify('fault', `${spec.info.operator}[${spec.info.instance}] stopped: ${fault.message}`, {
            operator: spec.info.operator,
            instance: spec.info.instance,
            mode,
            reason: fault.reason,
            detail: fault.detail,
          }),
      },
    )
    share?.hosts.add(this.host)
    // The stand-in's own records (dead letters handed to it) are not the operator's: nobody watches them.
    this.inner = next({ ...spec, operator: this.standIn(), observer: undefined })
  }

  /** The operator the layers below build: same name and ports; its hooks drive the isolated side. */
  private standIn(): Operator {
    const real = this.operator
    const letter = (): never => {
      throw this.letters.shift() ?? new IsolationUnsupportedError(real.name, 'a record without a reason')
    }
    // Inputs accept anything here: values were checked on the isolated side, and a batch handler's failure is recorded with the whole batch as its value.
    const inputs: PortCodecs = Object.fromEntries(Object.keys(real.inputs).map((port) => [port, t.unknown]))
    const outputs: PortCodecs = Object.fromEntries(Object.entries(real.outputs).map(([port, out]) => [port, out.codec]))
    const on = Object.fromEntries(Object.keys(real.inputs).map((port) => [port, letter]))
    const hasRun = (real.body as AtomBody).run !== undefined
    return atom<PortCodecs, PortCodecs, unknown>({
      name: real.name,
      inputs,
      outputs,
      on,
      start: (ctx) => this.started(ctx),
      ...(hasRun ? { run: () => this.lifecycle('run') } : {}),
      end: () => this.lifecycle('end'),
      annotations: { ...real.annotations, onError: 'dead-letter' },
    })
  }

  // --- Instance -------------------------------------------------------------------------------

  async start(): Promise<void> {
    this.unlessFaulted('start')
    try {
      await this.host.boot()
    } catch (error) {
      if (error instanceof IsolationFaultError) throw new InstanceCrashedError(this.at(), 'start', error)
      throw error // IsolationModuleError: the annotation is wrong; a restart would not help.
    }
    await this.inner.start()
    this.rethrow()
  }

  run(): void | Promise<void> {
    this.unlessFaulted('run')
    const running = this.inner.run()
    if (running === undefined) return this.rethrow()
    return running.then(() => this.rethrow())
  }

  async process(port: string, batch: Batch): Promise<void> {
    const where = { operator: this.info.operator, port, instance: this.info.instance }
    if (this.host.fault !== undefined) throw new InstanceCrashedError(where, 'process', this.host.fault, batch)
    const outcome = await this.host.process(port, batch)
    const { values, headers } = batch
    const letters: { value: unknown; header: Header | undefined; error: LaminaError }[] = []
    if (outcome.kind === 'fault') {
      const fault = outcome.fault
      if (outcome.blamed === 'batch') letters.push({ value: values, header: undefined, error: fault })
      else for (const i of outcome.blamed) letters.push({ value: values[i], header: headers?.[i], error: fault })
      await this.deadLetters(port, letters)
      throw new InstanceCrashedError(where, 'process', fault, pick(batch, outcome.remaining))
    }
    const done = outcome.done
    for (const failure of done.failures ?? []) {
      const value = values[failure.index]
      letters.push({ value, header: headers?.[failure.index], error: failure.undecodable === true ? this.undecodable(port, value) : this.cause(port, failure.error) })
    }
    if (done.batchFailed !== undefined) {
      const undecodable = new Set((done.failures ?? []).map((f) => f.index))
      letters.push({ value: values.filter((_, i) => !undecodable.has(i)), header: undefined, error: this.cause(port, done.batchFailed) })
    }
    for (const [index, value] of done.replies ?? []) headers?.[index]?.reply?.({ ok: true, value })
    await this.deadLetters(port, letters)
    // A batch handler's records cannot be requests: they are answered with undefined, as in-process.
    if (headers !== undefined && this.operator.body.form === 'atom' && this.operator.body.handlers[port] === undefined)
      for (const header of headers) header?.reply?.({ ok: true, value: undefined })
    if (done.crashedAt !== undefined) throw new InstanceCrashedError(where, 'process', letters[letters.length - 1]!.error, rest(batch, done.crashedAt + 1))
    if (done.batchFailed !== undefined && this.crashes) throw new InstanceCrashedError(where, 'process', letters[letters.length - 1]!.error)
  }

  async end(): Promise<void> {
    this.unlessFaulted('end')
    try {
      await this.inner.end()
    } finally {
      this.host.close()
      this.share?.hosts.delete(this.host)
    }
    this.rethrow()
  }

  marker(marker: Marker): void | Promise<void> {
    // The host's copy of the state is current at every call boundary: nothing to fetch for a checkpoint.
    this.unlessFaulted('process')
    return this.inner.marker?.(marker)
  }

  snapshot(): StateSnapshot {
    return { operator: this.operator.name, entries: [...this.host.mirror] }
  }

  restore(snapshot: StateSnapshot): void {
    const body = this.operator.body as AtomBody
    const keyed = body.key !== undefined
    for (const [key, encoded] of snapshot.entries) {
      if (body.state !== undefined && body.state.codec.decode(encoded)._tag === 'Left') {
        const problems = check(body.state.codec, encoded) ?? []
        throw new StateRestoreError(this.operator.name, `key ${JSON.stringify(key)}: ${problems.map(renderProblem).join('; ')}`)
      }
      if ((key === null) === keyed)
        throw new StateRestoreError(this.operator.name, `snapshot is ${key === null ? 'unkeyed' : 'keyed'} but the operator is ${keyed ? 'keyed' : 'unkeyed'}`)
    }
    this.host.restore(snapshot.entries)
  }

  dispose(): void {
    this.host.close()
    this.share?.hosts.delete(this.host)
    this.inner.dispose?.()
  }

  // --- the stand-in's hooks -----------------------------------------------------------------

  private async started(ctx: AtomContext<PortCodecs, unknown>): Promise<void> {
    this.host.attach(ctx)
    await this.lifecycle('start')
  }

  /** Runs start, run or end on the isolated side; a failure is thrown for the kernel to record, and kept to end the instance when it must. */
  private async lifecycle(phase: 'start' | 'run' | 'end'): Promise<void> {
    let error: LaminaError | undefined
    try {
      const done = await this.host.lifecycle(phase)
      if (done.error !== undefined) error = this.cause(phase, done.error)
    } catch (fault) {
      if (!(fault instanceof IsolationFaultError)) throw fault
      error = fault
    }
    if (error === undefined) return
    if (error instanceof IsolationFaultError || this.crashes) this.crash ??= new InstanceCrashedError(this.at(), phase, error)
    throw error
  }

  // --- dead letters and crashes ---------------------------------------------------------------

  /** Hands failed records to the stand-in, whose handlers throw their errors: the kernel records each as it records an in-process failure. */
  private async deadLetters(port: string, letters: readonly { value: unknown; header: Header | undefined; error: LaminaError }[]): Promise<void> {
    if (letters.length === 0) return
    this.letters = letters.map((l) => l.error)
    const values = letters.map((l) => l.value)
    const batch: Batch = letters.some((l) => l.header !== undefined) ? { values, headers: letters.map((l) => l.header) } : { values }
    try {
      await this.inner.process(port, batch)
    } finally {
      this.letters = []
    }
  }

  /** What a failure of the operator's code is recorded with: a Lamina error keeps its code; anything else is a HandlerError, as in-process. */
  private cause(port: string, serialized: SerializedError): LaminaError {
    if (serialized.lamina && serialized.code !== undefined) return new IsolatedOperatorError(serialized.code, serialized.name, serialized.message, serialized.stack)
    return new HandlerError({ operator: this.info.operator, port, instance: this.info.instance }, rebuildError(serialized))
  }

  private undecodable(port: string, value: unknown): DecodeError {
    const codec = this.operator.inputs[port]!.codec
    return new DecodeError({ operator: this.info.operator, port, instance: this.info.instance }, (check(codec, value) ?? []).map(renderProblem))
  }

  private at(): { operator: string; instance: number } {
    return { operator: this.info.operator, instance: this.info.instance }
  }

  /** A call after the isolated side was lost fails at once (nothing more is recorded). */
  private unlessFaulted(phase: CrashPhase): void {
    if (this.crash !== undefined) throw this.crash
    if (this.host.fault !== undefined) throw new InstanceCrashedError(this.at(), phase, this.host.fault)
  }

  private rethrow(): void {
    if (this.crash !== undefined) throw this.crash
  }
}

/** The records of `batch` at `indices` (with their headers). */
function pick(batch: Batch, indices: readonly number[]): Batch {
  const values = indices.map((i) => batch.values[i])
  const headers = batch.headers
  return headers === undefined ? { values } : { values, headers: indices.map((i) => headers[i]) }
}

/** The records of `batch` from `from` on. */
function rest(batch: Batch, from: number): Batch {
  const values = batch.values.slice(from)
  return batch.headers === undefined ? { values } : { values, headers: batch.headers.slice(from) }
}
