// The sink operator: delivers the values of its input to an array, a callback or an rxjs Observer.

import type * as t from 'io-ts'
import type { Observer } from 'rxjs'
import type { Annotations, AnyCodec, Operator } from '../contracts.js'
import { atom } from '../operator.js'

/** Where a sink delivers: pushed into an array, passed to a callback (awaited), or to an Observer. */
export type SinkTarget<T> = T[] | ((value: T) => unknown) | Partial<Observer<T>>

/**
 * A sink operator with one input port, `in`. An Observer target is completed when the input ends.
 *
 * ```ts
 * const results: string[] = []
 * const out = sink('out', t.string, results)
 * ```
 */
export function sink<C extends AnyCodec>(name: string, codec: C, target: SinkTarget<t.TypeOf<C>>, annotations?: Annotations): Operator<{ in: C }, Record<never, never>> {
  let deliver: (value: t.TypeOf<C>) => unknown
  let complete: (() => void) | undefined
  if (Array.isArray(target)) deliver = (value) => void target.push(value)
  else if (typeof target === 'function') deliver = target
  else {
    const observer = target as Partial<Observer<t.TypeOf<C>>>
    deliver = (value) => observer.next?.(value)
    complete = () => observer.complete?.()
  }
  return atom<{ in: C }, Record<never, never>>({
    name,
    inputs: { in: codec },
    on: { in: (value) => deliver(value) },
    ...(complete === undefined ? {} : { end: complete }),
    ...(annotations === undefined ? {} : { annotations }),
  })
}
