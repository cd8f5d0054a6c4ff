// The isolated side of an isolated instance: runs one atom-form operator in a worker thread or child process on the kernel's own atom runtime, driven by the host's calls.
//
// The operator runs as the kernel's atom instance (`atomInstance`): the same record loop, `ctx`,
// state store and dead-letter rules as on the main thread. What differs are its services: the
// syscalls that need the peer are forwarded to the host as messages (flush with the host's
// backpressure, call, request, timers), emissions wait in buffers until the next sync, and dead
// letters are reported to the host, which records them. The operator reaches nothing else of the
// peer: no other operator's state, no channel, no libp2p node.

import {
  DecodeError,
  HandlerError,
  InstanceCrashedError,
  JobAbortedError,
  RejectedError,
  StateStore,
  atomInstance,
  type AtomServices,
  type Batch,
  type Header,
  type Instance,
  type InstanceInfo,
  type Key,
  type LaminaError,
  type Operator,
  type Outputs,
  type PortCodecs,
  type RecordHook,
  type RequestOptions,
  type Spawned,
  type TimerHandle,
  type Where,
} from '../../kernel/index.js'
import { decodeBatch, encodeBatch, type EncodedBatch } from './batch-codec.js'
import { IsolatedOperatorError, IsolationUnsupportedError } from './errors.js'
import {
  serializeError,
  transfers,
  type DoneMessage,
  type HostMessage,
  type IsolateMessage,
  type RecordFailure,
  type SerializedError,
  type Sync,
  type TrailStep,
} from './protocol.js'

/** Sends a message to the host (transferring `transfer` where the boundary allows it). */
export type SendToHost = (message: IsolateMessage, transfer: readonly ArrayBuffer[]) => void

/** A syscall waiting for the host's reply. */
interface Waiting {
  readonly resolve: (value: unknown) => void
  readonly reject: (error: unknown) => void
}

/** One `process` call in flight: what it collected for the host. */
interface Processing {
  readonly port: string
  /** The port has a batch handler, not a record handler. */
  readonly whole: boolean
  readonly failures: RecordFailure[]
  readonly replies: [number, unknown][]
  batchFailed?: unknown
}

/** A lifecycle hook the host can call. */
type Phase = 'start' | 'run' | 'end'

const UNDECODABLE: SerializedError = { name: 'DecodeError', message: 'does not fit the port codec', lamina: true }

/**
 * The isolated operator's outputs: emissions wait in one buffer per port until the next sync.
 * When the host watches the instance they also leave a trail: which record each came from, and
 * which key's state was read outside a record, in the order it happened.
 */
class Emissions implements Outputs {
  private readonly buffers = new Map<string, unknown[]>()
  /** Set while the host watches the instance. */
  trail: TrailStep[] | undefined
  /** The trail's last step when it counts emissions: consecutive emissions on one port share it. */
  private counting: [2, string, number] | undefined
  // The buffer of the last port emitted on (a sync swaps the buffers out).
  private lastPort: string | undefined
  private lastBuffer: unknown[] | undefined

  constructor(ports: readonly string[], watched: boolean) {
    for (const port of ports) this.buffers.set(port, [])
    if (watched) this.trail = []
  }

  emit(port: string, value: unknown): void {
    let buffer = this.lastBuffer
    if (port !== this.lastPort) {
      buffer = this.buffers.get(port)
      // The kernel's ctx checked the port: every declared output has a buffer.
      if (buffer === undefined) return
      this.lastPort = port
      this.lastBuffer = buffer
    }
    buffer!.push(value)
    if (this.trail !== undefined) this.count(port, 1)
  }

  emitAll(port: string, values: readonly unknown[]): void {
    const buffer = this.buffers.get(port)
    if (buffer === undefined) return
    for (let i = 0; i < values.length; i++) buffer.push(values[i])
    if (this.trail !== undefined && values.length > 0) this.count(port, values.length)
  }

  /** Adds a step that is not an emission to the trail. */
  mark(step: TrailStep): void {
    this.trail!.push(step)
    this.counting = undefined
  }

