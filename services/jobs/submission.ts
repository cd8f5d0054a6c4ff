// Submitting a job from this peer: load and plan the program, hand every member its share, run our
// own, and run the job again as a new attempt after a peer fails (recovery) or a rescale.

import { setMaxListeners } from 'node:events'
import type { Stream } from '@libp2p/interface'
import { Subject, type Observable } from 'rxjs'
import type { Attempt, JobEvent, JobStats, Kernel, Layer, LayerNotice, Program, RescaleReport, RescaleRequest, Savepoints, UpgradePlan } from '../../kernel/index.js'
import type { Deployment } from '../../kernel/internal.js'
import { checkUpgrade, InvalidOptionError, JOB_SUCCEEDED, LaminaError, JobAbortedError, JobFailedError, SAVEPOINTS } from '../../kernel/index.js'
import type { Membership } from '../../kmods/membership/index.js'
import type { PeerNode } from '../../kmods/transport/node.js'
import { type CodeCache, type CodeManifest, packProgram, type PackedProgram } from './code.js'
import type { AddressBook, Members, ShareLayout } from './deployment.js'
import { JobProtocolError, PeerDeadError, RecoveryFailedError, RemoteJobError, SubmissionRefusedError } from './errors.js'
import { JOB_PROTOCOL, JobChannel, type JobMessage, toWire, type WireDeadLetter } from './job-protocol.js'
import { roundRobinPlan, type Plan } from './placement.js'
import { type LoadedProgram, loadProgram } from './program-module.js'
import type { Shares } from './share.js'
import { shipPlan, type ShippedPlan } from './shipped-plan.js'
import type { KvClient } from '../kv/client.js'
import { Coordination } from './failover.js'

/** Options of a submission. */
export interface SubmitOptions {
  /** Arguments handed to the program module's factory. @default [] */
  readonly args?: readonly string[]
  /** Peers that may run transform instances. @default every live member but this one (or this one alone) */
  readonly workers?: readonly string[]
  /**
   * Start from a savepoint (`SubmittedJob.savepoint`) of an earlier job of the same program,
   * instead of from nothing: its operators' state and its sources' positions. Needs the
   * checkpoints layer, and the savepoint's snapshots on reachable peers.
   */
  readonly fromSavepoint?: Savepoint
  /**
   * The job outlives this peer: its coordinator's state is kept in the cluster's KV service (a
   * service named `kv`, started by `startKv`), sources and sinks are placed like any operator, and
   * when this peer dies a peer that runs a share of the job takes the coordinator's role over
   * (fenced by a token) and resumes the job from its last complete checkpoint (failover.ts).
   * Needs the checkpoints layer. Exactly once whoever dies when sources replay and sinks commit
   * their own output (see `guaranteeOf` and the `guarantee` event). @default false
   */
  readonly failover?: boolean
  readonly signal?: AbortSignal
}

/** A checkpoint kept as a savepoint: not collected when its job ends, so a later job can start from it. */
export interface Savepoint {
  /** The job whose state it is (its first attempt's id). */
  readonly lineage: string
  readonly checkpoint: number
}

/** What a finished cluster job reports. */
export interface ClusterReport {
  readonly job: string
  readonly plan: Plan
  /** Stats by peer id. */
  readonly stats: { readonly [peer: string]: JobStats }
  /** Dead letters of the attempt that finished the job: the job's own. */
  readonly deadLetters: readonly WireDeadLetter[]
  /**
   * Dead letters recorded by attempts that failed or were reshaped before the job finished, with
   * the attempt's number (kept, not counted as the job's): most are artifacts of the abort (values
   * in flight when links were torn down), and what the next attempt replays from its checkpoint it
   * records again. A record that became a dead letter before the checkpoint the next attempt
   * restored is not replayed, so it is only here.
   */
  readonly abandonedDeadLetters: readonly (WireDeadLetter & { readonly attempt: number })[]
  readonly elapsedMs: number
  /** Attempts the job took: 1 when nothing failed or changed, one more per recovery and per rescale. */
  readonly attempts: number
  /** Attempts started because a peer failed. */
  readonly recoveries: number
  /** Attempts started by a rescale (or a peer moved off). */
  readonly rescales: number
  /** Attempts started by an upgrade. */
  readonly upgrades: number
  /** Times another peer took over the coordination of a failover job (its coordinator died). */
  readonly takeovers: number
}

/** Events of a submitted job. */
export type ClusterJobEvent =
  | { readonly type: 'progress'; readonly peer: string; readonly stats: JobStats }
  | { readonly type: 'dead-letter'; readonly letter: WireDeadLetter }
  /** A layer on some peer reported something (a restart, a checkpoint, an escalation). */
  | { readonly type: 'layer'; readonly peer: string; readonly layer: string; readonly kind: string; readonly message: string; readonly data?: unknown }
  /** An attempt failed and the job runs again from its durable state on the surviving peers. */
  | { readonly type: 'recovering'; readonly attempt: number; readonly lost: readonly string[]; readonly reason: string; readonly plan: Plan }
  /** The job runs again from a savepoint with a new shape (a rescale, or a peer moved off). */
  | {
      readonly type: 'rescaling'
      readonly attempt: number
      readonly reason: string
      readonly parallelism: { readonly [operator: string]: number }
      readonly checkpoint: number
      readonly plan: Plan
    }
  /**
   * This peer took over the coordination of a failover job from `from`, which died: the job runs
   * again from its last complete checkpoint (`checkpoint`, null: from its start).
   */
  | { readonly type: 'taking-over'; readonly attempt: number; readonly from: string; readonly token: number; readonly checkpoint: number | null; readonly plan: Plan }
  /** The job runs again from a savepoint with a new version of its program (an upgrade). */
  | {
      readonly type: 'upgrading'
      readonly attempt: number
      /** The new code's manifest: its hash names it. */
      readonly code: CodeManifest
      readonly checkpoint: number
      /** What happens to each operator's state. */
      readonly state: UpgradePlan
      readonly plan: Plan
    }

