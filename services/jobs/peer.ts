// A Lamina peer: a kernel and a libp2p node, started and stopped here. It runs its share of jobs
// any member submits (share.ts), and can submit jobs itself (submission.ts): it loads the program
// module, plans it over the members, hands each member its share over the job protocol, runs its
// own share, and collects progress and results. Each share runs with a deployment (deployment.ts).

import '../../kmods/transport/polyfill.js'
import type { Stream } from '@libp2p/interface'
import type { Deployment } from '../../kernel/internal.js'
import { kernel as defaultKernel, type Kernel } from '../../kernel/index.js'
import { createPeerNode, type PeerNode, type PeerNodeOptions } from '../../kmods/transport/node.js'
import { createReceiverRegistry, type ReceiverRegistry } from '../../kmods/transport/remote-receiver.js'
import { startMembership, type Membership, type MembershipOptions } from '../../kmods/membership/index.js'
import { ADMIN_PROTOCOL, JobRegistry, serveAdmin } from './admin.js'
import { CodeCache } from './code.js'
import { CONTROL_PROTOCOL, serveControl } from './control-protocol.js'
import { AddressBook, deployment, type Members, type ShareLayout } from './deployment.js'
import { JOB_PROTOCOL, JobChannel } from './job-protocol.js'
import { KvClient } from '../kv/client.js'
import { localKvHost } from '../kv/local.js'
import { Coordination } from './failover.js'
import { type CoordinatorLost, Shares } from './share.js'
import { Submitter, type SubmitOptions, type SubmittedJob } from './submission.js'

export type { Members } from './deployment.js'
export type { ClusterJobEvent, ClusterReport, SubmitOptions, SubmittedJob } from './submission.js'

/** Options of a peer. */
export interface PeerOptions extends PeerNodeOptions {
  /** Members to join through; membership (gossip, failure detection) learns the rest. @default [] (a new cluster) */
  readonly bootstrap?: readonly string[]
  /** Membership timings (heartbeat, suspect, dead), and how long to keep trying the bootstrap addresses (`joinTimeoutMs`). */
  readonly membership?: Pick<MembershipOptions, 'heartbeatMs' | 'suspectAfterMs' | 'deadAfterMs' | 'joinTimeoutMs'>
  /** The kernel (layer stack) jobs run on. @default the kernel with no layers */
  readonly kernel?: Kernel
  /** Milliseconds between progress reports of a running job. @default 500 */
  readonly progressMs?: number
  /**
   * Peer ids that may submit jobs to this peer (authorization, apart from admission: every
   * admitted peer may still run shares of others' jobs here). A submission from another peer is
   * refused with ERR_NOT_AUTHORIZED and a log line naming it; the submitter gets
   * SubmissionRefusedError. A function is asked at every submission (so the list may change
   * while the peer runs: `lamina peer --submitters FILE` re-reads its file when it changes).
   * @default every admitted peer may submit
   */
  readonly submitters?: readonly string[] | (() => ReadonlySet<string>)
}

/** A running peer. Start with `Peer.start(options)`; stop with `stop()` (idempotent). */
export class Peer {
  private members: Members
  private readonly shares: Shares
  private readonly submitter: Submitter
  /** The jobs this peer coordinates, running and recently ended (what `lamina jobs` and `lamina status` show). */
  readonly jobs: JobRegistry

  private constructor(
    readonly node: PeerNode,
    private readonly registry: ReceiverRegistry,
    kernel: Kernel,
    progressMs: number,
    /** Gossip membership: who is alive, suspect, dead, joined or left. */
    readonly membership: Membership,
    /** The work directory: identity, and durable state layers keep (checkpoints). */
    readonly workdir: string,
    submitters: (() => ReadonlySet<string>) | undefined,
  ) {
    this.members = { list: () => membership.members().filter((m) => m.status === 'alive') }
    // The parts see the members through this view, so `useMembers` reaches them too.
    const members: Members = { list: () => this.members.list() }
    const addressBook = new AddressBook(members)
    const deploy = (share: ShareLayout): Deployment => deployment({ node, registry, addressBook, workdir }, share)
    const code = new CodeCache(workdir, node.peerId, (message) => node.logger.warn(message))
    this.addressBook = addressBook
    this.shares = new Shares({
      node,
      kernel,
      progressMs,
      deploy,
      code,
      membership,
      onCoordinatorLost: (lost) => void this.succeed(lost),
      ...(submitters === undefined ? {} : { submitters }),
    })
    this.submitter = new Submitter({ node, kernel, progressMs, members, membership, addressBook, shares: this.shares, deploy, code, kv: () => this.kv() })
    this.jobs = new JobRegistry(node.peerId)
  }

  private readonly addressBook: AddressBook
  private kvClient: Promise<KvClient> | undefined
  /** Failover jobs this peer is trying to take over, by lineage. */
  private readonly succeeding = new Set<string>()
  private stopping = false

  /**
   * A client of the cluster's KV service `kv` (started by `startKv`): asked of this peer's own KV
   * host when it runs one, else of the live members in turn. Cached once connected.
   *
   * @throws KvCommandError when no member knows a KV service of that name.
   */
  kv(): Promise<KvClient> {
    this.kvClient ??= (async () => {
      const contacts = [
        ...(localKvHost(this.id) === undefined ? [] : [this.id]),
        ...this.members
          .list()
          .map((m) => m.peerId)
          .filter((p) => p !== this.id)
          .map((p) => this.addressBook.addressOf(p)),
      ]
      let failure: unknown = new Error('no member to ask for the KV service')
      for (const contact of contacts) {
        try {
          return await KvClient.connect({ node: this.node, contact })
        } catch (error) {
          failure = error
        }
      }
      throw failure
    })()
    this.kvClient.catch(() => (this.kvClient = undefined))
    return this.kvClient
  }

