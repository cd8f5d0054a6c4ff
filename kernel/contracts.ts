// The kernel's public contracts: the types of ports, operators, links, programs, layers and syscalls.
// This file imports no implementation; everything else depends on it with `import type`.

import type * as t from 'io-ts'
import type { Observable } from 'rxjs'
import type { LaminaError, Where } from './errors.js'

// ---------------------------------------------------------------------------------------------
// Codecs and ports

/**
 * Any io-ts codec. io-ts's own `Mixed` is the widest codec type its API accepts; a port's value
 * type is recovered from it with `t.TypeOf<C>`.
 */
export type AnyCodec = t.Mixed

/** A record of port names to codecs: the shape of an operator's inputs or outputs. */
export type PortCodecs = { readonly [port: string]: AnyCodec }

/** The value types of a record of port codecs. */
export type PortValues<P extends PortCodecs> = { [K in keyof P]: t.TypeOf<P[K]> }

/** A key that partitions records and scopes keyed state. */
export type Key = string | number

/** An input port of one operator; `T` is the type of the values it accepts. */
export interface InputPort<T = unknown> {
  readonly direction: 'in'
  readonly operator: string
  readonly port: string
  readonly codec: AnyCodec
  /** Type-level only: makes `link()` check that an output fits this input. */
  readonly _accepts?: (value: T) => void
}

/** An output port of one operator; `T` is the type of the values it emits. */
export interface OutputPort<T = unknown> {
  readonly direction: 'out'
  readonly operator: string
  readonly port: string
  readonly codec: AnyCodec
  /** Type-level only: makes `link()` check that this output fits an input. */
  readonly _emits?: T
}

// ---------------------------------------------------------------------------------------------
// Annotations

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

// ---------------------------------------------------------------------------------------------
// Envelopes and batches

/**
 * Per-record fields that travel with a value (metadata layers add trace ids; requests carry a
 * reply path). Kept apart from the value so that plain dataflow carries no per-record object.
 */
export interface Header {
  /** Set on a request: the continuation that delivers the reply to the requester's future table. */
  readonly reply?: ReplyTo
  /** Fields piggybacked by layers, by layer name. */
  readonly fields?: { readonly [layer: string]: unknown }
}

/** Delivers the reply of a request (or its failure) back to the requester. */
export type ReplyTo = (outcome: { ok: true; value: unknown } | { ok: false; error: unknown }) => void

/**
 * A batch of records crossing a channel. `headers`, when present, is parallel to `values`.
 * A batch is immutable once sent: receivers never mutate it (broadcast shares one batch).
 */
export interface Batch {
  readonly values: readonly unknown[]
  readonly headers?: readonly (Header | undefined)[]
  /** Set on a marker batch (no values): a marker that flows in order with the data. */
  readonly marker?: Marker
}

/**
 * A marker flows with the data, in order, through every channel (a checkpoint barrier, as in
 * Flink's asynchronous barrier snapshots). Sources emit it when a layer injects it
 * (`JobView.inject`); an instance with several inputs aligns it: once a marker arrives on one
 * input, that input is held until the same marker has arrived on every other open input. Then
 * the kernel flushes the instance's emissions, calls `Instance.marker`, and forwards the marker on
 * every output channel. Markers take no channel credit.
 */
export interface Marker {
  /** Who the marker is for, e.g. `checkpoint`. */
  readonly kind: string
  /** Increasing per kind; a newer marker arriving during alignment supersedes an older one. */
  readonly id: number
  /** JSON data travelling with the marker. */
  readonly data?: unknown
}

// ---------------------------------------------------------------------------------------------
// Operators

