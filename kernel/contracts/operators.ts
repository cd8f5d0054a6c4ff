// Contracts of operators: annotations, bodies (atom, stream), the context a handler runs in, state and timers.
// This file imports no implementation.

import type * as t from 'io-ts'
import type { Observable } from 'rxjs'
import type { InputPort, Key, OutputPort, PortCodecs } from './ports.js'
import type { Assignment } from './layers.js'

/**
 * Annotations on an operator, read by layers (placement, isolation, fault tolerance …). Layers add
 * their own fields by declaration merging:
 *
 * ```ts
 * declare module 'lamina' { interface Annotations { region?: string } }
 * ```
 */
export interface Annotations {
  /** Number of instances of the operator. @default 1 */
  parallelism?: number
  /** Where each instance runs, written by a placement layer's plan hook (see Assignment). */
  assignment?: Assignment
  /** Free-form labels, shown by `describe()`. */
  labels?: readonly string[]
  /** How a source replays its input after a restore from a checkpoint (set by `source`; see SourceReplay). */
  replay?: 'skip' | 'seek' | 'none'
  /**
   * What a failure of the operator's own code does (a handler, `run`, `start` or `end` throwing):
   * - `dead-letter`: the record is a dead letter with the error, and the instance goes on;
   * - `crash`: the record is a dead letter too, then the instance fails with InstanceCrashedError:
   *   a supervision layer restarts it, and without one the job fails.
   * Values that do not fit a port's codec, `ctx.reject` and timer callbacks stay dead letters
   * either way. Atom-form operators only. @default 'dead-letter'
   */
  onError?: 'dead-letter' | 'crash'
}

/** Keyed or single-slot state of an atom, typed by its codec. */
export interface StateSpec<S> {
  /** Codec of one state value: used to snapshot and restore state (layers move it between peers). */
  readonly codec: t.Type<S, unknown, unknown>
  /** The initial value for a key (or for the single slot) seen for the first time. */
  readonly init: () => S
  /**
   * How state of the program's previous version becomes this state, when an upgrade changed the
   * codec (`migration(from, to)`): a snapshot taken under the codec named like `from` is decoded
   * with it and converted value by value. Without it, an upgrade that changes the codec is refused.
   */
  readonly migrate?: StateMigration<S>
}

/** How state under an earlier codec becomes state under the current one (see StateSpec.migrate). */
export interface StateMigration<S> {
  /** The earlier state codec: its `name` identifies snapshots taken under it. */
  readonly from: t.Type<unknown, unknown, unknown>
  /** The current state from an earlier value (already decoded by `from`). */
  readonly to: (old: unknown) => S
}

/** Options for `ctx.request`. */
export interface RequestOptions {
  /** Milliseconds to wait for the reply. @default 30000 */
  readonly timeout?: number
  readonly signal?: AbortSignal
}

/** A handle on a timer set with `ctx.timer` or `ctx.every`. */
export interface TimerHandle {
  cancel(): void
}

/** The state an atom handler sees: per key for keyed operators, one slot otherwise. */
export interface StateAccess<S> {
  /** The current key's state (the single slot for unkeyed operators), initialised on first use. */
  get(): S
  /** Replaces the current key's state. */
  set(value: S): void
  /** Applies `fn` to the current key's state and stores the result. */
  update(fn: (value: S) => S): S
  /** Forgets the current key's state. */
  delete(): void
  /** State of an explicit key (for timers and end-of-stream handlers of keyed operators). */
  of(key: Key): S
  /** Replaces an explicit key's state. */
  setOf(key: Key, value: S): void
  /** Forgets an explicit key's state. */
  deleteOf(key: Key): void
  /** Every key with state, and its value. */
  entries(): IterableIterator<[Key, S]>
  /** Number of keys holding state. */
  readonly size: number
}

/** A child atom started with `ctx.spawn`. */
export interface Spawned<I extends PortCodecs> {
  /** Sends a value to one of the child's input ports, waiting for credit. */
  send<P extends keyof I & string>(port: P, value: t.TypeOf<I[P]>): Promise<void>
  /** Ends the child's inputs: it finishes what it has and completes `done`. */
  end(): void
  /** Resolves when the child has finished. */
  readonly done: Promise<void>
}

/** Options for `ctx.spawn`: where the child's outputs go among the spawner's own input ports. */
export interface SpawnOptions {
  /** Child output port -> spawner input port that receives what the child emits there. */
  readonly outputs?: { readonly [childPort: string]: string }
}

