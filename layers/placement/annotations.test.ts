// The annotation helpers: typed, immutable, merging, and refusing malformed values.
import { describe, expect, expectTypeOf, it } from 'vitest'
import { map, t, type Operator } from 'lamina'
import { avoid, colocate, pin, placementOf, requireTags, resources, spread } from './annotations.js'

const double = map('double', t.number, t.number, (n) => n * 2, { parallelism: 2 })

describe('placement annotation helpers', () => {
  it('each returns a new operator with the annotation; the original is untouched', () => {
    const pinned = pin(double, 'peer-1')
    expect(pinned).not.toBe(double)
    expect(placementOf(double)).toEqual({})
    expect(double.annotations.placement).toBeUndefined()
    expect(pinned.annotations.placement).toEqual({ pin: 'peer-1' })
    // Other annotations are kept.
    expect(pinned.annotations.parallelism).toBe(2)
    expect(Object.isFrozen(pinned.annotations)).toBe(true)
  })

  it('keep the operator type, so ports stay typed', () => {
    const pinned = pin(double, 'peer-1')
    expectTypeOf(pinned).toEqualTypeOf<typeof double>()
    expectTypeOf(pinned.outputs.out).toEqualTypeOf<typeof double.outputs.out>()
    expectTypeOf(spread(requireTags(avoid(double, 'x'), 'ssd'))).toEqualTypeOf<typeof double>()
  })

  it('merge: lists append without repeats, resources merge by name, pin replaces', () => {
    let op = requireTags(double, 'ssd', 'region=eu')
    op = requireTags(op, 'ssd', 'gpu')
    op = avoid(avoid(op, 'a'), 'b', 'a')
    op = resources(resources(op, { cpu: 1, memoryMb: 100 }), { cpu: 2 })
    op = colocate(
      colocate(op, 'tokenize'),
      map('parse', t.number, t.number, (n) => n),
    )
    op = pin(pin(op, 'x'), 'y')
    op = spread(op)
    expect(op.annotations.placement).toEqual({
      tags: ['ssd', 'region=eu', 'gpu'],
      avoid: ['a', 'b'],
      resources: { cpu: 2, memoryMb: 100 },
      colocate: ['tokenize', 'parse'],
      pin: 'y',
      spread: true,
    })
  })

  it('the annotation is visible through the public Annotations type (declaration merging)', () => {
    const op: Operator = double.annotate({ placement: { pin: 'p', spread: true } })
    expectTypeOf(op.annotations.placement).toEqualTypeOf<import('./annotations.js').PlacementAnnotation | undefined>()
    expect(op.annotations.placement?.pin).toBe('p')
  })

  it('refuse malformed values with ERR_PLACEMENT_ANNOTATION', () => {
    expect(() => pin(double, '')).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', operator: 'double', annotation: 'pin' }))
    expect(() => requireTags(double, '=eu')).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'tags' }))
    expect(() => requireTags(double, '')).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION' }))
    expect(() => resources(double, { cpu: -1 })).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'resources' }))
    expect(() => resources(double, { cpu: Number.NaN })).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION' }))
    expect(() => colocate(double, double)).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'colocate' }))
    expect(() => avoid(double, '')).toThrow(expect.objectContaining({ code: 'ERR_PLACEMENT_ANNOTATION', annotation: 'avoid' }))
  })
})
