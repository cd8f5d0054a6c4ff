// The elasticity layer: changes the parallelism of running keyed operators, by hand or by policy.
//
// Keyed state lives in KEY_GROUPS key groups (as Flink's max parallelism): instance i of n owns a
// contiguous range of groups, and a key's record always goes to the owner of its group. A rescale
// (`JobCluster.rescale`, `SubmittedJob.rescale`) takes a savepoint, runs the job again with the new
// parallelism, and every new instance restores the keys of the groups it now owns from the old
// instances' snapshots (the checkpoints layer does the moving); sources replay from the savepoint,
// so records in flight reach their key's new owner, and sinks commit once: nothing is lost or
// duplicated.
//
// The automatic policy samples, on the submitting peer, how full the input queues of an operator
// are across its peers, and scales out while they stay full (backpressure) and in while they stay
// nearly empty, within [min, max] and at most once per cooldown. A member that joins is capacity
// the next rescale places instances on; a member leaving gracefully has its instances moved off
// first (the cluster does that: see Peer.leave).

import { layerEvent, SAVEPOINTS, type ControlRegistry, type JobCluster, type JobStats, type Layer, type Program, type RescaleReport } from '../../kernel/index.js'
import { keyGroups } from '../../kmods/ring/index.js'
import { RescaleError } from './errors.js'

/** An automatic scaling policy for one operator. */
export interface AutoscalePolicy {
  /** The operator to scale (keyed, or stateless). */
  readonly operator: string
  /** Fewest instances. @default 1 */
  readonly min?: number
  /** Most instances. */
  readonly max: number
  /** Milliseconds between samples. @default 1000 */
  readonly intervalMs?: number
  /** Consecutive samples that must agree before acting. @default 3 */
  readonly samples?: number
  /** Scale out while the operator's input queues are at least this full (0..1). @default 0.5 */
  readonly scaleOutAbove?: number
  /** Scale in while they are at most this full (0..1). @default 0.02 */
  readonly scaleInBelow?: number
  /** Milliseconds after a rescale before the next one. @default 10000 */
  readonly cooldownMs?: number
  /** Instances added or removed per step. @default 1 */
  readonly step?: number
  /** Records a channel holds when its link sets no capacity (the job's default). @default 4096 */
  readonly channelCapacity?: number
}

/** Options of the elasticity layer. */
export interface ElasticityOptions {
  /** Automatic policies; without any, rescaling is manual (API, control message, CLI). */
  readonly policies?: readonly AutoscalePolicy[]
  /** Called with every decision a policy takes (also reported as a `scale` event). */
  readonly onDecision?: (decision: ScaleDecision) => void
}

/** What a policy decided, and why. */
export interface ScaleDecision {
  readonly operator: string
  readonly from: number
  readonly to: number
  /** Average fill of the operator's input queues over the samples that decided. */
  readonly fill: number
  /** Records per second the operator took in, at the last sample. */
  readonly rate: number
  /** Key groups whose keyed state moves to another instance (of KEY_GROUPS). */
  readonly movedKeyGroups: number
  readonly reason: string
}

/** The control message kind that rescales an operator: payload `{ operator, parallelism }`. */
export const RESCALE_CONTROL = 'elasticity.rescale'

/**
 * The `layer` events of the elasticity layer, typed: test events with them instead of comparing
 * kind strings.
 */
export const ELASTICITY_EVENTS = {
  /** A policy decided to rescale an operator (data: the ScaleDecision). */
  decided: layerEvent<ScaleDecision>('scale', { layer: 'elasticity' }),
  /** A policy's sample or the rescale it asked for failed. */
  failed: layerEvent<undefined>('scale-failed', { layer: 'elasticity' }),
} as const

