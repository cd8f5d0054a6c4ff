// Layer stacks: ordering layers by their constraints, and composing their hooks around the kernel's own.

import type {
  Capability,
  Channel,
  ChannelEnd,
  ChannelInfo,
  ChannelReceiver,
  ChannelSender,
  Instance,
  InstanceSpec,
  Layer,
  LayerEventKind,
  PlanContext,
  Program,
  Provided,
  Savepoints,
  SinkBatch,
} from './contracts.js'
import { InvalidOptionError, LayerStackError } from './errors.js'
import { isChannelReceiver, isChannelSender } from './runtime/channel.js'

/**
 * A capability token: a name, typed by the API its provider exposes. The layer that owns a
 * capability exports its token; providers list it in `provides`, dependants in `requires`.
 *
 * ```ts
 * interface Clock { now(): number }
 * export const CLOCK = capability<Clock>('clock')
 * const clocks: Layer = { name: 'clocks', provides: [provide(CLOCK, { now: () => Date.now() })] }
 * kernel.with(clocks).capability(CLOCK)?.now()
 * ```
 */
export function capability<T>(name: string): Capability<T> {
  if (typeof name !== 'string' || name === '') throw new InvalidOptionError('capability()', 'name', 'must be a non-empty string')
  return Object.freeze({ name })
}

/** A capability with the API a layer provides for it: an entry of `Layer.provides`, typed by the token. */
export function provide<T>(token: Capability<T>, api: T): Provided<T> {
  return Object.freeze({ capability: token, api })
}

/**
 * A typed kind of `layer` event, for the layer that reports it to export. `layer` restricts it to
 * events of the layer so named (leave it out for a kind several layers report).
 *
 * ```ts
 * export const CHECKPOINT_COMPLETED = layerEvent<{ id: number }>('checkpoint', { layer: 'checkpoints' })
 * job.events.subscribe((e) => { if (CHECKPOINT_COMPLETED.is(e)) console.log(e.data.id) })
 * ```
 */
export function layerEvent<D>(kind: string, options: { readonly layer?: string } = {}): LayerEventKind<D> {
  const layer = options.layer
  return Object.freeze({
    layer,
    kind,
    is<E extends { readonly type: string }>(event: E): event is Extract<E, { readonly type: 'layer' }> & { readonly kind: string; readonly data: D } {
      const e = event as { readonly type: string; readonly kind?: unknown; readonly layer?: unknown }
      return e.type === 'layer' && e.kind === kind && (layer === undefined || e.layer === layer)
    },
  })
}

/**
 * Savepoints: consistent snapshots of a running job taken on demand (see Savepoints). The
 * checkpoints layer provides it; rescaling needs it, so `elasticity()` requires it.
 */
export const SAVEPOINTS: Capability<Savepoints> = capability<Savepoints>('savepoints')

/**
 * The control message (`job.control(JOB_SUCCEEDED)`) a cluster sends the submitter's share of a job
 * once the job has succeeded and before it releases any share: it runs every layer's
 * `ControlRegistry.onSucceeded` handler and resolves with their notices, each with its layer's name
 * (`{ layer, kind, message, data }[]`; empty when no layer registered one). A job run in one
 * process gets its `finished` event instead.
 */
export const JOB_SUCCEEDED = 'lamina.job.succeeded'

/**
 * The capabilities a stack provides, by name. Throws LayerStackError when two layers provide the
 * same one or a layer requires one that no layer provides, naming the layers.
 */
