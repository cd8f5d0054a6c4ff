// The layer API, proven with two layers written only against the public API of `lamina`.
import { describe, expect, it } from 'vitest'
import { atom, Kernel, kernel, LayerStackError, link, makeLink, map, program, sink, source, t, isChannelSender, wrapChannel, wrapInstance, type Layer, type Program } from 'lamina'

/** A layer that counts the records crossing each link (a channel hook). */
function linkCounter(): { layer: Layer; counts: Map<string, number> } {
  const counts = new Map<string, number>()
  const layer: Layer = {
    name: 'link-counter',
    channel: (channel, next) => {
      const inner = next(channel)
      // Counted where records are sent (the receiving end of the same link sees them again).
      if (!isChannelSender(inner)) return inner
      return wrapChannel(inner, {
        send: (batch) => {
          counts.set(inner.info.link.id, (counts.get(inner.info.link.id) ?? 0) + batch.values.length)
          inner.send(batch)
        },
      })
    },
    control: (registry) => registry.handle('link-counts', () => Object.fromEntries(counts)),
  }
  return { layer, counts }
}

/** A layer that inserts a tap operator on every link into `operator` (a plan hook). */
function tap(operator: string, seen: unknown[]): Layer {
  return {
    name: 'tap',
    plan: async (p: Program, next) => {
      let rewritten = p
      for (const l of p.links.filter((x) => x.to.operator === operator)) {
        const name = `tap-${l.from.operator}-${l.from.port}`
        const codec = p.operator(l.from.operator)!.outputs[l.from.port]!.codec
        const spy = atom({
          name,
          inputs: { in: codec },
          outputs: { out: codec },
          on: {
            in: (value, ctx) => {
              seen.push(value)
              ctx.emit('out', value)
            },
          },
        })
        const links = rewritten.links
          .filter((x) => x !== l)
          .concat([makeLink(l.from, { operator: name, port: 'in' }), makeLink({ operator: name, port: 'out' }, l.to, { capacity: l.capacity })])
        rewritten = rewritten.with({ operators: [...rewritten.operators, spy], links })
      }
      return next(rewritten)
    },
  }
}

function doubling(out: number[]) {
  const numbers = source('numbers', t.number, [1, 2, 3])
  const double = map('double', t.number, t.number, (n) => n * 2)
  const into = sink('out', t.number, out)
  return program('doubling', {
    operators: [numbers, double, into],
    links: [link(numbers.outputs.out, double.inputs.in), link(double.outputs.out, into.inputs.in)],
  })
}

describe('layer API', () => {
  it('a channel layer counts records per link', async () => {
    const { layer, counts } = linkCounter()
    const out: number[] = []
    const job = kernel.with(layer).run(doubling(out))
    await job.done
    expect(out).toEqual([2, 4, 6])
    expect(Object.fromEntries(counts)).toEqual({ 'numbers.out -> double.in': 3, 'double.out -> out.in': 3 })
  })

  it('a control hook answers control messages; unknown kinds are typed errors', async () => {
    const { layer } = linkCounter()
    const job = kernel.with(layer).run(doubling([]))
    await job.done
    expect(await job.control('link-counts')).toEqual({ 'numbers.out -> double.in': 3, 'double.out -> out.in': 3 })
    await expect(job.control('rescale')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_CONTROL' })
  })

  it('a plan layer inserts a tap operator, and the program runs rewritten', async () => {
    const seen: unknown[] = []
    const out: number[] = []
    const job = kernel.with(tap('out', seen)).run(doubling(out))
    await job.done
    expect(out).toEqual([2, 4, 6])
    expect(seen).toEqual([2, 4, 6])
    expect(job.program.operators.map((o) => o.name)).toEqual(['numbers', 'double', 'out', 'tap-double-out'])
  })

  it('layers stack: the tap layer sees its own links counted by the counter', async () => {
    const { layer, counts } = linkCounter()
    await kernel.with(tap('out', []), layer).run(doubling([])).done
    expect(Object.fromEntries(counts)).toEqual({ 'numbers.out -> double.in': 3, 'double.out -> tap-double-out.in': 3, 'tap-double-out.out -> out.in': 3 })
  })

  it('an instance layer wraps every instance, outermost layer first', async () => {
    const calls: string[] = []
    const tracing = (name: string): Layer => ({
      name,
      instance: (spec, next) => {
        const inner = next(spec)
        return wrapInstance(inner, {
          process: (port, batch) => {
            if (spec.operator.name === 'double') calls.push(`${name}:${port}:${batch.values.length}`)
            return inner.process(port, batch)
          },
        })
      },
    })
    await kernel.with(tracing('outer'), tracing('inner')).run(doubling([])).done
    expect(calls).toEqual(['outer:in:3', 'inner:in:3'])
  })

  it('stacks order by constraints, keep declared order otherwise, and refuse conflicts', () => {
    const a: Layer = { name: 'a' }
    const b: Layer = { name: 'b', before: ['a'] }
    const c: Layer = { name: 'c', after: ['ghost'] }
    expect(new Kernel([a, b, c]).describe()).toEqual(['b', 'a', 'c'])
    expect(kernel.with(a).with(c).describe()).toEqual(['a', 'c'])
    expect(() => kernel.with(a, { name: 'a' })).toThrow(LayerStackError)
    expect(() => kernel.with({ name: 'x', before: ['y'] }, { name: 'y', before: ['x'] })).toThrow(expect.objectContaining({ code: 'ERR_LAYER_STACK' }))
  })

  it('the same program runs under different stacks', async () => {
    const plain: number[] = []
    const tapped: number[] = []
    const p = doubling(plain)
    await kernel.run(p).done
    await kernel.with(tap('out', tapped)).run(p).done
    expect(plain).toEqual([2, 4, 6, 2, 4, 6])
    expect(tapped).toEqual([2, 4, 6])
  })
})
