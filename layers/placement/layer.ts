// The placement layer: its plan hook solves the program's placement and writes it on every operator.

import { InvalidOptionError, layerEvent, type ControlRegistry, type Layer, type LayerEventKind, type PlanContext, type Program } from '../../kernel/index.js'
import { ignoringPlan, onePeer } from './in-process.js'
import { applyPlan, type PlacementPlan } from './plan.js'
import { solve, type PlacementOptions } from './solver.js'

/** Options of the placement layer. All optional. */
export interface PlacementInit extends PlacementOptions {
  /** Called with every plan the layer makes (once on the submitting peer, and again on each peer that plans the same job). @default none */
  readonly onPlan?: (plan: PlacementPlan, context: PlanContext) => void
  /**
   * What the annotations do when the job has no peer but the submitter to run on: a run in one
   * process (`kernel.run`, whose plan context is this process alone), or a cluster of one member.
   * - `enforce`: as anywhere, so a `pin` or `requireTags` naming a peer that is not this one
   *   fails the job with PlacementUnsatisfiableError;
   * - `ignore`: every instance runs on that one peer and the annotations are not enforced (they
   *   are still checked: a malformed one fails as usual). The layer says so, never silently: the
   *   plan lists what it ignored (`PlacementPlan.ignored`, the second line of `explain(plan).text`,
   *   rule `ignored` on each annotated operator's instances), and the job reports it once, as the
   *   layer event `PLACEMENT_EVENTS.ignored`.
   *
   * Placement stays enforced whenever there are other peers, so one program module can export
   * `layers = [placement({ inProcess: 'ignore' })]` and run both in a test and on a cluster.
   * It is an option of the layer rather than a run option because only this layer knows what its
   * annotations mean; the kernel's `RunOptions` know nothing of placement, and the stack is a
   * value: a test runs a pinned program under `kernel.with(placement({ inProcess: 'ignore' }))`.
   * @default 'enforce'
   *
   * ```ts
   * const job = kernel.with(placement({ inProcess: 'ignore' })).run(wordcount)   // count is pinned to peer-0: runs here anyway
   * job.events.subscribe((e) => { if (PLACEMENT_EVENTS.ignored.is(e)) console.warn(e.message) })
   * ```
   */
  readonly inProcess?: 'enforce' | 'ignore'
}

/** What the `ignored` event of the placement layer carries: the job, and each annotated operator with the constraints not enforced. */
export interface PlacementIgnored {
  readonly job: string
  /** `count: tag name=peer-0`, one per annotated operator (see PlacementPlan.ignored). */
  readonly constraints: readonly string[]
}

/** The `layer` events the placement layer reports on `job.events`. */
export const PLACEMENT_EVENTS: { readonly ignored: LayerEventKind<PlacementIgnored> } = Object.freeze({
  /** Once per job that ran in one process with its annotations not enforced (`placement({ inProcess: 'ignore' })`). */
  ignored: layerEvent<PlacementIgnored>('ignored', { layer: 'placement' }),
})

/** Reports, on the job's events, the annotations its plan did not enforce (recorded on every operator, so fused ones carry it too). */
function reportIgnored(registry: ControlRegistry): void {
  for (const operator of registry.job.program.operators) {
    const ignored = operator.annotations.placementExplanation?.ignored
    if (ignored === undefined || ignored.length === 0) continue
    const data: PlacementIgnored = { job: registry.job.id, constraints: ignored }
    registry.notify('ignored', `annotations not enforced in one process (placement({ inProcess: 'ignore' })): ${ignored.join('; ')}`, data)
    return
  }
}

/**
 * The placement layer. Its plan hook places every operator instance on the live peers (see
 * `solve`), writes the `assignment` annotation the cluster runtime deploys by and the
 * `placementExplanation` annotation `planOf` reads back, then hands the program to the layers
 * below. Unsatisfiable annotations fail the plan with PlacementUnsatisfiableError; in one process
 * `inProcess: 'ignore'` runs them anyway, saying so (see PlacementInit.inProcess).
 *
 * Operators added by layers below this one carry no assignment; the cluster places them by its
 * own round robin. Stack placement below layers that add operators to have it place them too.
 *
 * ```ts
 * const cluster = await startCluster({ peers: 3, workdir, kernel: kernel.with(placement()), tags: (i) => ({ name: `peer-${i}` }) })
 * const job = await cluster.submit('examples/wordcount.ts')
 * console.log(explain(planOf(job.program)!).text)
 * // a preview on imagined peers, without running anything:
 * console.log(explain(planOf(await kernel.with(placement()).plan(program, { peers }))!).text)
 * ```
 */
export function placement(init: PlacementInit = {}): Layer {
  // Bad options fail here, when the stack is built, not at the first plan.
  if (init.onPlan !== undefined && typeof init.onPlan !== 'function') throw new InvalidOptionError('placement()', 'onPlan', 'must be a function')
  if (init.spareSubmitter !== undefined && typeof init.spareSubmitter !== 'boolean') throw new InvalidOptionError('placement()', 'spareSubmitter', 'must be a boolean')
  if (init.inProcess !== undefined && init.inProcess !== 'enforce' && init.inProcess !== 'ignore')
    throw new InvalidOptionError('placement()', 'inProcess', `must be 'enforce' or 'ignore', got ${JSON.stringify(init.inProcess)}`)
  const options: PlacementOptions = init.spareSubmitter === undefined ? {} : { spareSubmitter: init.spareSubmitter }
  const ignoring = init.inProcess === 'ignore'
  return {
    name: 'placement',
    plan: async (program: Program, next: (program: Program) => Promise<Program>, context: PlanContext): Promise<Program> => {
      const plan = (ignoring && onePeer(context) ? ignoringPlan(program, context, options) : undefined) ?? solve(program, context, options)
      init.onPlan?.(plan, context)
      return next(applyPlan(program, plan))
    },
    // The control hook runs once per job on each of its peers; a plan that ignored annotations had one peer.
    ...(ignoring ? { control: reportIgnored } : {}),
  }
}