export function stackCapabilities(layers: readonly Layer[]): ReadonlyMap<string, { readonly layer: string; readonly api: unknown }> {
  const provided = new Map<string, { readonly layer: string; readonly api: unknown }>()
  for (const layer of layers) {
    for (const entry of layer.provides ?? []) {
      const name = entry?.capability?.name
      if (typeof name !== 'string')
        throw new LayerStackError(`layer "${layer.name}" provides something that is not a capability (use provide(token, api))`, { layers: [layer.name] })
      const other = provided.get(name)
      if (other !== undefined)
        throw new LayerStackError(`layers "${other.layer}" and "${layer.name}" both provide "${name}": a stack has one provider of each capability`, {
          layers: [other.layer, layer.name],
          capability: name,
        })
      provided.set(name, { layer: layer.name, api: entry.api })
    }
  }
  for (const layer of layers) {
    for (const needed of layer.requires ?? []) {
      if (!provided.has(needed.name)) {
        const have = [...provided.keys()]
        throw new LayerStackError(
          `layer "${layer.name}" requires "${needed.name}", which no layer of the stack provides (provided: ${have.length === 0 ? 'none' : have.join(', ')})`,
          { layers: [layer.name], capability: needed.name },
        )
      }
    }
  }
  return provided
}

/**
 * Orders layers: declared order, adjusted so every `before`/`after` constraint holds. Constraints
 * naming layers absent from the stack are ignored (a layer may sit after an optional one).
 * Index 0 is the outermost layer: nearest the program, first to see a plan, outermost wrapper.
 * Throws LayerStackError on a duplicate name, a cycle, or a capability missing or provided twice.
 */
export function orderLayers(layers: readonly Layer[]): Layer[] {
  const index = new Map<string, number>()
  layers.forEach((layer, i) => {
    if (typeof layer?.name !== 'string' || layer.name === '') throw new LayerStackError(`layer at position ${i} has no name`)
    if (index.has(layer.name)) throw new LayerStackError(`two layers are named "${layer.name}"`, { layers: [layer.name, layer.name] })
    index.set(layer.name, i)
  })
  stackCapabilities(layers)
  // Edge a -> b: a must come before b.
  const edges = layers.map(() => new Set<number>())
  const incoming = layers.map(() => 0)
  const addEdge = (a: number, b: number): void => {
    if (edges[a]!.has(b)) return
    edges[a]!.add(b)
    incoming[b]!++
  }
  layers.forEach((layer, i) => {
    for (const name of layer.before ?? []) {
      const j = index.get(name)
      if (j !== undefined) addEdge(i, j)
    }
    for (const name of layer.after ?? []) {
      const j = index.get(name)
      if (j !== undefined) addEdge(j, i)
    }
  })
  // Kahn's algorithm, always taking the earliest declared layer that is free: stable for the declared order.
  const ordered: Layer[] = []
  const free = new Set(layers.map((_, i) => i).filter((i) => incoming[i] === 0))
  while (free.size > 0) {
    const next = Math.min(...free)
    free.delete(next)
    ordered.push(layers[next]!)
    for (const j of edges[next]!) if (--incoming[j]! === 0) free.add(j)
  }
  if (ordered.length !== layers.length) {
    const stuck = layers.filter((_, i) => incoming[i]! > 0).map((l) => l.name)
    throw new LayerStackError(`order constraints form a cycle among: ${stuck.join(', ')}`)
  }
  return ordered
}

/** Runs every layer's plan hook, outermost first, each handing its rewrite to the next. */
export function planThrough(layers: readonly Layer[], program: Program, context: PlanContext): Promise<Program> {
  const step = (i: number, current: Program): Promise<Program> => {
    for (let j = i; j < layers.length; j++) {
      const hook = layers[j]!.plan
      if (hook !== undefined) return Promise.resolve(hook.call(layers[j], current, (p) => step(j + 1, p), context))
    }
    return Promise.resolve(current)
  }
  return step(0, program)
}

/** Builds an instance through every layer's instance hook around the kernel's `base` builder. */
export function instanceThrough(layers: readonly Layer[], spec: InstanceSpec, base: (spec: InstanceSpec) => Instance): Instance {
  const step = (i: number, current: InstanceSpec): Instance => {
    for (let j = i; j < layers.length; j++) {
      const hook = layers[j]!.instance
      if (hook !== undefined) return hook.call(layers[j], current, (s) => step(j + 1, s))
    }
    return base(current)
  }
  return step(0, spec)
}

