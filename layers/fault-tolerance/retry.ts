// Retries with exponential backoff, jitter and a retry budget, for operators that call flaky outside services.

import {
  describeCause,
  InvalidOptionError,
  JobAbortedError,
  LaminaError,
  layerEvent,
  type AtomContext,
  type ControlRegistry,
  type Handler,
  type InstanceInfo,
  type PortCodecs,
} from '../../kernel/index.js'
import { RetriesExhaustedError, RetryBudgetExceededError } from './errors.js'

/**
 * How a backoff delay is randomised (as in the AWS Architecture Blog's "Exponential Backoff And
 * Jitter"), from the ceiling `c = min(maxMs, baseMs * 2^(retry-1))`:
 * - `full`: uniform in [0, c), which spreads retries of many callers the most;
 * - `equal`: c/2 plus uniform in [0, c/2), never much shorter than the ceiling;
 * - `none`: c itself (callers failing together retry together).
 */
export type Jitter = 'full' | 'equal' | 'none'

/**
 * A retry budget's options. A budget caps retries at a fraction of first tries over a sliding
 * window, plus a floor per second, so a service that is down gets `ratio` more load, not
 * `attempts` times more (Finagle's RetryBudget; gRPC's retry throttling is the same idea).
 */
export interface RetryBudgetInit {
  /** Retries allowed per first try, over the window: 0.1 allows one retry per ten calls. @default 0.2 */
  readonly ratio?: number
  /** Retries allowed per second whatever the traffic, so that rare calls can still retry. @default 10 */
  readonly minPerSecond?: number
  /** The sliding window tries and retries are counted over, in milliseconds. @default 10000 */
  readonly windowMs?: number
  /** The budget's clock (tests inject one). @default Date.now */
  readonly now?: () => number
}

/** Counters of a retry budget. */
export interface RetryBudgetStats {
  /** First tries counted, over the budget's life. */
  readonly tries: number
  /** Retries the budget allowed. */
  readonly retries: number
  /** Retries the budget refused. */
  readonly denied: number
}

const BUCKETS = 10

/**
 * A retry budget (see RetryBudgetInit). Share one among the operators that call the same service
 * by passing it as `budget` in their policies; a policy giving options instead has a budget of
 * its own per operator instance.
 *
 * ```ts
 * const search = new RetryBudget({ ratio: 0.1, minPerSecond: 5 })
 * const lookup = retrying(callSearch, { attempts: 4, budget: search })
 * ```
 */
export class RetryBudget {
  readonly ratio: number
  readonly minPerSecond: number
  readonly windowMs: number
  private readonly now: () => number
  private readonly bucketMs: number
  // A ring of buckets, each the counts of one tenth of the window; `epochs` says which tenth.
  private readonly epochs = new Array<number>(BUCKETS).fill(Number.NEGATIVE_INFINITY)
  private readonly firstTries = new Array<number>(BUCKETS).fill(0)
  private readonly retried = new Array<number>(BUCKETS).fill(0)
  private counts = { tries: 0, retries: 0, denied: 0 }

  constructor(init: RetryBudgetInit = {}) {
    this.ratio = nonNegative('retry budget', 'ratio', init.ratio ?? 0.2)
    this.minPerSecond = nonNegative('retry budget', 'minPerSecond', init.minPerSecond ?? 10)
    this.windowMs = init.windowMs ?? 10_000
    if (typeof this.windowMs !== 'number' || !(this.windowMs > 0) || !Number.isFinite(this.windowMs)) {
      throw new InvalidOptionError('retry budget', 'windowMs', `must be a positive number of milliseconds, got ${String(init.windowMs)}`)
    }
    this.now = init.now ?? Date.now
    this.bucketMs = this.windowMs / BUCKETS
  }

  /** Counts a first try: it adds `ratio` retries to the budget. */
  recordTry(): void {
    this.firstTries[this.bucket()]!++
    this.counts.tries++
  }

  /** Takes one retry from the budget; false (and nothing taken) when the budget is spent. */
  tryRetry(): boolean {
    const current = this.bucket()
    const epoch = this.epochs[current]!
    let tries = 0
    let retries = 0
    for (let i = 0; i < BUCKETS; i++) {
      if (this.epochs[i]! > epoch - BUCKETS) {
        tries += this.firstTries[i]!
        retries += this.retried[i]!
      }
    }
    const allowed = (this.minPerSecond * this.windowMs) / 1000 + this.ratio * tries
    if (retries + 1 > allowed) {
      this.counts.denied++
      return false
    }
    this.retried[current]!++
    this.counts.retries++
    return true
  }

