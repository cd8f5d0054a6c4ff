// Port codecs: io-ts re-exported for programs, and decode failures rendered with their path inside the value.

import * as t from 'io-ts'
import { isLeft } from 'fp-ts/lib/Either.js'
import type { AnyCodec } from './contracts.js'

export { t }

/** One decode failure: the path inside the value, the type expected there and what was found. */
export interface DecodeProblem {
  /** `.word`, `[3].word`, or empty for the whole value. */
  readonly path: string
  readonly expected: string
  readonly actual: unknown
}

/**
 * Checks `value` against `codec`. Returns undefined when it fits, else the problems with their
 * paths. Uses the allocation-free `is` first; only a failure pays for a full `decode`.
 */
export function check(codec: AnyCodec, value: unknown): readonly DecodeProblem[] | undefined {
  if (codec.is(value)) return undefined
  const result = codec.decode(value)
  if (!isLeft(result)) return [{ path: '', expected: codec.name, actual: value }]
  return result.left.map((error) => {
    let path = ''
    for (const entry of error.context.slice(1)) path += /^\d+$/.test(entry.key) ? `[${entry.key}]` : `.${entry.key}`
    const last = error.context[error.context.length - 1]
    return { path, expected: last?.type.name ?? codec.name, actual: error.value }
  })
}

/** Renders one problem as `.word expected string, got 42`. */
export function renderProblem(problem: DecodeProblem): string {
  return `${problem.path === '' ? '' : `${problem.path} `}expected ${problem.expected}, got ${renderValue(problem.actual)}`
}

function renderValue(value: unknown): string {
  if (value === undefined) return 'undefined'
  if (typeof value === 'number' || typeof value === 'bigint') return String(value)
  try {
    const text = JSON.stringify(value)
    return text.length > 80 ? `${text.slice(0, 77)}...` : text
  } catch {
    return String(value)
  }
}

/** True when a codec accepts every value, so checking it is pointless. */
export function acceptsAll(codec: AnyCodec): boolean {
  return codec === t.unknown || codec.name === 'unknown'
}

/**
 * True when values of `from` may flow into `to`. Codecs are compared by name (io-ts names a
 * structural type by its shape, e.g. `{ word: string }`). An `unknown` input accepts everything;
 * an `unknown` output (values from outside the program) may feed any input, whose codec then
 * decides, record by record, what is accepted and what becomes a dead letter.
 */
export function compatible(from: AnyCodec, to: AnyCodec): boolean {
  return from === to || acceptsAll(to) || acceptsAll(from) || from.name === to.name
}
