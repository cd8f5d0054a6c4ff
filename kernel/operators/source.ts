// The source operator: emits the values of an array, iterable, async iterable or Observable, with backpressure.

import type * as t from 'io-ts'
import { isObservable, type Observable } from 'rxjs'
import type { Annotations, AnyCodec, AtomContext, Operator } from '../contracts.js'
import { SourceError } from '../errors.js'
import { atom } from '../operator.js'

/** Which part of a partitioned source one instance reads. */
export interface SourcePart {
  readonly instance: number
  readonly parallelism: number
  readonly signal: AbortSignal
}

/**
 * What a source reads. Arrays and partition functions split over the source's instances (an array
 * by stride); any other input is read by instance 0 alone. Iterables and async iterables are
 * pulled only as fast as credit allows; an Observable cannot be slowed, so its values queue in
 * memory until sent: prefer an async iterable for unbounded inputs.
 */
export type SourceInput<T> =
  | readonly T[]
  | Iterable<T>
  | AsyncIterable<T>
  | Observable<T>
  | ((part: SourcePart) => Iterable<T> | AsyncIterable<T>)

/** Options of `source`. */
export interface SourceOptions {
  /** Milliseconds a partial batch of an async input may wait before it is sent. @default 5 */
  readonly lingerMs?: number
  readonly annotations?: Annotations
}

/**
 * A source operator with one output port, `out`.
 *
 * ```ts
 * const lines = source('lines', t.string, text.split('\n'))
 * ```
 */
export function source<C extends AnyCodec>(name: string, codec: C, from: SourceInput<t.TypeOf<C>>, options: SourceOptions = {}): Operator<Record<never, never>, { out: C }> {
  const lingerMs = options.lingerMs ?? 5
  return atom<Record<never, never>, { out: C }>({
    name,
    outputs: { out: codec },
    ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
    run: async (ctx) => {
      const { instance, parallelism } = ctx.info
      try {
        if (Array.isArray(from)) return await emitArray(ctx, from as readonly unknown[], instance, parallelism)
        let input: Iterable<unknown> | AsyncIterable<unknown> | Observable<unknown>
        if (typeof from === 'function') input = (from as (part: SourcePart) => Iterable<unknown> | AsyncIterable<unknown>)({ instance, parallelism, signal: ctx.signal })
        else if (instance > 0) return
        else input = from as Iterable<unknown> | AsyncIterable<unknown> | Observable<unknown>
        if (isObservable(input)) input = observableValues(input)
        if (Symbol.asyncIterator in input) await emitAsync(ctx, input as AsyncIterable<unknown>, lingerMs)
        else await emitIterable(ctx, input as Iterable<unknown>)
      } catch (error) {
        throw new SourceError(name, error)
      }
    },
  })
}

type SourceContext = AtomContext<{ out: AnyCodec }, undefined>

async function emitArray(ctx: SourceContext, values: readonly unknown[], first: number, stride: number): Promise<void> {
  const batch = ctx.info.batchSize
  if (stride === 1) {
    for (let i = first; i < values.length; i += batch) {
      ctx.emitAll('out', values.slice(i, i + batch))
      await ctx.flush()
      if (ctx.signal.aborted) return
    }
    return
  }
  let n = 0
  for (let i = first; i < values.length; i += stride) {
    ctx.emit('out', values[i])
    if (++n === batch) {
      n = 0
      await ctx.flush()
      if (ctx.signal.aborted) return
    }
  }
}

async function emitIterable(ctx: SourceContext, values: Iterable<unknown>): Promise<void> {
  const batch = ctx.info.batchSize
  let n = 0
  for (const value of values) {
    ctx.emit('out', value)
    if (++n === batch) {
      n = 0
      await ctx.flush()
      if (ctx.signal.aborted) return
    }
  }
}

const LINGER = Symbol('linger')

/** Pulls an async iterable; a partial batch waits at most `lingerMs` for more before it is sent. */
async function emitAsync(ctx: SourceContext, values: AsyncIterable<unknown>, lingerMs: number): Promise<void> {
  const batch = ctx.info.batchSize
  const iterator = values[Symbol.asyncIterator]()
  let n = 0
  let timer: NodeJS.Timeout | undefined
  let deadline: Promise<typeof LINGER> | undefined
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
          next = await pending
        }
      } else next = await pending
      if (next.done === true) return
      ctx.emit('out', next.value)
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
