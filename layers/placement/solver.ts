// The placement solver: operator annotations and the live peers in, a plan out. A pure, deterministic function.
//
// How it works (greedy, as schedulers such as Kubernetes' or Nomad's filter-then-score):
// 1. Operators joined by `colocate` form groups (union-find). A group whose members share one
//    parallelism n has n slots, slot i holding instance i of every member; otherwise it has one
//    slot holding every instance. A slot is placed as one unit, on one peer.
// 2. Each group's annotations filter the peers once (pin, avoid, tags; sources and sinks with no
//    such annotation are kept on the submitter); capacities are checked per slot as peers fill.
// 3. Groups are placed most constrained first (pinned and submitter-bound, then tags/avoid, then
//    resources, then the rest), in program order within a class; each slot goes to the best peer
//    by (fewest instances of its group there when spread, the submitter last when spared, fewest
//    instances in all, peer id). Peers are sorted by id first, so their order never matters.

import type { Operator, PeerDescription, Program } from '../../kernel/index.js'
import { checkResource, placementOf, type PlacementAnnotation } from './annotations.js'
import { PlacementAnnotationError, PlacementInputError, PlacementUnsatisfiableError, type ConstraintRef, type RejectedPeer } from './errors.js'
import type { MoveReason, PlacedInstance, PlacementPlan, PlacementRule } from './plan.js'

/** Options of the solver (and of the placement layer). All optional. */
export interface PlacementOptions {
  /**
   * Transforms with no pin and no tag requirement run on the submitter only when no other peer
   * can take them: it already runs the sources, the sinks and the program. `false` treats the
   * submitter like any other peer.
   * @default true
   */
  readonly spareSubmitter?: boolean
}

/** What the solver places on: the live peers and the submitter, as a layer's `PlanContext` gives them. */
export interface SolveContext {
  readonly peers: readonly PeerDescription[]
  /** The submitting peer: sources and sinks stay there by default. It is a candidate even when `peers` omits it. */
  readonly self: string
  /** The job, recorded in the plan. @default '' */
  readonly job?: string
  /** `placed`: sources and sinks are placed like transforms instead of staying on the submitter (a failover job). @default 'submitter' */
  readonly endpoints?: 'submitter' | 'placed'
}

/** The tag on which `pin` and `avoid` match a peer when no peer has that id. */
export const NAME_TAG = 'name'

/** The tag prefix through which a peer with no declared `capacity` can offer one: `capacity.cpu=4`. */
export const CAPACITY_TAG_PREFIX = 'capacity.'

// ---------------------------------------------------------------------------------------------
// Peers

/** The peers as the solver sees them: sorted by id, with lookups by id and by name tag. */
export class PeerTable {
  readonly ids: string[] = []
  readonly tags: Readonly<Record<string, string>>[] = []
  readonly declared: (Readonly<Record<string, number>> | undefined)[] = []
  readonly index = new Map<string, number>()
  readonly names: Record<string, string> = {}
  /** Index of the submitter, or -1 when it has left. */
  readonly self: number
  private readonly byName = new Map<string, number[]>()
  private readonly refs = new Map<string, readonly number[]>()
  private readonly capacities = new Map<string, Float64Array>()

  constructor(peers: readonly PeerDescription[], self: string, gone: ReadonlySet<string> = new Set()) {
    if (typeof self !== 'string' || self === '') throw new PlacementInputError(`the submitter must be a peer id, got ${JSON.stringify(self)}`)
    const unique = new Map<string, PeerDescription>()
    for (const peer of peers) {
      if (typeof peer?.id !== 'string' || peer.id === '') throw new PlacementInputError(`a peer has no id: ${JSON.stringify(peer)}`)
      const seen = unique.get(peer.id)
      if (seen === undefined) unique.set(peer.id, peer)
      else if (canonical(seen) !== canonical(peer)) throw new PlacementInputError(`peer ${peer.id} is listed twice with different tags or capacities`)
    }
    // The submitter is always a member (it runs the program); a plan hook may be given peers without it.
    if (!unique.has(self)) unique.set(self, { id: self, tags: {} })
    const sorted = [...unique.keys()].filter((id) => !gone.has(id)).sort(compareIds)
    for (const id of sorted) {
      const peer = unique.get(id)!
      const i = this.ids.length
      this.ids.push(id)
      this.tags.push(peer.tags ?? {})
      this.declared.push(peer.capacity)
      this.index.set(id, i)
      const name = peer.tags?.[NAME_TAG]
      if (name !== undefined) {
        this.names[id] = name
        const list = this.byName.get(name)
        if (list === undefined) this.byName.set(name, [i])
        else list.push(i)
      }
    }
    this.self = this.index.get(self) ?? -1
  }

