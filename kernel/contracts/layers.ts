// Contracts of the layer API: plan context, instance specs and instances, the control registry, capabilities, the Layer hooks.
// This file imports no implementation.

import type { Key } from './ports.js'
import type { InstanceInfo, Operator, SinkBatch } from './operators.js'
import type { Batch, ChannelEnd, Header, Marker } from './channels.js'
import type { Program } from './programs.js'
import type { JobView } from './jobs.js'

/** A peer as planning sees it: its id, tags (`ssd`, `region=eu` …) and capacities. */
export interface PeerDescription {
  readonly id: string
  readonly tags: Readonly<Record<string, string>>
  /** Named capacities, e.g. `{ cpu: 4, memoryMb: 8192 }`. @default {} */
  readonly capacity?: Readonly<Record<string, number>>
}

/** Where a layer's plan hook runs. */
export interface PlanContext {
  readonly job: string
  /** The live members the program may be placed on (just this process when run without a cluster). */
  readonly peers: readonly PeerDescription[]
  /** The peer planning the job (the submitter). */
  readonly self: string
  /**
   * Where sources and sinks go when no annotation says: on the submitter (`submitter`, the
   * default: its files, arrays and callbacks are there), or placed like any other operator
   * (`placed`: a failover job, whose coordinator may die and be succeeded by another peer).
   */
  readonly endpoints?: 'submitter' | 'placed'
}

/**
 * The annotation a placement layer writes on each operator: the peer of each instance, by index.
 * The cluster runtime deploys by it (and falls back to its own round robin when it is absent).
 */
export interface Assignment {
  readonly peers: readonly string[]
}

/** What the kernel gives an instance to emit with; layers may wrap it (e.g. to add header fields). */
export interface Outputs {
  emit(port: string, value: unknown, header?: Header): void
  /** Optional bulk form of `emit` (no headers); when absent the kernel calls `emit` per value. */
  emitAll?(port: string, values: readonly unknown[]): void
}

/** Everything needed to build one running operator instance. */
export interface InstanceSpec {
  readonly info: InstanceInfo
  readonly operator: Operator
  readonly outputs: Outputs
  /** Watches the record loop of an atom-form instance (see AtomObserver); a layer that sets it calls the one it was given too. */
  readonly observer?: AtomObserver
}

/** Called before the handler of each record of a watched batch: the record's index in that batch and its key (keyed operators). */
export type RecordHook = (index: number, key: Key | undefined) => void

/**
 * What a layer learns from the kernel's record loop of an atom-form instance without wrapping its
 * handlers: which record the operator's code handles, and which key's state code outside a record
 * reads. The metadata layer ties emissions to their input records with it; the isolation layer
 * replays it on the host for an operator that runs in a worker or child process.
 */
export interface AtomObserver {
  /**
   * Called when the instance starts on a batch its port's record handler takes one record at a
   * time (not for batch handlers); returns the hook to call before each record's handler, or
   * undefined to watch nothing of this batch (then its records cost nothing more).
   */
  batch?(port: string, batch: Batch): RecordHook | undefined
  /**
   * Called when code outside a record (`end`, a timer) reads one key's state: with the key at
   * `state.of(key)` and at each entry of `state.entries()`, and with undefined once `entries()` ends.
   */
  stateKey?(key: Key | undefined): void
}

/** Keyed state of one instance in portable form: keys with codec-encoded values. */
export interface StateSnapshot {
  readonly operator: string
  readonly entries: readonly (readonly [Key | null, unknown])[]
  /** The name of the state codec the entries were encoded with (absent: none, or an older snapshot). */
  readonly codec?: string
}

/**
 * A running operator instance as the kernel drives it. Layers wrap it (count, trace, isolate,
 * snapshot); every method may return a promise, which the kernel awaits before the next message.
 */
export interface Instance {
  readonly info: InstanceInfo
  /** Called once before any message. */
  start(): void | Promise<void>
  /** Processes a batch that arrived on an input port. */
  process(port: string, batch: Batch): void | Promise<void>
  /** Runs the operator's own driver (sources); resolves when it has nothing more to produce. */
  run(): void | Promise<void>
  /** Called once when every input has ended (and `run` finished). */
  end(): void | Promise<void>
  /** The instance's state in portable form. */
  snapshot(): StateSnapshot
  /** Replaces the instance's state (validated against the state codec). */
  restore(snapshot: StateSnapshot): void
  /**
   * Called when a marker has arrived on every input (aligned), after the instance's earlier
   * emissions were flushed and before the marker moves on downstream. The kernel awaits it.
   */
  marker?(marker: Marker): void | Promise<void>
  /**
   * Called when the instance is discarded before it ended (a supervisor replaced it with a fresh
   * one): it cancels the timers it set, so they do not fire into its successor. Idempotent.
   */
  dispose?(): void
  /** A sink with its own commit (SinkCommit): writes checkpoint `id`'s output and records it, atomically. */
  commitStage?(id: number, batches: readonly SinkBatch[]): Promise<void>
  /** A sink with its own commit: the newest checkpoint it committed (-1 when none). */
  lastCommitted?(): Promise<number>
}

