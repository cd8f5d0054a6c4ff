// The shares of jobs this peer runs: serving a submitter's job stream (load, accept, run, report),
// and the shares running here (the submitter's own included) that control calls reach.

import { setMaxListeners } from 'node:events'
import type { DeadLetter, Job, Kernel } from '../../kernel/index.js'
import type { Deployment } from '../../kernel/internal.js'
import { LaminaError } from '../../kernel/index.js'
import type { PeerNode } from '../../kmods/transport/node.js'
import type { ShareLayout } from './deployment.js'
import type { CodeCache } from './code.js'
import type { Membership } from '../../kmods/membership/index.js'
import { Fence } from '../kv/election.js'
import { NOT_AUTHORIZED, RemoteJobError } from './errors.js'
import { jobRole } from './failover.js'
import { type JobChannel, statsToWire, toWire } from './job-protocol.js'
import { loadProgram, type LoadedProgram } from './program-module.js'
import { applyPlan } from './shipped-plan.js'

/** What serving shares needs of its peer. */
export interface ShareComponents {
  /** The peer's id, and the logger. */
  readonly node: Pick<PeerNode, 'peerId' | 'logger'>
  /** The kernel (layer stack) shares run on. */
  readonly kernel: Kernel
  /** Milliseconds between progress reports to the submitter. */
  readonly progressMs: number
  /** The deployment of a share here. */
  deploy(share: ShareLayout): Deployment
  /** The code of jobs, by hash: a share runs only the code its submission names. */
  readonly code: CodeCache
  /** Peer ids that may submit jobs to this peer; undefined: every admitted peer. */
  readonly submitters?: () => ReadonlySet<string>
  /** Gossip membership: a failover job's coordinator declared dead ends its shares here at once. */
  readonly membership?: Pick<Membership, 'events'>
  /**
   * Called when the coordinator of a failover job this peer runs a share of went away (its job
   * stream broke, or membership declared it dead): the peer may take the coordination over.
   */
  readonly onCoordinatorLost?: (lost: CoordinatorLost) => void
}

/** A failover job whose coordinator went away, as a peer running a share of it saw it. */
export interface CoordinatorLost {
  readonly lineage: string
  /** The coordinator, and the fencing token it coordinated with. */
  readonly coordinator: string
  readonly token: number
  /** The attempt the share was of. */
  readonly attempt: number
}

/** The job shares running on this peer. */
export class Shares {
  /** Shares served for submitters, by job id: stopping and leaving reach them. */
  private readonly running = new Map<string, { abort(reason: string): void; leave(ms: number): Promise<void> }>()
  /** Job shares running here, by job id (attempt ids included): control calls reach them. */
  private readonly shares = new Map<string, Job>()
  private readonly waiters = new Map<string, (() => void)[]>()
  /** Failover jobs: the newest coordinator token admitted, by lineage (attempts of older ones are refused). */
  private readonly fences = new Map<string, Fence>()
  /** Failover jobs: the newest attempt that reached this peer, and how to abort its share, by lineage. */
  private readonly newest = new Map<string, { attempt: number; token: number; abort(reason: string): void }>()

  constructor(private readonly components: ShareComponents) {}

  private get id(): string {
    return this.components.node.peerId
  }

  /** Registers a running share of a job so control calls reach it until it settles. */
  add(job: Job, until: Promise<unknown> = job.done): void {
    this.shares.set(job.id, job)
    for (const wake of this.waiters.get(job.id) ?? []) wake()
    this.waiters.delete(job.id)
    const remove = (): void => void (this.shares.get(job.id) === job && this.shares.delete(job.id))
    until.then(remove, remove)
  }

