// The tracer of one instance of an operator with inputs: ties each output to the input records it came from, and writes that provenance into the output's header.
//
// The kernel calls handlers one record at a time but does not show them the record's header, and
// an instance emits through `spec.outputs`. So the tracer sits on both sides of the instance. It
// watches the kernel's record loop (`InstanceSpec.observer`): before each record of a traced batch
// the kernel tells it the record's index and key, and it makes that record's metadata the one
// emissions derive from. And it is the instance's `outputs`, so every emission made meanwhile is
// stamped with that metadata. Batches without traced records pass with one check per batch. Stream
// bodies get their traced records pushed apart instead; batch handlers see a whole batch, so their
// outputs derive from all its traced records. Emissions outside a batch (`end`, timers) take the
// lineage kept per key (keyed operators) or per instance (other stateful operators). An operator
// isolated in a worker thread or child process is watched the same way: the isolation layer
// replays its record loop on the host.

import type { AtomObserver, Batch, Header, Instance, InstanceInfo, Key, Operator, Outputs, RecordHook } from '../../kernel/index.js'
import type { HopEvent } from './chrome-trace.js'
import { KeptLineage } from './kept-lineage.js'
import { Accumulator, appendHop, type Hop, metadataIn, now, OpenHop, type RecordMetadata, withMetadata } from './record.js'
import type { TracerShared } from './tracer-shared.js'

/** What the instance is doing, which decides what an emission derives from. */
// biome-ignore lint/suspicious/noConstEnum: tsc inlines these in the per-record path; the enum never leaves this file.
const enum Mode {
  /** Outside any batch: start, run, end, timers. */
  Free,
  /** Handling a batch with no traced record. */
  Plain,
  /** Handling a batch with traced records: emissions derive from `record`. */
  Record,
}

/** What an emission during a traced record derives from. */
// biome-ignore lint/suspicious/noConstEnum: as Mode above.
const enum Attribution {
  /** The record itself (stateless operators, stream bodies, batch handlers). */
  Record,
  /** Every traced record of the record's key so far (keyed operators). */
  Key,
  /** Every traced record the instance handled so far (unkeyed stateful operators). */
  Slot,
}

const EMPTY: readonly unknown[] = []
const NO_HEADERS: readonly (Header | undefined)[] = []

/** The tracer of one instance of an operator with inputs; it is also the instance's `outputs`. */
export class InstanceTracer implements Outputs {
  /** What the instance built below reports its record loop to: pass it as `InstanceSpec.observer`. */
  readonly observer: AtomObserver
  /** Metadata of the input record being handled, when it is traced. */
  record: RecordMetadata | undefined

  private mode = Mode.Free
  /** The traced batch the kernel's record loop is on: the record hook finds its records by index. */
  private values: readonly unknown[] = EMPTY
  private headers: readonly (Header | undefined)[] = NO_HEADERS
  private readonly hook: RecordHook
  private lastHeaderIn: Header | undefined
  private lastRecordIn: RecordMetadata | undefined
  private attribution: Attribution
  private readonly defaultAttribution: Attribution
  private key: Key | undefined
  private readonly batchPorts: ReadonlySet<string>
  private readonly sink: boolean
  private readonly streamForm: boolean
  /** `end` runs: the keys its code reads choose the lineage of its emissions. */
  private ending = false
  // The hop of the batch being handled, opened at its first traced record.
  private batchStart = 0
  private hop: OpenHop | undefined
  private event: HopEvent | undefined
  // The hop of emissions outside a batch (end, timers), opened at the first traced one.
  private freeHop: OpenHop | undefined
  private freeEvent: HopEvent | undefined
  private readonly kept: KeptLineage
  // Memos: records of one batch share input hops, and one record's outputs share a header.
  private lastIn: RecordMetadata | undefined
  private lastOut: RecordMetadata | undefined
  private lastHopsIn: readonly Hop[] | undefined
  private lastHopsOut: Hop[] | undefined
  private lastMetadata: RecordMetadata | undefined
  private lastHeader: Header | undefined
  private lastSinkHops: readonly Hop[] | undefined

