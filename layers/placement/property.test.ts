// Property tests of the solver on random programs and peers: determinism whatever the peer order, every annotation honoured, re-placement moves only what must move.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Operator, PeerDescription, Program } from 'lamina'
import { avoid, colocate, pin, requireTags, resources, spread } from './annotations.js'
import { chain, transform } from './fixtures/programs.js'
import type { PlacementPlan } from './plan.js'
import { replace } from './replace.js'
import { solve } from './solver.js'

interface OpSpec {
  readonly parallelism: number
  readonly pin: number | null
  readonly pinByName: boolean
  readonly tags: readonly string[]
  readonly cpu: number | null
  readonly colocate: number | null
  readonly spread: boolean
  readonly avoid: number | null
}

interface PeerSpec {
  readonly id: string
  readonly region: string | null
  readonly ssd: boolean
  readonly name: string | null
  readonly cpu: number | null
}

/** `arbitrary` one time in `n`, else null. */
function sometimes<T>(arbitrary: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | null> {
  return fc.oneof({ weight: n - 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary })
}

const peerSpec = fc.record({
  region: sometimes(fc.constantFrom('eu', 'us'), 2),
  ssd: fc.boolean(),
  name: sometimes(fc.constantFrom('n1', 'n2', 'n3'), 2),
  cpu: sometimes(fc.integer({ min: 2, max: 12 }), 2),
})

const peersArb = fc
  .uniqueArray(fc.stringMatching(/^[a-z0-9]{1,4}$/), { minLength: 1, maxLength: 7 })
  .chain((ids) => fc.tuple(...ids.map((id) => peerSpec.map((s): PeerSpec => ({ id, ...s })))))

const opSpec = fc.record({
  parallelism: fc.integer({ min: 1, max: 4 }),
  pin: sometimes(fc.nat(), 10),
  pinByName: fc.boolean(),
  tags: fc.oneof({ weight: 5, arbitrary: fc.constant([] as string[]) }, { weight: 1, arbitrary: fc.subarray(['region=eu', 'region=us', 'ssd'], { maxLength: 2 }) }),
  cpu: sometimes(fc.integer({ min: 0, max: 2 }), 2),
  colocate: sometimes(fc.nat(), 5),
  spread: fc.boolean(),
  avoid: sometimes(fc.nat(), 8),
})

const scenario = fc.record({
  peers: peersArb,
  ops: fc.array(opSpec, { minLength: 1, maxLength: 7 }),
  selfIsMember: fc.boolean(),
  selfPick: fc.nat(),
  order: fc.array(fc.double({ noNaN: true }), { minLength: 8, maxLength: 8 }),
})

function description(p: PeerSpec): PeerDescription {
  const tags: Record<string, string> = {}
  if (p.region !== null) tags['region'] = p.region
  if (p.ssd) tags['ssd'] = ''
  if (p.name !== null) tags['name'] = p.name
  return p.cpu === null ? { id: p.id, tags } : { id: p.id, tags, capacity: { cpu: p.cpu } }
}

function build(ops: readonly OpSpec[], peers: readonly PeerSpec[]): Program {
  const operators: Operator[] = []
  ops.forEach((s, i) => {
    let op = transform(`op${i}`, s.parallelism)
    if (s.pin !== null) {
      const target = peers[s.pin % peers.length]!
      op = pin(op, s.pinByName && target.name !== null ? target.name : target.id)
    }
    if (s.tags.length > 0) op = requireTags(op, ...s.tags)
    if (s.cpu !== null) op = resources(op, { cpu: s.cpu })
    if (s.colocate !== null && i > 0) op = colocate(op, `op${s.colocate % i}`)
    if (s.spread) op = spread(op)
    if (s.avoid !== null) op = avoid(op, peers[s.avoid % peers.length]!.id)
    operators.push(op)
  })
  return chain('random', operators)
}

type Outcome = { readonly plan: PlacementPlan } | { readonly error: { readonly code: string; readonly message: string } }

function attempt(fn: () => PlacementPlan): Outcome {
  try {
    return { plan: fn() }
  } catch (error) {
    const e = error as { code?: string; message: string }
    if (e.code === undefined) throw error
    return { error: { code: e.code, message: e.message } }
  }
}

function permuted<T>(items: readonly T[], keys: readonly number[]): T[] {
  return items
    .map((item, i) => ({ item, key: keys[i % keys.length]! + i * 1e-9 }))
    .sort((a, b) => a.key - b.key)
    .map((x) => x.item)
}

/** Checks every annotation of the program against the plan. */
function honoured(program: Program, plan: PlacementPlan, peers: readonly PeerDescription[], self: string): void {
  const byId = new Map(peers.map((p) => [p.id, p]))
  const at = new Map(plan.instances.map((p) => [`${p.operator}#${p.instance}`, p.peer]))
  const used = new Map<string, number>()
  for (const op of program.operators) {
    const n = op.annotations.parallelism ?? 1
    const mine = Array.from({ length: n }, (_, i) => at.get(`${op.name}#${i}`)!)
    expect(mine.every((p) => plan.peers.includes(p))).toBe(true)
    const pl = op.annotations.placement ?? {}
    for (const p of mine) {
      const tags = byId.get(p)?.tags ?? {}
      if (pl.pin !== undefined) expect(p === pl.pin || (!byId.has(pl.pin) && tags['name'] === pl.pin)).toBe(true)
      for (const tag of pl.tags ?? []) {
        const [k, v] = tag.split('=')
        expect(Object.hasOwn(tags, k!) && (v === undefined || tags[k!] === v)).toBe(true)
      }
      for (const a of pl.avoid ?? []) expect(p).not.toBe(a)
      used.set(p, (used.get(p) ?? 0) + (pl.resources?.['cpu'] ?? 0))
    }
    for (const other of pl.colocate ?? []) {
      const o = program.operator(other)!
      const m = o.annotations.parallelism ?? 1
      const theirs = Array.from({ length: m }, (_, i) => at.get(`${o.name}#${i}`)!)
      if (m === n) expect(theirs).toEqual(mine)
      else expect(new Set([...theirs, ...mine]).size).toBe(1)
    }
    if (Object.keys(op.inputs).length === 0 || Object.keys(op.outputs).length === 0) {
      if (Object.keys(pl).length === 0 && !program.operators.some((o) => o.annotations.placement?.colocate?.includes(op.name))) expect(mine).toEqual([self])
    }
  }
  for (const [p, cpu] of used) expect(cpu).toBeLessThanOrEqual(byId.get(p)?.capacity?.['cpu'] ?? Infinity)
}

/** Spread groups whose every member is free of capacities and alone in its group hold no two instances on one peer while enough peers admit it. */
function spreadHolds(program: Program, plan: PlacementPlan): void {
  for (const op of program.operators) {
    const pl = op.annotations.placement ?? {}
    const grouped = (pl.colocate ?? []).length > 0 || program.operators.some((o) => o.annotations.placement?.colocate?.includes(op.name))
    if (pl.spread !== true || grouped || pl.resources !== undefined || pl.pin !== undefined) continue
    const mine = plan.instances.filter((p) => p.operator === op.name).map((p) => p.peer)
    const admitted = plan.peers.filter((id) => !(pl.avoid ?? []).includes(id)).length
    if ((pl.tags ?? []).length === 0 && mine.length <= admitted) expect(new Set(mine).size).toBe(mine.length)
  }
}

describe('solver properties', () => {
  it('the same program and peers give the same plan (or the same error) whatever the peer order', () => {
    fc.assert(
      fc.property(scenario, ({ peers, ops, selfIsMember, selfPick, order }) => {
        const descriptions = peers.map(description)
        const self = selfIsMember ? peers[selfPick % peers.length]!.id : 'submitter'
        const program = build(ops, peers)
        const one = attempt(() => solve(program, { peers: descriptions, self, job: 'j' }))
        const two = attempt(() => solve(program, { peers: permuted(descriptions, order), self, job: 'j' }))
        expect(two).toEqual(one)
        if ('error' in one) expect(one.error.code).toMatch(/^ERR_PLACEMENT_(UNSATISFIABLE|ANNOTATION)$/)
      }),
      { numRuns: 300 },
    )
  })

  it('every plan honours pins, tags, avoid, capacities, co-location, spread and the submitter default', () => {
    fc.assert(
      fc.property(scenario, ({ peers, ops, selfIsMember, selfPick }) => {
        const descriptions = peers.map(description)
        const self = selfIsMember ? peers[selfPick % peers.length]!.id : 'submitter'
        const program = build(ops, peers)
        const outcome = attempt(() => solve(program, { peers: descriptions, self }))
        if ('error' in outcome) return
        expect(outcome.plan.instances).toHaveLength(program.operators.reduce((n, o) => n + (o.annotations.parallelism ?? 1), 0))
        honoured(program, outcome.plan, descriptions, self)
        spreadHolds(program, outcome.plan)
      }),
      { numRuns: 300 },
    )
  })

  it('replace after peers leave moves exactly the instances on them, and the result honours every annotation', () => {
    fc.assert(
      fc.property(scenario, fc.array(fc.boolean(), { minLength: 7, maxLength: 7 }), ({ peers, ops, selfIsMember, selfPick, order }, leaving) => {
        const descriptions = peers.map(description)
        const self = selfIsMember ? peers[selfPick % peers.length]!.id : 'submitter'
        const program = build(ops, peers)
        const first = attempt(() => solve(program, { peers: descriptions, self }))
        if ('error' in first) return
        const left = peers.filter((p, i) => leaving[i] === true && p.id !== self).map((p) => p.id)
        const live = descriptions.filter((p) => !left.includes(p.id))
        let result: ReturnType<typeof replace>
        try {
          result = replace(first.plan, program, permuted(live, order), { left })
        } catch (error) {
          expect((error as { code?: string }).code).toBe('ERR_PLACEMENT_UNSATISFIABLE')
          return
        }
        const before = new Map(first.plan.instances.map((p) => [`${p.operator}#${p.instance}`, p.peer]))
        const movedIds = new Set(result.moves.map((m) => `${m.operator}#${m.instance}`))
        for (const p of result.plan.instances) {
          const id = `${p.operator}#${p.instance}`
          expect(left).not.toContain(p.peer)
          if (left.includes(before.get(id)!)) expect(movedIds.has(id)).toBe(true)
          else expect(p.peer).toBe(before.get(id))
        }
        expect(result.moves.every((m) => m.because === 'left' && left.includes(m.from!))).toBe(true)
        honoured(program, result.plan, live, self)
        // Deterministic too.
        expect(replace(first.plan, program, live, { left })).toEqual(result)
      }),
      { numRuns: 200 },
    )
  })
})
