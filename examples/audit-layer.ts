// A runtime layer of your own: `audit()` counts the records every operator takes and emits, and
// reports the counts as layer events and through a control message. Written only against the
// public layer API of `lamina`, as the built-in layers are (docs/guide-layers.md walks through it).
//
//   node --import tsx examples/audit-layer.ts              in one process: the program's result, then the counts
//   lamina run examples/audit-layer.ts --peers 3 -- 50000  on three peer processes: the counts arrive as layer events
//
// The program it audits is small: the sum of the squares of the multiples of 3 below N.

import { pathToFileURL } from 'node:url'
import {
  atom,
  filter,
  kernel,
  LaminaError,
  layerEvent,
  link,
  map,
  program,
  sink,
  source,
  t,
  wrapInstance,
  type ControlRegistry,
  type Layer,
  type LayerEventKind,
  type Outputs,
  type Program,
} from 'lamina'
import { checkpoints, placement } from 'lamina/layers'

/** Records one operator took and emitted (over its instances on the peers asked). */
export interface OperatorCounts {
  readonly recordsIn: number
  readonly recordsOut: number
}

/** Counts by operator name. */
export type AuditCounts = Readonly<Record<string, OperatorCounts>>

/** What a `counted` event carries: one instance's counts, once it ended. */
export interface InstanceCounts extends OperatorCounts {
  readonly operator: string
  readonly instance: number
}

/** The `layer` events the audit layer reports on `job.events` (and on a cluster job's events). */
export const AUDIT_EVENTS: { readonly counted: LayerEventKind<InstanceCounts>; readonly totals: LayerEventKind<AuditCounts> } = Object.freeze({
  /** An instance ended: what it took and emitted. */
  counted: layerEvent<InstanceCounts>('counted', { layer: 'audit' }),
  /** A cluster job succeeded: the counts of all its peers, summed (on the submitter). */
  totals: layerEvent<AuditCounts>('totals', { layer: 'audit' }),
})

/**
 * The control message kind that reads the counts: `job.control(AUDIT)` sums them over every peer
 * of the job; the payload `{ scope: 'peer' }` asks for this peer's alone.
 */
export const AUDIT = 'audit'

/** Options of `audit`. */
export interface AuditInit {
  /** Report a `counted` event as each instance ends. @default true */
  readonly events?: boolean
}

/** Thrown when the audit layer is asked to wrap an instance of a job its control hook was not called for. */
export class AuditError extends LaminaError {
  readonly code = 'ERR_AUDIT'
  override readonly name = 'AuditError'
}

/** Adds two sets of counts. */
function sum(a: AuditCounts, b: AuditCounts): AuditCounts {
  const out: Record<string, OperatorCounts> = { ...a }
  for (const [operator, c] of Object.entries(b)) {
    const seen = out[operator] ?? { recordsIn: 0, recordsOut: 0 }
    out[operator] = { recordsIn: seen.recordsIn + c.recordsIn, recordsOut: seen.recordsOut + c.recordsOut }
  }
  return out
}

/** One job's share on one peer: its counts, and how to report. */
interface Share {
  readonly counts: Map<string, { recordsIn: number; recordsOut: number }>
  readonly notify: ControlRegistry['notify']
}

/**
 * The audit layer. Its instance hook wraps every operator instance: `process` counts the records
 * each batch brings in, and the `outputs` it hands the layers below count what the instance emits.
 * Its control hook, which runs once per job on every peer of it, keeps that job's counts and
 * answers `job.control(AUDIT)`. The counts belong to this layer value, never to the module: two
 * stacks share nothing.
 *
 * It sits below `checkpoints` (`after`), so a sink's records count when a checkpoint commits them
 * to the sink, not when they arrive to be staged; and above `isolation` (`before`), so an isolated
 * operator's records count on its peer, where the layer can see them.
 *
 * ```ts
 * const job = kernel.with(audit(), checkpoints()).run(squares({ below: 1000, out: console.log }))
 * await job.done
 * console.log(await job.control(AUDIT))   // { numbers: { recordsIn: 0, recordsOut: 1000 }, … }
 * ```
 */
