// The isolation annotation on operators, and the typed helpers that write it (each returns a new operator).

import { pathToFileURL } from 'node:url'
import { isAbsolute } from 'node:path'
import type { Operator, PortCodecs } from '../../kernel/index.js'
import { IsolationAnnotationError, IsolationModuleError } from './errors.js'

/** A JSON value: what `ModuleRef.args` may hold (it is copied into the worker or child). */
export type JsonValue = null | boolean | number | string | readonly JsonValue[] | { readonly [key: string]: JsonValue }

/**
 * Where a worker thread or child process finds the operator to run. Operators are closures and
 * cannot be sent to another thread; the isolated side imports `module` and rebuilds the operator
 * from its export instead, so the module must build the same operator as the one annotated.
 *
 * ```ts
 * // scoring.ts
 * export function scorer(args: { factor: number }) { return atom({ name: 'score', ... }) }
 * // program.ts
 * const score = isolate(scorer({ factor: 2 }), { from: { module: new URL('./scoring.ts', import.meta.url).href, export: 'scorer', args: { factor: 2 } } })
 * ```
 */
export interface ModuleRef {
  /** The module: a `file:` URL (e.g. `import.meta.url`) or an absolute path. `.ts` modules are loaded with tsx. */
  readonly module: string
  /**
   * The export to use: an atom-form Operator, or a function called with `args` that returns one
   * (or a promise of one). @default 'default'
   */
  readonly export?: string
  /** The argument of the export when it is a function. */
  readonly args?: JsonValue
}

/** Where an operator's instances run on their peer. */
export type IsolationMode = 'in-process' | 'worker' | 'process'

/**
 * The `isolation` annotation of an operator (write it with `isolate`). Each instance of the
 * operator gets its own worker thread or child process.
 */
export interface IsolationAnnotation {
  /**
   * - `in-process`: on the peer's main thread, like any operator (no isolation);
   * - `worker`: in a worker thread of the peer's process, with its own heap limit;
   * - `process`: in a child process of the peer, with its own heap limit.
   */
  readonly mode: IsolationMode
  /** Where the isolated side finds the operator (required unless `mode` is `in-process`). */
  readonly from?: ModuleRef
  /**
   * The heap limit of the worker thread (its old generation, `resourceLimits.maxOldGenerationSizeMb`)
   * or child process (`--max-old-space-size`), in MiB. @default the isolation layer's `memoryMb`
   */
  readonly memoryMb?: number
  /**
   * The watchdog: the longest the operator's code may hold its thread without yielding (one
   * synchronous stretch: a handler, a batch handler, a timer callback …), in milliseconds; past it
   * the instance is stopped with IsolationFaultError (`watchdog`). Measured as wall-clock time
   * without an answer to the host's heartbeat, not as CPU time. 0 turns it off.
   * @default the isolation layer's `watchdogMs`
   */
  readonly watchdogMs?: number
}

declare module '../../kernel/index.js' {
  interface Annotations {
    /** Where the operator's instances run on their peer: read by the isolation layer (see `isolate`). */
    isolation?: IsolationAnnotation
  }
}

/** Options of `isolate`: the annotation, with `mode` defaulting to `worker`. */
export interface IsolateOptions extends Omit<IsolationAnnotation, 'mode'> {
  /** @default 'worker' */
  readonly mode?: IsolationMode
}

const MODES: readonly IsolationMode[] = ['in-process', 'worker', 'process']

/** The operator's isolation annotation, or undefined when it runs in-process. */
export function isolationOf(operator: Operator): IsolationAnnotation | undefined {
  const annotation = operator.annotations.isolation
  return annotation === undefined || annotation.mode === 'in-process' ? undefined : annotation
}

/**
 * Runs every instance of `operator` in its own worker thread (the default mode) or child process,
 * rebuilt there from `options.from`. The isolation layer must be in the kernel's stack.
 *
 * ```ts
 * export const score = (args: { factor: number }) => atom({ name: 'score', inputs: { in: t.number }, outputs: { out: t.number }, on: { in: (n, ctx) => ctx.emit('out', n * args.factor) } })
 * const scored = isolate(score({ factor: 3 }), { from: { module: import.meta.url, export: 'score', args: { factor: 3 } }, memoryMb: 128, watchdogMs: 2000 })
 * const job = kernel.with(isolation()).run(program('p', { operators: [src, scored, out], links }))
 * ```
 */
export function isolate<I extends PortCodecs, O extends PortCodecs>(operator: Operator<I, O>, options: IsolateOptions = {}): Operator<I, O> {
  const annotation = checkAnnotation(operator.name, { ...options, mode: options.mode ?? 'worker' })
  if (annotation.mode !== 'in-process' && (operator as Operator).body.form !== 'atom') {
    throw new IsolationAnnotationError(operator.name, 'mode', `${annotation.mode} needs an atom-form operator (a stream-form body cannot be isolated)`)
  }
  return operator.annotate({ isolation: annotation })
}

