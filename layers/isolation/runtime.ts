// The isolated side of an isolated instance: runs one atom-form operator in a worker thread or child process, driven by the host's calls.
//
// It does what the kernel's atom instance does on the main thread (records one at a time, keyed
// state, the syscalls), with the syscalls that need the peer forwarded to the host as messages:
// flush (with the host's backpressure), call, request, timers. The operator reaches nothing else
// of the peer: no other operator's state, no channel, no libp2p node.

import {
  JobAbortedError,
  NoKeyInScopeError,
  StateRestoreError,
  UnknownOutputError,
  check,
  renderProblem,
  type AtomBody,
  type AtomContext,
  type InstanceInfo,
  type Key,
  type Operator,
  type RequestOptions,
  type Spawned,
  type StateAccess,
  type StateSpec,
  type TimerHandle,
} from '../../kernel/index.js'
import { decodeBatch, encodeBatch, type EncodedBatch } from './batch-codec.js'
import { IsolatedOperatorError, IsolationUnsupportedError } from './errors.js'
import { serializeError, transfers, type DoneMessage, type HostMessage, type IsolateMessage, type RecordFailure, type SerializedError, type StateDelta, type Sync } from './protocol.js'

/** Sends a message to the host (transferring `transfer` where the boundary allows it). */
export type SendToHost = (message: IsolateMessage, transfer: readonly ArrayBuffer[]) => void

/** The single slot of an unkeyed operator (the kernel's state store uses the same key). */
const SLOT = '\u0000slot'

/** Keyed (or single-slot) state that remembers which keys were touched since the last sync. */
class TrackedState implements StateAccess<unknown> {
  private readonly values = new Map<Key, unknown>()
  /** Keys read or written since the last delta: a value read may have been mutated in place. */
  private readonly touched = new Set<Key>()
  current: Key | undefined

  constructor(
    private readonly operator: string,
    private readonly spec: StateSpec<unknown> | undefined,
    private readonly keyed: boolean,
  ) {}

  private slot(): Key {
    if (!this.keyed) return SLOT
    if (this.current === undefined) throw new NoKeyInScopeError(this.operator)
    return this.current
  }

  get(): unknown {
    return this.of(this.slot())
  }

  of(key: Key): unknown {
    this.touched.add(key)
    const values = this.values
    let value = values.get(key)
    if (value === undefined && !values.has(key)) {
      value = this.spec === undefined ? undefined : this.spec.init()
      values.set(key, value)
    }
    return value
  }

  set(value: unknown): void {
    const key = this.slot()
    this.touched.add(key)
    this.values.set(key, value)
  }

  update(fn: (value: unknown) => unknown): unknown {
    const key = this.slot()
    const next = fn(this.of(key))
    this.values.set(key, next)
    return next
  }

  delete(): void {
    const key = this.slot()
    this.touched.add(key)
    this.values.delete(key)
  }

  *entries(): IterableIterator<[Key, unknown]> {
    // Every value handed out may be mutated: all of them go in the next delta.
    for (const key of this.values.keys()) this.touched.add(key)
    for (const [key, value] of this.values) if (this.keyed) yield [key, value]
  }

  get size(): number {
    return this.values.size
  }

  /** The touched keys' current values (encoded by the state codec) and the ones deleted; clears the record. */
  takeDelta(): StateDelta | undefined {
    if (this.touched.size === 0) return undefined
    const codec = this.spec?.codec
    const set: [Key | null, unknown][] = []
    const deleted: (Key | null)[] = []
    for (const key of this.touched) {
      const shown = key === SLOT ? null : key
      if (this.values.has(key)) {
        const value = this.values.get(key)
        set.push([shown, codec === undefined ? value : codec.encode(value)])
      } else deleted.push(shown)
    }
    this.touched.clear()
    return { set, deleted }
  }