/** What an upgrade did (SubmittedJob.upgrade). */
export interface UpgradeReport {
  /** The code now running, and the code before. */
  readonly from: CodeManifest
  readonly to: CodeManifest
  /** The savepoint the new version started from. */
  readonly checkpoint: number
  /** What happened to each operator's state. */
  readonly state: UpgradePlan
  /** Milliseconds from stopping the old version to the last instance of the new one restored. */
  readonly pauseMs: number
  /** The new attempt's number. */
  readonly attempt: number
}

/** A job submitted to the cluster. */
export interface SubmittedJob {
  readonly id: string
  /** Where each instance runs in the current attempt. */
  readonly plan: Plan
  readonly program: Program
  readonly events: Observable<ClusterJobEvent>
  /** The latest stats of every peer. */
  stats(): { readonly [peer: string]: JobStats }
  readonly done: Promise<ClusterReport>
  abort(reason?: string): void
  /**
   * Changes the parallelism of a running operator: a savepoint, then the job runs again with `n`
   * instances of `operator`, its keyed state moved by key group. Needs the checkpoints layer.
   */
  rescale(operator: string, n: number): Promise<RescaleReport>
  /** Changes several operators' parallelism and/or moves every instance off some peers. */
  reshape(change: RescaleRequest): Promise<RescaleReport>
  /**
   * Takes a checkpoint now and keeps it as a savepoint: it is not collected when the job ends, and
   * `SubmitOptions.fromSavepoint` starts another job from it. Needs the checkpoints layer.
   */
  savepoint(): Promise<Savepoint>
  /**
   * Replaces the running program with a new version of it (`module`, another program module)
   * without losing or repeating a record: a savepoint, then the new version runs from it, each
   * operator restoring the state of the operator of the same name (migrated where its state codec
   * changed; see `checkUpgrade`). Refused before anything stops, with UpgradeStateError, when
   * state cannot carry over; with InvalidOptionError when the new version has other layers (an
   * upgrade keeps the job's layer stack) or the job has no savepoints. Needs the checkpoints layer.
   */
  upgrade(module: string, options?: { readonly args?: readonly string[] }): Promise<UpgradeReport>
  /** `upgrade` with code packed elsewhere (by `lamina upgrade`). */
  upgradePacked(code: PackedProgram, options?: { readonly args?: readonly string[] }): Promise<UpgradeReport>
  /** The code the peers run (its hash names it); a new one after an upgrade. */
  readonly code: CodeManifest
  /** For a failover job: the fencing token this peer coordinates it with (failover.ts). */
  readonly token?: number
}

let jobCounter = 0

/** What submitting needs of its peer. */
export interface SubmissionComponents {
  /** The peer's id, its logger, and the node shares are handed over from. */
  readonly node: Pick<PeerNode, 'peerId' | 'logger' | 'dialProtocol'>
  /** The kernel (layer stack) jobs run on. */
  readonly kernel: Kernel
  /** Milliseconds between progress reports of the own share. */
  readonly progressMs: number
  /** The live members: who runs the job's shares. */
  readonly members: Members
  /** Gossip membership: which peers failed (its `dead` events fail an attempt), and whether they came back. */
  readonly membership: Pick<Membership, 'members' | 'events'>
  readonly addressBook: Pick<AddressBook, 'addressOf' | 'addresses'>
  /** Where the own share runs: control calls and rescales find it there. */
  readonly shares: Pick<Shares, 'add' | 'control'>
  /** Where code submitted from elsewhere (the operator's CLI) is checked and linked before it runs here. */
  readonly code: Pick<CodeCache, 'load' | 'packed'>
  /** The deployment of the own share. */
  deploy(share: ShareLayout): Deployment
  /** A client of the cluster's KV service (failover jobs keep their coordinator's state there). */
  kv?(): Promise<KvClient>
}

/** What a peer taking over a failover job starts from (Submitter.takeOver). */
interface Takeover {
  readonly coordination: Coordination
  /** The coordinator that died, and any peer lost with it. */
  readonly lost: readonly string[]
}

/** Submits jobs from a peer and runs their attempts. */
export class Submitter {
  constructor(private readonly components: SubmissionComponents) {}

  private get id(): string {
    return this.components.node.peerId
  }

  /** Submits a program module from this peer (see `Peer.submit`). */
  async submit(module: string, options: SubmitOptions = {}): Promise<SubmittedJob> {
    const loaded = await loadProgram(module, options.args ?? [], { submitter: true, peer: this.id })
    // The code the other peers run: this module and its local imports, bundled and named by hash.
    return this.start(loaded, await packProgram(module), options)
  }

  /**
   * Submits packed code (sent by the operator's CLI): this peer checks its hash and versions like
   * any peer, builds the program from it, and coordinates the job (sources and sinks run here).
   */
  async submitPacked(code: PackedProgram, options: SubmitOptions = {}): Promise<SubmittedJob> {
    return this.start(await this.loadPacked(code, options.args ?? []), code, options)
  }

