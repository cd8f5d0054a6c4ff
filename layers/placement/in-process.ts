// Placement in one process with the annotations not enforced: the plan `placement({ inProcess: 'ignore' })` makes there.

import type { PlanContext, Program } from '../../kernel/index.js'
import { placementOf, type PlacementAnnotation } from './annotations.js'
import type { PlacedInstance, PlacementPlan } from './plan.js'
import { buildGroups, constraintTexts, solve, type PlacementOptions } from './solver.js'

/** Whether a plan context offers no peer but the submitter: a run in one process (`kernel.run`), or a cluster of one member. */
export function onePeer(context: Pick<PlanContext, 'peers' | 'self'>): boolean {
  return context.peers.every((peer) => peer.id === context.self)
}

/** The constraints an operator's own (checked) placement annotation asks for, as text; empty when it asks for none. */
function annotationTexts(annotation: PlacementAnnotation): string[] {
  const out: string[] = []
  if (annotation.pin !== undefined) out.push(`pin "${annotation.pin}"`)
  for (const tag of annotation.tags ?? []) out.push(`tag ${tag}`)
  for (const peer of annotation.avoid ?? []) out.push(`avoid "${peer}"`)
  const demand = Object.entries(annotation.resources ?? {}).filter(([, amount]) => amount !== 0)
  if (demand.length > 0) out.push(`resources ${demand.map(([resource, amount]) => `${resource}=${amount}`).join(', ')}`)
  if (annotation.spread === true) out.push('spread')
  if ((annotation.colocate ?? []).length > 0) out.push(`colocate with ${annotation.colocate!.join(', ')}`)
  return out
}

/**
 * The plan of a program whose placement annotations are not enforced: every instance on the one
 * peer there is (the submitter), each annotated operator's instances with rule `ignored` and its
 * unenforced constraints in the reason, the plan's `ignored` listing them all. Annotations are
 * still checked, so a malformed one throws PlacementAnnotationError as it would when enforced.
 * Returns undefined when no operator has an annotation: then there is nothing to ignore, and the
 * ordinary `solve` gives the plan.
 */
export function ignoringPlan(program: Program, context: PlanContext, options: PlacementOptions): PlacementPlan | undefined {
  const groups = buildGroups(program, options.spareSubmitter ?? true)
  const own = new Map(program.operators.map((operator) => [operator.name, annotationTexts(placementOf(operator))]))
  const ignored = program.operators.flatMap((operator) => {
    const texts = own.get(operator.name)!
    return texts.length === 0 ? [] : [`${operator.name}: ${texts.join(', ')}`]
  })
  if (ignored.length === 0) return undefined
  // What the solver would record as each instance's constraints had it enforced them.
  const constraints = new Map<string, string[]>()
  for (const group of groups) for (const member of group.members) constraints.set(member.name, constraintTexts(group))
  const bare = program.mapOperators((operator) => (own.get(operator.name)!.length === 0 ? operator : operator.annotate({ placement: {} })))
  const plan = solve(bare, context, options)
  const instances = plan.instances.map((placed): PlacedInstance => {
    const texts = own.get(placed.operator)!
    const base = { ...placed, constraints: constraints.get(placed.operator) ?? placed.constraints }
    if (texts.length === 0) return base
    return { ...base, rule: 'ignored', by: placed.operator, reason: `in one process: ${texts.join(', ')} not enforced` }
  })
  return { ...plan, instances, ignored }
}
