import { describe, expect, it } from 'vitest'
import { atom, InvalidProgramError, kernel, link, makeLink, map, program, sink, source, t, type DeadLetter } from 'lamina'

const Word = t.type({ word: t.string })

function counting(values: unknown[], out: string[]) {
  // A source of unknown values feeding a typed port: exactly what arrives from outside a program.
  const raw = source('raw', t.unknown, values)
  const count = atom({
    name: 'count',
    inputs: { in: Word },
    outputs: { out: t.string },
    on: {
      in: (w, ctx) => {
        if (w.word === 'boom') throw new Error('cannot count boom')
        ctx.emit('out', w.word)
      },
    },
  })
  const into = sink('out', t.string, out)
  return program('dl', {
    operators: [raw, count, into],
    links: [makeLink({ operator: 'raw', port: 'out' }, { operator: 'count', port: 'in' }), link(count.outputs.out, into.inputs.in)],
  })
}

describe('dead letters', () => {
  it('record a value of the wrong type with its codec path, and process the rest', async () => {
    const out: string[] = []
    const seen: DeadLetter[] = []
    const report = await kernel.run(counting([{ word: 'a' }, { word: 42 }, { word: 'b' }, 'nope', { word: 'c' }], out), { onDeadLetter: (d) => seen.push(d) }).done
    expect(out).toEqual(['a', 'b', 'c'])
    expect(report.deadLetters.map((d) => d.code)).toEqual(['ERR_DECODE', 'ERR_DECODE'])
    expect(report.deadLetters[0]!.message).toBe('count.in: .word expected string, got 42')
    expect(report.deadLetters[0]!.value).toEqual({ word: 42 })
    expect(report.deadLetters[0]!.where).toEqual({ operator: 'count', port: 'in', instance: 0 })
    expect(report.deadLetters[1]!.message).toBe('count.in: expected { word: string }, got "nope"')
    expect(seen).toEqual(report.deadLetters)
  })

  it('render nested paths into arrays', async () => {
    const Doc = t.type({ lines: t.array(t.type({ n: t.number })) })
    const raw = source('raw', t.unknown, [{ lines: [{ n: 1 }, { n: 2 }, { n: 'three' }] }])
    const doc = sink('doc', Doc, [])
    const report = await kernel.run(program('p', { operators: [raw, doc], links: [makeLink({ operator: 'raw', port: 'out' }, { operator: 'doc', port: 'in' })] })).done
    expect(report.deadLetters[0]!.message).toBe('doc.in: .lines[2].n expected number, got "three"')
  })

  it('record a handler that throws, and go on', async () => {
    const out: string[] = []
    const report = await kernel.run(counting([{ word: 'a' }, { word: 'boom' }, { word: 'b' }], out)).done
    expect(out).toEqual(['a', 'b'])
    expect(report.deadLetters.map((d) => d.code)).toEqual(['ERR_HANDLER'])
    expect(report.deadLetters[0]!.message).toContain('count[0].in: handler threw: cannot count boom')
    expect(report.deadLetters[0]!.value).toEqual({ word: 'boom' })
  })

  it('fail the job at the first dead letter under the fail policy', async () => {
    const job = kernel.run(counting([{ word: 'a' }, { word: 42 }], []), { deadLetters: 'fail' })
    await expect(job.done).rejects.toMatchObject({ code: 'ERR_JOB_FAILED', cause: { code: 'ERR_DECODE' } })
    expect(job.deadLetters).toHaveLength(1)
  })

  it('stop the job when dead letters pass the limit', async () => {
    const job = kernel.run(
      counting(
        Array.from({ length: 50 }, () => ({ word: 0 })),
        [],
      ),
      { deadLetterLimit: 10 },
    )
    await expect(job.done).rejects.toMatchObject({ code: 'ERR_JOB_FAILED', cause: { code: 'ERR_DEAD_LETTER_LIMIT' } })
  })

  it('record values an operator rejects on purpose', async () => {
    const picky = atom({ name: 'picky', inputs: { in: t.number }, on: { in: (n, ctx) => (n < 0 ? ctx.reject(n, 'negative') : undefined) } })
    const numbers = source('numbers', t.number, [1, -1, 2])
    const report = await kernel.run(program('p', { operators: [numbers, picky], links: [link(numbers.outputs.out, picky.inputs.in)] })).done
    expect(report.deadLetters.map((d) => [d.code, d.value, d.message])).toEqual([['ERR_REJECTED', -1, 'picky rejected a value: negative']])
  })

  it('record values whose partitioning key cannot be computed', async () => {
    const raw = source('raw', t.unknown, [{ word: 'a' }, null, { word: 'b' }])
    const count = atom({
      name: 'count',
      inputs: { in: Word },
      key: (w) => w.word,
      state: { codec: t.number, init: () => 0 },
      on: { in: (_w, ctx) => void ctx.state.update((n) => n + 1) },
      annotations: { parallelism: 2 },
    })
    const report = await kernel.run(program('p', { operators: [raw, count], links: [makeLink({ operator: 'raw', port: 'out' }, { operator: 'count', port: 'in' })] })).done
    expect(report.deadLetters.map((d) => [d.code, d.value])).toEqual([['ERR_HANDLER', null]])
    expect(report.deadLetters[0]!.message).toContain('cannot compute the partitioning key for raw.out -> count.in')
  })

  it('a program with mismatched port types is refused before anything runs', () => {
    let ran = false
    const numbers = source(
      'numbers',
      t.number,
      (function* () {
        ran = true
        yield 1
      })(),
    )
    const words = sink('words', Word, [])
    expect(() => program('p', { operators: [numbers, words], links: [makeLink({ operator: 'numbers', port: 'out' }, { operator: 'words', port: 'in' })] })).toThrow(
      InvalidProgramError,
    )
    expect(ran).toBe(false)
  })

  it('check values where they enter the program, where codecs change, or everywhere under "always"', async () => {
    // A source whose values do not fit its own codec: checked at the first input they reach.
    const liar = source('liar', t.number, [1, 'two' as unknown as number, 3])
    // An operator that lies about its output type (a cast TypeScript cannot see through).
    const cast = map('cast', t.number, t.number, (n) => (n === 3 ? ('three' as unknown as number) : n))
    const out: unknown[] = []
    const into = sink('out', t.number, out as number[])
    const p = program('p', { operators: [liar, cast, into], links: [link(liar.outputs.out, cast.inputs.in), link(cast.outputs.out, into.inputs.in)] })
    const edges = await kernel.run(p).done
    expect(edges.deadLetters.map((d) => d.message)).toEqual(['cast.in: expected number, got "two"'])
    expect(out).toEqual([1, 'three'])
    out.length = 0
    const always = await kernel.run(p, { validate: 'always' }).done
    expect(always.deadLetters.map((d) => d.message)).toEqual(['cast.in: expected number, got "two"', 'out.in: expected number, got "three"'])
    expect(out).toEqual([1])
    out.length = 0
    const none = await kernel.run(p, { validate: 'none' }).done
    expect(none.deadLetters).toEqual([])
    expect(out).toEqual([1, 'two', 'three'])
  })
})
