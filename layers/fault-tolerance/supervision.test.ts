import { filter, firstValueFrom, timeout } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { atom, kernel, link, program, sink, source, t, type Job, type JobEvent, type Operator } from 'lamina'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { metadata } from '../metadata/index.js'
import { checkpoints } from './checkpoint.js'
import { supervise, supervision, type EscalateEventData, type RestartEventData, type SupervisionInit } from './supervision.js'

type LayerEvent = Extract<JobEvent, { type: 'layer' }>

/** Collects the layer events of a job (subscribed before it starts). */
function layerEvents(job: Job): LayerEvent[] {
  const seen: LayerEvent[] = []
  job.events.subscribe((event) => {
    if (event.type === 'layer') seen.push(event)
  })
  return seen
}

/** Resolves with the first layer event of `kind`; rejects after 5 s. */
function next(job: Job, kind: string): Promise<LayerEvent> {
  return firstValueFrom(
    job.events.pipe(
      filter((e): e is LayerEvent => e.type === 'layer' && e.kind === kind),
      timeout(5000),
    ),
  )
}

const restarts = (events: readonly LayerEvent[]): RestartEventData[] => events.filter((e) => e.kind === 'restart').map((e) => e.data as RestartEventData)
const names = (refs: readonly { operator: string; instance: number }[]): string[] => refs.map((r) => `${r.operator}[${r.instance}]`)

/** Counts `start` calls per instance: a restart starts a fresh instance. */
class Starts {
  readonly counts = new Map<string, number>()
  hit(operator: string, instance: number): void {
    const id = `${operator}[${instance}]`
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1)
  }
  of(id: string): number {
    return this.counts.get(id) ?? 0
  }
}

/** A pass-through stage that counts its starts and crashes on the values `crashOn` picks. */
function stage(name: string, starts: Starts, crashOn: (n: number) => boolean = () => false, parallelism = 1): Operator<{ in: t.NumberC }, { out: t.NumberC }> {
  return atom({
    name,
    inputs: { in: t.number },
    outputs: { out: t.number },
    onError: 'crash',
    annotations: { parallelism },
    start: (ctx) => starts.hit(name, ctx.info.instance),
    on: {
      in: (n, ctx) => {
        if (crashOn(n)) throw new Error(`cannot take ${n}`)
        ctx.emit('out', n)
      },
    },
  })
}

/** src -> a -> b -> c -> out, where b crashes on 3. */
function chain(starts: Starts, out: number[], decorate: (op: Operator<{ in: t.NumberC }, { out: t.NumberC }>) => Operator<{ in: t.NumberC }, { out: t.NumberC }> = (op) => op) {
  const src = source('src', t.number, [1, 2, 3, 4, 5])
  const a = decorate(stage('a', starts))
  const b = decorate(stage('b', starts, (n) => n === 3))
  const c = decorate(stage('c', starts))
  const into = sink('out', t.number, out)
  return program('chain', {
    operators: [src, a, b, c, into],
    links: [link(src.outputs.out, a.inputs.in), link(a.outputs.out, b.inputs.in), link(b.outputs.out, c.inputs.in), link(c.outputs.out, into.inputs.in)],
  })
}

function run(init: SupervisionInit, p: ReturnType<typeof program>): { job: Job; events: LayerEvent[] } {
  const job = kernel.with(supervision(init)).run(p)
  return { job, events: layerEvents(job) }
}

