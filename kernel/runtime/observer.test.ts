// The public pieces of the atom runtime: a layer watching the record loop (InstanceSpec.observer),
// an atom run on services of one's own (atomInstance), and the state store's changes.

import { describe, expect, it } from 'vitest'
import {
  atom,
  atomInstance,
  kernel,
  link,
  makeLink,
  program,
  sink,
  source,
  StateStore,
  t,
  type AtomBody,
  type AtomServices,
  type Header,
  type InstanceInfo,
  type Key,
  type Layer,
  type LaminaError,
  type Where,
} from 'lamina'

/** Counts words per key; `end` emits every count, reading the state with `entries()`. */
const counter = atom({
  name: 'count',
  inputs: { in: t.string },
  outputs: { out: t.type({ word: t.string, n: t.number }) },
  key: (word) => word,
  state: { codec: t.number, init: () => 0 },
  on: {
    in: (word, ctx) => {
      if (word === 'boom') throw new Error('boom')
      ctx.state.update((n) => n + 1)
      // A read of another key's state inside a record is not reported.
      ctx.state.of('pear')
    },
  },
  end: (ctx) => {
    for (const [word, n] of ctx.state.entries()) ctx.emit('out', { word: String(word), n })
  },
})

describe('a layer watching the record loop', () => {
  it('is told the index and key of each record reaching its handler, and which keys end reads', async () => {
    const records: [string, number, Key | undefined][] = []
    const keys: (Key | undefined)[] = []
    let batches = 0
    const watcher: Layer = {
      name: 'watcher',
      instance: (spec, next) => {
        if (spec.operator.name !== 'count') return next(spec)
        return next({
          ...spec,
          observer: {
            batch: (port) => {
              // Watch every other batch: the others cost nothing more.
              if (batches++ % 2 === 1) return undefined
              return (index, key) => records.push([port, index, key])
            },
            stateKey: (key) => keys.push(key),
          },
        })
      },
    }
    // The source's values are unknown: the counter's codec check refuses the number (index 1).
    const src = source('src', t.unknown, ['fig', 7, 'boom', 'fig', 'pear', 'kiwi'])
    const out: { word: string; n: number }[] = []
    const into = sink('out', t.type({ word: t.string, n: t.number }), out)
    const p = program('p', {
      operators: [src, counter, into],
      links: [makeLink({ operator: 'src', port: 'out' }, { operator: 'count', port: 'in' }), link(counter.outputs.out, into.inputs.in)],
    })
    const report = await kernel.with(watcher).run(p, { batchSize: 3 }).done
    expect(report.deadLetters.map((d) => d.code)).toEqual(['ERR_DECODE', 'ERR_HANDLER'])
    // The first batch ['fig', 7, 'boom'] is watched, the second ['fig', 'pear', 'kiwi'] is not; a record whose handler fails is reported before it runs.
    expect(records).toEqual([
      ['in', 0, 'fig'],
      ['in', 2, 'boom'],
    ])
    expect(out).toEqual([
      { word: 'fig', n: 2 },
      { word: 'pear', n: 1 },
      { word: 'kiwi', n: 1 },
    ])
    expect(keys).toEqual(['fig', 'pear', 'kiwi', undefined])
  })
})

/** Services of a test's own: emissions, dead letters and timers are recorded. */
function services(info: InstanceInfo): AtomServices & { letters: { code: string; value: unknown; record: number | undefined; where: Where }[] } {
  const letters: { code: string; value: unknown; record: number | undefined; where: Where }[] = []
  return {
    info,
    letters,
    stopSignal: new AbortController().signal,
    checkedPorts: new Set(['in']),
    flush: () => Promise.resolve(),
    request: () => Promise.reject(new Error('no requests here')),
    timer: () => ({ cancel: () => undefined }),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    spawn: () => {
      throw new Error('no children here')
    },
    call: (name) => Promise.resolve(`called ${name}`),
    deadLetter: (where: Where, error: LaminaError, value: unknown, record?: number) => void letters.push({ code: error.code, value, record, where }),
    emitted: () => undefined,
  }
}

