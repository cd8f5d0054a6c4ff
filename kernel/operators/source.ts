// The source operator: emits the values of an array, iterable, async iterable or Observable, with backpressure.

import * as t from 'io-ts'
import { isObservable, type Observable } from 'rxjs'
import type { Annotations, AnyCodec, AtomContext, Operator } from '../contracts.js'
import { InvalidOptionError, SourceError } from '../errors.js'
import { atom } from '../operator.js'
import { type EventTime, watermarkOf } from '../time.js'

/** Which part of a partitioned source one instance reads. */
export interface SourcePart {
  readonly instance: number
  readonly parallelism: number
  readonly signal: AbortSignal
  /**
   * Records of this part already emitted before a restart (0 on a first run). A source declared
   * `replay: 'seek'` starts its iterable here; otherwise the kernel skips that many values.
   */
  readonly offset: number
}

/**
 * How a source replays after a restore from a checkpoint (its offset is the number of records
 * each instance emitted, kept in its state):
 * - `skip`: read the input again from the start and skip `offset` values (arrays, iterables that
 *   can be iterated again, partition functions);
 * - `seek`: a partition function starts at `part.offset` itself (files, logs, generators);
 * - `none`: the input cannot be read again (an async iterable, an Observable, a one-shot
 *   iterator): after a restore, what was read since the checkpoint is lost (at-most-once).
 */
export type SourceReplay = 'skip' | 'seek' | 'none'

/**
 * What a source reads. Arrays and partition functions split over the source's instances (an array
 * by stride); any other input is read by instance 0 alone. Iterables and async iterables are
 * pulled only as fast as credit allows; an Observable cannot be slowed, so its values queue in
 * memory until sent: prefer an async iterable for unbounded inputs.
 */
export type SourceInput<T> = readonly T[] | Iterable<T> | AsyncIterable<T> | Observable<T> | ((part: SourcePart) => Iterable<T> | AsyncIterable<T>)

/** Options of `source`. */
export interface SourceOptions<T = unknown> {
  /**
   * Event time: each record's time (ms) and how the watermark follows it. After each batch it
   * emits, the source emits a watermark (kernel/time.ts). A record whose time is not a finite
   * number becomes a dead letter. @default none: no watermarks
   */
  readonly eventTime?: EventTime<T>
  /** Milliseconds a partial batch of an async input may wait before it is sent. @default 5 */
  readonly lingerMs?: number
  readonly annotations?: Annotations
  /**
   * How the source replays after a restore (see SourceReplay). @default `skip` for arrays,
   * partition functions and re-iterable iterables; `none` for async iterables, Observables and
   * one-shot iterators (an iterator that is its own iterable)
   */
  readonly replay?: SourceReplay
}

/** A source's state: records this instance has emitted (its replay offset). */
const Offset = t.number

/** The default replay of an input (see SourceOptions.replay). */
function replayOf(from: unknown): SourceReplay {
  if (Array.isArray(from) || typeof from === 'function') return 'skip'
  if (isObservable(from) || (typeof from === 'object' && from !== null && Symbol.asyncIterator in from)) return 'none'
  const iterable = from as Iterable<unknown>
  const iterator = iterable[Symbol.iterator]
  return (iterator as unknown) === undefined || (from as { next?: unknown }).next !== undefined ? 'none' : 'skip'
}

/**
 * A source operator with one output port, `out`.
 *
 * ```ts
 * const lines = source('lines', t.string, text.split('\n'))
 * ```
 */