describe('supervision: strategies', () => {
  it('one-for-one restarts the crashed instance alone; its record is a dead letter and the next records go on', async () => {
    const starts = new Starts()
    const out: number[] = []
    const src = source('src', t.number, [1, 2, 3, 4, 5, 6])
    const work = stage('work', starts, (n) => n === 3, 2)
    const into = sink('out', t.number, out)
    const p = program('p', { operators: [src, work, into], links: [link(src.outputs.out, work.inputs.in), link(work.outputs.out, into.inputs.in)] })
    const { job, events } = run({ strategy: 'one-for-one' }, p)
    const report = await job.done

    expect([...out].sort()).toEqual([1, 2, 4, 5, 6])
    expect(report.deadLetters.map((d) => [d.code, d.value, d.where.operator])).toEqual([['ERR_HANDLER', 3, 'work']])
    const [restart, ...more] = restarts(events)
    expect(more).toEqual([])
    const failed = `work[${restart!.failed.instance}]`
    expect(restart).toMatchObject({ supervisor: 'root', strategy: 'one-for-one', cause: { code: 'ERR_HANDLER' }, restarts: 1, maxRestarts: 3 })
    expect(names(restart!.restarted)).toEqual([failed])
    expect(starts.of(failed)).toBe(2)
    expect(starts.of(failed === 'work[0]' ? 'work[1]' : 'work[0]')).toBe(1)
  })

  it('one-for-all restarts every instance of the supervisor (a source still producing or finished is skipped)', async () => {
    const starts = new Starts()
    const out: number[] = []
    const { job, events } = run({ strategy: 'one-for-all' }, chain(starts, out))
    await job.done

    expect(out).toEqual([1, 2, 4, 5])
    const [restart] = restarts(events)
    expect(names(restart!.restarted)).toEqual(['a[0]', 'b[0]', 'c[0]', 'out[0]'])
    expect(names(restart!.skipped)).toEqual(['src[0]'])
    expect([starts.of('a[0]'), starts.of('b[0]'), starts.of('c[0]')]).toEqual([2, 2, 2])
  })

  it('rest-for-one restarts the crashed instance and those after it in topological order', async () => {
    const starts = new Starts()
    const out: number[] = []
    // Declared out of order: the supervisor orders its children by the links, upstream first.
    const p = chain(starts, out)
    const shuffled = program('chain', { operators: [...p.operators].reverse(), links: p.links })
    const { job, events } = run({ strategy: 'rest-for-one' }, shuffled)
    await job.done

    expect(out).toEqual([1, 2, 4, 5])
    const [restart] = restarts(events)
    expect(restart!.strategy).toBe('rest-for-one')
    expect(names(restart!.restarted)).toEqual(['b[0]', 'c[0]', 'out[0]'])
    expect([starts.of('a[0]'), starts.of('b[0]'), starts.of('c[0]')]).toEqual([1, 2, 2])
  })

  it('an operator annotated with a strategy gets a supervisor of its own over its instances', async () => {
    const starts = new Starts()
    const out: number[] = []
    const src = source('src', t.number, [1, 2, 3, 4, 5, 6])
    const before = stage('before', starts)
    const work = supervise(
      stage('work', starts, (n) => n === 3, 3),
      { strategy: 'one-for-all', maxRestarts: 1 },
    )
    const into = sink('out', t.number, out)
    const p = program('p', {
      operators: [src, before, work, into],
      links: [link(src.outputs.out, before.inputs.in), link(before.outputs.out, work.inputs.in), link(work.outputs.out, into.inputs.in)],
    })
    const { job, events } = run({ strategy: 'one-for-all' }, p)
    await job.done

    expect([...out].sort()).toEqual([1, 2, 4, 5, 6])
    const [restart] = restarts(events)
    expect(restart).toMatchObject({ supervisor: 'operator:work', strategy: 'one-for-all', maxRestarts: 1 })
    expect(names(restart!.restarted)).toEqual(['work[0]', 'work[1]', 'work[2]'])
    expect(starts.of('before[0]')).toBe(1)
    expect([0, 1, 2].map((i) => starts.of(`work[${i}]`))).toEqual([2, 2, 2])
  })

  it('restarts a crashed source by running it again on the fresh instance', async () => {
    let runs = 0
    let cursor = 0
    const src = atom({
      name: 'src',
      outputs: { out: t.number },
      onError: 'crash',
      run: async (ctx) => {
        runs++
        while (cursor < 6) {
          if (cursor === 2 && runs === 1) throw new Error('connection reset')
          ctx.emit('out', ++cursor)
          await ctx.flush()
        }
      },
    })
    const out: number[] = []
    const into = sink('out', t.number, out)
    const { job, events } = run({}, program('p', { operators: [src, into], links: [link(src.outputs.out, into.inputs.in)] }))
    const report = await job.done

    expect(runs).toBe(2)
    expect(out).toEqual([1, 2, 3, 4, 5, 6])
    expect(report.deadLetters.map((d) => [d.code, d.where.port])).toEqual([['ERR_HANDLER', 'run']])
    expect(names(restarts(events)[0]!.restarted)).toEqual(['src[0]'])
  })

  it('restarts siblings at their next call boundary, never while one of their handlers runs', async () => {
    const log: string[] = []
    let slowStarts = 0
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let entered!: () => void
    const slowEntered = new Promise<void>((resolve) => (entered = resolve))
    const src = source('src', t.number, [1, 2, 3])
    const crasher = atom({
      name: 'crasher',
      inputs: { in: t.number },
      onError: 'crash',
      on: {
        in: async (n) => {
          if (n !== 2) return
          await slowEntered
          throw new Error('boom')
        },
      },
    })
    const slow = atom({
      name: 'slow',
      inputs: { in: t.number },
      onError: 'crash',
      start: () => void log.push(`slow start #${++slowStarts}`),
      on: {
        in: async (n) => {
          if (n === 1) {
            entered()
            await gate
          }
          log.push(`slow handled ${n} after start #${slowStarts}`)
        },
      },
    })
    const p = program('p', { operators: [src, crasher, slow], links: [link(src.outputs.out, crasher.inputs.in), link(src.outputs.out, slow.inputs.in)] })
    const { job } = run({ strategy: 'one-for-all' }, p)

    const restart = (await next(job, 'restart')).data as RestartEventData
    expect(names(restart.restarted)).toEqual(['crasher[0]', 'slow[0]'])
    // slow is inside its handler (waiting on the gate): it is not restarted under it.
    expect(log).toEqual(['slow start #1'])
    release()
    await job.done
    expect(log).toEqual(['slow start #1', 'slow handled 1 after start #1', 'slow handled 2 after start #1', 'slow handled 3 after start #1', 'slow start #2'])
  })
})