/** Keyed or single-slot state of an atom, typed by its codec. */
export interface StateSpec<S> {
  /** Codec of one state value: used to snapshot and restore state (layers move it between peers). */
  readonly codec: t.Type<S, unknown, unknown>
  /** The initial value for a key (or for the single slot) seen for the first time. */
  readonly init: () => S
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
  readonly job: string
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

// ---------------------------------------------------------------------------------------------
// Links

/** How records on a link are spread over the instances of the receiving operator. */
export type Partitioning =
  | { readonly kind: 'forward' }
  | { readonly kind: 'hash'; readonly key?: (value: unknown) => Key }
  | { readonly kind: 'broadcast' }
  | { readonly kind: 'round-robin' }

/** A link: an immutable value joining an output port to an input port. */
export interface Link {
  readonly from: { readonly operator: string; readonly port: string }
  readonly to: { readonly operator: string; readonly port: string }
  readonly partitioning: Partitioning | undefined
  /** Records the channel holds before its producer waits. @default 4096 */
  readonly capacity: number | undefined
  /** `from.port -> to.port` as text. */
  readonly id: string
}

// ---------------------------------------------------------------------------------------------
// Programs

/** What `describe()` tells about a program. */
export interface ProgramDescription {
  readonly name: string
  readonly operators: readonly OperatorDescription[]
  readonly links: readonly { readonly from: string; readonly to: string; readonly partitioning: string; readonly capacity?: number }[]
}

/** A validated program: operators + links. Immutable; every change returns a new program. */
export interface Program {
  readonly name: string
  readonly operators: readonly Operator[]
  readonly links: readonly Link[]
  operator(name: string): Operator | undefined
  /** A copy with operators and/or links replaced, validated once (for edits that touch both). */
  with(parts: { readonly operators?: readonly Operator[]; readonly links?: readonly Link[] }): Program
  /** A copy with an operator added, replaced (same name) or removed. */
  withOperator(operator: Operator): Program
  withoutOperator(name: string): Program
  withLinks(links: readonly Link[]): Program
  /** A copy in which `fn` may replace each operator (names must stay the same). */
  mapOperators(fn: (operator: Operator) => Operator): Program
  describe(): ProgramDescription
  toJSON(): ProgramDescription
  /** The program as a Graphviz dot graph. */
  toDot(): string
  /** The program as indented text, one operator and its links per line. */
  toString(): string
}

// ---------------------------------------------------------------------------------------------
// Dead letters

/** A record the kernel could not deliver or process, with the reason. Nothing is dropped without one. */
export interface DeadLetter {
  readonly job: string
  readonly where: Where
  /** The error's stable code: ERR_DECODE, ERR_HANDLER, ERR_REQUEST_TIMEOUT … */
  readonly code: string
  readonly message: string
  readonly value: unknown
  readonly error: LaminaError
  readonly time: number
}

// ---------------------------------------------------------------------------------------------
// The layer API

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
}

/** What a channel joins: one producer instance's port to one consumer instance's port. */
export interface ChannelInfo {
  readonly job: string
  readonly link: Link
  readonly from: { readonly operator: string; readonly port: string; readonly instance: number }
  readonly to: { readonly operator: string; readonly port: string; readonly instance: number }
}

/**
 * The producer's end of a channel: where an instance's output goes. The producer calls `send`
 * while `ready()`; otherwise it awaits `whenReady()` (credit-based backpressure, across peers too).
 */
export interface ChannelSender {
  readonly info: ChannelInfo
  /** Enqueues a batch (the producer checked `ready()` first; one batch may overshoot). */
  send(batch: Batch): void
  /** True while the channel has credit for more records. */
  ready(): boolean
  /** Resolves when the channel has credit again. */
  whenReady(signal?: AbortSignal): Promise<void>
  /** The producer has no more records. */
  end(): void
  /** Records queued now (on a remote sending half: accepted and not yet sent). */
  readonly queued: number
}

/** The consumer's end of a channel: where an instance's input comes from. */
export interface ChannelReceiver {
  readonly info: ChannelInfo
  /** Takes the next batch, `'end'` once ended and drained, or undefined when empty. Returns credit. */
  take(): Batch | 'end' | undefined
  /** Calls `fn` when the channel becomes non-empty or ends. One listener: the consuming atom. */
  onReadable(fn: () => void): void
  /** Records queued now. */
  readonly queued: number
}

/**
 * A materialized link between two instances on one peer: a bounded queue of batches with
 * credit-based backpressure, both ends in one object. A link whose ends are on two peers has a
 * ChannelSender on one and a ChannelReceiver on the other (see Deployment.connect).
 */
export interface Channel extends ChannelSender, ChannelReceiver {}

/**
 * One end of a channel as a layer's channel hook sees it: the sending or the receiving end (see
 * `isChannelSender`, `isChannelReceiver`).
 */