export function source<C extends AnyCodec>(
  name: string,
  codec: C,
  from: SourceInput<t.TypeOf<C>>,
  options: SourceOptions<t.TypeOf<C>> = {},
): Operator<Record<never, never>, { out: C }> {
  const lingerMs = options.lingerMs ?? 5
  const idleMs = options.eventTime?.idleMs
  if (idleMs !== undefined && !(Number.isFinite(idleMs) && idleMs > 0))
    throw new InvalidOptionError(`operator ${name}`, 'eventTime.idleMs', `must be a positive number of milliseconds, got ${idleMs}`)
  const replay = options.replay ?? replayOf(from)
  return atom<Record<never, never>, { out: C }, number>({
    name,
    outputs: { out: codec },
    annotations: { ...options.annotations, replay },
    // The offset (records emitted) is state, so a checkpoint holds it and a restore resumes there.
    // It is updated before every await: a marker is only ever seen at an await.
    state: { codec: Offset, init: () => 0 },
    run: async (plain) => {
      const ctx = options.eventTime === undefined ? plain : withEventTime(plain, options.eventTime as EventTime<unknown>)
      const { instance, parallelism } = ctx.info
      const offset = ctx.state.get()
      try {
        if (Array.isArray(from)) return await emitArray(ctx, from as readonly unknown[], instance, parallelism, offset)
        let input: Iterable<unknown> | AsyncIterable<unknown> | Observable<unknown>
        if (typeof from === 'function') input = (from as (part: SourcePart) => Iterable<unknown> | AsyncIterable<unknown>)({ instance, parallelism, signal: ctx.signal, offset })
        else if (instance > 0) return
        else input = from as Iterable<unknown> | AsyncIterable<unknown> | Observable<unknown>
        const skip = replay === 'skip' ? offset : 0
        if (isObservable(input)) input = observableValues(input)
        if (Symbol.asyncIterator in input) await emitAsync(ctx, input as AsyncIterable<unknown>, lingerMs, skip, idleMs)
        else await emitIterable(ctx, input as Iterable<unknown>, skip)
      } catch (error) {
        throw new SourceError(name, error)
      }
    },
  })
}

type SourceContext = AtomContext<{ out: AnyCodec }, number>

/**
 * The source's context with event time: every record emitted is timed (one whose time is not a
 * finite number is a dead letter instead), and each flush, that is each batch, first emits the
 * watermark the strategy gives for the largest time so far. A watermark sent a little late is safe
 * (nothing emitted after it is late because of that); one sent early would not be.
 */
function withEventTime(ctx: SourceContext, eventTime: EventTime<unknown>): SourceContext {
  let maxTime = Number.NEGATIVE_INFINITY
  let records = 0
  const timed = (value: unknown): boolean => {
    const time = eventTime.timestamp(value)
    if (!Number.isFinite(time)) {
      ctx.reject(value, `event time ${String(time)} is not a finite number`)
      return false
    }
    if (time > maxTime) maxTime = time
    records++
    return true
  }
  const timedCtx: SourceContext = Object.create(ctx) as SourceContext
  return Object.assign(timedCtx, {
    emit(port: 'out', value: unknown): void {
      if (timed(value)) ctx.emit(port, value)
    },
    emitAll(port: 'out', values: readonly unknown[]): void {
      // Usually every record is timed: then the batch goes on as it is, with no copy.
      const timestamp = eventTime.timestamp
      let max = maxTime
      let all = true
      for (let i = 0; i < values.length; i++) {
        const time = timestamp(values[i])
        if (time > max) max = time
        else if (!(time <= max) || time === Number.NEGATIVE_INFINITY) all = false // NaN or -Infinity (+Infinity makes max infinite)
      }
      if (all && Number.isFinite(max)) {
        maxTime = max
        records += values.length
        ctx.emitAll(port, values)
      } else ctx.emitAll(port, values.filter(timed))
    },
    flush(): Promise<void> {
      if (records > 0) ctx.emitWatermark(watermarkOf(eventTime, maxTime, records))
      return ctx.flush()
    },
  })
}

async function emitArray(ctx: SourceContext, values: readonly unknown[], first: number, stride: number, offset: number): Promise<void> {
  const batch = ctx.info.batchSize
  let emitted = offset
  if (stride === 1) {
    for (let i = first + offset; i < values.length; i += batch) {
      const part = values.slice(i, i + batch)
      ctx.emitAll('out', part)
      ctx.state.set((emitted += part.length))
      await ctx.flush()
      if (ctx.signal.aborted) return
    }
    return
  }
  let n = 0
  for (let i = first + offset * stride; i < values.length; i += stride) {
    ctx.emit('out', values[i])
    emitted++
    if (++n === batch) {
      n = 0
      ctx.state.set(emitted)
      await ctx.flush()
      if (ctx.signal.aborted) return
    }
  }
  ctx.state.set(emitted)
}

