import { firstValueFrom, from, interval, map as rxMap, mergeMap, Subject, take, toArray } from 'rxjs'
import { describe, expect, it } from 'vitest'
import {
  atom,
  broadcast,
  filter,
  flatMap,
  forward,
  hash,
  instanceOfKey,
  kernel,
  link,
  map,
  program,
  roundRobin,
  sink,
  source,
  stream,
  t,
  type Operator,
  type Partitioning,
} from 'lamina'

/** An operator with `parallelism` instances that tags each value with the instance that saw it. */
function tagger(parallelism: number) {
  return atom({
    name: 'tag',
    inputs: { in: t.number },
    outputs: { out: t.tuple([t.number, t.number]) },
    on: { in: (n, ctx) => ctx.emit('out', [ctx.info.instance, n]) },
    annotations: { parallelism },
  })
}

async function route(partitioning: Partitioning, values: number[], parallelism = 3): Promise<[number, number][]> {
  const numbers = source('numbers', t.number, values)
  const tag = tagger(parallelism)
  const out: [number, number][] = []
  const into = sink('out', t.tuple([t.number, t.number]), out)
  await kernel.run(
    program('routing', {
      operators: [numbers, tag, into],
      links: [link(numbers.outputs.out, tag.inputs.in, { partitioning }), link(tag.outputs.out, into.inputs.in)],
    }),
    { batchSize: 7 },
  ).done
  return out
}

const values = Array.from({ length: 300 }, (_, i) => i)

describe('partitioning', () => {
  it('hash sends every record of a key to the instance owning its key group', async () => {
    const out = await route(
      hash((n: number) => n % 10),
      values,
    )
    expect(out).toHaveLength(300)
    for (const [instance, n] of out) expect(instance).toBe(instanceOfKey(n % 10, 3))
    expect(new Set(out.map(([i]) => i)).size).toBeGreaterThan(1)
  })

  it('broadcast sends every record to every instance', async () => {
    const out = await route(broadcast(), values)
    expect(out).toHaveLength(900)
    for (const instance of [0, 1, 2]) expect(out.filter(([i]) => i === instance).map(([, n]) => n)).toEqual(values)
  })

  it('round robin spreads records evenly', async () => {
    const out = await route(roundRobin(), values)
    expect(out).toHaveLength(300)
    for (const instance of [0, 1, 2]) expect(out.filter(([i]) => i === instance)).toHaveLength(100)
  })

  it('forward keeps instance i feeding instance i, in order', async () => {
    const numbers = source('numbers', t.number, values, { annotations: { parallelism: 3 } })
    const tag = tagger(3)
    const out: [number, number][] = []
    const into = sink('out', t.tuple([t.number, t.number]), out)
    await kernel.run(
      program('forwarding', {
        operators: [numbers, tag, into],
        links: [link(numbers.outputs.out, tag.inputs.in, { partitioning: forward() }), link(tag.outputs.out, into.inputs.in)],
      }),
    ).done
    for (const instance of [0, 1, 2]) {
      // Source instance i reads values i, i+3, …: forward delivers exactly those to tag[i], in order.
      expect(out.filter(([i]) => i === instance).map(([, n]) => n)).toEqual(values.filter((v) => v % 3 === instance))
    }
  })

  it('keyed operators with parallelism keep per-key state exact', async () => {
    const counter = atom({
      name: 'counter',
      inputs: { in: t.number },
      outputs: { out: t.tuple([t.number, t.number]) },
      key: (n) => n % 17,
      state: { codec: t.number, init: () => 0 },
      on: { in: (_n, ctx) => void ctx.state.update((c) => c + 1) },
      end: (ctx) => {
        for (const [key, count] of ctx.state.entries()) ctx.emit('out', [Number(key), count])
      },
      annotations: { parallelism: 4 },
    })
    const numbers = source(
      'numbers',
      t.number,
      Array.from({ length: 17_000 }, (_, i) => i),
    )
    const out: [number, number][] = []
    const into = sink('out', t.tuple([t.number, t.number]), out)
    await kernel.run(program('counting', { operators: [numbers, counter, into], links: [link(numbers.outputs.out, counter.inputs.in), link(counter.outputs.out, into.inputs.in)] }))
      .done
    expect(out.sort((a, b) => a[0] - b[0])).toEqual(Array.from({ length: 17 }, (_, k) => [k, 1000]))
  })
})

