// Re-placement after membership changes: moves only the instances that must move (a pure function, for fault tolerance and elasticity).

import type { PeerDescription, Program } from '../../kernel/index.js'
import type { MoveReason, PlacedInstance, PlacementPlan } from './plan.js'
import { buildGroups, inProgramOrder, PeerTable, placementOrder, slotInstances, Solver, type Group } from './solver.js'

/** What changed in the membership since the plan was made. */
export interface ReplaceOptions {
  /** Peers that left (or are leaving): their instances move. Peers of the plan absent from `peers` count as left too. */
  readonly left?: readonly string[]
  /**
   * Peers that joined: instances move onto them from the most loaded peers, one co-located slot at
   * a time, while that narrows the gap (an instance moves only where its annotations allow it;
   * sources and sinks stay on the submitter). Without `joined`, nothing moves onto new peers.
   */
  readonly joined?: readonly string[]
}

/** One instance that moved. */
export interface Move {
  readonly operator: string
  readonly instance: number
  /** Its peer in the old plan (none for an instance the old plan did not have). */
  readonly from?: string
  readonly to: string
  readonly because: MoveReason
}

/** A new plan and the moves that lead to it from the old one. */
export interface Replacement {
  readonly plan: PlacementPlan
  /** In program order, then by instance index. */
  readonly moves: readonly Move[]
}

type SlotState = { readonly kind: 'kept' } | { readonly kind: 'moved'; readonly because: MoveReason; readonly from: readonly (string | undefined)[] }

/**
 * Re-places a plan after peers left or joined: instances on a peer that left move (placed by the
 * same rules as `solve`, around everything that stays), instances the plan lacks (the program
 * grew) are placed, and with `joined` some instances rebalance onto the new peers. Every other
 * instance keeps its peer and its recorded decision. Pure and deterministic, like `solve`.
 *
 * ```ts
 * const { plan: next, moves } = replace(plan, program, livePeers, { left: [deadPeer] })
 * for (const m of moves) console.log(`${m.operator}#${m.instance}: ${m.from} -> ${m.to}`)
 * ```
 */
export function replace(plan: PlacementPlan, program: Program, peers: readonly PeerDescription[], options: ReplaceOptions = {}): Replacement {
  const table = new PeerTable(peers, plan.self, new Set(options.left ?? []))
  const groups = buildGroups(program, plan.spareSubmitter)
  const solver = new Solver(table, groups)
  const previous = new Map<string, PlacedInstance>()
  for (const p of plan.instances) previous.set(`${p.operator}#${p.instance}`, p)

  // Keep every slot whose instances share one live peer; the rest must move.
  const states: SlotState[][] = groups.map((g) => new Array<SlotState>(g.slots))
  const pending = new Map<number, number[]>()
  for (const group of groups) {
    for (let slot = 0; slot < group.slots; slot++) {
      const olds = slotInstances(group, slot).map(([m, i]) => previous.get(`${m.name}#${i}`))
      const peer = olds[0]?.peer
      const at = peer === undefined ? undefined : table.index.get(peer)
      if (at !== undefined && olds.every((o) => o !== undefined && o.peer === peer)) {
        states[group.id]![slot] = { kind: 'kept' }
        solver.commit(group, slot, at)
        continue
      }
      const because: MoveReason = olds.some((o) => o !== undefined && !table.index.has(o.peer)) ? 'left' : 'new'
      states[group.id]![slot] = { kind: 'moved', because, from: olds.map((o) => o?.peer) }
      const list = pending.get(group.id)
      if (list === undefined) pending.set(group.id, [slot])
      else list.push(slot)
    }
  }
  for (const group of placementOrder(groups)) solver.placeSlots(group, pending.get(group.id) ?? [])

  for (const move of rebalance(solver, groups, options.joined ?? [])) {
    const state = states[move.group.id]![move.slot]!
    if (state.kind === 'kept') {
      states[move.group.id]![move.slot] = { kind: 'moved', because: 'rebalance', from: slotInstances(move.group, move.slot).map(() => table.ids[move.from]) }
    }
  }

  const instances: PlacedInstance[] = []
  const moves: Move[] = []
  for (const group of groups) {
    for (let slot = 0; slot < group.slots; slot++) {
      const state = states[group.id]![slot]!
      const members = slotInstances(group, slot)
      if (state.kind === 'kept') {
        for (const [m, i] of members) instances.push(previous.get(`${m.name}#${i}`)!)
        continue
      }
      const placed = solver.placedSlot(group, slot)
      placed.forEach((p, k) => {
        const from = state.from[k]
        const moved = from === undefined ? { because: state.because } : { from, because: state.because }
        instances.push({ ...p, moved })
        moves.push({ operator: p.operator, instance: p.instance, ...(from === undefined ? {} : { from }), to: p.peer, because: state.because })
      })
    }
  }
  const order = inProgramOrder(groups, instances)
  const rank = new Map(order.map((p, k) => [`${p.operator}#${p.instance}`, k]))
  moves.sort((a, b) => rank.get(`${a.operator}#${a.instance}`)! - rank.get(`${b.operator}#${b.instance}`)!)
  return {
    plan: { job: plan.job, self: plan.self, peers: table.ids, names: table.names, spareSubmitter: plan.spareSubmitter, instances: order },
    moves,
  }
}

/**
 * Moves slots from the most loaded old peers onto each joined peer while a move narrows the gap
 * (the donor keeps more instances than the joined peer gets). A slot moves only where its fixed
 * constraints and capacities allow, never off the submitter when it is bound there, and never so
 * that a spread group doubles up where it did not. Deterministic: donors by load then id, and on
 * a donor the slot placed last moves first.
 */
function rebalance(solver: Solver, groups: readonly Group[], joinedIds: readonly string[]): { group: Group; slot: number; from: number }[] {
  const table = solver.peers
  const joined = [...new Set(joinedIds)]
    .map((id) => table.index.get(id))
    .filter((c): c is number => c !== undefined)
    .sort((a, b) => a - b)
  if (joined.length === 0) return []
  const isJoined = new Uint8Array(table.size)
  for (const j of joined) isJoined[j] = 1
  const order = placementOrder(groups).reverse()
  const load = solver.load
  const moves: { group: Group; slot: number; from: number }[] = []
  for (const j of joined) {
    const exhausted = new Uint8Array(table.size)
    for (;;) {
      let donor = -1
      for (let c = 0; c < table.size; c++) if (isJoined[c] === 0 && exhausted[c] === 0 && (donor < 0 || load[c]! > load[donor]!)) donor = c
      if (donor < 0 || load[donor]! - load[j]! < 2) break
      let moved = false
      search: for (const group of order) {
        if (group.submitter !== undefined && table.self >= 0) continue
        if (load[donor]! - load[j]! <= group.slotSize) continue
        const slots = solver.slotPeer[group.id]!
        for (let slot = group.slots - 1; slot >= 0; slot--) {
          if (slots[slot] !== donor) continue
          if (!solver.admits(group, j) || !solver.fits(group, j)) continue search
          if (group.spread !== undefined && solver.groupSlotsOn(group, j) >= solver.groupSlotsOn(group, donor)) continue search
          solver.release(group, slot)
          solver.commit(group, slot, j)
          solver.decisions[group.id]![slot] = solver.rebalanced(group, j)
          moves.push({ group, slot, from: donor })
          moved = true
          break search
        }
      }
      if (!moved) exhausted[donor] = 1
    }
  }
  return moves
}