  /**
   * Takes over the coordination of a failover job whose coordinator died (Peer does, once it won
   * the role): loads the job's code from this peer's cache and runs the job on from the last
   * complete checkpoint its record names, as a new attempt.
   */
  async takeOver(coordination: Coordination, lost: readonly string[]): Promise<SubmittedJob> {
    const record = coordination.record
    try {
      const code = await this.components.code.packed(record.code)
      if (code === undefined) throw new InvalidOptionError('take over', 'code', `the code ${record.code.hash.slice(0, 12)} of job ${record.lineage} is not cached on ${this.id}`)
      const loaded = await this.loadPacked(code, record.args)
      return await this.start(
        loaded,
        code,
        {
          args: record.args,
          failover: true,
          ...(record.workers === null ? {} : { workers: record.workers }),
          ...(record.fromSavepoint === null ? {} : { fromSavepoint: record.fromSavepoint }),
        },
        { coordination, lost },
      )
    } catch (error) {
      // The job cannot go on here, and the other peers stopped waiting once this one won the role.
      await coordination.end('failed', { code: error instanceof LaminaError ? error.code : 'ERR_TAKEOVER', message: error instanceof Error ? error.message : String(error) })
      throw error
    }
  }

  /** Loads packed code on this peer (checking its hash), as the program of the job it names. */
  private async loadPacked(code: PackedProgram, args: readonly string[]): Promise<LoadedProgram> {
    const url = await this.components.code.load(code.manifest, async () => code.bundle)
    return loadProgram(url, args, { submitter: true, peer: this.id }, `${code.manifest.name} (code ${code.manifest.hash.slice(0, 12)})`)
  }