  private count(port: string, n: number): void {
    const step = this.counting
    if (step !== undefined && step[1] === port) step[2] += n
    else {
      const counting: [2, string, number] = [2, port, n]
      this.trail!.push(counting)
      this.counting = counting
    }
  }

  /**
   * Takes what was emitted since the last call, encoded per port, and the trail. A value that
   * cannot cross (a function, a symbol) is rejected with the reason instead, and left out of the
   * trail's counts.
   */
  take(rejected: { value: unknown; reason: string }[]): { out: { port: string; batch: EncodedBatch }[] | undefined; trail: TrailStep[] | undefined } {
    let out: { port: string; batch: EncodedBatch }[] | undefined
    const trail = this.trail
    for (const [port, values] of this.buffers) {
      if (values.length === 0) continue
      this.buffers.set(port, [])
      let batch: EncodedBatch | undefined
      try {
        batch = encodeBatch(values)
      } catch {
        const kept = values.map((value) => {
          try {
            encodeBatch([value])
            return true
          } catch (error) {
            rejected.push({
              value: String(value),
              reason: `a value emitted on ${port} cannot leave the isolated operator: ${error instanceof Error ? error.message : String(error)}`,
            })
            return false
          }
        })
        const encodable = values.filter((_, i) => kept[i])
        if (encodable.length > 0) batch = encodeBatch(encodable)
        if (trail !== undefined) recount(trail, port, kept)
      }
      if (batch !== undefined) (out ??= []).push({ port, batch })
    }
    this.lastPort = undefined
    this.lastBuffer = undefined
    this.counting = undefined
    if (trail === undefined || trail.length === 0) return { out, trail: undefined }
    this.trail = []
    return { out, trail }
  }
}

/** Lowers the emission counts of `port` in `trail` to the values kept (`kept[i]` for the i-th value emitted on it). */
function recount(trail: TrailStep[], port: string, kept: readonly boolean[]): void {
  let at = 0
  for (const step of trail) {
    if (step[0] !== 2 || step[1] !== port) continue
    const n = step[2]
    let left = 0
    for (let i = at; i < at + n; i++) if (kept[i] === true) left++
    at += n
    ;(step as [2, string, number])[2] = left
  }
}

/**
 * Runs one operator instance on the isolated side: the kernel's atom instance, over services that
 * forward to the host. Records of a batch go through their port's handler one at a time, as on
 * the main thread; a handler's promise is awaited before the next record.
 */
export class IsolateRuntime implements AtomServices {
  readonly info: InstanceInfo
  /** Values crossed a thread or process boundary: every input is checked against its port's codec. */
  readonly checkedPorts: ReadonlySet<string>
  private readonly abort = new AbortController()
  private readonly rejected: { value: unknown; reason: string }[] = []
  private readonly instance: Instance
  /**
   * The operator keeps state outside ctx.state (the native core's) and writes it there in
   * `saveState`: the host snapshots its mirror of the state without asking this side, so every
   * sync runs `saveState` first (a cost per batch of the state's size, paid only by such operators).
   */
  private readonly savesState: boolean
  private readonly state: StateStore<unknown>
  private readonly outputs: Emissions
  private readonly recordPorts: ReadonlySet<string>
  private readonly hook: RecordHook
  private readonly waiting = new Map<number, Waiting>()
  private readonly timers = new Map<number, { readonly fn: () => unknown; readonly repeat: boolean }>()
  private nextSyscall = 1
  private nextTimer = 1
  /** The `process` call in flight, and the record whose handler runs in it (for `Sync.done`). */
  private processing: Processing | undefined
  private record: number | undefined
  /** The host watches the records of the `process` call in flight (its batch is traced). */
  private watchingRecords = false
  /** What the operator's code threw in a lifecycle hook, as the kernel recorded it. */
  private readonly hookFailures = new Map<Phase, LaminaError>()