  get size(): number {
    return this.ids.length
  }

  /** The peers a `pin` or `avoid` value denotes: the peer with that id, else every peer with that name tag. */
  refer(value: string): readonly number[] {
    let found = this.refs.get(value)
    if (found === undefined) {
      const byId = this.index.get(value)
      found = byId !== undefined ? [byId] : (this.byName.get(value) ?? [])
      this.refs.set(value, found)
    }
    return found
  }

  /** How a reference matched: by id or by name tag. */
  matchedBy(value: string): 'id' | 'name tag' {
    return this.index.has(value) ? 'id' : 'name tag'
  }

  /** Each peer's capacity of a resource: declared, else a `capacity.<name>` tag, else unlimited. */
  capacity(resource: string): Float64Array {
    let out = this.capacities.get(resource)
    if (out === undefined) {
      out = new Float64Array(this.size)
      for (let i = 0; i < this.size; i++) {
        const declared = this.declared[i]?.[resource]
        const tagged = this.tags[i]![CAPACITY_TAG_PREFIX + resource]
        const fromTag = tagged === undefined || tagged.trim() === '' ? NaN : Number(tagged)
        out[i] = typeof declared === 'number' && declared >= 0 ? declared : Number.isFinite(fromTag) && fromTag >= 0 ? fromTag : Infinity
      }
      this.capacities.set(resource, out)
    }
    return out
  }

  /** `id (name)` when the peer has a name tag. */
  shown(i: number): string {
    const id = this.ids[i]!
    const name = this.names[id]
    return name === undefined ? id : `${id} (${name})`
  }
}

/** Code-unit order, the same on every platform and locale. */
function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

function canonical(peer: PeerDescription): string {
  const sortedEntries = (o: object | undefined): [string, unknown][] => Object.entries(o ?? {}).sort(([a], [b]) => compareIds(a, b))
  return JSON.stringify([sortedEntries(peer.tags), sortedEntries(peer.capacity)])
}

// ---------------------------------------------------------------------------------------------
// Groups of co-located operators

type Role = 'source' | 'sink' | 'transform'

interface Member {
  readonly operator: Operator
  readonly name: string
  readonly order: number
  readonly parallelism: number
  readonly role: Role
  readonly placement: PlacementAnnotation
}

interface Ref {
  readonly operator: string
  readonly value: string
}

interface TagNeed extends Ref {
  readonly key: string
  /** undefined: the tag must be present, with any value. */
  readonly equals: string | undefined
}

interface Demand {
  readonly resource: string
  /** Per slot: summed over the slot's instances. */
  readonly amount: number
  readonly operators: readonly string[]
}

/** Operators placed together. Slot i holds instance i of each member (aligned) or, when parallelisms differ, one slot holds them all. */
export interface Group {
  readonly id: number
  readonly members: readonly Member[]
  readonly aligned: boolean
  readonly slots: number
  /** Instances in one slot. */
  readonly slotSize: number
  readonly pins: readonly Ref[]
  readonly avoid: readonly Ref[]
  readonly tags: readonly TagNeed[]
  readonly demand: readonly Demand[]
  /** The member asking for spread, if any. */
  readonly spread: string | undefined
  /** The source or sink member that keeps the group on the submitter by default (no pin, tag, avoid or spread). */
  readonly submitter: string | undefined
  /** The submitter is a candidate of last resort (spareSubmitter, and no pin or tag). */
  readonly spareSelf: boolean
  /** Placement order class: 0 pinned or submitter-bound, 1 tags/avoid, 2 resources, 3 the rest. */
  readonly phase: number
}

