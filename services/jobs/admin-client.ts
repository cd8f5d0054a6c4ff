// The admin protocol's client: what `lamina submit`, `jobs`, `status`, `cancel`, `rescale`,
// `savepoint` and `members` use to reach a running cluster. It is a libp2p node of its own (an
// identity in its work directory, admitted by the swarm key and the peers' allowlists) that
// listens nowhere and joins no membership: it only asks peers, one request per stream.

import '../../kmods/transport/polyfill.js'
import * as t from 'io-ts'
import { check, renderProblem } from '../../kernel/index.js'
import { createPeerNode, type PeerNode } from '../../kmods/transport/node.js'
import type { Logger } from '../../kmods/transport/logger.js'
import type { Psk } from '../../kmods/transport/psk.js'
import { ADMIN_PROTOCOL, type AdminRequest, JobStatus, JobSummary, MAX_ADMIN_MESSAGE, MemberRow, RescaleAnswer, SavepointAnswer, UpgradeAnswer } from './admin.js'
import type { PackedProgram } from './code.js'
import { AdminCallError, ClusterUnreachableError } from './errors.js'
import { ask } from './exchange.js'
import type { Savepoint } from './submission.js'

/** Options of `AdminClient.connect`. */
export interface AdminClientOptions {
  /** Addresses of cluster members (multiaddrs ending in `/p2p/<peer id>`): the first that answers is the contact. */
  readonly cluster: readonly string[]
  /** The private network's swarm key (the contents of the peers' --psk file). */
  readonly psk: Psk
  /** The client's work directory: its identity lives there (peers must admit it: their --allow list). */
  readonly workdir: string
  /** Milliseconds to wait for a peer to connect and answer. @default 10000 */
  readonly timeoutMs?: number
  /** Where the client's node logs. @default nowhere */
  readonly logger?: Logger
}

/** `lamina jobs` across the cluster: every job of every live member, and the members that did not answer. */
export interface ClusterJobs {
  readonly jobs: readonly JobSummary[]
  readonly unreachable: readonly { readonly peer: string; readonly reason: string }[]
}

const silent: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined }

/** A connection to a running cluster for its operator. Close it with `close()`. */
export class AdminClient {
  /** Where each job is coordinated, as learned. */
  private readonly coordinators = new Map<string, string>()

  /** Addresses of members to ask when the contact does not answer: the ones given, then the ones learned. */
  private known: string[]

  private constructor(
    private readonly node: PeerNode,
    /** The member that answered last (its address). */
    private current: string,
    private readonly timeoutMs: number,
  ) {
    this.known = []
  }

  /** The member the client asks first (the one that answered last), by address. */
  get contact(): string {
    return this.current
  }

  /**
   * Starts the client's node and finds a member that answers.
   * @throws ClusterUnreachableError naming every address tried and why it failed (admission: add the client's id to the peers' --allow file).
   */
  static async connect(options: AdminClientOptions): Promise<AdminClient> {
    const node = await createPeerNode({ workdir: options.workdir, psk: options.psk, listen: [], logger: options.logger ?? silent })
    const timeoutMs = options.timeoutMs ?? 10_000
    const failures: { address: string; reason: string }[] = []
    for (const address of options.cluster) {
      const client = new AdminClient(node, address, timeoutMs)
      try {
        await client.members()
        client.known = [...new Set([...client.known, ...options.cluster])]
        return client
      } catch (error) {
        failures.push({ address, reason: error instanceof Error ? error.message : String(error) })
      }
    }
    await node.stop()
    throw new ClusterUnreachableError(node.peerId, failures)
  }

  /** The client's peer id (what the peers' --allow and --submitters files must list). */
  get id(): string {
    return this.node.peerId
  }

  /**
   * The cluster's members as the contact sees them. When the contact does not answer (it died, or
   * restarted at another address), the other members known are asked in turn, and the first that
   * answers is the contact from then on.
   */
  async members(): Promise<MemberRow[]> {
    let failure: unknown
    for (const target of [this.current, ...this.known.filter((a) => a !== this.current)]) {
      try {
        const rows = await this.call(target, { command: 'members' }, t.array(MemberRow))
        this.current = target
        const learned = rows.filter((m) => m.status === 'alive' && m.multiaddrs.length > 0).map(address)
        this.known = [...new Set([...learned, ...this.known])]
        return rows
      } catch (error) {
        failure ??= error
      }
    }
    throw failure
  }

  /** Every job of every live member (each answers for the jobs it coordinates), newest first. */
  async jobs(): Promise<ClusterJobs> {
    const alive = (await this.members()).filter((m) => m.status === 'alive')
    const unreachable: { peer: string; reason: string }[] = []
    const lists = await Promise.all(
      alive.map(async (member) => {
        try {
          return await this.call(address(member), { command: 'jobs' }, t.array(JobSummary))
        } catch (error) {
          unreachable.push({ peer: member.peerId, reason: error instanceof Error ? error.message : String(error) })
          return []
        }
      }),
    )
    const jobs = lists.flat().sort((a, b) => b.submittedAt - a.submittedAt)
    for (const job of jobs) this.coordinators.set(job.id, job.coordinator)
    return { jobs, unreachable }
  }

  /**
   * A job in detail, from the peer that coordinates it. When that peer does not answer (a failover
   * job whose coordinator died), the live members are asked again who coordinates it now.
   */
  async status(job: string): Promise<JobStatus> {
    try {
      return await this.call(await this.coordinatorOf(job), { command: 'status', job }, JobStatus)
    } catch (error) {
      if (!this.coordinators.has(job)) throw error
      this.coordinators.delete(job)
      return this.call(await this.coordinatorOf(job), { command: 'status', job }, JobStatus)
    }
  }