  /** @param given the observer the layer above passed down (it is told everything too) */
  constructor(
    private readonly inner: Outputs,
    private readonly info: InstanceInfo,
    operator: Operator,
    private readonly shared: TracerShared,
    given?: AtomObserver,
  ) {
    const body = operator.body
    this.sink = Object.keys(operator.outputs).length === 0
    this.streamForm = body.form === 'stream'
    this.batchPorts = new Set(body.form === 'atom' ? Object.keys(body.batchHandlers ?? {}).filter((port) => body.handlers[port] === undefined) : [])
    const keyed = body.form === 'atom' && body.key !== undefined
    const stateful = body.form === 'stream' || (body.form === 'atom' && (body.state !== undefined || this.batchPorts.size > 0))
    this.kept = new KeptLineage(shared, keyed, stateful)
    this.defaultAttribution = keyed ? Attribution.Key : body.form === 'atom' && body.state !== undefined ? Attribution.Slot : Attribution.Record
    this.attribution = this.defaultAttribution
    this.hook = (index, key) => this.enter(index, key)
    const own: AtomObserver = {
      batch: (_port, batch) => this.watch(batch),
      stateKey: (key) => {
        if (this.ending) this.kept.setEndKey(key)
      },
    }
    this.observer = given === undefined ? own : both(own, given)
  }

  // --- Instance side ----------------------------------------------------------------------------

  /**
   * Handles a batch through `inner`, knowing which record each emission comes from. A batch
   * without headers costs one check; a traced batch goes through whole to an atom (the kernel's
   * record loop reports each record to `observer`) or to a batch handler, and in parts to a stream body.
   */
  process(inner: Instance, port: string, batch: Batch): void | Promise<void> {
    if (this.freeHop !== undefined) this.closeFreeHop()
    const headers = batch.headers
    if (headers === undefined) {
      this.mode = Mode.Plain
      return this.settle(() => inner.process(port, batch))
    }
    this.batchStart = now()
    this.mode = Mode.Record
    if (this.batchPorts.has(port)) return this.processWhole(inner, port, batch, headers)
    if (this.streamForm) return this.settle(() => this.split(inner, port, batch, headers, 0))
    return this.settle(() => inner.process(port, batch))
  }

  /** Ends the instance through `inner`; emissions of `end` take the kept lineage. */
  end(inner: Instance): void | Promise<void> {
    this.mode = Mode.Free
    this.ending = true
    const ended = (): void => {
      this.ending = false
      this.kept.setEndKey(undefined)
      this.closeFreeHop()
    }
    let ending: void | Promise<void>
    try {
      ending = inner.end()
    } catch (error) {
      ended()
      throw error
    }
    if (ending === undefined) return ended()
    return Promise.resolve(ending).finally(ended)
  }

  /** The kernel starts on a batch: the records of a traced one are reported to `enter`. */
  private watch(batch: Batch): RecordHook | undefined {
    if (this.mode !== Mode.Record || batch.headers === undefined) return undefined
    this.values = batch.values
    this.headers = batch.headers
    return this.hook
  }

  /** Runs `work`, then resets the batch state, however it ends. */
  private settle(work: () => void | Promise<void>): void | Promise<void> {
    let processing: void | Promise<void>
    try {
      processing = work()
    } catch (error) {
      this.done()
      throw error
    }
    if (processing === undefined) return this.done()
    return Promise.resolve(processing).finally(() => this.done())
  }