function roleOf(operator: Operator): Role {
  return Object.keys(operator.inputs).length === 0 ? 'source' : Object.keys(operator.outputs).length === 0 ? 'sink' : 'transform'
}

function stringList(operator: string, annotation: string, value: unknown): readonly string[] {
  if (value === undefined) return []
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string' && v.length > 0)) {
    throw new PlacementAnnotationError(operator, annotation, `needs a list of non-empty strings, got ${JSON.stringify(value)}`)
  }
  return value as readonly string[]
}

/** Checks an annotation written by hand (`annotate({ placement })`) as the helpers would. */
function checkedPlacement(operator: Operator): PlacementAnnotation {
  const p = placementOf(operator)
  const name = operator.name
  if (typeof p !== 'object' || p === null) throw new PlacementAnnotationError(name, 'placement', `must be an object, got ${JSON.stringify(p)}`)
  if (p.pin !== undefined && (typeof p.pin !== 'string' || p.pin === '')) throw new PlacementAnnotationError(name, 'pin', `needs a non-empty string, got ${JSON.stringify(p.pin)}`)
  for (const tag of stringList(name, 'tags', p.tags)) if (tag.startsWith('=')) throw new PlacementAnnotationError(name, 'tags', `"${tag}" has no tag name before "="`)
  stringList(name, 'avoid', p.avoid)
  stringList(name, 'colocate', p.colocate)
  if (p.resources !== undefined) {
    if (typeof p.resources !== 'object' || p.resources === null) throw new PlacementAnnotationError(name, 'resources', `must be an object, got ${JSON.stringify(p.resources)}`)
    for (const [resource, amount] of Object.entries(p.resources)) checkResource(name, resource, amount)
  }
  if (p.spread !== undefined && typeof p.spread !== 'boolean') throw new PlacementAnnotationError(name, 'spread', `must be a boolean, got ${JSON.stringify(p.spread)}`)
  return p
}

/** Groups the program's operators by co-location, each group's members in program order; groups ordered by their first member. */
export function buildGroups(program: Program, spareSubmitter: boolean, endpointsPlaced = false): Group[] {
  const operators = program.operators
  const position = new Map(operators.map((o, i) => [o.name, i]))
  const parent = operators.map((_, i) => i)
  const find = (i: number): number => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]!]!
    return i
  }
  const members = operators.map((operator, order): Member => {
    const placement = checkedPlacement(operator)
    return { operator, name: operator.name, order, parallelism: operator.annotations.parallelism ?? 1, role: roleOf(operator), placement }
  })
  for (const m of members) {
    for (const other of m.placement.colocate ?? []) {
      const j = position.get(other)
      if (j === undefined) throw new PlacementAnnotationError(m.name, 'colocate', `names "${other}", which is not an operator of program ${program.name}`)
      if (j === m.order) throw new PlacementAnnotationError(m.name, 'colocate', 'names the operator itself')
      const a = find(m.order)
      const b = find(j)
      // The smaller root wins, so a group's root is its first member in program order.
      if (a !== b) parent[Math.max(a, b)] = Math.min(a, b)
    }
  }
  const byRoot = new Map<number, Member[]>()
  for (const m of members) {
    const root = find(m.order)
    const list = byRoot.get(root)
    if (list === undefined) byRoot.set(root, [m])
    else list.push(m)
  }
  const groups: Group[] = []
  for (const list of byRoot.values()) groups.push(makeGroup(groups.length, list, spareSubmitter, endpointsPlaced))
  return groups
}

