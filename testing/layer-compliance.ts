// The layer compliance suite: what every layer must keep true, as vitest tests a layer author runs in one line.
// (As js-libp2p's interface-compliance-tests do for transports: one suite per contract, every implementation runs it.)

import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  instanceOfKey,
  kernel,
  wrapChannel,
  type Batch,
  type Channel,
  type ChannelInfo,
  type Instance,
  type JobReport,
  type JobView,
  type Layer,
  type Operator,
  type StateSnapshot,
} from '../kernel/index.js'
import { COMPLIANCE_MODULE, complianceProgram, expectedTotals, KEYS, type ComplianceOperator, type ComplianceOutput } from './compliance-program.js'
import { FakeChannel, channelInfo } from './fake-channel.js'
import { runOnTwoPeers, type PeerId } from './two-peers.js'

/** What a layer factory is given for one run of the suite. */
export interface ComplianceContext {
  /** A fresh directory for the layer's durable state (a store, files), removed after the suite. */
  readonly dir: string
  /** The peer the stack is built for: `local` in-process, `A` or `B` across a remote link. */
  readonly peer: string
}

/**
 * Builds the layer under test, fresh for each run (and for each peer). It may return the layer
 * together with the layers it requires, e.g. `[checkpoints({ dir }), elasticity()]`.
 */
export type LayerFactory = (context: ComplianceContext) => Layer | readonly Layer[]

/** Where the isolated side of a layer can rebuild one of the suite's operators: the module and its export (a function of no arguments). */
export interface ComplianceOperatorSource {
  readonly module: string
  readonly export: ComplianceOperator
}

/** Options of `describeLayerCompliance`. All optional. */
export interface LayerComplianceOptions {
  /**
   * Rewrites the suite's two transforming operators (`relay`, stateless; `tally`, keyed and
   * stateful) before each run, keeping their names and ports: to annotate them for the layer
   * under test (`(op, from) => isolate(op, { from })`). @default unchanged
   */
  readonly prepare?: (operator: Operator, from: ComplianceOperatorSource) => Operator
  /** Numbers the source emits in each run. @default 2000 */
  readonly records?: number
  /** Milliseconds a run of the program may take. @default 30000 */
  readonly timeoutMs?: number
}

/** The marker kind the suite injects at the source while it runs. */
export const COMPLIANCE_MARKER = 'compliance'

/** Records per batch in the suite's runs: small, so markers fall between many batches. */
const BATCH_SIZE = 16
/** A marker is injected after every this many data batches the source sends. */
const MARKER_EVERY = 8

/**
 * Declares the layer compliance suite for a layer (vitest `describe` and `it` inside). It runs a
 * small keyed program (a source, a stateless relay and a keyed tally at parallelism 2, two sinks)
 * under the layer, in-process and split over two peers joined by a remote link (the in-memory frame
 * channel of memory-transport.ts under the kernel's remote adapter), and checks that:
 * - the program runs to the end with every record delivered once and the right totals;
 * - records pass through unchanged: on every channel, the consumer takes exactly the values the
 *   producer sent, in the same order;
 * - markers keep their order relative to the data, on every channel and end to end (what came
 *   before a marker at the source comes before it at the sink);
 * - snapshot then restore round-trips state: a second run restoring every instance's final
 *   snapshot resumes where the first stopped (the source emits nothing more, the totals are the
 *   same) and ends with the same snapshots;
 * - dispose is idempotent: on an instance never started and on every finished one.
 * A layer with a channel hook is also checked on a fake channel.
 *
 * ```ts
 * describeLayerCompliance('my-layer', () => myLayer())
 * ```
 */
