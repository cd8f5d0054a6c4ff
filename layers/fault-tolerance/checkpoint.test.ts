// In-process tests of the checkpoint layer: barriers align into consistent cuts, snapshots land in
// the store, sinks commit exactly their input, and non-replayable sources are declared.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { atom, kernel, link, program, sink, source, t, type Job, type JobEvent, type SourcePart } from 'lamina'
import { CHECKPOINT_EVENTS, checkpoints, guaranteeOf, SAVEPOINTS } from 'lamina/layers'
import { openStore } from '../../kmods/store/index.js'
import { until as waitUntil } from 'lamina/testing'

const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-ckpt-test-'))
  dirs.push(dir)
  return dir
}

const Word = t.type({ key: t.string, n: t.number })
type Word = t.TypeOf<typeof Word>

/** Record i of a part: deterministic, so a replay reads the same values. */
function* records(part: SourcePart, total: number): Generator<Word> {
  for (let i = part.offset; i < total; i++) yield { key: `k${(i * 7 + part.instance) % 50}`, n: 1 }
}

function countJob(total: number, out: { key: string; count: number }[]) {
  const words = source('words', Word, (part) => records(part, total), { replay: 'seek', annotations: { parallelism: 2 } })
  const count = atom({
    name: 'count',
    inputs: { in: Word },
    outputs: { out: t.type({ key: t.string, count: t.number }) },
    key: (w: Word) => w.key,
    state: { codec: t.number, init: () => 0 },
    annotations: { parallelism: 3 },
    on: { in: (w: Word, ctx) => void ctx.state.update((c) => c + w.n) },
    end: (ctx) => {
      for (const [key, count] of ctx.state.entries()) ctx.emit('out', { key: String(key), count })
    },
  })
  const print = sink('print', t.type({ key: t.string, count: t.number }), out)
  return program('counts', { operators: [words, count, print], links: [link(words.outputs.out, count.inputs.in), link(count.outputs.out, print.inputs.in)] })
}

function reference(total: number): Map<string, number> {
  const counts = new Map<string, number>()
  for (let instance = 0; instance < 2; instance++)
    for (const w of records({ instance, parallelism: 2, offset: 0, signal: new AbortController().signal }, total)) counts.set(w.key, (counts.get(w.key) ?? 0) + 1)
  return counts
}

