import { describe, expect, it } from 'vitest'
import { atom, broadcast, hash, InvalidProgramError, link, makeLink, map, program, sink, source, t, type LaminaError } from 'lamina'

const Word = t.type({ word: t.string })

function problemsOf(build: () => unknown): LaminaError[] {
  try {
    build()
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidProgramError)
    expect((error as InvalidProgramError).code).toBe('ERR_INVALID_PROGRAM')
    return [...(error as InvalidProgramError).problems]
  }
  throw new Error('expected the program to be refused')
}

describe('program validation', () => {
  const numbers = source('numbers', t.number, [1, 2, 3])
  const words = sink('words', Word, [])

  it('refuses linked ports whose types disagree, naming both ports', () => {
    const problems = problemsOf(() => program('p', { operators: [numbers, words], links: [makeLink({ operator: 'numbers', port: 'out' }, { operator: 'words', port: 'in' })] }))
    expect(problems.map((p) => p.code)).toEqual(['ERR_PORT_TYPE_MISMATCH'])
    expect(problems[0]!.message).toContain('numbers.out')
    expect(problems[0]!.message).toContain('words.in')
    expect(problems[0]!.message).toContain('number')
    expect(problems[0]!.message).toContain('{ word: string }')
  })

  it('refuses an input port that nothing feeds', () => {
    const problems = problemsOf(() => program('p', { operators: [numbers, words], links: [] }))
    expect(problems.map((p) => p.code)).toEqual(['ERR_DANGLING_INPUT'])
    expect(problems[0]!.message).toContain('words.in')
  })

  it('refuses duplicate operator names', () => {
    const out = sink('out', t.number, [])
    const problems = problemsOf(() => program('p', { operators: [numbers, numbers, out], links: [link(numbers.outputs.out, out.inputs.in)] }))
    expect(problems.map((p) => p.code)).toContain('ERR_DUPLICATE_OPERATOR')
  })

  it('refuses links to unknown operators and ports', () => {
    const out = sink('out', t.number, [])
    const problems = problemsOf(() =>
      program('p', {
        operators: [numbers, out],
        links: [
          link(numbers.outputs.out, out.inputs.in),
          makeLink({ operator: 'ghost', port: 'out' }, { operator: 'out', port: 'in' }),
          makeLink({ operator: 'numbers', port: 'nope' }, { operator: 'out', port: 'in' }),
          makeLink({ operator: 'numbers', port: 'out' }, { operator: 'out', port: 'missing' }),
        ],
      }),
    )
    expect(problems.map((p) => p.code)).toEqual(['ERR_UNKNOWN_OPERATOR', 'ERR_UNKNOWN_PORT', 'ERR_UNKNOWN_PORT'])
    expect(problems[1]!.message).toContain('no output port "nope"')
    expect(problems[2]!.message).toContain('no input port "missing"')
  })

  it('refuses partitionings that break keyed state', () => {
    const counter = atom({
      name: 'counter',
      inputs: { in: t.number },
      key: (n) => n % 3,
      state: { codec: t.number, init: () => 0 },
      on: { in: (_n, ctx) => void ctx.state.update((c) => c + 1) },
      annotations: { parallelism: 2 },
    })
    const plain = sink('plain', t.number, [])
    const problems = problemsOf(() =>
      program('p', {
        operators: [numbers, counter, plain],
        links: [link(numbers.outputs.out, counter.inputs.in, { partitioning: broadcast() }), link(numbers.outputs.out, plain.inputs.in, { partitioning: hash() })],
      }),
    )
    expect(problems.map((p) => p.code)).toEqual(['ERR_INVALID_OPTION', 'ERR_INVALID_OPTION'])
    expect(problems[0]!.message).toContain('counter is keyed')
    expect(problems[1]!.message).toContain('plain is not keyed')
  })

  it('lists every problem at once', () => {
    const problems = problemsOf(() => program('p', { operators: [numbers, words, words], links: [] }))
    expect(problems.map((p) => p.code).sort()).toEqual(['ERR_DANGLING_INPUT', 'ERR_DUPLICATE_OPERATOR'])
  })

  it('refuses bad option values with a typed error', () => {
    expect(() => numbers.annotate({ parallelism: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    const out = sink('out', t.number, [])
    expect(() => link(numbers.outputs.out, out.inputs.in, { capacity: -1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => source('bad name', t.number, [])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})

describe('values', () => {
  const double = map('double', t.number, t.number, (n) => n * 2)

  it('operators are immutable and transform into new values', () => {
    expect(Object.isFrozen(double)).toBe(true)
    const wide = double.annotate({ parallelism: 4 })
    expect(wide).not.toBe(double)
    expect(wide.annotations.parallelism).toBe(4)
    expect(double.annotations.parallelism).toBeUndefined()
    const renamed = double.rename('twice')
    expect(renamed.name).toBe('twice')
    expect(renamed.outputs.out.operator).toBe('twice')
  })

  it('programs describe themselves as JSON, text and dot', () => {
    const numbers = source('numbers', t.number, [1])
    const out = sink('out', t.number, [])
    const p = program('doubling', {
      operators: [numbers, double, out],
      links: [link(numbers.outputs.out, double.inputs.in), link(double.outputs.out, out.inputs.in, { capacity: 16 })],
    })
    expect(JSON.parse(JSON.stringify(p))).toEqual({
      name: 'doubling',
      operators: [
        { name: 'numbers', form: 'atom', role: 'source', inputs: {}, outputs: { out: 'number' }, keyed: false, state: 'number', annotations: { replay: 'skip' } },
        { name: 'double', form: 'atom', role: 'transform', inputs: { in: 'number' }, outputs: { out: 'number' }, keyed: false, annotations: {} },
        { name: 'out', form: 'atom', role: 'sink', inputs: { in: 'number' }, outputs: {}, keyed: false, annotations: {} },
      ],
      links: [
        { from: 'numbers.out', to: 'double.in', partitioning: 'default' },
        { from: 'double.out', to: 'out.in', partitioning: 'default', capacity: 16 },
      ],
    })
    expect(p.toString()).toContain('out -> double.in')
    expect(p.toDot()).toContain('"numbers" -> "double"')
  })

  it('program edits return new validated programs', () => {
    const numbers = source('numbers', t.number, [1])
    const out = sink('out', t.number, [])
    const p = program('p', { operators: [numbers, out], links: [link(numbers.outputs.out, out.inputs.in)] })
    const wider = p.mapOperators((o) => (o.name === 'out' ? o.annotate({ parallelism: 2 }) : o))
    expect(wider.operator('out')?.annotations.parallelism).toBe(2)
    expect(p.operator('out')?.annotations.parallelism).toBeUndefined()
    expect(() => p.withoutOperator('numbers')).toThrow(InvalidProgramError)
  })
})
