// The placement layer on a local kernel, plans written on programs, and explanations as text and data.
import { describe, expect, it } from 'vitest'
import { kernel, type Layer, type Program } from 'lamina'
import { colocate, pin, requireTags, spread } from './annotations.js'
import { chain, peer, transform } from './fixtures/programs.js'
import { placement } from './layer.js'
import { applyPlan, assignmentOf, explain, planOf, type PlacementPlan } from './plan.js'
import { solve } from './solver.js'

const peers = [peer('self'), peer('p1', { name: 'alpha', ssd: '' }), peer('p2', { name: 'beta' }), peer('p3')]

function example(): Program {
  const x = spread(transform('x', 3))
  const y = colocate(transform('y', 3), x)
  const z = pin(transform('z'), 'beta')
  const w = requireTags(transform('w', 2), 'ssd')
  return chain('example', [x, y, z, w])
}

describe('explain', () => {
  it('says for each instance where it goes and which annotation decided it, as text', () => {
    // Pinned z and tagged w are placed first (most constrained); spread x then finds p3 empty, p2 with one, p1 with two.
    const plan = solve(example(), { peers, self: 'self', job: 'job-7' })
    expect(explain(plan).text).toBe(
      [
        'placement of job job-7: 11 instances on 4 of 4 peers (submitter self)',
        'numbers#0 -> self  [submitter] sources and sinks stay on the submitter',
        'x#0       -> p3  [spread] spread: no other instance of it there; least-loaded of 4 peers that fit',
        'x#1       -> p2 (beta)  [spread] spread: no other instance of it there; least-loaded of 4 peers that fit',
        'x#2       -> p1 (alpha)  [spread] spread: no other instance of it there; least-loaded of 4 peers that fit',
        'y#0       -> p3  [colocate] co-located with x#0, placed by spread',
        'y#1       -> p2 (beta)  [colocate] co-located with x#1, placed by spread',
        'y#2       -> p1 (alpha)  [colocate] co-located with x#2, placed by spread',
        'z#0       -> p2 (beta)  [pin] pinned to "beta" (name tag); the only peer that fits',
        'w#0       -> p1 (alpha)  [tags] needs tag ssd; the only peer that fits',
        'w#1       -> p1 (alpha)  [tags] needs tag ssd; the only peer that fits',
        'out#0     -> self  [submitter] sources and sinks stay on the submitter',
      ].join('\n'),
    )
  })

  it('and as data, one entry per instance', () => {
    const { entries } = explain(solve(example(), { peers, self: 'self' }))
    expect(entries).toHaveLength(11)
    expect(entries.find((e) => e.id === 'z#0')).toEqual({
      id: 'z#0',
      operator: 'z',
      instance: 0,
      peer: 'p2',
      peerName: 'beta',
      rule: 'pin',
      by: 'z',
      reason: 'pinned to "beta" (name tag); the only peer that fits',
    })
    expect(entries.find((e) => e.id === 'y#2')).toMatchObject({ rule: 'colocate', by: 'x', peer: 'p1' })
    expect(entries.find((e) => e.id === 'numbers#0')).not.toHaveProperty('peerName')
  })
})

describe('plans on programs', () => {
  it('applyPlan writes assignment and placementExplanation; planOf reads the plan back; assignmentOf lists peers by operator', () => {
    const program = example()
    const plan = solve(program, { peers, self: 'self', job: 'j' })
    const placed = applyPlan(program, plan)
    expect(placed.operator('x')!.annotations.assignment).toEqual({ peers: ['p3', 'p2', 'p1'] })
    expect(placed.operator('w')!.annotations.placementExplanation!.instances.map((p) => p.peer)).toEqual(['p1', 'p1'])
    expect(planOf(placed)).toEqual(plan)
    expect(planOf(program)).toBeUndefined()
    expect(assignmentOf(plan)).toEqual(Object.fromEntries(placed.operators.map((o) => [o.name, [...o.annotations.assignment!.peers]])))
    // Programs are values: the unplaced one is unchanged.
    expect(program.operator('x')!.annotations.assignment).toBeUndefined()
  })
})

describe('the placement layer', () => {
  it('plans through kernel.plan with the peers and submitter of the context, then calls the layers below', async () => {
    const seen: Program[] = []
    const below: Layer = { name: 'below', plan: async (p, next) => (seen.push(p), next(p)) }
    const plans: PlacementPlan[] = []
    const k = kernel.with(placement({ onPlan: (plan) => plans.push(plan) }), below)
    const planned = await k.plan(example(), { job: 'j1', self: 'self', peers })
    expect(plans).toHaveLength(1)
    expect(plans[0]).toEqual(solve(example(), { job: 'j1', self: 'self', peers }))
    // The layer below saw the assignment already written.
    expect(seen[0]!.operator('z')!.annotations.assignment).toEqual({ peers: ['p2'] })
    expect(planOf(planned)).toEqual(plans[0])
  })

  it('runs a program on a local kernel: everything on the one peer there is', async () => {
    const plans: PlacementPlan[] = []
    const job = kernel.with(placement({ onPlan: (plan) => plans.push(plan) })).run(chain('local', [spread(transform('x', 2)), transform('y')]))
    const report = await job.done
    expect(report.stats.instances.map((i) => `${i.operator}#${i.instance}`).sort()).toEqual(['numbers#0', 'out#0', 'x#0', 'x#1', 'y#0'])
    expect(report.stats.instances.find((i) => i.operator === 'out')!.recordsIn).toBe(3)
    expect(new Set(plans[0]!.instances.map((p) => p.peer))).toEqual(new Set(['local']))
    expect(job.program.operator('x')!.annotations.assignment).toEqual({ peers: ['local', 'local'] })
  })

  it('an unsatisfiable annotation fails the job with the typed error', async () => {
    const job = kernel.with(placement()).run(chain('bad', [pin(transform('x'), 'nowhere')]))
    await expect(job.done).rejects.toMatchObject({ code: 'ERR_PLACEMENT_UNSATISFIABLE', operator: 'x', constraint: { kind: 'pin' } })
  })

  it('bad options fail when the layer is made', () => {
    expect(() => placement({ onPlan: 'log' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => placement({ spareSubmitter: 1 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })

  it('spareSubmitter: false lets transforms share the submitter', async () => {
    const k = kernel.with(placement({ spareSubmitter: false }))
    const planned = await k.plan(chain('p', [transform('x')]), { job: 'j', self: 'self', peers: [peer('self'), peer('a')] })
    expect(planOf(planned)!.spareSubmitter).toBe(false)
    expect(planned.operator('x')!.annotations.assignment).toEqual({ peers: ['a'] })
  })
})