  /** Replaces the state with decoded snapshot entries (the host checked them already). */
  restore(entries: readonly (readonly [Key | null, unknown])[]): void {
    const decoded = new Map<Key, unknown>()
    for (const [key, encoded] of entries) {
      let value = encoded
      if (this.spec !== undefined) {
        const result = this.spec.codec.decode(encoded)
        if (result._tag === 'Left') throw new StateRestoreError(this.operator, `key ${JSON.stringify(key)}: ${(check(this.spec.codec, encoded) ?? []).map(renderProblem).join('; ')}`)
        value = result.right
      }
      decoded.set(key === null ? SLOT : key, value)
    }
    this.values.clear()
    this.touched.clear()
    for (const [key, value] of decoded) this.values.set(key, value)
  }
}

/** A syscall waiting for the host's reply. */
interface Waiting {
  readonly resolve: (value: unknown) => void
  readonly reject: (error: unknown) => void
}

/** The AtomContext an isolated operator's handlers get. */
class IsolateContext implements AtomContext {
  key: Key | undefined = undefined
  private lastPort: string | undefined
  private lastBuffer: unknown[] | undefined

  constructor(
    readonly info: InstanceInfo,
    readonly state: TrackedState,
    private readonly runtime: IsolateRuntime,
    private readonly buffers: Map<string, unknown[]>,
  ) {}

  get signal(): AbortSignal {
    return this.runtime.abort.signal
  }

  emit(port: string, value: unknown): void {
    if (port === this.lastPort) {
      this.lastBuffer!.push(value)
      return
    }
    const buffer = this.buffers.get(port)
    if (buffer === undefined) throw new UnknownOutputError(this.info.operator, port)
    this.lastPort = port
    this.lastBuffer = buffer
    buffer.push(value)
  }

  emitAll(port: string, values: readonly unknown[]): void {
    const buffer = this.buffers.get(port)
    if (buffer === undefined) throw new UnknownOutputError(this.info.operator, port)
    for (let i = 0; i < values.length; i++) buffer.push(values[i])
  }

  /** Swaps the emission buffers out (after a sync): the cached buffer is stale. */
  forgetBuffer(): void {
    this.lastPort = undefined
    this.lastBuffer = undefined
  }

  flush(): Promise<void> {
    return this.runtime.flush()
  }

  request<R>(port: string, value: unknown, options?: RequestOptions): Promise<R> {
    if (!this.buffers.has(port)) return Promise.reject(new UnknownOutputError(this.info.operator, port))
    return this.runtime.syscall({ kind: 'request', port, value, ...(options?.timeout === undefined ? {} : { timeout: options.timeout }) }, options?.signal) as Promise<R>
  }

  timer(ms: number, fn: () => void | Promise<void>): TimerHandle {
    return this.runtime.timer(ms, fn, false)
  }

  every(ms: number, fn: () => void | Promise<void>): TimerHandle {
    return this.runtime.timer(ms, fn, true)
  }

  sleep(ms: number): Promise<void> {
    const signal = this.runtime.abort.signal
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

  spawn(): Spawned<never> {
    throw new IsolationUnsupportedError(this.info.operator, 'ctx.spawn')
  }

  call(name: string, argument?: unknown): Promise<unknown> {
    return this.runtime.syscall({ kind: 'call', name, argument })
  }

  reject(value: unknown, reason: string): void {
    this.runtime.rejected.push({ value, reason })
  }
}

type Handler = (value: unknown, ctx: AtomContext) => unknown
type BatchHandler = (values: readonly unknown[], ctx: AtomContext) => unknown

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === 'object' && typeof (value as PromiseLike<unknown>).then === 'function'
}

/** One record batch being processed: where the loop is, and what it collected. */
interface Processing {
  readonly id: number
  readonly port: string
  readonly values: readonly unknown[]
  readonly handler: Handler
  readonly guard: ((value: unknown) => boolean) | undefined
  readonly requests: ReadonlySet<number> | undefined
  readonly failures: RecordFailure[]
  readonly replies: [number, unknown][]
  crashedAt?: number
}

