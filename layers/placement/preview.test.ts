// Placement previews on imagined peers (`kernel.plan(program, { peers })`), peer descriptions from JSON, and in-process runs with the annotations ignored.
import { describe, expect, it } from 'vitest'
import { kernel, type JobEvent, type Program } from 'lamina'
import { pin, requireTags, spread } from './annotations.js'
import { PlacementUnsatisfiableError } from './errors.js'
import build, { results } from './fixtures/placed-program.js'
import { chain, peer, transform } from './fixtures/programs.js'
import { PLACEMENT_EVENTS, placement } from './layer.js'
import { decodePeers } from './peers.js'
import { explain, planOf, type PlacementPlan } from './plan.js'

/** An imagined cluster of three peers, as a `lamina plan --peers` file describes it. */
const cluster = decodePeers([
  { id: 'peer-a', tags: { zone: 'eu', name: 'peer-0' } },
  { id: 'peer-b', tags: { zone: 'eu', name: 'peer-1' } },
  { id: 'peer-c', tags: { zone: 'us', name: 'peer-2' } },
])

/** `numbers -> parse (2, spread) -> enrich (zone=eu) -> store (pinned to peer-0) -> out`. */
function pipeline(): Program {
  return chain('pipeline', [spread(transform('parse', 2)), requireTags(transform('enrich'), 'zone=eu'), pin(transform('store'), 'peer-0')])
}

/** Instance -> peer of a plan. */
function where(plan: PlacementPlan): Record<string, string> {
  return Object.fromEntries(plan.instances.map((p) => [`${p.operator}#${p.instance}`, p.peer]))
}

describe('a placement preview: kernel.with(placement()).plan(program, { peers })', () => {
  it('places every instance on the imagined peers, submitted from this process, and explains each decision', async () => {
    const planned = await kernel.with(placement()).plan(pipeline(), { peers: cluster })
    const plan = planOf(planned)!
    // Pinned store and submitter-bound numbers/out first, then the tagged enrich (least loaded of
    // the two eu peers), then spread parse (the empty peer, then the lowest id; the submitter last).
    expect(where(plan)).toEqual({
      'numbers#0': 'local',
      'parse#0': 'peer-c',
      'parse#1': 'peer-a',
      'enrich#0': 'peer-b',
      'store#0': 'peer-a',
      'out#0': 'local',
    })
    expect(planned.operator('store')!.annotations.assignment).toEqual({ peers: ['peer-a'] })
    expect(explain(plan).text).toBe(
      [
        'placement of job pipeline: 6 instances on 4 of 4 peers (submitter local)',
        'numbers#0 -> local  [submitter] sources and sinks stay on the submitter',
        'parse#0   -> peer-c (peer-2)  [spread] spread: no other instance of it there; least-loaded of 4 peers that fit',
        'parse#1   -> peer-a (peer-0)  [spread] spread: no other instance of it there; least-loaded of 4 peers that fit',
        'enrich#0  -> peer-b (peer-1)  [tags] needs tag zone=eu; least-loaded of 2 peers that fit',
        'store#0   -> peer-a (peer-0)  [pin] pinned to "peer-0" (name tag); the only peer that fits',
        'out#0     -> local  [submitter] sources and sinks stay on the submitter',
      ].join('\n'),
    )
  })

  it('takes the job and the submitter too: a submitter listed among the peers is placed on with its tags', async () => {
    const plan = planOf(await kernel.with(placement()).plan(pipeline(), { job: 'preview-7', self: 'peer-b', peers: cluster }))!
    expect(plan.job).toBe('preview-7')
    expect(plan.peers).toEqual(['peer-a', 'peer-b', 'peer-c'])
    expect(where(plan)).toMatchObject({ 'numbers#0': 'peer-b', 'store#0': 'peer-a', 'out#0': 'peer-b' })
  })

  it('with no context at all, plans as kernel.run does: this process alone, job named after the program', async () => {
    const plan = planOf(await kernel.with(placement()).plan(chain('solo', [transform('x')])))!
    expect(plan).toMatchObject({ job: 'solo', self: 'local', peers: ['local'] })
    expect(new Set(Object.values(where(plan)))).toEqual(new Set(['local']))
  })

  it('an unsatisfiable preview rejects with the typed error, naming the constraint and every peer considered', async () => {
    const withoutPeer0 = cluster.filter((p) => p.tags['name'] !== 'peer-0')
    const failure = await kernel
      .with(placement())
      .plan(pipeline(), { peers: withoutPeer0 })
      .catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(PlacementUnsatisfiableError)
    expect(failure).toMatchObject({ code: 'ERR_PLACEMENT_UNSATISFIABLE', operator: 'store', instance: 0, constraint: { kind: 'pin', operator: 'store', text: 'pin "peer-0"' } })
    const considered = (failure as PlacementUnsatisfiableError).considered
    expect(considered.map((c) => c.peer)).toEqual(['local', 'peer-b (peer-1)', 'peer-c (peer-2)'])
    for (const c of considered) expect(c.reasons.join(' ')).toContain('is not "peer-0"')
    // inProcess: 'ignore' changes nothing where there are other peers: annotations are enforced.
    await expect(kernel.with(placement({ inProcess: 'ignore' })).plan(pipeline(), { peers: withoutPeer0 })).rejects.toMatchObject({ code: 'ERR_PLACEMENT_UNSATISFIABLE' })
  })
})

