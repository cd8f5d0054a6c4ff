// Placement plans as plain data: where each operator instance runs and which rule decided it; `explain` renders them.

import type { Operator, Program } from '../../kernel/index.js'
import type {} from './annotations.js' // the Annotations augmentation (placementExplanation) this file reads
import { PlacementInputError } from './errors.js'

/**
 * What decided where an instance runs:
 * - `pin`, `tags`, `avoid`, `spread`, `resources`: that annotation (the most specific one present
 *   on the instance's co-located group, in this order);
 * - `colocate`: the instance followed the member of its co-located group whose annotation decided;
 * - `submitter`: the default for sources and sinks, which stay on the submitting peer;
 * - `least-loaded`: the default for transforms, on the peer with the fewest instances (the
 *   submitter only when no other peer can take it);
 * - `ignored`: the operator's annotations were not enforced, because the job runs in one process
 *   under `placement({ inProcess: 'ignore' })` (every instance is on the submitter).
 */
export type PlacementRule = 'pin' | 'tags' | 'avoid' | 'resources' | 'spread' | 'colocate' | 'submitter' | 'least-loaded' | 'ignored'

/** Why an instance moved in a re-placement: its peer left, it rebalanced onto a peer that joined, or it had no place yet. */
export type MoveReason = 'left' | 'rebalance' | 'new'

/** Where one operator instance runs, and why. */
export interface PlacedInstance {
  readonly operator: string
  readonly instance: number
  readonly peer: string
  readonly rule: PlacementRule
  /** The operator whose annotation decided (itself, or the member of its co-located group it followed). */
  readonly by: string
  /** The decision in words, e.g. `pinned to "peer-1" (name tag)`, `least-loaded of 3 peers with region=eu`. */
  readonly reason: string
  /** Every constraint that applied to the instance, as text (those of its co-located group included). */
  readonly constraints: readonly string[]
  /** Set by `replace` when the instance moved: from which peer (none for an instance new to the plan), and why. */
  readonly moved?: { readonly from?: string; readonly because: MoveReason }
}

/** A placement of a whole program. Plain data: compare with `toEqual`, store, or send it. */
export interface PlacementPlan {
  readonly job: string
  /** The submitting peer (sources and sinks stay there by default). */
  readonly self: string
  /** The peers considered, sorted by id. */
  readonly peers: readonly string[]
  /** `name` tags of the peers that have one, for display. */
  readonly names: Readonly<Record<string, string>>
  /** Whether transforms with no pin or tag avoided the submitter (see PlacementOptions). */
  readonly spareSubmitter: boolean
  /** Every instance, in program order, then by instance index. */
  readonly instances: readonly PlacedInstance[]
  /**
   * Set when the plan was made in one process with its annotations not enforced
   * (`placement({ inProcess: 'ignore' })`): each annotated operator with its constraints,
   * `count: tag name=peer-0`. Absent when everything was enforced.
   */
  readonly ignored?: readonly string[]
}

/** What the placement layer records on each operator (annotation `placementExplanation`): its share of the plan. */
export interface PlacementRecord {
  readonly job: string
  readonly self: string
  readonly peers: readonly string[]
  readonly names: Readonly<Record<string, string>>
  readonly spareSubmitter: boolean
  readonly instances: readonly PlacedInstance[]
  /** See PlacementPlan.ignored. */
  readonly ignored?: readonly string[]
}

/** One line of an explanation, as data. */
export interface ExplanationEntry {
  /** `operator#instance`. */
  readonly id: string
  readonly operator: string
  readonly instance: number
  readonly peer: string
  /** The peer's `name` tag, when it has one. */
  readonly peerName?: string
  readonly rule: PlacementRule
  readonly by: string
  readonly reason: string
  readonly moved?: { readonly from?: string; readonly because: MoveReason }
}

/** A plan explained: one entry per instance, and the same as text (a header, then one line each). */
export interface PlacementExplanation {
  readonly entries: readonly ExplanationEntry[]
  /** The annotations not enforced (PlacementPlan.ignored), when some were not. */
  readonly ignored?: readonly string[]
  readonly text: string
}