function makeGroup(id: number, members: readonly Member[], spareSubmitter: boolean, endpointsPlaced: boolean): Group {
  const aligned = members.every((m) => m.parallelism === members[0]!.parallelism)
  const slots = aligned ? members[0]!.parallelism : 1
  const slotSize = aligned ? members.length : members.reduce((n, m) => n + m.parallelism, 0)
  const pins: Ref[] = []
  const avoid: Ref[] = []
  const tags: TagNeed[] = []
  const demand = new Map<string, { amount: number; operators: string[] }>()
  let spread: string | undefined
  for (const m of members) {
    const p = m.placement
    if (p.pin !== undefined) pins.push({ operator: m.name, value: p.pin })
    for (const value of p.avoid ?? []) avoid.push({ operator: m.name, value })
    for (const value of p.tags ?? []) {
      const at = value.indexOf('=')
      tags.push({ operator: m.name, value, key: at < 0 ? value : value.slice(0, at), equals: at < 0 ? undefined : value.slice(at + 1) })
    }
    for (const [resource, amount] of Object.entries(p.resources ?? {})) {
      if (amount === 0) continue
      const entry = demand.get(resource) ?? { amount: 0, operators: [] }
      entry.amount += aligned ? amount : amount * m.parallelism
      entry.operators.push(m.name)
      demand.set(resource, entry)
    }
    if (p.spread === true && spread === undefined) spread = m.name
  }
  const bound = pins.length > 0 || tags.length > 0 || avoid.length > 0 || spread !== undefined
  const submitter = bound || endpointsPlaced ? undefined : members.find((m) => m.role !== 'transform')?.name
  return {
    id,
    members,
    aligned,
    slots,
    slotSize,
    pins,
    avoid,
    tags,
    demand: [...demand.entries()].sort(([a], [b]) => compareIds(a, b)).map(([resource, d]) => ({ resource, amount: d.amount, operators: d.operators })),
    spread,
    submitter,
    spareSelf: spareSubmitter && pins.length === 0 && tags.length === 0 && submitter === undefined,
    phase: submitter !== undefined || pins.length > 0 ? 0 : tags.length > 0 || avoid.length > 0 ? 1 : demand.size > 0 ? 2 : 3,
  }
}

/** Groups in the order they are placed: most constrained class first, program order within a class. */
export function placementOrder(groups: readonly Group[]): Group[] {
  return [...groups].sort((a, b) => a.phase - b.phase || a.id - b.id)
}

/** The instances of one slot, as `[member, instance]`. */
export function slotInstances(group: Group, slot: number): [Member, number][] {
  if (group.aligned) return group.members.map((m) => [m, slot])
  return group.members.flatMap((m) => Array.from({ length: m.parallelism }, (_, i): [Member, number] => [m, i]))
}

function tagText(t: TagNeed): string {
  return t.value
}

function demandText(demand: readonly Demand[]): string {
  return demand.map((d) => `${d.resource}=${d.amount}`).join(', ')
}

/** Every constraint of a group, as text, naming the member that carries it. */
export function constraintTexts(group: Group): string[] {
  const single = group.members.length === 1
  const on = (operator: string): string => (single ? '' : ` (on ${operator})`)
  const out: string[] = []
  for (const p of group.pins) out.push(`pin "${p.value}"${on(p.operator)}`)
  for (const t of group.tags) out.push(`tag ${tagText(t)}${on(t.operator)}`)
  for (const a of group.avoid) out.push(`avoid "${a.value}"${on(a.operator)}`)
  if (group.demand.length > 0) out.push(`resources ${demandText(group.demand)} per ${group.slotSize === 1 ? 'instance' : `slot of ${group.slotSize} instances`}`)
  if (group.spread !== undefined) out.push(`spread${on(group.spread)}`)
  if (!single) out.push(`colocate ${group.members.map((m) => m.name).join(', ')}${group.aligned ? ' (instance by instance)' : ' (parallelisms differ: all on one peer)'}`)
  if (group.submitter !== undefined) out.push(`default: sources and sinks on the submitter`)
  if (out.length === 0) out.push('default: least-loaded')
  return out
}

