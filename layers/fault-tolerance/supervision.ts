// Supervision trees over operator instances: restart strategies and restart intensity, as in Erlang/OTP supervisors.

import {
  InstanceCrashedError,
  InvalidOptionError,
  LaminaError,
  type Batch,
  type ControlRegistry,
  type Instance,
  type InstanceInfo,
  type InstanceSpec,
  type Layer,
  type Marker,
  type Operator,
  type PortCodecs,
  type Program,
  type StateSnapshot,
} from '../../kernel/index.js'
import { SupervisionEscalatedError } from './errors.js'
import { registerRetryEvents } from './retry.js'

/**
 * Which children a supervisor restarts when one of them fails (Erlang/OTP's restart strategies):
 * - `one-for-one`: the failed child alone;
 * - `one-for-all`: every child;
 * - `rest-for-one`: the failed child and the children after it (in topological order: operators
 *   upstream come first, then instance index), i.e. what is downstream of it.
 */
export type SupervisionStrategy = 'one-for-one' | 'one-for-all' | 'rest-for-one'

/** How one supervisor restarts its children, and how often before it gives up. */
export interface SupervisorPolicy {
  /** @default 'one-for-one' (or the layer's strategy, for groups and operators) */
  readonly strategy?: SupervisionStrategy
  /**
   * Restart intensity: at most this many restarts within `withinMs`. One more failure and the
   * supervisor gives up: the failure escalates to its parent, and from the root to the job, which
   * fails with SupervisionEscalatedError. 0 escalates at the first failure.
   * @default 3 (or the layer's, for groups and operators)
   */
  readonly maxRestarts?: number
  /** The window of the restart intensity, in milliseconds. @default 5000 (or the layer's) */
  readonly withinMs?: number
}

/**
 * What a restarted instance's state starts from:
 * - `fresh`: the operator's `state.init` (Erlang's choice: the state may be what made it crash);
 * - `keep`: a snapshot of the crashed instance's state, taken as it is discarded.
 */
export type RestartState = 'fresh' | 'keep'

/**
 * The `supervision` annotation of an operator (write it with `supervise`). Any of `strategy`,
 * `maxRestarts`, `withinMs` gives the operator a supervisor of its own over its instances, under
 * its group's supervisor or the root; fields it leaves out take the layer's values.
 */
export interface SupervisionAnnotation extends SupervisorPolicy {
  /** Puts the operator under the supervisor of this group (declared in `SupervisionInit.groups`). */
  readonly group?: string
  /** @default the layer's `state` */
  readonly state?: RestartState
}

declare module '../../kernel/index.js' {
  interface Annotations {
    /** How the supervision layer restarts the operator's instances (see `supervise`). */
    supervision?: SupervisionAnnotation
  }
}

/** Options of the supervision layer. All optional; the policy fields are the root supervisor's. */
export interface SupervisionInit extends SupervisorPolicy {
  /**
   * Named supervisors under the root, each over the operators annotated with its name
   * (`supervise(op, { group })`); policy fields a group leaves out take the root's values.
   * @default {}
   */
  readonly groups?: { readonly [group: string]: SupervisorPolicy }
  /** @default 'fresh' */
  readonly state?: RestartState
  /** The clock of the restart intensity (tests inject one). @default Date.now */
  readonly now?: () => number
}

/** The supervision layer: a `Layer` named `supervision`. */
export interface SupervisionLayer extends Layer {
  readonly name: 'supervision'
}

/** An operator instance, as supervision events name it. */
export interface InstanceRef {
  readonly operator: string
  readonly instance: number
}

/** The `data` of a `restart` layer event. */
export interface RestartEventData {
  /** The supervisor that restarts: `root`, `group:<name>` or `operator:<name>`. */
  readonly supervisor: string
  readonly strategy: SupervisionStrategy
  /** The instance whose crash started it all. */
  readonly failed: InstanceRef
  /** What the instance's code threw (the dead letter's code and message). */
  readonly cause: { readonly code: string; readonly message: string }
  /**
   * Instances restarted: the failed one at once, the others at their next call boundary (process,
   * marker, run or end), never while one of their handlers runs.
   */
  readonly restarted: readonly InstanceRef[]
  /** Instances the strategy names that are not restarted: still inside `run()` (a producing source), or finished. */
  readonly skipped: readonly (InstanceRef & { readonly reason: 'running' | 'finished' })[]
  /** Restarts of this supervisor within the window, this one included. */
  readonly restarts: number
  readonly maxRestarts: number
  readonly withinMs: number
}

