// Containment with real worker threads and child processes: a busy loop, runaway memory, process.exit
// and an uncaught error stop only the offending instance, and another pipeline of the same job is unaffected.

import { fork } from 'node:child_process'
import { alive, until } from 'lamina/testing'
import { describe, expect, it } from 'vitest'
import { filter, firstValueFrom, timeout } from 'rxjs'
import { kernel, link, map, program, sink, source, t, type DeadLetter, type Job, type JobEvent, type Link, type Operator, type Program } from 'lamina'
import { supervision, type RestartEventData } from '../fault-tolerance/index.js'
import { IsolationFaultError, isolate, isolation, type FaultEventData, type IsolatedMode, type IsolateOptions } from './index.js'
import { HERE, poison, stall, thrower, type Misbehaviour } from './fixtures/operators.js'

type LayerEvent = Extract<JobEvent, { type: 'layer' }>

const range = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => from + i)

/** Records the layer events of a job. */
function layerEvents(job: Job): LayerEvent[] {
  const seen: LayerEvent[] = []
  job.events.subscribe((event) => {
    if (event.type === 'layer') seen.push(event)
  })
  return seen
}

/** Resolves with the first layer event of `kind`; rejects after `ms`. */
function nextEvent(job: Job, kind: string, ms = 20_000): Promise<LayerEvent> {
  return firstValueFrom(
    job.events.pipe(
      filter((e): e is LayerEvent => e.type === 'layer' && e.kind === kind),
      timeout(ms),
    ),
  )
}

/** Two independent pipelines in one program: `bad-src -> <operator> -> bad-out` and `good-src -> good-map -> good-out` (in-process). */
function twoPipelines(
  bad: Operator<{ in: t.NumberC }, { out: t.NumberC }>,
  badInput: readonly number[],
  goodInput: readonly number[],
): { program: Program; badOut: number[]; goodOut: number[] } {
  const badOut: number[] = []
  const goodOut: number[] = []
  const badSrc = source('bad-src', t.number, badInput)
  const badSink = sink('bad-out', t.number, badOut)
  const goodSrc = source('good-src', t.number, goodInput)
  const goodMap = map('good-map', t.number, t.number, (n) => n * 2 + 1)
  const goodSink = sink('good-out', t.number, goodOut)
  const links: Link[] = [
    link(badSrc.outputs.out, bad.inputs.in),
    link(bad.outputs.out, badSink.inputs.in),
    link(goodSrc.outputs.out, goodMap.inputs.in),
    link(goodMap.outputs.out, goodSink.inputs.in),
  ]
  return { program: program('two', { operators: [badSrc, bad, badSink, goodSrc, goodMap, goodSink], links }), badOut, goodOut }
}

function isolatedPoison(
  mode: IsolatedMode,
  args: { value: number | null; does: Misbehaviour; crash?: boolean },
  options: IsolateOptions = {},
): Operator<{ in: t.NumberC }, { out: t.NumberC }> {
  return isolate(poison(args), { mode, from: { module: HERE, export: 'poison', args }, watchdogMs: 1000, memoryMb: 64, ...options })
}

const faultLetters = (letters: readonly DeadLetter[]): DeadLetter[] => letters.filter((l) => l.code === 'ERR_ISOLATION_FAULT')

const GOOD = range(20_000)
const GOOD_EXPECTED = GOOD.map((n) => n * 2 + 1)

