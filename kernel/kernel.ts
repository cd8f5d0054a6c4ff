// The kernel as a value: a layer stack that runs programs. `kernel.with(a, b)` is a new kernel.

import type { Job, Layer, PlanContext, Program, RunOptions } from './contracts.js'
import { orderLayers, planThrough } from './layer.js'
import { RunningJob } from './runtime/job.js'

/**
 * A kernel with a stack of runtime layers. Immutable: `with` returns a new kernel, so one program
 * can run under different stacks (no layers in a unit test, all five in production).
 *
 * ```ts
 * const job = kernel.with(counting, tracing).run(wordcount)
 * const report = await job.done
 * ```
 */
export class Kernel {
  /** The layers, outermost first, ordered by their constraints. */
  readonly layers: readonly Layer[]

  constructor(layers: readonly Layer[] = []) {
    this.layers = Object.freeze(orderLayers(layers))
    Object.freeze(this)
  }

  /** A kernel with these layers stacked over the current ones (throws LayerStackError on conflicts). */
  with(...layers: Layer[]): Kernel {
    return new Kernel([...this.layers, ...layers])
  }

  /** Starts a program. Failures arrive through `job.done`; bad options throw at once. */
  run(program: Program, options?: RunOptions): Job {
    return new RunningJob(program, this.layers, options)
  }

  /**
   * Runs the layers' plan hooks on a program without running it: what a submitting peer does
   * before it hands every peer the same planned program.
   */
  plan(program: Program, context: PlanContext): Promise<Program> {
    return planThrough(this.layers, program, context)
  }

  /** Names of the stacked layers, outermost first. */
  describe(): string[] {
    return this.layers.map((l) => l.name)
  }
}

/** The kernel with no layers. */
export const kernel = new Kernel()