  constructor(
    operator: Operator,
    info: InstanceInfo,
    crashes: boolean,
    private readonly send: SendToHost,
    /** `[call id, record index]`, shared with the host (worker threads only). */
    private readonly progress: Int32Array | undefined,
    /** The host watches the instance (a layer there observes its record loop): keep a trail. */
    watched = false,
  ) {
    const body = operator.body
    if (body.form !== 'atom') throw new IsolationUnsupportedError(info.operator, `a ${body.form}-form body`)
    this.info = info
    this.checkedPorts = new Set(Object.keys(operator.inputs))
    this.recordPorts = new Set(Object.keys(body.handlers))
    this.outputs = new Emissions(Object.keys(operator.outputs), watched)
    const outputs = this.outputs
    this.state = new StateStore(operator.name, body.state, body.key !== undefined, {
      trackChanges: true,
      ...(watched ? { stateKey: (key: Key | undefined) => outputs.mark([1, key]) } : {}),
    })
    this.hook = (index, key) => {
      if (this.progress !== undefined) Atomics.store(this.progress, 1, index)
      this.record = index
      if (this.watchingRecords) outputs.mark([0, index, key])
    }
    // The host decides whether a failure crashes the instance: the annotated operator's onError, not the module's.
    const spec = { info, operator: operator.annotate({ onError: crashes ? 'crash' : 'dead-letter' }), outputs, observer: { batch: () => this.hook } }
    this.instance = atomInstance(spec, this, { state: this.state })
    this.savesState = body.saveState !== undefined
  }

  get stopSignal(): AbortSignal {
    return this.abort.signal
  }

  /** Handles one message from the host. */
  receive(message: HostMessage): void {
    switch (message.t) {
      case 'call':
        this.dispatch(message)
        return
      case 'reply': {
        const waiting = this.waiting.get(message.id)
        if (waiting === undefined) return
        this.waiting.delete(message.id)
        if (message.ok) waiting.resolve(message.value)
        else waiting.reject(rebuildError(message.error))
        return
      }
      case 'restore':
        // The host checked the entries against the state codec already.
        this.instance.restore({ operator: this.info.operator, entries: message.entries })
        return
      case 'abort':
        this.abort.abort(message.reason)
        return
      default:
        return
    }
  }

  /** Runs one of the host's calls. */
  private dispatch(message: Extract<HostMessage, { t: 'call' }>): void {
    const id = message.id
    switch (message.op) {
      case 'process':
        this.process(id, message.port, message.batch, message.requests, message.observe === true)
        return
      case 'start':
        return this.lifecycle(id, 'start', () => this.instance.start())
      case 'end':
        return this.lifecycle(id, 'end', () => this.instance.end())
      case 'run':
        return this.lifecycle(id, 'run', () => this.instance.run())
      case 'timer': {
        const timer = this.timers.get(message.timer)
        if (timer !== undefined && !timer.repeat) this.timers.delete(message.timer)
        return this.fire(id, timer?.fn)
      }
    }
  }

  /** Runs a lifecycle hook through the kernel's instance and reports its outcome. */
  private lifecycle(id: number, phase: Phase, fn: () => void | Promise<void>): void {
    this.started(id)
    this.hookFailures.delete(phase)
    const report = (thrown?: unknown): void => {
      // The kernel recorded the operator's failure (then threw InstanceCrashedError under onError: 'crash'): the host decides what it ends.
      const failure = this.hookFailures.get(phase) ?? (thrown instanceof InstanceCrashedError ? thrown.cause : thrown)
      this.hookFailures.delete(phase)
      this.done({ t: 'done', id, sync: this.sync(), ...(failure === undefined ? {} : { error: serializeError(original(failure)) }) })
    }
    let result: void | Promise<void>
    try {
      result = fn()
    } catch (error) {
      return report(error)
    }
    if (result === undefined) return report()
    result.then(() => report(), report)
  }

  /** Runs a timer callback the operator set (its timers are interrupts: never during a handler). */
  private fire(id: number, fn: (() => unknown) | undefined): void {
    this.started(id)
    this.state.current = undefined
    const report = (error?: unknown): void => this.done({ t: 'done', id, sync: this.sync(), ...(error === undefined ? {} : { error: serializeError(error) }) })
    let result: unknown
    try {
      result = fn?.()
    } catch (error) {
      return report(error)
    }
    if (!isThenable(result)) return report()
    Promise.resolve(result).then(
      () => report(),
      (error: unknown) => report(error ?? new Error('the timer callback rejected')),
    )
  }