/** Fill of an operator's input queues and its intake, from every peer's stats. */
export function inputLoad(program: Program, operator: string, stats: readonly JobStats[], defaultCapacity: number): { fill: number; recordsIn: number } {
  const links = program.links.filter((l) => l.to.operator === operator)
  let queued = 0
  let capacity = 0
  for (const s of stats) {
    // A channel is counted on the peer that runs its receiving instance (a remote link shows on both).
    const here = new Set(s.instances.filter((i) => i.operator === operator).map((i) => i.instance))
    for (const channel of s.channels) {
      const link = links.find((l) => l.id === channel.link)
      if (link === undefined || !here.has(channel.to)) continue
      queued += channel.queued
      capacity += link.capacity ?? defaultCapacity
    }
  }
  const recordsIn = stats.reduce((sum, s) => sum + s.instances.filter((i) => i.operator === operator).reduce((a, i) => a + i.recordsIn, 0), 0)
  return { fill: capacity === 0 ? 0 : Math.min(1, queued / capacity), recordsIn }
}

/** One policy's sampler on the submitting peer. */
class Autoscaler {
  private readonly fills: number[] = []
  private lastIn: { at: number; records: number } | undefined
  private timer: NodeJS.Timeout | undefined
  private busy = false

  constructor(
    private readonly policy: AutoscalePolicy,
    private readonly registry: ControlRegistry,
    private readonly onDecision: ((decision: ScaleDecision) => void) | undefined,
    /** When each job (by lineage) last rescaled, for this layer value: cooldowns outlive the attempts a rescale starts. */
    private readonly lastRescale: Map<string, number>,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sample(), this.policy.intervalMs ?? 1000)
    this.timer.unref?.()
  }

  stop(): void {
    clearInterval(this.timer)
  }

  private async sample(): Promise<void> {
    if (this.busy || this.registry.job.abortSignal.aborted) return
    this.busy = true
    try {
      const { job, cluster } = this.registry
      const stats = await Promise.all(cluster.peers().map((peer) => cluster.call(peer, 'elasticity.stats', null, { timeoutMs: 5_000 }).catch(() => undefined)))
      const load = inputLoad(
        job.program,
        this.policy.operator,
        stats.filter((s): s is JobStats => s !== undefined && s !== null),
        this.policy.channelCapacity ?? 4096,
      )
      const now = Date.now()
      const rate = this.lastIn === undefined ? 0 : ((load.recordsIn - this.lastIn.records) * 1000) / Math.max(1, now - this.lastIn.at)
      this.lastIn = { at: now, records: load.recordsIn }
      this.fills.push(load.fill)
      const need = this.policy.samples ?? 3
      if (this.fills.length > need) this.fills.shift()
      if (this.fills.length < need) return
      const current = job.program.operators.find((o) => o.name === this.policy.operator)?.annotations.parallelism ?? 1
      const cooled = now - (this.lastRescale.get(job.attempt.lineage) ?? 0) >= (this.policy.cooldownMs ?? 10_000)
      if (!cooled) return
      const step = this.policy.step ?? 1
      const min = this.policy.min ?? 1
      let to = current
      let reason = ''
      if (this.fills.every((f) => f >= (this.policy.scaleOutAbove ?? 0.5)) && current < this.policy.max) {
        to = Math.min(this.policy.max, current + step)
        reason = `input queues at least ${Math.round((this.policy.scaleOutAbove ?? 0.5) * 100)}% full for ${need} samples (backpressure)`
      } else if (this.fills.every((f) => f <= (this.policy.scaleInBelow ?? 0.02)) && current > min) {
        to = Math.max(min, current - step)
        reason = `input queues at most ${Math.round((this.policy.scaleInBelow ?? 0.02) * 100)}% full for ${need} samples`
      }
      if (to === current) return
      const fill = this.fills.reduce((a, b) => a + b, 0) / this.fills.length
      // Past KEY_GROUPS instances (stateless operators only) there are no whole groups to count.
      const movedKeyGroups = Math.max(current, to) <= keyGroups.count ? keyGroups.moves(current, to).length : keyGroups.count
      const decision: ScaleDecision = { operator: this.policy.operator, from: current, to, fill, rate, movedKeyGroups, reason }
      this.onDecision?.(decision)
      this.registry.notify(
        ELASTICITY_EVENTS.decided.kind,
        `${this.policy.operator}: ${current} -> ${to} instances: ${reason} (fill ${(fill * 100).toFixed(0)}%, ${Math.round(rate)} records/s; ${movedKeyGroups} of ${keyGroups.count} key groups move)`,
        decision,
      )
      this.lastRescale.set(job.attempt.lineage, now)
      this.fills.length = 0
      this.stop()
      await rescaleThrough(cluster, this.policy.operator, to, `policy: ${reason}`)
    } catch (error) {
      this.registry.notify(ELASTICITY_EVENTS.failed.kind, `${this.policy.operator}: ${error instanceof Error ? error.message : String(error)}`)
    } finally {
      this.busy = false
    }
  }
}