// ---------------------------------------------------------------------------------------------
// The solver state

/** A decision for one slot, shared by the instances in it. */
interface SlotDecision {
  readonly rule: PlacementRule
  readonly by: string
  readonly reason: string
}

/** Placement state: loads, remaining capacities, and each group's slots. Used by `solve` and `replace`. */
export class Solver {
  /** Instances on each peer. */
  readonly load: Int32Array
  /** Peer of each group's slots (-1: not placed). */
  readonly slotPeer: Int32Array[]
  /** Decision of each slot placed by this solver (undefined for slots kept from an earlier plan). */
  readonly decisions: (SlotDecision | undefined)[][]
  private readonly remaining = new Map<string, Float64Array>()
  private readonly candidateCache = new Map<number, Int32Array>()
  private readonly bySignature = new Map<string, Int32Array>()
  private readonly spreadCount: Int32Array
  private readonly texts = new Map<number, string[]>()

  constructor(
    readonly peers: PeerTable,
    readonly groups: readonly Group[],
  ) {
    this.load = new Int32Array(peers.size)
    this.spreadCount = new Int32Array(peers.size)
    this.slotPeer = groups.map((g) => new Int32Array(g.slots).fill(-1))
    this.decisions = groups.map((g) => new Array<SlotDecision | undefined>(g.slots))
  }

  private left(resource: string): Float64Array {
    let left = this.remaining.get(resource)
    if (left === undefined) this.remaining.set(resource, (left = Float64Array.from(this.peers.capacity(resource))))
    return left
  }

  /** Whether peer `c` passes the group's fixed constraints (submitter, pin, avoid, tags). */
  admits(group: Group, c: number): boolean {
    if (group.submitter !== undefined && this.peers.self >= 0 && c !== this.peers.self) return false
    for (const p of group.pins) if (!this.peers.refer(p.value).includes(c)) return false
    for (const a of group.avoid) if (this.peers.refer(a.value).includes(c)) return false
    const tags = this.peers.tags[c]!
    for (const t of group.tags) {
      if (!Object.hasOwn(tags, t.key)) return false
      if (t.equals !== undefined && tags[t.key] !== t.equals) return false
    }
    return true
  }

  /**
   * Peers passing the group's fixed constraints, ascending. Groups with the same fixed constraints
   * share one list (most groups have none); pinned and submitter-bound groups start from the few
   * peers they may use instead of scanning every peer.
   */
  candidates(group: Group): Int32Array {
    let out = this.candidateCache.get(group.id)
    if (out !== undefined) return out
    const signature = JSON.stringify([
      group.submitter !== undefined && this.peers.self >= 0,
      group.pins.map((p) => p.value),
      group.avoid.map((a) => a.value),
      group.tags.map((t) => t.value),
    ])
    out = this.bySignature.get(signature)
    if (out === undefined) {
      const list: number[] = []
      const start =
        group.submitter !== undefined && this.peers.self >= 0
          ? [this.peers.self]
          : group.pins.length > 0
            ? [...this.peers.refer(group.pins[0]!.value)].sort((a, b) => a - b)
            : undefined
      if (start !== undefined) {
        for (const c of start) if (this.admits(group, c)) list.push(c)
      } else {
        for (let c = 0; c < this.peers.size; c++) if (this.admits(group, c)) list.push(c)
      }
      out = Int32Array.from(list)
      this.bySignature.set(signature, out)
    }
    this.candidateCache.set(group.id, out)
    return out
  }

  /** Whether peer `c` has the capacity left for one slot of the group. */
  fits(group: Group, c: number): boolean {
    for (const d of group.demand) if (this.left(d.resource)[c]! < d.amount - 1e-9) return false
    return true
  }

  /** Puts one slot on peer `c`. */
  commit(group: Group, slot: number, c: number): void {
    this.slotPeer[group.id]![slot] = c
    this.load[c]! += group.slotSize
    for (const d of group.demand) this.left(d.resource)[c]! -= d.amount
  }