  /** The host reads `[call, record]` after a fault: -1 is "in a call, at no record". */
  private started(id: number): void {
    if (this.progress === undefined) return
    Atomics.store(this.progress, 0, id)
    Atomics.store(this.progress, 1, -1)
  }

  private process(id: number, port: string, encoded: EncodedBatch, requests: readonly number[] | undefined, watched: boolean): void {
    // -2 is "started, no record yet" (decoding); a batch handler's call stays at -1.
    if (this.progress !== undefined) {
      Atomics.store(this.progress, 1, -2)
      Atomics.store(this.progress, 0, id)
    }
    const values = decodeBatch(encoded)
    const whole = !this.recordPorts.has(port)
    if (whole && this.progress !== undefined) Atomics.store(this.progress, 1, -1)
    const p: Processing = { port, whole, failures: [], replies: [] }
    this.processing = p
    this.watchingRecords = watched
    // Requests get a reply path the kernel answers through, as in-process (a batch handler's are answered by the host).
    let batch: Batch = { values }
    if (requests !== undefined && requests.length > 0 && !whole) {
      const headers = new Array<Header | undefined>(values.length).fill(undefined)
      for (const index of requests) headers[index] = { reply: (outcome) => void (outcome.ok ? p.replies.push([index, outcome.value]) : undefined) }
      batch = { values, headers }
    }
    let processing: void | Promise<void>
    try {
      processing = this.instance.process(port, batch)
    } catch (error) {
      return this.finish(id, p, error)
    }
    if (processing === undefined) return this.finish(id, p)
    processing.then(
      () => this.finish(id, p),
      (error: unknown) => this.finish(id, p, error),
    )
  }

  private finish(id: number, p: Processing, error?: unknown): void {
    let crashedAt: number | undefined
    if (error instanceof InstanceCrashedError) {
      // The record whose failure ended the batch is the last one recorded (a batch handler's crash is the host's to decide).
      if (!p.whole) crashedAt = p.failures[p.failures.length - 1]?.index
    } else if (error !== undefined) p.batchFailed ??= error
    const done: DoneMessage = {
      t: 'done',
      id,
      sync: this.sync(),
      ...(p.failures.length === 0 ? {} : { failures: p.failures }),
      ...(p.replies.length === 0 ? {} : { replies: p.replies }),
      ...(crashedAt === undefined ? {} : { crashedAt }),
      ...(p.batchFailed === undefined ? {} : { batchFailed: serializeError(original(p.batchFailed)) }),
    }
    this.processing = undefined
    this.record = undefined
    this.watchingRecords = false
    this.done(done)
  }

  private done(message: DoneMessage): void {
    this.send(message, transfers(message.sync))
  }

  /** Everything the operator did since the last sync: emissions (encoded), the trail, touched state, rejected values. */
  private sync(): Sync {
    const { out, trail } = this.outputs.take(this.rejected)
    if (this.savesState) this.instance.snapshot()
    const delta = this.state.takeChanges()
    const rejected = this.rejected.length === 0 ? undefined : this.rejected.splice(0)
    const record = this.record
    return {
      ...(out === undefined ? {} : { out }),
      ...(trail === undefined ? {} : { trail }),
      ...(delta === undefined ? {} : { delta }),
      ...(rejected === undefined ? {} : { rejected }),
      ...(record === undefined ? {} : { done: record + 1 }),
    }
  }

  // --- AtomServices: what the kernel's instance runs on ----------------------------------------

