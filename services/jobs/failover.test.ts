// No master for a job: failover jobs on 3 real peer processes (and this process's peer), each
// coordinated by a peer process that is SIGKILLed mid-job (at a seeded moment) or during a
// checkpoint (the instant its record reaches the KV store, before its output is committed). Another
// peer takes the coordinator's role over and resumes the job from its last complete checkpoint;
// the output in the transactional KV is exact every time (every key once, each written once), and
// no two peers ever coordinated the same attempt (each attempt's claim in the store names one).
import { appendFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AdminClient, type Cluster, packProgram, type PackedProgram, startCluster } from 'lamina/cluster'
import { kvLayoutArg, type Kv, roleKey, startKv } from 'lamina/kv'
import { failoverJob, untilMembersAlive, until } from 'lamina/testing'
import { loadOrCreateIdentity, memoryLogger, readPskFile } from 'lamina/transport'
import { seededRandom } from 'lamina'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CoordinatorFencedError } from './errors.js'
import { attemptClaims, Coordination, jobRecordKey, jobRole, readJobRecord } from './failover.js'

const RECORDS = 120_000
/** Runs of each kind (10 each by default; more with LAMINA_FAILOVER_RUNS). */
const RUNS = Number(process.env.LAMINA_FAILOVER_RUNS ?? 10)