describe('supervision: the replaced instance', () => {
  it('is disposed: its timers do not fire into its successor', async () => {
    const ticks: number[] = []
    let starts = 0
    let secondTicked!: () => void
    const ticking = new Promise<void>((resolve) => (secondTicked = resolve))
    const src = source('src', t.number, async function* () {
      yield 1 // crashes the ticker
      await ticking // the fresh ticker's timer has fired a few times
      yield 2
    })
    const ticker = atom({
      name: 'ticker',
      inputs: { in: t.number },
      onError: 'crash',
      start: (ctx) => {
        const generation = ++starts
        ctx.every(1, () => {
          ticks.push(generation)
          if (ticks.filter((g) => g === 2).length === 3) secondTicked()
        })
      },
      on: {
        in: (n) => {
          if (n === 1) throw new Error('tick tock')
        },
      },
    })
    const { job } = run({}, program('p', { operators: [src, ticker], links: [link(src.outputs.out, ticker.inputs.in)] }))
    await job.done
    expect(starts).toBe(2)
    const first = ticks.indexOf(2)
    expect(first).toBeGreaterThanOrEqual(0)
    expect(ticks.slice(first)).not.toContain(1)
  })
})

describe('supervision: state on restart', () => {
  /** Counts the records it sees, crashes on 3, and emits its count at the end. */
  function counting(state?: 'fresh' | 'keep') {
    const count = atom({
      name: 'count',
      inputs: { in: t.number },
      outputs: { out: t.number },
      state: { codec: t.number, init: () => 0 },
      onError: 'crash',
      on: {
        in: (n, ctx) => {
          if (n === 3) throw new Error('three')
          ctx.state.update((c) => c + 1)
        },
      },
      end: (ctx) => ctx.emit('out', ctx.state.get()),
    })
    return state === undefined ? count : supervise(count, { state })
  }

  it.each([
    [undefined, 2],
    ['fresh' as const, 2],
    ['keep' as const, 4],
  ])('state %s: the restarted instance counts %i', async (state, expected) => {
    const out: number[] = []
    const src = source('src', t.number, [1, 2, 3, 4, 5])
    const count = counting(state)
    const into = sink('out', t.number, out)
    const { job } = run({}, program('p', { operators: [src, count, into], links: [link(src.outputs.out, count.inputs.in), link(count.outputs.out, into.inputs.in)] }))
    await job.done
    expect(out).toEqual([expected])
  })
})