  /**
   * The kernel records a value it did not process: a rejected value goes to the host with its
   * reason; a record that failed (its index) or a failed batch handler goes in the `process`
   * call's outcome; a lifecycle hook's failure in that call's.
   */
  deadLetter(where: Where, error: LaminaError, value: unknown, record?: number): void {
    if (error instanceof RejectedError) {
      this.rejected.push({ value, reason: error.reason })
      return
    }
    const p = this.processing
    if (p !== undefined && record !== undefined) {
      p.failures.push(error instanceof DecodeError ? { index: record, undecodable: true, error: UNDECODABLE } : { index: record, error: serializeError(original(error)) })
      return
    }
    if (p?.whole && where.port === p.port) {
      p.batchFailed = error
      return
    }
    if (where.port === 'start' || where.port === 'run' || where.port === 'end') this.hookFailures.set(where.port, error)
  }

  emitted(): void {
    // Emissions wait for the next sync: nothing to wake.
  }

  /** Sends what the operator did and waits until the host's outputs have credit again. */
  flush(): Promise<void> {
    const sync = this.sync()
    if (sync.out === undefined && sync.delta === undefined && sync.rejected === undefined && sync.trail === undefined) return Promise.resolve()
    return this.syscallWith({ kind: 'flush' }, sync) as Promise<void>
  }

  request(port: string, value: unknown, options: RequestOptions | undefined): Promise<unknown> {
    return this.syscallWith({ kind: 'request', port, value, ...(options?.timeout === undefined ? {} : { timeout: options.timeout }) }, this.sync(), options?.signal)
  }

  call(name: string, argument: unknown): Promise<unknown> {
    return this.syscallWith({ kind: 'call', name, argument }, this.sync())
  }

  /** A timer the host fires (as an interrupt of the instance, never during a handler). */
  timer(ms: number, fn: () => unknown, repeat: boolean): TimerHandle {
    const id = this.nextTimer++
    this.timers.set(id, { fn, repeat })
    this.send({ t: 'timer', timer: id, ms, repeat }, [])
    return {
      cancel: () => {
        if (this.timers.delete(id)) this.send({ t: 'cancel', timer: id }, [])
      },
    }
  }

  sleep(ms: number): Promise<void> {
    const signal = this.abort.signal
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) return reject(new JobAbortedError(this.info.job, signal.reason))
      const onAbort = (): void => {
        clearTimeout(id)
        reject(new JobAbortedError(this.info.job, signal.reason))
      }
      const id = setTimeout(() => {
        signal.removeEventListener('abort', onAbort)
        resolve()
      }, ms)
      signal.addEventListener('abort', onAbort, { once: true })
    })
  }

  spawn<I extends PortCodecs>(): Spawned<I> {
    throw new IsolationUnsupportedError(this.info.operator, 'ctx.spawn')
  }

  /** Forwards a syscall to the host, after what the operator did so far. */
  private syscallWith(
    request: { kind: 'flush' } | { kind: 'call'; name: string; argument: unknown } | { kind: 'request'; port: string; value: unknown; timeout?: number },
    sync: Sync,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const id = this.nextSyscall++
    return new Promise<unknown>((resolve, reject) => {
      if (signal?.aborted === true) return reject(new JobAbortedError(this.info.job, signal.reason))
      this.waiting.set(id, { resolve, reject })
      signal?.addEventListener(
        'abort',
        () => {
          if (this.waiting.delete(id)) reject(new JobAbortedError(this.info.job, signal.reason))
        },
        { once: true },
      )
      this.send({ t: 'sys', id, ...request, sync } as IsolateMessage, transfers(sync))
    })
  }
}

/** What the operator's code threw: the kernel wraps anything that is not a Lamina error in a HandlerError, which the host rebuilds itself. */
function original(error: unknown): unknown {
  return error instanceof HandlerError ? error.cause : error
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as PromiseLike<unknown>).then === 'function'
}

/** An error from the host, as the isolated operator sees it. */
export function rebuildError(serialized: SerializedError): Error {
  if (serialized.lamina && serialized.code !== undefined) return new IsolatedOperatorError(serialized.code, serialized.name, serialized.message, serialized.stack)
  const error = new Error(serialized.message)
  error.name = serialized.name
  if (serialized.stack !== undefined) error.stack = serialized.stack
  return error
}
