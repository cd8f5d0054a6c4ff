// The flatMap operator: any number of output values per input value.

import type * as t from 'io-ts'
import type { Annotations, AnyCodec, Operator } from '../contracts.js'
import { atom } from '../operator.js'

/**
 * Emits on `out` every value of the iterable `fn` returns for each value of `in`.
 *
 * ```ts
 * const words = flatMap('words', t.string, t.string, (line) => line.split(' '))
 * ```
 */
export function flatMap<I extends AnyCodec, O extends AnyCodec>(
  name: string,
  input: I,
  output: O,
  fn: (value: t.TypeOf<I>) => Iterable<t.TypeOf<O>>,
  annotations?: Annotations,
): Operator<{ in: I }, { out: O }> {
  return atom<{ in: I }, { out: O }>({
    name,
    inputs: { in: input },
    outputs: { out: output },
    on: {
      in: (value, ctx) => {
        for (const item of fn(value)) ctx.emit('out', item)
      },
    },
    ...(annotations === undefined ? {} : { annotations }),
  })
}
