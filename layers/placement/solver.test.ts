// The solver: each annotation, the defaults, determinism, and unsatisfiable annotations with the error's content.
import { describe, expect, it } from 'vitest'
import type { Operator } from 'lamina'
import { avoid, colocate, pin, requireTags, resources, spread } from './annotations.js'
import { PlacementUnsatisfiableError } from './errors.js'
import { chain, peer, transform } from './fixtures/programs.js'
import type { PlacementPlan } from './plan.js'
import { solve } from './solver.js'

/** operator name -> peers of its instances. */
function where(plan: PlacementPlan): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (const p of plan.instances) (out[p.operator] ??= [])[p.instance] = p.peer
  return out
}

function instance(plan: PlacementPlan, operator: string, i = 0) {
  return plan.instances.find((p) => p.operator === operator && p.instance === i)!
}

/** Runs `fn` and returns what it threw (failing the test when it does not throw). */
function thrown(fn: () => unknown): PlacementUnsatisfiableError {
  try {
    fn()
  } catch (error) {
    if (error instanceof PlacementUnsatisfiableError) return error
    throw error
  }
  throw new Error('expected PlacementUnsatisfiableError')
}

const four = [peer('self'), peer('a', { name: 'alpha', region: 'eu', ssd: '' }), peer('b', { name: 'beta', region: 'us' }), peer('c', { region: 'eu' })]

describe('solve: defaults', () => {
  it('sources and sinks stay on the submitter; transforms go least-loaded, sparing the submitter', () => {
    const plan = solve(chain('p', [transform('x'), transform('y'), transform('z'), transform('w')]), { peers: four, self: 'self' })
    expect(where(plan)).toEqual({ numbers: ['self'], x: ['a'], y: ['b'], z: ['c'], w: ['a'], out: ['self'] })
    expect(instance(plan, 'numbers').rule).toBe('submitter')
    expect(instance(plan, 'x').rule).toBe('least-loaded')
    expect(instance(plan, 'x').reason).toBe('least-loaded of 4 peers that fit')
  })

  it('the submitter takes transforms when it is the only peer, or when not spared', () => {
    const alone = solve(chain('p', [transform('x', 2)]), { peers: [peer('self')], self: 'self' })
    expect(where(alone)).toEqual({ numbers: ['self'], x: ['self', 'self'], out: ['self'] })
    expect(instance(alone, 'x').reason).toContain('the submitter, as no other peer fits')
    const shared = solve(chain('p', [transform('x', 2)]), { peers: [peer('self'), peer('a')], self: 'self' }, { spareSubmitter: false })
    // self already holds the source and the sink: a takes both instances while it is less loaded.
    expect(where(shared).x).toEqual(['a', 'a'])
    // Ties go to the lower id: the fourth instance finds a with 3, self with 2 (source and sink).
    const shared4 = solve(chain('p', [transform('x', 4)]), { peers: [peer('self'), peer('a')], self: 'self' }, { spareSubmitter: false })
    expect(where(shared4).x).toEqual(['a', 'a', 'a', 'self'])
  })

  it('the submitter is a member even when the peers omit it', () => {
    const plan = solve(chain('p', [transform('x')]), { peers: [peer('a')], self: 'me' })
    expect(plan.peers).toEqual(['a', 'me'])
    expect(where(plan)).toEqual({ numbers: ['me'], x: ['a'], out: ['me'] })
  })

  it('records the job, the submitter, the sorted peers and their names', () => {
    const plan = solve(chain('p', []), { peers: [...four].reverse(), self: 'self', job: 'job-1' })
    expect(plan).toMatchObject({ job: 'job-1', self: 'self', peers: ['a', 'b', 'c', 'self'], names: { a: 'alpha', b: 'beta' }, spareSubmitter: true })
  })
})