  /**
   * Hands a stream body `batch` from record `from` on: runs of untraced records as one batch each,
   * traced records apart (its emissions follow each push synchronously), consecutive records
   * sharing one header (the outputs of one record of a flatMap) together. Resumes at the next part
   * after any part processed asynchronously.
   */
  private split(inner: Instance, port: string, batch: Batch, headers: readonly (Header | undefined)[], from: number): void | Promise<void> {
    const values = batch.values
    const n = values.length
    let start = from
    // Whether the pending untraced run has headers all the same (reply paths, other layers' fields).
    let others = false
    for (let i = from; i < n; i++) {
      const header = headers[i]
      if (header === undefined) continue
      const m = metadataIn(header)
      if (m === undefined) {
        others = true
        continue
      }
      if (i > start) {
        this.record = undefined
        const processing = inner.process(port, others ? { values: values.slice(start, i), headers: headers.slice(start, i) } : { values: values.slice(start, i) })
        if (processing !== undefined) return Promise.resolve(processing).then(() => this.split(inner, port, batch, headers, i))
      }
      let end = i + 1
      while (end < n && headers[end] === header) end++
      this.record = m
      this.traced(m, values, i, end)
      start = end
      others = false
      const part = start === n && i === 0 ? batch : end === i + 1 ? { values: [values[i]], headers: [header] } : { values: values.slice(i, end), headers: headers.slice(i, end) }
      const processing = inner.process(port, part)
      if (processing !== undefined) return Promise.resolve(processing).then(() => this.split(inner, port, batch, headers, end))
      i = end - 1
    }
    if (start >= n) return
    this.record = undefined
    return inner.process(port, start === 0 ? batch : others ? { values: values.slice(start), headers: headers.slice(start) } : { values: values.slice(start) })
  }

  /**
   * The kernel is about to hand record `index` of the watched batch to its handler, for `key`:
   * makes the record's metadata the one emissions derive from, and merges it into the key's (or
   * the instance's) lineage.
   */
  private enter(index: number, key: Key | undefined): void {
    this.key = key
    const header = this.headers[index]
    if (header !== this.lastHeaderIn) {
      this.lastHeaderIn = header
      this.lastRecordIn = metadataIn(header)
    }
    const m = this.lastRecordIn
    this.record = m
    if (m === undefined) return
    if (this.hop === undefined) this.openHop()
    this.event!.records++
    this.kept.add(key, m)
    if (this.sink) this.sinkSaw(this.values[index], m)
  }

  private done(): void {
    if (this.hop !== undefined) {
      this.hop.duration = now() - this.hop.time
      this.hop = undefined
      this.event = undefined
    }
    this.mode = Mode.Free
    this.attribution = this.defaultAttribution
    this.record = undefined
    this.key = undefined
    this.headers = NO_HEADERS
    this.values = EMPTY
    this.lastHeaderIn = undefined
    this.lastRecordIn = undefined
    this.lastIn = undefined
    this.lastOut = undefined
    this.lastHopsIn = undefined
    this.lastHopsOut = undefined
  }

  /** A batch handler sees the whole batch: its outputs derive from every traced record of it. */
  private processWhole(inner: Instance, port: string, batch: Batch, headers: readonly (Header | undefined)[]): void | Promise<void> {
    const merged = new Accumulator(this.shared)
    for (let i = 0; i < headers.length; i++) {
      const m = metadataIn(headers[i])
      if (m === undefined) continue
      merged.add(m)
      if (this.sink) this.sinkSaw(batch.values[i], m)
    }
    const record = merged.snapshot(undefined)
    if (record !== undefined) {
      this.openHop()
      this.event!.records += merged.count
      this.kept.absorb(merged)
      this.record = record
      this.attribution = Attribution.Record
    } else this.mode = Mode.Plain
    return this.settle(() => inner.process(port, batch))
  }

  /** Bookkeeping of the traced records `values[start..end)` of a stream body, which share the metadata `m`. */
  private traced(m: RecordMetadata, values: readonly unknown[], start: number, end: number): void {
    if (this.hop === undefined) this.openHop()
    this.event!.records += end - start
    this.kept.add(undefined, m)
    if (this.sink) for (let i = start; i < end; i++) this.sinkSaw(values[i], m)
  }

  private openHop(): void {
    const hop = new OpenHop(this.info.operator, this.info.instance, this.shared.peer, this.batchStart)
    this.hop = hop
    this.event = this.shared.log.add(hop, this.info.job)
  }

  private closeFreeHop(): void {
    const hop = this.freeHop
    if (hop === undefined) return
    hop.duration = now() - hop.time
    this.freeHop = undefined
    this.freeEvent = undefined
  }

