// Layer capabilities: a stack is checked when it is built (a requirement no layer provides, two
// providers of one capability), the provider's typed API is asked for by token, layer events are
// told apart by typed guards, and a cluster combines a program's layers with its kernel's.
import { describe, expect, it } from 'vitest'
import { capability, kernel, layerEvent, LayerStackError, provide, SAVEPOINTS, type JobEvent, type Layer } from 'lamina'

interface Clock {
  now(): number
}
const CLOCK = capability<Clock>('clock')

const clocks = (now = 42): Layer => ({ name: 'clocks', provides: [provide(CLOCK, { now: () => now })] })
const timed: Layer = { name: 'timed', requires: [CLOCK] }

function stackError(build: () => unknown): LayerStackError {
  try {
    build()
  } catch (error) {
    if (error instanceof LayerStackError) return error
    throw error
  }
  throw new Error('the stack was accepted')
}

describe('layer capabilities', () => {
  it('refuses, when the stack is built, a layer whose requirement no layer provides, naming both', () => {
    const error = stackError(() => kernel.with(timed))
    expect(error.code).toBe('ERR_LAYER_STACK')
    expect(error.layers).toEqual(['timed'])
    expect(error.capability).toBe('clock')
    expect(error.message).toContain('"timed" requires "clock"')
    // The rescale dependency is declared the same way.
    expect(stackError(() => kernel.with({ name: 'rescaler', requires: [SAVEPOINTS] })).capability).toBe('savepoints')
  })

  it('refuses two providers of one capability, naming both layers', () => {
    const error = stackError(() => kernel.with(clocks(), { name: 'other-clocks', provides: [provide(CLOCK, { now: () => 0 })] }))
    expect(error.code).toBe('ERR_LAYER_STACK')
    expect(error.layers).toEqual(['clocks', 'other-clocks'])
    expect(error.capability).toBe('clock')
  })

  it('accepts a requirement provided anywhere in the stack, in any order', () => {
    expect(kernel.with(timed, clocks()).describe()).toEqual(['timed', 'clocks'])
    expect(kernel.with(clocks()).with(timed).describe()).toEqual(['clocks', 'timed'])
  })

  it('hands out the typed API of the provider, and undefined without one', () => {
    const stack = kernel.with(clocks(7), timed)
    const api: Clock | undefined = stack.capability(CLOCK)
    expect(api?.now()).toBe(7)
    expect(kernel.capability(CLOCK)).toBeUndefined()
    // A token is its name: another token of the same name finds the same provider.
    expect(stack.capability(capability<Clock>('clock'))?.now()).toBe(7)
  })

  it('rejects an empty capability name', () => {
    expect(() => capability('')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})

describe('typed layer events', () => {
  const TICKED = layerEvent<{ readonly n: number }>('tick', { layer: 'clocks' })
  const ANY_TICK = layerEvent<{ readonly n: number }>('tick')
  const event = (layer: string, kind: string): JobEvent => ({ type: 'layer', layer, kind, message: '', data: { n: 1 } })

  it('recognise their kind (and layer), and type the data', () => {
    const e = event('clocks', 'tick')
    expect(TICKED.is(e)).toBe(true)
    if (TICKED.is(e)) expect(e.data.n).toBe(1)
    expect(TICKED.is(event('clocks', 'tock'))).toBe(false)
    expect(TICKED.is(event('other', 'tick'))).toBe(false)
    expect(ANY_TICK.is(event('other', 'tick'))).toBe(true)
    expect(TICKED.is({ type: 'started', job: 'j' } as JobEvent)).toBe(false)
  })
})

describe("a program's layers over a kernel's (withOverrides)", () => {
  it("stacks new layers, and a program layer named like one of the kernel's takes its place", async () => {
    const base = kernel.with(clocks(1), { name: 'outer', before: ['clocks'] }, timed)
    const replaced: string[] = []
    const combined = base.withOverrides([clocks(2), { name: 'extra' }], (old, by) => replaced.push(`${old.name}:${by === old}`))
    expect(replaced).toEqual(['clocks:false'])
    expect(combined.describe()).toEqual(['outer', 'clocks', 'timed', 'extra'])
    expect(combined.capability(CLOCK)?.now()).toBe(2)
    // The kernel it came from is unchanged.
    expect(base.capability(CLOCK)?.now()).toBe(1)
  })

  it('treats the same layer value on both sides as one layer', () => {
    const shared = clocks()
    const told: string[] = []
    expect(kernel.with(shared).withOverrides([shared], (old) => told.push(old.name)).layers).toEqual([shared])
    expect(told).toEqual([])
  })

  it('still refuses duplicates within the program, and capability conflicts', () => {
    expect(stackError(() => kernel.withOverrides([clocks(), clocks()])).layers).toEqual(['clocks', 'clocks'])
    expect(stackError(() => kernel.with(clocks()).withOverrides([{ name: 'more-clocks', provides: [provide(CLOCK, { now: () => 3 })] }])).layers).toEqual(['clocks', 'more-clocks'])
  })
})