  private async start(loaded: LoadedProgram, code: PackedProgram, options: SubmitOptions, takeover?: Takeover): Promise<SubmittedJob> {
    let args = options.args ?? []
    const { layers, planned: onPlanned } = loaded
    let program = loaded.program
    // The program's layers over this peer's kernel: one named like a kernel layer takes its place.
    const kernel = this.components.kernel.withOverrides(layers, (old) =>
      this.components.node.logger.info(`${program.name}: the program's layer "${old.name}" replaces the peer kernel's`),
    )
    const savepoints = kernel.capability(SAVEPOINTS)
    const others = this.components.members
      .list()
      .map((m) => m.peerId)
      .filter((p) => p !== this.id)
    const record = takeover?.coordination.record
    const gone = new Set(takeover?.lost ?? [])
    let workers = (options.workers ?? (others.length > 0 ? others : [this.id])).filter((p) => !gone.has(p))
    if (workers.length === 0) workers = [this.id]
    const id = record?.lineage ?? `${program.name}-${this.id.slice(-6)}-${Date.now().toString(36)}-${++jobCounter}`
    // The coordinator's state in the KV store (a failover job): the role, claimed first.
    let coordination = takeover?.coordination
    if (options.failover === true && coordination === undefined) {
      if (savepoints === undefined)
        throw new InvalidOptionError('submit', 'failover', 'needs a layer that provides savepoints (checkpoints()): a successor resumes from the last complete checkpoint')
      if (this.components.kv === undefined) throw new InvalidOptionError('submit', 'failover', `peer ${this.id} has no client of the cluster's KV service`)
      coordination = await Coordination.begin(
        await this.components.kv(),
        {
          lineage: id,
          program: program.name,
          code: { ...code.manifest, dependencies: { ...code.manifest.dependencies } },
          args: [...args],
          submittedBy: this.id,
          submittedAt: Date.now(),
          parallelism: {},
          excluded: [],
          workers: options.workers === undefined ? null : [...options.workers],
          fromSavepoint: options.fromSavepoint === undefined ? null : { ...options.fromSavepoint },
        },
        this.id,
      )
    }
    const endpoints = coordination === undefined ? 'submitter' : 'placed'
    // Parallelism set by rescales, and peers being moved off; applied from the next attempt on.
    const parallelism: Record<string, number> = { ...(record?.parallelism ?? {}) }
    const excluded = new Set<string>(record?.excluded ?? [])
    // The layers' plan hooks (placement) see the live members; every peer plans again alike.
    let descriptions = this.components.members
      .list()
      .filter((m) => !gone.has(m.peerId) && !excluded.has(m.peerId))
      .map((m) => ({ id: m.peerId, tags: { ...(m.tags ?? {}) } }))
    // The layers' plan hooks (placement) run here, once per attempt; the other peers get the result.
    let planned = await kernel.plan(withParallelism(program, parallelism), { job: id, self: this.id, peers: descriptions, endpoints })
    let shipped = shipPlan(program, planned)
    onPlanned?.(planned)
    let plan = roundRobinPlan(planned, workers, this.id, endpoints)
    const recovery = recoveryOf(kernel.layers)
    const abort = new AbortController()
    options.signal?.addEventListener('abort', () => abort.abort(options.signal?.reason), { once: true })
    const events = new Subject<ClusterJobEvent>()
    const stats: Record<string, JobStats> = {}
    // The running attempt's dead letters; those of attempts given up move to `abandoned`.
    const deadLetters: WireDeadLetter[] = []
    const abandoned: (WireDeadLetter & { readonly attempt: number })[] = []
    const started = Date.now()
    let current: Attempting | undefined
    let currentJob = id
    let attemptNumber = record === undefined ? 0 : record.attempt + 1
    let context: AttemptContext = { id, kernel, code, args, events, stats, deadLetters, signal: abort.signal, ...(coordination === undefined ? {} : { coordination }) }
    // A coordinator fenced out (another peer coordinates the job now) stops at once, and writes nothing more.
    coordination?.whenFenced((error) => {
      this.components.node.logger.warn(error.message)
      abort.abort(error)
      current?.abort(error.message)
    })
    /** The change the next attempt makes: a rescale (or a peer moved off), or an upgrade to a new version. */
    let change:
      | ({ request: RescaleRequest; stoppedAt: number; checkpoint: number; reject: (error: unknown) => void } & (
          | { kind: 'rescale'; resolve: (report: RescaleReport) => void; from: Record<string, number> }
          | { kind: 'upgrade'; resolve: (report: UpgradeReport) => void; loaded: LoadedProgram; code: PackedProgram; args: readonly string[]; state: UpgradePlan }
        ))
      | undefined
    const rescale = async (request: RescaleRequest): Promise<RescaleReport> => {
      if (change !== undefined) throw new InvalidOptionError('rescale', 'request', `a rescale (${change.request.reason}) is in progress`)
      withParallelism(program, { ...parallelism, ...request.parallelism }) // checks the names and counts first
      // The current attempt's share here (it may be starting still).
      const control = await this.components.shares.control(currentJob)
      if (control === undefined || current === undefined) throw new InvalidOptionError('rescale', 'job', `job ${id} is not running here`)
      // A savepoint first: the new attempt starts from it, so nothing is lost or repeated.
      if (savepoints === undefined) throw new InvalidOptionError('rescale', 'layers', 'needs a layer that provides savepoints (checkpoints())')
      let checkpoint: number
      try {
        checkpoint = await savepoints.take(currentJob)
      } catch (error) {
        throw new InvalidOptionError('rescale', 'layers', `needs a savepoint to start from, which failed: ${error instanceof Error ? error.message : String(error)}`)
      }
      const from = Object.fromEntries(Object.keys(request.parallelism ?? {}).map((name) => [name, planned.operators.find((o) => o.name === name)?.annotations.parallelism ?? 1]))
      return new Promise<RescaleReport>((resolve, reject) => {
        change = { kind: 'rescale', request, stoppedAt: Date.now(), checkpoint, resolve, reject, from }
        current!.abort(`rescaling: ${request.reason}`)
      })
    }
    const upgrade = async (load: () => Promise<LoadedProgram>, nextCode: PackedProgram, nextArgs: readonly string[]): Promise<UpgradeReport> => {
      // Everything that can refuse does so before anything stops.
      if (change !== undefined) throw new InvalidOptionError('upgrade', 'request', `a ${change.kind} (${change.request.reason}) is in progress`)
      if (savepoints === undefined) throw new InvalidOptionError('upgrade', 'layers', 'needs a layer that provides savepoints (checkpoints())')
      const next = await load()
      const names = (list: readonly { readonly name: string }[]) => list.map((l) => l.name).join(', ') || 'none'
      if (names(next.layers) !== names(layers))
        throw new InvalidOptionError(
          'upgrade',
          'layers',
          `an upgrade keeps the job's layers (${names(layers)}); the new version declares ${names(next.layers)}: submit it from a savepoint instead`,
        )
      const state = checkUpgrade(program, next.program)
      withParallelism(next.program, parallelism) // the rescales so far must still name its operators
      const control = await this.components.shares.control(currentJob)
      if (control === undefined || current === undefined) throw new InvalidOptionError('upgrade', 'job', `job ${id} is not running here`)
      let checkpoint: number
      try {
        checkpoint = await savepoints.take(currentJob)
      } catch (error) {
        throw new InvalidOptionError('upgrade', 'layers', `needs a savepoint to start from, which failed: ${error instanceof Error ? error.message : String(error)}`)
      }
      return new Promise<UpgradeReport>((resolve, reject) => {
        const reason = `upgrade to code ${nextCode.manifest.hash.slice(0, 12)}`
        change = { kind: 'upgrade', request: { reason }, stoppedAt: Date.now(), checkpoint, resolve, reject, loaded: next, code: nextCode, args: nextArgs, state }
        current!.abort(reason)
      })
    }
    const done = (async (): Promise<ClusterReport> => {
      let recoveries = record?.counts.recoveries ?? 0
      let rescales = record?.counts.rescales ?? 0
      let upgrades = record?.counts.upgrades ?? 0
      const takeovers = record?.counts.takeovers ?? 0
      /** Peers lost by a failure, with their membership generation then. */
      const lostAt = new Map<string, number>()
      const generationsNow = new Map(this.components.membership.members().map((m) => [m.peerId, m.generation] as const))
      for (const peer of gone) lostAt.set(peer, generationsNow.get(peer) ?? 0)
      // What every attempt resumes from: the savepoint the job started from, and for a peer that
      // took the job over, the last complete checkpoint its record names (the layer picks the newest).
      const resume = {
        ...(options.fromSavepoint === undefined ? {} : { savepoint: { ...options.fromSavepoint } }),
        ...(record === undefined || record.checkpoint === null ? {} : { checkpoint: record.checkpoint }),
      }
      if (record !== undefined) {
        const checkpoint = (record.checkpoint as { id?: unknown } | null)?.id
        events.next({
          type: 'taking-over',
          attempt: attemptNumber,
          from: record.coordinator,
          token: coordination!.token,
          checkpoint: typeof checkpoint === 'number' ? checkpoint : null,
          plan,
        })
      }
      let ended: { state: 'finished' | 'failed' | 'cancelled'; error?: { code: string; message: string } } = { state: 'failed' }
      try {
        for (;;) {
          const attempt: Attempt = { lineage: id, number: attemptNumber, ...(Object.keys(resume).length === 0 ? {} : { resume }) }
          currentJob = attempt.number === 0 ? id : `${id}~${attempt.number}`
          if (coordination !== undefined) {
            await coordination.update({ parallelism: { ...parallelism }, excluded: [...excluded], counts: { recoveries, rescales, upgrades, takeovers } })
            // One coordinator per attempt, ever: a fenced one stops here.
            await coordination.claimAttempt(attempt.number)
          }
          current = this.attempt(context, attempt, plan, workers, descriptions, planned, shipped, rescale)
          const outcome = await current.outcome
          if (outcome.ok) {
            change?.reject(new InvalidOptionError(change.kind, 'job', `the job finished before the ${change.kind} took effect`))
            ended = { state: 'finished' }
            return {
              job: id,
              plan,
              stats: { ...stats },
              deadLetters: [...deadLetters],
              abandonedDeadLetters: abandoned,
              elapsedMs: Date.now() - started,
              attempts: attemptNumber + 1,
              recoveries,
              rescales,
              upgrades,
              takeovers,
            }
          }
          for (const letter of deadLetters.splice(0)) abandoned.push({ ...letter, attempt: attemptNumber })
          attemptNumber++
          // The stats of the next attempt start afresh (peers may differ).
          for (const peer of Object.keys(stats)) delete stats[peer]
          if (change !== undefined && !abort.signal.aborted) {
            if (change.kind === 'rescale') rescales++
            else upgrades++
            // A rescale (or a peer leaving): the same job, reshaped, from the savepoint. An upgrade:
            // the new version from here on (its program, its code shipped to the peers by hash, its arguments).
            const pending = change
            const before = context.code.manifest
            if (pending.kind === 'upgrade') {
              program = pending.loaded.program
              args = pending.args
              context = { ...context, code: pending.code, args }
              // A successor runs the new version (every peer that runs a share caches its code).
              await coordination?.update({ code: { ...pending.code.manifest, dependencies: { ...pending.code.manifest.dependencies } }, args: [...args] })
            }
            Object.assign(parallelism, pending.request.parallelism)
            for (const peer of pending.request.exclude ?? []) excluded.add(peer)
            const alive = this.components.members
              .list()
              .map((m) => m.peerId)
              .filter((p) => !excluded.has(p))
            workers = options.workers?.filter((p) => !excluded.has(p)) ?? alive.filter((p) => p !== this.id)
            if (workers.length === 0) workers = [this.id]
            descriptions = this.components.members
              .list()
              .filter((m) => !excluded.has(m.peerId))
              .map((m) => ({ id: m.peerId, tags: { ...(m.tags ?? {}) } }))
            planned = await kernel.plan(withParallelism(program, parallelism), { job: id, self: this.id, peers: descriptions, endpoints })
            shipped = shipPlan(program, planned)
            plan = roundRobinPlan(planned, workers, this.id, endpoints)
            const restored = firstRestored(events, savepoints)
            if (pending.kind === 'upgrade') {
              pending.loaded.planned?.(planned)
              events.next({ type: 'upgrading', attempt: attemptNumber, code: pending.code.manifest, checkpoint: pending.checkpoint, state: pending.state, plan })
              change = undefined
              restored.then(
                (at) =>
                  pending.resolve({
                    from: before,
                    to: pending.code.manifest,
                    checkpoint: pending.checkpoint,
                    state: pending.state,
                    pauseMs: at - pending.stoppedAt,
                    attempt: attemptNumber,
                  }),
                pending.reject,
              )
              continue
            }
            events.next({ type: 'rescaling', attempt: attemptNumber, reason: pending.request.reason, parallelism: { ...parallelism }, checkpoint: pending.checkpoint, plan })
            change = undefined
            restored.then(
              (at) =>
                pending.resolve({
                  changes: Object.fromEntries(Object.entries(pending.from).map(([name, from]) => [name, { from, to: parallelism[name]! }])),
                  checkpoint: pending.checkpoint,
                  pauseMs: at - pending.stoppedAt,
                  attempt: attemptNumber,
                }),
              pending.reject,
            )
            continue
          }
          const error = coordination?.fenced ?? outcome.error
          // A refusal is final: the next attempt would be refused the same way.
          if (abort.signal.aborted || recovery === undefined || error instanceof SubmissionRefusedError) throw error
          if (++recoveries > recovery.attempts) throw new RecoveryFailedError(id, attemptNumber, `the ${recovery.attempts} recovery attempt(s) the stack allows are used up`, error)
          // Peers lost are left out until membership sees them back as a new generation (restarted
          // and joined again): then their capacity, and the checkpoint copies they hold, are used again.
          const generations = new Map(this.components.membership.members().map((m) => [m.peerId, m] as const))
          for (const peer of outcome.lost) lostAt.set(peer, generations.get(peer)?.generation ?? 0)
          for (const [peer, generation] of lostAt) {
            const now = generations.get(peer)
            if (now !== undefined && now.status === 'alive' && now.generation > generation) lostAt.delete(peer)
          }
          const dead = new Set([
            ...lostAt.keys(),
            ...this.components.membership
              .members()
              .filter((m) => m.status !== 'alive')
              .map((m) => m.peerId),
          ])
          const alive = this.components.members.list().filter((m) => !dead.has(m.peerId) && !excluded.has(m.peerId))
          workers = (options.workers ?? alive.map((m) => m.peerId).filter((p) => p !== this.id)).filter((p) => !dead.has(p) && !excluded.has(p))
          if (workers.length === 0) workers = [this.id]
          descriptions = alive.map((m) => ({ id: m.peerId, tags: { ...(m.tags ?? {}) } }))
          // The first recovery starts at once; later ones back off (a peer that died may be restarting).
          if (recoveries > 1) await new Promise((resolve) => setTimeout(resolve, Math.min(4_000, 250 * 2 ** (recoveries - 2))))
          // Plan again over the survivors: placement re-solves, the lost instances move.
          planned = await kernel.plan(withParallelism(program, parallelism), { job: id, self: this.id, peers: descriptions, endpoints })
          shipped = shipPlan(program, planned)
          plan = roundRobinPlan(planned, workers, this.id, endpoints)
          const reason = error instanceof Error ? error.message : String(error)
          events.next({ type: 'recovering', attempt: attemptNumber, lost: [...dead], reason, plan })
        }
      } catch (error) {
        change?.reject(error)
        ended = {
          state: abort.signal.aborted && coordination?.fenced === undefined ? 'cancelled' : 'failed',
          error: { code: error instanceof LaminaError ? error.code : 'ERR_JOB_FAILED', message: error instanceof Error ? error.message : String(error) },
        }
        throw error
      } finally {
        // A failover job's end is recorded, and its role given up (a fenced coordinator writes nothing).
        await coordination
          ?.end(ended.state, ended.error)
          .catch((error: unknown) => this.components.node.logger.warn(`job ${id}: could not record its end: ${error instanceof Error ? error.message : String(error)}`))
        events.complete()
      }
    })()
    done.catch(() => undefined)
    return {
      id,
      get plan() {
        return plan
      },
      get program() {
        return planned
      },
      events: events.asObservable(),
      stats: () => ({ ...stats }),
      done,
      abort: (reason = 'aborted') => {
        abort.abort(reason)
        current?.abort(reason)
      },
      rescale: (operator, n) => rescale({ parallelism: { [operator]: n }, reason: `${operator} to ${n} instances (by hand)` }),
      reshape: rescale,
      savepoint: async () => {
        if (savepoints === undefined) throw new InvalidOptionError('savepoint', 'layers', 'needs a layer that provides savepoints (checkpoints())')
        return { lineage: id, checkpoint: await savepoints.take(currentJob, { retain: true }) }
      },
      upgrade: async (module, upgradeOptions = {}) => {
        const nextArgs = upgradeOptions.args ?? args
        // As `submit` does: this process runs the module itself; the other peers get its bundle.
        return upgrade(() => loadProgram(module, nextArgs, { submitter: true, peer: this.id }), await packProgram(module), nextArgs)
      },
      upgradePacked: (next, upgradeOptions = {}) => {
        const nextArgs = upgradeOptions.args ?? args
        return upgrade(() => this.loadPacked(next, nextArgs), next, nextArgs)
      },
      get code() {
        return context.code.manifest
      },
      ...(coordination === undefined ? {} : { token: coordination.token }),
    }
  }

