// Re-placement: only the instances that must move, move; joined peers take load; the result is deterministic.
import { describe, expect, it } from 'vitest'
import { colocate, pin, requireTags, resources, spread } from './annotations.js'
import { chain, peer, transform } from './fixtures/programs.js'
import { explain, type PlacementPlan } from './plan.js'
import { replace } from './replace.js'
import { solve } from './solver.js'

function where(plan: PlacementPlan): Record<string, string> {
  return Object.fromEntries(plan.instances.map((p) => [`${p.operator}#${p.instance}`, p.peer]))
}

const peers = [peer('self'), peer('a', { region: 'eu' }), peer('b', { region: 'eu' }), peer('c', { region: 'us' })]
const x = spread(transform('x', 3))
const y = colocate(transform('y', 3), x)
const program = chain('p', [x, y, requireTags(transform('eu', 2), 'region=eu'), pin(transform('pinned'), 'c'), transform('free', 4)])

describe('replace', () => {
  const plan = solve(program, { peers, self: 'self', job: 'j' })

  it('with no change, nothing moves and the plan is the same', () => {
    const { plan: next, moves } = replace(plan, program, peers)
    expect(moves).toEqual([])
    expect(next).toEqual(plan)
  })

  it('a peer that left: only its instances move, by the same rules, around those that stay', () => {
    const before = where(plan)
    const { plan: next, moves } = replace(
      plan,
      program,
      peers.filter((p) => p.id !== 'a'),
      { left: ['a'] },
    )
    const after = where(next)
    const moved = Object.keys(before).filter((k) => before[k] === 'a')
    expect(moved.length).toBeGreaterThan(0)
    expect(moves.map((m) => `${m.operator}#${m.instance}`).sort()).toEqual(moved.sort())
    for (const m of moves) expect(m).toMatchObject({ from: 'a', because: 'left' })
    for (const k of Object.keys(before)) {
      if (before[k] === 'a') expect(after[k]).not.toBe('a')
      else expect(after[k]).toBe(before[k])
    }
    // Constraints still hold: eu instances on an eu peer, y beside x, x spread over distinct peers.
    expect(['b']).toEqual([...new Set([after['eu#0'], after['eu#1']])])
    for (let i = 0; i < 3; i++) expect(after[`y#${i}`]).toBe(after[`x#${i}`])
    expect(new Set([after['x#0'], after['x#1'], after['x#2']]).size).toBe(3)
    // Instances that stayed keep their recorded decision; moved ones say so.
    const kept = next.instances.find((p) => p.operator === 'pinned')!
    expect(kept).toBe(plan.instances.find((p) => p.operator === 'pinned'))
    expect(next.instances.find((p) => p.moved !== undefined)!.moved).toEqual({ from: 'a', because: 'left' })
    expect(explain(next).text).toContain('moved from a (left)')
    expect(next.peers).toEqual(['b', 'c', 'self'])
  })

  it('a peer missing from the live list counts as left', () => {
    const explicit = replace(
      plan,
      program,
      peers.filter((p) => p.id !== 'b'),
      { left: ['b'] },
    )
    const implicit = replace(
      plan,
      program,
      peers.filter((p) => p.id !== 'b'),
    )
    expect(implicit).toEqual(explicit)
  })

  it('an instance pinned to a peer that left cannot move: a typed error names the pin', () => {
    expect(() =>
      replace(
        plan,
        program,
        peers.filter((p) => p.id !== 'c'),
        { left: ['c'] },
      ),
    ).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_UNSATISFIABLE', operator: 'pinned', constraint: expect.objectContaining({ kind: 'pin' }) }))
  })

  it('a joined peer takes instances from the most loaded peers while that narrows the gap; pinned and submitter-bound ones stay', () => {
    const joinedPeers = [...peers, peer('d', { region: 'eu' })]
    const { plan: next, moves } = replace(plan, program, joinedPeers, { joined: ['d'] })
    expect(moves.length).toBeGreaterThan(0)
    for (const m of moves) expect(m).toMatchObject({ to: 'd', because: 'rebalance' })
    expect(moves.some((m) => m.operator === 'pinned' || m.operator === 'numbers' || m.operator === 'out')).toBe(false)
    const load = (p: PlacementPlan, id: string): number => p.instances.filter((i) => i.peer === id).length
    const workers = ['a', 'b', 'c', 'd']
    const spreadBefore = Math.max(...workers.map((w) => load(plan, w))) - 0
    const spreadAfter = Math.max(...workers.map((w) => load(next, w))) - Math.min(...workers.map((w) => load(next, w)))
    expect(spreadAfter).toBeLessThan(spreadBefore)
    expect(spreadAfter).toBeLessThanOrEqual(2)
    const after = where(next)
    for (let i = 0; i < 3; i++) expect(after[`y#${i}`]).toBe(after[`x#${i}`])
    expect(new Set([after['x#0'], after['x#1'], after['x#2']]).size).toBe(3)
    // Unmoved instances keep their peers.
    const before = where(plan)
    const movedIds = new Set(moves.map((m) => `${m.operator}#${m.instance}`))
    for (const k of Object.keys(before)) if (!movedIds.has(k)) expect(after[k]).toBe(before[k])
  })

  it('a joined peer the annotations do not allow takes nothing of those', () => {
    const tagged = chain('t', [requireTags(transform('eu', 6), 'region=eu')])
    const base = solve(tagged, { peers, self: 'self' })
    const { moves } = replace(base, tagged, [...peers, peer('d', { region: 'us' })], { joined: ['d'] })
    expect(moves).toEqual([])
    const { moves: euMoves } = replace(base, tagged, [...peers, peer('e', { region: 'eu' })], { joined: ['e'] })
    expect(euMoves.map((m) => m.to)).toEqual(['e', 'e'])
  })

  it('capacities: instances that stay keep theirs, moved ones find room elsewhere or fail', () => {
    const caps = [peer('self', {}, { cpu: 0 }), peer('a', {}, { cpu: 2 }), peer('b', {}, { cpu: 2 }), peer('c', {}, { cpu: 1 })]
    const heavy = chain('h', [resources(transform('w', 5), { cpu: 1 })])
    const base = solve(heavy, { peers: caps, self: 'self' })
    const onC = base.instances.filter((p) => p.peer === 'c').length
    expect(onC).toBe(1)
    // c leaves: its one instance needs a cpu, and a and b are full.
    expect(() => replace(base, heavy, caps, { left: ['c'] })).toThrow(
      expect.objectContaining({ code: 'ERR_PLACEMENT_UNSATISFIABLE', constraint: expect.objectContaining({ kind: 'resources' }) }),
    )
    const { plan: next } = replace(base, heavy, [...caps, peer('d', {}, { cpu: 4 })], { left: ['c'] })
    expect(
      next.instances
        .filter((p) => p.operator === 'w')
        .map((p) => p.peer)
        .sort(),
    ).toEqual(['a', 'a', 'b', 'b', 'd'])
  })

  it('instances the old plan lacks (the program grew) are placed anew', () => {
    const grown = chain('p', [x, y, requireTags(transform('eu', 3), 'region=eu'), pin(transform('pinned'), 'c'), transform('free', 4)])
    const { moves } = replace(plan, grown, peers)
    expect(moves).toEqual([{ operator: 'eu', instance: 2, to: expect.stringMatching(/^[ab]$/), because: 'new' }])
  })

  it('is deterministic: peer order and the order of left/joined do not matter', () => {
    const shuffled = [peers[3]!, peers[1]!, peers[0]!, peers[2]!, peer('d', { region: 'eu' }), peer('e')]
    const one = replace(
      plan,
      program,
      [...peers, peer('e'), peer('d', { region: 'eu' })].filter((p) => p.id !== 'a'),
      { left: ['a'], joined: ['d', 'e'] },
    )
    const two = replace(plan, program, shuffled, { left: ['a'], joined: ['e', 'd'] })
    expect(two).toEqual(one)
  })

  it('when the submitter leaves, its sources and sinks go to the least-loaded peer', () => {
    const { plan: next, moves } = replace(
      plan,
      program,
      peers.filter((p) => p.id !== 'self'),
      { left: ['self'] },
    )
    expect(moves.map((m) => m.operator).sort()).toEqual(['numbers', 'out'])
    expect(next.instances.find((p) => p.operator === 'out')!.reason).toContain('the submitter left')
  })
})