async function emitIterable(ctx: SourceContext, values: Iterable<unknown>, skip: number): Promise<void> {
  const batch = ctx.info.batchSize
  let n = 0
  let emitted = ctx.state.get()
  let skipped = 0
  for (const value of values) {
    if (skipped < skip) {
      skipped++
      continue
    }
    ctx.emit('out', value)
    emitted++
    if (++n === batch) {
      n = 0
      ctx.state.set(emitted)
      await ctx.flush()
      if (ctx.signal.aborted) return
    }
  }
  ctx.state.set(emitted)
}

const LINGER = Symbol('linger')
const IDLE = Symbol('idle')

/**
 * The next value of an iterator with nothing left to send; after `idleMs` without one the source is
 * declared idle (once: `idle` says it was), then the value is awaited as usual.
 */
async function nextOrIdle(
  ctx: SourceContext,
  pending: Promise<IteratorResult<unknown>>,
  idleMs: number | undefined,
  idle: { declared: boolean },
): Promise<IteratorResult<unknown>> {
  if (idleMs === undefined || idle.declared) return pending
  let timer: NodeJS.Timeout | undefined
  const quiet = new Promise<typeof IDLE>((resolve) => {
    timer = setTimeout(() => resolve(IDLE), idleMs)
  })
  try {
    const first = await Promise.race([pending, quiet])
    if (first !== IDLE) return first
  } finally {
    clearTimeout(timer)
  }
  idle.declared = true
  ctx.markIdle()
  return pending
}

/**
 * Pulls an async iterable; a partial batch waits at most `lingerMs` for more before it is sent.
 * With `idleMs` (event time), a wait of that long with nothing to send declares the source idle.
 */
async function emitAsync(ctx: SourceContext, values: AsyncIterable<unknown>, lingerMs: number, skip: number, idleMs?: number): Promise<void> {
  const batch = ctx.info.batchSize
  const iterator = values[Symbol.asyncIterator]()
  let n = 0
  let emitted = ctx.state.get()
  let skipped = 0
  let timer: NodeJS.Timeout | undefined
  let deadline: Promise<typeof LINGER> | undefined
  const idle = { declared: false }
  const clearDeadline = (): void => {
    clearTimeout(timer)
    deadline = undefined
  }
  try {
    for (;;) {
      if (ctx.signal.aborted) {
        await iterator.return?.()
        return
      }
      const pending = iterator.next()
      let next: IteratorResult<unknown> | typeof LINGER
      if (n > 0) {
        deadline ??= new Promise((resolve) => {
          timer = setTimeout(() => resolve(LINGER), lingerMs)
        })
        next = await Promise.race([pending, deadline])
        if (next === LINGER) {
          clearDeadline()
          n = 0
          await ctx.flush()
          next = await nextOrIdle(ctx, pending, idleMs, idle)
        }
      } else next = await nextOrIdle(ctx, pending, idleMs, idle)
      if (next.done === true) return
      idle.declared = false
      if (skipped < skip) {
        skipped++
        continue
      }
      ctx.emit('out', next.value)
      // Set before the next await (the iterator's), where a marker may be seen.
      ctx.state.set(++emitted)
      if (++n === batch) {
        n = 0
        clearDeadline()
        await ctx.flush()
      }
    }
  } finally {
    clearDeadline()
  }
}

/** An Observable as an async iterable; values queue while the consumer is slower (Observables cannot wait). */
async function* observableValues(values: Observable<unknown>): AsyncIterable<unknown> {
  const queue: unknown[] = []
  let finished = false
  let failure: { error: unknown } | undefined
  let wake: (() => void) | undefined
  const subscription = values.subscribe({
    next: (value) => {
      queue.push(value)
      wake?.()
    },
    error: (error: unknown) => {
      failure = { error }
      wake?.()
    },
    complete: () => {
      finished = true
      wake?.()
    },
  })
  try {
    for (;;) {
      while (queue.length > 0) yield queue.shift()
      if (failure !== undefined) throw failure.error
      if (finished) return
      await new Promise<void>((resolve) => {
        wake = resolve
      })
      wake = undefined
    }
  } finally {
    subscription.unsubscribe()
  }
}