  /**
   * Submits packed code to the member `on` (by peer id; default: the contact), which coordinates
   * the job: sources and sinks run there. Resolves once the job started, with its summary.
   */
  async submit(
    code: PackedProgram,
    options: { readonly args?: readonly string[]; readonly fromSavepoint?: Savepoint; readonly on?: string; readonly failover?: boolean } = {},
  ): Promise<JobSummary> {
    let target = this.contact
    if (options.on !== undefined) {
      const member = (await this.members()).find((m) => m.peerId === options.on || m.peerId.endsWith(options.on ?? ''))
      if (member === undefined) throw new AdminCallError(peerOf(this.contact), 'submit', `no member ${options.on} in the cluster`)
      target = address(member)
    }
    const request: AdminRequest = {
      command: 'submit',
      code: { ...code.manifest, dependencies: { ...code.manifest.dependencies } },
      bundle: Buffer.from(code.bundle).toString('base64'),
      args: [...(options.args ?? [])],
      ...(options.fromSavepoint === undefined ? {} : { fromSavepoint: { ...options.fromSavepoint } }),
      ...(options.failover === true ? { failover: true } : {}),
    }
    const summary = await this.call(target, request, JobSummary)
    this.coordinators.set(summary.id, summary.coordinator)
    return summary
  }

  /** Cancels a running job; resolves with its summary once it has ended (or after 30 s). */
  async cancel(job: string): Promise<JobSummary> {
    return this.call(await this.coordinatorOf(job), { command: 'cancel', job }, JobSummary, 45_000)
  }

  /** Changes the parallelism of a running job's operator (a savepoint, then the job runs again reshaped). */
  async rescale(job: string, operator: string, n: number): Promise<t.TypeOf<typeof RescaleAnswer>> {
    return this.call(await this.coordinatorOf(job), { command: 'rescale', job, operator, n }, RescaleAnswer, 120_000)
  }

  /**
   * Replaces a running job's program with a new version (packed code): a savepoint, then the new
   * version runs from it (SubmittedJob.upgrade). Resolves once every instance of it restored.
   */
  async upgrade(job: string, code: PackedProgram, options: { readonly args?: readonly string[] } = {}): Promise<t.TypeOf<typeof UpgradeAnswer>> {
    const request: AdminRequest = {
      command: 'upgrade',
      job,
      code: { ...code.manifest, dependencies: { ...code.manifest.dependencies } },
      bundle: Buffer.from(code.bundle).toString('base64'),
      args: [...(options.args ?? [])],
    }
    return this.call(await this.coordinatorOf(job), request, UpgradeAnswer, 120_000)
  }

  /** Takes a savepoint of a running job: another job can start from it (`submit(…, { fromSavepoint })`). */
  async savepoint(job: string): Promise<Savepoint & { readonly at: number; readonly coordinator: string }> {
    const coordinator = await this.coordinatorOf(job)
    const taken = await this.call(coordinator, { command: 'savepoint', job }, SavepointAnswer, 120_000)
    return { ...taken, coordinator: peerOf(coordinator) }
  }

  /** Stops the client's node. */
  async close(): Promise<void> {
    await this.node.stop()
  }

  /** The address of the member coordinating `job`. @throws AdminCallError when no live member has it. */
  private async coordinatorOf(job: string): Promise<string> {
    if (!this.coordinators.has(job)) await this.jobs()
    const peer = this.coordinators.get(job)
    if (peer === undefined) throw new AdminCallError(peerOf(this.contact), 'find job', `no live member coordinates a job ${job} (lamina jobs lists them)`, 'ERR_UNKNOWN_JOB')
    const member = (await this.members()).find((m) => m.peerId === peer)
    if (member === undefined) throw new AdminCallError(peerOf(this.contact), 'find job', `job ${job} is coordinated by ${peer}, which is no longer a member`, 'ERR_UNKNOWN_JOB')
    return address(member)
  }

  private async call<A>(target: string, request: AdminRequest, codec: t.Type<A, unknown>, timeoutMs = this.timeoutMs): Promise<A> {
    const peer = peerOf(target)
    const fail = (reason: string, remoteCode?: string): Error => new AdminCallError(peer, request.command, reason, remoteCode)
    const signal = AbortSignal.timeout(timeoutMs)
    let value: unknown
    try {
      const stream = await this.node.dialProtocol(target, ADMIN_PROTOCOL, { signal })
      value = await ask(stream, request, { maxBytes: MAX_ADMIN_MESSAGE, fail, signal })
    } catch (error) {
      if (error instanceof AdminCallError) throw error
      throw fail(signal.aborted ? `no answer within ${timeoutMs} ms` : error instanceof Error ? error.message : String(error))
    }
    const problems = check(codec, value)
    if (problems !== undefined) throw fail(`the answer does not fit the admin protocol: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
    return value as A
  }
}

/** A member's first address, ending in its peer id. */
function address(member: MemberRow): string {
  const first = member.multiaddrs[0]
  if (first === undefined) return member.peerId
  return first.includes('/p2p/') ? first : `${first}/p2p/${member.peerId}`
}

/** The peer id at the end of an address (or the address itself). */
function peerOf(target: string): string {
  const at = target.lastIndexOf('/p2p/')
  return at < 0 ? target : target.slice(at + '/p2p/'.length)
}