export type ChannelEnd = ChannelSender | ChannelReceiver

/** A message handler registered by a layer's control hook. */
export type ControlHandler = (payload: unknown) => unknown

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
   * flight is waited for first. Rejects when the job is not coordinated here.
   */
  take(job: string, options?: { readonly signal?: AbortSignal }): Promise<number>
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
  /** Rewrites the program before deployment. */
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
  /** Registers control message kinds and syscalls; called once per job before it starts. */
  control?(registry: ControlRegistry): void
  /**
   * Set by a layer that can resume a job from durable state (fault tolerance): when a peer of a
   * cluster job fails, the submitter runs the job again (a new `Attempt`) on the surviving peers,
   * at most `attempts` times, instead of failing it.
   */
  readonly recovery?: { readonly attempts: number }
}

// ---------------------------------------------------------------------------------------------
// Jobs

/** Counters of one operator instance. */
export interface InstanceStats {
  readonly operator: string
  readonly instance: number
  readonly recordsIn: number
  readonly recordsOut: number
  readonly deadLetters: number
  /** Records emitted on output ports that have no link (counted, never silently dropped). */
  readonly unlinked: number
}

/** Counters of one channel. */
export interface ChannelStats {
  readonly link: string
  readonly from: number
  readonly to: number
  readonly records: number
  readonly queued: number
  /** The most records ever queued: bounded by the capacity plus one batch. */
  readonly maxQueued: number
  /** For a channel crossing to another peer: that peer. */
  readonly peer?: string
}

/** Counters of a job. */
export interface JobStats {
  readonly instances: readonly InstanceStats[]
  readonly channels: readonly ChannelStats[]
  readonly deadLetters: number
}

/** Events a job reports while it runs. */
export type JobEvent =
  | { readonly type: 'started'; readonly job: string }
  | { readonly type: 'instance-finished'; readonly operator: string; readonly instance: number }
  | { readonly type: 'dead-letter'; readonly deadLetter: DeadLetter }
  | { readonly type: 'finished'; readonly job: string }
  | { readonly type: 'failed'; readonly job: string; readonly error: LaminaError }
  /** Something a layer did (restart, escalation, checkpoint, recovery), reported with `ControlRegistry.notify`. */
  | { readonly type: 'layer'; readonly layer: string; readonly kind: string; readonly message: string; readonly data?: unknown; readonly peer?: string }

/** A read-only view of a running job, as layers see it. */
export interface JobView {
  readonly id: string
  readonly program: Program
  readonly events: Observable<JobEvent>
  stats(): JobStats
  readonly deadLetters: readonly DeadLetter[]
  /** Which attempt of a job this is: restarts after a failure run the same job again. */
  readonly attempt: Attempt
  /** Aborted when the job is aborted or fails: a layer must then stop acting for it (e.g. committing). */
  readonly abortSignal: AbortSignal
  /**
   * Injects a marker at every source instance on this peer (instances of operators without
   * inputs that are still running); it then flows with the data. Returns how many took it.
   */
  inject(marker: Marker): number
}

/** One attempt of a job. A recovered job runs again as attempt 1, 2…, under a new job id. */
export interface Attempt {
  /** The id of the job's first attempt: the same for every attempt (durable state is kept under it). */
  readonly lineage: string
  /** 0 for the first run. */
  readonly number: number
  /** What the layers need to resume (for example the checkpoint to restore), JSON. */
  readonly resume?: unknown
}

/** What a finished job reports. */
export interface JobReport {
  readonly job: string
  readonly stats: JobStats
  readonly deadLetters: readonly DeadLetter[]
  readonly elapsedMs: number
}

/** A running job. */
export interface Job extends JobView {
  /** Resolves with the report when every operator has finished; rejects with a typed error on failure. */
  readonly done: Promise<JobReport>
  /** Graceful stop: sources stop producing, in-flight records drain, `done` resolves. */
  stop(): Promise<JobReport>
  /** Immediate stop: `done` rejects with JobAbortedError. */
  abort(reason?: unknown): void
  /** Sends a control message to the handler a layer registered for `kind`. */
  control(kind: string, payload?: unknown): Promise<unknown>
}

