// Operators as immutable values: the atom and stream body forms, and the value class behind both.

import type * as t from 'io-ts'
import type { Observable } from 'rxjs'
import type {
  Annotations,
  AtomBody,
  AtomContext,
  BatchHandler,
  Fusible,
  Handler,
  InputPort,
  InstanceInfo,
  Key,
  Operator,
  OperatorBody,
  OperatorDescription,
  OutputPort,
  PortCodecs,
  PortValues,
  StateMigration,
  StateSpec,
  StreamBody,
  SinkBatch,
} from './contracts.js'
import { InvalidOptionError } from './errors.js'

/** Definition of an atom-form operator: codec-typed ports, handlers per input port, optional keyed state. */
export interface AtomDefinition<I extends PortCodecs, O extends PortCodecs, S> {
  readonly name: string
  readonly inputs?: I
  readonly outputs?: O
  /**
   * Makes the operator keyed: state is kept per key, and links into it hash-partition by this key
   * unless they say otherwise.
   */
  readonly key?: (value: PortValues<I>[keyof I], port: keyof I & string) => Key
  /** Declared state: codec and initial value (per key when keyed). */
  readonly state?: StateSpec<S>
  /** The interrupt table: one handler per input port (or a batch handler in `onBatch`). */
  readonly on?: { readonly [P in keyof I]?: Handler<t.TypeOf<I[P]>, O, S> }
  /** Handlers of whole batches, for vectorized operators: one call per batch instead of per record. */
  readonly onBatch?: { readonly [P in keyof I]?: BatchHandler<t.TypeOf<I[P]>, O, S> }
  /** Called once before the first message. */
  readonly start?: (ctx: AtomContext<O, S>) => unknown
  /** Drives emission on the atom's own initiative (sources); the atom ends once it resolves and its inputs end. */
  readonly run?: (ctx: AtomContext<O, S>) => Promise<void>
  /** Called once after every input has ended: emit final results here. */
  readonly end?: (ctx: AtomContext<O, S>) => unknown
  /**
   * Called when the instance's watermark rises: the minimum of the watermarks its inputs delivered
   * (event time, ms; see kernel/time.ts). Emit what is complete up to `time` here (windows fire
   * here); the watermark moves on downstream after what this emits. No key is in scope: use
   * `ctx.state.of(key)`, `setOf`, `deleteOf` and `entries()`.
   */
  readonly watermark?: (time: number, ctx: AtomContext<O, S>) => unknown
  /**
   * For state kept outside `ctx.state` (the native core keeps its windows and aggregates in Rust):
   * called, synchronously, just before the instance's state is snapshotted (a checkpoint, a
   * savepoint before a rescale), to write that state into `ctx.state` so that the snapshot holds
   * it. No key is in scope: use `setOf`, `deleteOf` and `entries()`. Keyed state written here
   * moves by key group like any other.
   */
  readonly saveState?: (ctx: AtomContext<O, S>) => void
  /**
   * The other half of `saveState`: called, synchronously, after the instance's state was restored
   * from a snapshot (a recovery, a rescale: then only the keys of the groups this instance owns),
   * to read `ctx.state` back into wherever the operator keeps it.
   */
  readonly loadState?: (ctx: AtomContext<O, S>) => void
  /**
   * Sinks only: commit each checkpoint's output yourself, atomically with the record of the
   * checkpoint (see SinkCommit). Without the checkpoints layer the handlers see every record as usual.
   */
  readonly commit?: { write(id: number, batches: readonly SinkBatch[], ctx: AtomContext<O, S>): Promise<void>; committed(ctx: AtomContext<O, S>): Promise<number> }
  /** Lets the kernel chain this operator with the next (see Fusible). */
  readonly fusible?: Fusible
  /**
   * What a failure of the handlers, `run`, `start` or `end` does: `crash` ends the instance for a
   * supervisor to restart (see `Annotations.onError`); sets that annotation. @default 'dead-letter'
   */
  readonly onError?: 'dead-letter' | 'crash'
  readonly annotations?: Annotations
}