export function describeLayerCompliance(name: string, factory: LayerFactory, options: LayerComplianceOptions = {}): void {
  const records = options.records ?? 2000
  const timeoutMs = options.timeoutMs ?? 30_000
  describe(`layer compliance: ${name}`, () => {
    let root = ''
    let runs = 0
    const context = async (peer: string): Promise<ComplianceContext> => ({ peer, dir: await mkdtemp(join(root, `run-${++runs}-${peer}-`)) })
    beforeAll(async () => {
      root = await mkdtemp(join(tmpdir(), 'lamina-compliance-'))
    })
    afterAll(async () => {
      if (root !== '') await rm(root, { recursive: true, force: true })
    })

    for (const where of ['in-process', 'across a remote link'] as const) {
      describe(where, () => {
        let first: RunRecord | undefined
        let second: RunRecord | undefined
        const run = async (restore: ReadonlyMap<string, StateSnapshot> | undefined): Promise<RunRecord> => {
          const witness = new Witness(restore)
          const output: ComplianceOutput = { seen: [], totals: [] }
          const prepare = (operator: Operator, op: ComplianceOperator): Operator => options.prepare?.(operator, { module: COMPLIANCE_MODULE, export: op }) ?? operator
          const program = complianceProgram(records, output, prepare)
          const id = `compliance-${name}-${++runs}`
          const signal = AbortSignal.timeout(timeoutMs)
          const runOptions = { batchSize: BATCH_SIZE, capacity: 64, signal }
          if (where === 'in-process') {
            const layers = toArray(factory(await context('local')))
            const report = await kernel.with(witness.layer('local'), ...layers).run(program, { ...runOptions, id }).done
            return { witness, output, reports: [report], crossing: 0 }
          }
          const contexts = { A: await context('A'), B: await context('B') }
          const result = await runOnTwoPeers({
            id,
            program,
            layers: (peer) => [witness.layer(peer), ...toArray(factory(contexts[peer]))],
            split: SPLIT,
            workDir: (peer) => contexts[peer].dir,
            run: runOptions,
          })
          return { witness, output, reports: [result.reports.A, result.reports.B], crossing: result.crossing }
        }
        beforeAll(
          async () => {
            first = await run(undefined)
            second = await run(first.witness.snapshots())
          },
          timeoutMs * 2 + 10_000,
        )
        const runsOf = (): { first: RunRecord; second: RunRecord } => {
          // The runs failed in beforeAll (vitest reports why there); each test then says so too.
          if (first === undefined || second === undefined) throw new Error(`the compliance runs of ${name} did not complete (see the beforeAll error)`)
          return { first, second }
        }

        it('runs the program to the end: every record delivered once, the right totals, no dead letters', () => {
          const { first } = runsOf()
          expect(first.output.seen.map(([, , n]) => n).sort((a, b) => a - b)).toEqual(Array.from({ length: records }, (_, i) => i))
          expect(sortRows(first.output.totals)).toEqual(expectedTotals(records))
          expect(first.reports.flatMap((r) => r.deadLetters.map((d) => `${d.code}: ${d.message}`))).toEqual([])
          // Every record went through a relay instance and the tally instance that owns its key.
          expect(first.output.seen.filter(([r, t, n]) => (r !== 0 && r !== 1) || t !== instanceOfKey(n % KEYS, 2))).toEqual([])
          if (where === 'across a remote link') expect(first.crossing, 'channels crossing between the two peers').toBeGreaterThan(0)
        })

        it('passes records through unchanged: each channel delivers the values sent on it, in order', () => {
          const { first } = runsOf()
          const channels = first.witness.channels()
          expect(channels.size).toBeGreaterThanOrEqual(8)
          for (const [key, { sent, taken }] of channels) {
            expect(taken.filter(isValue), `values taken on ${key}`).toEqual(sent.filter(isValue))
          }
          // End to end, per pair of relay and tally instances, numbers arrive in the order the source sent them.
          const byPair = new Map<string, number[]>()
          for (const [r, t, n] of first.output.seen) byPair.set(`${r}/${t}`, [...(byPair.get(`${r}/${t}`) ?? []), n])
          for (const [pair, ns] of byPair) expect(ns, `numbers through relay/tally ${pair}`).toEqual([...ns].sort((a, b) => a - b))
        })

        it('keeps markers in order with the data, on every channel and from source to sink', () => {
          const { first } = runsOf()
          expect(first.witness.injected, 'markers the source took').toBeGreaterThan(0)
          for (const [key, { sent, taken }] of first.witness.channels()) expect(taken, `values and markers taken on ${key}`).toEqual(sent)
          // What the source sent before a marker is what the sink took before it (markers are aligned on the way).
          const valuesBefore = (from: (key: string) => boolean, id: string): number[] => {
            const values: number[] = []
            for (const [key, { taken }] of first.witness.channels()) {
              if (!from(key)) continue
              const at = taken.indexOf(id)
              if (at < 0) return [Number.NaN] // the marker never came on this channel
              for (const item of taken.slice(0, at)) if (isValue(item)) values.push(numberIn(JSON.parse(item) as unknown))
            }
            return values.sort((a, b) => a - b)
          }
          // Markers that reached the sink on each of its inputs (markers of different kinds align
          // independently, but where two kinds cross with data between them an instance gives up the
          // younger one: the kernel's alignment rule, kernel/runtime/driver.ts).
          const intoSink = [...first.witness.channels()].filter(([key]) => key.includes('-> seen.in')).map(([, c]) => c.taken)
          const arrived = [...new Set(intoSink.flat().filter((i) => i.startsWith(`marker ${COMPLIANCE_MARKER}#`)))].filter((id) => intoSink.every((taken) => taken.includes(id)))
          expect(arrived.length, 'markers that reached the sink on every input').toBeGreaterThan(0)
          for (const id of arrived) {
            expect(
              valuesBefore((key) => key.includes('-> seen.in'), id),
              `numbers before ${id} at the sink`,
            ).toEqual(valuesBefore((key) => key.startsWith('numbers.out'), id))
          }
        })

        it('round-trips state: restoring every final snapshot resumes where the run stopped and keeps the same state', () => {
          const { first, second } = runsOf()
          expect(second.witness.restored, 'instances restored').toBe(first.witness.snapshots().size)
          // The source resumed at its end (nothing more to send), and the tally's state gave the same totals.
          expect(second.output.seen).toEqual([])
          expect(sortRows(second.output.totals)).toEqual(expectedTotals(records))
          const normal = (snapshots: ReadonlyMap<string, StateSnapshot>): Record<string, string[]> =>
            Object.fromEntries([...snapshots].map(([key, s]) => [key, s.entries.map((e) => JSON.stringify(e)).sort()]))
          expect(normal(second.witness.snapshots())).toEqual(normal(first.witness.snapshots()))
          expect(second.reports.flatMap((r) => r.deadLetters.map((d) => `${d.code}: ${d.message}`))).toEqual([])
        })

        it('disposes idempotently: twice on an instance never started, twice on every finished one', () => {
          const { first } = runsOf()
          expect(first.witness.spareErrors).toEqual([])
          expect(first.witness.spares).toBe(first.witness.instances.size)
          const errors: string[] = []
          for (const [key, instance] of first.witness.instances) {
            try {
              instance.dispose?.()
              instance.dispose?.()
            } catch (error) {
              errors.push(`${key}: ${error instanceof Error ? error.message : String(error)}`)
            }
          }
          expect(errors).toEqual([])
        })
      })
    }

    it('a channel hook passes batches, markers and the end through unchanged (on a fake channel)', async (test) => {
      const layers = toArray(factory(await context('local')))
      const hooked = layers.filter((l) => l.channel !== undefined)
      if (hooked.length === 0) return test.skip(`${name} has no channel hook`)
      const fake = new FakeChannel({ loopback: true, credit: 3, info: channelInfo({ job: `compliance-${name}-fake`, from: 'relay', to: 'tally' }) })
      // The stack's channel hooks over the fake, innermost last, as the kernel composes them.
      const wrapped = hooked.reduceRight<Channel>((inner, layer) => layer.channel!(inner, (c) => c) as Channel, fake)
      expect(typeof wrapped.send === 'function' && typeof wrapped.take === 'function', 'the hook keeps both ends of an in-process channel').toBe(true)
      const sent: Batch[] = [
        { values: [[0, 1]] },
        { values: [], marker: { kind: COMPLIANCE_MARKER, id: 1 } },
        {
          values: [
            [1, 2],
            [0, 3],
          ],
        },
      ]
      for (const batch of sent) wrapped.send(batch)
      expect(fake.sentValues()).toEqual([
        [0, 1],
        [1, 2],
        [0, 3],
      ])
      expect(fake.sentMarkers()).toEqual([{ kind: COMPLIANCE_MARKER, id: 1 }])
      expect(wrapped.ready()).toBe(false)
      fake.grant(3)
      expect(wrapped.ready()).toBe(true)
      wrapped.end()
      const taken: unknown[] = []
      for (let batch = wrapped.take(); batch !== undefined && batch !== 'end'; batch = wrapped.take()) taken.push(batch.marker ?? batch.values)
      expect(taken).toEqual([
        [[0, 1]],
        { kind: COMPLIANCE_MARKER, id: 1 },
        [
          [1, 2],
          [0, 3],
        ],
      ])
      expect(wrapped.take()).toBe('end')
    })
  })
}

