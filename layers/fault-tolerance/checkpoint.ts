// The checkpoint half of the fault tolerance layer: aligned checkpoint barriers (asynchronous
// barrier snapshots, after Carbone et al., "Lightweight Asynchronous Snapshots for Distributed
// Dataflows", the scheme Flink uses), snapshots kept in the embedded store on their peer and copied
// to another, transactional sinks, and resumption of a restarted job from the last complete checkpoint.
//
// How it fits together, per job:
// - the submitter's share runs the coordinator: every `intervalMs` it asks each peer to inject
//   barrier n at its sources (`JobView.inject`); the kernel aligns barriers at every instance and
//   calls `Instance.marker`, where this layer takes the instance's snapshot synchronously and
//   persists it in the background (local store, then `replicas` other peers, then an ack);
// - checkpoint n is complete when every instance acknowledged it (or finished earlier, leaving a
//   final snapshot); the coordinator records it durably and tells every peer, and sinks commit
//   the output they staged up to barrier n;
// - a restarted job (a new attempt, after a peer died) asks the coordinator for the last complete
//   checkpoint; every instance restores its snapshot from whichever peer holds a copy, sources
//   resume from their offsets, and sinks commit what that checkpoint staged but had not committed.
//
// The parts: protocol.ts (control messages, wire forms, events), snapshot-store.ts (the store on a
// peer), share.ts (one job's share on a peer), coordinator.ts, instance.ts (the instance wrapper),
// transactional-sink.ts. This file is the layer itself. Every piece of state belongs to one layer
// value (one stack), never to the module: two stacks in one process share nothing.

import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { provide, SAVEPOINTS, type InstanceSpec, type Layer, type Program, type Savepoints } from '../../kernel/index.js'
import { Coordinator } from './coordinator.js'
import { CheckpointProtocolError } from './errors.js'
import { CheckpointedInstance } from './instance.js'
import { CHECKPOINT_EVENTS, CHECKPOINTS_LAYER, instanceKey } from './protocol.js'
import { Share } from './share.js'
import { SnapshotStores } from './snapshot-store.js'
import { SinkWrites, TransactionalSink } from './transactional-sink.js'

/** Options of the checkpoint layer. All optional. */
export interface CheckpointOptions {
  /** Milliseconds between checkpoints. @default 1000 */
  readonly intervalMs?: number
  /** A checkpoint not complete after this long is abandoned; the next one supersedes it. @default 60000 */
  readonly timeoutMs?: number
  /** Other peers each snapshot is copied to (fewer when the job has fewer peers). @default 1 */
  readonly replicas?: number
  /** Where the store lives when the peer has no work directory (in-process runs). @default a directory under the OS temp dir */
  readonly dir?: string
  /** How many times a cluster job may be restarted from its last checkpoint. @default 5 */
  readonly attempts?: number
  /**
   * Milliseconds a restoring instance waits for a peer holding its snapshot to come back when no
   * holder answers (the holders may be restarting) before the attempt fails. @default 15000
   */
  readonly restoreWaitMs?: number
}

/** What `guaranteeOf` says a program gets under this layer. */
export interface Guarantee {
  readonly level: 'exactly-once' | 'at-least-once' | 'at-most-once'
  /** Why the guarantee is weaker, one line per source or sink that makes it so. */
  readonly because: readonly string[]
}

/**
 * The guarantee a program gets under checkpoints: exactly-once for deterministic operators when
 * every source can replay; at-most-once for records read since the last checkpoint from a source
 * that cannot (`replay: 'none'`: async iterables, Observables, one-shot iterators).
 *
 * With `failover` (a job whose coordinator may die and be succeeded by another peer, so that
 * sinks run wherever placement puts them), a sink that does not commit its output itself
 * (SinkCommit: the transactional KV's `txkvSink`) keeps the record of what it wrote on the peer
 * running it: when that peer dies, output it wrote since the checkpoint before may be written
 * again by its successor (at-least-once), and an array or callback sink writes into whichever
 * process runs it.
 */
export function guaranteeOf(program: Program, options: { readonly failover?: boolean } = {}): Guarantee {
  const lost = program.operators
    .filter((o) => Object.keys(o.inputs).length === 0 && o.annotations.replay === 'none')
    .map((o) => `source ${o.name} cannot replay its input: after a failure, records it read since the last checkpoint are lost`)
  const repeated =
    options.failover === true
      ? program.operators
          .filter((o) => Object.keys(o.outputs).length === 0 && o.describe().commits !== true)
          .map(
            (o) =>
              `sink ${o.name} does not commit its output itself (SinkCommit): if the peer running it dies, output it wrote may be written again, by the peer that runs it next`,
          )
      : []
  const level = lost.length > 0 ? 'at-most-once' : repeated.length > 0 ? 'at-least-once' : 'exactly-once'
  return { level, because: [...lost, ...repeated] }
}

