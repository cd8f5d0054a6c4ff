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

/** A compiled check of a value against a codec (see guardOf). */
export type Guard = (value: unknown) => boolean

/** io-ts's own tags for the codecs `guardOf` compiles. */
interface Tagged {
  readonly _tag?: string
  readonly props?: { readonly [field: string]: AnyCodec }
}

const PRIMITIVE_TAGS: { readonly [tag: string]: string } = { StringType: 'string', NumberType: 'number', BooleanType: 'boolean' }

/**
 * A check equivalent to `codec.is`, compiled to straight-line code for the common shapes:
 * primitives, and `t.type` objects whose fields are primitives (as schema validators such as ajv
 * compile their checks). A plain object (prototype Object.prototype) is checked field by field; any
 * other value goes to io-ts's own `codec.is`, so results do not change.
 */
export function guardOf(codec: AnyCodec): Guard {
  const tagged = codec as Tagged
  const primitive = tagged._tag === undefined ? undefined : PRIMITIVE_TAGS[tagged._tag]
  if (primitive !== undefined) return new Function('u', `return typeof u === ${JSON.stringify(primitive)}`) as Guard
  if (tagged._tag === 'InterfaceType' && tagged.props !== undefined) {
    const fields = Object.entries(tagged.props).map(([field, type]) => [field, PRIMITIVE_TAGS[(type as Tagged)._tag ?? '']] as const)
    if (fields.length <= 16 && fields.every(([, kind]) => kind !== undefined)) {
      const test = fields.map(([field, kind]) => `typeof u[${JSON.stringify(field)}] === ${JSON.stringify(kind)}`).join(' && ') || 'true'
      const body = `return (u) => (typeof u === 'object' && u !== null && Object.getPrototypeOf(u) === plain) ? (${test}) : slow(u)`
      return new Function('plain', 'slow', body)(Object.prototype, (u: unknown) => codec.is(u)) as Guard
    }
  }
  return (u) => codec.is(u)
}