describe('atomInstance', () => {
  const info: InstanceInfo = { job: 'j', lineage: 'j', operator: 'count', instance: 0, parallelism: 1, batchSize: 16 }

  it('runs an atom on services of its own: the same loop, ctx, state and dead letters as in a job', async () => {
    const emitted: [string, unknown, Header | undefined][] = []
    const own = services(info)
    const state = new StateStore('count', (counter.body as AtomBody).state, true, { trackChanges: true })
    const instance = atomInstance({ info, operator: counter, outputs: { emit: (port, value, header) => void emitted.push([port, value, header]) } }, own, { state })
    await instance.start()
    await instance.process('in', { values: ['fig', 3, 'boom', 'fig'] })
    expect(own.letters.map((l) => [l.code, l.value, l.record])).toEqual([
      ['ERR_DECODE', 3, 1],
      ['ERR_HANDLER', 'boom', 2],
    ])
    // Only the keys read or written since the last look: 'fig' (updated) and 'pear' (read); 'boom' failed before touching its state.
    expect(state.takeChanges()).toEqual({
      set: [
        ['fig', 2],
        ['pear', 0],
      ],
      deleted: [],
    })
    expect(state.takeChanges()).toBeUndefined()
    await instance.end()
    expect(emitted).toEqual([
      ['out', { word: 'fig', n: 2 }, undefined],
      ['out', { word: 'pear', n: 0 }, undefined],
    ])
    expect(instance.snapshot()).toEqual({
      operator: 'count',
      entries: [
        ['fig', 2],
        ['pear', 0],
      ],
      codec: 'number',
    })
  })

  it('records a refused value without a record index, and answers requests through their reply path', async () => {
    const refusing = atom({
      name: 'refusing',
      inputs: { in: t.number },
      on: {
        in: (n, ctx) => {
          if (n < 0) ctx.reject(n, 'negative')
          return n * 2
        },
      },
    })
    const own = services({ ...info, operator: 'refusing' })
    const replies: unknown[] = []
    const reply: Header = { reply: (outcome) => void replies.push(outcome) }
    const instance = atomInstance({ info: own.info, operator: refusing, outputs: { emit: () => undefined } }, own)
    await instance.process('in', { values: [-1, 4], headers: [undefined, reply] })
    expect(own.letters.map((l) => [l.code, l.value, l.record])).toEqual([['ERR_REJECTED', -1, undefined]])
    expect(replies).toEqual([{ ok: true, value: 8 }])
  })
})

describe('StateStore', () => {
  it('tracks the keys read, written and deleted since the last look, encoded by the state codec', () => {
    const dates = t.type({ at: t.number })
    const state = new StateStore<{ at: number }>('s', { codec: dates, init: () => ({ at: 0 }) }, true, { trackChanges: true })
    state.current = 'a'
    state.set({ at: 1 })
    state.current = 'b'
    state.get().at = 5 // a value read may be mutated in place
    expect(state.takeChanges()).toEqual({
      set: [
        ['a', { at: 1 }],
        ['b', { at: 5 }],
      ],
      deleted: [],
    })
    state.delete()
    expect(state.takeChanges()).toEqual({ set: [], deleted: ['b'] })
    state.current = undefined
    for (const entry of state.entries()) void entry
    expect(state.takeChanges()).toEqual({ set: [['a', { at: 1 }]], deleted: [] })
    state.current = 'c'
    state.update((v) => v)
    state.restore({ operator: 's', entries: [['z', { at: 9 }]] })
    expect(state.takeChanges()).toBeUndefined()
  })

  it('shows an unkeyed slot as null, and tells reads outside a record to stateKey', () => {
    const told: (Key | undefined)[] = []
    const slot = new StateStore<number>('s', { codec: t.number, init: () => 1 }, false, { trackChanges: true })
    slot.update((n) => n + 1)
    expect(slot.takeChanges()).toEqual({ set: [[null, 2]], deleted: [] })
    const keyed = new StateStore<number>('k', { codec: t.number, init: () => 0 }, true, { stateKey: (key) => told.push(key) })
    keyed.current = 'x'
    keyed.set(1)
    keyed.of('y') // inside a record: not told
    keyed.current = undefined
    keyed.of('x')
    for (const entry of keyed.entries()) void entry
    expect(told).toEqual(['x', 'x', 'y', undefined])
  })
})