describe('solve: annotations', () => {
  it('pin by id and by name tag; a pinned source leaves the submitter', () => {
    const plan = solve(chain('p', [pin(transform('x', 2), 'b'), pin(transform('y'), 'alpha')], { source: (o) => pin(o, 'c') }), { peers: four, self: 'self' })
    expect(where(plan)).toMatchObject({ numbers: ['c'], x: ['b', 'b'], y: ['a'] })
    expect(instance(plan, 'x').rule).toBe('pin')
    expect(instance(plan, 'x').reason).toBe('pinned to "b" (id); the only peer that fits')
    expect(instance(plan, 'y').reason).toBe('pinned to "alpha" (name tag); the only peer that fits')
  })

  it('an id takes precedence over a name tag; a name shared by peers lets the least loaded of them take it', () => {
    const peers = [peer('self'), peer('a', { name: 'b' }), peer('b'), peer('c', { name: 'twin' }), peer('d', { name: 'twin' })]
    const plan = solve(chain('p', [pin(transform('x'), 'b'), pin(transform('y', 2), 'twin')]), { peers, self: 'self' })
    expect(where(plan)).toMatchObject({ x: ['b'], y: ['c', 'd'] })
  })

  it('required tags: k=v needs that value, a bare k needs the tag with any value', () => {
    const plan = solve(chain('p', [requireTags(transform('x', 2), 'region=eu'), requireTags(transform('y'), 'ssd'), requireTags(transform('z'), 'region=eu', 'ssd')]), {
      peers: four,
      self: 'self',
    })
    expect(where(plan)).toMatchObject({ x: ['a', 'c'], y: ['a'], z: ['a'] })
    expect(instance(plan, 'x').rule).toBe('tags')
    expect(instance(plan, 'z').reason).toBe('needs tags region=eu, ssd; the only peer that fits')
  })

  it('avoid keeps instances off peers named by id or name', () => {
    const plan = solve(chain('p', [avoid(transform('x', 4), 'a', 'beta')]), { peers: four, self: 'self' })
    expect(where(plan).x).toEqual(['c', 'c', 'c', 'c'])
    expect(instance(plan, 'x').rule).toBe('avoid')
  })

  it('spread: no two instances on one peer while peers suffice, then evenly', () => {
    const peers = [peer('self'), peer('a'), peer('b'), peer('c')]
    // A busy peer `a` still gets one instance: spread counts instances of the operator first.
    const busy = pin(transform('busy', 5), 'a')
    const three = solve(chain('p', [busy, spread(transform('x', 3))]), { peers, self: 'self' })
    expect(new Set(where(three).x)).toEqual(new Set(['a', 'b', 'c']))
    expect(instance(three, 'x').rule).toBe('spread')
    // Four instances on three workers: the fourth goes to the submitter rather than doubling up.
    const four = solve(chain('p', [spread(transform('x', 4))]), { peers, self: 'self' })
    expect(new Set(where(four).x)).toEqual(new Set(['a', 'b', 'c', 'self']))
    const six = solve(chain('p', [spread(transform('x', 8))]), { peers, self: 'self' })
    const perPeer = new Map<string, number>()
    for (const p of where(six).x!) perPeer.set(p, (perPeer.get(p) ?? 0) + 1)
    const counts = [...perPeer.values()]
    expect(counts.sort()).toEqual([2, 2, 2, 2])
    expect(six.instances.filter((p) => p.operator === 'x').some((p) => p.reason.includes('more instances than peers'))).toBe(true)
  })

  it('without spread, least-loaded may double up where spread would not', () => {
    const peers = [peer('self'), peer('a'), peer('b')]
    const plain = solve(chain('p', [pin(transform('heavy', 3), 'a'), transform('x', 3)]), { peers, self: 'self' })
    expect(where(plain).x).toEqual(['b', 'b', 'b'])
    const spreaded = solve(chain('p', [pin(transform('heavy', 3), 'a'), spread(transform('x', 3))]), { peers, self: 'self' })
    expect(new Set(where(spreaded).x)).toEqual(new Set(['a', 'b', 'self']))
  })

  it('resources: instances consume capacity; undeclared capacity is unlimited; tags capacity.<name> declare it too', () => {
    const peers = [peer('self'), peer('a', {}, { cpu: 2 }), peer('b', { 'capacity.cpu': '1' }), peer('c', {}, { memoryMb: 100 })]
    const plan = solve(chain('p', [resources(transform('x', 4), { cpu: 1 }), resources(transform('m', 2), { memoryMb: 60 })]), { peers, self: 'self' })
    const x = where(plan).x!
    expect(x.filter((p) => p === 'a').length).toBeLessThanOrEqual(2)
    expect(x.filter((p) => p === 'b').length).toBeLessThanOrEqual(1)
    // c declares no cpu: unlimited there.
    expect(x).toContain('c')
    // c has memory for one instance of m only; a and b declare no memory.
    expect(where(plan).m!.filter((p) => p === 'c').length).toBeLessThanOrEqual(1)
    expect(instance(plan, 'x').rule).toBe('resources')
  })

  it('resources fill peers to their capacity exactly', () => {
    const peers = [peer('self', {}, { cpu: 0 }), peer('a', {}, { cpu: 3 }), peer('b', {}, { cpu: 2 })]
    const plan = solve(chain('p', [resources(transform('x', 5), { cpu: 1 })]), { peers, self: 'self' })
    expect(where(plan).x!.sort()).toEqual(['a', 'a', 'a', 'b', 'b'])
  })

  it('colocate with equal parallelism: instance i beside instance i', () => {
    const x = spread(transform('x', 3))
    const y = colocate(transform('y', 3), x)
    const plan = solve(chain('p', [x, y]), { peers: four, self: 'self' })
    expect(where(plan).y).toEqual(where(plan).x)
    expect(new Set(where(plan).x).size).toBe(3)
    expect(instance(plan, 'y', 1)).toMatchObject({ rule: 'colocate', by: 'x', reason: 'co-located with x#1, placed by spread' })
  })

  it('colocate with different parallelism: the whole group on one peer', () => {
    const x = transform('x', 2)
    const y = colocate(transform('y', 3), 'x')
    const plan = solve(chain('p', [x, y]), { peers: four, self: 'self' })
    const peers = new Set([...where(plan).x!, ...where(plan).y!])
    expect(peers.size).toBe(1)
    expect(instance(plan, 'y', 2).reason).toContain('parallelisms differ')
  })

  it('colocate is symmetric and transitive; constraints of any member bind the group', () => {
    const x = transform('x', 2)
    const y = requireTags(colocate(transform('y', 2), 'x'), 'region=eu')
    const z = colocate(transform('z', 2), 'y')
    const plan = solve(chain('p', [x, y, z]), { peers: four, self: 'self' })
    expect(where(plan).x).toEqual(where(plan).y)
    expect(where(plan).z).toEqual(where(plan).x)
    expect(new Set(where(plan).x)).toEqual(new Set(['a', 'c']))
    // x carries no annotation of its own: it follows y, whose tag decided.
    expect(instance(plan, 'x')).toMatchObject({ rule: 'colocate', by: 'y' })
    expect(instance(plan, 'y')).toMatchObject({ rule: 'tags', by: 'y' })
    expect(instance(plan, 'x').constraints).toEqual(['tag region=eu (on y)', 'colocate x, y, z (instance by instance)'])
  })

  it('a transform co-located with the sink stays on the submitter', () => {
    const plan = solve(chain('p', [transform('x')], { sink: (o) => colocate(o, 'x') }), { peers: four, self: 'self' })
    expect(where(plan)).toMatchObject({ x: ['self'], out: ['self'] })
    expect(instance(plan, 'x')).toMatchObject({ rule: 'colocate', by: 'out' })
    expect(instance(plan, 'out').rule).toBe('submitter')
  })

  it('co-located resources add up per slot', () => {
    const peers = [peer('self', {}, { cpu: 0 }), peer('a', {}, { cpu: 3 }), peer('b', {}, { cpu: 2 })]
    const x = resources(transform('x'), { cpu: 1 })
    const y = resources(colocate(transform('y'), x), { cpu: 2 })
    const plan = solve(chain('p', [x, y]), { peers, self: 'self' })
    expect(where(plan)).toMatchObject({ x: ['a'], y: ['a'] })
  })
})