/** Identity of one operator instance. */
export interface InstanceInfo {
  /** The job (attempt) id. */
  readonly job: string
  /** The id of the job's first attempt: the same in every attempt (durable state outside the job is kept under it). */
  readonly lineage: string
  readonly operator: string
  readonly instance: number
  readonly parallelism: number
  /** Records per batch the job prefers: sources flush this many at a time. */
  readonly batchSize: number
  /** The peer running the instance, when the job runs on a cluster (its Deployment's `self`). */
  readonly peer?: string
}

/**
 * The syscalls: the kernel's interface to a running atom. Every handler gets one.
 *
 * - send: `emit` (buffered, flushed with credit after the handler) and `flush`;
 * - request/response: `request` (a future, resolved by the reply);
 * - timers: `timer`, `every`, `sleep`;
 * - state: `state`, `key`;
 * - spawn: `spawn` (a child atom whose outputs arrive as interrupts on the spawner's ports);
 * - layer syscalls: `call`;
 * - dead letters: `reject` records a value as refused, with a reason.
 */
export interface AtomContext<O extends PortCodecs = PortCodecs, S = unknown> {
  readonly info: InstanceInfo
  /** The key of the record being handled (keyed operators), else undefined. */
  readonly key: Key | undefined
  readonly state: StateAccess<S>
  /** Aborted when the job stops or aborts. */
  readonly signal: AbortSignal
  /** Emits a value on an output port. Buffered: the kernel sends it when the handler returns. */
  emit<P extends keyof O & string>(port: P, value: t.TypeOf<O[P]>): void
  /** Emits every value of `values` on a port, in order (one call for a whole array). */
  emitAll<P extends keyof O & string>(port: P, values: readonly t.TypeOf<O[P]>[]): void
  /** Sends buffered emissions now, waiting while a downstream channel has no credit. */
  flush(): Promise<void>
  /** Sends a request on an output port and waits for the reply of the operator that receives it. */
  request<R = unknown, P extends keyof O & string = keyof O & string>(port: P, value: t.TypeOf<O[P]>, options?: RequestOptions): Promise<R>
  /** Calls `fn` once after `ms`, as an interrupt of this atom (never concurrently with a handler). */
  timer(ms: number, fn: () => void | Promise<void>): TimerHandle
  /** Calls `fn` every `ms` until cancelled or the atom finishes. */
  every(ms: number, fn: () => void | Promise<void>): TimerHandle
  /** Resolves after `ms` (rejects when the job stops). */
  sleep(ms: number): Promise<void>
  /** Starts a child atom; see {@link SpawnOptions}. */
  spawn<I extends PortCodecs>(operator: Operator<I, PortCodecs>, options?: SpawnOptions): Spawned<I>
  /** Calls a syscall registered by a layer's control hook. */
  call(name: string, argument?: unknown): Promise<unknown>
  /** Records `value` as a dead letter with `reason` (the operator refuses it; nothing is lost). */
  reject(value: unknown, reason: string): void
  /**
   * Sources (atoms without inputs) only: promises that no record emitted from now on has an event
   * time below `time` (ms). The watermark travels downstream after what was emitted before it; one
   * that does not rise is ignored. Sources with `eventTime` call it themselves.
   */
  emitWatermark(time: number): void
  /**
   * Sources only: declares that this source emits nothing for now (WATERMARK_IDLE), so operators
   * downstream stop waiting for its watermark until it emits a record or a watermark again. Sources
   * with `eventTime.idleMs` call it themselves after that long without a record.
   */
  markIdle(): void
}

/** A handler of one input port. A returned value is the reply when the record was a request. */
export type Handler<T, O extends PortCodecs, S> = (value: T, ctx: AtomContext<O, S>) => unknown

/**
 * Lets the kernel chain an operator with the next one into a single operator when a forward link
 * joins them on one peer (operator chaining, as in Flink): one call per batch instead of two
 * atoms and a channel. The native core's operators are fusible with each other.
 */
export interface Fusible {
  /** Operators fuse only with operators of the same kind. */
  readonly kind: string
  /** An operator doing the work of `self` then `next` (named `${self.name}+${next.name}`), or undefined when this pair cannot fuse. */
  fuse(self: Operator, next: Operator): Operator | undefined
}

/**
 * A handler of a whole batch of one input port (values already checked against the port's codec).
 * Records of a batch handler's port cannot be requests: a request there is answered with undefined.
 */
