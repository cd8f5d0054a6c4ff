// The filter operator: passes on the values a predicate accepts.

import type * as t from 'io-ts'
import type { Annotations, AnyCodec, Operator } from '../contracts.js'
import { atom } from '../operator.js'

/**
 * Emits on `out` the values of `in` for which `predicate` is true.
 *
 * ```ts
 * const long = filter('long', t.string, (s) => s.length > 3)
 * ```
 */
export function filter<C extends AnyCodec>(name: string, codec: C, predicate: (value: t.TypeOf<C>) => boolean, annotations?: Annotations): Operator<{ in: C }, { out: C }> {
  return atom<{ in: C }, { out: C }>({
    name,
    inputs: { in: codec },
    outputs: { out: codec },
    on: {
      in: (value, ctx) => {
        if (predicate(value)) ctx.emit('out', value)
      },
    },
    ...(annotations === undefined ? {} : { annotations }),
  })
}