function rescaleThrough(cluster: JobCluster, operator: string, n: number, reason: string): Promise<RescaleReport> {
  if (cluster.rescale === undefined)
    return Promise.reject(new RescaleError(operator, `peer ${cluster.self} does not run this job's attempts (only its submitter, ${cluster.submitter}, can rescale it)`))
  return cluster.rescale({ parallelism: { [operator]: n }, reason })
}

/**
 * The elasticity layer. Every share answers `elasticity.stats`; the submitting peer's share also
 * answers `elasticity.rescale` (`{ operator, parallelism }`: manual rescaling as a control
 * message) and runs the automatic policies. A rescale starts from a savepoint, so the layer
 * requires `SAVEPOINTS` (the checkpoints layer): a stack without it is refused when it is built.
 *
 * ```ts
 * export const layers = [checkpoints(), elasticity({ policies: [{ operator: 'count', max: 4 }] })]
 * ```
 */
export function elasticity(options: ElasticityOptions = {}): Layer {
  for (const policy of options.policies ?? []) {
    const min = policy.min ?? 1
    if (!Number.isInteger(min) || min < 1 || !Number.isInteger(policy.max) || policy.max < min)
      throw new RescaleError(policy.operator, `a policy needs integers 1 <= min <= max, got min ${min}, max ${policy.max}`)
  }
  // This layer value's state: when each job last rescaled.
  const lastRescale = new Map<string, number>()
  return {
    name: 'elasticity',
    after: ['checkpoints'],
    requires: [SAVEPOINTS],
    control(registry) {
      const { job, cluster } = registry
      registry.handle('elasticity.stats', () => job.stats())
      if (cluster.self !== cluster.submitter) return
      registry.handle(RESCALE_CONTROL, async (payload) => {
        const { operator, parallelism } = (payload ?? {}) as { operator?: unknown; parallelism?: unknown }
        if (typeof operator !== 'string' || !job.program.operators.some((o) => o.name === operator))
          throw new RescaleError(String(operator), `not an operator of ${job.program.name}`)
        if (typeof parallelism !== 'number' || !Number.isInteger(parallelism) || parallelism < 1)
          throw new RescaleError(operator, `parallelism must be a positive integer, got ${JSON.stringify(parallelism)}`)
        lastRescale.set(job.attempt.lineage, Date.now())
        return rescaleThrough(cluster, operator, parallelism, `${operator} to ${parallelism} instances (by hand)`)
      })
      const scalers = (options.policies ?? []).map((policy) => {
        if (!job.program.operators.some((o) => o.name === policy.operator))
          throw new RescaleError(policy.operator, `a policy names it, but ${job.program.name} has no such operator`)
        return new Autoscaler(policy, registry, options.onDecision, lastRescale)
      })
      for (const scaler of scalers) scaler.start()
      job.events.subscribe({ complete: () => scalers.forEach((s) => s.stop()) })
      job.abortSignal.addEventListener('abort', () => scalers.forEach((s) => s.stop()), { once: true })
    },
  }
}