/** `id (name)` when the peer has a name tag. */
function shown(peer: string, names: Readonly<Record<string, string>>): string {
  const name = names[peer]
  return name === undefined ? peer : `${peer} (${name})`
}

/**
 * Says for each operator instance where it goes and which annotation (or default) decided it.
 * A plan made in one process with its annotations ignored says so on the line after the header.
 *
 * ```ts
 * console.log(explain(plan).text)
 * // count#0 -> 12D3KooW… (peer-1)  [pin] pinned to "peer-1" (name tag)
 * ```
 */
export function explain(plan: PlacementPlan): PlacementExplanation {
  const entries = plan.instances.map((p): ExplanationEntry => {
    const name = plan.names[p.peer]
    return {
      id: `${p.operator}#${p.instance}`,
      operator: p.operator,
      instance: p.instance,
      peer: p.peer,
      ...(name === undefined ? {} : { peerName: name }),
      rule: p.rule,
      by: p.by,
      reason: p.reason,
      ...(p.moved === undefined ? {} : { moved: p.moved }),
    }
  })
  const width = Math.max(0, ...entries.map((e) => e.id.length))
  const lines = entries.map((e) => {
    const moved =
      e.moved === undefined ? '' : e.moved.from === undefined ? `; placed anew (${e.moved.because})` : `; moved from ${shown(e.moved.from, plan.names)} (${e.moved.because})`
    return `${e.id.padEnd(width)} -> ${shown(e.peer, plan.names)}  [${e.rule}] ${e.reason}${moved}`
  })
  const header = `placement of job ${plan.job}: ${entries.length} instance${entries.length === 1 ? '' : 's'} on ${new Set(entries.map((e) => e.peer)).size} of ${plan.peers.length} peer${plan.peers.length === 1 ? '' : 's'} (submitter ${shown(plan.self, plan.names)})`
  const ignored = plan.ignored ?? []
  if (ignored.length === 0) return { entries, text: [header, ...lines].join('\n') }
  const notice = `annotations not enforced in one process (placement({ inProcess: 'ignore' })): ${ignored.join('; ')}`
  return { entries, ignored, text: [header, notice, ...lines].join('\n') }
}

/** The peers of each operator's instances, by index: what the `assignment` annotation holds. */
export function assignmentOf(plan: PlacementPlan): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (const p of plan.instances) (out[p.operator] ??= [])[p.instance] = p.peer
  return out
}

/** Writes a plan onto a program: the `assignment` and `placementExplanation` annotations of every operator the plan places. */
export function applyPlan(program: Program, plan: PlacementPlan): Program {
  const byOperator = new Map<string, PlacedInstance[]>()
  for (const p of plan.instances) {
    let list = byOperator.get(p.operator)
    if (list === undefined) byOperator.set(p.operator, (list = []))
    list[p.instance] = p
  }
  const { job, self, peers, names, spareSubmitter, ignored } = plan
  return program.mapOperators((operator: Operator) => {
    const instances = byOperator.get(operator.name)
    if (instances === undefined) return operator
    const record: PlacementRecord = { job, self, peers, names, spareSubmitter, instances, ...(ignored === undefined ? {} : { ignored }) }
    return operator.annotate({ assignment: { peers: instances.map((p) => p.peer) }, placementExplanation: record })
  })
}

/**
 * The plan the placement layer recorded on a planned program (from `kernel.plan`, or
 * `SubmittedJob.program`), or undefined when it carries none. Operators added after placement
 * (by layers below it) are not in it.
 */
export function planOf(program: Program): PlacementPlan | undefined {
  let head: PlacementRecord | undefined
  const instances: PlacedInstance[] = []
  for (const operator of program.operators) {
    const record = operator.annotations.placementExplanation
    if (record === undefined) continue
    if (head === undefined) head = record
    else if (record.job !== head.job) throw new PlacementInputError(`operators of ${program.name} carry placements of two jobs (${head.job}, ${record.job})`)
    instances.push(...record.instances)
  }
  if (head === undefined) return undefined
  const { job, self, peers, names, spareSubmitter, ignored } = head
  return { job, self, peers, names, spareSubmitter, instances, ...(ignored === undefined ? {} : { ignored }) }
}
