// Plans travel as annotations: the submitter plans once, peers apply what it decided without planning again.
import { describe, expect, it } from 'vitest'
import { kernel, link, map, program, sink, source, t, type Layer, type PeerDescription, type Program } from 'lamina'
import { placement, pin } from 'lamina/layers'
import { applyPlan, shipPlan } from './shipped-plan.js'

function build(extra = false): Program {
  const numbers = source('numbers', t.number, [1, 2, 3])
  const double = pin(
    map('double', t.number, t.number, (n) => n * 2, { parallelism: 2 }),
    'beta',
  )
  const out = sink('out', t.number, [])
  if (!extra) return program('ship', { operators: [numbers, double, out], links: [link(numbers.outputs.out, double.inputs.in), link(double.outputs.out, out.inputs.in)] })
  const triple = map('triple', t.number, t.number, (n) => n * 3)
  return program('ship', {
    operators: [numbers, double, triple, out],
    links: [link(numbers.outputs.out, double.inputs.in), link(double.outputs.out, triple.inputs.in), link(triple.outputs.out, out.inputs.in)],
  })
}

const peers: PeerDescription[] = [
  { id: 'self', tags: {} },
  { id: 'p1', tags: { name: 'alpha' } },
  { id: 'p2', tags: { name: 'beta' } },
]

describe('shipped plans', () => {
  it('ship only what the plan hooks set, and a peer applying them gets the planned annotations', async () => {
    const base = build()
    const planned = await kernel.with(placement()).plan(base, { job: 'j', self: 'self', peers })
    const shipped = shipPlan(base, planned)
    expect(shipped['double']).toMatchObject({ assignment: { peers: ['p2', 'p2'] } })
    // The module's own annotations (parallelism 2, the pin) are not shipped: every peer builds them.
    expect(shipped['double']).not.toHaveProperty('parallelism')
    expect(JSON.parse(JSON.stringify(shipped))).toEqual(shipped)
    const applied = applyPlan(build(), shipped, 'p1')
    expect(applied.operators.find((o) => o.name === 'double')!.annotations.assignment).toEqual({ peers: ['p2', 'p2'] })
  })

  it('ship a changed parallelism (a rescale)', () => {
    const base = build()
    const rescaled = base.mapOperators((o) => (o.name === 'double' ? o.annotate({ parallelism: 3 }) : o))
    expect(shipPlan(base, rescaled)['double']).toEqual({ parallelism: 3 })
    expect(applyPlan(build(), shipPlan(base, rescaled), 'p1').operators.find((o) => o.name === 'double')!.annotations.parallelism).toBe(3)
  })

  it('refuse a peer whose module built other operators, naming them (ERR_PLAN_MISMATCH)', () => {
    const shipped = shipPlan(build(), build())
    expect(() => applyPlan(build(true), shipped, 'p1')).toThrow(expect.objectContaining({ code: 'ERR_PLAN_MISMATCH', message: expect.stringContaining('operators added: triple') }))
  })

  it('refuse a plan hook that adds operators or sets annotations that are not plain data (ERR_PLAN_UNSHIPPABLE)', async () => {
    expect(() => shipPlan(build(), build(true))).toThrow(expect.objectContaining({ code: 'ERR_PLAN_UNSHIPPABLE', message: expect.stringContaining('operators added: triple') }))
    const sneaky: Layer = {
      name: 'sneaky',
      plan: async (p, next) => next(p.mapOperators((o) => o.annotate({ labels: [String(new Date(0))], assignment: { peers: [] }, ...({ hook: () => 1 } as object) }))),
    }
    const planned = await kernel.with(sneaky).plan(build(), { job: 'j', self: 'self', peers })
    expect(() => shipPlan(build(), planned)).toThrow(expect.objectContaining({ code: 'ERR_PLAN_UNSHIPPABLE', message: expect.stringContaining('annotations.hook is a function') }))
  })
})