/**
 * Runs one operator instance on the isolated side. Records of a batch go through their port's
 * handler one at a time, as in the kernel; a handler's promise is awaited before the next record.
 */
export class IsolateRuntime {
  readonly abort = new AbortController()
  readonly rejected: { value: unknown; reason: string }[] = []
  private readonly body: AtomBody
  private readonly ctx: IsolateContext
  private readonly state: TrackedState
  private readonly buffers = new Map<string, unknown[]>()
  private readonly keyFn: ((value: unknown, port: string) => Key) | undefined
  private readonly guards = new Map<string, ((value: unknown) => boolean) | undefined>()
  private readonly waiting = new Map<number, Waiting>()
  private readonly timers = new Map<number, { readonly fn: () => unknown; readonly repeat: boolean }>()
  private nextSyscall = 1
  private nextTimer = 1
  /** The record whose handler runs (for `Sync.done`), during a `process` call. */
  private record: number | undefined

  constructor(
    operator: Operator,
    info: InstanceInfo,
    private readonly crashes: boolean,
    private readonly send: SendToHost,
    /** `[call id, record index]`, shared with the host (worker threads only). */
    private readonly progress: Int32Array | undefined,
  ) {
    const body = operator.body
    if (body.form !== 'atom') throw new IsolationUnsupportedError(info.operator, `a ${body.form}-form body`)
    this.body = body
    this.keyFn = body.key
    this.state = new TrackedState(operator.name, body.state, body.key !== undefined)
    for (const port of Object.keys(operator.outputs)) this.buffers.set(port, [])
    for (const [port, input] of Object.entries(operator.inputs)) {
      // Values crossed a thread or process boundary: they are checked against the port's codec (unless it accepts anything).
      const codec = input.codec
      this.guards.set(port, codec.name === 'unknown' ? undefined : (value: unknown) => codec.is(value))
    }
    this.ctx = new IsolateContext(info, this.state, this, this.buffers)
  }

  /** Handles one message from the host. */
  receive(message: HostMessage): void {
    switch (message.t) {
      case 'call':
        this.call(message)
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
        this.state.restore(message.entries)
        return
      case 'abort':
        this.abort.abort(message.reason)
        return
      default:
        return
    }
  }

  private call(message: Extract<HostMessage, { t: 'call' }>): void {
    const id = message.id
    switch (message.op) {
      case 'process':
        this.process(id, message.port, message.batch, message.requests)
        return
      case 'start':
        return this.hook(id, this.body.start)
      case 'end':
        return this.hook(id, this.body.end)
      case 'run':
        return this.hook(id, this.body.run)
      case 'timer': {
        const timer = this.timers.get(message.timer)
        if (timer !== undefined && !timer.repeat) this.timers.delete(message.timer)
        return this.hook(id, timer?.fn)
      }
    }
  }

  /** Runs a lifecycle hook or timer callback and reports its outcome. */
  private hook(id: number, fn: ((ctx: AtomContext) => unknown) | undefined): void {
    this.ctx.key = this.state.current = undefined
    if (this.progress !== undefined) {
      Atomics.store(this.progress, 0, id)
      Atomics.store(this.progress, 1, -1)
    }
    let result: unknown
    try {
      result = fn?.(this.ctx)
    } catch (error) {
      this.done({ t: 'done', id, sync: this.sync(), error: serializeError(error) })
      return
    }
    if (!isThenable(result)) {
      this.done({ t: 'done', id, sync: this.sync() })
      return
    }
    Promise.resolve(result).then(
      () => this.done({ t: 'done', id, sync: this.sync() }),
      (error: unknown) => this.done({ t: 'done', id, sync: this.sync(), error: serializeError(error) }),
    )
  }

