// A Lamina peer: a kernel and a libp2p node. It runs its share of jobs any member submits, and can
// submit jobs itself: it loads the program module, plans it over the members, hands each member
// its share over the job protocol, runs its own share, and collects progress and results.

import '../transport/polyfill.js'
import type { Stream } from '@libp2p/interface'
import { Subject, type Observable } from 'rxjs'
import type { Channel, DeadLetter, Deployment, JobStats, Program, RemoteEnd } from '../contracts.js'
import { JobAbortedError, LaminaError } from '../errors.js'
import { kernel as defaultKernel, type Kernel } from '../kernel.js'
import { createPeerNode, type PeerNode, type PeerNodeOptions } from '../transport/node.js'
import { createReceiverRegistry, type ReceiverRegistry } from '../transport/remote-receiver.js'
import { openRemoteSender } from '../transport/remote-sender.js'
import { startMembership, type Membership, type MembershipOptions } from '../../kmods/membership/index.js'
import { RemoteJobError } from './errors.js'
import { JOB_PROTOCOL, JobChannel, type JobMessage, statsToWire, toWire, type WireDeadLetter } from './job-protocol.js'
import { instanceKey, roundRobinPlan, type Plan } from './placement.js'
import { loadProgram, type LoadedProgram } from './program-module.js'

/** Who the peer's members are: a peer learns them from membership (gossip) or is told them. */
export interface Members {
  /** Live members (this peer included), with addresses to reach them and their tags. */
  list(): readonly { readonly peerId: string; readonly multiaddrs: readonly string[]; readonly tags?: Readonly<Record<string, string>> }[]
}

/** Options of a peer. */
export interface PeerOptions extends PeerNodeOptions {
  /** Members to join through; membership (gossip, failure detection) learns the rest. @default [] (a new cluster) */
  readonly bootstrap?: readonly string[]
  /** Membership timings (heartbeat, suspect, dead). */
  readonly membership?: Pick<MembershipOptions, 'heartbeatMs' | 'suspectAfterMs' | 'deadAfterMs'>
  /** The kernel (layer stack) jobs run on. @default the kernel with no layers */
  readonly kernel?: Kernel
  /** Milliseconds between progress reports of a running job. @default 500 */
  readonly progressMs?: number
}

/** Options of a submission. */
export interface SubmitOptions {
  /** Arguments handed to the program module's factory. @default [] */
  readonly args?: readonly string[]
  /** Peers that may run transform instances. @default every live member but this one (or this one alone) */
  readonly workers?: readonly string[]
  readonly signal?: AbortSignal
}

/** What a finished cluster job reports. */
export interface ClusterReport {
  readonly job: string
  readonly plan: Plan
  /** Stats by peer id. */
  readonly stats: { readonly [peer: string]: JobStats }
  readonly deadLetters: readonly WireDeadLetter[]
  readonly elapsedMs: number
}

/** Events of a submitted job. */
export type ClusterJobEvent =
  | { readonly type: 'progress'; readonly peer: string; readonly stats: JobStats }
  | { readonly type: 'dead-letter'; readonly letter: WireDeadLetter }

/** A job submitted to the cluster. */
export interface SubmittedJob {
  readonly id: string
  readonly plan: Plan
  readonly program: Program
  readonly events: Observable<ClusterJobEvent>
  /** The latest stats of every peer. */
  stats(): { readonly [peer: string]: JobStats }
  readonly done: Promise<ClusterReport>
  abort(reason?: string): void
}

let jobCounter = 0

/** A running peer. Start with `Peer.start(options)`; stop with `stop()` (idempotent). */
export class Peer {
  private readonly running = new Map<string, { abort(reason: string): void }>()
  private members: Members

  private constructor(
    readonly node: PeerNode,
    private readonly registry: ReceiverRegistry,
    private readonly kernel: Kernel,
    private readonly progressMs: number,
    /** Gossip membership: who is alive, suspect, dead, joined or left. */
    readonly membership: Membership,
  ) {
    this.members = { list: () => membership.members().filter((m) => m.status === 'alive') }
  }