  /**
   * Runs one attempt of a job: hands every other peer its share, runs ours, and settles with the
   * outcome. On the first failure it aborts every share and waits (a bounded time) for them all, so
   * the next attempt never overlaps this one; peers whose job stream broke are reported lost.
   */
  private attempt(
    context: AttemptContext,
    attempt: Attempt,
    plan: Plan,
    workers: readonly string[],
    descriptions: readonly { id: string; tags: Record<string, string> }[],
    program: Program,
    shipped: ShippedPlan,
    rescale: (change: RescaleRequest) => Promise<RescaleReport>,
  ): Attempting {
    const job = attempt.number === 0 ? context.id : `${context.id}~${attempt.number}`
    const abort = new AbortController()
    // Every channel and control call of the attempt listens on this signal.
    setMaxListeners(0, abort.signal)
    const onOuterAbort = (): void => abort.abort(context.signal.reason)
    if (context.signal.aborted) abort.abort(context.signal.reason)
    else context.signal.addEventListener('abort', onOuterAbort, { once: true })
    const lost = new Set<string>()
    const channels: JobChannel[] = []
    let over: () => void = () => undefined
    const attemptOver = new Promise<void>((resolve) => (over = resolve))
    // The first failure of any share is the attempt's failure; the aborts it causes elsewhere are not.
    let firstFailure: unknown
    const failAll = (reason: string, cause?: unknown): void => {
      if (cause !== undefined && firstFailure === undefined && !abort.signal.aborted) firstFailure = cause
      if (!abort.signal.aborted) abort.abort(reason)
      for (const channel of channels) void channel.send({ type: 'abort', reason }).catch(() => undefined)
    }
    const outcome = (async (): Promise<{ ok: true } | { ok: false; error: unknown; lost: string[] }> => {
      // Every worker runs a share, even one with no instance: durable state (checkpoint copies)
      // may live there, and the layers reach it through its share.
      const peers = [...new Set([...Object.values(plan), ...workers])].filter((p) => p !== this.id)
      const addresses = this.components.addressBook.addresses()
      let progress: NodeJS.Timeout | undefined
      // Failure detection drives recovery: a peer of this attempt that membership declares dead (a
      // frozen process, a hung host, a pulled cable: its TCP streams may stay open for minutes) is
      // lost as if its job stream had broken. Its stream is reset at once, so nothing waits on it.
      const deaths = this.components.membership.events.subscribe((event) => {
        const peer = event.member.peerId
        if (event.type !== 'dead' || !peers.includes(peer) || lost.has(peer)) return
        lost.add(peer)
        const error = new PeerDeadError(peer, Math.max(0, Math.round(event.at - event.member.lastSeen)))
        this.components.node.logger.info(`job ${job}: ${error.message}; failing the attempt`)
        failAll(error.message, error)
        for (const channel of channels) if (channel.remotePeer === peer) channel.abort(error)
      })
      try {
        // Hand every other peer its share and wait until all accepted, before anything runs.
        const accepted = await Promise.allSettled(
          peers.map(async (peer) => {
            let stream: Stream
            try {
              stream = await this.components.node.dialProtocol(this.components.addressBook.addressOf(peer, addresses), JOB_PROTOCOL, {
                signal: AbortSignal.any([abort.signal, AbortSignal.timeout(15_000)]),
              })
            } catch (error) {
              lost.add(peer)
              throw error
            }
            const channel = new JobChannel(stream, peer)
            channels.push(channel)
            await channel.send({
              type: 'submit',
              job,
              code: context.code.manifest,
              args: [...context.args],
              plan,
              submitter: this.id,
              addresses,
              peers: descriptions.map((d) => ({ id: d.id, tags: { ...d.tags } })),
              members: [this.id, ...peers],
              attempt: { lineage: attempt.lineage, number: attempt.number, ...(attempt.resume === undefined ? {} : { resume: attempt.resume }) },
              annotations: shipped,
              ...(context.coordination === undefined ? {} : { failover: { token: context.coordination.token } }),
            })
            const receive = (): Promise<JobMessage> =>
              channel.receive({ signal: abort.signal }).catch((error: unknown) => {
                if (error instanceof JobProtocolError) lost.add(peer)
                throw error
              })
            let answer = await receive()
            if (answer.type === 'need-code') {
              // The peer has not run this code before: it gets the bundle, and checks its hash.
              await channel.send({ type: 'code', hash: context.code.manifest.hash, bundle: Buffer.from(context.code.bundle).toString('base64') })
              answer = await receive()
            }
            if (answer.type === 'refused') throw new SubmissionRefusedError(peer, answer.code, answer.message)
            if (answer.type !== 'accepted') throw new RemoteJobError(peer, 'ERR_JOB_PROTOCOL', `expected accepted, got ${answer.type}`)
            return channel
          }),
        )
        const rejected = accepted.filter((a): a is PromiseRejectedResult => a.status === 'rejected')
        // A refusal says more than the aborts it causes elsewhere.
        const refused = rejected.find((a) => a.reason instanceof SubmissionRefusedError) ?? rejected[0]
        if (refused !== undefined) {
          failAll('a peer did not accept its share')
          return { ok: false, error: refused.reason, lost: [...lost] }
        }
        const remoteDone = channels.map(async (channel) => {
          for (;;) {
            let message: JobMessage
            try {
              message = await channel.receive()
            } catch (error) {
              // The stream broke without a word from the peer: it is gone (killed, or its host is).
              lost.add(channel.remotePeer)
              throw error
            }
            if (message.type === 'progress') {
              context.stats[message.peer] = message.stats
              context.events.next({ type: 'progress', peer: message.peer, stats: message.stats })
            } else if (message.type === 'dead-letter') {
              context.deadLetters.push(message.letter)
              context.events.next({ type: 'dead-letter', letter: message.letter })
            } else if (message.type === 'event') {
              context.events.next({
                type: 'layer',
                peer: message.peer,
                layer: message.layer,
                kind: message.kind,
                message: message.message,
                ...(message.data === null ? {} : { data: message.data }),
              })
            } else if (message.type === 'leaving') {
              // Move its instances off before it goes: a reshape without it.
              void rescale({ exclude: [message.peer], reason: `peer ${message.peer} is leaving` }).catch((error: unknown) =>
                context.events.next({
                  type: 'layer',
                  peer: this.id,
                  layer: 'cluster',
                  kind: 'leave-failed',
                  message: `could not move instances off ${message.peer}: ${error instanceof Error ? error.message : String(error)}`,
                }),
              )
            } else if (message.type === 'done') {
              context.stats[message.peer] = message.stats
              return
            } else if (message.type === 'failed') throw new RemoteJobError(message.peer, message.code, message.message)
          }
        })
        // Handled below once the attempt runs; a share may fail before that (its stream broke while
        // the others were still being started), which must not be an unhandled rejection meanwhile.
        for (const remote of remoteDone) remote.catch(() => undefined)
        for (const channel of channels) await channel.send({ type: 'start' })
        const recordTo = context.coordination
        const local = context.kernel.run(program, {
          id: job,
          peers: descriptions,
          planned: true,
          deployment: this.components.deploy({
            job,
            plan,
            submitter: this.id,
            addresses,
            signal: abort.signal,
            members: [this.id, ...peers],
            rescale,
            ...(recordTo === undefined ? {} : { recordCheckpoint: ({ record }) => recordTo.update({ checkpoint: record }) }),
          }),
          signal: abort.signal,
          attempt,
          onDeadLetter: (letter) => {
            const wire = toWire(letter, this.id)
            context.deadLetters.push(wire)
            context.events.next({ type: 'dead-letter', letter: wire })
          },
        })
        // Reachable by control calls until the attempt ends, even once its own instances are done
        // (a failover job's coordinator may run none, yet coordinates every checkpoint).
        this.components.shares.add(local, attemptOver)
        local.events.subscribe((event: JobEvent) => {
          if (event.type === 'layer')
            context.events.next({
              type: 'layer',
              peer: this.id,
              layer: event.layer,
              kind: event.kind,
              message: event.message,
              ...(event.data === undefined ? {} : { data: event.data }),
            })
        })
        progress = setInterval(() => {
          const current = local.stats()
          context.stats[this.id] = current
          context.events.next({ type: 'progress', peer: this.id, stats: current })
        }, this.components.progressMs)
        // Fail fast: the first share to fail aborts the others.
        for (const remote of remoteDone) remote.catch((error: unknown) => failAll(error instanceof Error ? error.message : String(error), error))
        local.done.catch((error: unknown) => {
          if (!abort.signal.aborted) this.components.node.logger.info(`job ${job}: the share on this peer failed: ${error instanceof Error ? error.message : String(error)}`)
          failAll(error instanceof Error ? error.message : String(error), error)
        })
        const settled = await settleWithin([local.done, ...remoteDone], abort.signal, 15_000)
        const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
        // The submitter's own share holds the sinks: when it finished, the output is whole.
        const localSettled = settled[0]!
        if (
          failure === undefined ||
          (localSettled.status === 'fulfilled' && lost.size > 0 && settled.slice(1).every((s, i) => s.status === 'fulfilled' || lost.has(channels[i]!.remotePeer)))
        ) {
          context.stats[this.id] = local.stats()
          // The job succeeded; every share is still reachable: the layers drop what it no longer needs.
          try {
            for (const notice of (await local.control(JOB_SUCCEEDED, null)) as readonly (LayerNotice & { layer: string })[])
              context.events.next({
                type: 'layer',
                peer: this.id,
                layer: notice.layer,
                kind: notice.kind,
                message: notice.message,
                ...(notice.data === undefined ? {} : { data: notice.data }),
              })
          } catch (error) {
            this.components.node.logger.warn(`job ${job}: a layer's work after the job succeeded failed: ${error instanceof Error ? error.message : String(error)}`)
          }
          return { ok: true }
        }
        return { ok: false, error: attemptFailure(context.id, firstFailure ?? failure.reason, abort.signal.reason), lost: [...lost] }
      } catch (error) {
        failAll(error instanceof Error ? error.message : String(error))
        return { ok: false, error, lost: [...lost] }
      } finally {
        deaths.unsubscribe()
        clearInterval(progress)
        context.signal.removeEventListener('abort', onOuterAbort)
        await Promise.all(channels.map((c) => c.close()))
        // The attempt is over. A failover job's own share may still coordinate (its instances done
        // long ago): it is aborted now, so its layers let go of it, as the other peers' shares are.
        over()
        if (context.coordination !== undefined && !abort.signal.aborted) abort.abort('the attempt ended')
      }
    })()
    return { outcome, abort: (reason) => failAll(reason) }
  }
}