/** The `data` of an `escalate` layer event. */
export interface EscalateEventData {
  /** The supervisor that gave up. */
  readonly supervisor: string
  /** Where the failure goes: the parent supervisor, or `job` (the job fails). */
  readonly to: string
  readonly failed: InstanceRef
  readonly cause: { readonly code: string; readonly message: string }
  readonly maxRestarts: number
  readonly withinMs: number
}

const STRATEGIES: readonly SupervisionStrategy[] = ['one-for-one', 'one-for-all', 'rest-for-one']

/**
 * Annotates an operator with how the supervision layer treats it (merged into what it has).
 * The operator must also declare `onError: 'crash'` for its failures to reach a supervisor.
 *
 * ```ts
 * const enrich = supervise(atom({ name: 'enrich', onError: 'crash', ... }), { strategy: 'one-for-all', maxRestarts: 5, withinMs: 60_000 })
 * const writer = supervise(write, { group: 'storage' }) // under supervision({ groups: { storage: { strategy: 'rest-for-one' } } })
 * ```
 */
export function supervise<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, annotation: SupervisionAnnotation): Operator<I, O> {
  const merged = { ...(operator as Operator).annotations.supervision, ...annotation }
  checkAnnotation(operator.name, merged)
  return operator.annotate({ supervision: merged })
}

/**
 * The supervision layer. Every operator instance of a job is a child of a supervisor; by default
 * one root supervisor (per job, per peer) holds them all, in topological order. When an instance
 * of an operator declaring `onError: 'crash'` fails, the record it was handling is a dead letter
 * (with its cause), the supervisor restarts it (and, by its strategy, its siblings) with a fresh
 * instance built by the layers below, and processing goes on with the next record; a source that
 * crashed is run again. Past the restart intensity, the failure escalates to the parent
 * supervisor, and from the root the job fails with SupervisionEscalatedError. Every restart and
 * escalation is a `layer` event on `job.events` (kinds `restart`, `escalate`; and `retry` for
 * `retrying` handlers).
 *
 * ```ts
 * const job = kernel.with(supervision({ strategy: 'one-for-one', maxRestarts: 3, withinMs: 10_000 })).run(p)
 * job.events.subscribe((e) => e.type === 'layer' && console.error(`${e.kind}: ${e.message}`))
 * ```
 *
 * The layer sits below `metadata` and `checkpoints` (nearer the kernel), so a restart rebuilds only
 * what lies under it. Instances of spawned children (`ctx.spawn`) are not supervised.
 */
export function supervision(init: SupervisionInit = {}): SupervisionLayer {
  const root = policyOf('supervision layer', init, { strategy: 'one-for-one', maxRestarts: 3, withinMs: 5000 })
  const state = stateOf('supervision layer', init.state) ?? 'fresh'
  const groups = new Map<string, Required<SupervisorPolicy>>()
  for (const [name, policy] of Object.entries(init.groups ?? {})) groups.set(name, policyOf(`supervision group ${name}`, policy, root))
  const now = init.now ?? Date.now
  if (typeof now !== 'function') throw new InvalidOptionError('supervision layer', 'now', 'must be a function returning milliseconds')
  // One tree per job share: a job id runs on several peers (in one process, in tests).
  const jobs = new Map<string, JobTree>()

  return {
    name: 'supervision',
    // Nearest the kernel: a restart rebuilds only what lies below, and the layers above (checkpoints
    // snapshot through it, metadata traces through it) keep one wrapper per instance.
    after: ['metadata', 'checkpoints'],
    control(registry: ControlRegistry) {
      const key = shareKey(registry.job.id, registry.cluster.self)
      jobs.set(key, new JobTree(registry.job.program, { root, groups, state, now }, (kind, message, data) => registry.notify(kind, message, data)))
      registerRetryEvents(registry)
      const forget = (): void => void jobs.delete(key)
      registry.job.events.subscribe({ next: (event) => (event.type === 'finished' || event.type === 'failed' ? forget() : undefined), complete: forget })
    },
    instance(spec: InstanceSpec, next: (spec: InstanceSpec) => Instance): Instance {
      const tree = jobs.get(shareKey(spec.info.job, spec.info.peer ?? 'local'))
      if (tree === undefined) throw new InvalidOptionError('supervision layer', 'control', `was not called for job ${spec.info.job} before its instances were built`)
      const leaf = tree.leaf(spec.info)
      if (leaf === undefined) return next(spec) // a spawned child: not part of the program's tree
      const supervised = new SupervisedInstance(spec, next, leaf, tree)
      leaf.instance = supervised
      return supervised
    },
  }
}