/** A message handler registered by a layer's control hook. */
export type ControlHandler = (payload: unknown) => unknown

/** What a layer reports from a handler that runs after the job's events ended (`ControlRegistry.onSucceeded`). */
export interface LayerNotice {
  readonly kind: string
  readonly message: string
  readonly data?: unknown
}

/** Where a layer registers its control-plane message kinds and syscalls. */
export interface ControlRegistry {
  /** Registers a control message kind, sent with `job.control(kind, payload)`. */
  handle(kind: string, handler: ControlHandler): void
  /** Registers a syscall atoms reach with `ctx.call(name, argument)`. */
  syscall(name: string, fn: (argument: unknown, caller: InstanceInfo) => unknown): void
  /** The running job: its events, stats and instances. */
  readonly job: JobView
  /** Reports something the layer did (a restart, a checkpoint): a `layer` event on `job.events`. */
  notify(kind: string, message: string, data?: unknown): void
  /**
   * Registers what the layer does once the job has succeeded in a cluster: every share of its last
   * attempt is done and its output whole, and none is released yet, so the layer can still reach
   * them all (the checkpoints layer collects the job's snapshots on every peer). The cluster sends
   * `job.control(JOB_SUCCEEDED)` to the submitter's share, which runs every layer's handler; the
   * notice a handler returns is reported as a `layer` event of the cluster job (the job's own
   * events have ended by then).
   */
  onSucceeded(handler: () => Promise<LayerNotice | undefined> | LayerNotice | undefined): void
  /** The job's peers and a way to reach this job's share on each of them. */
  readonly cluster: JobCluster
}

/**
 * The peers a job runs on, as its layers see them. Without a deployment this is one peer (`local`)
 * and `call` reaches the local job.
 */
export interface JobCluster {
  /** This peer. */
  readonly self: string
  /** The peer that submitted the job (its coordinator). */
  readonly submitter: string
  /** Every peer that runs part of the job (this one included). */
  peers(): readonly string[]
  /**
   * Sends a control message to this job's share on `peer` and resolves with what its handler
   * returned (`Job.control` there). Rejects when the peer is unreachable or has no such handler.
   */
  call(peer: string, kind: string, payload: unknown, options?: { readonly signal?: AbortSignal; readonly timeoutMs?: number }): Promise<unknown>
  /** A directory this peer keeps durable state in (its work directory), when it has one. */
  readonly workDir?: string
  /**
   * On the submitting peer of a cluster job: runs the job again from a fresh checkpoint with
   * these operators at these parallelisms (and without `exclude`d peers), moving keyed state by
   * key group. Needs a layer that provides `SAVEPOINTS` (checkpoints). Resolves once every
   * instance of the new attempt has restored its state.
   */
  rescale?(change: RescaleRequest): Promise<RescaleReport>
  /**
   * On the coordinating peer of a job whose coordination outlives it (a failover job): records a
   * complete checkpoint (`record`, the layer's JSON) where a successor finds it, before any of its
   * output is committed. A successor's attempt gets the record back in `Attempt.resume.checkpoint`.
   * A rejection leaves the checkpoint incomplete (the next one supersedes it).
   */
  recordCheckpoint?(checkpoint: { readonly id: number; readonly record: unknown }): Promise<void>
}

/** A change of a running job's shape (see JobCluster.rescale). */
export interface RescaleRequest {
  /** New parallelism by operator name. */
  readonly parallelism?: { readonly [operator: string]: number }
  /** Peers to move every instance off (a member leaving gracefully). */
  readonly exclude?: readonly string[]
  /** Shown in events and logs. */
  readonly reason: string
}

/** What a rescale did. */
export interface RescaleReport {
  /** Parallelism of every changed operator before and after. */
  readonly changes: { readonly [operator: string]: { readonly from: number; readonly to: number } }
  /** The checkpoint (savepoint) the new attempt restored from. */
  readonly checkpoint: number
  /** Milliseconds from stopping the old attempt to the last instance of the new one restored. */
  readonly pauseMs: number
  /** The new attempt's number. */
  readonly attempt: number
}

/**
 * A capability a layer can provide to the stack, named once and typed by the API its provider
 * exposes (`T`). Made with `capability<T>(name)`; a layer lists it in `provides` (with its API)
 * or `requires`, and anyone holding the stack asks for the API with `kernel.capability(token)`.
 * Two tokens with the same name are the same capability.
 */