  stats(): RetryBudgetStats {
    return { ...this.counts }
  }

  /** The bucket of now, emptied when it last held an older tenth of the window. */
  private bucket(): number {
    const epoch = Math.floor(this.now() / this.bucketMs)
    const i = ((epoch % BUCKETS) + BUCKETS) % BUCKETS
    if (this.epochs[i] !== epoch) {
      this.epochs[i] = epoch
      this.firstTries[i] = 0
      this.retried[i] = 0
    }
    return i
  }
}

/** What `retry` and `retrying` report about each retry, to `onRetry` and as a `retry` layer event. */
export interface RetryEvent {
  readonly operator: string
  readonly instance: number
  /** The attempt that failed (1 for the first try). */
  readonly attempt: number
  /** How long it waits before the next attempt. */
  readonly delayMs: number
  /** What the failed attempt threw. */
  readonly error: unknown
}

/** How to retry. All optional. */
export interface RetryPolicy {
  /** Tries in all, the first included: 1 never retries. @default 3 */
  readonly attempts?: number
  /** The backoff ceiling before the first retry, doubling for each retry after it. @default 100 */
  readonly baseMs?: number
  /** The largest backoff ceiling. @default 10000 */
  readonly maxMs?: number
  /** @default 'full' */
  readonly jitter?: Jitter
  /**
   * The retry budget: a shared RetryBudget, options for one per operator instance, or `false` for
   * none. Keep the policy object (hoisted, or through `retrying`): options in a fresh policy object
   * on each call make a fresh budget each time. @default a budget per operator instance with RetryBudget's defaults
   */
  readonly budget?: RetryBudgetInit | RetryBudget | false
  /** Which errors are worth retrying. An abort of the job is never retried. @default every error */
  readonly retryOn?: (error: unknown) => boolean
  /** Uniform numbers in [0, 1) for the jitter (see the kernel's `seededRandom` for deterministic runs). @default Math.random */
  readonly random?: () => number
  /** Called at each retry, before the backoff wait. */
  readonly onRetry?: (event: RetryEvent) => void
}

/** The syscalls `retry` uses: `sleep` for the backoff, `info` to name the operator; `call` reports retries as events. */
export type RetryContext = Pick<AtomContext, 'info' | 'sleep'> & Partial<Pick<AtomContext, 'call'>>

/** Options of a `retry` call. */
export interface RetryOptions {
  /** Stops retrying when it aborts: the wait ends and `retry` rejects with the signal's reason. */
  readonly signal?: AbortSignal
}

/** Counters of a `retrying` handler, over all its instances in this process. */
export interface RetryStats {
  /** Records handled (first tries). */
  readonly calls: number
  /** Retries made. */
  readonly retries: number
  /** Records that succeeded after one retry or more. */
  readonly recovered: number
  /** Records that failed every attempt (RetriesExhaustedError). */
  readonly exhausted: number
  /** Records that failed with the budget spent (RetryBudgetExceededError). */
  readonly budgetExceeded: number
}

/** A handler wrapped by `retrying`: still a handler, plus its counters. */
export type RetryingHandler<T, O extends PortCodecs, S> = Handler<T, O, S> & {
  /** How the handler's retries went so far. */
  stats(): RetryStats
}

/**
 * The syscall through which `retry` reports retries as `retry` layer events; the supervision layer
 * registers it (any layer can, with `registerRetryEvents`).
 */
export const RETRY_SYSCALL = 'fault-tolerance.retry'

/**
 * The `layer` event a retry is reported as (by whichever layer registered `RETRY_SYSCALL`, the
 * supervision layer by default), with the RetryEvent, its error as text, as `data`.
 *
 * ```ts
 * job.events.subscribe((e) => { if (RETRIED.is(e)) console.log(e.data.operator, e.data.attempt) })
 * ```
 */
export const RETRIED = layerEvent<Omit<RetryEvent, 'error'> & { readonly error: string }>('retry')

