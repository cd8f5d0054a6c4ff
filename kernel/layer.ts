// Layer stacks: ordering layers by their constraints, and composing their hooks around the kernel's own.

import type { Channel, Instance, InstanceSpec, Layer, PlanContext, Program } from './contracts.js'
import { LayerStackError } from './errors.js'

/**
 * Orders layers: declared order, adjusted so every `before`/`after` constraint holds. Constraints
 * naming layers absent from the stack are ignored (a layer may sit after an optional one).
 * Index 0 is the outermost layer: nearest the program, first to see a plan, outermost wrapper.
 */
export function orderLayers(layers: readonly Layer[]): Layer[] {
  const index = new Map<string, number>()
  layers.forEach((layer, i) => {
    if (typeof layer?.name !== 'string' || layer.name === '') throw new LayerStackError(`layer at position ${i} has no name`)
    if (index.has(layer.name)) throw new LayerStackError(`two layers are named "${layer.name}"`)
    index.set(layer.name, i)
  })
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

/** Wraps a channel through every layer's channel hook (the innermost is the kernel's own). */
export function channelThrough(layers: readonly Layer[], channel: Channel): Channel {
  const step = (i: number, current: Channel): Channel => {
    for (let j = i; j < layers.length; j++) {
      const hook = layers[j]!.channel
      if (hook !== undefined) return hook.call(layers[j], current, (c) => step(j + 1, c))
    }
    return current
  }
  return step(0, channel)
}

/**
 * A channel that forwards everything to `inner`, with some methods replaced: the easy way for a
 * layer to wrap a channel.
 *
 * ```ts
 * channel: (ch, next) => { const inner = next(ch); return wrapChannel(inner, { send: (b) => { seen += b.values.length; inner.send(b) } }) }
 * ```
 */
export function wrapChannel(inner: Channel, overrides: Partial<Omit<Channel, 'info' | 'queued'>>): Channel {
  return {
    info: inner.info,
    get queued() {
      return inner.queued
    },
    send: overrides.send ?? ((batch) => inner.send(batch)),
    ready: overrides.ready ?? (() => inner.ready()),
    whenReady: overrides.whenReady ?? ((signal) => inner.whenReady(signal)),
    end: overrides.end ?? (() => inner.end()),
    take: overrides.take ?? (() => inner.take()),
    onReadable: overrides.onReadable ?? ((fn) => inner.onReadable(fn)),
  }
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
  }
}
