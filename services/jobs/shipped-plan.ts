// The planned shape of a job as it travels: the submitter runs the layers' plan hooks once and
// ships each operator's planned annotations; the other peers apply them to the program their copy
// of the module builds and run it as planned, without running any plan hook again.

import type { Annotations, Program } from '../../kernel/index.js'
import { PlanMismatchError, UnshippablePlanError } from './errors.js'

/** Each operator's annotations that planning set or changed (parallelism, assignment, placement explanation …), as JSON. */
export type ShippedPlan = { readonly [operator: string]: Readonly<Record<string, unknown>> }

/**
 * What the plan hooks decided, in a form that travels: every operator's annotations. Plan hooks
 * may rewrite annotations only; a hook that adds, removes or renames operators or links cannot be
 * shipped and fails here with UnshippablePlanError, naming the difference.
 */
export function shipPlan(unplanned: Program, planned: Program): ShippedPlan {
  const before = operatorNames(unplanned)
  const after = operatorNames(planned)
  if (before.join('\n') !== after.join('\n') || linkIds(unplanned) !== linkIds(planned)) {
    throw new UnshippablePlanError(planned.name, difference(before, after, linkIds(unplanned), linkIds(planned)))
  }
  const shipped: Record<string, Record<string, unknown>> = {}
  for (const operator of planned.operators) {
    // Only what planning changed travels: annotations the module itself sets (which may hold
    // functions, such as a retry policy) are built alike on every peer.
    const base = unplanned.operators.find((o) => o.name === operator.name)!.annotations as Readonly<Record<string, unknown>>
    const annotations = operator.annotations as Readonly<Record<string, unknown>>
    const changed: Record<string, unknown> = {}
    for (const field of Object.keys(base)) {
      if (!(field in annotations)) throw new UnshippablePlanError(planned.name, `a plan hook removed ${operator.name}.annotations.${field}`)
    }
    for (const [field, value] of Object.entries(annotations)) {
      if (value === base[field]) continue
      const problem = jsonProblem(value, `${operator.name}.annotations.${field}`)
      if (problem !== undefined) throw new UnshippablePlanError(planned.name, problem)
      changed[field] = JSON.parse(JSON.stringify(value ?? null)) as unknown
    }
    shipped[operator.name] = changed
  }
  return shipped
}

/**
 * The program with the submitter's planned annotations applied: what `kernel.run(…, { planned:
 * true })` runs on a peer. The peer's module must build the same operators as the submitter's
 * (PlanMismatchError names the ones that differ: a different module at the same path, or other
 * arguments).
 */
export function applyPlan(program: Program, shipped: ShippedPlan, peer: string): Program {
  const here = operatorNames(program)
  const there = Object.keys(shipped).sort()
  if (here.join('\n') !== there.join('\n')) throw new PlanMismatchError(program.name, peer, difference(there, here, '', ''))
  return program.mapOperators((operator) => operator.annotate(shipped[operator.name] as Annotations))
}

function operatorNames(program: Program): string[] {
  return program.operators.map((o) => o.name).sort()
}

function linkIds(program: Program): string {
  return program.links
    .map((l) => l.id)
    .sort()
    .join('\n')
}

/** Names what one side has and the other lacks. */
function difference(expected: readonly string[], actual: readonly string[], expectedLinks: string, actualLinks: string): string {
  const missing = expected.filter((name) => !actual.includes(name))
  const extra = actual.filter((name) => !expected.includes(name))
  const parts = [
    ...(missing.length === 0 ? [] : [`operators missing: ${missing.join(', ')}`]),
    ...(extra.length === 0 ? [] : [`operators added: ${extra.join(', ')}`]),
    ...(expectedLinks === actualLinks ? [] : ['the links differ']),
  ]
  return parts.join('; ')
}

/** Why `value` would not survive JSON unchanged, or undefined when it would. */
function jsonProblem(value: unknown, path: string): string | undefined {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return undefined
  if (typeof value === 'number') return Number.isFinite(value) ? undefined : `${path} is ${value}, which JSON cannot carry`
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const problem = jsonProblem(value[i], `${path}[${i}]`)
      if (problem !== undefined) return problem
    }
    return undefined
  }
  if (typeof value === 'object') {
    const prototype: unknown = Object.getPrototypeOf(value)
    if (prototype !== Object.prototype && prototype !== null) return `${path} is a ${(value as object).constructor?.name ?? 'class instance'}, not plain data`
    for (const [key, field] of Object.entries(value)) {
      if (field === undefined) continue
      const problem = jsonProblem(field, `${path}.${key}`)
      if (problem !== undefined) return problem
    }
    return undefined
  }
  return `${path} is a ${typeof value}, which cannot travel to other peers`
}