/**
 * Builds an atom-form operator.
 *
 * ```ts
 * const count = atom({
 *   name: 'count',
 *   inputs: { in: t.string },
 *   outputs: { out: t.type({ word: t.string, count: t.number }) },
 *   key: (word) => word,
 *   state: { codec: t.number, init: () => 0 },
 *   on: { in: (_word, ctx) => { ctx.state.update((n) => n + 1) } },
 *   end: (ctx) => { for (const [word, count] of ctx.state.entries()) ctx.emit('out', { word: String(word), count }) },
 * })
 * ```
 */
export function atom<I extends PortCodecs = Record<never, never>, O extends PortCodecs = Record<never, never>, S = undefined>(definition: AtomDefinition<I, O, S>): Operator<I, O> {
  const inputs = (definition.inputs ?? {}) as I
  const handlers: Record<string, unknown> = {}
  const batchHandlers: Record<string, unknown> = {}
  for (const port of Object.keys(inputs)) {
    const handler = definition.on?.[port as keyof I]
    const batchHandler = definition.onBatch?.[port as keyof I]
    if (handler === undefined && batchHandler === undefined)
      throw new InvalidOptionError(`operator ${definition.name}`, `on.${port}`, 'is missing: every input port needs a handler (in on or onBatch)')
    if (handler !== undefined && batchHandler !== undefined)
      throw new InvalidOptionError(`operator ${definition.name}`, `onBatch.${port}`, 'duplicates on.' + port + ': give a port one handler')
    if (handler !== undefined) handlers[port] = handler
    else batchHandlers[port] = batchHandler
  }
  // Handlers are typed against the operator's own ports; the kernel calls them with exactly those.
  const body = {
    form: 'atom',
    handlers,
    batchHandlers,
    start: definition.start,
    run: definition.run,
    end: definition.end,
    watermark: definition.watermark,
    saveState: definition.saveState,
    loadState: definition.loadState,
    commit: definition.commit,
    key: definition.key,
    state: definition.state,
    fusible: definition.fusible,
  } as unknown as AtomBody
  const annotations = definition.onError === undefined ? (definition.annotations ?? {}) : { ...definition.annotations, onError: definition.onError }
  return new OperatorValue(definition.name, inputs, (definition.outputs ?? {}) as O, body, annotations) as unknown as Operator<I, O>
}

/** Definition of a stream-form operator: an rxjs function from input Observables to output Observables. */
export interface StreamDefinition<I extends PortCodecs, O extends PortCodecs> {
  readonly name: string
  readonly inputs: I
  readonly outputs: O
  readonly body: (inputs: { readonly [K in keyof I]: Observable<t.TypeOf<I[K]>> }, info: InstanceInfo) => { readonly [K in keyof O]: Observable<t.TypeOf<O[K]>> }
  readonly annotations?: Annotations
}

/**
 * Builds a stateless stream-form operator from rxjs.
 *
 * ```ts
 * const words = stream({
 *   name: 'words', inputs: { in: t.string }, outputs: { out: t.string },
 *   body: ({ in: lines }) => ({ out: lines.pipe(mergeMap((line) => line.split(' '))) }),
 * })
 * ```
 */
export function stream<I extends PortCodecs, O extends PortCodecs>(definition: StreamDefinition<I, O>): Operator<I, O> {
  const body = { form: 'stream', fn: definition.body } as unknown as StreamBody
  return new OperatorValue(definition.name, definition.inputs, definition.outputs, body, definition.annotations ?? {}) as unknown as Operator<I, O>
}

/** The one implementation of operator values (both forms). */
class OperatorValue implements Operator {
  readonly inputs: { readonly [port: string]: InputPort }
  readonly outputs: { readonly [port: string]: OutputPort }
  readonly annotations: Readonly<Annotations>