  /** Takes one slot off its peer. */
  release(group: Group, slot: number): void {
    const c = this.slotPeer[group.id]![slot]!
    if (c < 0) return
    this.slotPeer[group.id]![slot] = -1
    this.load[c]! -= group.slotSize
    for (const d of group.demand) this.left(d.resource)[c]! += d.amount
  }

  /** Instances of the group's slots on peer `c`. */
  groupSlotsOn(group: Group, c: number): number {
    let n = 0
    for (const p of this.slotPeer[group.id]!) if (p === c) n++
    return n
  }

  /** Places the given (unplaced) slots of a group, one after the other; throws PlacementUnsatisfiableError when one fits nowhere. */
  placeSlots(group: Group, slots: readonly number[]): void {
    if (slots.length === 0) return
    const candidates = this.candidates(group)
    const spread = group.spread !== undefined
    const counts = this.spreadCount
    if (spread) for (const p of this.slotPeer[group.id]!) if (p >= 0) counts[p]!++
    const self = group.spareSelf ? this.peers.self : -1
    const load = this.load
    // The remaining capacity arrays and amounts of the group's demand, looked up once.
    const lefts = group.demand.map((d) => this.left(d.resource))
    const amounts = group.demand.map((d) => d.amount - 1e-9)
    const demands = lefts.length
    try {
      for (const slot of slots) {
        let best = -1
        let bestCount = 0
        let bestSelf = 0
        let bestLoad = 0
        let feasible = 0
        for (let k = 0; k < candidates.length; k++) {
          const c = candidates[k]!
          if (demands > 0) {
            let fits = true
            for (let r = 0; r < demands; r++) if (lefts[r]![c]! < amounts[r]!) fits = false
            if (!fits) continue
          }
          feasible++
          const count = spread ? counts[c]! : 0
          const isSelf = c === self ? 1 : 0
          const l = load[c]!
          // Lexicographic (spread count, submitter last, load); candidates ascend, so ties keep the lowest id.
          if (best < 0 || count < bestCount || (count === bestCount && (isSelf < bestSelf || (isSelf === bestSelf && l < bestLoad)))) {
            best = c
            bestCount = count
            bestSelf = isSelf
            bestLoad = l
          }
        }
        if (best < 0) throw this.unsatisfiable(group, slot)
        const spreadText = !spread
          ? undefined
          : bestCount === 0
            ? 'spread: no other instance of it there'
            : `spread: ${bestCount} other instance${bestCount === 1 ? '' : 's'} there (more instances than peers)`
        this.decisions[group.id]![slot] = this.decide(group, best, spreadText, feasible === 1 ? 'the only peer that fits' : `least-loaded of ${feasible} peers that fit`)
        this.commit(group, slot, best)
        if (spread) counts[best]!++
      }
    } finally {
      if (spread) for (let k = 0; k < candidates.length; k++) counts[candidates[k]!] = 0
    }
  }

  /** The decision of a slot moved onto a joined peer by `replace`'s rebalancing. */
  rebalanced(group: Group, c: number): SlotDecision {
    return this.decide(group, c, group.spread === undefined ? undefined : 'spread: fewer instances of it there than on the peer it left', 'rebalanced onto a peer that joined')
  }

