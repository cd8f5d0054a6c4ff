// The single-program launcher: starts a local cluster of peers as supervised child processes (or
// joins existing peers), and gives the program a typed handle to submit jobs on it.

import '../../kmods/transport/polyfill.js'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Observable } from 'rxjs'
import type { Kernel } from '../../kernel/index.js'
import { loadOrCreateIdentity } from '../../kmods/transport/identity.js'
import type { Logger } from '../../kmods/transport/logger.js'
import { readOrCreatePskFile, readPskFile } from '../../kmods/transport/psk.js'
import { Peer, type SubmitOptions, type SubmittedJob } from './peer.js'
import { ChildStartError } from '../../kmods/nursery/index.js'
import { ClusterJoinError } from './errors.js'
import { type AttachedJob, attachJob } from './failover.js'
import { Nursery, type NurseryEvent, type RestartPolicy } from '../../kmods/nursery/index.js'

/** One peer of a cluster, as the launcher knows it. */
export interface ClusterMember {
  readonly peerId: string
  readonly multiaddrs: readonly string[]
  /** The process id, for peers this launcher started. */
  readonly pid?: number
}

/** A running cluster, seen from the program that started or joined it. */
export interface Cluster {
  /** This process's own peer: it submits jobs, runs sources and sinks, and receives results. */
  readonly self: Peer
  /** The other peers. */
  members(): readonly ClusterMember[]
  /** Submits a program module (its default export builds the program). */
  submit(module: string, options?: SubmitOptions): Promise<SubmittedJob>
  /** Events of the supervised peer processes (empty for joined clusters). */
  readonly events: Observable<NurseryEvent> | undefined
  /** Rejects when a supervised peer dies beyond its restart policy. */
  readonly failed: Promise<never>
  /** Stops this peer and every peer process it started. Idempotent. */
  stop(): Promise<void>
  /**
   * Starts one more peer process (a spare admitted at start: see `StartClusterOptions.spares`) and
   * resolves once membership sees it alive. Not available on joined clusters.
   */
  addPeer?(): Promise<ClusterMember>
  /** Retires peer process `index` gracefully: it moves its work off, leaves membership and exits. */
  removePeer?(index: number): Promise<void>
  /**
   * Attaches to a failover job (`SubmitOptions.failover`) by its id, wherever it runs and whoever
   * coordinates it now, through its record in the cluster's KV service: `done` resolves once it
   * ended; its output is where its sinks wrote it. @throws UnknownJobError when no such record exists.
   */
  attach(job: string): Promise<AttachedJob>
}

/** Options of `startCluster`. */
export interface StartClusterOptions {
  /** Number of peer processes. */
  readonly peers: number
  /** Where identities, the swarm key and peers' work directories live. */
  readonly workdir: string
  /** What to do when a peer process dies. @default { kind: 'fail' } */
  readonly policy?: RestartPolicy
  /** Tags of peer `i` (placement reads them), over the default `name=peer-<i>`. */
  readonly tags?: (index: number) => Readonly<Record<string, string>>
  /** The kernel the launcher's own share of jobs runs on. */
  readonly kernel?: Kernel
  readonly logger?: Logger
  /** Milliseconds until every peer must be seen alive by membership. @default 20000 */
  readonly joinTimeoutMs?: number
  readonly signal?: AbortSignal
  /** Peers admitted (identity and allowlist) but not started: `addPeer()` starts them. @default 0 */
  readonly spares?: number
}

/** Resolves when `peer`'s membership sees every id of `ids` alive; rejects with ClusterJoinError after `ms`. */
async function untilMembers(peer: Peer, ids: readonly string[], ms: number): Promise<void> {
  const missing = (): string[] => {
    const alive = new Set(
      peer.membership
        .members()
        .filter((m) => m.status === 'alive')
        .map((m) => m.peerId),
    )
    return ids.filter((id) => !alive.has(id))
  }
  if (missing().length === 0) return
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      subscription.unsubscribe()
      reject(new ClusterJoinError(missing(), ms))
    }, ms)
    const subscription = peer.membership.events.subscribe(() => {
      if (missing().length > 0) return
      clearTimeout(timer)
      subscription.unsubscribe()
      resolve()
    })
  })
}

/** How a peer process is started: the entry file and Node flags, from sources (tests) or dist. */
function peerEntry(): { module: string; execArgv: string[] } {
  const here = fileURLToPath(import.meta.url)
  if (here.endsWith('.ts')) {
    // Running from sources (tests, tsx): children load TypeScript too, with `lamina` resolved to sources.
    return { module: join(here, '..', 'peer-main.ts'), execArgv: ['--import', import.meta.resolve('tsx'), '--conditions', 'source'] }
  }
  return { module: join(here, '..', 'peer-main.js'), execArgv: ['--import', import.meta.resolve('tsx')] }
}

/**
 * Starts `peers` peer processes on loopback, all admitted by one pre-shared key and an allowlist
 * of their ids, plus this process's own peer; resolves when every peer is ready. Peers are
 * supervised (restart or fail by `policy`) and stopped with the cluster, on process exit, SIGINT
 * and SIGTERM: no orphans.
 *
 * ```ts
 * const cluster = await startCluster({ peers: 3, workdir: '.lamina/cluster' })
 * const job = await cluster.submit('examples/wordcount.ts')
 * await job.done
 * await cluster.stop()
 * ```
 */