describe('peer descriptions from JSON', () => {
  it('reads ids, tags (none when absent) and capacities', () => {
    expect(decodePeers([{ id: 'a', tags: { ssd: '' } }, { id: 'b' }, { id: 'c', tags: {}, capacity: { cpu: 4 } }])).toEqual([
      peer('a', { ssd: '' }),
      peer('b'),
      peer('c', {}, { cpu: 4 }),
    ])
  })

  it('refuses anything else with ERR_PLACEMENT_INPUT, naming the source and the path of each problem', () => {
    const refused = (value: unknown): unknown => {
      try {
        decodePeers(value, 'peers.json')
      } catch (error) {
        return error
      }
      return undefined
    }
    expect(refused([{ id: 'a', tags: { zone: 3 } }])).toMatchObject({
      code: 'ERR_PLACEMENT_INPUT',
      message: expect.stringContaining('peers.json: [0].tags.zone expected string, got 3'),
    })
    expect(refused([{ id: 'a' }, { tags: {} }])).toMatchObject({ code: 'ERR_PLACEMENT_INPUT', message: expect.stringContaining('[1].id expected a non-empty string') })
    expect(refused([{ id: 'a', capacity: { cpu: '4' } }])).toMatchObject({ message: expect.stringContaining('[0].capacity.cpu expected number') })
    expect(refused({ id: 'a' })).toMatchObject({ code: 'ERR_PLACEMENT_INPUT' })
    expect(refused([])).toMatchObject({ code: 'ERR_PLACEMENT_INPUT', message: expect.stringContaining('lists no peer') })
  })
})

describe("in one process: placement({ inProcess: 'ignore' })", () => {
  /** Runs the pinned fixture program (pin, colocate, tags, spread) under `layers`; its sorted output, the job's layer events and its plans. */
  async function runPlaced(...layers: Parameters<typeof kernel.with>): Promise<{ output: number[]; events: JobEvent[] }> {
    results.length = 0
    const job = kernel.with(...layers).run(build(['200', 'peer-1']))
    const events: JobEvent[] = []
    job.events.subscribe((event) => void (event.type === 'layer' && events.push(event)))
    await job.done
    return { output: [...results].sort((a, b) => a - b), events }
  }

  it('today: a pinned program cannot run in one process under placement(), the pinned peer does not exist', async () => {
    results.length = 0
    await expect(kernel.with(placement()).run(build(['200', 'peer-1'])).done).rejects.toMatchObject({ code: 'ERR_PLACEMENT_UNSATISFIABLE', operator: 'double' })
  })

  it('runs it, with the same output as without placement, and says once which annotations it did not enforce', async () => {
    const plain = await runPlaced()
    expect(plain.output).toEqual(Array.from({ length: 200 }, (_, i) => i * 2 + 1))
    const plans: PlacementPlan[] = []
    const ignored = await runPlaced(placement({ inProcess: 'ignore', onPlan: (plan) => plans.push(plan) }))
    expect(ignored.output).toEqual(plain.output)
    const notices = ignored.events.filter((e) => PLACEMENT_EVENTS.ignored.is(e))
    expect(notices).toHaveLength(1)
    expect(ignored.events).toHaveLength(1)
    const constraints = ['double: pin "peer-1"', 'inc: colocate with double', 'tagged: tag disk=ssd', 'spreadOut: spread']
    expect(PLACEMENT_EVENTS.ignored.is(notices[0]!) && notices[0].data).toEqual({ job: expect.any(String), constraints })
    expect(notices[0]).toMatchObject({ layer: 'placement', kind: 'ignored', message: expect.stringContaining('double: pin "peer-1"') })
    // The plan says so too: every instance here, the annotated ones with rule `ignored`.
    const plan = plans[0]!
    expect(plan.ignored).toEqual(constraints)
    expect(new Set(plan.instances.map((p) => p.peer))).toEqual(new Set(['local']))
    expect(plan.instances.filter((p) => p.rule === 'ignored').map((p) => `${p.operator}#${p.instance}`)).toEqual([
      'double#0',
      'inc#0',
      'tagged#0',
      'spreadOut#0',
      'spreadOut#1',
      'spreadOut#2',
    ])
    const text = explain(plan).text.split('\n')
    expect(text[1]).toBe(`annotations not enforced in one process (placement({ inProcess: 'ignore' })): ${constraints.join('; ')}`)
    expect(text).toContain('double#0    -> local  [ignored] in one process: pin "peer-1" not enforced')
    expect(text).toContain('numbers#0   -> local  [submitter] sources and sinks stay on the submitter')
  })

  it('a preview of the same layer in one process shows it in the plan, and planOf reads it back', async () => {
    const plan = planOf(await kernel.with(placement({ inProcess: 'ignore' })).plan(pipeline()))!
    expect(plan.ignored).toEqual(['parse: spread', 'enrich: tag zone=eu', 'store: pin "peer-0"'])
    expect(explain(plan).ignored).toEqual(plan.ignored)
  })

  it('a program with no annotations: nothing ignored, nothing reported, the plan placement() makes', async () => {
    const program = chain('bare', [transform('x', 2)])
    const plans: PlacementPlan[] = []
    const job = kernel.with(placement({ inProcess: 'ignore', onPlan: (plan) => plans.push(plan) })).run(program)
    const events: JobEvent[] = []
    job.events.subscribe((event) => void (event.type === 'layer' && events.push(event)))
    await job.done
    expect(events).toEqual([])
    expect(plans[0]).not.toHaveProperty('ignored')
    expect(plans[0]).toEqual(planOf(await kernel.with(placement()).plan(program, { job: plans[0]!.job })))
  })

  it('malformed annotations still fail, and a bad option value fails when the layer is made', async () => {
    const bad = chain('bad', [transform('x').annotate({ placement: { pin: '' } })])
    await expect(kernel.with(placement({ inProcess: 'ignore' })).run(bad).done).rejects.toMatchObject({ code: 'ERR_PLACEMENT_ANNOTATION' })
    expect(() => placement({ inProcess: 'skip' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})
