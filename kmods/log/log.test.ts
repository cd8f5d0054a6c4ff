// Tests of the durable log and its source: stable offsets across connections, processes and reopen; range reads;
// replay from a restored offset; follow mode; typed errors.
import { fork } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as pace } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { kernel, link, program, sink, t, type JobReport } from 'lamina'
import { restoreOffsets } from 'lamina/testing'
import { openStore, type Store } from '../store/index.js'
import { logSource, openLog, type Log, type LogSourceOptions } from './index.js'

const dir = mkdtempSync(join(tmpdir(), 'lamina-log-test-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let dbs = 0
const dbPath = (): string => join(dir, `log-${dbs++}.db`)

// Every log and store a test opens is closed after it, even when it fails.
const opened: { close(): void }[] = []
afterEach(() => {
  for (const o of opened.splice(0)) o.close()
})
function logAt(path: string | Store, topic = 'events'): Log {
  const log = openLog(path, topic)
  opened.push(log)
  return log
}
function storeAt(path: string): Store {
  const store = openStore(path)
  opened.push(store)
  return store
}

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i)

describe('openLog', () => {
  it('appends at consecutive offsets and reads values back as JSON', () => {
    const log = logAt(dbPath())
    expect(log.length).toBe(0)
    expect(log.read(0)).toEqual([])
    expect(log.append([{ a: 1 }, 'two', [3], null])).toBe(0)
    expect(log.append([])).toBe(4)
    expect(log.append([true, 5.5])).toBe(4)
    expect(log.length).toBe(6)
    expect(log.read(0)).toEqual([
      { offset: 0, value: { a: 1 } },
      { offset: 1, value: 'two' },
      { offset: 2, value: [3] },
      { offset: 3, value: null },
      { offset: 4, value: true },
      { offset: 5, value: 5.5 },
    ])
    expect(log.read(4, 1)).toEqual([{ offset: 4, value: true }])
    expect(log.read(6)).toEqual([])
    expect(log.read(100, 5)).toEqual([])
  })

  it('reads any range exactly (block listings at every alignment)', () => {
    const log = logAt(dbPath())
    const total = 12_345
    for (let at = 0; at < total; at += 1000) log.append(range(at, Math.min(total, at + 1000)))
    expect(log.length).toBe(total)
    fc.assert(
      fc.property(fc.integer({ min: 0, max: total + 20 }), fc.integer({ min: 1, max: 5000 }), (from, max) => {
        const got = log.read(from, max)
        const want = range(from, Math.min(total, from + max))
        expect(got.map((e) => e.offset)).toEqual(want)
        expect(got.map((e) => e.value)).toEqual(want)
      }),
      { numRuns: 200, seed: 7 },
    )
    expect(log.read(0, total).map((e) => e.value)).toEqual(range(0, total))
  })

  it('keeps topics apart, and offsets across connections and reopen', () => {
    const path = dbPath()
    const a = logAt(path)
    const b = logAt(path)
    const other = logAt(path, 'other')
    expect(a.append(['a0', 'a1'])).toBe(0)
    expect(b.append(['b2'])).toBe(2)
    expect(other.append(['o0'])).toBe(0)
    expect(a.read(0).map((e) => e.value)).toEqual(['a0', 'a1', 'b2'])
    a.close()
    b.close()
    const reopened = logAt(path)
    expect(reopened.length).toBe(3)
    expect(reopened.read(1, 2)).toEqual([
      { offset: 1, value: 'a1' },
      { offset: 2, value: 'b2' },
    ])
    expect(reopened.append(['c3'])).toBe(3)
    expect(logAt(path, 'other').read(0)).toEqual([{ offset: 0, value: 'o0' }])
  })

  it('opens a topic of an open store, and leaves the store open on close', () => {
    const store = storeAt(dbPath())
    const log = openLog(store, 'events')
    log.append([1])
    log.close()
    expect(store.closed).toBe(false)
    expect(openLog(store, 'events').read(0)).toEqual([{ offset: 0, value: 1 }])
  })

  it('another process appends while this one appends: every batch is whole, at consecutive offsets, nothing lost', async () => {
    const path = dbPath()
    const log = logAt(path)
    log.append([{ who: 'setup' }])
    const child = fork(fileURLToPath(new URL('./fixtures/appender.ts', import.meta.url)), [path, 'events', '200'], {
      execArgv: ['--import', 'tsx'],
      stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    const ready = new Promise<void>((resolve, reject) => {
      child.on('message', (m: { type: string }) => m.type === 'ready' && resolve())
      void exited.then((code) => reject(new Error(`the appender exited (${code}) before it was ready`)))
    })
    try {
      await ready
      child.send('go')
      // Paced like the child's: SQLite's busy wait is not a queue, so back-to-back appends would
      // starve the other process.
      for (let batch = 0; batch < 200; batch++) {
        log.append([0, 1, 2].map((j) => ({ who: 'parent', batch, j })))
        await pace(1)
      }
      expect(await exited).toBe(0)
      const entries = log.read(0, log.length)
      expect(entries).toHaveLength(1 + 3 * 400)
      const batchesOf = (who: string): number[] => entries.filter((e) => (e.value as { who: string }).who === who && (e.value as { j: number }).j === 0).map((e) => e.offset)
      for (const who of ['parent', 'child']) {
        const starts = batchesOf(who)
        expect(starts).toHaveLength(200)
        starts.forEach((start, i) => expect(entries.slice(start, start + 3).map((e) => e.value)).toEqual([0, 1, 2].map((j) => ({ who, batch: i, j }))))
      }
      // The two really did append at the same time.
      const child0 = batchesOf('child')
      expect(batchesOf('parent').some((p) => p > child0[0]! && p < child0.at(-1)!)).toBe(true)
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
    }
  })

  it('gives typed errors: bad arguments, values without JSON, a closed log, corrupt entries', () => {
    const path = dbPath()
    expect(() => openLog(path, '')).toThrow(expect.objectContaining({ code: 'ERR_LOG_ARGUMENT' }))
    const log = logAt(path)
    log.append(['ok'])
    expect(() => log.read(-1)).toThrow(expect.objectContaining({ code: 'ERR_LOG_ARGUMENT' }))
    expect(() => log.read(0, 0)).toThrow(expect.objectContaining({ code: 'ERR_LOG_ARGUMENT' }))
    expect(() => log.read(0.5)).toThrow(expect.objectContaining({ code: 'ERR_LOG_ARGUMENT' }))
    expect(() => log.append('nope' as unknown as unknown[])).toThrow(expect.objectContaining({ code: 'ERR_LOG_ARGUMENT' }))
    const cyclic: Record<string, unknown> = {}
    cyclic['self'] = cyclic
    for (const bad of [undefined, () => 1, 10n, cyclic]) {
      expect(() => log.append(['fine', 'fine', bad])).toThrow(expect.objectContaining({ code: 'ERR_LOG_VALUE', index: 2 }))
    }
    // Nothing of a refused batch was appended.
    expect(log.length).toBe(1)
    // What another writer put where the log keeps its entries.
    const raw = storeAt(path)
    log.append(['a', 'b', 'c'])
    raw.put('log.entries/events', '0000000000000002', '{not json')
    raw.delete('log.entries/events', '0000000000000003')
    expect(log.read(0, 2).map((e) => e.value)).toEqual(['ok', 'a'])
    expect(() => log.read(0)).toThrow(expect.objectContaining({ code: 'ERR_LOG_CORRUPT', offset: 2 }))
    expect(() => log.read(3)).toThrow(expect.objectContaining({ code: 'ERR_LOG_CORRUPT', offset: 3 }))
    raw.put('log.length', 'events', 'many')
    expect(() => log.length).toThrow(expect.objectContaining({ code: 'ERR_LOG_CORRUPT' }))
    log.close()
    log.close()
    expect(() => log.append([1])).toThrow(expect.objectContaining({ code: 'ERR_LOG_CLOSED' }))
    expect(() => log.read(0)).toThrow(expect.objectContaining({ code: 'ERR_LOG_CLOSED' }))
  })
})

const Event = t.type({ n: t.number })
type Event = t.TypeOf<typeof Event>

/** Runs a log source into an array; `onValue` sees each value as it arrives. */
function runSource(options: LogSourceOptions, run: { offsets?: readonly number[]; onValue?: (e: Event, all: Event[]) => void } = {}) {
  const events = logSource('events', Event, options)
  const out: Event[] = []
  const into = sink('out', Event, (e: Event) => {
    out.push(e)
    run.onValue?.(e, out)
  })
  const p = program('log', { operators: [events, into], links: [link(events.outputs.out, into.inputs.in)] })
  const k = run.offsets === undefined ? kernel : kernel.with(restoreOffsets('events', run.offsets))
  return { out, job: k.run(p, { batchSize: 64 }) }
}

function appendEvents(path: string, from: number, to: number): void {
  const log = openLog(path, 'events')
  try {
    log.append(range(from, to).map((n) => ({ n })))
  } finally {
    log.close()
  }
}

/** Resolves once `count()` reaches `n` (checked on each call of the returned `check`); fails after `timeoutMs`. */
function reaching(n: number, count: () => number, timeoutMs = 10_000): { promise: Promise<void>; check: () => void } {
  let resolve!: () => void
  let reject!: (error: Error) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  const timer = setTimeout(() => reject(new Error(`only ${count()} of ${n} values arrived within ${timeoutMs} ms`)), timeoutMs)
  const check = (): void => {
    if (count() >= n) {
      clearTimeout(timer)
      resolve()
    }
  }
  check()
  return { promise, check }
}

describe('logSource', () => {
  it('emits the log from the start to its end as of the start, and declares replay by seeking', async () => {
    const path = dbPath()
    appendEvents(path, 0, 2500)
    const { out, job } = runSource({ path, topic: 'events' })
    const report: JobReport = await job.done
    expect(report.deadLetters).toEqual([])
    expect(out.map((e) => e.n)).toEqual(range(0, 2500))
    expect(logSource('x', Event, { path, topic: 'events' }).annotations.replay).toBe('seek')
  })

  it('after a restore at offset k, emits exactly entries k.. (nothing earlier again), from a reopened store', async () => {
    const path = dbPath()
    appendEvents(path, 0, 2345)
    for (const k of [0, 1, 999, 1000, 1001, 2344, 2345, 3000]) {
      const { out, job } = runSource({ path, topic: 'events', readMax: 300 }, { offsets: [k] })
      await job.done
      expect(out.map((e) => e.n)).toEqual(range(k, 2345))
    }
  })

  it('splits the log in blocks of 1000 over parallel instances, each resuming at its own offset', async () => {
    const path = dbPath()
    appendEvents(path, 0, 4500)
    const annotations = { parallelism: 2 }
    const whole = runSource({ path, topic: 'events', annotations })
    await whole.job.done
    expect(whole.out.map((e) => e.n).sort((a, b) => a - b)).toEqual(range(0, 4500))
    // Instance 0 reads blocks 0, 2, 4 (offsets 0-999, 2000-2999, 4000-4499), instance 1 blocks 1, 3.
    // Restored: instance 0 has emitted 1200 (it is at 2200), instance 1 has emitted 5 (at 1005).
    const resumed = runSource({ path, topic: 'events', annotations }, { offsets: [1200, 5] })
    await resumed.job.done
    const want = [...range(2200, 3000), ...range(4000, 4500), ...range(1005, 2000), ...range(3000, 4000)]
    expect(resumed.out.map((e) => e.n).sort((a, b) => a - b)).toEqual(want.sort((a, b) => a - b))
    const share = (lo: number[]): number[] => resumed.out.map((e) => e.n).filter((n) => lo.includes(Math.floor(n / 1000)))
    expect(share([0, 2, 4])).toEqual([...range(2200, 3000), ...range(4000, 4500)])
    expect(share([1, 3])).toEqual([...range(1005, 2000), ...range(3000, 4000)])
  })

  it('follows: emits appends made after it started by another connection, and stops when the job stops', async () => {
    const path = dbPath()
    appendEvents(path, 0, 10)
    let check = (): void => undefined
    const { out, job } = runSource({ path, topic: 'events', follow: true, pollMs: 5 }, { onValue: () => check() })
    const first = reaching(10, () => out.length)
    check = first.check
    await first.promise
    // Appends from another connection, in two transactions, after the source caught up.
    const second = reaching(25, () => out.length)
    check = second.check
    appendEvents(path, 10, 20)
    appendEvents(path, 20, 25)
    await second.promise
    const report = await job.stop()
    expect(report.deadLetters).toEqual([])
    expect(out.map((e) => e.n)).toEqual(range(0, 25))
  })

  it('follows from a restored offset, and ends with the job when it is aborted', async () => {
    const path = dbPath()
    appendEvents(path, 0, 5)
    let check = (): void => undefined
    const { out, job } = runSource({ path, topic: 'events', follow: true, pollMs: 5 }, { offsets: [3], onValue: () => check() })
    const arrived = reaching(4, () => out.length)
    check = arrived.check
    appendEvents(path, 5, 7)
    await arrived.promise
    job.abort('test over')
    await expect(job.done).rejects.toMatchObject({ code: 'ERR_JOB_ABORTED' })
    expect(out.map((e) => e.n)).toEqual([3, 4, 5, 6])
  })

  it('reports values that do not fit the codec, and a store that is not a log, as typed dead letters', async () => {
    const path = dbPath()
    const log = logAt(path)
    log.append([{ n: 1 }, { n: 'two' }, { n: 3 }])
    const { out, job } = runSource({ path, topic: 'events' })
    const report = await job.done
    expect(out).toEqual([{ n: 1 }, { n: 3 }])
    expect(report.deadLetters.map((d) => d.code)).toEqual(['ERR_DECODE'])

    const notADatabase = join(dir, 'not-a-db.db')
    writeFileSync(notADatabase, 'plain text, not SQLite '.repeat(100))
    const broken = runSource({ path: notADatabase, topic: 'events' })
    const failed = await broken.job.done
    expect(failed.deadLetters.map((d) => d.code)).toEqual(['ERR_SOURCE'])
    expect(failed.deadLetters[0]!.error.cause).toMatchObject({ code: 'ERR_STORE_OPEN', path: notADatabase })

    storeAt(path).put('log.entries/events', '0000000000000001', '{bad')
    const corrupt = runSource({ path, topic: 'events' })
    const partial = await corrupt.job.done
    expect(partial.deadLetters.map((d) => d.code)).toEqual(['ERR_SOURCE'])
    expect(partial.deadLetters[0]!.error.cause).toMatchObject({ code: 'ERR_LOG_CORRUPT', offset: 1 })
  })

  it('refuses options out of range when built', () => {
    expect(() => logSource('x', Event, { path: '', topic: 'events' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => logSource('x', Event, { path: '/p.db', topic: '' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => logSource('x', Event, { path: '/p.db', topic: 'events', pollMs: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => logSource('x', Event, { path: '/p.db', topic: 'events', readMax: -1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})