/**
 * The error an attempt failed with, coded as the same failure would be in one process: a share
 * whose job failed (ERR_JOB_FAILED there) fails the cluster job with JobFailedError too, whose
 * cause names the peer; an abort stays a JobAbortedError.
 */
function attemptFailure(job: string, failure: unknown, abortReason: unknown): unknown {
  if (failure instanceof RemoteJobError && failure.remoteCode === 'ERR_JOB_FAILED') return new JobFailedError(job, failure)
  if (failure instanceof JobAbortedError && abortReason instanceof Error) return abortReason
  return failure
}

/** When the next attempt has restored every instance (the savepoints provider's `restored` event). */
function firstRestored(events: Subject<ClusterJobEvent>, savepoints: Savepoints | undefined): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const subscription = events.subscribe({
      next: (event) => {
        if (savepoints?.restored.is(event)) {
          subscription.unsubscribe()
          const at: unknown = event.data?.at
          resolve(typeof at === 'number' ? at : Date.now())
        }
      },
      complete: () => reject(new JobAbortedError('cluster', 'the job ended before the rescaled attempt restored')),
    })
  })
}

/** What every attempt of one submitted job shares. */
interface AttemptContext {
  readonly id: string
  readonly kernel: Kernel
  /** The program's code, as the other peers get it. */
  readonly code: PackedProgram
  readonly args: readonly string[]
  readonly events: Subject<ClusterJobEvent>
  readonly stats: Record<string, JobStats>
  readonly deadLetters: WireDeadLetter[]
  readonly signal: AbortSignal
  /** A failover job's hold on its coordinator role and record. */
  readonly coordination?: Coordination
}