export async function startCluster(options: StartClusterOptions): Promise<Cluster> {
  await mkdir(options.workdir, { recursive: true })
  const pskFile = join(options.workdir, 'swarm.key')
  const psk = await readOrCreatePskFile(pskFile)
  // Identities first: everyone's id goes on the allowlist before anyone connects.
  const dirs = Array.from({ length: options.peers + (options.spares ?? 0) }, (_, i) => join(options.workdir, `peer-${i}`))
  const selfDir = join(options.workdir, 'launcher')
  const ids = await Promise.all([...dirs, selfDir].map(async (dir) => (await loadOrCreateIdentity(dir)).peerId))
  const allowed = new Set(ids)
  const allowFile = join(options.workdir, 'allowlist')
  await writeFile(allowFile, ids.join('\n') + '\n')
  const self = await Peer.start({
    workdir: selfDir,
    psk,
    allowlist: () => allowed,
    ...(options.kernel === undefined ? {} : { kernel: options.kernel }),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  })
  const bootstrap = self.multiaddrs()[0]!
  const entry = peerEntry()
  const nursery = new Nursery({
    module: entry.module,
    execArgv: entry.execArgv,
    count: options.peers,
    args: (i) => [
      '--workdir',
      dirs[i]!,
      '--psk',
      pskFile,
      '--allow',
      allowFile,
      '--bootstrap',
      bootstrap,
      ...Object.entries({ name: `peer-${i}`, ...options.tags?.(i) }).flatMap(([k, v]) => ['--tag', `${k}=${v}`]),
    ],
    ...(options.policy === undefined ? {} : { policy: options.policy }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  })
  try {
    await nursery.start()
  } catch (error) {
    await self.stop()
    throw error
  }
  const members = (): ClusterMember[] =>
    nursery.infos().map((info, i) => ({ ...(info as { peerId: string; multiaddrs: string[] }), ...(nursery.pidOf(i) === undefined ? {} : { pid: nursery.pidOf(i)! }) }))
  // Ready when membership (gossip) has every peer alive: then any of them can be given work.
  try {
    await untilMembers(self, ids.slice(0, options.peers).concat(ids.at(-1)!), options.joinTimeoutMs ?? 20_000)
  } catch (error) {
    await Promise.all([nursery.stop(), self.stop()])
    throw error
  }
  let stopped: Promise<void> | undefined
  return {
    self,
    members,
    submit: (module, submitOptions) => self.submit(module, submitOptions),
    attach: async (job) => attachJob(await self.kv(), job),
    events: nursery.events,
    failed: nursery.failed,
    stop: () => (stopped ??= Promise.all([nursery.stop(), self.stop()]).then(() => undefined)),
    addPeer: async () => {
      const index = nursery.infos().length
      if (index >= dirs.length) throw new ChildStartError(index, `no spare peer left (the cluster was started with ${options.spares ?? 0} spares)`)
      await nursery.add()
      const member = members()[index]!
      await untilMembers(self, [member.peerId], options.joinTimeoutMs ?? 20_000)
      return member
    },
    removePeer: (index) => nursery.retire(index),
  }
}

/** Options of `joinCluster`. */
export interface JoinClusterOptions {
  /** Multiaddrs of members to join through (each ending in /p2p/<id>). */
  readonly bootstrap: readonly string[]
  /** The swarm key file of the cluster. */
  readonly psk: string
  /** This process's work directory (its identity lives there). */
  readonly workdir: string
  /** Peer ids admitted. @default every peer holding the key */
  readonly allowlist?: readonly string[]
  /** Address to listen on. @default /ip4/127.0.0.1/tcp/0 */
  readonly listen?: readonly string[]
  /** Milliseconds until the bootstrap peers must be seen alive. @default 20000 */
  readonly joinTimeoutMs?: number
  readonly kernel?: Kernel
  readonly logger?: Logger
}

/**
 * Joins peers already running (`lamina peer` on other hosts): this process becomes a member that
 * submits jobs; it starts no process and stops none but its own peer.
 */
export async function joinCluster(options: JoinClusterOptions): Promise<Cluster> {
  const psk = await readPskFile(options.psk)
  const allowed = options.allowlist === undefined ? undefined : new Set(options.allowlist)
  const self = await Peer.start({
    workdir: options.workdir,
    psk,
    bootstrap: options.bootstrap,
    ...(allowed === undefined ? {} : { allowlist: () => allowed }),
    ...(options.listen === undefined ? {} : { listen: options.listen }),
    ...(options.kernel === undefined ? {} : { kernel: options.kernel }),
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  })
  const expected = options.bootstrap.map((address) => address.split('/p2p/')[1]).filter((id): id is string => id !== undefined)
  await untilMembers(self, expected, options.joinTimeoutMs ?? 20_000).catch(async (error: unknown) => {
    await self.stop()
    throw error
  })
  const members = (): ClusterMember[] =>
    self.membership
      .members()
      .filter((m) => !m.self && m.status === 'alive')
      .map((m) => ({ peerId: m.peerId, multiaddrs: m.multiaddrs }))
  const never = new Promise<never>(() => undefined)
  return {
    self,
    members,
    submit: (module, o) => self.submit(module, o),
    attach: async (job) => attachJob(await self.kv(), job),
    events: undefined,
    failed: never,
    stop: () => self.stop(),
  }
}