describe('failover jobs: the coordinating peer dies, another takes the job over', () => {
  let dir: string
  let cluster: Cluster
  let kv: Kv
  let admin: AdminClient
  let code: PackedProgram
  const summaries: string[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-failover-'))
    // Killed peers come back (from their work directories), as a supervisor would restart them.
    cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger(), policy: { kind: 'restart', max: 100, withinMs: 3_600_000 } })
    kv = await startKv(cluster, { shards: 2, replicas: 3, readyTimeoutMs: 30_000 })
    await appendFile(join(dir, 'allowlist'), `${(await loadOrCreateIdentity(join(dir, 'admin'))).peerId}\n`)
    admin = await AdminClient.connect({ cluster: cluster.members().map((m) => `${m.multiaddrs[0]!}`), psk: await readPskFile(join(dir, 'swarm.key')), workdir: join(dir, 'admin') })
    code = await packProgram(failoverJob.MODULE)
  }, 90_000)

  afterAll(async () => {
    process.stderr.write(`failover: ${summaries.join('\n  ')}\n`)
    await admin?.close()
    await kv?.stop()
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  }, 60_000)

  /**
   * One run: submits the job to peer process `run % 3` as a failover job, SIGKILLs that peer when
   * `kill` says, waits for the job to finish under its successor, and checks everything.
   */
  async function run(name: string, seed: number, kill: (lineage: string, random: () => number) => Promise<void>): Promise<void> {
    const random = seededRandom(seed)
    await untilMembersAlive(cluster, 60_000)
    const index = seed % 3
    const coordinator = cluster.members()[index]!
    // A restarted peer listens at a new address: wait until the members the admin client asks know it.
    const listening = coordinator.multiaddrs[0]!.split('/p2p/')[0]!
    await until(
      async () => (await admin.members()).some((m) => m.peerId === coordinator.peerId && m.status === 'alive' && m.multiaddrs.some((a) => a.startsWith(listening))),
      60_000,
      `the members to know ${coordinator.peerId} at ${listening}`,
    )
    const prefix = `${name}-${seed}`
    const summary = await admin.submit(code, { on: coordinator.peerId, failover: true, args: [String(RECORDS), kvLayoutArg(kv), prefix] })
    expect(summary.coordinator).toBe(coordinator.peerId)
    const lineage = summary.id
    const attached = await cluster.attach(lineage)
    const killedAt = await (async () => {
      await kill(lineage, random)
      const before = await readJobRecord(kv, lineage)
      process.kill(coordinator.pid!, 'SIGKILL')
      return { at: Date.now(), state: before?.record.state, checkpoint: (before?.record.checkpoint as { id?: number } | null)?.id ?? null }
    })()
    // The job ends under its successor; this process follows it through its record (Cluster.attach).
    let timer: NodeJS.Timeout | undefined
    const record = await Promise.race([
      attached.done,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`job ${lineage} (${prefix}) did not end within 90 s of its coordinator's death`)), 90_000))),
    ]).finally(() => clearTimeout(timer))
    expect(killedAt.state).toBe('running')
    expect({ state: record.state, error: record.error }).toEqual({ state: 'finished', error: null })
    expect(record.coordinator).not.toBe(coordinator.peerId)
    expect(record.counts.takeovers).toBeGreaterThanOrEqual(1)

    // Exact output: every key the job writes, with its value, each written once (version 1).
    const expected = failoverJob.expectedOutput(RECORDS, prefix)
    const written = await kv.scan({ prefix: `${prefix}/` })
    expect(new Map(written.map((e) => [e.key, e.value]))).toEqual(expected)
    expect(written.filter((e) => e.version !== 1).map((e) => `${e.key} v${e.version}`)).toEqual([])

    // One coordinator per attempt, ever: consecutive attempts, each claimed once, tokens only growing,
    // and the attempts after the kill coordinated by another peer with a newer token.
    const claims = await attemptClaims(kv, lineage)
    expect(claims.map((c) => c.attempt)).toEqual(claims.map((_, i) => i))
    for (let i = 1; i < claims.length; i++) expect(claims[i]!.claim.token).toBeGreaterThanOrEqual(claims[i - 1]!.claim.token)
    expect(claims[0]!.claim.coordinator).toBe(coordinator.peerId)
    expect(claims.at(-1)!.claim.coordinator).toBe(record.coordinator)
    expect(claims.at(-1)!.claim.token).toBeGreaterThan(claims[0]!.claim.token)
    const took = record.updatedAt - killedAt.at
    summaries.push(
      `${prefix}: killed ${coordinator.peerId.slice(-6)} at checkpoint ${killedAt.checkpoint ?? 'none'}; ${claims.length} attempts, last by ${record.coordinator.slice(-6)} (token ${record.token}), ended ${took} ms after the kill`,
    )
  }

  it('a coordinator that lost its role while paused is fenced: its record writes and attempt claims are refused', async () => {
    const lineage = `fenced-${Date.now().toString(36)}`
    const init = {
      lineage,
      program: 'p',
      code: { ...code.manifest, dependencies: { ...code.manifest.dependencies } },
      args: [],
      submittedBy: 'me',
      submittedAt: Date.now(),
      parallelism: {},
      excluded: [],
      workers: null,
      fromSavepoint: null,
    }
    const old = await Coordination.begin(kv, init, 'peer-a', { ttlMs: 1000 })
    await old.claimAttempt(0)
    await old.update({ checkpoint: { id: 1, snapshots: {}, time: 1 } })
    // Its lease is gone as if it had been paused past its TTL (the role key deleted), while it still runs.
    const fenced = new Promise<CoordinatorFencedError>((resolve) => old.whenFenced(resolve))
    await kv.delete(roleKey(jobRole(lineage)))
    const next = await Coordination.takeOver(kv, lineage, 'peer-b', old.token, { ttlMs: 1000, timeoutMs: 10_000 })
    expect(next?.token).toBeGreaterThan(old.token)
    expect(next?.record).toMatchObject({ coordinator: 'peer-b', attempt: 0, checkpoint: { id: 1 }, counts: { takeovers: 1 } })
    // The old coordinator's next write fails, names it, and it learns it is fenced.
    const refused = await old.update({ checkpoint: { id: 2, snapshots: {}, time: 2 } }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(CoordinatorFencedError)
    expect(refused).toMatchObject({ code: 'ERR_COORDINATOR_FENCED', job: lineage, peer: 'peer-a', token: old.token })
    expect(await fenced).toBe(refused)
    await expect(old.claimAttempt(1)).rejects.toBeInstanceOf(CoordinatorFencedError)
    // The successor runs attempt 1; nobody can claim it again, and a second takeover with the old token finds nothing to do.
    await next!.claimAttempt(1)
    expect((await attemptClaims(kv, lineage)).map((c) => [c.attempt, c.claim.coordinator])).toEqual([
      [0, 'peer-a'],
      [1, 'peer-b'],
    ])
    expect(await Coordination.takeOver(kv, lineage, 'peer-c', old.token, { ttlMs: 1000, timeoutMs: 2_000 })).toBeUndefined()
    await next!.end('finished')
    expect((await readJobRecord(kv, lineage))?.record).toMatchObject({ state: 'finished', coordinator: 'peer-b', checkpoint: { id: 1 } })
    await old.end('failed')
    expect((await readJobRecord(kv, lineage))?.record.state).toBe('finished')
    // Attaching finds the ended job through its record; a job without one is named as unknown.
    expect((await (await cluster.attach(lineage)).done).coordinator).toBe('peer-b')
    await expect(cluster.attach('no-such-job')).rejects.toMatchObject({ code: 'ERR_UNKNOWN_JOB', job: 'no-such-job' })
  }, 60_000)

  it(`${RUNS} seeded runs SIGKILL the coordinating peer mid-job: exact output, one coordinator per attempt`, async () => {
    for (let seed = 1; seed <= RUNS; seed++) {
      await run('mid', seed, async (_lineage, random) => {
        // 200-2500 ms (seeded) after the submission: before the first checkpoint or after several.
        await new Promise((resolve) => setTimeout(resolve, 200 + Math.floor(random() * 2300)))
      })
    }
  }, 600_000)

  it(`${RUNS} seeded runs SIGKILL the coordinating peer during a checkpoint: exact output, one coordinator per attempt`, async () => {
    for (let seed = 1; seed <= RUNS; seed++) {
      await run('checkpoint', seed, async (lineage, random) => {
        // The instant checkpoint number 1-3 (seeded) is recorded in the store, before its output is committed.
        const nth = 1 + Math.floor(random() * 3)
        const ids = new Set<number>()
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no ${nth} checkpoints of ${lineage} recorded within 30 s`)), 30_000)
          const subscription = kv.watch(jobRecordKey(lineage)).subscribe({
            next: (event) => {
              if (event.type !== 'put') return
              const id = (JSON.parse(event.value ?? '{}') as { checkpoint?: { id?: number } | null }).checkpoint?.id
              if (id !== undefined) ids.add(id)
              if (ids.size >= nth) {
                clearTimeout(timer)
                subscription.unsubscribe()
                resolve()
              }
            },
            error: reject,
          })
        })
      })
    }
  }, 600_000)
})