  /**
   * The coordinator of a failover job this peer runs a share of went away: campaign for its role
   * and, on winning it, take the job over (Submitter.takeOver); every other peer that ran a share
   * does the same, and one wins. Returns once this peer coordinates the job or has nothing to do.
   */
  private async succeed(lost: CoordinatorLost): Promise<void> {
    if (this.succeeding.has(lost.lineage) || this.stopping) return
    this.succeeding.add(lost.lineage)
    try {
      const kv = await this.kv()
      const coordination = await Coordination.takeOver(kv, lost.lineage, this.id, lost.token, {
        wanted: () => !this.stopping && (this.shares.newestAttempt(lost.lineage) ?? -1) <= lost.attempt,
      })
      if (coordination === undefined) return
      this.node.logger.info(`job ${lost.lineage}: ${lost.coordinator} is gone; this peer coordinates it now (token ${coordination.token})`)
      const job = await this.submitter.takeOver(coordination, [lost.coordinator])
      this.jobs.track(job, coordination.record.submittedBy)
    } catch (error) {
      this.node.logger.warn(`job ${lost.lineage}: could not take over from ${lost.coordinator}: ${error instanceof Error ? error.message : String(error)}`)
    } finally {
      this.succeeding.delete(lost.lineage)
    }
  }

  /** Starts the node, the channel registry and the job protocol. */
  static async start(options: PeerOptions): Promise<Peer> {
    const node = await createPeerNode(options)
    const registry = createReceiverRegistry(node)
    await registry.start()
    let membership: Membership
    try {
      membership = await startMembership(node, { bootstrap: options.bootstrap ?? [], ...options.membership })
    } catch (error) {
      // Nothing may keep the process alive after a failed start (a `lamina peer` must exit).
      await registry.stop().catch(() => undefined)
      await node.stop().catch(() => undefined)
      throw error
    }
    const listed = options.submitters
    const submitters =
      listed === undefined
        ? undefined
        : typeof listed === 'function'
          ? listed
          : (
              (set) => () =>
                set
            )(new Set(listed))
    const peer = new Peer(node, registry, options.kernel ?? defaultKernel, options.progressMs ?? 500, membership, options.workdir, submitters)
    await node.libp2p.handle(JOB_PROTOCOL, (stream: Stream, connection) => {
      void peer.shares.serve(new JobChannel(stream, connection.remotePeer.toString()))
    })
    await node.libp2p.handle(
      CONTROL_PROTOCOL,
      (stream: Stream) => {
        void serveControl(stream, (job) => peer.shares.control(job))
      },
      { maxInboundStreams: 1024 },
    )
    // The operator's CLI (lamina jobs, status, submit, cancel, rescale, savepoint, members).
    await node.libp2p.handle(ADMIN_PROTOCOL, (stream: Stream, connection) => {
      void serveAdmin(stream, connection.remotePeer.toString(), {
        self: peer.id,
        logger: node.logger,
        membership,
        jobs: peer.jobs,
        submitter: peer.submitter,
        submitters,
      })
    })
    return peer
  }

  get id(): string {
    return this.node.peerId
  }

  /** Addresses others reach this peer at. */
  multiaddrs(): string[] {
    return this.node.multiaddrs()
  }

  /** Learns who is in the cluster from `members` instead of membership (a fixed list). */
  useMembers(members: Members): void {
    this.members = members
  }

  /**
   * Submits a program module to the cluster: plans it over the members (sources and sinks here,
   * transforms round robin over the workers), starts every share, and runs this peer's own.
   *
   * When a peer fails and a layer of the stack can recover (`Layer.recovery`, fault tolerance),
   * the job runs again as a new attempt on the surviving peers, resuming from its durable state.
   */
  async submit(module: string, options: SubmitOptions = {}): Promise<SubmittedJob> {
    const job = await this.submitter.submit(module, options)
    this.jobs.track(job, this.id)
    return job
  }

  /** Services running on this peer (a KV host …), stopped before it, newest first. */
  private readonly attached: { stop(): Promise<void> | void }[] = []

  /** Ties a service's life to the peer's: `stop()` stops it first (newest first), before the node. */
  attach(service: { stop(): Promise<void> | void }): void {
    this.attached.push(service)
  }

  /** Stops the attached services, every job share, the channel registry and the node. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true
    for (const service of this.attached.splice(0).reverse()) await Promise.resolve(service.stop()).catch(() => undefined)
    this.shares.abort('the peer is stopping')
    await this.membership.leave().catch(() => this.membership.stop())
    await this.registry.stop()
    await this.node.stop()
  }

  /**
   * Leaves gracefully: every job share here first asks its submitter to move its instances to
   * other peers (a rescale excluding this one) and waits (at most `timeoutMs`) until that is
   * done; then the peer stops.
   */
  async leave(timeoutMs = 15_000): Promise<void> {
    await this.shares.leave(timeoutMs)
    await this.stop()
  }
}