  private process(id: number, port: string, batch: EncodedBatch, requests: readonly number[] | undefined): void {
    // The host reads `[call, record]` after a fault: -2 is "started, no record yet" (decoding).
    if (this.progress !== undefined) {
      Atomics.store(this.progress, 1, -2)
      Atomics.store(this.progress, 0, id)
    }
    const values = decodeBatch(batch)
    const handler = this.body.handlers[port] as Handler | undefined
    if (handler === undefined) {
      this.whole(id, port, values)
      return
    }
    const processing: Processing = {
      id,
      port,
      values,
      handler,
      guard: this.guards.get(port),
      requests: requests === undefined || requests.length === 0 ? undefined : new Set(requests),
      failures: [],
      replies: [],
    }
    const pending = this.loop(processing, 0)
    if (pending === undefined) this.finish(processing)
    else pending.then(() => this.finish(processing))
  }

  /** Handles records from `start` on; switches to the async path at the first handler promise. */
  private loop(p: Processing, start: number): Promise<void> | undefined {
    const { values, handler, guard, requests, port } = p
    const keyFn = this.keyFn
    const ctx = this.ctx
    const state = this.state
    const progress = this.progress
    for (let i = start; i < values.length; i++) {
      const value = values[i]
      if (progress !== undefined) Atomics.store(progress, 1, i)
      this.record = i
      if (guard !== undefined && !guard(value)) {
        p.failures.push({ index: i, undecodable: true, error: { name: 'DecodeError', message: 'does not fit the port codec', lamina: true } })
        continue
      }
      let result: unknown
      try {
        if (keyFn !== undefined) ctx.key = state.current = keyFn(value, port)
        result = handler(value, ctx)
      } catch (error) {
        if (this.failed(p, i, error)) return undefined
        continue
      }
      if (isThenable(result)) return this.resume(p, i, result)
      if (requests?.has(i) === true) p.replies.push([i, result])
    }
    return undefined
  }

  private async resume(p: Processing, index: number, pending: PromiseLike<unknown>): Promise<void> {
    try {
      const result = await pending
      if (p.requests?.has(index) === true) p.replies.push([index, result])
    } catch (error) {
      if (this.failed(p, index, error)) return
    }
    await this.loop(p, index + 1)
  }

  /** Records a failed record; true when it ends the batch (`onError: 'crash'`). */
  private failed(p: Processing, index: number, error: unknown): boolean {
    p.failures.push({ index, error: serializeError(error) })
    if (!this.crashes) return false
    p.crashedAt = index
    return true
  }

  private finish(p: Processing): void {
    this.ctx.key = this.state.current = undefined
    this.record = undefined
    const message: DoneMessage = {
      t: 'done',
      id: p.id,
      sync: this.sync(),
      ...(p.failures.length === 0 ? {} : { failures: p.failures }),
      ...(p.replies.length === 0 ? {} : { replies: p.replies }),
      ...(p.crashedAt === undefined ? {} : { crashedAt: p.crashedAt }),
    }
    this.done(message)
  }

  /** A batch handler's port: one call for the batch; values that do not fit the codec fail first. */
  private whole(id: number, port: string, values: unknown[]): void {
    const handler = this.body.batchHandlers?.[port] as BatchHandler | undefined
    if (this.progress !== undefined) Atomics.store(this.progress, 1, -1)
    const failures: RecordFailure[] = []
    const guard = this.guards.get(port)
    let kept = values
    if (guard !== undefined && !values.every(guard)) {
      kept = values.filter((value, index) => {
        if (guard(value)) return true
        failures.push({ index, undecodable: true, error: { name: 'DecodeError', message: 'does not fit the port codec', lamina: true } })
        return false
      })
    }
    const report = (error?: unknown): void =>
      this.done({
        t: 'done',
        id,
        sync: this.sync(),
        ...(failures.length === 0 ? {} : { failures }),
        ...(error === undefined ? {} : { batchFailed: serializeError(error) }),
      })
    this.ctx.key = this.state.current = undefined
    if (handler === undefined) return report(new UnknownOutputError(this.ctx.info.operator, `input ${port}`))
    let result: unknown
    try {
      result = handler(kept, this.ctx)
    } catch (error) {
      return report(error)
    }
    if (!isThenable(result)) return report()
    Promise.resolve(result).then(
      () => report(),
      (error: unknown) => report(error ?? new Error('the batch handler rejected')),
    )
  }