/** Where each instance runs across the remote link when no placement layer decided: every link crosses. */
function SPLIT(operator: string, instance: number): PeerId {
  if (operator === 'relay') return instance === 0 ? 'A' : 'B'
  if (operator === 'tally') return instance === 0 ? 'B' : 'A'
  return operator === 'seen' ? 'B' : 'A'
}

function toArray(layers: Layer | readonly Layer[]): readonly Layer[] {
  return Array.isArray(layers) ? (layers as readonly Layer[]) : [layers as Layer]
}

function sortRows<T extends readonly number[]>(rows: readonly T[]): T[] {
  return [...rows].sort((a, b) => a[0]! - b[0]!)
}

/** The number a value of the program carries: a source number, or the last field of a relay or tally tuple. */
function numberIn(value: unknown): number {
  return Array.isArray(value) ? (value.at(-1) as number) : (value as number)
}

function isValue(item: string): boolean {
  return !item.startsWith('marker ') && item !== 'end'
}

/** What one run of the compliance program left behind. */
interface RunRecord {
  readonly witness: Witness
  readonly output: ComplianceOutput
  readonly reports: readonly JobReport[]
  readonly crossing: number
}

/**
 * The suite's own layer, outermost in every stack: it records what producers send and consumers
 * take on each channel (around everything the layer under test does to channels), injects markers
 * at the source as it sends, keeps the instances the layers below built, builds and disposes a
 * spare of each, and restores snapshots into the instances of a second run.
 */