/**
 * Registers the `RETRY_SYSCALL` syscall on a layer's control registry: each retry then becomes a
 * `layer` event of kind `retry` on `job.events`, with a RetryEvent (the error as text) as `data`.
 */
export function registerRetryEvents(registry: ControlRegistry): void {
  registry.syscall(RETRY_SYSCALL, (argument) => {
    const event = argument as { operator: string; instance: number; attempt: number; delayMs: number; error: string }
    registry.notify(RETRIED.kind, `${event.operator}[${event.instance}]: attempt ${event.attempt} failed (${event.error}); retrying in ${event.delayMs} ms`, event)
  })
}

/**
 * The backoff before retry number `retry` (1 before the second attempt): the ceiling
 * `min(maxMs, baseMs * 2^(retry-1))` randomised by `jitter`, in whole milliseconds.
 *
 * ```ts
 * backoffDelay(3, { baseMs: 100, maxMs: 1000, jitter: 'none' }) // 400
 * backoffDelay(3, { baseMs: 100, maxMs: 1000, jitter: 'full' }, () => 0.5) // 200
 * ```
 */
export function backoffDelay(retry: number, policy: Pick<RetryPolicy, 'baseMs' | 'maxMs' | 'jitter'>, random: () => number = Math.random): number {
  const { baseMs, maxMs, jitter } = resolved(policy)
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, retry - 1))
  if (jitter === 'none') return Math.floor(ceiling)
  if (jitter === 'equal') return Math.floor(ceiling / 2 + random() * (ceiling / 2))
  return Math.floor(random() * ceiling)
}

/**
 * Calls `fn` until it succeeds, at most `policy.attempts` times, waiting a jittered exponential
 * backoff between attempts with `ctx.sleep` (the atom yields meanwhile). Rejects with
 * RetriesExhaustedError after the last attempt, RetryBudgetExceededError when the budget refuses
 * a retry, or the error itself when `retryOn` says it is not worth retrying. Thrown from a
 * handler, these make the record a dead letter with the cause.
 *
 * ```ts
 * on: { in: async (id, ctx) => ctx.emit('out', await retry(() => fetchUser(id), policy, ctx)) }
 * ```
 */
export function retry<T>(fn: (attempt: number) => T | PromiseLike<T>, policy: RetryPolicy, ctx: RetryContext, options: RetryOptions = {}): Promise<T> {
  return attemptAll(fn, policy, resolved(policy), ctx, options.signal, undefined)
}

/**
 * Wraps an atom handler so that each record is retried by `policy` (see `retry`): for handlers
 * that call a flaky outside service. Emit after the call succeeds: emissions of a failed attempt
 * are not taken back. TypeScript cannot infer the value's type through the wrapper: annotate it,
 * or pass type arguments (`retrying<string, { out: typeof User }>`) for a fully typed `ctx`.
 *
 * ```ts
 * const enrich = atom({
 *   name: 'enrich', inputs: { in: t.string }, outputs: { out: User },
 *   on: { in: retrying(async (id: string, ctx) => ctx.emit('out', await users.get(id)), { attempts: 5, baseMs: 50, budget: { ratio: 0.1 } }) },
 * })
 * ```
 */
export function retrying<T, O extends PortCodecs = PortCodecs, S = unknown>(handler: Handler<T, O, S>, policy: RetryPolicy = {}): RetryingHandler<T, O, S> {
  const settings = resolved(policy)
  const counters = { calls: 0, retries: 0, recovered: 0, exhausted: 0, budgetExceeded: 0 }
  const wrapped = (value: T, ctx: AtomContext<O, S>): Promise<unknown> => attemptAll(() => handler(value, ctx), policy, settings, ctx, undefined, counters)
  return Object.assign(wrapped, { stats: (): RetryStats => ({ ...counters }) })
}

type Settings = Required<Pick<RetryPolicy, 'attempts' | 'baseMs' | 'maxMs' | 'jitter'>>