/**
 * The checkpoint layer: aligned barriers every `intervalMs`, snapshots in the embedded store on
 * each peer and copied to `replicas` others, transactional sinks, and resumption of a cluster job
 * from its last complete checkpoint after a peer dies (`recovery`). It provides `SAVEPOINTS`: a
 * checkpoint on demand, which a rescale starts from.
 *
 * ```ts
 * export const layers = [placement(), checkpoints({ intervalMs: 1000 })]
 * ```
 */
export function checkpoints(options: CheckpointOptions = {}): Layer {
  const settings = {
    intervalMs: options.intervalMs ?? 1000,
    timeoutMs: options.timeoutMs ?? 60_000,
    replicas: options.replicas ?? 1,
    attempts: options.attempts ?? 5,
    restoreWaitMs: options.restoreWaitMs ?? 15_000,
    dir: options.dir ?? join(tmpdir(), `lamina-checkpoints-${process.pid}`),
  }
  for (const [name, value] of Object.entries({ intervalMs: settings.intervalMs, timeoutMs: settings.timeoutMs })) {
    if (!Number.isFinite(value) || value <= 0) throw new CheckpointProtocolError('options', `${name} must be a positive number of milliseconds, got ${value}`)
  }
  if (!Number.isFinite(settings.restoreWaitMs) || settings.restoreWaitMs < 0)
    throw new CheckpointProtocolError('options', `restoreWaitMs must be zero or more milliseconds, got ${settings.restoreWaitMs}`)
  // This layer value's state: its jobs' shares and its sinks' write queues (store connections are per file and process: snapshot-store.ts).
  const shares = new Map<string, Share>()
  const stores = new SnapshotStores()
  const sinkWrites = new SinkWrites()
  const savepoints: Savepoints = {
    async take(job, takeOptions) {
      const share = shares.get(job)
      if (share === undefined) throw new CheckpointProtocolError('savepoint', `job ${job} is not running under this checkpoints layer`)
      const id = await share.coordinating('savepoint').now(takeOptions?.signal)
      if (takeOptions?.retain === true) await share.retain(id)
      return id
    },
    restored: CHECKPOINT_EVENTS.restored,
  }
  return {
    name: CHECKPOINTS_LAYER,
    recovery: { attempts: settings.attempts },
    provides: [provide(SAVEPOINTS, savepoints)],
    control(registry) {
      const job = registry.job
      const share = new Share(
        job,
        registry.cluster,
        settings,
        (kind, message, data) => registry.notify(kind, message, data),
        stores.at(registry.cluster.workDir ?? settings.dir),
        sinkWrites,
      )
      shares.set(job.id, share)
      share.register(registry)
      if (registry.cluster.self === registry.cluster.submitter) {
        share.coordinator = new Coordinator(share, settings)
        // The job succeeded (the cluster says so while every share is still there): collect its lineage.
        registry.onSucceeded(() => share.collectLineage())
        const guarantee = guaranteeOf(job.program, { failover: registry.cluster.recordCheckpoint !== undefined })
        if (guarantee.level !== 'exactly-once') registry.notify(CHECKPOINT_EVENTS.guarantee.kind, `${guarantee.level}: ${guarantee.because.join('; ')}`, guarantee)
        share.coordinator.start()
      }
      const forget = (): void => {
        share.coordinator?.stop()
        if (shares.get(job.id) === share) shares.delete(job.id)
      }
      // A job in one process has no cluster to say it succeeded: its end is its success.
      const alone = registry.cluster.self === registry.cluster.submitter && registry.cluster.peers().length === 1
      // A failover job's coordinator may run no instance, or finish its own before the others:
      // it coordinates checkpoints until the attempt ends (the cluster aborts the share then).
      const coordinating = share.coordinator !== undefined && registry.cluster.recordCheckpoint !== undefined
      if (coordinating) {
        if (job.abortSignal.aborted) forget()
        else job.abortSignal.addEventListener('abort', forget, { once: true })
      }
      job.events.subscribe({
        next: (event) => {
          if (event.type === 'finished' && alone) void share.collectLineage().catch(() => undefined)
          if ((event.type === 'finished' && !coordinating) || event.type === 'failed') forget()
        },
        complete: () => {
          if (!coordinating) forget()
        },
      })
    },
    instance(spec: InstanceSpec, next) {
      const inner = next(spec)
      const share = shares.get(spec.info.job)
      // Spawned children are not part of the plan: their parent's state is what is checkpointed.
      if (share === undefined || !share.job.program.operators.some((o) => o.name === spec.info.operator)) return inner
      const sink = Object.keys(spec.operator.outputs).length === 0
      const instance = sink ? new TransactionalSink(inner, spec.operator, share) : new CheckpointedInstance(inner, spec.operator, share)
      share.instances.set(instanceKey(spec.info.operator, spec.info.instance), instance)
      return instance.wrapped()
    },
  }
}