export interface Capability<T> {
  readonly name: string
  /** Type-level only: the API a provider exposes. */
  readonly _api?: T
}

/** A capability together with the API a layer provides for it (made with `provide(token, api)`). */
export interface Provided<T = unknown> {
  readonly capability: Capability<T>
  readonly api: T
}

/**
 * A kind of `layer` event (reported with `ControlRegistry.notify`), typed by its data. The layer
 * that reports it exports it, made with `layerEvent<D>(kind, { layer })`; consumers test events
 * with `is` instead of comparing kind strings.
 */
export interface LayerEventKind<D> {
  /** The reporting layer's name; undefined when several layers report this kind. */
  readonly layer: string | undefined
  readonly kind: string
  /** True when `event` is a `layer` event of this kind (from this layer): its `data` is then a `D`. */
  is<E extends { readonly type: string }>(event: E): event is Extract<E, { readonly type: 'layer' }> & { readonly kind: string; readonly data: D }
}

/**
 * What the `SAVEPOINTS` capability provides (the checkpoints layer does): consistent snapshots of a
 * running job taken on demand, which a new attempt of the job can resume from. A rescale takes one
 * first (`JobCluster.rescale`), so `elasticity()` requires it.
 */
export interface Savepoints {
  /**
   * Takes a savepoint of the running job `job` (an attempt's job id) whose coordinator runs in this
   * process, and resolves with its checkpoint id once it is complete. A checkpoint already in
   * flight is waited for first. Rejects when the job is not coordinated here. With `retain`, the
   * checkpoint is kept when the job ends (its snapshots are not collected), and a later job can
   * start from it: `Attempt.resume` `{ savepoint: { lineage, checkpoint } }`.
   */
  take(job: string, options?: { readonly signal?: AbortSignal; readonly retain?: boolean }): Promise<number>
  /** Reported once every instance of a resumed attempt has restored its state (`at`: when, ms since the epoch). */
  readonly restored: LayerEventKind<{ readonly checkpoint: number | null; readonly at: number }>
}

/**
 * A runtime layer: a name, order constraints, the capabilities it provides and requires, and
 * optional hooks. Each hook receives the thing being built and a `next` that builds it with the
 * layers below.
 *
 * ```ts
 * const counting: Layer = {
 *   name: 'count',
 *   channel: (ch, next) => {
 *     const inner = next(ch)
 *     return isChannelSender(inner) ? wrapChannel(inner, { send: (b) => { n += b.values.length; inner.send(b) } }) : inner
 *   },
 * }
 * ```
 */
export interface Layer {
  readonly name: string
  /** Names of layers this one must sit above (nearer the program). */
  readonly before?: readonly string[]
  /** Names of layers this one must sit below. */
  readonly after?: readonly string[]
  /**
   * Capabilities this layer provides, each with its API (`provide(SAVEPOINTS, api)`). A stack has
   * at most one provider of each: a second one is a LayerStackError when the stack is built.
   */
  readonly provides?: readonly Provided[]
  /**
   * Capabilities this layer needs some layer of its stack to provide: a stack without a provider
   * is a LayerStackError when it is built (`kernel.with(...)`), not a failure at first use.
   */
  readonly requires?: readonly Capability<unknown>[]
  /**
   * Rewrites the program before deployment. Runs once per job, where it is planned: in-process
   * here; on a cluster on the submitting peer alone, whose planned annotations the other peers
   * receive (they run with `planned: true` and skip this hook). Work needed on every peer belongs
   * in `control`.
   */
  plan?(program: Program, next: (program: Program) => Promise<Program>, context: PlanContext): Promise<Program>
  /** Wraps (or replaces) one operator instance. */
  instance?(spec: InstanceSpec, next: (spec: InstanceSpec) => Instance): Instance
  /**
   * Wraps one end of a materialized channel, called once for each end on this peer: the sending
   * end (the producer's) and the receiving end (the consumer's). An in-memory channel has both
   * ends here; a remote one has one end on each peer, so a layer that piggybacks fields on `send`
   * and reads them on `take` works the same in-process and across peers.
   */
  channel?(channel: ChannelEnd, next: (channel: ChannelEnd) => ChannelEnd): ChannelEnd
  /** Registers control message kinds and syscalls; called once per job on every peer of it (for its share), before it starts. */
  control?(registry: ControlRegistry): void
  /**
   * Set by a layer that can resume a job from durable state (fault tolerance): when a peer of a
   * cluster job fails, the submitter runs the job again (a new `Attempt`) on the surviving peers,
   * at most `attempts` times, instead of failing it.
   */
  readonly recovery?: { readonly attempts: number }
}