function resolved(policy: RetryPolicy): Settings {
  const attempts = policy.attempts ?? 3
  if (!Number.isInteger(attempts) || attempts < 1) throw new InvalidOptionError('retry policy', 'attempts', `must be an integer of at least 1, got ${String(attempts)}`)
  const baseMs = nonNegative('retry policy', 'baseMs', policy.baseMs ?? 100)
  const maxMs = nonNegative('retry policy', 'maxMs', policy.maxMs ?? 10_000)
  const jitter = policy.jitter ?? 'full'
  if (jitter !== 'full' && jitter !== 'equal' && jitter !== 'none')
    throw new InvalidOptionError('retry policy', 'jitter', `must be 'full', 'equal' or 'none', got ${JSON.stringify(jitter)}`)
  return { attempts, baseMs, maxMs, jitter }
}

function nonNegative(where: string, option: string, value: number): number {
  if (typeof value !== 'number' || !(value >= 0) || !Number.isFinite(value))
    throw new InvalidOptionError(where, option, `must be a finite number of at least 0, got ${String(value)}`)
  return value
}

/** Budgets made from options: one per policy and operator instance (the instance's info object lives as long as it runs). */
const budgets = new WeakMap<object, WeakMap<InstanceInfo, RetryBudget>>()
/** Policies without a `budget` share one default budget per instance. */
const DEFAULT_BUDGET = {}

function budgetOf(policy: RetryPolicy, info: InstanceInfo): RetryBudget | undefined {
  const budget = policy.budget
  if (budget === false) return undefined
  if (budget instanceof RetryBudget) return budget
  const key = budget ?? DEFAULT_BUDGET
  let perInstance = budgets.get(key)
  if (perInstance === undefined) budgets.set(key, (perInstance = new WeakMap()))
  let found = perInstance.get(info)
  if (found === undefined) perInstance.set(info, (found = new RetryBudget(budget ?? {})))
  return found
}

/** Instances whose job has no layer registering RETRY_SYSCALL: not asked again. */
const unreported = new WeakSet<InstanceInfo>()

function report(ctx: RetryContext, policy: RetryPolicy, event: RetryEvent): void {
  policy.onRetry?.(event)
  const call = ctx.call
  if (call === undefined || unreported.has(ctx.info)) return
  const data = { operator: event.operator, instance: event.instance, attempt: event.attempt, delayMs: event.delayMs, error: describeCause(event.error) }
  call.call(ctx, RETRY_SYSCALL, data).catch((error: unknown) => {
    if (error instanceof LaminaError && error.code === 'ERR_UNKNOWN_CONTROL') unreported.add(ctx.info)
  })
}

async function attemptAll<T>(
  fn: (attempt: number) => T | PromiseLike<T>,
  policy: RetryPolicy,
  settings: Settings,
  ctx: RetryContext,
  signal: AbortSignal | undefined,
  counters: { calls: number; retries: number; recovered: number; exhausted: number; budgetExceeded: number } | undefined,
): Promise<T> {
  const { operator, instance } = ctx.info
  const budget = budgetOf(policy, ctx.info)
  const random = policy.random ?? Math.random
  budget?.recordTry()
  if (counters !== undefined) counters.calls++
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted()
    try {
      const value = await fn(attempt)
      if (attempt > 1 && counters !== undefined) counters.recovered++
      return value
    } catch (error) {
      signal?.throwIfAborted()
      if (error instanceof JobAbortedError) throw error
      if (policy.retryOn !== undefined && !policy.retryOn(error)) throw error
      if (attempt >= settings.attempts) {
        if (counters !== undefined) counters.exhausted++
        throw new RetriesExhaustedError(operator, instance, attempt, error)
      }
      if (budget !== undefined && !budget.tryRetry()) {
        if (counters !== undefined) counters.budgetExceeded++
        throw new RetryBudgetExceededError(operator, instance, attempt, error)
      }
      if (counters !== undefined) counters.retries++
      const delayMs = backoffDelay(attempt, settings, random)
      report(ctx, policy, { operator, instance, attempt, delayMs, error })
      await wait(ctx, delayMs, signal)
    }
  }
}

/** `ctx.sleep(ms)`, ended early (rejecting with its reason) when `signal` aborts. */
function wait(ctx: RetryContext, ms: number, signal: AbortSignal | undefined): Promise<void> {
  const sleeping = ctx.sleep(ms)
  if (signal === undefined) return sleeping
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    sleeping.then(
      () => (signal.removeEventListener('abort', onAbort), resolve()),
      (error: unknown) => (signal.removeEventListener('abort', onAbort), reject(error)),
    )
    if (signal.aborted) onAbort()
  })
}