describe('solve: determinism', () => {
  const program = chain('p', [spread(transform('x', 3)), requireTags(transform('y', 2), 'region=eu'), transform('z', 5), pin(transform('w'), 'beta')])

  it('the same plan whatever the order of the peers', () => {
    const plan = solve(program, { peers: four, self: 'self' })
    for (const order of [[...four].reverse(), [four[2]!, four[0]!, four[3]!, four[1]!], [four[1]!, four[3]!, four[0]!, four[2]!]]) {
      expect(solve(program, { peers: order, self: 'self' })).toEqual(plan)
    }
  })

  it('peers listed twice identically count once; listed twice differently are an input error', () => {
    expect(solve(program, { peers: [...four, ...four], self: 'self' })).toEqual(solve(program, { peers: four, self: 'self' }))
    expect(() => solve(program, { peers: [...four, peer('a', { other: '' })], self: 'self' })).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_INPUT' }))
  })
})

describe('solve: unsatisfiable annotations', () => {
  it('a pin to no live peer names the pin and every peer considered', () => {
    const error = thrown(() => solve(chain('p', [pin(transform('x'), 'gamma')]), { peers: four, self: 'self' }))
    expect(error.code).toBe('ERR_PLACEMENT_UNSATISFIABLE')
    expect(error.operator).toBe('x')
    expect(error.instance).toBe(0)
    expect(error.constraint).toEqual({ kind: 'pin', operator: 'x', text: 'pin "gamma"' })
    expect(error.considered).toEqual([
      { peer: 'a (alpha)', reasons: ['is not "gamma" (neither its id nor its name tag)'] },
      { peer: 'b (beta)', reasons: ['is not "gamma" (neither its id nor its name tag)'] },
      { peer: 'c', reasons: ['is not "gamma" (neither its id nor its name tag)'] },
      { peer: 'self', reasons: ['is not "gamma" (neither its id nor its name tag)'] },
    ])
    expect(error.message).toContain('cannot place x#0: no peer satisfies pin "gamma"')
    expect(error.message).toContain('4 peers considered')
  })

  it('missing tags say what each peer has instead', () => {
    const error = thrown(() => solve(chain('p', [requireTags(transform('x'), 'region=ap')]), { peers: four, self: 'self' }))
    expect(error.constraint).toEqual({ kind: 'tags', operator: 'x', text: 'tag region=ap' })
    expect(error.considered).toContainEqual({ peer: 'a (alpha)', reasons: ['lacks tag region=ap (has region=eu)'] })
    expect(error.considered).toContainEqual({ peer: 'self', reasons: ['lacks tag region=ap'] })
  })

  it('capacity: the constraint that rejected the last candidates, and every reason of every peer', () => {
    const peers = [peer('self', {}, { cpu: 0 }), peer('a', { ssd: '' }, { cpu: 2 }), peer('b', {}, { cpu: 8 })]
    const error = thrown(() => solve(chain('p', [requireTags(resources(transform('x', 2), { cpu: 2 }), 'ssd')]), { peers, self: 'self' }))
    expect(error.instance).toBe(1)
    expect(error.constraint).toEqual({ kind: 'resources', operator: 'x', text: 'resources cpu=2' })
    expect(error.considered).toEqual([
      { peer: 'a', reasons: ['cpu: needs 2, 0 of 2 left'] },
      { peer: 'b', reasons: ['lacks tag ssd'] },
      { peer: 'self', reasons: ['lacks tag ssd', 'cpu: needs 2, 0 of 0 left'] },
    ])
  })

  it('avoiding every peer', () => {
    const error = thrown(() => solve(chain('p', [avoid(transform('x'), 'a', 'b', 'c', 'self')]), { peers: four, self: 'self' }))
    expect(error.constraint).toEqual({ kind: 'avoid', operator: 'x', text: 'avoid "self"' })
    expect(error.considered).toContainEqual({ peer: 'c', reasons: ['avoided by x ("c")'] })
  })

  it('co-located operators pinned to different peers name the group and the pin that conflicts', () => {
    const x = pin(transform('x', 2), 'a')
    const y = pin(colocate(transform('y', 2), x), 'b')
    const error = thrown(() => solve(chain('p', [x, y]), { peers: four, self: 'self' }))
    expect(error.operator).toBe('x')
    expect(error.colocated).toEqual(['y#0'])
    expect(error.constraint).toEqual({ kind: 'pin', operator: 'y', text: 'pin "b"' })
    expect(error.considered).toContainEqual({ peer: 'a (alpha)', reasons: ['is not "b" (neither its id nor its name tag) [pin of y]'] })
    expect(error.message).toContain('cannot place x#0 (co-located with y#0): no peer satisfies pin "b" (of y)')
  })

  it('a sink needing more than the submitter offers names the submitter default', () => {
    const peers = [peer('self', {}, { cpu: 1 }), peer('a', {}, { cpu: 8 })]
    const error = thrown(() => solve(chain('p', [], { sink: (o) => resources(o, { cpu: 2 }) }), { peers, self: 'self' }))
    expect(error.operator).toBe('out')
    expect(error.constraint).toEqual({ kind: 'resources', operator: 'out', text: 'resources cpu=2' })
    expect(error.considered).toEqual([
      { peer: 'a', reasons: ['not the submitter self (sources and sinks stay there unless annotated)'] },
      { peer: 'self', reasons: ['cpu: needs 2, 1 of 1 left'] },
    ])
  })

  it('malformed annotations written by hand are annotation errors', () => {
    const bad = (placement: unknown): Operator => transform('x').annotate({ placement } as never)
    expect(() => solve(chain('p', [bad({ pin: '' })]), { peers: four, self: 'self' })).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'pin' }))
    expect(() => solve(chain('p', [bad({ resources: { cpu: -1 } })]), { peers: four, self: 'self' })).toThrow(
      expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'resources' }),
    )
    expect(() => solve(chain('p', [bad({ colocate: ['ghost'] })]), { peers: four, self: 'self' })).toThrow(
      expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'colocate' }),
    )
    expect(() => solve(chain('p', [bad({ tags: 'ssd' })]), { peers: four, self: 'self' })).toThrow(
      expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'tags' }),
    )
  })
})