function shareKey(job: string, peer: string): string {
  return `${job}\u0000${peer}`
}

// ---------------------------------------------------------------------------------------------
// The tree

interface Supervisor {
  readonly kind: 'supervisor'
  readonly id: string
  readonly policy: Required<SupervisorPolicy>
  readonly parent: Supervisor | undefined
  readonly children: Node[]
  /** Times of the restarts within the window. */
  history: number[]
}

interface Leaf {
  readonly kind: 'leaf'
  readonly ref: InstanceRef
  readonly parent: Supervisor
  readonly state: RestartState
  /** The running instance, when this peer runs it. */
  instance: SupervisedInstance | undefined
}

type Node = Supervisor | Leaf

type Notify = (kind: string, message: string, data: RestartEventData | EscalateEventData) => void

/** The supervisors of one job share and the decisions they take. */
class JobTree {
  private readonly root: Supervisor
  private readonly leaves = new Map<string, Leaf>()
  private readonly now: () => number

  constructor(
    program: Program,
    options: {
      readonly root: Required<SupervisorPolicy>
      readonly groups: ReadonlyMap<string, Required<SupervisorPolicy>>
      readonly state: RestartState
      readonly now: () => number
    },
    private readonly notify: Notify,
  ) {
    this.now = options.now
    this.root = supervisor('root', options.root, undefined)
    const groups = new Map<string, Supervisor>()
    for (const operator of topologicalOrder(program)) {
      const annotation = operator.annotations.supervision ?? {}
      checkAnnotation(operator.name, annotation)
      let parent = this.root
      if (annotation.group !== undefined) {
        let group = groups.get(annotation.group)
        if (group === undefined) {
          const policy = options.groups.get(annotation.group)
          if (policy === undefined) {
            throw new InvalidOptionError(
              `operator ${operator.name}`,
              'supervision.group',
              `names group "${annotation.group}", which the supervision layer's groups option does not declare`,
            )
          }
          group = supervisor(`group:${annotation.group}`, policy, this.root)
          groups.set(annotation.group, group)
        }
        parent = group
      }
      if (annotation.strategy !== undefined || annotation.maxRestarts !== undefined || annotation.withinMs !== undefined) {
        parent = supervisor(`operator:${operator.name}`, policyOf(`operator ${operator.name}`, annotation, options.root), parent)
      }
      const state = annotation.state ?? options.state
      for (let instance = 0; instance < (operator.annotations.parallelism ?? 1); instance++) {
        const leaf: Leaf = { kind: 'leaf', ref: { operator: operator.name, instance }, parent, state, instance: undefined }
        parent.children.push(leaf)
        this.leaves.set(`${operator.name}#${instance}`, leaf)
      }
    }
  }

  leaf(info: InstanceInfo): Leaf | undefined {
    return this.leaves.get(`${info.operator}#${info.instance}`)
  }

  /**
   * Takes the supervisors' decision on a crash of `crashed`: marks the siblings its strategy names
   * for a restart at their next call boundary (the caller restarts `crashed` itself), or, past the
   * restart intensity, escalates to the parent; throws SupervisionEscalatedError past the root.
   */
  failed(crashed: SupervisedInstance, crash: InstanceCrashedError): void {
    const failed = crashed.leaf.ref
    const cause = crash.cause instanceof LaminaError ? crash.cause : crash
    const causeData = { code: cause.code, message: cause.message }
    const now = this.now()
    const gaveUp: string[] = []
    let child: Node = crashed.leaf
    let current = crashed.leaf.parent
    for (;;) {
      const { maxRestarts, withinMs } = current.policy
      current.history = current.history.filter((time) => now - time < withinMs)
      if (current.history.length < maxRestarts) {
        current.history.push(now)
        this.restart(current, child, crashed, causeData)
        return
      }
      gaveUp.push(current.id)
      const to = current.parent
      this.notify(
        'escalate',
        `${name(failed)} crashed (${cause.message}); supervisor ${current.id} had ${maxRestarts} restart(s) within ${withinMs} ms already: ` +
          (to === undefined ? 'the failure escalates to the job, which fails' : `the failure escalates to ${to.id}`),
        { supervisor: current.id, to: to?.id ?? 'job', failed, cause: causeData, maxRestarts, withinMs },
      )
      if (to === undefined) throw new SupervisionEscalatedError(failed.operator, failed.instance, gaveUp, maxRestarts, withinMs, crash)
      // The parent restarts the supervisor that gave up as one child: afresh, with all its children.
      child = current
      current = to
    }
  }