  private sinkSaw(value: unknown, m: RecordMetadata): void {
    if ((typeof value === 'object' && value !== null) || typeof value === 'function') this.shared.remember(value, m)
    // Hops of other peers are known here only from the records that arrive: log them for the export.
    const hops = m.hops
    if (hops === this.lastSinkHops) return
    this.lastSinkHops = hops
    for (let i = 0; i < hops.length; i++) this.shared.log.learn(hops[i]!, this.info.job)
  }

  // --- Outputs side -----------------------------------------------------------------------------

  // Methods, not per-instance functions: the kernel's call site then sees one target, which it inlines.
  emit(port: string, value: unknown, header?: Header): void {
    const mode = this.mode
    if (mode === Mode.Plain) {
      this.inner.emit(port, value, header)
      return
    }
    if (mode === Mode.Record) {
      const record = this.record
      if (record !== undefined) {
        this.inner.emit(port, value, this.headerFor(header, this.outputOf(record)))
        return
      }
    } else if (mode === Mode.Free) {
      const m = this.freeOutput()
      if (m !== undefined) {
        this.inner.emit(port, value, this.headerFor(header, m))
        return
      }
    }
    this.inner.emit(port, value, header)
  }

  emitAll(port: string, values: readonly unknown[]): void {
    const m = this.mode === Mode.Record ? (this.record === undefined ? undefined : this.outputOf(this.record)) : this.mode === Mode.Free ? this.freeOutput() : undefined
    const inner = this.inner
    if (m === undefined) {
      if (inner.emitAll !== undefined) inner.emitAll(port, values)
      else for (let i = 0; i < values.length; i++) inner.emit(port, values[i])
      return
    }
    const header = this.headerFor(undefined, m)
    for (let i = 0; i < values.length; i++) inner.emit(port, values[i], header)
  }

  /** The metadata of an output of the traced record being handled. */
  private outputOf(record: RecordMetadata): RecordMetadata {
    switch (this.attribution) {
      case Attribution.Key:
        return this.kept.ofKey(this.key, this.hop)
      case Attribution.Slot:
        return this.kept.ofSlot(this.hop)
      case Attribution.Record: {
        if (record === this.lastIn) return this.lastOut!
        const out: RecordMetadata =
          record.dropped === undefined && record.approximate === undefined
            ? { trace: record.trace, inputs: record.inputs, hops: this.hopsAfter(record.hops) }
            : { trace: record.trace, inputs: record.inputs, dropped: record.dropped, hops: this.hopsAfter(record.hops), approximate: record.approximate }
        this.lastIn = record
        this.lastOut = out
        return out
      }
    }
  }

  private hopsAfter(hops: readonly Hop[]): Hop[] {
    if (hops === this.lastHopsIn) return this.lastHopsOut!
    const out = appendHop(hops, this.hop!, this.shared.maxHops)
    this.lastHopsIn = hops
    this.lastHopsOut = out
    return out
  }

  /** The metadata of an emission outside a batch: the kept lineage of the key (or of the instance). */
  private freeOutput(): RecordMetadata | undefined {
    const source = this.kept.free()
    if (source === undefined) return undefined
    if (this.freeHop === undefined) {
      this.freeHop = new OpenHop(this.info.operator, this.info.instance, this.shared.peer, now())
      this.freeEvent = this.shared.log.add(this.freeHop, this.info.job)
    }
    this.freeEvent!.records++
    return source.snapshot(this.freeHop)
  }

  private headerFor(header: Header | undefined, m: RecordMetadata): Header {
    if (header !== undefined) return withMetadata(header, m)
    if (m === this.lastMetadata) return this.lastHeader!
    const made: Header = { fields: { metadata: m } }
    this.lastMetadata = m
    this.lastHeader = made
    return made
  }
}

/** One observer telling `first` and then `second` everything. */
function both(first: AtomObserver, second: AtomObserver): AtomObserver {
  return {
    batch(port, batch) {
      const a = first.batch?.(port, batch)
      const b = second.batch?.(port, batch)
      if (a === undefined || b === undefined) return a ?? b
      return (index, key) => {
        a(index, key)
        b(index, key)
      }
    },
    stateKey(key) {
      first.stateKey?.(key)
      second.stateKey?.(key)
    },
  }
}