  private decide(group: Group, c: number, spreadText: string | undefined, choice: string): SlotDecision {
    const peers = this.peers
    const parts: string[] = []
    if (group.pins.length > 0) parts.push(`pinned to ${group.pins.map((p) => `"${p.value}" (${peers.matchedBy(p.value)})`).join(' and ')}`)
    if (group.tags.length > 0) parts.push(`needs tag${group.tags.length === 1 ? '' : 's'} ${group.tags.map(tagText).join(', ')}`)
    if (group.avoid.length > 0) parts.push(`avoids ${group.avoid.map((a) => `"${a.value}"`).join(', ')}`)
    if (group.demand.length > 0) parts.push(`needs ${demandText(group.demand)}`)
    if (spreadText !== undefined) parts.push(spreadText)
    if (group.submitter !== undefined) parts.push(peers.self >= 0 ? 'sources and sinks stay on the submitter' : 'the submitter left')
    if (group.submitter === undefined || peers.self < 0) {
      parts.push(choice)
      if (group.spareSelf && c === peers.self) parts.push('the submitter, as no other peer fits')
    }
    const rule: PlacementRule =
      group.pins.length > 0
        ? 'pin'
        : group.tags.length > 0
          ? 'tags'
          : group.avoid.length > 0
            ? 'avoid'
            : group.spread !== undefined
              ? 'spread'
              : group.demand.length > 0
                ? 'resources'
                : group.submitter !== undefined
                  ? 'submitter'
                  : 'least-loaded'
    const by =
      rule === 'pin'
        ? group.pins[0]!.operator
        : rule === 'tags'
          ? group.tags[0]!.operator
          : rule === 'avoid'
            ? group.avoid[0]!.operator
            : rule === 'spread'
              ? group.spread!
              : rule === 'resources'
                ? group.demand[0]!.operators[0]!
                : rule === 'submitter'
                  ? group.submitter!
                  : group.members[0]!.name
    return { rule, by, reason: parts.join('; ') }
  }

  /** The error for a slot no peer can take: which constraint ruled out the last peers, and why each peer was rejected. */
  private unsatisfiable(group: Group, slot: number): PlacementUnsatisfiableError {
    const peers = this.peers
    const single = group.members.length === 1
    const items: { ref: ConstraintRef; rejects: (c: number) => string | undefined }[] = []
    if (group.submitter !== undefined && peers.self >= 0) {
      const self = peers.self
      items.push({
        ref: { kind: 'submitter', operator: group.submitter, text: 'the default keeping sources and sinks on the submitter' },
        rejects: (c) => (c === self ? undefined : `not the submitter ${peers.ids[self]} (sources and sinks stay there unless annotated)`),
      })
    }
    for (const p of group.pins) {
      items.push({
        ref: { kind: 'pin', operator: p.operator, text: `pin "${p.value}"` },
        rejects: (c) => (peers.refer(p.value).includes(c) ? undefined : `is not "${p.value}" (neither its id nor its ${NAME_TAG} tag)${single ? '' : ` [pin of ${p.operator}]`}`),
      })
    }
    for (const a of group.avoid) {
      items.push({
        ref: { kind: 'avoid', operator: a.operator, text: `avoid "${a.value}"` },
        rejects: (c) => (peers.refer(a.value).includes(c) ? `avoided by ${a.operator} ("${a.value}")` : undefined),
      })
    }
    for (const t of group.tags) {
      items.push({
        ref: { kind: 'tags', operator: t.operator, text: `tag ${tagText(t)}` },
        rejects: (c) => {
          const tags = peers.tags[c]!
          if (!Object.hasOwn(tags, t.key)) return `lacks tag ${t.value}${single ? '' : ` [needed by ${t.operator}]`}`
          if (t.equals !== undefined && tags[t.key] !== t.equals) return `lacks tag ${t.value} (has ${t.key}=${tags[t.key]})${single ? '' : ` [needed by ${t.operator}]`}`
          return undefined
        },
      })
    }
    if (group.demand.length > 0) {
      items.push({
        ref: {
          kind: 'resources',
          operator: group.demand[0]!.operators[0]!,
          text: `resources ${demandText(group.demand)}${group.slotSize === 1 ? '' : ` for ${group.slotSize} co-located instances`}`,
        },
        rejects: (c) => {
          const short = group.demand
            .filter((d) => this.left(d.resource)[c]! < d.amount - 1e-9)
            .map((d) => `${d.resource}: needs ${d.amount}, ${round(this.left(d.resource)[c]!)} of ${peers.capacity(d.resource)[c]} left`)
          return short.length === 0 ? undefined : short.join(', ')
        },
      })
    }
    let alive = Array.from({ length: peers.size }, (_, c) => c)
    let culprit: ConstraintRef | undefined
    for (const item of items) {
      alive = alive.filter((c) => item.rejects(c) === undefined)
      if (alive.length === 0) {
        culprit = item.ref
        break
      }
    }
    const considered: RejectedPeer[] = peers.ids.map((_, c) => ({ peer: peers.shown(c), reasons: items.map((i) => i.rejects(c)).filter((r): r is string => r !== undefined) }))
    culprit ??= { kind: 'membership', operator: group.members[0]!.name, text: 'the membership (no live peer)' }
    const instances = slotInstances(group, slot).map(([m, i]) => `${m.name}#${i}`)
    const first = slotInstances(group, slot)[0]!
    return new PlacementUnsatisfiableError(first[0].name, first[1], culprit, considered, instances.slice(1))
  }

