import { describe, expect, it } from 'vitest'
import { atom, fuseChains, kernel, link, program, sink, source, t, type Fusible, type Operator } from 'lamina'

type NumberOp = Operator<{ in: t.NumberC }, { out: t.NumberC }>

/** A toy fusible kind: pure number functions, fused by composition. */
const pure: Fusible = {
  kind: 'pure',
  fuse: (self, next) => fn(`${self.name}+${next.name}`, (n) => functionOf(next)(functionOf(self)(n)), self.annotations.parallelism),
}
const functions = new WeakMap<object, (n: number) => number>()
function functionOf(op: Operator): (n: number) => number {
  return functions.get(op.body)!
}
function fn(name: string, f: (n: number) => number, parallelism = 1): NumberOp {
  const op = atom({ name, inputs: { in: t.number }, outputs: { out: t.number }, on: { in: (n, ctx) => ctx.emit('out', f(n)) }, fusible: pure, annotations: { parallelism } })
  functions.set(op.body, f)
  return op
}

function chain(ops: NumberOp[], out: number[]) {
  const numbers = source('numbers', t.number, [1, 2, 3])
  const into = sink('out', t.number, out)
  const all: Operator[] = [numbers, ...ops, into]
  const links = [
    link(numbers.outputs.out, ops[0]!.inputs.in),
    ...ops.slice(1).map((op, i) => link(ops[i]!.outputs.out, op.inputs.in)),
    link(ops.at(-1)!.outputs.out, into.inputs.in),
  ]
  return program('chain', { operators: all, links })
}

describe('operator chaining', () => {
  it('fuses consecutive fusible operators into one, with the same results', async () => {
    const out: number[] = []
    const job = kernel.run(chain([fn('inc', (n) => n + 1), fn('double', (n) => n * 2), fn('square', (n) => n * n)], out))
    await job.done
    expect(out).toEqual([16, 36, 64])
    expect(job.program.operators.map((o) => o.name)).toEqual(['numbers', 'out', 'inc+double+square'])
    expect(job.program.links.map((l) => l.id)).toEqual(['numbers.out -> inc+double+square.in', 'inc+double+square.out -> out.in'])
  })

  it('leaves chains alone when asked, or when parallelism or peers differ', () => {
    const p = chain([fn('inc', (n) => n + 1), fn('double', (n) => n * 2, 2)], [])
    expect(fuseChains(p).operators.map((o) => o.name)).toEqual(['numbers', 'inc', 'double', 'out'])
    const same = chain([fn('inc', (n) => n + 1), fn('double', (n) => n * 2)], [])
    const split = {
      self: 'A',
      peerOf: (operator: string) => (operator === 'double' ? 'B' : 'A'),
      connect: () => {
        throw new Error('unused')
      },
    }
    expect(fuseChains(same, split).operators.map((o) => o.name)).toEqual(['numbers', 'inc', 'double', 'out'])
    expect(fuseChains(same).operators.map((o) => o.name)).toEqual(['numbers', 'out', 'inc+double'])
  })

  it('runs unfused with fuse: false', async () => {
    const out: number[] = []
    const job = kernel.run(chain([fn('inc', (n) => n + 1), fn('double', (n) => n * 2)], out), { fuse: false })
    await job.done
    expect(out).toEqual([4, 6, 8])
    expect(job.program.operators).toHaveLength(4)
  })
})