  private restart(parent: Supervisor, child: Node, crashed: SupervisedInstance, cause: { code: string; message: string }): void {
    const { strategy, maxRestarts, withinMs } = parent.policy
    const index = parent.children.indexOf(child)
    const targets = strategy === 'one-for-one' ? [child] : strategy === 'one-for-all' ? parent.children : parent.children.slice(index)
    const restarted: InstanceRef[] = []
    const skipped: (InstanceRef & { reason: 'running' | 'finished' })[] = []
    for (const target of targets) {
      for (const leaf of leavesOf(target)) {
        const instance = leaf.instance
        if (instance === undefined) continue // runs on another peer: its own share supervises it
        if (instance === crashed) restarted.push(leaf.ref)
        else if (instance.finished) skipped.push({ ...leaf.ref, reason: 'finished' })
        else if (instance.running) skipped.push({ ...leaf.ref, reason: 'running' })
        else {
          instance.pending = true
          restarted.push(leaf.ref)
        }
      }
    }
    const restarts = parent.history.length
    const skippedText = skipped.length === 0 ? '' : `; not restarted: ${skipped.map((s) => `${name(s)} (${s.reason})`).join(', ')}`
    this.notify(
      'restart',
      `${name(crashed.leaf.ref)} crashed (${cause.message}); ${parent.id} (${strategy}) restarts ${restarted.map(name).join(', ')}${skippedText} ` +
        `[restart ${restarts} of at most ${maxRestarts} within ${withinMs} ms]`,
      { supervisor: parent.id, strategy, failed: crashed.leaf.ref, cause, restarted, skipped, restarts, maxRestarts, withinMs },
    )
  }
}

function supervisor(id: string, policy: Required<SupervisorPolicy>, parent: Supervisor | undefined): Supervisor {
  const node: Supervisor = { kind: 'supervisor', id, policy, parent, children: [], history: [] }
  parent?.children.push(node)
  return node
}

/** The leaves under a node; supervisors among them restart afresh (their restart history is cleared). */
function leavesOf(node: Node): Leaf[] {
  if (node.kind === 'leaf') return [node]
  node.history = []
  return node.children.flatMap(leavesOf)
}

function name(ref: InstanceRef): string {
  return `${ref.operator}[${ref.instance}]`
}

/** Operators upstream first (Kahn's algorithm over the links, ties in program order); operators on a cycle follow in program order. */
function topologicalOrder(program: Program): Operator[] {
  const operators = program.operators
  const index = new Map(operators.map((o, i) => [o.name, i]))
  const incoming = operators.map(() => 0)
  const edges = operators.map(() => new Set<number>())
  for (const link of program.links) {
    const from = index.get(link.from.operator)
    const to = index.get(link.to.operator)
    if (from === undefined || to === undefined || from === to || edges[from]!.has(to)) continue
    edges[from]!.add(to)
    incoming[to]!++
  }
  const order: Operator[] = []
  const done = new Set<number>()
  const free = operators.map((_, i) => i).filter((i) => incoming[i] === 0)
  while (order.length < operators.length) {
    // A cycle leaves no free operator: take the first one left in program order.
    const next = free.length > 0 ? Math.min(...free) : operators.findIndex((_, i) => !done.has(i))
    const at = free.indexOf(next)
    if (at >= 0) free.splice(at, 1)
    done.add(next)
    order.push(operators[next]!)
    for (const j of edges[next]!) if (--incoming[j]! === 0 && !done.has(j)) free.push(j)
  }
  return order
}

// ---------------------------------------------------------------------------------------------
// Validation

