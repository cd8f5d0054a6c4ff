// The metadata layer: provenance that travels with every traced record (trace id, hops, lineage ids), lineage queries and trace export.

import { writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { InvalidOptionError, wrapInstance, type Header, type Instance, type InstanceSpec, type Layer } from '../../kernel/index.js'
import { type ChromeTrace, TraceLog, toChromeTrace } from './chrome-trace.js'
import { TraceExportError } from './errors.js'
import { isRecordMetadata, type Lineage, lineageOf, metadataIn, type RecordMetadata } from './record.js'
import { Sampler } from './sampler.js'
import { recordMetadata, registerCursor, unregisterCursor } from './sink.js'
import { InstanceTracer } from './instance-tracer.js'
import { SourceOutputs } from './source-outputs.js'
import type { TracerShared } from './tracer-shared.js'

/** Options of the metadata layer. All optional. */
export interface MetadataInit {
  /**
   * Fraction of source records traced, from 0 to 1. The decision is made at the source, by
   * `sampleBy`; every record derived from a traced record is traced. At 0 the layer adds no hook
   * that runs per instance or per record: records pass untouched (and records traced by other
   * peers lose their metadata here). @default 1
   */
  readonly sampling?: number
  /**
   * What the sampler picks, with probability `sampling` each:
   * - `batch`: whole source batches (one `emitAll`, or `batchSize` records emitted one by one).
   *   What tracing costs comes per batch that carries any traced record (header arrays, handing
   *   the instance its traced records apart), so at 1% this costs about 1% of tracing everything;
   * - `record`: each record alone, independently. At low rates nearly every batch then carries a
   *   traced record, so it costs several times more than `batch` at the same rate.
   * @default 'batch'
   */
  readonly sampleBy?: 'batch' | 'record'
  /** Seed of the sampling decisions: the same seed traces the same records on every run. @default 0 */
  readonly seed?: number
  /**
   * The name hops give this peer (a function is asked each time an instance starts, so it may
   * return an id known only once the peer is up). @default the instance's peer id on a cluster (`InstanceInfo.peer`), else `${hostname()}/${process.pid}`
   */
  readonly peer?: string | (() => string)
  /** Source lineage ids a record, or a key's lineage, keeps; further ones are counted in `dropped`. @default 32 */
  readonly maxInputs?: number
  /** Hops a record keeps (the first and the most recent). @default 64 */
  readonly maxHops?: number
  /**
   * Keys of one keyed operator instance whose lineage is kept apart; further keys share one
   * lineage, marked `approximate`. Memory per instance is about maxKeys × maxInputs ids. @default 10000
   */
  readonly maxKeys?: number
  /** Hop events kept for the trace export (the oldest go first). @default 100000 */
  readonly maxEvents?: number
}

/** Counters of a metadata layer, over every job it ran. */
export interface MetadataStats {
  /** Records emitted by source instances. */
  readonly records: number
  /** Of those, records traced. */
  readonly sampled: number
  /** Hop events kept for export. */
  readonly events: number
  /** Hop events dropped by `maxEvents`. */
  readonly droppedEvents: number
}

/** Options of `toChromeTrace` and `exportTrace`. */
export interface TraceOptions {
  /** Only this job's hops. @default every job's */
  readonly job?: string
}

/** The metadata layer: a `Layer`, plus queries on what it traced. */
export interface MetadataLayer extends Layer {
  readonly name: 'metadata'
  /** The sampling rate in force. */
  readonly sampling: number
  /**
   * Which inputs and operators produced a record: pass its header, its metadata, or (for object
   * values a sink of a job under this layer received) the value itself. Undefined when the record
   * was not traced.
   */
  lineage(record: unknown): Lineage | undefined
  /** The metadata of an object value that a sink received, while the value lives (a WeakMap). */
  metadataOf(value: unknown): RecordMetadata | undefined
  /** The hops traced so far as a Chrome trace (load it in Perfetto or chrome://tracing). */
  toChromeTrace(options?: TraceOptions): ChromeTrace
  /** Writes `toChromeTrace()` as JSON to `path`. Rejects with TraceExportError. */
  exportTrace(path: string, options?: TraceOptions & { readonly signal?: AbortSignal }): Promise<void>
  stats(): MetadataStats
  /** Forgets the hop events kept for export. */
  clear(): void
}

/**
 * The metadata layer. Sources give each record a lineage id; the records the sampler picks carry,
 * in `Header.fields.metadata`, a trace id, the hops they went through (operator, instance, peer,
 * time) and the lineage ids of the source records that produced them, through stateless operators
 * (map, filter, flatMap), keyed aggregates (the lineage of every traced record of the key) and
 * across peers (the fields travel in DATA frames).
 *
 * ```ts
 * const tracing = metadata({ sampling: 0.01, seed: 7 })
 * const rows: [number, RecordMetadata | undefined][] = []
 * await kernel.with(tracing).run(program('p', { operators: [src, double, tracedSink('out', t.number, (v, m) => rows.push([v, m]))], links })).done
 * tracing.lineage(rows[0][1])   // { inputs: ['src#0:0'], operators: [src#0, double#0, out#0] … }
 * await tracing.exportTrace('trace.json')
 * ```
 */
export function metadata(init: MetadataInit = {}): MetadataLayer {
  const sampling = init.sampling ?? 1
  if (typeof sampling !== 'number' || !(sampling >= 0 && sampling <= 1))
    throw new InvalidOptionError('metadata layer', 'sampling', `must be a number from 0 to 1, got ${String(sampling)}`)
  const sampleBy = init.sampleBy ?? 'batch'
  if (sampleBy !== 'batch' && sampleBy !== 'record') throw new InvalidOptionError('metadata layer', 'sampleBy', `must be 'batch' or 'record', got ${String(sampleBy)}`)
  const seed = init.seed ?? 0
  if (!Number.isFinite(seed)) throw new InvalidOptionError('metadata layer', 'seed', `must be a finite number, got ${String(seed)}`)
  const bound = (option: 'maxInputs' | 'maxHops' | 'maxKeys' | 'maxEvents', fallback: number, least: number): number => {
    const value = init[option] ?? fallback
    if (!Number.isInteger(value) || value < least) throw new InvalidOptionError('metadata layer', option, `must be an integer of at least ${least}, got ${String(value)}`)
    return value
  }
  const maxInputs = bound('maxInputs', 32, 1)
  const maxHops = bound('maxHops', 64, 2)
  const maxKeys = bound('maxKeys', 10_000, 0)
  const log = new TraceLog(bound('maxEvents', 100_000, 0))
  // The instance's own peer id when the kernel knows it (a deployed job), else this process.
  const fallback = `${hostname()}/${process.pid}`
  const peerOption = init.peer
  const peerName = (info: { readonly peer?: string }): string => (typeof peerOption === 'function' ? peerOption() : (peerOption ?? info.peer ?? fallback))
  const received = new WeakMap<object, RecordMetadata>()
  const counts = { records: 0, sampled: 0 }

  const shared = (info: { readonly peer?: string }): TracerShared => ({
    peer: peerName(info),
    maxInputs,
    maxHops,
    maxKeys,
    log,
    counts,
    remember: (value, m) => void received.set(value, m),
  })

  const instance = (spec: InstanceSpec, next: (spec: InstanceSpec) => Instance): Instance => {
    const operator = spec.operator
    if (Object.keys(operator.inputs).length === 0) {
      const outputs = new SourceOutputs(spec.outputs, spec.info, shared(spec.info), new Sampler(sampling, seed, spec.info.operator, spec.info.instance), sampleBy === 'record')
      const inner = next({ ...spec, outputs })
      return wrapInstance(inner, { end: () => after(inner.end(), () => outputs.close()) })
    }
    const tracer = new InstanceTracer(spec.outputs, spec.info, operator, shared(spec.info), spec.observer)
    const inner = next({ ...spec, outputs: tracer, observer: tracer.observer })
    registerCursor(spec.info, tracer)
    return wrapInstance(inner, {
      process: (port, batch) => tracer.process(inner, port, batch),
      end: () => after(tracer.end(inner), () => unregisterCursor(spec.info)),
    })
  }

  const metadataOf = (value: unknown): RecordMetadata | undefined =>
    (typeof value === 'object' && value !== null) || typeof value === 'function' ? received.get(value) : undefined

  const trace = (options?: TraceOptions): ChromeTrace => {
    const events = log.list()
    return toChromeTrace(options?.job === undefined ? events : events.filter((e) => e.job === options.job), log.dropped)
  }

  return {
    name: 'metadata',
    sampling,
    // At 0 nothing is sampled: no instance is wrapped, no record is looked at.
    ...(sampling > 0 ? { instance } : {}),
    control(registry) {
      const job = registry.job.id
      registry.handle('metadata.trace', () => trace({ job }))
      registry.syscall('metadata.current', (_argument, caller) => recordMetadata({ info: caller }))
    },
    lineage(record) {
      if (isRecordMetadata(record)) return lineageOf(record)
      const fromHeader = typeof record === 'object' && record !== null && 'fields' in record ? metadataIn(record as Header) : undefined
      const m = fromHeader ?? metadataOf(record)
      return m === undefined ? undefined : lineageOf(m)
    },
    metadataOf,
    toChromeTrace: trace,
    async exportTrace(path, options) {
      const json = JSON.stringify(trace(options))
      try {
        await writeFile(path, json, options?.signal === undefined ? {} : { signal: options.signal })
      } catch (error) {
        throw new TraceExportError(path, error)
      }
    },
    stats: () => ({ records: counts.records, sampled: counts.sampled, events: log.list().length, droppedEvents: log.dropped }),
    clear: () => log.clear(),
  }
}

/** Runs `then` after `result` settles (at once when it is not a promise), keeping its outcome. */
function after(result: void | Promise<void>, then: () => void): void | Promise<void> {
  if (result === undefined) return then()
  return Promise.resolve(result).finally(then)
}
