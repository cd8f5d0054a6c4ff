// Durable requests: a call to work done elsewhere, journaled in the cluster's KV store (its Raft
// log) before any handler runs, so that it survives the crash of the caller, of the worker running
// it, and of any replica of the store.
//
// - A request is one record, `_lamina/req/<name>/<id>` (RequestRecordCodec), written create-only
//   by the caller: the id is the idempotency key when one is given, so a second call with the same
//   key finds the first request (and its result) instead of making another.
// - A worker holds one KV lease while it runs (kept alive), and one key under it,
//   `_lamina/worker/<lease>`: while the key exists, the worker lives. It claims a queued request
//   by moving its record to `running` with the attempt counted and its lease named (one
//   compare-and-set on the revision it read). When the worker dies its lease expires and its key
//   goes: any worker that sees a `running` record whose lease's key is gone puts it back in the
//   queue (a lost attempt, counted), so it is redelivered. A call is three writes of the log: the
//   request, the claim, the outcome.
// - The outcome is one more compare-and-set of the record: `succeeded` with the result, or a
//   failure, which queues the request again after a backoff (the fault tolerance layer's policy:
//   exponential, jittered) until its attempts are used up; then it is `dead`, a dead letter with
//   its cause, and the caller's `call` rejects with RequestDeadError.
// - Delivery is at least once (a worker cut off past its lease may still be running when the
//   request is redelivered); effects happen at most once per idempotency key when the handler
//   keys them by `ctx.idempotencyKey` (every attempt of a request gets the same one), and a result,
//   once journaled, is never recomputed.
//
// Compare Temporal's activities (a task queue, a heartbeat timeout, retry policies) and Restate's
// journaled invocations; here the queue and the journal are the same records in the KV store.

import { randomUUID } from 'node:crypto'
import * as t from 'io-ts'
import { Observable } from 'rxjs'
import { type AnyCodec, check, InvalidOptionError, LaminaError, renderProblem } from '../../kernel/index.js'
import { backoffDelay, type Jitter } from '../../layers/index.js'
import type { KvClient, KvLease } from '../kv/client.js'
import type { KvEntry } from '../kv/state.js'
import { HandlerProcess, type IsolatedHandler } from './isolated.js'
import { serveWorkflow, type WorkflowContext, workflowRequest } from './workflow.js'
import { RequestCancelledError, RequestCodecError, RequestConflictError, RequestDeadError, RequestRecordError, RequestTimeoutError, UnknownRequestError } from './errors.js'

const Nullable = <C extends t.Mixed>(codec: C) => t.union([codec, t.null])
const Failure = t.type({ code: t.string, message: t.string })

/** A journaled request. */
export const RequestRecordCodec = t.type({
  id: t.string,
  name: t.string,
  input: t.unknown,
  state: t.keyof({ queued: null, running: null, succeeded: null, dead: null, cancelled: null }),
  /** Attempts started so far (a lost one included). */
  attempts: t.number,
  retry: t.type({ attempts: t.number, baseMs: t.number, maxMs: t.number, jitter: t.keyof({ full: null, equal: null, none: null }) }),
  /** Milliseconds an attempt may take. */
  timeoutMs: t.number,
  /** Not before this time (ms since the epoch): a retry's backoff. */
  notBefore: t.number,
  /** The worker running it (state `running`), or the last one that did. */
  worker: Nullable(t.string),
  /** The lease of the worker running it (state `running`): its key `_lamina/worker/<lease>` lives as long as the worker. */
  lease: Nullable(t.string),
  result: t.unknown,
  error: Nullable(Failure),
  history: t.array(
    t.intersection([t.type({ attempt: t.number, worker: t.string, at: t.number, outcome: t.keyof({ succeeded: null, failed: null, lost: null }) }), t.partial({ error: Failure })]),
  ),
  createdAt: t.number,
  updatedAt: t.number,
})
export type RequestRecord = t.TypeOf<typeof RequestRecordCodec>

/** The state a request ends in. */
export type FinalState = 'succeeded' | 'dead' | 'cancelled'

const PREFIX = '_lamina/req/'
const WORKERS = '_lamina/worker/'

/** Where request `id` of `name` is journaled. */
export function requestKey(name: string, id: string): string {
  return `${PREFIX}${name}/${id}`
}