function policyOf(where: string, policy: SupervisorPolicy, defaults: Required<SupervisorPolicy>): Required<SupervisorPolicy> {
  const strategy = policy.strategy ?? defaults.strategy
  if (!STRATEGIES.includes(strategy)) throw new InvalidOptionError(where, 'strategy', `must be one of ${STRATEGIES.join(', ')}, got ${JSON.stringify(strategy)}`)
  const maxRestarts = policy.maxRestarts ?? defaults.maxRestarts
  if (!Number.isInteger(maxRestarts) || maxRestarts < 0) throw new InvalidOptionError(where, 'maxRestarts', `must be an integer of at least 0, got ${String(maxRestarts)}`)
  const withinMs = policy.withinMs ?? defaults.withinMs
  if (typeof withinMs !== 'number' || !(withinMs > 0)) throw new InvalidOptionError(where, 'withinMs', `must be a positive number of milliseconds, got ${String(withinMs)}`)
  return { strategy, maxRestarts, withinMs }
}

function stateOf(where: string, state: RestartState | undefined): RestartState | undefined {
  if (state !== undefined && state !== 'fresh' && state !== 'keep') throw new InvalidOptionError(where, 'state', `must be 'fresh' or 'keep', got ${JSON.stringify(state)}`)
  return state
}

function checkAnnotation(operator: string, annotation: SupervisionAnnotation): void {
  const where = `operator ${operator}`
  policyOf(where, annotation, { strategy: 'one-for-one', maxRestarts: 0, withinMs: 1 })
  stateOf(where, annotation.state)
  if (annotation.group !== undefined && (typeof annotation.group !== 'string' || annotation.group === '')) {
    throw new InvalidOptionError(where, 'supervision.group', `must be a non-empty string, got ${JSON.stringify(annotation.group)}`)
  }
}

// ---------------------------------------------------------------------------------------------
// The supervised instance

type Step = void | Promise<void>

function isPromise(value: unknown): value is Promise<void> {
  return value !== null && typeof value === 'object' && typeof (value as PromiseLike<unknown>).then === 'function'
}

/** Runs `then` once `step` has succeeded (at once when it is not a promise). */
function after(step: Step, then: () => Step): Step {
  return isPromise(step) ? step.then(then) : then()
}

/**
 * One supervised operator instance: delegates to the current inner instance (built by the layers
 * below), and replaces it with a fresh one when it crashes or when its supervisor asks. A restart
 * asked by a sibling's failure waits for this instance's next call boundary, so it never happens
 * while one of its handlers runs.
 */
class SupervisedInstance implements Instance {
  readonly info: InstanceInfo
  /** A sibling's failure asked for a restart at the next call boundary. */
  pending = false
  /** Inside `run()` (a source producing): no call boundary until it returns. */
  running = false
  /** `end()` has completed. */
  private ended = false
  /** A source whose `run()` has completed: it produced everything. */
  private produced = false
  private inner: Instance
  /** Counts replacements of `inner`. */
  private generation = 0
  /** A restart whose fresh instance is still starting: calls wait for it. */
  private restarting: Promise<void> | undefined
  /** An asynchronous call in progress while `run()` is pending (a crash of `run` waits for it). */
  private inFlight: Promise<void> | undefined

  /** Nothing is left that a restart could redo: `end()` has completed, or a source's `run()` has. */
  get finished(): boolean {
    return this.ended || this.produced
  }

  constructor(
    private readonly spec: InstanceSpec,
    private readonly build: (spec: InstanceSpec) => Instance,
    readonly leaf: Leaf,
    private readonly tree: JobTree,
  ) {
    this.info = spec.info
    this.inner = build(spec)
  }

  start(): Step {
    // The inner instance has not started yet: it is as fresh as a restart would make it.
    this.pending = false
    return this.guard(
      () => this.inner.start(),
      () => undefined,
      false,
    )
  }

  run(): Step {
    if (this.pending || this.restarting !== undefined) return this.atBoundary(() => this.run())
    this.running = true
    let step: Step
    try {
      step = this.runOnce()
    } catch (error) {
      this.running = false
      throw error
    }
    if (!isPromise(step)) {
      this.running = false
      this.produced = Object.keys(this.spec.operator.inputs).length === 0
      return
    }
    return step.then(
      () => {
        this.running = false
        // A source that has produced everything has nothing left a restart could redo.
        this.produced = Object.keys(this.spec.operator.inputs).length === 0
      },
      (error: unknown) => {
        this.running = false
        throw error
      },
    )
  }