class Witness {
  /** Per channel (`link from->to`): what the producer sent and the consumer took, as `JSON value`, `marker kind#id` and `end`. */
  private readonly log = new Map<string, { sent: string[]; taken: string[] }>()
  /** The instances built under the witness (the layer under test's wrappers included), by `operator#instance`. */
  readonly instances = new Map<string, Instance>()
  readonly spareErrors: string[] = []
  spares = 0
  injected = 0
  restored = 0
  private markerId = 0

  constructor(private readonly restore: ReadonlyMap<string, StateSnapshot> | undefined) {}

  channels(): ReadonlyMap<string, { readonly sent: readonly string[]; readonly taken: readonly string[] }> {
    return this.log
  }

  /** Every instance's state now (after the run: its final state). */
  snapshots(): Map<string, StateSnapshot> {
    return new Map([...this.instances].map(([key, instance]) => [key, instance.snapshot()]))
  }

  layer(peer: string): Layer {
    let job: JobView | undefined
    let sourceBatches = 0
    const entry = (channel: { readonly info: ChannelInfo }): { sent: string[]; taken: string[] } => {
      const key = `${channel.info.link.id} ${channel.info.from.instance}->${channel.info.to.instance}`
      let found = this.log.get(key)
      if (found === undefined) this.log.set(key, (found = { sent: [], taken: [] }))
      return found
    }
    const items = (batch: Batch): string[] => (batch.marker !== undefined ? [`marker ${batch.marker.kind}#${batch.marker.id}`] : batch.values.map((v) => JSON.stringify(v)))
    return {
      name: `compliance-witness@${peer}`,
      control: (registry) => {
        job = registry.job
      },
      channel: (channel, next) => {
        const inner = next(channel)
        const log = entry(channel)
        const fromSource = channel.info.from.operator === 'numbers'
        // The end a hook is given sends, takes, or both (in-process): wrap what it does.
        const sender = 'send' in inner ? inner : undefined
        const receiver = 'take' in inner ? inner : undefined
        let ended = false
        return wrapChannel(inner, {
          send: (batch) => {
            log.sent.push(...items(batch))
            sender?.send(batch)
            if (fromSource && batch.marker === undefined && batch.values.length > 0 && ++sourceBatches % MARKER_EVERY === 0) {
              this.injected += job?.inject({ kind: COMPLIANCE_MARKER, id: ++this.markerId }) ?? 0
            }
          },
          end: () => {
            log.sent.push('end')
            sender?.end()
          },
          take: () => {
            const batch = receiver?.take()
            if (batch === 'end' && !ended) {
              ended = true
              log.taken.push('end')
            } else if (typeof batch === 'object') log.taken.push(...items(batch))
            return batch
          },
        })
      },
      instance: (spec, next) => {
        const key = `${spec.info.operator}#${spec.info.instance}`
        // A spare built and thrown away before it starts, as a supervisor replacing an instance would.
        try {
          const spare = next(spec)
          this.spares++
          spare.dispose?.()
          spare.dispose?.()
        } catch (error) {
          this.spareErrors.push(`${key}: ${error instanceof Error ? error.message : String(error)}`)
        }
        const instance = next(spec)
        const snapshot = this.restore?.get(key)
        if (snapshot !== undefined) {
          instance.restore(snapshot)
          this.restored++
        }
        this.instances.set(key, instance)
        return instance
      },
    }
  }
}