  constructor(
    readonly name: string,
    private readonly inputCodecs: PortCodecs,
    private readonly outputCodecs: PortCodecs,
    readonly body: OperatorBody,
    annotations: Annotations,
  ) {
    if (typeof name !== 'string' || name.length === 0 || /[\s.>]/.test(name)) {
      throw new InvalidOptionError(`operator ${JSON.stringify(name)}`, 'name', 'must be a non-empty string without spaces, dots or ">"')
    }
    const parallelism = annotations.parallelism
    if (parallelism !== undefined && (!Number.isInteger(parallelism) || parallelism < 1)) {
      throw new InvalidOptionError(`operator ${name}`, 'parallelism', `must be a positive integer, got ${parallelism}`)
    }
    const onError = annotations.onError
    if (onError !== undefined && onError !== 'dead-letter' && onError !== 'crash') {
      throw new InvalidOptionError(`operator ${name}`, 'onError', `must be 'dead-letter' or 'crash', got ${JSON.stringify(onError)}`)
    }
    if (onError === 'crash' && body.form !== 'atom')
      throw new InvalidOptionError(`operator ${name}`, 'onError', "'crash' applies to atom-form operators only (a stream-form operator restarts its pipeline after a failure)")
    this.annotations = Object.freeze({ ...annotations })
    this.inputs = Object.freeze(
      Object.fromEntries(Object.entries(inputCodecs).map(([port, codec]) => [port, Object.freeze({ direction: 'in' as const, operator: name, port, codec })])),
    )
    this.outputs = Object.freeze(
      Object.fromEntries(Object.entries(outputCodecs).map(([port, codec]) => [port, Object.freeze({ direction: 'out' as const, operator: name, port, codec })])),
    )
    Object.freeze(this)
  }

  annotate(annotations: Annotations): Operator {
    return new OperatorValue(this.name, this.inputCodecs, this.outputCodecs, this.body, { ...this.annotations, ...annotations })
  }

  rename(name: string): Operator {
    return new OperatorValue(name, this.inputCodecs, this.outputCodecs, this.body, this.annotations)
  }

  describe(): OperatorDescription {
    const inputs = Object.keys(this.inputCodecs)
    const outputs = Object.keys(this.outputCodecs)
    const body = this.body
    return {
      name: this.name,
      form: body.form,
      role: inputs.length === 0 ? 'source' : outputs.length === 0 ? 'sink' : 'transform',
      inputs: Object.fromEntries(inputs.map((p) => [p, this.inputCodecs[p]!.name])),
      outputs: Object.fromEntries(outputs.map((p) => [p, this.outputCodecs[p]!.name])),
      keyed: body.form === 'atom' && body.key !== undefined,
      ...(body.form === 'atom' && body.state !== undefined ? { state: body.state.codec.name } : {}),
      ...(body.form === 'atom' && body.commit !== undefined ? { commits: true as const } : {}),
      annotations: this.annotations,
    }
  }

  toString(): string {
    return `operator ${this.name}`
  }
}

/** The parallelism an operator asks for. */
export function parallelismOf(operator: Operator): number {
  return operator.annotations.parallelism ?? 1
}

/** True when the operator keeps keyed state. */
export function isKeyed(operator: Operator): boolean {
  return operator.body.form === 'atom' && operator.body.key !== undefined
}

/**
 * A state migration for an upgrade (StateSpec.migrate): state encoded under `from` (the previous
 * version's state codec) becomes state of the current version through `to`.
 *
 * ```ts
 * const V1 = t.type({ count: t.number })
 * const V2 = t.type({ count: t.number, total: t.number })
 * state: { codec: V2, init: () => ({ count: 0, total: 0 }), migrate: migration(V1, (old) => ({ ...old, total: 0 })) }
 * ```
 */
export function migration<O, S>(from: t.Type<O, unknown, unknown>, to: (old: O) => S): StateMigration<S> {
  return { from: from as t.Type<unknown, unknown, unknown>, to: (old) => to(old as O) }
}
