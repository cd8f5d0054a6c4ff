// Durable requests on the KV store of 3 real peer processes: results, retries with backoff,
// timeouts, codec refusals and dead letters with their cause, idempotency keys, cancel and retry by
// hand, workflows journaled step by step, `lamina requests`; and 10 seeded schedules that SIGKILL
// the worker process running a workflow, a worker mid-request, or the leader of a shard of the
// store: every request and workflow completes with a fault-free run's result, and every effect is
// applied once.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { appendFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as t from 'io-ts'
import { type Cluster, startCluster } from 'lamina/cluster'
import { type Kv, startKv } from 'lamina/kv'
import { until, untilMembersAlive } from 'lamina/testing'
import { loadOrCreateIdentity, memoryLogger } from 'lamina/transport'
import { seededRandom } from 'lamina'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type Durable, durable, RequestCancelledError, RequestDeadError, workflowSteps } from './index.js'

const workerScript = join(import.meta.dirname, 'fixtures', 'worker.ts')

describe('durable requests on the KV store', () => {
  let dir: string
  let cluster: Cluster
  let kv: Kv
  let d: Durable
  const children = new Set<ChildProcess>()
  /** What each worker process wrote on stderr (failed attempts), shown when a schedule does not finish. */
  const logs = new Map<string, string>()

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-durable-'))
    cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger(), policy: { kind: 'restart', max: 100, withinMs: 3_600_000 } })
    kv = await startKv(cluster, { shards: 2, replicas: 3, readyTimeoutMs: 30_000 })
    for (const w of ['w1', 'w2']) await appendFile(join(dir, 'allowlist'), `${(await loadOrCreateIdentity(join(dir, w))).peerId}\n`)
    d = durable(kv)
  }, 90_000)

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await kv?.stop()
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  }, 60_000)

  it('answers, retries with backoff, times out, refuses what its codec refuses, and ends in a dead letter with its cause; other requests keep flowing', async () => {
    let flaky = 0
    const workers = [
      d.serve('double', (n: number) => n * 2, { input: t.number, output: t.number, sweepMs: 50 }),
      d.serve(
        'flaky',
        () => {
          if (++flaky < 3) throw new Error(`failure ${flaky}`)
          return 'third time'
        },
        { sweepMs: 50 },
      ),
      d.serve('hang', (_: unknown, ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason))), { sweepMs: 50 }),
      // A handler whose answer its own codec refuses (a bug the types would catch, so forced here).
      d.serve('liar', () => 'not a number' as unknown as number, { output: t.number, sweepMs: 50 }),
    ]
    try {
      const fast = { retry: { attempts: 3, baseMs: 20, maxMs: 50 } }
      const [doubled, third, hung, lied, badInput, many] = await Promise.allSettled([
        d.call<number>('double', 21, fast),
        d.call<string>('flaky', null, fast),
        d.call('hang', null, { ...fast, timeoutMs: 200 }),
        d.call('liar', null, fast),
        d.call('double', 'twenty-one', fast),
        Promise.all(Array.from({ length: 20 }, (_, i) => d.call<number>('double', i, fast))),
      ])
      expect(doubled).toEqual({ status: 'fulfilled', value: 42 })
      expect(third).toEqual({ status: 'fulfilled', value: 'third time' })
      expect(many).toEqual({ status: 'fulfilled', value: Array.from({ length: 20 }, (_, i) => i * 2) })
      // Hanging past its timeout, three times: a dead letter whose cause is the timeout.
      expect(hung.status === 'rejected' && hung.reason).toBeInstanceOf(RequestDeadError)
      expect(hung.status === 'rejected' && hung.reason).toMatchObject({ code: 'ERR_REQUEST_DEAD', request: 'hang', attempts: 3, failure: { code: 'ERR_REQUEST_TIMEOUT' } })
      expect(lied.status === 'rejected' && lied.reason).toMatchObject({ code: 'ERR_REQUEST_DEAD', attempts: 3, failure: { code: 'ERR_REQUEST_CODEC' } })
      // An input the worker's codec refuses is not retried: dead after one attempt.
      expect(badInput.status === 'rejected' && badInput.reason).toMatchObject({ code: 'ERR_REQUEST_DEAD', attempts: 1, failure: { code: 'ERR_REQUEST_CODEC' } })
      expect(String(badInput.status === 'rejected' && badInput.reason.failure.message)).toContain('input')
      // The journal keeps each attempt, and the backoff between them.
      const flakyRecord = (await d.list({ name: 'flaky' }))[0]!
      expect(flakyRecord.history.map((h) => h.outcome)).toEqual(['failed', 'failed', 'succeeded'])
      expect(flakyRecord.history.map((h) => h.error?.message)).toEqual(['failure 1', 'failure 2', undefined])
      expect(await d.list({ name: 'hang', state: 'dead' })).toHaveLength(1)
    } finally {
      for (const w of workers) await w.stop()
    }
  }, 60_000)

  it('an idempotency key names one request: the result is journaled once and never recomputed; cancel and retry by hand', async () => {
    let runs = 0
    const worker = d.serve(
      'charge',
      (amount: number) => {
        runs++
        return { charged: amount }
      },
      { input: t.number, sweepMs: 50 },
    )
    try {
      const first = await d.call('charge', 5, { idempotencyKey: 'order-1' })
      const again = await d.call('charge', 5, { idempotencyKey: 'order-1' })
      expect([first, again, runs]).toEqual([{ charged: 5 }, { charged: 5 }, 1])
      await expect(d.call('charge', 6, { idempotencyKey: 'order-1' })).rejects.toMatchObject({ code: 'ERR_REQUEST_CONFLICT', id: 'order-1' })
      await expect(d.show('charge', 'nope')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_REQUEST' })
    } finally {
      await worker.stop()
    }
    // Nobody serves `later` yet: cancelled while queued, its caller is told; retried, a worker then answers it.
    const id = await d.submit('later', 1, { idempotencyKey: 'later-1' })
    const waiting = d.result('later', id)
    await d.cancel('later', id)
    await expect(waiting).rejects.toBeInstanceOf(RequestCancelledError)
    expect((await d.retry('later', id)).state).toBe('queued')
    const late = d.serve('later', (n: number) => n + 1, { input: t.number, sweepMs: 50 })
    try {
      expect(await d.result('later', id)).toBe(2)
    } finally {
      await late.stop()
    }
  }, 60_000)

  it('a workflow journals each step: a result once, never recomputed; a replay that asks for another step is refused', async () => {
    const counts = { charge: 0, ship: 0 }
    const workers = [
      d.serve('charge', (amount: number) => ({ charged: amount, n: ++counts.charge }), { input: t.number, sweepMs: 50 }),
      d.serve('ship', (order: string) => ({ shipped: order, n: ++counts.ship }), { input: t.string, sweepMs: 50 }),
      d.workflow(
        'order',
        async (w, order: { id: string; amount: number }) => {
          const charged = await w.call<{ charged: number }>('charge', order.amount)
          await w.sleep(100)
          const shipped = await w.call<{ shipped: string }>('ship', order.id)
          return { charged: charged.charged, shipped: shipped.shipped }
        },
        { sweepMs: 50 },
      ),
    ]
    try {
      const first = await d.runWorkflow('order', { id: 'o-1', amount: 30 }, { idempotencyKey: 'o-1' })
      expect(first).toEqual({ charged: 30, shipped: 'o-1' })
      expect(await workflowSteps(kv, 'order', 'o-1')).toEqual([
        { step: 1, kind: 'call', detail: 'charge' },
        { step: 2, kind: 'sleep', detail: '100 ms' },
        { step: 3, kind: 'call', detail: 'ship' },
      ])
      // The same run again (its key): its result, nothing called again.
      expect(await d.runWorkflow('order', { id: 'o-1', amount: 30 }, { idempotencyKey: 'o-1' })).toEqual(first)
      expect(counts).toEqual({ charge: 1, ship: 1 })
      // Replaying a run whose journal holds another first step than the code asks for: a dead letter naming the step.
      await kv.put(`_lamina/wf/order/o-2/${String(1).padStart(6, '0')}`, JSON.stringify({ kind: 'sleep', ms: 5, until: 0 }))
      const refused = await d.runWorkflow('order', { id: 'o-2', amount: 1 }, { idempotencyKey: 'o-2' }).catch((error: unknown) => error)
      expect(refused).toMatchObject({ code: 'ERR_REQUEST_DEAD', attempts: 1, failure: { code: 'ERR_WORKFLOW_DETERMINISM' } })
      expect(String((refused as RequestDeadError).failure.message)).toContain('step 1: the journal has sleep 5 ms')
    } finally {
      for (const w of workers) await w.stop()
    }
  }, 60_000)

  it('a handler under isolation runs in a process of its own: one that exits, spins past its timeout or throws fails only its attempts, ending as a dead letter with its cause; the worker goes on', async () => {
    const module = join(import.meta.dirname, 'fixtures', 'handlers.ts')
    const worker = d.serveIsolated('iso', { module, export: 'handle' }, { sweepMs: 50, concurrency: 4 })
    try {
      const twice = { retry: { attempts: 2, baseMs: 20, maxMs: 50 } }
      // Attempts running beside a crash fail with it and are retried: the good request has more of them.
      // (An exit can take an attempt of the good request with it; its last attempt is then its own.)
      const patient = { retry: { attempts: 8, baseMs: 20, maxMs: 50 } }
      const [good, exited] = await Promise.allSettled([d.call<{ tripled: number; pid: number }>('iso', { n: 7 }, patient), d.call('iso', { n: 1, exit: true }, twice)])
      const threw = await Promise.allSettled([d.call('iso', { n: 3, throw: true }, twice)]).then(([one]) => one!)
      expect(good).toMatchObject({ status: 'fulfilled', value: { tripled: 21 } })
      expect(good.status === 'fulfilled' && good.value.pid).not.toBe(process.pid)
      expect(exited.status === 'rejected' && exited.reason).toMatchObject({ code: 'ERR_REQUEST_DEAD', attempts: 2, failure: { code: 'ERR_REQUEST_HANDLER_CRASHED' } })
      expect(exited.status === 'rejected' && String(exited.reason.failure.message)).toContain('exit code 3')
      expect(threw.status === 'rejected' && threw.reason).toMatchObject({ code: 'ERR_REQUEST_DEAD', failure: { code: 'ERR_REFUSED', message: 'refused 3' } })
      // A handler that spins cannot be interrupted: past its timeout its process is stopped.
      const spun = await d.call('iso', { n: 2, spin: true }, { ...twice, timeoutMs: 500 }).catch((error: unknown) => error)
      expect(spun).toMatchObject({ code: 'ERR_REQUEST_DEAD', attempts: 2, failure: { code: 'ERR_REQUEST_TIMEOUT' } })
      // After all that, the same worker still answers, from a new process.
      expect(await d.call('iso', { n: 5 }, patient)).toMatchObject({ tripled: 15 })
    } finally {
      await worker.stop()
    }
  }, 60_000)

  it('`lamina requests` lists, shows, retries and cancels requests from the shell', async () => {
    const cli = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'lamina.js')
    await appendFile(join(dir, 'allowlist'), `${(await loadOrCreateIdentity(join(dir, 'cli'))).peerId}\n`)
    const connection = ['--cluster', cluster.members()[0]!.multiaddrs[0]!, '--psk', join(dir, 'swarm.key'), '--workdir', join(dir, 'cli')]
    const lamina = (...args: string[]): Promise<{ code: number | null; out: string; err: string }> =>
      new Promise((resolve) => {
        execFile(process.execPath, [cli, 'requests', ...args, ...connection], (error, out, err) => resolve({ code: error === null ? 0 : (error.code as number | null), out, err }))
      })
    // A request nobody serves, cancelled: listed, shown, queued again by hand.
    const id = await d.submit('shell', { n: 1 }, { idempotencyKey: 'shell-1' })
    await d.cancel('shell', id)
    const listed = await lamina('ls', '--name', 'shell')
    expect(listed.code).toBe(0)
    expect(listed.out).toMatch(/^shell\/shell-1 {2}cancelled {2}attempts 0\/5 .*\[ERR_REQUEST_CANCELLED\] cancelled$/m)
    const shown = await lamina('show', 'shell', 'shell-1')
    expect(JSON.parse(shown.out)).toMatchObject({ id: 'shell-1', name: 'shell', input: { n: 1 }, state: 'cancelled' })
    expect(JSON.parse((await lamina('retry', 'shell', 'shell-1')).out)).toMatchObject({ state: 'queued', attempts: 0, error: null })
    expect(JSON.parse((await lamina('cancel', 'shell', 'shell-1')).out)).toMatchObject({ state: 'cancelled' })
    // What is wrong is named: an unknown request (exit 1), a bad command line (exit 2).
    const unknown = await lamina('show', 'shell', 'nope')
    expect([unknown.code, unknown.err]).toEqual([1, expect.stringContaining('no request shell/nope is journaled')])
    const bad = await lamina('ls', '--state', 'sleeping')
    expect([bad.code, bad.err]).toEqual([2, expect.stringContaining('--state must be one of queued, running, succeeded, dead, cancelled')])
  }, 60_000)

  /** Starts worker process `name` (w1, w2), resolving once it serves. */
  async function startWorker(name: string): Promise<ChildProcess> {
    const contact = cluster.members()[0]!.multiaddrs[0]!
    const child = spawn(
      process.execPath,
      ['--import', import.meta.resolve('tsx'), '--conditions', 'source', workerScript, join(dir, name), join(dir, 'swarm.key'), contact, name],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    )
    children.add(child)
    child.on('exit', () => children.delete(child))
    let err = ''
    child.stderr!.on('data', (chunk: Buffer) => {
      err += chunk.toString()
      logs.set(name, (logs.get(name) ?? '') + chunk.toString())
    })
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => chunk.toString().includes('serving') && resolve())
      child.on('exit', (code) => reject(new Error(`worker ${name} exited ${code}: ${err}`)))
    })
    return child
  }

  it('10 seeded schedules SIGKILL the worker running a workflow, a worker mid-request, or a shard leader of the store: every request and workflow completes, each effect applied once', async () => {
    const workers: Record<string, ChildProcess> = { w1: await startWorker('w1'), w2: await startWorker('w2') }
    const summary: string[] = []
    try {
      for (let seed = 1; seed <= 10; seed++) {
        const random = seededRandom(seed)
        await untilMembersAlive(cluster, 60_000)
        const retry = { attempts: 10, baseMs: 50, maxMs: 500 }
        const requests = Array.from({ length: 24 }, (_, i) => ({ n: seed * 100 + i, ms: 150 + Math.floor(random() * 350) }))
        const calls = requests.map((input) => d.call<{ doubled: number }>('effect', input, { idempotencyKey: `s${seed}-${input.n}`, retry }))
        // And workflows of three steps (an effect, a sleep, an effect), served by the same workers.
        const flows = Array.from({ length: 3 }, (_, i) => ({ id: `p${seed}-${i}`, n: seed * 100 + 50 + i, ms: 150 + Math.floor(random() * 200) }))
        const runs = flows.map((f) => d.runWorkflow<{ total: number }>('pipeline', { n: f.n, ms: f.ms }, { idempotencyKey: f.id, retry }))
        // Once some attempts run and a workflow journaled a step, the seeded fault: the worker running
        // a workflow (seed % 3 = 0), the leader of a shard of the store (1), a worker running requests (2).
        await until(
          async () => (await kv.scan({ prefix: `applied/s${seed}-` })).length >= 4 && (await kv.scan({ prefix: `_lamina/wf/pipeline/p${seed}-` })).length >= 1,
          30_000,
          'attempts to start and a workflow step to be journaled',
        )
        const kind = seed % 3
        let fault: string
        if (kind === 1) {
          const shard = kv.shards[Math.floor(random() * kv.shards.length)]!
          const leader = (await kv.status()).find((s) => s.shard === shard && s.isLeader)?.leader
          const member = cluster.members().find((m) => m.peerId === leader)
          fault = `SIGKILL the leader of ${shard} (${leader?.slice(-6) ?? 'none'})`
          if (member?.pid !== undefined) process.kill(member.pid, 'SIGKILL')
        } else {
          // A worker that runs what is asked for at this moment (one may run it all): killing it loses attempts.
          const target = kind === 0 ? 'wf.pipeline' : 'effect'
          let held: string[] = []
          await until(
            async () => {
              held = (await d.list({ name: target, state: 'running' })).filter((r) => r.id.startsWith(kind === 0 ? `p${seed}-` : `s${seed}-`)).map((r) => r.worker!)
              return held.length > 0
            },
            30_000,
            `a worker to run ${target}`,
          )
          const victim = held[Math.floor(random() * held.length)]!
          workers[victim]!.kill('SIGKILL')
          fault = `SIGKILL worker ${victim} (running ${kind === 0 ? 'a workflow' : 'requests'})`
          workers[victim] = await startWorker(victim)
        }
        let timer: NodeJS.Timeout | undefined
        const [results, totals] = await Promise.race([
          Promise.all([Promise.all(calls), Promise.all(runs)]),
          new Promise<never>((_, reject) => {
            timer = setTimeout(async () => {
              const open = [...(await d.list({ name: 'effect' })), ...(await d.list({ name: 'wf.pipeline' }))].filter(
                (r) => (r.id.startsWith(`s${seed}-`) || r.id.startsWith(`p${seed}-`)) && r.state !== 'succeeded',
              )
              const tails = [...logs].map(([w, text]) => `${w}: ${text.split('\n').slice(-8).join(' | ')}`).join('; ')
              reject(new Error(`seed ${seed} (${fault}): ${open.length} requests not done after 60 s: ${JSON.stringify(open.slice(0, 2))}; workers: ${tails}`))
            }, 60_000)
          }),
        ]).finally(() => clearTimeout(timer))
        // Results equal a fault-free run's; every effect applied once (a create-only key, version 1).
        expect(results).toEqual(requests.map((r) => ({ doubled: r.n * 2 })))
        expect(totals).toEqual(flows.map((f) => ({ total: f.n * 2 + (f.n + 1000) * 2 })))
        const effects = await kv.scan({ prefix: `effect/s${seed}-` })
        expect(effects.map((e) => [e.key, e.value, e.version])).toEqual(
          requests.map((r) => [`effect/s${seed}-${r.n}`, String(r.n), 1]).sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
        )
        const stepEffects = await kv.scan({ prefix: `effect/p${seed}-` })
        expect(stepEffects.map((e) => [e.key, e.value, e.version])).toEqual(
          flows
            .flatMap((f) => [
              [`effect/${f.id}.1`, String(f.n), 1],
              [`effect/${f.id}.3`, String(f.n + 1000), 1],
            ])
            .sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
        )
        // Each workflow journaled its three steps (create-only: a step is journaled once).
        for (const f of flows) expect((await workflowSteps(kv, 'pipeline', f.id)).map((step) => step.kind)).toEqual(['call', 'sleep', 'call'])
        const records = await Promise.all(requests.map((r) => d.show('effect', `s${seed}-${r.n}`)))
        const lost = records.filter((r) => r.history.some((h) => h.outcome === 'lost')).length
        const resumed = (await Promise.all(flows.map((f) => d.show('wf.pipeline', f.id)))).filter((r) => r.history.some((h) => h.outcome === 'lost')).length
        const attempts = (await kv.scan({ prefix: `applied/s${seed}-` })).length
        if (kind === 2) expect(lost).toBeGreaterThan(0)
        if (kind === 0) expect(resumed).toBeGreaterThan(0)
        summary.push(
          `seed ${seed}: ${fault}; ${attempts} attempts for ${requests.length} requests, ${lost} redelivered after a lost worker; ${resumed} of ${flows.length} workflows resumed elsewhere`,
        )
      }
    } finally {
      process.stderr.write(`durable: ${summary.join('\n  ')}\n`)
      for (const child of Object.values(workers)) child.kill('SIGKILL')
    }
  }, 600_000)
})