describe('backpressure', () => {
  it('keeps memory bounded when a fast source feeds a slow operator', async () => {
    const capacity = 64
    const batchSize = 16
    let produced = 0
    function* endless(): Generator<number> {
      for (let i = 0; i < 20_000; i++) {
        produced++
        yield i
      }
    }
    let seen = 0
    let mostAhead = 0
    const slow = atom({
      name: 'slow',
      inputs: { in: t.number },
      outputs: { out: t.number },
      on: {
        in: async (n, ctx) => {
          seen++
          // The source may be ahead of this operator only by what the channels and buffers hold.
          mostAhead = Math.max(mostAhead, produced - seen)
          if (n % 100 === 0) await ctx.sleep(1)
          ctx.emit('out', n)
        },
      },
    })
    const numbers = source('numbers', t.number, endless())
    let total = 0
    const into = sink('out', t.number, () => void total++)
    const job = kernel.run(
      program('backpressure', {
        operators: [numbers, slow, into],
        links: [link(numbers.outputs.out, slow.inputs.in, { capacity }), link(slow.outputs.out, into.inputs.in, { capacity })],
      }),
      { batchSize },
    )
    const report = await job.done
    expect(total).toBe(20_000)
    for (const channel of report.stats.channels) expect(channel.maxQueued).toBeLessThanOrEqual(capacity + batchSize)
    // Queued in the channel, plus the batch being handled, plus the source's unsent batch.
    expect(mostAhead).toBeLessThanOrEqual(capacity + 3 * batchSize)
  })
})

describe('sources and sinks', () => {
  const Num = t.number
  async function collect(input: Operator<Record<never, never>, { out: typeof Num }>): Promise<number[]> {
    const out: number[] = []
    const into = sink('out', Num, out)
    await kernel.run(program('p', { operators: [input, into], links: [link(input.outputs.out, into.inputs.in)] })).done
    return out
  }

  it('read arrays, iterables, async iterables, Observables and partition functions', async () => {
    expect(await collect(source('a', Num, [1, 2, 3]))).toEqual([1, 2, 3])
    expect(await collect(source('s', Num, new Set([4, 5])))).toEqual([4, 5])
    async function* slowly(): AsyncGenerator<number> {
      for (const n of [6, 7, 8]) {
        await new Promise((resolve) => setImmediate(resolve))
        yield n
      }
    }
    expect(await collect(source('g', Num, slowly()))).toEqual([6, 7, 8])
    expect(await collect(source('o', Num, interval(1).pipe(take(5))))).toEqual([0, 1, 2, 3, 4])
    const parts = await collect(source('f', Num, ({ instance }) => [instance * 10, instance * 10 + 1], { annotations: { parallelism: 2 } }))
    expect(parts.sort((a, b) => a - b)).toEqual([0, 1, 10, 11])
  })

  it('send a partial batch of a slow async source after the linger time', async () => {
    let release: () => void = () => undefined
    const gate = new Promise<void>((resolve) => (release = resolve))
    async function* stalling(): AsyncGenerator<number> {
      yield 1
      await gate // the source stalls until the sink has seen 1
      yield 2
    }
    const numbers = source('numbers', Num, stalling(), { lingerMs: 2 })
    const arrived: number[] = []
    const into = sink('out', Num, (n: number) => {
      arrived.push(n)
      release()
    })
    await kernel.run(program('p', { operators: [numbers, into], links: [link(numbers.outputs.out, into.inputs.in)] })).done
    // 1 arrived alone although its batch was not full and the source had not ended: else a deadlock.
    expect(arrived).toEqual([1, 2])
  })

  it('deliver to callbacks and Observers, completing the Observer at the end', async () => {
    const subject = new Subject<number>()
    const all = firstValueFrom(subject.pipe(toArray()))
    const numbers = source('numbers', Num, [1, 2, 3])
    const into = sink('out', Num, subject)
    await kernel.run(program('p', { operators: [numbers, into], links: [link(numbers.outputs.out, into.inputs.in)] })).done
    expect(await all).toEqual([1, 2, 3])
  })

  it('record a failing source as a dead letter and end the stream', async () => {
    function* broken(): Generator<number> {
      yield 1
      throw new Error('disk on fire')
    }
    const out: number[] = []
    const numbers = source('numbers', Num, broken())
    const into = sink('out', Num, out)
    const report = await kernel.run(program('p', { operators: [numbers, into], links: [link(numbers.outputs.out, into.inputs.in)] })).done
    expect(out).toEqual([1])
    expect(report.deadLetters.map((d) => [d.code, d.where.operator])).toEqual([['ERR_SOURCE', 'numbers']])
    expect(report.deadLetters[0]!.message).toContain('disk on fire')
  })
})