  /** Constraint texts of a group (cached). */
  constraints(group: Group): string[] {
    let out = this.texts.get(group.id)
    if (out === undefined) this.texts.set(group.id, (out = constraintTexts(group)))
    return out
  }

  /** The placed instances of a slot, decided by this solver (with `moved` when given). */
  placedSlot(group: Group, slot: number, moved?: { from?: string; because: MoveReason }): PlacedInstance[] {
    const decision = this.decisions[group.id]![slot]!
    const peer = this.peers.ids[this.slotPeer[group.id]![slot]!]!
    const constraints = this.constraints(group)
    return slotInstances(group, slot).map(([m, i]): PlacedInstance => {
      const own = m.name === decision.by
      const reason = own
        ? decision.reason
        : group.aligned
          ? `co-located with ${decision.by}#${i}, placed by ${decision.rule}`
          : `co-located with ${decision.by} (parallelisms differ: the whole group on one peer), placed by ${decision.rule}`
      return {
        operator: m.name,
        instance: i,
        peer,
        rule: own ? decision.rule : 'colocate',
        by: decision.by,
        reason,
        constraints,
        ...(moved === undefined ? {} : { moved }),
      }
    })
  }
}

function round(n: number): number {
  return Math.round(n * 1e6) / 1e6
}

// ---------------------------------------------------------------------------------------------
// solve

/** Orders placed instances by program order, then instance index. */
export function inProgramOrder(groups: readonly Group[], instances: readonly PlacedInstance[]): PlacedInstance[] {
  const order = new Map<string, number>()
  for (const g of groups) for (const m of g.members) order.set(m.name, m.order)
  return [...instances].sort((a, b) => order.get(a.operator)! - order.get(b.operator)! || a.instance - b.instance)
}

/**
 * Places every operator instance of `program` on `context.peers`: a pure function of the program
 * and the peers (their order does not matter). Throws PlacementUnsatisfiableError when an
 * instance fits nowhere, PlacementAnnotationError for a malformed annotation.
 *
 * ```ts
 * const plan = solve(program, { peers: [{ id: 'a', tags: { ssd: '' } }, { id: 'b', tags: {} }], self: 'a' })
 * console.log(explain(plan).text)
 * ```
 */
export function solve(program: Program, context: SolveContext, options: PlacementOptions = {}): PlacementPlan {
  const spareSubmitter = options.spareSubmitter ?? true
  const peers = new PeerTable(context.peers, context.self)
  const groups = buildGroups(program, spareSubmitter, context.endpoints === 'placed')
  const solver = new Solver(peers, groups)
  for (const group of placementOrder(groups))
    solver.placeSlots(
      group,
      Array.from({ length: group.slots }, (_, i) => i),
    )
  const instances: PlacedInstance[] = []
  for (const group of groups) for (let slot = 0; slot < group.slots; slot++) instances.push(...solver.placedSlot(group, slot))
  return {
    job: context.job ?? '',
    self: context.self,
    peers: peers.ids,
    names: peers.names,
    spareSubmitter,
    instances: inProgramOrder(groups, instances),
  }
}