/** A running attempt. */
interface Attempting {
  readonly outcome: Promise<{ ok: true } | { ok: false; error: unknown; lost: string[] }>
  abort(reason: string): void
}

/** The recovery a layer of the stack offers, if any (the most attempts any layer allows). */
function recoveryOf(layers: readonly Layer[]): { attempts: number } | undefined {
  const attempts = layers.map((l) => l.recovery?.attempts).filter((n): n is number => n !== undefined)
  return attempts.length === 0 ? undefined : { attempts: Math.max(...attempts) }
}

/**
 * Settles every promise; once the first rejects (or `signal` aborts), waits at most `graceMs` more
 * for the rest, which then count as rejected (a share that does not answer an abort).
 */
async function settleWithin(promises: readonly Promise<unknown>[], signal: AbortSignal, graceMs: number): Promise<PromiseSettledResult<unknown>[]> {
  const results: (PromiseSettledResult<unknown> | undefined)[] = promises.map(() => undefined)
  let timer: NodeJS.Timeout | undefined
  const grace = new Promise<void>((resolve) => {
    const start = (): void => void (timer ??= setTimeout(resolve, graceMs))
    if (signal.aborted) start()
    else signal.addEventListener('abort', start, { once: true })
    for (const promise of promises) promise.catch(start)
  })
  const all = Promise.all(
    promises.map((promise, i) =>
      promise.then(
        (value) => void (results[i] = { status: 'fulfilled', value }),
        (reason: unknown) => void (results[i] = { status: 'rejected', reason }),
      ),
    ),
  )
  await Promise.race([all, grace])
  clearTimeout(timer)
  return results.map((r) => r ?? { status: 'rejected', reason: new JobAbortedError('cluster', 'a share did not settle after the abort') })
}

/** The program with some operators at another parallelism (a rescale). */
function withParallelism(program: Program, parallelism: { readonly [operator: string]: number }): Program {
  for (const [name, n] of Object.entries(parallelism)) {
    if (!program.operators.some((o) => o.name === name))
      throw new InvalidOptionError('rescale', 'operator', `${name} is not an operator of ${program.name} (it has ${program.operators.map((o) => o.name).join(', ')})`)
    if (!Number.isInteger(n) || n < 1) throw new InvalidOptionError('rescale', `parallelism of ${name}`, `must be a positive integer, got ${n}`)
  }
  return program.mapOperators((o) => (parallelism[o.name] === undefined ? o : o.annotate({ parallelism: parallelism[o.name]! })))
}
