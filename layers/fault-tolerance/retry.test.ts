import { describe, expect, it } from 'vitest'
import { atom, kernel, link, map, program, seededRandom, sink, source, t, type InstanceInfo, type JobEvent } from 'lamina'
import { backoffDelay, retry, RetryBudget, retrying, type RetryContext, type RetryEvent, type RetryPolicy } from './retry.js'
import { supervision } from './supervision.js'

const info: InstanceInfo = { job: 'j', lineage: 'j', operator: 'enrich', instance: 0, parallelism: 1, batchSize: 1024 }

/** A context whose `sleep` records the delay and returns at once: delays are checked, not waited for. */
function fakeContext(): RetryContext & { slept: number[] } {
  const slept: number[] = []
  return { info: { ...info }, slept, sleep: async (ms: number) => void slept.push(ms) }
}

/** A service that fails its first `k` calls for each argument (or always, for those in `down`). */
function flakyService(k: number, down: ReadonlySet<number> = new Set()) {
  const calls = new Map<number, number>()
  return async (n: number): Promise<number> => {
    const call = (calls.get(n) ?? 0) + 1
    calls.set(n, call)
    if (down.has(n) || call <= k) throw new Error(`503 for ${n} (call ${call})`)
    return n * 10
  }
}

describe('backoff', () => {
  const policy = { baseMs: 100, maxMs: 1000 }

  it('doubles from baseMs up to maxMs, randomised by the jitter', () => {
    const retries = [1, 2, 3, 4, 5, 6]
    expect(retries.map((r) => backoffDelay(r, { ...policy, jitter: 'none' }))).toEqual([100, 200, 400, 800, 1000, 1000])
    expect(retries.map((r) => backoffDelay(r, { ...policy, jitter: 'full' }, () => 0.5))).toEqual([50, 100, 200, 400, 500, 500])
    expect(retries.map((r) => backoffDelay(r, { ...policy, jitter: 'equal' }, () => 0.5))).toEqual([75, 150, 300, 600, 750, 750])
    expect(backoffDelay(3, { ...policy, jitter: 'full' }, () => 0)).toBe(0)
    expect(backoffDelay(3, { ...policy, jitter: 'equal' }, () => 0)).toBe(200)
  })

  it('a seeded random repeats its sequence', () => {
    const a = seededRandom(42)
    const b = seededRandom(42)
    const xs = Array.from({ length: 100 }, () => a())
    expect(Array.from({ length: 100 }, () => b())).toEqual(xs)
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true)
    expect(new Set(xs).size).toBe(100)
    expect(seededRandom(43)()).not.toBe(xs[0])
  })

  it('refuses bad policies', () => {
    const ctx = fakeContext()
    expect(() => retry(() => 1, { attempts: 0 }, ctx)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => retrying(() => 1, { jitter: 'some' as 'full' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
    expect(() => new RetryBudget({ ratio: -1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_OPTION' }))
  })
})

describe('retry', () => {
  it('succeeds after transient failures, waiting the policy backoff between attempts', async () => {
    const ctx = fakeContext()
    const service = flakyService(2)
    const policy: RetryPolicy = { attempts: 4, baseMs: 10, maxMs: 1000, jitter: 'full', random: seededRandom(7) }
    const attempts: number[] = []
    await expect(retry((attempt) => (attempts.push(attempt), service(1)), policy, ctx)).resolves.toBe(10)
    expect(attempts).toEqual([1, 2, 3])
    const expected = seededRandom(7)
    expect(ctx.slept).toEqual([backoffDelay(1, policy, expected), backoffDelay(2, policy, expected)])
    expect(ctx.slept[1]).toBeLessThan(20)
  })

  it('gives up after its attempts with RetriesExhaustedError, naming the operator, the attempts and the last error', async () => {
    const ctx = fakeContext()
    const events: RetryEvent[] = []
    const error = await retry(() => flakyService(0, new Set([1]))(1), { attempts: 3, baseMs: 10, jitter: 'none', onRetry: (e) => events.push(e) }, ctx).catch((e: unknown) => e)
    expect(error).toMatchObject({ code: 'ERR_RETRIES_EXHAUSTED', operator: 'enrich', instance: 0, attempts: 3 })
    expect((error as Error).message).toBe('enrich[0]: gave up after 3 attempts; last error: 503 for 1 (call 1)')
    expect(ctx.slept).toEqual([10, 20])
    expect(events.map((e) => [e.attempt, e.delayMs])).toEqual([
      [1, 10],
      [2, 20],
    ])
  })

  it('does not retry errors retryOn refuses, nor an aborted wait', async () => {
    const ctx = fakeContext()
    const permanent = new Error('404')
    await expect(retry(() => Promise.reject(permanent), { retryOn: (e) => e !== permanent }, ctx)).rejects.toBe(permanent)
    expect(ctx.slept).toEqual([])

    // The job shuts down while retry waits: the wait ends at once.
    const controller = new AbortController()
    const never: RetryContext = {
      info,
      sleep: () => {
        controller.abort(new Error('shutting down'))
        return new Promise<void>(() => undefined)
      },
    }
    await expect(retry(() => Promise.reject(new Error('503')), { attempts: 5 }, never, { signal: controller.signal })).rejects.toThrow('shutting down')
    await expect(retry(() => 1, {}, never, { signal: controller.signal })).rejects.toThrow('shutting down')
  })

  it('a retry budget allows ratio × first tries plus minPerSecond over its sliding window', () => {
    let clock = 0
    const budget = new RetryBudget({ ratio: 0.5, minPerSecond: 0, windowMs: 1000, now: () => clock })
    expect(budget.tryRetry()).toBe(false)
    budget.recordTry()
    budget.recordTry()
    expect(budget.tryRetry()).toBe(true)
    expect(budget.tryRetry()).toBe(false)
    clock = 950 // both tries and the retry are still in the window
    budget.recordTry()
    budget.recordTry()
    expect(budget.tryRetry()).toBe(true)
    expect(budget.tryRetry()).toBe(false)
    clock = 1500 // the first tries at 0 left the window: 2 tries, 1 retry remain
    expect(budget.tryRetry()).toBe(false)
    clock = 5000 // all gone
    budget.recordTry()
    budget.recordTry()
    expect(budget.tryRetry()).toBe(true)
    expect(budget.stats()).toEqual({ tries: 6, retries: 3, denied: 4 })

    const floor = new RetryBudget({ ratio: 0, minPerSecond: 2, windowMs: 1000, now: () => 0 })
    expect([floor.tryRetry(), floor.tryRetry(), floor.tryRetry()]).toEqual([true, true, false])
  })

  it('stops retrying with RetryBudgetExceededError when the budget is spent', async () => {
    const ctx = fakeContext()
    const budget = new RetryBudget({ ratio: 0, minPerSecond: 1, windowMs: 1000, now: () => 0 })
    const failing = () => Promise.reject(new Error('503'))
    await expect(retry(failing, { attempts: 5, budget }, ctx)).rejects.toMatchObject({ code: 'ERR_RETRY_BUDGET', attempts: 2, cause: { message: '503' } })
    await expect(retry(failing, { attempts: 5, budget }, ctx)).rejects.toMatchObject({ code: 'ERR_RETRY_BUDGET', attempts: 1 })
    expect(ctx.slept).toHaveLength(1)
  })
})

describe('retrying handlers in a job', () => {
  function pipeline(policy: RetryPolicy, service: (n: number) => Promise<number>) {
    const enriched: number[] = []
    const plain: number[] = []
    const src = source('src', t.number, [1, 2, 3, 4, 5])
    const handler = retrying<number, { out: t.NumberC }>(async (n, ctx) => ctx.emit('out', await service(n)), policy)
    const enrich = atom({ name: 'enrich', inputs: { in: t.number }, outputs: { out: t.number }, on: { in: handler } })
    const double = map('double', t.number, t.number, (n) => n * 2)
    const toEnriched = sink('enriched', t.number, enriched)
    const toPlain = sink('plain', t.number, plain)
    const p = program('p', {
      operators: [src, enrich, toEnriched, double, toPlain],
      links: [
        link(src.outputs.out, enrich.inputs.in),
        link(enrich.outputs.out, toEnriched.inputs.in),
        link(src.outputs.out, double.inputs.in),
        link(double.outputs.out, toPlain.inputs.in),
      ],
    })
    return { p, enriched, plain, handler }
  }

  it('retries transient failures, records exhausted records as dead letters with their cause, and leaves other operators alone', async () => {
    const delays: number[] = []
    const { p, enriched, plain, handler } = pipeline({ attempts: 4, baseMs: 1, jitter: 'none', onRetry: (e) => delays.push(e.delayMs) }, flakyService(2, new Set([4])))
    const report = await kernel.run(p).done

    expect(enriched).toEqual([10, 20, 30, 50])
    expect(plain).toEqual([2, 4, 6, 8, 10])
    expect(report.deadLetters.map((d) => [d.code, d.value, d.where.operator])).toEqual([['ERR_RETRIES_EXHAUSTED', 4, 'enrich']])
    expect(report.deadLetters[0]!.message).toBe('enrich[0]: gave up after 4 attempts; last error: 503 for 4 (call 4)')
    expect(report.deadLetters[0]!.error.cause).toBeInstanceOf(Error)
    // Records 1, 2, 3 and 5 fail twice each (waits 1, 2); record 4 fails four times (waits 1, 2, 4).
    expect(delays).toEqual([1, 2, 1, 2, 1, 2, 1, 2, 4, 1, 2])
    expect(handler.stats()).toEqual({ calls: 5, retries: 11, recovered: 4, exhausted: 1, budgetExceeded: 0 })
  })

  it('records a dead letter with ERR_RETRY_BUDGET when the budget is spent', async () => {
    const budget = new RetryBudget({ ratio: 0, minPerSecond: 0.1, windowMs: 10_000, now: () => 0 }) // one retry in all
    const { p, enriched, plain, handler } = pipeline({ attempts: 3, baseMs: 1, budget }, flakyService(0, new Set([1, 2])))
    const report = await kernel.run(p).done

    expect(enriched).toEqual([30, 40, 50])
    expect(plain).toEqual([2, 4, 6, 8, 10])
    expect(report.deadLetters.map((d) => [d.code, d.value])).toEqual([
      ['ERR_RETRY_BUDGET', 1],
      ['ERR_RETRY_BUDGET', 2],
    ])
    expect(report.deadLetters[0]!.message).toBe('enrich[0]: retry budget spent, no retry after 2 attempts; last error: 503 for 1 (call 2)')
    expect(handler.stats()).toMatchObject({ calls: 5, retries: 1, budgetExceeded: 2 })
  })

  it('reports each retry as a layer event under the supervision layer', async () => {
    const { p, enriched } = pipeline({ attempts: 3, baseMs: 1, jitter: 'none' }, flakyService(1))
    const job = kernel.with(supervision()).run(p)
    const events: Extract<JobEvent, { type: 'layer' }>[] = []
    job.events.subscribe((e) => (e.type === 'layer' ? void events.push(e) : undefined))
    await job.done

    expect(enriched).toEqual([10, 20, 30, 40, 50])
    expect(events.map((e) => [e.kind, (e.data as RetryEvent).attempt])).toEqual([1, 2, 3, 4, 5].map(() => ['retry', 1]))
    expect(events[0]).toMatchObject({ layer: 'supervision', data: { operator: 'enrich', instance: 0, delayMs: 1, error: '503 for 1 (call 1)' } })
    expect(events[0]!.message).toBe('enrich[0]: attempt 1 failed (503 for 1 (call 1)); retrying in 1 ms')
  })
})