  /** The `control` of a share of `job` here, waiting up to 10 s for it to start (calls may beat it). */
  async control(job: string): Promise<((kind: string, payload: unknown) => Promise<unknown>) | undefined> {
    let share = this.shares.get(job)
    if (share === undefined) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000)
        const waiters = this.waiters.get(job) ?? []
        waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
        this.waiters.set(job, waiters)
      })
      share = this.shares.get(job)
    }
    return share === undefined ? undefined : (kind, payload) => share.control(kind, payload)
  }

  /** Serves one job stream from a submitter: load, accept, run our share, report. */
  async serve(channel: JobChannel): Promise<void> {
    const abort = new AbortController()
    setMaxListeners(0, abort.signal)
    try {
      const submit = await channel.receive()
      if (submit.type !== 'submit') throw new RemoteJobError(channel.remotePeer, 'ERR_JOB_PROTOCOL', `expected submit, got ${submit.type}`)
      // Authorization, apart from admission: an admitted peer may run shares here, but only the
      // listed ones may submit (the stream's authenticated peer id, not what the message claims).
      const submitters = this.components.submitters?.()
      if (submitters !== undefined && !submitters.has(channel.remotePeer)) {
        this.components.node.logger.warn(`refused job ${submit.job} from ${channel.remotePeer}: not one of the ${submitters.size} peers allowed to submit`)
        await channel.send({ type: 'refused', peer: this.id, code: NOT_AUTHORIZED, message: `${channel.remotePeer} may not submit jobs to ${this.id}` })
        return
      }
      // A failover job's attempt comes from the holder of its coordinator role: one stamped with an
      // older token than one admitted here comes from a coordinator that lost the role.
      const lineage = submit.attempt?.lineage ?? submit.job
      const attemptNumber = submit.attempt?.number ?? 0
      if (submit.failover !== undefined) {
        const fence = this.fences.get(lineage) ?? new Fence(jobRole(lineage))
        this.fences.set(lineage, fence)
        try {
          fence.admit(submit.failover.token)
        } catch (error) {
          this.components.node.logger.warn(
            `refused attempt ${attemptNumber} of job ${lineage} from ${channel.remotePeer}: ${error instanceof Error ? error.message : String(error)}`,
          )
          await channel.send({ type: 'refused', peer: this.id, code: 'ERR_COORDINATOR_FENCED', message: error instanceof Error ? error.message : String(error) })
          return
        }
        const before = this.newest.get(lineage)
        if (before !== undefined && before.token < submit.failover.token) before.abort(`a newer coordinator (token ${submit.failover.token}) runs job ${lineage}`)
        this.newest.set(lineage, { attempt: attemptNumber, token: submit.failover.token, abort: (reason) => abort.abort(reason) })
      }
      let loaded: LoadedProgram
      try {
        // Only code whose hash the submission names: cached here, or sent by the submitter on this stream.
        const { hash, name } = submit.code
        const url = await this.components.code.load(submit.code, async () => {
          await channel.send({ type: 'need-code', peer: this.id, hash })
          const answer = await channel.receive({ signal: AbortSignal.any([abort.signal, AbortSignal.timeout(60_000)]) })
          if (answer.type !== 'code' || answer.hash !== hash) throw new RemoteJobError(channel.remotePeer, 'ERR_JOB_PROTOCOL', `expected the code ${hash}, got ${answer.type}`)
          return Buffer.from(answer.bundle, 'base64')
        })
        loaded = await loadProgram(url, submit.args, { submitter: false, peer: this.id }, `${name} (code ${hash.slice(0, 12)})`)
      } catch (error) {
        await channel.send({
          type: 'refused',
          peer: this.id,
          code: error instanceof LaminaError ? error.code : 'ERR_PROGRAM_MODULE',
          message: error instanceof Error ? error.message : String(error),
        })
        return
      }
      // The submitter planned the job once: apply what its plan hooks decided, run no plan hook here.
      loaded = { ...loaded, program: applyPlan(loaded.program, submit.annotations, this.id) }
      const instances = Object.values(submit.plan).filter((p) => p === this.id).length
      await channel.send({ type: 'accepted', peer: this.id, instances })
      const start = await channel.receive({ signal: abort.signal })
      if (start.type !== 'start') return
      // The program's layers over this peer's kernel: one named like a kernel layer takes its place.
      const job = this.components.kernel
        .withOverrides(loaded.layers, (old) => this.components.node.logger.info(`job ${submit.job}: the program's layer "${old.name}" replaces the peer kernel's`))
        .run(loaded.program, {
          id: submit.job,
          peers: submit.peers,
          planned: true,
          deployment: this.components.deploy({
            job: submit.job,
            plan: submit.plan,
            submitter: submit.submitter,
            addresses: submit.addresses,
            signal: abort.signal,
            members: submit.members ?? [],
          }),
          signal: abort.signal,
          ...(submit.attempt === undefined ? {} : { attempt: submit.attempt }),
          onDeadLetter: (letter: DeadLetter) => void channel.send({ type: 'dead-letter', peer: this.id, letter: toWire(letter, this.id) }).catch(() => undefined),
        })
      // The submitter may abort us; a broken job stream means it is gone: abort then too. The share
      // stays reachable by control calls until then, even once its own instances are done.
      const failover = submit.failover
      const submitterGone = channel.receive().then(
        (message) => void (message.type === 'abort' && abort.abort(message.reason)),
        () => {
          abort.abort('the submitter went away')
          // A failover job goes on without its coordinator: this peer may take the role over.
          if (failover !== undefined && this.newest.get(lineage)?.attempt === attemptNumber)
            this.components.onCoordinatorLost?.({ lineage, coordinator: submit.submitter, token: failover.token, attempt: attemptNumber })
        },
      )
      // A coordinator that membership declares dead (frozen, cut off: its stream may stay open) is gone too.
      const deaths =
        failover === undefined
          ? undefined
          : this.components.membership?.events.subscribe((event) => {
              if (event.type === 'dead' && event.member.peerId === submit.submitter)
                channel.abort(new RemoteJobError(submit.submitter, 'ERR_PEER_DEAD', 'membership declared it dead'))
            })
      void submitterGone.finally(() => deaths?.unsubscribe())
      this.add(job, submitterGone)
      job.events.subscribe((event) => {
        if (event.type === 'layer')
          void channel.send({ type: 'event', peer: this.id, layer: event.layer, kind: event.kind, message: event.message, data: event.data ?? null }).catch(() => undefined)
      })
      this.running.set(submit.job, {
        abort: (reason) => abort.abort(reason),
        // Leaving gracefully: ask the submitter to move our instances off, and wait until it did.
        leave: async (ms) => {
          await channel.send({ type: 'leaving', peer: this.id }).catch(() => undefined)
          await Promise.race([job.done.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, ms).unref())])
        },
      })
      // The submitter may abort us; a broken job stream means it is gone: abort then too.
      const progress = setInterval(() => void channel.send({ type: 'progress', peer: this.id, stats: statsToWire(job.stats()) }).catch(() => undefined), this.components.progressMs)
      try {
        const report = await job.done
        await channel.send({ type: 'done', peer: this.id, stats: statsToWire(report.stats) })
        // Stay until the submitter ends the attempt (it closes the stream): others may still call us.
        await submitterGone
      } catch (error) {
        const code = error instanceof LaminaError ? error.code : 'ERR_JOB_FAILED'
        await channel.send({ type: 'failed', peer: this.id, code, message: error instanceof Error ? error.message : String(error) }).catch(() => undefined)
      } finally {
        clearInterval(progress)
        this.running.delete(submit.job)
      }
    } catch (error) {
      this.components.node.logger.warn(`job stream from ${channel.remotePeer}: ${error instanceof Error ? error.message : String(error)}`)
      abort.abort(error)
    } finally {
      await channel.close()
    }
  }

  /** The newest attempt of failover job `lineage` that reached this peer, if any. */
  newestAttempt(lineage: string): number | undefined {
    return this.newest.get(lineage)?.attempt
  }

  /** Aborts every share served here. */
  abort(reason: string): void {
    for (const job of this.running.values()) job.abort(reason)
  }

  /** Asks every submitter to move this peer's instances off, waiting at most `timeoutMs` for each. */
  async leave(timeoutMs: number): Promise<void> {
    await Promise.all([...this.running.values()].map((job) => job.leave(timeoutMs)))
  }
}