describe('operators', () => {
  it('run the stream form over rxjs, and the built-in map, filter and flatMap', async () => {
    const words = stream({
      name: 'words',
      inputs: { in: t.string },
      outputs: { out: t.string, lengths: t.number },
      body: ({ in: lines }) => ({
        out: lines.pipe(mergeMap((line) => from(line.split(' ')))),
        lengths: lines.pipe(rxMap((line) => line.length)),
      }),
    })
    const lines = source('lines', t.string, ['a bb', 'ccc'])
    const upper = map('upper', t.string, t.string, (w) => w.toUpperCase())
    const long = filter('long', t.string, (w) => w.length > 1)
    const letters = flatMap('letters', t.string, t.string, (w) => w)
    const out: string[] = []
    const lengths: number[] = []
    const into = sink('out', t.string, out)
    const lengthsOut = sink('lengthsOut', t.number, lengths)
    await kernel.run(
      program('p', {
        operators: [lines, words, upper, long, letters, into, lengthsOut],
        links: [
          link(lines.outputs.out, words.inputs.in),
          link(words.outputs.out, upper.inputs.in),
          link(upper.outputs.out, long.inputs.in),
          link(long.outputs.out, letters.inputs.in),
          link(letters.outputs.out, into.inputs.in),
          link(words.outputs.lengths, lengthsOut.inputs.in),
        ],
      }),
    ).done
    expect(out).toEqual(['B', 'B', 'C', 'C', 'C'])
    expect(lengths).toEqual([4, 3])
  })

  it('restart a stream body after its pipeline errors, recording the record that broke it', async () => {
    const fragile = stream({
      name: 'fragile',
      inputs: { in: t.number },
      outputs: { out: t.number },
      body: ({ in: numbers }) => ({
        out: numbers.pipe(
          rxMap((n) => {
            if (n === 2) throw new Error('two')
            return n * 10
          }),
        ),
      }),
    })
    const numbers = source('numbers', t.number, [1, 2, 3])
    const out: number[] = []
    const into = sink('out', t.number, out)
    const report = await kernel.run(
      program('p', { operators: [numbers, fragile, into], links: [link(numbers.outputs.out, fragile.inputs.in), link(fragile.outputs.out, into.inputs.in)] }),
    ).done
    expect(out).toEqual([10, 30])
    expect(report.deadLetters.map((d) => [d.code, d.value])).toEqual([['ERR_HANDLER', 2]])
  })

  it('counts emissions on unlinked ports instead of dropping them silently', async () => {
    const split = atom({
      name: 'split',
      inputs: { in: t.number },
      outputs: { even: t.number, odd: t.number },
      on: { in: (n, ctx) => ctx.emit(n % 2 === 0 ? 'even' : 'odd', n) },
    })
    const numbers = source('numbers', t.number, [1, 2, 3, 4, 5])
    const evens: number[] = []
    const into = sink('out', t.number, evens)
    const report = await kernel.run(
      program('p', { operators: [numbers, split, into], links: [link(numbers.outputs.out, split.inputs.in), link(split.outputs.even, into.inputs.in)] }),
    ).done
    expect(evens).toEqual([2, 4])
    expect(report.stats.instances.find((i) => i.operator === 'split')?.unlinked).toBe(3)
  })
})

describe('shutdown', () => {
  function endless(): Operator<Record<never, never>, { out: t.NumberC }> {
    return source(
      'endless',
      t.number,
      (function* () {
        for (let i = 0; ; i++) yield i
      })(),
    )
  }

  it('stop() drains and finishes a job whose source never ends', async () => {
    let seen = 0
    const numbers = endless()
    const into = sink('out', t.number, () => void seen++)
    const job = kernel.run(program('p', { operators: [numbers, into], links: [link(numbers.outputs.out, into.inputs.in)] }))
    await new Promise<void>((resolve) => {
      const sub = job.events.subscribe(() => undefined)
      const poll = setInterval(() => {
        if (seen > 10_000) {
          clearInterval(poll)
          sub.unsubscribe()
          resolve()
        }
      }, 1)
    })
    const report = await job.stop()
    const produced = report.stats.instances.find((i) => i.operator === 'endless')!.recordsOut
    // Everything the source sent reached the sink: a graceful stop loses nothing in flight.
    expect(seen).toBe(produced)
  })

  it('abort() rejects with a typed error and stops every operator', async () => {
    const numbers = endless()
    const into = sink('out', t.number, () => undefined)
    const controller = new AbortController()
    const job = kernel.run(program('p', { operators: [numbers, into], links: [link(numbers.outputs.out, into.inputs.in)] }), { signal: controller.signal })
    const finished: string[] = []
    job.events.subscribe((e) => {
      if (e.type === 'failed') finished.push(e.error.code)
    })
    setImmediate(() => controller.abort('test over'))
    await expect(job.done).rejects.toMatchObject({ code: 'ERR_JOB_ABORTED' })
    expect(finished).toEqual(['ERR_JOB_ABORTED'])
  })

  it('propagates end of stream through every operator', async () => {
    const events: string[] = []
    const numbers = source('numbers', t.number, [1, 2])
    const mid = atom({ name: 'mid', inputs: { in: t.number }, outputs: { out: t.number }, on: { in: (n, ctx) => ctx.emit('out', n) }, end: () => void events.push('mid end') })
    const into = sink('out', t.number, { next: () => undefined, complete: () => void events.push('sink complete') })
    const job = kernel.run(program('p', { operators: [numbers, mid, into], links: [link(numbers.outputs.out, mid.inputs.in), link(mid.outputs.out, into.inputs.in)] }))
    job.events.subscribe((e) => {
      if (e.type === 'instance-finished') events.push(`${e.operator} finished`)
    })
    await job.done
    expect(events).toEqual(['numbers finished', 'mid end', 'mid finished', 'sink complete', 'out finished'])
  })
})