describe('checkpoints in one process', () => {
  it('completes checkpoints whose snapshots are consistent cuts (source offsets = records counted), and collects them when the job succeeded', async () => {
    const dir = tempDir()
    const out: { key: string; count: number }[] = []
    const total = 300_000
    const job = kernel.with(checkpoints({ intervalMs: 15, dir })).run(countJob(total, out), { batchSize: 256, capacity: 512 })
    const store = openStore(join(dir, 'checkpoints.db'))
    const completed: number[] = []
    let checked = 0
    // Each checkpoint, as it completes, is a consistent cut of what is stored (read while the job runs).
    job.events.subscribe((e: JobEvent) => {
      if (!CHECKPOINT_EVENTS.completed.is(e)) return
      completed.push(e.data.id)
      const record = store.get('checkpoint.completed', `${job.id}/${String(e.data.id).padStart(12, '0')}`)
      expect(record).toBeDefined()
      const done = JSON.parse(String(record)) as { id: number; snapshots: Record<string, { final: boolean }> }
      let offsets = 0
      let counted = 0
      for (const [key, where] of Object.entries(done.snapshots)) {
        const id = where.final ? 'final' : String(done.id).padStart(12, '0')
        const stored = store.get('checkpoint.snapshot', `${job.id}/${id}/${key}`)
        expect(stored, `${key} of checkpoint ${done.id}`).toBeDefined()
        const snapshot = JSON.parse(String(stored)) as { state: { entries: [string | null, number][] } }
        const sum = snapshot.state.entries.reduce((a, [, v]) => a + v, 0)
        if (key.startsWith('words#')) offsets += sum
        else if (key.startsWith('count#')) counted += sum
      }
      if (offsets > 0) {
        expect(counted).toBe(offsets)
        checked++
      }
    })
    try {
      await job.done
      expect(new Map(out.map((o) => [o.key, o.count]))).toEqual(reference(total))
      expect(completed.length).toBeGreaterThan(0)
      expect(checked).toBeGreaterThan(0)
      // The job succeeded: nothing of it is kept (it took no savepoint).
      await waitUntil(() => store.keys('checkpoint.snapshot', `${job.id}/`).length === 0, 5_000, 'the snapshots to be collected')
      expect(store.keys('checkpoint.completed', `${job.id}/`)).toEqual([])
      expect(store.keys('checkpoint.commit', `${job.id}/`)).toEqual([])
    } finally {
      store.close()
    }
  })

  it('a sink receives exactly its input, committed at checkpoints and at the end', async () => {
    const dir = tempDir()
    const out: number[] = []
    const numbers = Array.from({ length: 50_000 }, (_, i) => i)
    const nums = source('nums', t.number, numbers)
    const keep = sink('keep', t.number, out)
    const p = program('sinkcommit', { operators: [nums, keep], links: [link(nums.outputs.out, keep.inputs.in)] })
    await kernel.with(checkpoints({ intervalMs: 5, dir })).run(p, { batchSize: 100, capacity: 200 }).done
    expect(out).toEqual(numbers)
  })

  it('a checkpoint completing while the sink writes its end does not write that output again', async () => {
    // Barrier 7 passes the sink, the input ends, and while the sink writes its final output (held
    // at its first record) checkpoint 7 is declared complete: what the end writes is written once.
    const dir = tempDir()
    const out: number[] = []
    const numbers = Array.from({ length: 500 }, (_, i) => i)
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let pause!: () => void
    const paused = new Promise<void>((resolve) => (pause = resolve))
    async function* feed(): AsyncGenerator<number> {
      yield* numbers.slice(0, 250)
      pause()
      await released
      yield* numbers.slice(250)
    }
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    let writing!: () => void
    const endWriting = new Promise<void>((resolve) => (writing = resolve))
    const nums = source('nums', t.number, feed())
    const keep = sink('keep', t.number, async (n: number) => {
      writing()
      await gate
      out.push(n)
    })
    const p = program('endrace', { operators: [nums, keep], links: [link(nums.outputs.out, keep.inputs.in)] })
    // No automatic checkpoints: the test places barrier 7 and completes it by hand.
    const job = kernel.with(checkpoints({ intervalMs: 3_600_000, dir })).run(p, { batchSize: 50, capacity: 100 })
    const running = job as unknown as { control(kind: string, payload?: unknown): Promise<unknown> }
    await paused
    expect(await running.control('checkpoint.trigger', { id: 7 })).toBe(1)
    release()
    await endWriting
    await running.control('checkpoint.complete', { id: 7 })
    open()
    await job.done
    // A second write would be a chain of promises the job does not wait for: let every pending
    // microtask run (one macrotask turn) before looking.
    await new Promise<void>((resolve) => setImmediate(resolve))
    expect(out).toEqual(numbers)
  })

  it('declares sources that cannot replay: the guarantee weakens to at-most-once', async () => {
    async function* live(): AsyncGenerator<number> {
      yield 1
      yield 2
    }
    const replayable = source('a', t.number, [1, 2])
    const oneShot = source('b', t.number, live())
    const out: number[] = []
    const both = sink('out', t.number, out)
    const p = program('mixed', { operators: [replayable, oneShot, both], links: [link(replayable.outputs.out, both.inputs.in), link(oneShot.outputs.out, both.inputs.in)] })
    const guarantee = guaranteeOf(p)
    expect(guarantee.level).toBe('at-most-once')
    expect(guarantee.because).toEqual(['source b cannot replay its input: after a failure, records it read since the last checkpoint are lost'])
    expect(guaranteeOf(countJob(10, [])).level).toBe('exactly-once')
    const events: JobEvent[] = []
    const job = kernel.with(checkpoints({ dir: tempDir() })).run(p)
    job.events.subscribe((e) => events.push(e))
    await job.done
    expect(out.sort()).toEqual([1, 1, 2, 2])
    expect(events.some((e) => e.type === 'layer' && e.kind === 'guarantee' && e.message.includes('at-most-once'))).toBe(true)
  })

  it('for a failover job, names sinks that do not commit their own output: at-least-once', () => {
    const from = source('a', t.number, [1, 2])
    const plain = sink('plain', t.number, [])
    const committing = atom({
      name: 'committing',
      inputs: { in: t.number },
      on: { in: () => undefined },
      commit: { write: async () => undefined, committed: async () => -1 },
    })
    const p = program('sinks', { operators: [from, plain, committing], links: [link(from.outputs.out, plain.inputs.in), link(from.outputs.out, committing.inputs.in)] })
    expect(guaranteeOf(p).level).toBe('exactly-once')
    const failover = guaranteeOf(p, { failover: true })
    expect(failover.level).toBe('at-least-once')
    expect(failover.because).toEqual([
      'sink plain does not commit its output itself (SinkCommit): if the peer running it dies, output it wrote may be written again, by the peer that runs it next',
    ])
    expect(committing.describe().commits).toBe(true)
    expect(plain.describe().commits).toBeUndefined()
  })

  it('provides savepoints: a checkpoint on demand, by the typed API', async () => {
    const dir = tempDir()
    async function* slow(): AsyncGenerator<number> {
      for (let i = 0; i < 1_000_000; i++) {
        if (i % 100 === 0) await new Promise<void>((resolve) => setImmediate(resolve))
        yield i
      }
    }
    const nums = source('nums', t.number, slow())
    const keep = sink('keep', t.number, () => undefined)
    const stack = kernel.with(checkpoints({ intervalMs: 3_600_000, dir }))
    const job = stack.run(program('savepoint', { operators: [nums, keep], links: [link(nums.outputs.out, keep.inputs.in)] }))
    const completed: number[] = []
    job.events.subscribe((e) => {
      if (CHECKPOINT_EVENTS.completed.is(e)) completed.push(e.data.id)
    })
    await until(job, (e) => e.type === 'started')
    const savepoints = stack.capability(SAVEPOINTS)!
    const id = await savepoints.take(job.id)
    expect(completed).toContain(id)
    await expect(savepoints.take('no-such-job')).rejects.toMatchObject({ code: 'ERR_CHECKPOINT_PROTOCOL' })
    job.abort('done')
    await job.done.catch(() => undefined)
  })

  it('keeps its state per stack: a sink blocked in one stack does not hold up the same job in another', async () => {
    // Two stacks in one process run a job of the same id (as two peers of one cluster in one
    // process would). Sink writes queue per stack: B's sink must not wait behind A's.
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    let blocked!: () => void
    const isBlocked = new Promise<void>((resolve) => (blocked = resolve))
    const build = (write: (n: number) => unknown) => {
      const nums = source('nums', t.number, [1, 2, 3])
      const keep = sink('keep', t.number, write)
      return program('twice', { operators: [nums, keep], links: [link(nums.outputs.out, keep.inputs.in)] })
    }
    const a = kernel.with(checkpoints({ intervalMs: 3_600_000, dir: tempDir() })).run(
      build(async () => {
        blocked()
        await gate
      }),
      { id: 'same-job' },
    )
    await isBlocked
    const got: number[] = []
    const b = kernel.with(checkpoints({ intervalMs: 3_600_000, dir: tempDir() })).run(
      build((n) => void got.push(n)),
      { id: 'same-job' },
    )
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("the second stack waited for the first one's sink")), 10_000)))
    try {
      await Promise.race([b.done, late])
    } finally {
      clearTimeout(timer)
    }
    expect(got).toEqual([1, 2, 3])
    open()
    await a.done
  })
})

/** Resolves with the first event of `job` that `predicate` accepts (rejects after 10 s). */
function until(job: Job, predicate: (event: JobEvent) => boolean): Promise<JobEvent> {
  return new Promise<JobEvent>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no such event within 10 s')), 10_000)
    const subscription = job.events.subscribe((event) => {
      if (!predicate(event)) return
      clearTimeout(timer)
      queueMicrotask(() => subscription.unsubscribe())
      resolve(event)
    })
  })
}
