import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generatePsk } from '../../kmods/transport/psk.js'
import { memoryLogger } from '../../kmods/transport/logger.js'
import { Peer } from './peer.js'
import { SubmissionRefusedError } from './errors.js'
import { loadOrCreateIdentity } from '../../kmods/transport/identity.js'
import { results } from './fixtures/count-program.js'
import buildCrash from './fixtures/crash-program.js'
import { kernel } from '../../kernel/index.js'
import { until } from 'lamina/testing'

const fixture = new URL('./fixtures/count-program.ts', import.meta.url).pathname
const planOnce = new URL('./fixtures/plan-once-program.ts', import.meta.url).pathname
const crash = new URL('./fixtures/crash-program.ts', import.meta.url).pathname

describe('peers running a job together (real libp2p on loopback)', () => {
  let dir: string
  const peers: Peer[] = []
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-peer-'))
    const psk = generatePsk()
    peers.push(await Peer.start({ workdir: join(dir, 'p0'), psk, logger: memoryLogger() }))
    // The others join through the first; gossip spreads the rest.
    for (let i = 1; i < 3; i++) peers.push(await Peer.start({ workdir: join(dir, `p${i}`), psk, logger: memoryLogger(), bootstrap: peers[0]!.multiaddrs() }))
    for (const p of peers) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('membership did not converge in 10 s')), 10_000)
        const check = (): void => {
          if (p.membership.members().filter((m) => m.status === 'alive').length === 3) {
            clearTimeout(timer)
            subscription.unsubscribe()
            resolve()
          }
        }
        const subscription = p.membership.events.subscribe(check)
        check()
      })
    }
  })
  afterAll(async () => {
    await Promise.all(peers.map((p) => p.stop()))
    await rm(dir, { recursive: true, force: true })
  })

  it('refuses, on each peer that lacks it, a package the program imports: a typed error naming the peer and the version', async () => {
    // A program in a project of its own, importing a package only that project has.
    const home = join(dir, 'project')
    await mkdir(join(home, 'node_modules', 'only-here'), { recursive: true })
    await symlink(join(import.meta.dirname, '..', '..'), join(home, 'node_modules', 'lamina'))
    await writeFile(join(home, 'node_modules', 'only-here', 'package.json'), JSON.stringify({ name: 'only-here', version: '1.0.0', type: 'module', exports: './index.js' }))
    await writeFile(join(home, 'node_modules', 'only-here', 'index.js'), 'export const double = (n) => 2 * n\n')
    await writeFile(
      join(home, 'main.ts'),
      [
        "import { map, program, sink, source, t, link } from 'lamina'",
        "import { double } from 'only-here'",
        'export default () => {',
        "  const s = source('s', t.number, [1])",
        "  const m = map('m', t.number, t.number, double)",
        "  const o = sink('o', t.number, [])",
        "  return program('needs-only-here', { operators: [s, m, o], links: [link(s.outputs.out, m.inputs.in), link(m.outputs.out, o.inputs.in)] })",
        '}',
      ].join('\n'),
    )
    const job = await peers[0]!.submit(join(home, 'main.ts'), { workers: [peers[1]!.id] })
    const failure = await job.done.then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(failure).toBeInstanceOf(SubmissionRefusedError)
    expect(failure).toMatchObject({ peer: peers[1]!.id, remoteCode: 'ERR_DEPENDENCY_MISMATCH' })
    expect((failure as Error).message).toContain(`peer ${peers[1]!.id} cannot run main.ts: only-here 1.0.0 is not installed here`)
  })

  it('spreads operators over the members and streams results back to the submitter', async () => {
    results.length = 0
    const job = await peers[0]!.submit(fixture, { args: ['3000', '7'] })
    const report = await job.done
    expect(results.sort((a, b) => a[0] - b[0])).toEqual(Array.from({ length: 7 }, (_, k) => [k, Math.ceil((3000 - k) / 7)]))
    // counter's three instances ran on the two other peers, round robin in id order; numbers and out on the submitter.
    const workers = [peers[1]!.id, peers[2]!.id].sort()
    expect(['counter#0', 'counter#1', 'counter#2'].map((k) => job.plan[k])).toEqual([workers[0], workers[1], workers[0]])
    expect([job.plan['numbers#0'], job.plan['out#0']]).toEqual([peers[0]!.id, peers[0]!.id])
    expect(Object.keys(report.stats).sort()).toEqual(peers.map((p) => p.id).sort())
    const counted = Object.values(report.stats)
      .flatMap((s) => s.instances)
      .filter((i) => i.operator === 'counter')
      .reduce((n, i) => n + i.recordsIn, 0)
    expect(counted).toBe(3000)
    expect(report.deadLetters).toEqual([])
  })

  it('plans once, on the submitter: the other peers run the planned program and run no plan hook', async () => {
    results.length = 0
    const job = await peers[0]!.submit(planOnce, { args: ['300', '3'] })
    const report = await job.done
    expect(results.sort((a, b) => a[0] - b[0])).toEqual([
      [0, 100],
      [1, 100],
      [2, 100],
    ])
    expect(job.program.operators.find((o) => o.name === 'counter')!.annotations.labels).toEqual([`planned-by-${peers[0]!.id}`])
    const counted = Object.values(report.stats)
      .flatMap((s) => s.instances)
      .filter((i) => i.operator === 'counter')
      .reduce((n, i) => n + i.recordsIn, 0)
    expect(counted).toBe(300)
    expect(report.deadLetters).toEqual([])
  })

  it('fails a job whose operator crashes with the code it has in one process (ERR_JOB_FAILED), naming the peer', async () => {
    const inProcess = await kernel.run(buildCrash(['100'])).done.then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(inProcess).toMatchObject({ code: 'ERR_JOB_FAILED' })
    const job = await peers[0]!.submit(crash, { args: ['100'] })
    const failure = await job.done.then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(failure).toMatchObject({ code: 'ERR_JOB_FAILED', cause: { code: 'ERR_REMOTE_JOB', remoteCode: 'ERR_JOB_FAILED' } })
    expect((failure as Error).message).toContain('42 is not welcome')
    const where = (failure as { cause: { peer: string } }).cause.peer
    expect([peers[1]!.id, peers[2]!.id]).toContain(where)
  })
})

