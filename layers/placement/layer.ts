// The placement layer: its plan hook solves the program's placement and writes it on every operator.

import { InvalidOptionError, type Layer, type PlanContext, type Program } from '../../kernel/index.js'
import { applyPlan, type PlacementPlan } from './plan.js'
import { solve, type PlacementOptions } from './solver.js'

/** Options of the placement layer. All optional. */
export interface PlacementInit extends PlacementOptions {
  /** Called with every plan the layer makes (once on the submitting peer, and again on each peer that plans the same job). @default none */
  readonly onPlan?: (plan: PlacementPlan, context: PlanContext) => void
}

/**
 * The placement layer. Its plan hook places every operator instance on the live peers (see
 * `solve`), writes the `assignment` annotation the cluster runtime deploys by and the
 * `placementExplanation` annotation `planOf` reads back, then hands the program to the layers
 * below. Unsatisfiable annotations fail the plan with PlacementUnsatisfiableError.
 *
 * Operators added by layers below this one carry no assignment; the cluster places them by its
 * own round robin. Stack placement below layers that add operators to have it place them too.
 *
 * ```ts
 * const cluster = await startCluster({ peers: 3, workdir, kernel: kernel.with(placement()), tags: (i) => ({ name: `peer-${i}` }) })
 * const job = await cluster.submit('examples/wordcount.ts')
 * console.log(explain(planOf(job.program)!).text)
 * ```
 */
export function placement(init: PlacementInit = {}): Layer {
  // Bad options fail here, when the stack is built, not at the first plan.
  if (init.onPlan !== undefined && typeof init.onPlan !== 'function') throw new InvalidOptionError('placement()', 'onPlan', 'must be a function')
  if (init.spareSubmitter !== undefined && typeof init.spareSubmitter !== 'boolean') throw new InvalidOptionError('placement()', 'spareSubmitter', 'must be a boolean')
  const options: PlacementOptions = init.spareSubmitter === undefined ? {} : { spareSubmitter: init.spareSubmitter }
  return {
    name: 'placement',
    plan: async (program: Program, next: (program: Program) => Promise<Program>, context: PlanContext): Promise<Program> => {
      const plan = solve(program, context, options)
      init.onPlan?.(plan, context)
      return next(applyPlan(program, plan))
    },
  }
}
