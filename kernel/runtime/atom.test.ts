import { describe, expect, it } from 'vitest'
import { atom, kernel, link, program, sink, source, t, type Layer, type Operator, type StateSnapshot } from 'lamina'

function pipeline(from: Operator, through: Operator, out: unknown[]) {
  const into = sink('out', t.unknown, out)
  return program('p', {
    operators: [from, through, into],
    links: [link(from.outputs['out']!, through.inputs['in']!), link(through.outputs['out']!, into.inputs.in)],
  })
}

describe('atoms', () => {
  it('handle one message at a time, even when handlers await', async () => {
    let active = 0
    let most = 0
    const slow = atom({
      name: 'slow',
      inputs: { in: t.number },
      outputs: { out: t.number },
      on: {
        in: async (n, ctx) => {
          active++
          most = Math.max(most, active)
          await ctx.sleep(1)
          active--
          ctx.emit('out', n)
        },
      },
    })
    const out: unknown[] = []
    await kernel.run(pipeline(source('numbers', t.number, [1, 2, 3, 4, 5, 6, 7, 8]), slow, out), { batchSize: 3 }).done
    expect(most).toBe(1)
    expect(out).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
  })

  it('keep codec-typed state per key, and snapshot and restore it', async () => {
    let snapshot: StateSnapshot | undefined
    const counter = atom({
      name: 'counter',
      inputs: { in: t.string },
      outputs: { out: t.tuple([t.string, t.number]) },
      key: (word) => word,
      state: { codec: t.number, init: () => 0 },
      on: { in: (_w, ctx) => void ctx.state.update((n) => n + 1) },
      end: (ctx) => {
        for (const [key, n] of ctx.state.entries()) ctx.emit('out', [String(key), n])
      },
    })
    // A layer reads the state through the public instance hook, as fault tolerance will.
    const snapshots: Layer = {
      name: 'snapshots',
      instance: (spec, next) => {
        const inner = next(spec)
        return {
          ...inner,
          info: inner.info,
          start: () => inner.start(),
          process: (p, b) => inner.process(p, b),
          run: () => inner.run(),
          restore: (s) => inner.restore(s),
          snapshot: () => inner.snapshot(),
          end: () => (spec.operator.name === 'counter' && (snapshot = inner.snapshot()), inner.end()),
        }
      },
    }
    const out: unknown[] = []
    await kernel.with(snapshots).run(pipeline(source('words', t.string, ['a', 'b', 'a', 'c', 'a']), counter, out)).done
    expect(new Map(out as [string, number][])).toEqual(
      new Map([
        ['a', 3],
        ['b', 1],
        ['c', 1],
      ]),
    )
    expect(snapshot?.entries).toEqual([
      ['a', 3],
      ['b', 1],
      ['c', 1],
    ])
  })

  it('refuse a snapshot that does not fit the state codec', async () => {
    let restoreError: unknown
    const counter = atom({
      name: 'counter',
      inputs: { in: t.string },
      outputs: { out: t.number },
      key: (w) => w,
      state: { codec: t.number, init: () => 0 },
      on: { in: () => undefined },
    })
    const restoring: Layer = {
      name: 'restoring',
      instance: (spec, next) => {
        const inner = next(spec)
        if (spec.operator.name === 'counter')
          try {
            inner.restore({ operator: 'counter', entries: [['a', 'not a number']] })
          } catch (error) {
            restoreError = error
          }
        return inner
      },
    }
    await kernel.with(restoring).run(pipeline(source('words', t.string, ['a']), counter, [])).done
    expect(restoreError).toMatchObject({ code: 'ERR_STATE_RESTORE' })
    expect(String((restoreError as Error).message)).toContain('expected number, got "not a number"')
  })

  it('answer requests through the future table, with timeouts', async () => {
    const Ask = t.number
    const asker = atom({
      name: 'asker',
      inputs: { in: t.number },
      outputs: { out: t.string, ask: Ask },
      on: {
        in: async (n, ctx) => {
          try {
            const square = await ctx.request<number>('ask', n, { timeout: 200 })
            ctx.emit('out', `${n}^2=${square}`)
          } catch (error) {
            ctx.emit('out', `${n}:${(error as { code: string }).code}`)
          }
        },
      },
    })
    const squarer = atom({
      name: 'squarer',
      inputs: { q: Ask },
      on: {
        q: async (n, ctx) => {
          if (n === 3) await ctx.sleep(300) // too slow: the asker times out, and its request for 4 waits for this
          if (n === 4) throw new Error('four is unlucky')
          return n * n
        },
      },
    })
    const numbers = source('numbers', t.number, [1, 2, 3, 4, 5])
    const out: string[] = []
    const into = sink('out', t.string, out)
    const job = kernel.run(
      program('rpc', {
        operators: [numbers, asker, squarer, into],
        links: [link(numbers.outputs.out, asker.inputs.in), link(asker.outputs.ask, squarer.inputs.q), link(asker.outputs.out, into.inputs.in)],
      }),
    )
    const report = await job.done
    expect(out).toEqual(['1^2=1', '2^2=4', '3:ERR_REQUEST_TIMEOUT', '4:ERR_REQUEST_FAILED', '5^2=25'])
    expect(report.deadLetters.map((d) => d.code)).toEqual(['ERR_HANDLER'])
    expect(report.deadLetters[0]!.message).toContain('four is unlucky')
  })

  it('run timers as interrupts, never during a handler', async () => {
    const events: string[] = []
    const ticking = atom({
      name: 'ticking',
      inputs: { in: t.number },
      outputs: { out: t.string },
      start: (ctx) => {
        ctx.timer(5, () => {
          events.push('tick')
          ctx.emit('out', 'tick')
        })
      },
      on: {
        in: async (n, ctx) => {
          events.push(`start ${n}`)
          await ctx.sleep(20)
          events.push(`end ${n}`)
        },
      },
    })
    const out: unknown[] = []
    await kernel.run(pipeline(source('numbers', t.number, [1, 2]), ticking, out), { batchSize: 1 }).done
    expect(out).toEqual(['tick'])
    // The tick fires while `1` sleeps but runs only between messages.
    expect(events.indexOf('tick')).toBeGreaterThan(events.indexOf('end 1'))
  })

  it('refuse keyed state access outside a record', async () => {
    const keyed = atom({
      name: 'keyed',
      inputs: { in: t.string },
      outputs: { out: t.number },
      key: (w) => w,
      state: { codec: t.number, init: () => 0 },
      on: { in: () => undefined },
      end: (ctx) => void ctx.state.get(),
    })
    const report = await kernel.run(pipeline(source('words', t.string, ['a']), keyed, [])).done
    expect(
      report.deadLetters.map((d) => d.code),
      report.deadLetters[0]?.message,
    ).toEqual(['ERR_NO_KEY_IN_SCOPE'])
  })

  it('spawn children whose outputs arrive on the parent ports', async () => {
    const doubler = atom({ name: 'doubler', inputs: { in: t.number }, outputs: { out: t.number }, on: { in: (n, ctx) => ctx.emit('out', n * 2) } })
    const parent = atom({
      name: 'parent',
      inputs: { in: t.number, doubled: t.number },
      outputs: { out: t.number },
      state: { codec: t.unknown, init: (): unknown => undefined },
      start: (ctx) => {
        ctx.state.set(ctx.spawn(doubler, { outputs: { out: 'doubled' } }))
      },
      on: {
        in: async (n, ctx) => {
          await (ctx.state.get() as { send(port: string, value: number): Promise<void> }).send('in', n)
        },
        doubled: (n, ctx) => ctx.emit('out', n),
      },
    })
    // `doubled` is fed only by the child: the program links a dummy empty source to it.
    const numbers = source('numbers', t.number, [1, 2, 3])
    const none = source('none', t.number, [])
    const out: number[] = []
    const into = sink('out', t.number, out)
    await kernel.run(
      program('spawning', {
        operators: [numbers, none, parent, into],
        links: [link(numbers.outputs.out, parent.inputs.in), link(none.outputs.out, parent.inputs.doubled), link(parent.outputs.out, into.inputs.in)],
      }),
    ).done
    expect(out).toEqual([2, 4, 6])
  })

  it('reach syscalls a layer registered', async () => {
    const clock: Layer = { name: 'clock', control: (registry) => registry.syscall('now', () => 1234) }
    const stamp = atom({
      name: 'stamp',
      inputs: { in: t.number },
      outputs: { out: t.number },
      on: { in: async (n, ctx) => ctx.emit('out', n + ((await ctx.call('now')) as number)) },
    })
    const out: unknown[] = []
    await kernel.with(clock).run(pipeline(source('numbers', t.number, [1]), stamp, out)).done
    expect(out).toEqual([1235])
    const report = await kernel.run(pipeline(source('numbers', t.number, [1]), stamp, [])).done
    expect(report.deadLetters.map((d) => d.code)).toEqual(['ERR_UNKNOWN_CONTROL'])
  })
})