/** The key that lives as long as the worker holding `lease`. */
function workerKey(lease: string): string {
  return `${WORKERS}${lease}`
}

function checkName(what: string, name: string): void {
  if (typeof name !== 'string' || !/^[A-Za-z0-9._-]{1,128}$/.test(name))
    throw new InvalidOptionError(what, 'name', `must be 1-128 letters, digits, '.', '_' or '-', got ${JSON.stringify(name)}`)
}

/** Parses a record read from the store. @throws RequestRecordError naming the key when it is not one. */
function parse(entry: KvEntry): RequestRecord {
  let value: unknown
  try {
    value = JSON.parse(entry.value)
  } catch {
    throw new RequestRecordError(entry.key, `is not JSON: ${JSON.stringify(entry.value.slice(0, 80))}`)
  }
  const problems = check(RequestRecordCodec, value)
  if (problems !== undefined) throw new RequestRecordError(entry.key, `does not have a request's shape: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
  return value as RequestRecord
}

/** How a request is retried. All optional. */
export interface RequestRetry {
  /** Attempts in all, the first included. @default 5 */
  readonly attempts?: number
  /** The backoff ceiling before the first retry, doubling after. @default 100 */
  readonly baseMs?: number
  /** @default 10000 */
  readonly maxMs?: number
  /** @default 'full' */
  readonly jitter?: Jitter
}

/** Options of `call` and `submit`. */
export interface CallOptions {
  readonly retry?: RequestRetry
  /** Milliseconds one attempt may take before it is abandoned and retried. @default 30000 */
  readonly timeoutMs?: number
  /**
   * Names the request: a second call with the same key (from anywhere, after any crash) is the same
   * request, and gets its result. Handlers see it as `ctx.idempotencyKey`. @default a fresh id
   */
  readonly idempotencyKey?: string
  /** Stops waiting (`call`); the request goes on. */
  readonly signal?: AbortSignal
}

/** What a handler is given besides its input. */
export interface RequestContext {
  readonly name: string
  readonly id: string
  /** The same for every attempt of the request: key effects by it to apply them once. */
  readonly idempotencyKey: string
  /** 1 for the first attempt. */
  readonly attempt: number
  /** Aborts when the attempt times out, is cancelled, or the worker stops. */
  readonly signal: AbortSignal
  /** The worker's name. */
  readonly worker: string
}

/** A request handler. */
export type RequestHandler<I, O> = (input: I, ctx: RequestContext) => Promise<O> | O

/** Options of `serve`. */
export interface ServeOptions<I extends AnyCodec, O extends AnyCodec> {
  /** Requests run at once by this worker. @default 4 */
  readonly concurrency?: number
  /** The input's codec: a request whose input does not fit is a dead letter at once (RequestCodecError). */
  readonly input?: I
  /** The answer's codec: an answer that does not fit fails the attempt (RequestCodecError, retried). */
  readonly output?: O
  /** Milliseconds a claim outlives this worker's last keep-alive (its lease's TTL). @default 3000 */
  readonly leaseMs?: number
  /** How often the worker looks for requests due (retries) or lost (dead workers). @default 250 */
  readonly sweepMs?: number
  /** The worker's name (history, `lamina requests show`). @default a fresh id */
  readonly worker?: string
}

/** A running worker (`serve`). */
export interface Worker {
  readonly name: string
  readonly worker: string
  /** Attempts this worker finished, by outcome. */
  stats(): { readonly succeeded: number; readonly failed: number; readonly running: number; readonly requeued: number }
  /** Stops taking requests and aborts the running ones (they are redelivered once its lease expires). */
  stop(): Promise<void>
}

/** Durable requests over a KV store (`durable(kv)`). */
export class Durable {
  constructor(private readonly kv: KvClient) {}

  /**
   * Journals a request and resolves once it is queued, with its id (the idempotency key when
   * given). A request with that key already journaled is not made again.
   * @throws RequestConflictError when the key names a request of another name or input.
   */
  async submit(name: string, input: unknown, options: CallOptions = {}): Promise<string> {
    checkName('durable.call', name)
    const id = options.idempotencyKey ?? randomUUID()
    checkName('durable.call', id)
    const retry = options.retry ?? {}
    const now = Date.now()
    const record: RequestRecord = {
      id,
      name,
      input: input === undefined ? null : input,
      state: 'queued',
      attempts: 0,
      retry: { attempts: retry.attempts ?? 5, baseMs: retry.baseMs ?? 100, maxMs: retry.maxMs ?? 10_000, jitter: retry.jitter ?? 'full' },
      timeoutMs: options.timeoutMs ?? 30_000,
      notBefore: now,
      worker: null,
      lease: null,
      result: null,
      error: null,
      history: [],
      createdAt: now,
      updatedAt: now,
    }
    if (!Number.isInteger(record.retry.attempts) || record.retry.attempts < 1)
      throw new InvalidOptionError('durable.call', 'retry.attempts', `must be a whole number >= 1, got ${record.retry.attempts}`)
    if (!(record.timeoutMs > 0)) throw new InvalidOptionError('durable.call', 'timeoutMs', `must be a positive number of milliseconds, got ${record.timeoutMs}`)
    const key = requestKey(name, id)
    const written = await this.kv.cas(key, JSON.stringify(record), { ifModRevision: 0 })
    if (!written.ok) {
      const existing = written.prev === undefined ? await this.show(name, id) : parse(written.prev)
      if (JSON.stringify(existing.input) !== JSON.stringify(record.input)) throw new RequestConflictError(name, id, 'its idempotency key names a request with another input')
    }
    return id
  }

  /**
   * Calls `name` with `input` and resolves with the result, however many workers crash meanwhile.
   * @throws RequestDeadError when it used up its attempts (the last failure is its `failure`).
   * @throws RequestCancelledError when it was cancelled.
   */
  async call<O = unknown>(name: string, input: unknown, options: CallOptions = {}): Promise<O> {
    const id = await this.submit(name, input, options)
    return this.result<O>(name, id, options.signal)
  }

  /** Waits for request `id` of `name` to end; resolves with its result, rejects as `call` does. */
  async result<O = unknown>(name: string, id: string, signal?: AbortSignal): Promise<O> {
    const record = await this.ended(name, id, signal)
    if (record.state === 'succeeded') return record.result as O
    if (record.state === 'cancelled') throw new RequestCancelledError(name, id)
    throw new RequestDeadError(name, id, record.attempts, record.error ?? { code: 'ERR_UNKNOWN', message: 'no failure recorded' })
  }

  /** Callers waiting for requests to end, by record key. */
  private readonly waiting = new Map<string, Set<(record: RequestRecord) => void>>()
  /** One watch per request name while anyone waits on a request of it, and how many do. */
  private readonly watches = new Map<string, { readonly subscription: { unsubscribe(): void }; waiters: number }>()

  /** Calls `onEnd` with the record once request `key` of `name` is seen to end; returns its cancel. */
  private awaitEnd(name: string, key: string, onEnd: (record: RequestRecord) => void): () => void {
    const set = this.waiting.get(key) ?? new Set()
    set.add(onEnd)
    this.waiting.set(key, set)
    const watch = this.watches.get(name) ?? this.watchName(name)
    watch.waiters++
    let cancelled = false
    return () => {
      if (cancelled) return
      cancelled = true
      set.delete(onEnd)
      if (set.size === 0 && this.waiting.get(key) === set) this.waiting.delete(key)
      if (--watch.waiters === 0 && this.watches.get(name) === watch) {
        this.watches.delete(name)
        watch.subscription.unsubscribe()
      }
    }
  }

  /** The shared watch of `name`'s records: one stream for every caller waiting on one of them. */
  private watchName(name: string): { readonly subscription: { unsubscribe(): void }; waiters: number } {
    const prefix = `${PREFIX}${name}/`
    const drop = (): void => {
      // The stream ended (a new leader): waiters still poll; the next one to wait opens another.
      if (this.watches.get(name) === watch) this.watches.delete(name)
    }
    const watch = {
      waiters: 0,
      subscription: this.kv.watch(prefix).subscribe({
        next: (event) => {
          const waiters = this.waiting.get(event.key)
          if (waiters === undefined || event.type !== 'put' || event.value === undefined) return
          const record = parse({ key: event.key, value: event.value } as KvEntry)
          if (isFinal(record.state)) for (const onEnd of [...waiters]) onEnd(record)
        },
        error: drop,
        complete: drop,
      }),
    }
    this.watches.set(name, watch)
    return watch
  }

  /** Resolves with the record once the request ended (succeeded, dead or cancelled). */
  ended(name: string, id: string, signal?: AbortSignal): Promise<RequestRecord> {
    const key = requestKey(name, id)
    return new Promise<RequestRecord>((resolve, reject) => {
      let settled = false
      let timer: NodeJS.Timeout | undefined
      const finish = (record: RequestRecord | undefined, error?: unknown): void => {
        if (settled || (record !== undefined && !isFinal(record.state))) return
        settled = true
        cancel()
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        if (error !== undefined) reject(error)
        else resolve(record!)
      }
      const onAbort = (): void => finish(undefined, signal?.reason)
      // The watch first, then a read: an end between the two is seen by one of them.
      const cancel = this.awaitEnd(name, key, (record) => finish(record))
      signal?.addEventListener('abort', onAbort, { once: true })
      // And a read every second, should the watch miss an event (its shard changing leader).
      const look = (): void => {
        if (settled) return
        this.show(name, id).then(
          (record) => finish(record),
          (error: unknown) => (error instanceof UnknownRequestError ? finish(undefined, error) : undefined),
        )
        timer = setTimeout(look, 1000)
        timer.unref?.()
      }
      look()
    })
  }

  /** The request's record. @throws UnknownRequestError when none is journaled. */
  async show(name: string, id: string): Promise<RequestRecord> {
    const entry = await this.kv.get(requestKey(name, id))
    if (entry === undefined) throw new UnknownRequestError(name, id)
    return parse(entry)
  }

  /** Journaled requests (of `name`, in `state`), oldest first, at most `limit`. */
  async list(filter: { readonly name?: string; readonly state?: RequestRecord['state']; readonly limit?: number } = {}): Promise<RequestRecord[]> {
    const entries = await this.kv.scan({ prefix: filter.name === undefined ? PREFIX : `${PREFIX}${filter.name}/` })
    return entries
      .map(parse)
      .filter((r) => filter.state === undefined || r.state === filter.state)
      .sort((a, b) => a.createdAt - b.createdAt)
      .slice(0, filter.limit ?? Number.POSITIVE_INFINITY)
  }

  /** Cancels a request that has not ended: a running attempt's outcome is then dropped. Resolves with the record. */
  async cancel(name: string, id: string): Promise<RequestRecord> {
    return this.change(name, id, (r) => (isFinal(r.state) ? undefined : { ...r, state: 'cancelled', error: { code: 'ERR_REQUEST_CANCELLED', message: 'cancelled' } }))
  }

  /** Queues a dead or cancelled request again with its attempts reset (a retry by hand). Resolves with the record. */
  async retry(name: string, id: string): Promise<RequestRecord> {
    return this.change(name, id, (r) => (r.state === 'dead' || r.state === 'cancelled' ? { ...r, state: 'queued', attempts: 0, notBefore: Date.now(), error: null } : undefined))
  }

  private async change(name: string, id: string, next: (record: RequestRecord) => RequestRecord | undefined): Promise<RequestRecord> {
    const key = requestKey(name, id)
    for (;;) {
      const entry = await this.kv.get(key)
      if (entry === undefined) throw new UnknownRequestError(name, id)
      const record = parse(entry)
      const changed = next(record)
      if (changed === undefined) return record
      const updated = { ...changed, updatedAt: Date.now() }
      if ((await this.kv.cas(key, JSON.stringify(updated), { ifModRevision: entry.modRevision })).ok) return updated
    }
  }

  /**
   * Serves requests named `name` with `handler` until `stop()`: at most `concurrency` at once,
   * each attempt under this worker's lease (see the file's header).
   */
  serve<I extends AnyCodec = t.UnknownC, O extends AnyCodec = t.UnknownC>(
    name: string,
    handler: RequestHandler<t.TypeOf<I>, t.TypeOf<O>>,
    options: ServeOptions<I, O> = {},
  ): Worker {
    checkName('durable.serve', name)
    return new RequestWorker(this.kv, name, handler as RequestHandler<unknown, unknown>, options as ServeOptions<AnyCodec, AnyCodec>)
  }

  /**
   * Serves requests named `name` with a handler that runs in a child process of its own (the
   * export `handler.export`, default `default`, of module `handler.module`): a handler that exits,
   * crashes or runs out of memory fails the attempts running in it (RequestHandlerCrashedError,
   * `ERR_REQUEST_HANDLER_CRASHED`, retried), and one past its timeout is stopped with its process;
   * this peer goes on either way (isolated.ts).
   */
  serveIsolated<I extends AnyCodec = t.UnknownC, O extends AnyCodec = t.UnknownC>(name: string, handler: IsolatedHandler, options: ServeOptions<I, O> = {}): Worker {
    const host = new HandlerProcess(handler)
    const worker = this.serve<I, O>(name, (input, ctx) => host.call(input, ctx) as Promise<t.TypeOf<O>>, options)
    return {
      name: worker.name,
      worker: worker.worker,
      stats: () => worker.stats(),
      stop: async () => {
        await worker.stop()
        host.close()
      },
    }
  }

  /**
   * Serves workflow `name`: `fn` runs each step through `w` (`w.call`, `w.sleep`), journaled, so a
   * run resumes on another worker after a crash from its last completed step (workflow.ts, which
   * also states the determinism rule its code must follow).
   */
  workflow<I, O>(name: string, fn: (w: WorkflowContext, input: I) => Promise<O>, options: Omit<ServeOptions<never, never>, 'input' | 'output'> = {}): Worker {
    checkName('durable.workflow', name)
    return serveWorkflow(this, this.kv, name, fn, options)
  }

  /** Runs workflow `name` with `input` and resolves with its result; `timeoutMs` bounds one run of it (default 10 minutes). */
  runWorkflow<O = unknown>(name: string, input: unknown, options: CallOptions = {}): Promise<O> {
    return this.call<O>(workflowRequest(name), input, { timeoutMs: 600_000, ...options })
  }

  /** Every change of every request's record (of `name`), as journaled. */
  changes(name?: string): Observable<RequestRecord> {
    const prefix = name === undefined ? PREFIX : `${PREFIX}${name}/`
    return new Observable<RequestRecord>((subscriber) => {
      const subscription = this.kv.watch(prefix).subscribe({
        next: (event) => {
          if (event.type === 'put' && event.value !== undefined) subscriber.next(parse({ key: event.key, value: event.value } as KvEntry))
        },
        error: (error: unknown) => subscriber.error(error),
      })
      return () => subscription.unsubscribe()
    })
  }
}

/** Durable requests over the cluster's KV service (a client of it: `startKv`, `KvClient.connect`, `peer.kv()`). */
export function durable(kv: KvClient): Durable {
  return new Durable(kv)
}

function isFinal(state: RequestRecord['state']): state is FinalState {
  return state === 'succeeded' || state === 'dead' || state === 'cancelled'
}

function failureOf(error: unknown): { code: string; message: string } {
  const code = error instanceof LaminaError ? error.code : (error as { code?: unknown } | undefined)?.code
  return { code: typeof code === 'string' ? code : 'ERR_HANDLER', message: error instanceof Error ? error.message : String(error) }
}

class RequestWorker implements Worker {
  readonly worker: string
  private lease: Promise<KvLease> | undefined
  private readonly running = new Map<string, AbortController>()
  /** Requests seen not to have ended: the sweep looks at these. */
  private readonly open = new Set<string>()
  private readonly counts = { succeeded: 0, failed: 0, requeued: 0 }
  private stopped = false
  private readonly abort = new AbortController()
  private sweeper: NodeJS.Timeout | undefined
  private rescans = 0
  private readonly concurrency: number

  constructor(
    private readonly kv: KvClient,
    readonly name: string,
    private readonly handler: RequestHandler<unknown, unknown>,
    private readonly options: ServeOptions<AnyCodec, AnyCodec>,
  ) {
    this.worker = options.worker ?? `worker-${randomUUID().slice(0, 8)}`
    this.concurrency = options.concurrency ?? 4
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1)
      throw new InvalidOptionError('durable.serve', 'concurrency', `must be a whole number >= 1, got ${this.concurrency}`)
    this.watch()
    this.sweeper = setInterval(() => void this.sweep(), options.sweepMs ?? 250)
    void this.sweep(true)
  }

  /**
   * Watches this name's requests: a new or requeued one is claimed at once. A watch that ends (its
   * shard's leader changed, the store was unreachable) is started again, after a full look.
   */
  private watch(): void {
    if (this.stopped) return
    const prefix = `${PREFIX}${this.name}/`
    let subscription: { unsubscribe(): void } | undefined
    const again = (): void => {
      subscription?.unsubscribe()
      if (this.stopped) return
      setTimeout(() => {
        void this.sweep(true)
        this.watch()
      }, 100).unref?.()
    }
    subscription = this.kv.watch(prefix).subscribe({
      next: (event) => {
        const id = event.key.slice(prefix.length)
        if (event.type !== 'put' || event.value === undefined) return void this.open.delete(id)
        let record: RequestRecord
        try {
          record = parse({ key: event.key, value: event.value } as KvEntry)
        } catch {
          return
        }
        if (isFinal(record.state)) {
          this.open.delete(id)
          this.running.get(id)?.abort(new RequestCancelledError(this.name, id))
        } else {
          this.open.add(id)
          if (record.state === 'queued' && record.notBefore <= Date.now()) void this.tryClaim(id)
        }
      },
      error: again,
      complete: again,
    })
    this.abort.signal.addEventListener('abort', () => subscription?.unsubscribe(), { once: true })
  }

  stats(): { succeeded: number; failed: number; running: number; requeued: number } {
    return { ...this.counts, running: this.running.size }
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.sweeper)
    this.abort.abort(new Error(`worker ${this.worker} stopped`))
    for (const attempt of this.running.values()) attempt.abort(new Error(`worker ${this.worker} stopped`))
    const lease = await this.lease?.catch(() => undefined)
    await lease?.revoke().catch(() => undefined)
  }

  /** This worker's lease and its key (the worker lives while the key does), kept alive while it runs. */
  private leased(): Promise<KvLease> {
    this.lease ??= this.kv.grant(this.options.leaseMs ?? 3000).then(async (lease) => {
      await this.kv.put(workerKey(lease.id), JSON.stringify({ worker: this.worker, name: this.name }), { lease })
      const { lost } = lease.keepAliveForever()
      // A lease that could not be kept alive: its claims are gone; the next claim takes a new one.
      void lost.then(() => {
        if (this.lease !== undefined) this.lease = undefined
        for (const attempt of this.running.values()) attempt.abort(new Error(`worker ${this.worker} lost its lease`))
      })
      return lease
    })
    this.lease.catch(() => (this.lease = undefined))
    return this.lease
  }

  /** Looks for requests due (a retry's backoff passed) or lost (their worker died): every open one, and all of them now and then. */
  private async sweep(full = false): Promise<void> {
    if (this.stopped) return
    try {
      if (full || ++this.rescans % 40 === 0) {
        for (const entry of await this.kv.scan({ prefix: `${PREFIX}${this.name}/` })) {
          const record = parse(entry)
          if (!isFinal(record.state)) this.open.add(record.id)
        }
      }
      for (const id of [...this.open]) {
        if (this.stopped || this.running.size >= this.concurrency) return
        if (!this.running.has(id)) await this.look(id)
      }
    } catch {
      // The store is unavailable for now: the next sweep looks again.
    }
  }

  /** Claims request `id` when it is due, or puts it back in the queue when its worker is gone. */
  private async look(id: string): Promise<void> {
    const entry = await this.kv.get(requestKey(this.name, id))
    if (entry === undefined) return void this.open.delete(id)
    const record = parse(entry)
    if (isFinal(record.state)) return void this.open.delete(id)
    if (record.state === 'queued') {
      if (record.notBefore <= Date.now()) await this.tryClaim(id)
      return
    }
    // Running: its worker lives while its lease's key does; without the key the attempt is lost.
    // So is an attempt of this very worker's that it no longer runs (its outcome could not be journaled).
    const own = await this.lease?.catch(() => undefined)
    const mine = own !== undefined && record.lease === own.id
    if (mine && this.running.has(id)) return
    if (!mine && record.lease !== null && (await this.kv.get(workerKey(record.lease))) !== undefined) return
    const lost = { attempt: record.attempts, worker: record.worker ?? '?', at: Date.now(), outcome: 'lost' as const }
    const failure = { code: 'ERR_WORKER_LOST', message: `worker ${record.worker ?? '?'} stopped answering during attempt ${record.attempts}` }
    const next = this.afterFailure(record, failure, lost)
    if ((await this.kv.cas(entry.key, JSON.stringify(next), { ifModRevision: entry.modRevision })).ok) this.counts.requeued++
  }

  /** The record after a failed attempt: queued again after a backoff, or dead when its attempts are used up. */
  private afterFailure(record: RequestRecord, failure: { code: string; message: string }, entry: RequestRecord['history'][number], final = false): RequestRecord {
    const now = Date.now()
    const history = [...record.history, entry].slice(-20)
    if (final || record.attempts >= record.retry.attempts) return { ...record, state: 'dead', error: failure, lease: null, history, updatedAt: now }
    const delay = backoffDelay(record.attempts, record.retry)
    return { ...record, state: 'queued', error: failure, lease: null, notBefore: now + delay, history, updatedAt: now }
  }

  private async tryClaim(id: string): Promise<void> {
    if (this.stopped || this.running.has(id) || this.running.size >= this.concurrency) return
    const attempt = new AbortController()
    this.running.set(id, attempt)
    try {
      const key = requestKey(this.name, id)
      const entry = await this.kv.get(key)
      if (entry === undefined) return
      const record = parse(entry)
      if (record.state !== 'queued' || record.notBefore > Date.now()) return
      const lease = await this.leased()
      const running: RequestRecord = { ...record, state: 'running', attempts: record.attempts + 1, worker: this.worker, lease: lease.id, updatedAt: Date.now() }
      const moved = await this.kv.cas(key, JSON.stringify(running), { ifModRevision: entry.modRevision })
      if (!moved.ok) return
      await this.attempt(running, moved.revision, attempt)
    } catch {
      // The store is unavailable for now: the request stays where it was, and a sweep tries again.
    } finally {
      this.running.delete(id)
    }
  }

  /** Runs one attempt of `record` (journaled as running at `revision`) and journals its outcome. */
  private async attempt(record: RequestRecord, revision: number, attempt: AbortController): Promise<void> {
    const { name, id } = record
    const key = requestKey(name, id)
    const timeout = new RequestTimeoutError(name, id, record.timeoutMs)
    const timer = setTimeout(() => attempt.abort(timeout), record.timeoutMs)
    const entry = { attempt: record.attempts, worker: this.worker, at: 0 }
    let outcome: RequestRecord
    try {
      if (this.options.input !== undefined) {
        const problems = check(this.options.input, record.input)
        if (problems !== undefined) throw Object.assign(new RequestCodecError(name, id, 'input', problems.slice(0, 3).map(renderProblem).join('; ')), { final: true })
      }
      const ctx: RequestContext = { name, id, idempotencyKey: id, attempt: record.attempts, signal: attempt.signal, worker: this.worker }
      const answer = await Promise.race([
        Promise.resolve().then(() => this.handler(record.input, ctx)),
        new Promise<never>((_, reject) => {
          if (attempt.signal.aborted) reject(attempt.signal.reason)
          attempt.signal.addEventListener('abort', () => reject(attempt.signal.reason), { once: true })
        }),
      ])
      if (this.options.output !== undefined) {
        const problems = check(this.options.output, answer)
        if (problems !== undefined) throw new RequestCodecError(name, id, 'output', problems.slice(0, 3).map(renderProblem).join('; '))
      }
      const result = answer === undefined ? null : JSON.parse(JSON.stringify(answer))
      outcome = {
        ...record,
        state: 'succeeded',
        result,
        error: null,
        history: [...record.history, { ...entry, at: Date.now(), outcome: 'succeeded' as const }].slice(-20),
        updatedAt: Date.now(),
      }
      this.counts.succeeded++
    } catch (error) {
      if (error instanceof RequestCancelledError || this.stopped) return
      const failure = failureOf(error)
      outcome = this.afterFailure(record, failure, { ...entry, at: Date.now(), outcome: 'failed', error: failure }, (error as { final?: boolean }).final === true)
      this.counts.failed++
    } finally {
      clearTimeout(timer)
    }
    // Journaled only if nothing changed the record since it was claimed (a cancel, a requeue after a
    // lost lease). A store that does not answer for a while (a new leader) is asked again.
    for (let tries = 0; ; tries++) {
      try {
        await this.kv.cas(key, JSON.stringify(outcome), { ifModRevision: revision })
        return
      } catch (error) {
        if (this.stopped || tries >= 20) throw error
        await new Promise((resolve) => setTimeout(resolve, 250))
      }
    }
  }
}
