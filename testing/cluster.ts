// The cluster fixture: a local cluster of real peer processes for a test, in a temp dir, stopped and cleaned up after it.

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { merge, type Observable } from 'rxjs'
import { afterAll, beforeAll } from 'vitest'
import { startCluster, type Cluster, type StartClusterOptions } from '../services/jobs/index.js'
import { memoryLogger, type Logger } from '../kmods/transport/index.js'
import { FixtureNotStartedError, OrphanProcessError } from './errors.js'
import { alive, until, waitFor } from './processes.js'

/** Options of `startTestCluster` and `useCluster`: those of `startCluster`, without the work directory. */
export interface TestClusterOptions extends Omit<StartClusterOptions, 'workdir' | 'logger'> {
  /** Prefix of the temp directory the cluster lives in. @default 'lamina-test-' */
  readonly prefix?: string
  /** Where the peers log. @default a memory logger (its lines are in `TestCluster.logger.lines`) */
  readonly logger?: Logger
  /** Milliseconds `stop` waits for the peer processes to exit before it kills them and fails. @default 10000 */
  readonly stopTimeoutMs?: number
}

/** A cluster started for a test: the cluster, where it lives, and a `stop` that leaves nothing behind. */
export interface TestCluster {
  readonly cluster: Cluster
  /** The temp directory holding identities, the swarm key and the peers' work directories. */
  readonly dir: string
  /** The peers' logger (a memory logger unless one was given). */
  readonly logger: Logger
  /**
   * Stops the cluster, checks every peer process it ever started has exited (killing and
   * reporting any that has not, with OrphanProcessError), and removes `dir`. Idempotent.
   */
  stop(): Promise<void>
}

/**
 * Starts `options.peers` peer processes on loopback plus this process's own peer, in a fresh temp
 * directory, and resolves once membership sees every peer alive.
 *
 * ```ts
 * const test = await startTestCluster({ peers: 2 })
 * try { await (await test.cluster.submit(module)).done } finally { await test.stop() }
 * ```
 */
export async function startTestCluster(options: TestClusterOptions): Promise<TestCluster> {
  const { prefix, stopTimeoutMs, logger: given, ...rest } = options
  const dir = await mkdtemp(join(tmpdir(), prefix ?? 'lamina-test-'))
  const logger = given ?? memoryLogger()
  let cluster: Cluster
  try {
    cluster = await startCluster({ ...rest, workdir: dir, logger })
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  // Every pid the cluster's peers ever had (restarts give new ones): none may outlive `stop`.
  const pids = new Set<number>()
  const note = (): void => {
    for (const m of cluster.members()) if (m.pid !== undefined) pids.add(m.pid)
  }
  note()
  const subscription = cluster.events?.subscribe(() => note())
  let stopping: Promise<void> | undefined
  const stop = async (): Promise<void> => {
    note()
    subscription?.unsubscribe()
    try {
      await cluster.stop()
      const ms = stopTimeoutMs ?? 10_000
      await until(() => [...pids].every((pid) => !alive(pid)), ms, 'the peer processes to exit').catch(() => {
        const left = [...pids].filter(alive)
        for (const pid of left) process.kill(pid, 'SIGKILL')
        throw new OrphanProcessError(left)
      })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }
  return { cluster, dir, logger, stop: () => (stopping ??= stop()) }
}

/** What `useCluster` returns: the fixture's parts, readable inside tests and hooks once it started. */
export interface ClusterFixture {
  readonly cluster: Cluster
  readonly dir: string
  readonly logger: Logger
}

/**
 * Registers a cluster for the enclosing `describe`: started in `beforeAll`, stopped (every process
 * gone, the temp dir removed) in `afterAll`. Read its parts inside tests.
 *
 * ```ts
 * describe('on three peers', () => {
 *   const fixture = useCluster({ peers: 3, kernel: kernel.with(placement()) })
 *   it('runs', async () => { await (await fixture.cluster.submit(module)).done })
 * })
 * ```
 */
export function useCluster(options: TestClusterOptions & { readonly startTimeoutMs?: number }): ClusterFixture {
  let test: TestCluster | undefined
  const started = (): TestCluster => {
    if (test === undefined) throw new FixtureNotStartedError('useCluster')
    return test
  }
  const { startTimeoutMs, ...rest } = options
  beforeAll(async () => {
    test = await startTestCluster(rest)
  }, startTimeoutMs ?? 60_000)
  afterAll(async () => {
    await test?.stop()
  }, 30_000)
  return {
    get cluster() {
      return started().cluster
    },
    get dir() {
      return started().dir
    },
    get logger() {
      return started().logger
    },
  }
}

/**
 * Resolves once every peer process of `cluster` is running (it has a pid) and the submitting
 * peer's membership sees all of them alive: after a restart, before giving the cluster work.
 * Rejects with WaitTimeoutError after `ms`.
 */
export async function untilMembersAlive(cluster: Cluster, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  const missing = (): string[] => {
    const members = cluster.members()
    const seen = new Set(
      cluster.self.membership
        .members()
        .filter((m) => m.status === 'alive')
        .map((m) => m.peerId),
    )
    return members.filter((m) => m.pid === undefined || !seen.has(m.peerId)).map((m) => m.peerId)
  }
  for (let left = missing(); left.length > 0; left = missing()) {
    const rest = deadline - Date.now()
    // A membership or nursery event is what can change the answer; the deadline fails with what is still missing.
    const events: Observable<unknown> = cluster.events === undefined ? cluster.self.membership.events : merge(cluster.self.membership.events, cluster.events)
    await waitFor(events, () => true, Math.max(rest, 1), `peers ${left.join(', ')} to be alive`).catch((error: unknown) => {
      if (Date.now() >= deadline) throw error
    })
  }
}