/**
 * Wraps one end of a channel through every layer's channel hook (the innermost is the kernel's
 * own). A hook must hand back an end that still does what the one it got did (sends, takes, or
 * both): else LayerStackError naming the layer.
 */
export function channelThrough<C extends ChannelEnd>(layers: readonly Layer[], channel: C): C {
  const sends = isChannelSender(channel)
  const takes = isChannelReceiver(channel)
  const step = (i: number, current: ChannelEnd): ChannelEnd => {
    for (let j = i; j < layers.length; j++) {
      const layer = layers[j]!
      const hook = layer.channel
      if (hook === undefined) continue
      const wrapped = hook.call(layer, current, (c) => step(j + 1, c))
      if ((sends && !isChannelSender(wrapped)) || (takes && !isChannelReceiver(wrapped))) {
        throw new LayerStackError(
          `layer "${layer.name}": its channel hook turned the ${sends ? 'sending' : 'receiving'} end of ${channel.info.link.id} into one that cannot ${sends ? 'send' : 'take'}`,
          { layers: [layer.name] },
        )
      }
      return wrapped
    }
    return current
  }
  return step(0, channel) as C
}

/** The methods of a channel end that `wrapChannel` can replace. */
export type ChannelOverrides = Partial<Pick<ChannelSender, 'send' | 'ready' | 'whenReady' | 'end'> & Pick<ChannelReceiver, 'take' | 'onReadable'>>

/**
 * A channel end that forwards everything to `inner`, with some methods replaced: the easy way for
 * a layer to wrap a channel. The result has the ends `inner` has (sending, receiving or both);
 * overrides of methods `inner` lacks are left out.
 *
 * ```ts
 * channel: (ch, next) => { const inner = next(ch); return isChannelSender(inner) ? wrapChannel(inner, { send: (b) => { seen += b.values.length; inner.send(b) } }) : inner }
 * ```
 */
export function wrapChannel<C extends ChannelEnd>(inner: C, overrides: ChannelOverrides): C {
  const wrapped: { -readonly [K in keyof Channel]?: Channel[K] } & { info: ChannelInfo } = {
    info: inner.info,
    get queued() {
      return inner.queued
    },
  }
  if (isChannelSender(inner)) {
    wrapped.send = overrides.send ?? ((batch) => inner.send(batch))
    wrapped.ready = overrides.ready ?? (() => inner.ready())
    wrapped.whenReady = overrides.whenReady ?? ((signal) => inner.whenReady(signal))
    wrapped.end = overrides.end ?? (() => inner.end())
  }
  if (isChannelReceiver(inner)) {
    wrapped.take = overrides.take ?? (() => inner.take())
    wrapped.onReadable = overrides.onReadable ?? ((fn) => inner.onReadable(fn))
  }
  return wrapped as unknown as C
}

/** An instance that forwards everything to `inner`, with some methods replaced. */
export function wrapInstance(inner: Instance, overrides: Partial<Omit<Instance, 'info'>>): Instance {
  return {
    info: inner.info,
    start: overrides.start ?? (() => inner.start()),
    process: overrides.process ?? ((port, batch) => inner.process(port, batch)),
    run: overrides.run ?? (() => inner.run()),
    end: overrides.end ?? (() => inner.end()),
    snapshot: overrides.snapshot ?? (() => inner.snapshot()),
    restore: overrides.restore ?? ((snapshot) => inner.restore(snapshot)),
    marker: overrides.marker ?? ((marker) => inner.marker?.(marker)),
    dispose: overrides.dispose ?? (() => inner.dispose?.()),
    // A sink's own commit passes through every layer that wraps it.
    ...(inner.commitStage === undefined ? {} : { commitStage: (id: number, batches: readonly SinkBatch[]) => inner.commitStage!(id, batches) }),
    ...(inner.lastCommitted === undefined ? {} : { lastCommitted: () => inner.lastCommitted!() }),
  }
}
