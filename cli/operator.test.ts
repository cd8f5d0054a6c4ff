// The operator's commands against a running cluster, as an operator runs them: two `lamina peer`
// processes on loopback, admitted by a swarm key and an allowlist, and the compiled CLI as client.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from 'lamina/testing'
import { eventAt } from './fixtures/resumable-totals.js'

const root = join(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli', 'lamina.js')
const exec = promisify(execFile)
const count = join(root, 'services', 'jobs', 'fixtures', 'count-program.ts')
const endless = join(root, 'services', 'jobs', 'fixtures', 'endless-program.ts')
const totals = join(import.meta.dirname, 'fixtures', 'resumable-totals.ts')
const upgradeV1 = join(root, 'services', 'jobs', 'fixtures', 'upgrade-v1.ts')
const upgradeV2 = join(root, 'services', 'jobs', 'fixtures', 'upgrade-v2.ts')

interface Run {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

describe('the operator CLI against a running cluster', () => {
  let dir: string
  const peers: ChildProcess[] = []
  const logs: string[] = []
  let config: string
  /** A client admitted (in --allow) but not allowed to submit. */
  let reader: string
  const ids: Record<string, string> = {}

  /** Runs `lamina ARGS`; resolves with its exit status and output whatever the status. */
  async function lamina(args: readonly string[], env: Record<string, string> = { LAMINA_CONFIG: config }): Promise<Run> {
    try {
      const { stdout, stderr } = await exec(process.execPath, [cli, ...args], { cwd: root, env: { ...process.env, ...env }, timeout: 120_000 })
      return { code: 0, stdout, stderr }
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string }
      return { code: e.code, stdout: e.stdout, stderr: e.stderr }
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-operator-'))
    for (const name of ['p1', 'p2', 'client', 'reader', 'stranger']) ids[name] = (await lamina(['id', '--workdir', join(dir, name), '--create'])).stdout.trim()
    await writeFile(join(dir, 'allow'), ['p1', 'p2', 'client', 'reader'].map((n) => ids[n]).join('\n'))
    await writeFile(join(dir, 'submitters'), ['p1', 'p2', 'client'].map((n) => ids[n]).join('\n'))
    const common = ['--psk', join(dir, 'swarm.key'), '--allow', join(dir, 'allow'), '--submitters', join(dir, 'submitters')]
    for (const [i, name] of ['p1', 'p2'].entries()) {
      const bootstrap = i === 0 ? ['--create-psk'] : ['--bootstrap', /listening on (\S+)/.exec(logs[0]!)![1]!]
      const peer = spawn(process.execPath, [cli, 'peer', '--workdir', join(dir, name), ...common, ...bootstrap], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] })
      logs[i] = ''
      peer.stderr!.on('data', (chunk: Buffer) => (logs[i] += chunk.toString()))
      peers.push(peer)
      await until(() => logs[i]!.includes('listening on'), 30_000, `${name} to listen`)
    }
    const contact = /listening on (\S+)/.exec(logs[0]!)![1]!
    config = join(dir, 'lamina.json')
    await writeFile(config, JSON.stringify({ cluster: [contact], psk: join(dir, 'swarm.key'), workdir: join(dir, 'client') }))
    reader = join(dir, 'reader.json')
    await writeFile(reader, JSON.stringify({ cluster: [contact], psk: join(dir, 'swarm.key'), workdir: join(dir, 'reader') }))
  }, 60_000)

  afterAll(async () => {
    for (const peer of peers) peer.kill('SIGTERM')
    await Promise.all(peers.map((p) => (p.exitCode === null ? new Promise((resolve) => p.once('exit', resolve)) : undefined)))
    await rm(dir, { recursive: true, force: true })
  })

  it('lists the members, from flags or a config file', async () => {
    let members: { peerId: string; status: string }[] = []
    for (const deadline = Date.now() + 15_000; Date.now() < deadline; ) {
      const run = await lamina(['members', '--json'])
      expect(run.code, run.stderr).toBe(0)
      members = JSON.parse(run.stdout) as typeof members
      if (members.filter((m) => m.status === 'alive').length === 2) break
    }
    expect(members.map((m) => m.peerId).sort()).toEqual([ids.p1, ids.p2].sort())
    const flags = await lamina(['members', '--cluster', JSON.parse(readFileSync(config, 'utf8')).cluster[0], '--psk', join(dir, 'swarm.key'), '--workdir', join(dir, 'client')], {})
    expect(flags.code, flags.stderr).toBe(0)
    expect(flags.stdout).toMatch(/^PEER\s+STATUS\s+ADDRESS\s+TAGS$/m)
  })

  it('submits a program, follows it to the end, and lists it', async () => {
    const run = await lamina(['submit', count, '--', '20000', '7'])
    expect(run.code, run.stderr).toBe(0)
    const [id, state] = run.stdout.trim().split(' ')
    expect(state).toBe('finished')
    expect(run.stderr).toContain(`job ${id} submitted to ${ids.p1}`)
    expect(run.stderr).toMatch(/counter\s+x3\s+in 20000 {2}out 7/)
    const jobs = await lamina(['jobs', '--json'])
    expect(jobs.code, jobs.stderr).toBe(0)
    const listed = (JSON.parse(jobs.stdout) as { id: string; state: string; records: number; coordinator: string; submittedBy: string }[]).find((j) => j.id === id)
    expect(listed).toMatchObject({ state: 'finished', records: 20000, coordinator: ids.p1, submittedBy: ids.client })
    const status = await lamina(['status', id!])
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toContain(`job ${id} (count): finished`)
    expect(status.stdout).toMatch(/numbers\s+x1\s+in 0 {2}out 20000/)
  })

  it('cancels a detached job: it stops on every peer and is listed as cancelled', async () => {
    const submitted = await lamina(['submit', endless, '--detach'])
    expect(submitted.code, submitted.stderr).toBe(0)
    const id = submitted.stdout.trim()
    const running = await lamina(['jobs'])
    expect(running.stdout).toMatch(new RegExp(`^${id}\\s+running\\s+endless`, 'm'))
    const cancelled = await lamina(['cancel', id])
    expect(cancelled.code, cancelled.stderr).toBe(0)
    expect(cancelled.stdout.trim()).toBe(`${id}: cancelled`)
    const status = await lamina(['status', id, '--json'])
    expect(JSON.parse(status.stdout)).toMatchObject({ state: 'cancelled', error: { code: 'ERR_JOB_ABORTED' } })
    expect(logs[0]).toContain(`job ${id}: cancelled by ${ids.client}`)
  })

  it('`lamina upgrade` refuses a version whose state codec changed without a migration, then upgrades to one with it', async () => {
    // Paced to about 12 s: long enough for two CLI runs (each bundles and loads the program first).
    const records = 600_000
    const file = join(dir, 'upgraded.jsonl')
    const submitted = await lamina(['submit', upgradeV1, '--detach', '--', String(records), file])
    expect(submitted.code, submitted.stderr).toBe(0)
    const id = submitted.stdout.trim()
    const refused = await lamina(['upgrade', id, upgradeV2, '--', String(records), file, 'unmigrated'])
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toContain('ERR_UPGRADE_STATE')
    expect(refused.stderr).toContain('count: cannot upgrade its state from { count: number } to { count: number, doubled: number }')
    const upgraded = await lamina(['upgrade', id, upgradeV2, '--', String(records), file])
    expect(upgraded.code, `${upgraded.stderr}\n${upgraded.stdout}`).toBe(0)
    expect(upgraded.stdout).toMatch(new RegExp(`^${id}: code [0-9a-f]{12} -> [0-9a-f]{12} from checkpoint \\d+, paused \\d+ ms \\(attempt 1\\)$`, 'm'))
    expect(upgraded.stderr).toContain('migrated count ({ count: number } -> { count: number, doubled: number }); added tag')
    // Reattached: follows the job to its end.
    const followed = await lamina(['status', id, '--follow'])
    expect(followed.code, followed.stderr).toBe(0)
    expect(followed.stdout.trim()).toBe(`${id} finished`)
    expect(followed.stderr).toContain('upgraded to code')
    const status = JSON.parse((await lamina(['status', id, '--json'])).stdout) as { state: string; upgrades: number }
    expect(status).toMatchObject({ state: 'finished', upgrades: 1 })
    const finals = readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { final: boolean; count: number; doubled?: number; tag?: string })
      .filter((o) => o.final)
    expect(finals.length).toBe(16)
    expect(finals.reduce((n, o) => n + o.count, 0)).toBe(records)
    expect(finals.every((o) => o.doubled === o.count * 2 && o.tag === 'v2')).toBe(true)
  })

  it('rescales a running job, takes a savepoint of it, and a new job started from that resumes there and computes the same totals', async () => {
    // Long enough (about 10 s of work in one instance) to be rescaled and saved before it ends.
    const records = 100_000
    const first = join(dir, 'first.jsonl')
    const second = join(dir, 'second.jsonl')
    const submitted = await lamina(['submit', totals, '--detach', '--', String(records), first, '100'])
    expect(submitted.code, submitted.stderr).toBe(0)
    const id = submitted.stdout.trim()
    // Rescaled while it runs: the keyed totals move to two instances.
    const rescaled = await lamina(['rescale', id, 'totals', '2'])
    expect(rescaled.code, rescaled.stderr).toBe(0)
    expect(rescaled.stdout).toMatch(new RegExp(`^${id}: totals 1 -> 2 from checkpoint \\d+, paused \\d+ ms \\(attempt 1\\)$`, 'm'))
    // A savepoint (a checkpoint taken now, kept), then the job is cancelled before it ends.
    let saved: Run | undefined
    for (const deadline = Date.now() + 30_000; Date.now() < deadline && saved?.code !== 0; ) saved = await lamina(['savepoint', id])
    expect(saved?.code, saved?.stderr).toBe(0)
    const savepoint = saved!.stdout.trim()
    expect(savepoint).toMatch(new RegExp(`^${id}@\\d+$`))
    expect((await lamina(['cancel', id])).stdout.trim()).toBe(`${id}: cancelled`)
    const resumed = await lamina(['submit', totals, '--from-savepoint', savepoint, '--', String(records), second, '0'])
    expect(resumed.code, resumed.stderr).toBe(0)
    const resumedId = resumed.stdout.trim().split(' ')[0]!
    // The same totals as a run from the start; the resumed job read only the events after the savepoint.
    const reference = new Map<string, { count: number; sum: number }>()
    for (let i = 0; i < records; i++) {
      const e = eventAt(i)
      const s = reference.get(e.key) ?? { count: 0, sum: 0 }
      reference.set(e.key, { count: s.count + 1, sum: s.sum + e.value })
    }
    const got = readFileSync(second, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { key: string; count: number; sum: number })
    expect(new Map(got.map((r) => [r.key, { count: r.count, sum: r.sum }]))).toEqual(reference)
    const status = JSON.parse((await lamina(['status', resumedId, '--json'])).stdout) as { records: number; state: string }
    expect(status.state).toBe('finished')
    expect(status.records).toBeGreaterThan(0)
    expect(status.records).toBeLessThan(records)
  }, 120_000)

  it('refuses changes from a client that may not submit, naming it on both sides; it may still read', async () => {
    const refused = await lamina(['submit', count, '--detach', '--', '10', '2'], { LAMINA_CONFIG: reader })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain('ERR_NOT_AUTHORIZED')
    expect(refused.stderr).toContain(ids.reader)
    expect(logs[0]).toContain(`refused admin command submit from ${ids.reader}`)
    const read = await lamina(['jobs'], { LAMINA_CONFIG: reader })
    expect(read.code, read.stderr).toBe(0)
  })

  it('says which client the cluster does not admit, and exits 1; added to the --allow file, it is admitted with no restart', async () => {
    const stranger = join(dir, 'stranger.json')
    await writeFile(stranger, JSON.stringify({ ...JSON.parse(readFileSync(config, 'utf8')), workdir: join(dir, 'stranger') }))
    const run = await lamina(['members', '--timeout', '3000'], { LAMINA_CONFIG: stranger })
    expect(run.code).toBe(1)
    expect(run.stderr).toContain(`no member of the cluster answers this client (${ids.stranger})`)
    await appendFile(join(dir, 'allow'), `\n${ids.stranger}\n`)
    const admitted = await lamina(['members', '--timeout', '3000'], { LAMINA_CONFIG: stranger })
    expect(admitted.code, admitted.stderr).toBe(0)
    expect(logs[0]).toMatch(/--allow \S+ changed: 5 peer ids/)
  })

  it('says what is wrong with a command line, and exits 2', async () => {
    const missing = await lamina(['status'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain('lamina status: JOB is missing')
    const noCluster = await lamina(['jobs'], {})
    expect(noCluster.code).toBe(2)
    expect(noCluster.stderr).toContain('no cluster address')
    const bad = await lamina(['rescale', 'job', 'op', 'zero'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('N must be a positive integer, got zero')
  })
})