/** One end of a channel whose other end runs on another peer (see Deployment.connect). */
export interface RemoteEnd {
  /** `sender`: this peer produces into the channel; `receiver`: this peer consumes from it. */
  readonly side: 'sender' | 'receiver'
  readonly info: ChannelInfo
  /** The peer running the other end. */
  readonly peer: string
  /** Records the receiving side holds before the sender waits (granted as credit). */
  readonly capacity: number
  /** The receiving port's codec: a receiver decodes every value with it (process boundaries are always checked). */
  readonly codec: AnyCodec
  /** Records a value that could not be decoded or delivered (receivers name the sending peer in `where`). */
  readonly deadLetter: (where: Where, error: LaminaError, value: unknown) => void
}

/**
 * Where a job's instances run and how channels reach other peers; given to `kernel.run` by the
 * cluster runtime. Each peer runs the same program with the same deployment and materializes only
 * its own instances; a link whose ends are on two peers becomes a remote channel.
 */
export interface Deployment {
  /** The peer this kernel runs on. */
  readonly self: string
  /** The peer that submitted (and planned) the job: plan hooks see it as `PlanContext.self`. @default self */
  readonly submitter?: string
  /** The peer that runs an operator instance. */
  peerOf(operator: string, instance: number): string
  /**
   * One end of a channel crossing to another peer: the sending half on the producer's peer, the
   * receiving half on the consumer's (e.g. the kernel's `remoteSender`/`remoteReceiver` over a
   * transport's frame channel).
   */
  connect(end: RemoteEnd & { readonly side: 'sender' }): ChannelSender
  connect(end: RemoteEnd & { readonly side: 'receiver' }): ChannelReceiver
  /** Calls a control handler of this job's share on another peer (see JobCluster.call). */
  call?(peer: string, kind: string, payload: unknown, options?: { readonly signal?: AbortSignal; readonly timeoutMs?: number }): Promise<unknown>
  /** Every peer that runs part of the job. */
  peers?(): readonly string[]
  /** This peer's work directory. */
  readonly workDir?: string
  /** On the submitting peer: runs the job again with a new shape (see JobCluster.rescale). */
  rescale?(change: RescaleRequest): Promise<RescaleReport>
}

/** What a dead letter does to its job. */
export type DeadLetterPolicy = 'record' | 'fail'

/** Options of `kernel.run`. All optional. */
export interface RunOptions {
  /** Job id. @default the program name plus a counter */
  readonly id?: string
  /** `record`: dead letters are kept and the job goes on; `fail`: the first one fails the job. @default 'record' */
  readonly deadLetters?: DeadLetterPolicy
  /** Dead letters past this many fail the job (DeadLetterLimitError). @default 100000 */
  readonly deadLetterLimit?: number
  /** Records per batch sent by sources and flushed by operators. @default 1024 */
  readonly batchSize?: number
  /** Default channel capacity in records, for links that set none. @default 4096 */
  readonly capacity?: number
  /**
   * Where values are checked against input port codecs in-process:
   * - `edges`: where values enter the program (links from sources) and on links whose two ends
   *   have different codecs (e.g. an `unknown` output into a typed input). Between ports typed by
   *   the same codec, TypeScript has already checked the emitting code;
   * - `always`: at every input port;
   * - `none`: nowhere (values from other processes are still decoded).
   * @default 'edges'
   */
  readonly validate?: 'edges' | 'always' | 'none'
  readonly signal?: AbortSignal
  /** Called with each dead letter as it is recorded. */
  readonly onDeadLetter?: (deadLetter: DeadLetter) => void
  /** Runs only this peer's share of the program (see Deployment). @default everything runs here */
  readonly deployment?: Deployment
  /** Chain fusible operators joined by forward links on one peer (see Fusible). @default true */
  readonly fuse?: boolean
  /** What plan hooks see as the peers to place on. @default this process alone */
  readonly peers?: readonly PeerDescription[]
  /** Skip the layers' plan hooks: the program was planned already (by the submitting peer). @default false */
  readonly planned?: boolean
  /** Which attempt this run is (set by whoever restarts a failed job). @default the first attempt */
  readonly attempt?: Attempt
}