  /** Starts the node, the channel registry and the job protocol. */
  static async start(options: PeerOptions): Promise<Peer> {
    const node = await createPeerNode(options)
    const registry = createReceiverRegistry(node)
    await registry.start()
    const membership = await startMembership(node, { bootstrap: options.bootstrap ?? [], ...options.membership })
    const peer = new Peer(node, registry, options.kernel ?? defaultKernel, options.progressMs ?? 500, membership)
    await node.libp2p.handle(JOB_PROTOCOL, (stream: Stream, connection) => {
      void peer.serve(new JobChannel(stream, connection.remotePeer.toString()))
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

  private addressOf(peerId: string, addresses?: { readonly [peer: string]: readonly string[] }): string {
    const member = this.members.list().find((m) => m.peerId === peerId)
    return addresses?.[peerId]?.[0] ?? member?.multiaddrs[0] ?? peerId
  }

  private addresses(): Record<string, string[]> {
    return Object.fromEntries(this.members.list().map((m) => [m.peerId, [...m.multiaddrs]]))
  }

  private deployment(plan: Plan, submitter: string, addresses: { readonly [peer: string]: readonly string[] }, signal: AbortSignal): Deployment {
    return {
      self: this.id,
      submitter,
      // Fused operators are named `a+b…`; the kernel fuses only co-located operators, so the first part decides.
      peerOf: (operator, instance) => plan[instanceKey(operator, instance)] ?? plan[instanceKey(operator.split('+')[0]!, instance)] ?? submitter,
      connect: (end: RemoteEnd): Channel =>
        end.side === 'sender'
          ? openRemoteSender(this.node, this.addressOf(end.peer, addresses), end.info, { signal, deadLetter: end.deadLetter })
          : this.registry.receive({ info: end.info, capacity: end.capacity, codec: end.codec, deadLetter: end.deadLetter, expectPeer: end.peer }),
    }
  }

  /** Serves one job stream from a submitter: load, accept, run our share, report. */
  private async serve(channel: JobChannel): Promise<void> {
    const abort = new AbortController()
    try {
      const submit = await channel.receive()
      if (submit.type !== 'submit') throw new RemoteJobError(channel.remotePeer, 'ERR_JOB_PROTOCOL', `expected submit, got ${submit.type}`)
      let loaded: LoadedProgram
      try {
        loaded = await loadProgram(submit.module, submit.args, { submitter: false, peer: this.id })
      } catch (error) {
        await channel.send({ type: 'refused', peer: this.id, code: error instanceof LaminaError ? error.code : 'ERR_PROGRAM_MODULE', message: error instanceof Error ? error.message : String(error) })
        return
      }
      const instances = Object.values(submit.plan).filter((p) => p === this.id).length
      await channel.send({ type: 'accepted', peer: this.id, instances })
      const start = await channel.receive({ signal: abort.signal })
      if (start.type !== 'start') return
      const job = this.kernel.with(...loaded.layers).run(loaded.program, {
        id: submit.job,
        peers: submit.peers,
        deployment: this.deployment(submit.plan, submit.submitter, submit.addresses, abort.signal),
        signal: abort.signal,
        onDeadLetter: (letter: DeadLetter) => void channel.send({ type: 'dead-letter', peer: this.id, letter: toWire(letter, this.id) }).catch(() => undefined),
      })
      this.running.set(submit.job, { abort: (reason) => abort.abort(reason) })
      // The submitter may abort us; a broken job stream means it is gone: abort then too.
      void channel.receive().then(
        (message) => message.type === 'abort' && abort.abort(message.reason),
        () => abort.abort('the submitter went away'),
      )
      const progress = setInterval(() => void channel.send({ type: 'progress', peer: this.id, stats: statsToWire(job.stats()) }).catch(() => undefined), this.progressMs)
      try {
        const report = await job.done
        await channel.send({ type: 'done', peer: this.id, stats: statsToWire(report.stats) })
      } catch (error) {
        const code = error instanceof LaminaError ? error.code : 'ERR_JOB_FAILED'
        await channel.send({ type: 'failed', peer: this.id, code, message: error instanceof Error ? error.message : String(error) }).catch(() => undefined)
      } finally {
        clearInterval(progress)
        this.running.delete(submit.job)
      }
    } catch (error) {
      this.node.logger.warn(`job stream from ${channel.remotePeer}: ${error instanceof Error ? error.message : String(error)}`)
      abort.abort(error)
    } finally {
      await channel.close()
    }
  }

  /**
   * Submits a program module to the cluster: plans it over the members (sources and sinks here,
   * transforms round robin over the workers), starts every share, and runs this peer's own.
   */
  async submit(module: string, options: SubmitOptions = {}): Promise<SubmittedJob> {
    const args = options.args ?? []
    const { program, layers, planned: onPlanned } = await loadProgram(module, args, { submitter: true, peer: this.id })
    const kernel = this.kernel.with(...layers)
    const others = this.members.list().map((m) => m.peerId).filter((p) => p !== this.id)
    const workers = options.workers ?? (others.length > 0 ? others : [this.id])
    const id = `${program.name}-${this.id.slice(-6)}-${Date.now().toString(36)}-${++jobCounter}`
    // The layers' plan hooks (placement) see the live members; every peer plans again alike.
    const descriptions = this.members.list().map((m) => ({ id: m.peerId, tags: { ...(m.tags ?? {}) } }))
    const planned = await kernel.plan(program, { job: id, self: this.id, peers: descriptions })
    onPlanned?.(planned)
    const plan = roundRobinPlan(planned, workers, this.id)
    const abort = new AbortController()
    options.signal?.addEventListener('abort', () => abort.abort(options.signal?.reason), { once: true })
    const events = new Subject<ClusterJobEvent>()
    const stats: Record<string, JobStats> = {}
    const deadLetters: WireDeadLetter[] = []
    const started = Date.now()
    const peers = [...new Set(Object.values(plan))].filter((p) => p !== this.id)
    const addresses = this.addresses()
    // Hand every other peer its share and wait until all accepted, before anything runs.
    const channels = await Promise.all(
      peers.map(async (peer) => {
        const stream = await this.node.dialProtocol(this.addressOf(peer, addresses), JOB_PROTOCOL, { signal: abort.signal })
        const channel = new JobChannel(stream, peer)
        await channel.send({ type: 'submit', job: id, module: resolveModule(module), args: [...args], plan, submitter: this.id, addresses, peers: descriptions })
        const answer = await channel.receive({ signal: abort.signal })
        if (answer.type === 'refused') throw new RemoteJobError(peer, answer.code, answer.message)
        if (answer.type !== 'accepted') throw new RemoteJobError(peer, 'ERR_JOB_PROTOCOL', `expected accepted, got ${answer.type}`)
        return channel
      }),
    )
    const remoteDone = channels.map(async (channel) => {
      for (;;) {
        const message: JobMessage = await channel.receive()
        if (message.type === 'progress') {
          stats[message.peer] = message.stats
          events.next({ type: 'progress', peer: message.peer, stats: message.stats })
        } else if (message.type === 'dead-letter') {
          deadLetters.push(message.letter)
          events.next({ type: 'dead-letter', letter: message.letter })
        } else if (message.type === 'done') {
          stats[message.peer] = message.stats
          return
        } else if (message.type === 'failed') throw new RemoteJobError(message.peer, message.code, message.message)
      }
    })
    for (const channel of channels) await channel.send({ type: 'start' })
    const local = kernel.run(program, {
      id,
      peers: descriptions,
      deployment: this.deployment(plan, this.id, addresses, abort.signal),
      signal: abort.signal,
      onDeadLetter: (letter) => {
        const wire = toWire(letter, this.id)
        deadLetters.push(wire)
        events.next({ type: 'dead-letter', letter: wire })
      },
    })
    const progress = setInterval(() => {
      const current = local.stats()
      stats[this.id] = current
      events.next({ type: 'progress', peer: this.id, stats: current })
    }, this.progressMs)
    const failAll = (reason: string): void => {
      abort.abort(reason)
      for (const channel of channels) void channel.send({ type: 'abort', reason }).catch(() => undefined)
    }
    const done = (async (): Promise<ClusterReport> => {
      try {
        const settled = await Promise.allSettled([local.done, ...remoteDone])
        const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
        if (failure !== undefined) {
          failAll('a peer failed')
          throw failure.reason instanceof JobAbortedError && abort.signal.reason instanceof Error ? abort.signal.reason : failure.reason
        }
        stats[this.id] = local.stats()
        return { job: id, plan, stats: { ...stats }, deadLetters, elapsedMs: Date.now() - started }
      } finally {
        clearInterval(progress)
        events.complete()
        await Promise.all(channels.map((c) => c.close()))
      }
    })()
    // Fail fast: the first peer to fail aborts the others.
    for (const remote of remoteDone) remote.catch((error: unknown) => failAll(error instanceof Error ? error.message : String(error)))
    done.catch(() => undefined)
    return { id, plan, program: planned, events: events.asObservable(), stats: () => ({ ...stats }), done, abort: (reason = 'aborted') => failAll(reason) }
  }

  /** Stops every job share, the channel registry and the node. Idempotent. */
  async stop(): Promise<void> {
    for (const job of this.running.values()) job.abort('the peer is stopping')
    await this.membership.leave().catch(() => this.membership.stop())
    await this.registry.stop()
    await this.node.stop()
  }
}

function resolveModule(module: string): string {
  return module.startsWith('file:') || module.startsWith('/') ? module : `${process.cwd()}/${module}`
}