/**
 * Imports `from` here, builds the operator, and annotates it to run isolated from that same
 * module: the operator is written once and the host and the isolated side agree on it.
 *
 * ```ts
 * const score = await isolated({ module: new URL('./ops.ts', import.meta.url).href, export: 'score', args: { factor: 3 } }, { mode: 'process', memoryMb: 256 })
 * ```
 *
 * @throws IsolationModuleError when the module does not load or its export builds no atom-form operator.
 */
export async function isolated(from: ModuleRef, options: Omit<IsolateOptions, 'from'> = {}): Promise<Operator> {
  const operator = await loadOperator(from, '(isolated)')
  return isolate(operator, { ...options, from })
}

/**
 * Imports a module reference and builds its operator (used by `isolated` on the host and by the
 * isolated side). Checks only that the result looks like an atom-form operator.
 */
export async function loadOperator(from: ModuleRef, operatorName: string): Promise<Operator> {
  const exportName = from.export ?? 'default'
  const fail = (reason: string): IsolationModuleError => new IsolationModuleError(operatorName, from.module, exportName, reason)
  let namespace: Record<string, unknown>
  try {
    namespace = (await import(moduleUrl(from.module))) as Record<string, unknown>
  } catch (error) {
    throw fail(`the module does not load: ${error instanceof Error ? error.message : String(error)}`)
  }
  if (!(exportName in namespace)) throw fail(`the module has no export "${exportName}" (it exports: ${Object.keys(namespace).join(', ') || 'nothing'})`)
  let built: unknown = namespace[exportName]
  if (typeof built === 'function') {
    try {
      built = await (built as (args: unknown) => unknown)(from.args)
    } catch (error) {
      throw fail(`the export threw: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  if (!isOperator(built)) throw fail('the export is neither an operator nor a function returning one')
  if (built.body.form !== 'atom') throw fail(`the operator ${built.name} has a ${built.body.form}-form body; only atom-form operators can be isolated`)
  return built
}

/** The URL to import for a module reference (file URLs pass through; absolute paths become file URLs). */
export function moduleUrl(module: string): string {
  return isAbsolute(module) ? pathToFileURL(module).href : module
}

function isOperator(value: unknown): value is Operator {
  if (typeof value !== 'object' || value === null) return false
  const candidate = value as Partial<Operator>
  return (
    typeof candidate.name === 'string' &&
    typeof candidate.body === 'object' &&
    candidate.body !== null &&
    typeof candidate.inputs === 'object' &&
    typeof candidate.outputs === 'object'
  )
}

/** Validates an annotation (throws IsolationAnnotationError naming the option) and returns a frozen copy. */
export function checkAnnotation(operator: string, annotation: IsolationAnnotation): IsolationAnnotation {
  const { mode, from, memoryMb, watchdogMs } = annotation
  if (!MODES.includes(mode)) throw new IsolationAnnotationError(operator, 'mode', `must be one of ${MODES.join(', ')}, got ${JSON.stringify(mode)}`)
  if (mode !== 'in-process') {
    if (from === undefined) throw new IsolationAnnotationError(operator, 'from', `is required for mode ${mode}: the module the isolated side rebuilds the operator from`)
    if (typeof from.module !== 'string' || from.module === '')
      throw new IsolationAnnotationError(operator, 'from.module', `must be a file URL or an absolute path, got ${JSON.stringify(from.module)}`)
    if (!from.module.startsWith('file:') && !isAbsolute(from.module)) {
      throw new IsolationAnnotationError(operator, 'from.module', `must be a file URL (e.g. import.meta.url) or an absolute path, got ${JSON.stringify(from.module)}`)
    }
    if (from.export !== undefined && (typeof from.export !== 'string' || from.export === ''))
      throw new IsolationAnnotationError(operator, 'from.export', `must be a non-empty string, got ${JSON.stringify(from.export)}`)
    if (from.args !== undefined) {
      try {
        JSON.stringify(from.args)
      } catch (error) {
        throw new IsolationAnnotationError(operator, 'from.args', `must be JSON: ${error instanceof Error ? error.message : String(error)}`)
      }
    }
  }
  if (memoryMb !== undefined && (typeof memoryMb !== 'number' || !Number.isFinite(memoryMb) || memoryMb < 8)) {
    throw new IsolationAnnotationError(operator, 'memoryMb', `must be a number of MiB of at least 8, got ${JSON.stringify(memoryMb)}`)
  }
  if (watchdogMs !== undefined && (typeof watchdogMs !== 'number' || Number.isNaN(watchdogMs) || watchdogMs < 0)) {
    throw new IsolationAnnotationError(operator, 'watchdogMs', `must be a number of milliseconds ≥ 0 (0 turns the watchdog off), got ${JSON.stringify(watchdogMs)}`)
  }
  return Object.freeze({ ...annotation, ...(from === undefined ? {} : { from: Object.freeze({ ...from }) }) })
}