describe.each(['worker', 'process'] as const)('isolation in a %s contains', (mode) => {
  // In a worker the record being handled is known exactly (shared memory); a child process blames
  // the records of the batch in flight not yet done. Small batches keep that set small.
  const batchSize = mode === 'worker' ? 256 : 16

  it.each([
    ['a busy loop (the watchdog stops it)', 'hang', 'watchdog'],
    ['runaway memory (the memory limit stops it)', 'oom', 'memory'],
    ['process.exit', 'exit', 'exit'],
  ] as const)('%s: the record is a dead letter, supervision restarts the instance, the other pipeline is unaffected', async (_title, does, reason) => {
    const input = range(3000)
    const { program: p, badOut, goodOut } = twoPipelines(isolatedPoison(mode, { value: 1234, does }), input, GOOD)
    const job = kernel.with(supervision({ maxRestarts: 2, withinMs: 60_000 }), isolation({ forwardStderr: false })).run(p, { batchSize })
    const events = layerEvents(job)
    const report = await job.done

    // The other pipeline produced all of its output, in order.
    expect(goodOut).toEqual(GOOD_EXPECTED)
    // The fault: reported as a layer event, and the poisoned record is a dead letter with it.
    const faults = events.filter((e) => e.kind === 'fault').map((e) => e.data as FaultEventData)
    expect(faults).toHaveLength(1)
    expect(faults[0]).toMatchObject({ operator: 'poison', instance: 0, mode, reason })
    const letters = faultLetters(report.deadLetters)
    expect(letters.map((l) => l.value)).toContain(1234)
    for (const letter of letters) {
      expect(letter.error).toBeInstanceOf(IsolationFaultError)
      expect(letter.error).toMatchObject({ code: 'ERR_ISOLATION_FAULT', operator: 'poison', instance: 0, mode, reason })
      expect(letter.where).toMatchObject({ operator: 'poison', port: 'in', instance: 0 })
    }
    if (mode === 'worker') expect(letters.map((l) => l.value)).toEqual([1234])
    else expect(letters.length).toBeLessThanOrEqual(batchSize)
    // Supervision restarted the instance once, for that fault.
    const restarts = events.filter((e) => e.kind === 'restart').map((e) => e.data as RestartEventData)
    expect(restarts).toHaveLength(1)
    expect(restarts[0]!.cause.code).toBe('ERR_ISOLATION_FAULT')
    // Nothing lost: every other record went through, in order, exactly once.
    const blamed = new Set(letters.map((l) => l.value))
    expect(badOut).toEqual(input.filter((n) => !blamed.has(n)))
    expect(report.deadLetters).toHaveLength(letters.length)
  })

  it('a busy loop without supervision: the instance fails with the fault as cause and the job fails with it', async () => {
    const { program: p } = twoPipelines(isolatedPoison(mode, { value: null, does: 'hang' }), range(100), range(10))
    const job = kernel.with(isolation({ forwardStderr: false })).run(p, { batchSize })
    const fault = nextEvent(job, 'fault')
    const failure = await job.done.then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(failure).toMatchObject({ code: 'ERR_JOB_FAILED' })
    const crashed = (failure as Error).cause as Error & { code: string; phase: string }
    expect(crashed).toMatchObject({ code: 'ERR_INSTANCE_CRASHED', phase: 'process' })
    expect(crashed.cause).toBeInstanceOf(IsolationFaultError)
    expect(crashed.cause).toMatchObject({ code: 'ERR_ISOLATION_FAULT', reason: 'watchdog', mode, operator: 'poison' })
    expect(((await fault).data as FaultEventData).reason).toBe('watchdog')
    expect(faultLetters(job.deadLetters).map((l) => l.value)).toContain(0)
  })

  it('a job aborted while an instance is stuck (watchdog off): the job ends as aborted, nothing is blamed, the isolated side is stopped', async () => {
    let reported!: (place: number) => void
    const started = new Promise<number>((resolve) => (reported = resolve))
    const op = isolate(stall(), { mode, watchdogMs: 0, from: { module: HERE, export: 'stall' } })
    const src = source('src', t.number, range(10))
    const into = sink('out', t.number, (place) => reported(place))
    const p = program('stuck', { operators: [src, op, into], links: [link(src.outputs.out, op.inputs.in), link(op.outputs.out, into.inputs.in)] })
    const job = kernel.with(isolation()).run(p)
    let failure: unknown
    try {
      const place = await started
      // Wait until the first batch was handed to the instance (it is then stuck in its busy loop).
      await until(() => (job.stats().instances.find((i) => i.operator === 'stall')?.recordsIn ?? 0) > 0, 10_000, 'the stalled operator to take a record')
      job.abort('test')
      failure = await job.done.then(
        () => undefined,
        (error: unknown) => error,
      )
      if (mode === 'process') await until(() => !alive(place % 1_000_000), 5000, `process ${place % 1_000_000} to exit`)
    } finally {
      job.abort('test over')
    }
    expect(failure).toMatchObject({ code: 'ERR_JOB_ABORTED' })
    expect(job.deadLetters).toEqual([])
  })
})

