// The kernel as a value: a layer stack that runs programs. `kernel.with(a, b)` is a new kernel.

import type { Capability, Job, Layer, PlanContext, Program, RunOptions } from './contracts.js'
import { LayerStackError } from './errors.js'
import { orderLayers, planThrough, stackCapabilities } from './layer.js'
import { RunningJob } from './runtime/job.js'

/**
 * A kernel with a stack of runtime layers. Immutable: `with` returns a new kernel, so one program
 * can run under different stacks (no layers in a unit test, all five in production). Building a
 * stack checks it: duplicate names, cyclic order constraints, a capability some layer requires
 * and none provides, or two providers of one capability throw LayerStackError at once.
 *
 * ```ts
 * const job = kernel.with(counting, tracing).run(wordcount)
 * const report = await job.done
 * ```
 */
export class Kernel {
  /** The layers, outermost first, ordered by their constraints. */
  readonly layers: readonly Layer[]
  readonly #capabilities: ReadonlyMap<string, { readonly layer: string; readonly api: unknown }>

  constructor(layers: readonly Layer[] = []) {
    this.layers = Object.freeze(orderLayers(layers))
    this.#capabilities = stackCapabilities(this.layers)
    Object.freeze(this)
  }

  /** A kernel with these layers stacked over the current ones (throws LayerStackError on conflicts). */
  with(...layers: Layer[]): Kernel {
    return new Kernel([...this.layers, ...layers])
  }

  /**
   * A kernel with `layers` stacked over the current ones, where a layer named like one already in
   * the stack takes that one's place instead of being a conflict; `onReplace` hears of each. This
   * is how a cluster combines a program module's exported `layers` with its own `kernel` option:
   * the program's layer wins (see docs/kernel.md). Duplicates among `layers` themselves, and
   * capability conflicts, still throw LayerStackError.
   *
   * ```ts
   * kernel.with(placement()).withOverrides([placement({ spareSubmitter: true })], (old) => log(`the program's ${old.name} replaces the kernel's`))
   * ```
   */
  withOverrides(layers: readonly Layer[], onReplace?: (replaced: Layer, by: Layer) => void): Kernel {
    const incoming = new Map<string, Layer>()
    for (const layer of layers) {
      if (incoming.has(layer?.name)) throw new LayerStackError(`two layers are named "${layer.name}"`, { layers: [layer.name, layer.name] })
      incoming.set(layer?.name, layer)
    }
    const replaced = new Set<string>()
    const stacked = this.layers.map((layer) => {
      const by = incoming.get(layer.name)
      if (by === undefined) return layer
      replaced.add(layer.name)
      // The same layer value on both sides is one layer: nothing is replaced.
      if (by !== layer) onReplace?.(layer, by)
      return by
    })
    return new Kernel([...stacked, ...layers.filter((layer) => !replaced.has(layer.name))])
  }

  /**
   * The API the stack's provider of `token` exposes, or undefined when no layer provides it.
   *
   * ```ts
   * const savepoints = kernel.capability(SAVEPOINTS)
   * if (savepoints !== undefined) await savepoints.take(job.id)
   * ```
   */
  capability<T>(token: Capability<T>): T | undefined {
    return this.#capabilities.get(token.name)?.api as T | undefined
  }

  /** Starts a program. Failures arrive through `job.done`; bad options throw at once. */
  run(program: Program, options?: RunOptions): Job {
    return new RunningJob(program, this.layers, options)
  }

  /**
   * Runs the layers' plan hooks on a program without running it: what a submitting peer does
   * before it hands every peer the same planned program. Every field of the context is optional,
   * so it also previews a plan: `kernel.with(placement()).plan(program, { peers })` places the
   * program on imagined peers, submitted from this process. Defaults, as `kernel.run` has them:
   * `self` is `'local'` (this process), `peers` is that peer alone, `job` is the program's name.
   *
   * ```ts
   * const planned = await kernel.with(placement()).plan(wordcount, { peers: [{ id: 'a', tags: { name: 'peer-0' } }, { id: 'b', tags: {} }] })
   * console.log(explain(planOf(planned)!).text)
   * ```
   */
  plan(program: Program, context: Partial<PlanContext> = {}): Promise<Program> {
    const self = context.self ?? 'local'
    return planThrough(this.layers, program, { job: context.job ?? program.name, self, peers: context.peers ?? [{ id: self, tags: {} }] })
  }

  /** Names of the stacked layers, outermost first. */
  describe(): string[] {
    return this.layers.map((l) => l.name)
  }
}

/** The kernel with no layers. */
export const kernel = new Kernel()