export type BatchHandler<T, O extends PortCodecs, S> = (values: readonly T[], ctx: AtomContext<O, S>) => unknown

/** The records a sink received on one port, as a checkpoint's output holds them. */
export interface SinkBatch {
  readonly port: string
  readonly values: readonly unknown[]
}

/**
 * A sink that commits each checkpoint's output itself, atomically with the record of which
 * checkpoint it committed (a transaction of an external store, say). The checkpoints layer then
 * calls `write` once per completed checkpoint, in order, with everything the sink received up to it,
 * instead of handing the records to its handlers, and asks `committed` after a restore which
 * checkpoint the sink already holds, so a checkpoint's output is written exactly once even when a
 * job dies between writing and recording.
 */
export interface SinkCommit {
  /** Writes checkpoint `id`'s output and records `id` as committed, both or neither. */
  write(id: number, batches: readonly SinkBatch[], ctx: AtomContext<PortCodecs, unknown>): Promise<void>
  /** The newest checkpoint id `write` committed (-1 when none). */
  committed(ctx: AtomContext<PortCodecs, unknown>): Promise<number>
}

/** The atom body form: handlers per input port (the interrupt table), with optional lifecycle hooks. */
export interface AtomBody {
  readonly form: 'atom'
  readonly handlers: { readonly [port: string]: Handler<never, PortCodecs, unknown> }
  /** Ports handled a whole batch at a time (vectorized operators such as the native core's). */
  readonly batchHandlers?: { readonly [port: string]: BatchHandler<never, PortCodecs, unknown> }
  readonly start?: (ctx: AtomContext<PortCodecs, unknown>) => unknown
  /** Drives emission for operators that produce on their own (sources): the atom ends when it resolves and its inputs end. */
  readonly run?: (ctx: AtomContext<PortCodecs, unknown>) => Promise<void>
  readonly end?: (ctx: AtomContext<PortCodecs, unknown>) => unknown
  /** Called when the instance's watermark rises (event time; see kernel/time.ts), before it moves on downstream. */
  readonly watermark?: (time: number, ctx: AtomContext<PortCodecs, unknown>) => unknown
  /** Called before the instance's state is snapshotted: writes state kept outside `ctx.state` into it. */
  readonly saveState?: (ctx: AtomContext<PortCodecs, unknown>) => void
  /** Called after the instance's state was restored from a snapshot: reads `ctx.state` back. */
  readonly loadState?: (ctx: AtomContext<PortCodecs, unknown>) => void
  /** A sink's own commit of a checkpoint's output (see SinkCommit). */
  readonly commit?: SinkCommit
  readonly key?: (value: unknown, port: string) => Key
  readonly state?: StateSpec<unknown>
  readonly fusible?: Fusible
}

/** The stateless stream body form: an rxjs function from input Observables to output Observables. */
export interface StreamBody {
  readonly form: 'stream'
  readonly fn: (inputs: { readonly [port: string]: Observable<unknown> }, info: InstanceInfo) => { readonly [port: string]: Observable<unknown> }
}

/** Either body form. */
export type OperatorBody = AtomBody | StreamBody

/** What `describe()` tells about an operator. */
export interface OperatorDescription {
  readonly name: string
  readonly form: 'atom' | 'stream'
  readonly role: 'source' | 'sink' | 'transform'
  readonly inputs: { readonly [port: string]: string }
  readonly outputs: { readonly [port: string]: string }
  readonly keyed: boolean
  readonly state?: string
  /** A sink that commits each checkpoint's output itself, with the record of it (SinkCommit): its output survives the loss of its peer. */
  readonly commits?: true
  readonly annotations: Annotations
}

/**
 * An operator: an immutable value with a name, typed ports, a body and annotations.
 * `I` and `O` are the codecs of its input and output ports.
 */
export interface Operator<I extends PortCodecs = PortCodecs, O extends PortCodecs = PortCodecs> {
  readonly name: string
  readonly inputs: { readonly [K in keyof I & string]: InputPort<t.TypeOf<I[K]>> }
  readonly outputs: { readonly [K in keyof O & string]: OutputPort<t.TypeOf<O[K]>> }
  readonly body: OperatorBody
  readonly annotations: Readonly<Annotations>
  /** A copy with these annotations merged over the current ones. */
  annotate(annotations: Annotations): Operator<I, O>
  /** A copy under another name (ports follow the new name). */
  rename(name: string): Operator<I, O>
  describe(): OperatorDescription
}