describe('supervision: restart intensity and escalation', () => {
  function crashing(crashOn: (n: number) => boolean, values = [1, 2, 3, 4, 5]) {
    const out: number[] = []
    const starts = new Starts()
    const src = source('src', t.number, values)
    const work = stage('work', starts, crashOn)
    const into = sink('out', t.number, out)
    return { out, starts, p: program('p', { operators: [src, work, into], links: [link(src.outputs.out, work.inputs.in), link(work.outputs.out, into.inputs.in)] }) }
  }

  it('past maxRestarts within the window the failure escalates and the job fails with a typed error', async () => {
    const { p } = crashing(() => true)
    const { job, events } = run({ maxRestarts: 2, withinMs: 1000, now: () => 0 }, p)

    await expect(job.done).rejects.toMatchObject({
      code: 'ERR_JOB_FAILED',
      cause: { code: 'ERR_SUPERVISION_ESCALATED', operator: 'work', instance: 0, supervisors: ['root'], maxRestarts: 2, cause: { code: 'ERR_INSTANCE_CRASHED' } },
    })
    const error = await job.done.catch((e: Error) => e)
    expect((error as Error & { cause: Error }).cause.message).toContain('work[0]')
    expect((error as Error & { cause: Error }).cause.message).toContain('cannot take 3')
    expect(events.map((e) => e.kind)).toEqual(['restart', 'restart', 'escalate'])
    expect(events[2]!.data as EscalateEventData).toMatchObject({ supervisor: 'root', to: 'job', failed: { operator: 'work', instance: 0 }, maxRestarts: 2, withinMs: 1000 })
    expect(events.every((e) => e.layer === 'supervision')).toBe(true)
    // Every crashing record was recorded before the job failed: nothing lost silently.
    expect(job.deadLetters.map((d) => d.value)).toEqual([1, 2, 3])
  })

  it('restarts older than the window do not count', async () => {
    let clock = 0
    const { p, out, starts } = crashing(
      (n) => {
        clock += 10_000 // each crash comes long after the one before
        return n % 2 === 0
      },
      [1, 2, 3, 4, 5, 6, 7],
    )
    const { job, events } = run({ maxRestarts: 1, withinMs: 5000, now: () => clock }, p)
    await job.done
    expect(out).toEqual([1, 3, 5, 7])
    expect(restarts(events).map((r) => r.restarts)).toEqual([1, 1, 1])
    expect(starts.of('work[0]')).toBe(4)
  })

  it('a group that gives up escalates to the root, which restarts the whole group', async () => {
    const starts = new Starts()
    const out: number[] = []
    const group = (op: Operator<{ in: t.NumberC }, { out: t.NumberC }>) => (op.name === 'c' ? op : supervise(op, { group: 'g' }))
    const { job, events } = run({ strategy: 'one-for-one', maxRestarts: 5, groups: { g: { strategy: 'one-for-one', maxRestarts: 0 } } }, chain(starts, out, group))
    await job.done

    expect(out).toEqual([1, 2, 4, 5])
    expect(events.map((e) => e.kind)).toEqual(['escalate', 'restart'])
    expect(events[0]!.data).toMatchObject({ supervisor: 'group:g', to: 'root', failed: { operator: 'b', instance: 0 } })
    const restart = events[1]!.data as RestartEventData
    expect(restart.supervisor).toBe('root')
    expect(names(restart.restarted)).toEqual(['a[0]', 'b[0]'])
    expect([starts.of('a[0]'), starts.of('b[0]'), starts.of('c[0]')]).toEqual([2, 2, 1])
  })

  it('escalates through every supervisor up to the job', async () => {
    const { p } = crashing(() => true)
    const grouped = p.mapOperators((op) => (op.name === 'work' ? supervise(op, { group: 'g', maxRestarts: 0 }) : op))
    const { job, events } = run({ maxRestarts: 0, groups: { g: { maxRestarts: 0 } } }, grouped)
    await expect(job.done).rejects.toMatchObject({ cause: { code: 'ERR_SUPERVISION_ESCALATED', supervisors: ['operator:work', 'group:g', 'root'] } })
    expect(events.map((e) => [e.kind, (e.data as EscalateEventData).to])).toEqual([
      ['escalate', 'group:g'],
      ['escalate', 'root'],
      ['escalate', 'job'],
    ])
  })

  it('a group named by an operator but not declared fails the job at start', async () => {
    const { p } = crashing(() => false)
    const job = kernel.with(supervision()).run(p.mapOperators((op) => (op.name === 'work' ? supervise(op, { group: 'nope' }) : op)))
    await expect(job.done).rejects.toMatchObject({ code: 'ERR_INVALID_OPTION' })
  })

  it('refuses bad options', () => {
    expect(() => supervision({ strategy: 'all-for-none' as 'one-for-all' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => supervision({ maxRestarts: -1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => supervision({ groups: { g: { withinMs: 0 } } })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => supervise(source('s', t.number, []), { state: 'stale' as 'keep' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})

describe('crashing operators', () => {
  function crashingProgram(out: number[]) {
    const src = source('src', t.number, [1, 2, 3])
    const work = atom({
      name: 'work',
      inputs: { in: t.number },
      outputs: { out: t.number },
      onError: 'crash',
      on: {
        in: (n, ctx) => {
          if (n === 2) throw new Error('bad two')
          ctx.emit('out', n)
        },
      },
    })
    const into = sink('out', t.number, out)
    return program('p', { operators: [src, work, into], links: [link(src.outputs.out, work.inputs.in), link(work.outputs.out, into.inputs.in)] })
  }

  it('without supervision, a crash fails the job with a clear error (and the record is a dead letter)', async () => {
    const job = kernel.run(crashingProgram([]))
    await expect(job.done).rejects.toMatchObject({
      code: 'ERR_JOB_FAILED',
      cause: { code: 'ERR_INSTANCE_CRASHED', phase: 'process', where: { operator: 'work', instance: 0, port: 'in' } },
    })
    const error = await job.done.catch((e: Error) => e)
    expect((error as Error).message).toContain("work[0] crashed in process (it declares onError: 'crash')")
    expect((error as Error).message).toContain('bad two')
    expect(job.deadLetters.map((d) => [d.code, d.value])).toEqual([['ERR_HANDLER', 2]])
  })

  it('under supervision, the same program finishes with the record as a dead letter', async () => {
    const out: number[] = []
    const report = await kernel.with(supervision()).run(crashingProgram(out)).done
    expect(out).toEqual([1, 3])
    expect(report.deadLetters.map((d) => [d.code, d.value])).toEqual([['ERR_HANDLER', 2]])
  })

  it('restarts below the metadata layer: a traced program loses nothing', async () => {
    const out: number[] = []
    const report = await kernel.with(supervision(), metadata()).run(crashingProgram(out)).done
    expect(out).toEqual([1, 3])
    expect(report.deadLetters.map((d) => d.value)).toEqual([2])
  })

  it('restarts below the checkpoint layer: checkpoints complete and the output is whole', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lamina-supervision-test-'))
    try {
      const values = Array.from({ length: 20_000 }, (_, i) => i)
      // The second half waits for a checkpoint to complete: restarts happen on both sides of one.
      let checkpointed!: () => void
      const firstCheckpoint = new Promise<void>((resolve) => (checkpointed = resolve))
      const src = source('src', t.number, async function* (part) {
        for (let i = part.offset; i < values.length; i++) {
          if (i === values.length / 2) await firstCheckpoint
          yield i
        }
      })
      const work = stage('work', new Starts(), (n) => n % 5000 === 1)
      const sum: number[] = []
      const total = atom({
        name: 'total',
        inputs: { in: t.number },
        outputs: { out: t.number },
        state: { codec: t.number, init: () => 0 },
        on: { in: (n, ctx) => void ctx.state.update((s) => s + n) },
        end: (ctx) => ctx.emit('out', ctx.state.get()),
      })
      const into = sink('out', t.number, sum)
      const p = program('p', {
        operators: [src, work, total, into],
        links: [link(src.outputs.out, work.inputs.in), link(work.outputs.out, total.inputs.in), link(total.outputs.out, into.inputs.in)],
      })
      const job = kernel.with(supervision({ maxRestarts: 10 }), checkpoints({ intervalMs: 2, dir })).run(p, { batchSize: 100, capacity: 200 })
      const events = layerEvents(job)
      job.events.subscribe((e) => (e.type === 'layer' && e.kind === 'checkpoint' ? checkpointed() : undefined))
      const report = await job.done
      const crashed = values.filter((n) => n % 5000 === 1)
      expect(sum).toEqual([values.reduce((a, b) => a + b, 0) - crashed.reduce((a, b) => a + b, 0)])
      expect(report.deadLetters.map((d) => d.value)).toEqual(crashed)
      expect(restarts(events)).toHaveLength(crashed.length)
      expect(events.some((e) => e.layer === 'checkpoints' && e.kind === 'checkpoint')).toBe(true)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('the operator declares onError with a known value, on atom-form operators only', () => {
    expect(() => atom({ name: 'x', onError: 'explode' as 'crash' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(atom({ name: 'x', onError: 'crash' }).annotations.onError).toBe('crash')
  })
})