  private done(message: DoneMessage): void {
    this.send(message, transfers(message.sync))
  }

  /** Everything the operator did since the last sync: emissions (encoded), touched state, rejected values. */
  private sync(): Sync {
    let out: { port: string; batch: EncodedBatch }[] | undefined
    for (const [port, values] of this.buffers) {
      if (values.length === 0) continue
      this.buffers.set(port, [])
      const batch = this.encode(port, values)
      if (batch !== undefined) (out ??= []).push({ port, batch })
    }
    this.ctx.forgetBuffer()
    const delta = this.state.takeDelta()
    const rejected = this.rejected.length === 0 ? undefined : this.rejected.splice(0)
    const record = this.record
    return {
      ...(out === undefined ? {} : { out }),
      ...(delta === undefined ? {} : { delta }),
      ...(rejected === undefined ? {} : { rejected }),
      ...(record === undefined ? {} : { done: record + 1 }),
    }
  }

  /** Encodes emitted values; a value that cannot cross (a function, a symbol) is rejected with the reason instead. */
  private encode(port: string, values: unknown[]): EncodedBatch | undefined {
    try {
      return encodeBatch(values)
    } catch {
      const kept: unknown[] = []
      for (const value of values) {
        try {
          encodeBatch([value])
          kept.push(value)
        } catch (error) {
          this.rejected.push({ value: String(value), reason: `a value emitted on ${port} cannot leave the isolated operator: ${error instanceof Error ? error.message : String(error)}` })
        }
      }
      return kept.length === 0 ? undefined : encodeBatch(kept)
    }
  }

  /** Sends what the operator did and waits until the host's outputs have credit again. */
  flush(): Promise<void> {
    const sync = this.sync()
    if (sync.out === undefined && sync.delta === undefined && sync.rejected === undefined) return Promise.resolve()
    return this.syscallWith({ kind: 'flush' }, sync) as Promise<void>
  }

  /** Forwards a syscall to the host, after what the operator did so far. */
  syscall(request: { kind: 'call'; name: string; argument: unknown } | { kind: 'request'; port: string; value: unknown; timeout?: number }, signal?: AbortSignal): Promise<unknown> {
    return this.syscallWith(request, this.sync(), signal)
  }

  private syscallWith(
    request: { kind: 'flush' } | { kind: 'call'; name: string; argument: unknown } | { kind: 'request'; port: string; value: unknown; timeout?: number },
    sync: Sync,
    signal?: AbortSignal,
  ): Promise<unknown> {
    const id = this.nextSyscall++
    return new Promise<unknown>((resolve, reject) => {
      if (signal?.aborted === true) return reject(new JobAbortedError(this.ctx.info.job, signal.reason))
      this.waiting.set(id, { resolve, reject })
      signal?.addEventListener('abort', () => {
        if (this.waiting.delete(id)) reject(new JobAbortedError(this.ctx.info.job, signal.reason))
      }, { once: true })
      this.send({ t: 'sys', id, ...request, sync } as IsolateMessage, transfers(sync))
    })
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
}

/** An error from the host, as the isolated operator sees it. */
export function rebuildError(serialized: SerializedError): Error {
  if (serialized.lamina && serialized.code !== undefined) return new IsolatedOperatorError(serialized.code, serialized.name, serialized.message, serialized.stack)
  const error = new Error(serialized.message)
  error.name = serialized.name
  if (serialized.stack !== undefined) error.stack = serialized.stack
  return error
}