  process(port: string, batch: Batch): Step {
    if (this.pending || this.restarting !== undefined) return this.atBoundary(() => this.process(port, batch))
    const generation = this.generation
    let step: Step
    try {
      step = this.inner.process(port, batch)
    } catch (error) {
      return this.crashed(error, generation, (crash) => this.processRest(port, crash), false)
    }
    if (!isPromise(step)) return
    const handled = step.then(undefined, (error: unknown) => this.crashed(error, generation, (crash) => this.processRest(port, crash), false))
    if (this.running) this.track(handled)
    return handled
  }

  marker(marker: Marker): Step {
    if (this.pending || this.restarting !== undefined) return this.atBoundary(() => this.marker(marker))
    if (this.inner.marker === undefined) return
    const step = this.guard(
      () => this.inner.marker?.(marker),
      () => this.marker(marker),
      false,
    )
    if (isPromise(step) && this.running) this.track(step)
    return step
  }

  end(): Step {
    if (this.pending || this.restarting !== undefined) return this.atBoundary(() => this.end())
    return after(
      this.guard(
        () => this.inner.end(),
        () => this.end(),
        false,
      ),
      () => {
        this.ended = true
      },
    )
  }

  snapshot(): StateSnapshot {
    return this.inner.snapshot()
  }

  restore(snapshot: StateSnapshot): void {
    this.inner.restore(snapshot)
  }

  dispose(): void {
    this.inner.dispose?.()
  }

  private runOnce(): Step {
    return this.guard(
      () => this.inner.run(),
      () => this.runOnce(),
      true,
    )
  }

  /** Hands the fresh instance the records the crashed one did not reach. */
  private processRest(port: string, crash: InstanceCrashedError): Step {
    const remaining = crash.remaining
    return remaining === undefined || remaining.values.length === 0 ? undefined : this.process(port, remaining)
  }

  /** A call boundary with a restart due: restart (or wait for the one in progress), then make the call. */
  private atBoundary(call: () => Step): Step {
    const restarting = this.restarting
    if (restarting !== undefined) return restarting.then(call)
    return after(this.restart(), call)
  }

  /** Calls `call` on the inner instance; a crash goes to the supervisor, then `resume` runs on the fresh instance. */
  private guard(call: () => Step, resume: (crash: InstanceCrashedError) => Step, waitForCalls: boolean): Step {
    const generation = this.generation
    let step: Step
    try {
      step = call()
    } catch (error) {
      return this.crashed(error, generation, resume, waitForCalls)
    }
    return isPromise(step) ? step.then(undefined, (error: unknown) => this.crashed(error, generation, resume, waitForCalls)) : undefined
  }

  /**
   * The inner instance of `generation` threw. A crash (InstanceCrashedError) goes to the supervisor,
   * which may escalate (that error then fails the job); anything else (an abort, a fault of the
   * kernel or a layer) is not the operator's failure and propagates.
   */
  private crashed(error: unknown, generation: number, resume: (crash: InstanceCrashedError) => Step, waitForCalls: boolean): Step {
    if (!(error instanceof InstanceCrashedError)) throw error
    this.tree.failed(this, error)
    // `run()` runs beside the handlers of an atom with inputs: restart once none is running.
    const busy = waitForCalls ? this.inFlight : undefined
    const restart = (): Step => (generation === this.generation ? after(this.restart(), () => resume(error)) : resume(error))
    return busy === undefined ? restart() : busy.then(restart, restart)
  }

  /** Replaces the inner instance with a fresh one and starts it (a crash while starting is a failure too). */
  private restart(): Step {
    this.pending = false
    const old = this.inner
    const snapshot = this.leaf.state === 'keep' ? old.snapshot() : undefined
    old.dispose?.()
    this.generation++
    this.inner = this.build(this.spec)
    if (snapshot !== undefined) this.inner.restore(snapshot)
    const started = this.guard(
      () => this.inner.start(),
      () => undefined,
      false,
    )
    if (!isPromise(started)) return
    const restarting: Promise<void> = started.finally(() => {
      if (this.restarting === restarting) this.restarting = undefined
    })
    this.restarting = restarting
    return restarting
  }

  private track(step: Promise<void>): void {
    this.inFlight = step
    const clear = (): void => {
      if (this.inFlight === step) this.inFlight = undefined
    }
    step.then(clear, clear)
  }
}