describe('isolation contains', () => {
  it('no orphans: a child stuck in a busy loop dies with its peer (SIGKILLed)', async () => {
    const host = fork(new URL('./fixtures/orphan-host.ts', import.meta.url), [], { execArgv: ['--import', import.meta.resolve('tsx')], stdio: 'inherit' })
    try {
      const child = await new Promise<number>((resolve, reject) => {
        host.once('message', (message) => resolve((message as { child: number }).child))
        host.once('exit', (code) => reject(new Error(`the host exited (${code}) before reporting its child`)))
      })
      expect(child).not.toBe(host.pid)
      process.kill(child, 0) // alive
      host.kill('SIGKILL')
      await until(() => !alive(child), 5000, `process ${child} to exit`)
    } finally {
      host.kill('SIGKILL')
    }
  })

  it('an operator that throws on every record: each record is a dead letter with its cause, the instance goes on, the other pipeline is unaffected', async () => {
    const input = range(500)
    const op = isolate(thrower(), { from: { module: HERE, export: 'thrower' } })
    const { program: p, badOut, goodOut } = twoPipelines(op, input, GOOD)
    const report = await kernel.with(isolation()).run(p, { batchSize: 64 }).done
    expect(goodOut).toEqual(GOOD_EXPECTED)
    expect(badOut).toEqual([])
    expect(report.deadLetters.map((l) => l.value)).toEqual(input)
    for (const letter of report.deadLetters) {
      expect(letter.code).toBe('ERR_HANDLER')
      expect(letter.where).toEqual({ operator: 'thrower', port: 'in', instance: 0 })
      expect((letter.error.cause as Error).message).toBe(`no ${letter.value as number}`)
    }
  })

  it('an operator that throws under onError: crash: the record is a dead letter and the job fails with InstanceCrashedError caused by the HandlerError, as in-process', async () => {
    const op = isolate(thrower({ crash: true }), { from: { module: HERE, export: 'thrower', args: { crash: true } } })
    const { program: p } = twoPipelines(op, range(10), range(10))
    const job = kernel.with(isolation()).run(p)
    const failure = (await job.done.then(
      () => undefined,
      (error: unknown) => error,
    )) as Error
    const crashed = failure.cause as Error & { code: string; remaining?: { values: unknown[] } }
    expect(crashed.code).toBe('ERR_INSTANCE_CRASHED')
    expect(crashed.cause).toMatchObject({ code: 'ERR_HANDLER' })
    expect(crashed.remaining?.values).toEqual(range(9, 1))
    expect(job.deadLetters.map((l) => [l.value, l.code])).toEqual([[0, 'ERR_HANDLER']])
  })

  it('an uncaught error of the isolated side (a rejected promise nobody handles): a crash fault, contained, nothing lost', async () => {
    const input = range(2000)
    const { program: p, badOut, goodOut } = twoPipelines(isolatedPoison('worker', { value: 700, does: 'reject-later' }), input, GOOD)
    const job = kernel.with(supervision({ maxRestarts: 2, withinMs: 60_000 }), isolation()).run(p, { batchSize: 100 })
    const events = layerEvents(job)
    const report = await job.done
    expect(goodOut).toEqual(GOOD_EXPECTED)
    const faults = events.filter((e) => e.kind === 'fault').map((e) => e.data as FaultEventData)
    expect(faults).toMatchObject([{ reason: 'crash', mode: 'worker' }])
    expect(faults[0]!.detail).toContain('nobody handles this')
    // The record was handled before the side died: nothing is blamed, nothing lost.
    expect(badOut).toEqual(input)
    expect(report.deadLetters).toEqual([])
  })
})
