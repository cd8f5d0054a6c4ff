// The map operator: one output value per input value.

import type * as t from 'io-ts'
import type { Annotations, AnyCodec, Operator } from '../contracts.js'
import { atom } from '../operator.js'

/**
 * Applies `fn` to every value of `in` and emits the result on `out`.
 *
 * ```ts
 * const lengths = map('lengths', t.string, t.number, (s) => s.length)
 * ```
 */
export function map<I extends AnyCodec, O extends AnyCodec>(
  name: string,
  input: I,
  output: O,
  fn: (value: t.TypeOf<I>) => t.TypeOf<O>,
  annotations?: Annotations,
): Operator<{ in: I }, { out: O }> {
  return atom<{ in: I }, { out: O }>({
    name,
    inputs: { in: input },
    outputs: { out: output },
    on: { in: (value, ctx) => ctx.emit('out', fn(value)) },
    ...(annotations === undefined ? {} : { annotations }),
  })
}