export function audit(init: AuditInit = {}): Layer {
  const events = init.events ?? true
  // Shares of running jobs, by job and peer (one job id runs on several peers in one process in tests).
  const shares = new Map<string, Share>()
  const shareKey = (job: string, peer: string): string => `${job}\u0000${peer}`

  return {
    name: 'audit',
    after: ['checkpoints'],
    before: ['isolation'],
    control(registry: ControlRegistry) {
      const key = shareKey(registry.job.id, registry.cluster.self)
      const share: Share = { counts: new Map(), notify: (kind, message, data) => registry.notify(kind, message, data) }
      shares.set(key, share)
      const local = (): AuditCounts => Object.fromEntries([...share.counts].map(([operator, c]) => [operator, { ...c }]))
      // The whole job: this peer's counts plus every other peer's, asked over the control protocol.
      const total = async (): Promise<AuditCounts> => {
        let counts = local()
        for (const peer of registry.cluster.peers()) {
          if (peer !== registry.cluster.self) counts = sum(counts, (await registry.cluster.call(peer, AUDIT, { scope: 'peer' })) as AuditCounts)
        }
        return counts
      }
      registry.handle(AUDIT, (payload) => ((payload as { scope?: unknown } | undefined)?.scope === 'peer' ? local() : total()))
      // On a cluster, once the job succeeded (its shares still reachable): the totals, as a layer event.
      registry.onSucceeded(async () => {
        const counts = await total()
        return { kind: AUDIT_EVENTS.totals.kind, message: formatCounts(counts), data: counts }
      })
      // The handler keeps its counts for `job.control` after the end; the instance hook needs them no longer.
      const forget = (): void => void shares.delete(key)
      registry.job.events.subscribe({ next: (event) => (event.type === 'finished' || event.type === 'failed' ? forget() : undefined), complete: forget })
    },
    instance(spec, next) {
      const share = shares.get(shareKey(spec.info.job, spec.info.peer ?? 'local'))
      // The kernel calls every layer's control hook before it builds a job's instances.
      if (share === undefined) throw new AuditError(`no share of job ${spec.info.job} here for ${spec.info.operator}#${spec.info.instance}: its control hook did not run`)
      const { operator, instance } = spec.info
      let counts = share.counts.get(operator)
      if (counts === undefined) share.counts.set(operator, (counts = { recordsIn: 0, recordsOut: 0 }))
      const mine = { recordsIn: 0, recordsOut: 0 }
      const inner = spec.outputs
      const outputs: Outputs = {
        emit: (port, value, header) => {
          counts.recordsOut++
          mine.recordsOut++
          inner.emit(port, value, header)
        },
        emitAll: (port, values) => {
          counts.recordsOut += values.length
          mine.recordsOut += values.length
          if (inner.emitAll !== undefined) inner.emitAll(port, values)
          else for (const value of values) inner.emit(port, value)
        },
      }
      const built = next({ ...spec, outputs })
      return wrapInstance(built, {
        process: (port, batch) => {
          counts.recordsIn += batch.values.length
          mine.recordsIn += batch.values.length
          return built.process(port, batch)
        },
        end: async () => {
          await built.end()
          if (events) share.notify(AUDIT_EVENTS.counted.kind, `${operator}#${instance}: in ${mine.recordsIn}, out ${mine.recordsOut}`, { operator, instance, ...mine })
        },
      })
    },
  }
}

/** Counts as one line: `numbers in 0 out 1000, multiples in 1000 out 334, …`. */
export function formatCounts(counts: AuditCounts): string {
  return Object.entries(counts)
    .map(([operator, c]) => `${operator} in ${c.recordsIn} out ${c.recordsOut}`)
    .join(', ')
}

/** Options of the audited program. */
export interface SquaresOptions {
  /** The numbers are 0 … below - 1. */
  readonly below: number
  /** Where the result line goes. */
  readonly out: (line: string) => unknown
}

/** The program the example audits: numbers -> multiples (of 3) -> squares (x2) -> total -> print. */
export function squares(options: SquaresOptions): Program {
  const numbers = source('numbers', t.number, (part) => range(part.instance, part.parallelism, options.below), { annotations: { parallelism: 2 } })
  const multiples = filter('multiples', t.number, (n) => n % 3 === 0)
  const squared = map('squares', t.number, t.number, (n) => n * n, { parallelism: 2 })
  const total = atom({
    name: 'total',
    inputs: { in: t.number },
    outputs: { out: t.string },
    state: { codec: t.number, init: () => 0 },
    on: { in: (n, ctx) => void ctx.state.update((s) => s + n) },
    end: (ctx) => ctx.emit('out', `sum of the squares of the multiples of 3 below ${options.below}: ${ctx.state.get()}`),
  })
  const print = sink('print', t.string, options.out)
  return program('squares', {
    operators: [numbers, multiples, squared, total, print],
    links: [
      link(numbers.outputs.out, multiples.inputs.in),
      link(multiples.outputs.out, squared.inputs.in),
      link(squared.outputs.out, total.inputs.in),
      link(total.outputs.out, print.inputs.in),
    ],
  })
}

/** The numbers below `end` one source instance reads: its stride. */
function* range(first: number, stride: number, end: number): Generator<number> {
  for (let n = first; n < end; n += stride) yield n
}

/**
 * The layers `lamina run` stacks on every peer: the audit layer with two built-in ones. Declared
 * first, it still sits below checkpoints, as its `after` says (`kernel.with(...layers).describe()`
 * is `['placement', 'checkpoints', 'audit']`).
 */
export const layers: Layer[] = [audit(), placement(), checkpoints({ intervalMs: 500 })]

/** The program module `lamina run examples/audit-layer.ts [-- N]` deploys. */
export default function build(args: readonly string[]): Program {
  return squares({ below: Number(args[0] ?? 10_000), out: (line) => void process.stdout.write(`${line}\n`) })
}

async function main(argv: readonly string[]): Promise<void> {
  const below = Number(argv[0] ?? 10_000)
  // In one process, under the audit layer alone (placement and checkpoints are for clusters).
  const job = kernel.with(audit({ events: false })).run(squares({ below, out: (line) => void process.stdout.write(`${line}\n`) }))
  await job.done
  process.stdout.write(`audit: ${formatCounts((await job.control(AUDIT)) as AuditCounts)}\n`)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`audit-layer: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  })
}