describe('authorization: which peers may submit', () => {
  let dir: string
  const peers: Peer[] = []
  const strict = memoryLogger()
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-authz-'))
    const psk = generatePsk()
    // p0 submits; p1 allows only p2 to submit, p2 allows p0.
    peers.push(await Peer.start({ workdir: join(dir, 'p0'), psk, logger: memoryLogger() }))
    const p2Id = (await loadOrCreateIdentity(join(dir, 'p2'))).peerId
    peers.push(await Peer.start({ workdir: join(dir, 'p1'), psk, logger: strict, bootstrap: peers[0]!.multiaddrs(), submitters: [p2Id] }))
    peers.push(await Peer.start({ workdir: join(dir, 'p2'), psk, logger: memoryLogger(), bootstrap: peers[0]!.multiaddrs(), submitters: [peers[0]!.id] }))
    await until(() => peers[0]!.membership.members().filter((m) => m.status === 'alive').length === 3, 10_000, 'membership to see the three peers')
  })
  afterAll(async () => {
    await Promise.all(peers.map((p) => p.stop()))
    await rm(dir, { recursive: true, force: true })
  })

  it('a peer refuses a share from a submitter it does not list: typed error on the submitter, a log line naming it, no retry', async () => {
    const [p0, p1, p2] = peers as [Peer, Peer, Peer]
    const job = await p0.submit(fixture, { args: ['100', '3'], workers: [p1.id] })
    const failure = await job.done.then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(failure).toBeInstanceOf(SubmissionRefusedError)
    expect(failure).toMatchObject({ code: 'ERR_SUBMISSION_REFUSED', peer: p1.id, remoteCode: 'ERR_NOT_AUTHORIZED' })
    expect(strict.lines).toContainEqual(expect.stringMatching(new RegExp(`^warn: refused job \\S+ from ${p0.id}: not one of the 1 peers allowed to submit$`)))
    // A listed submitter is served as before.
    results.length = 0
    const allowed = await p0.submit(fixture, { args: ['100', '3'], workers: [p2.id] })
    await allowed.done
    expect(results.reduce((n, [, count]) => n + count, 0)).toBe(100)
  })
})
