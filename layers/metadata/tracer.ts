// Per-instance tracing: ties each output of an operator instance to the input records it came from,
// and writes that provenance into the output's header.
//
// The kernel calls handlers one record at a time but does not show them the record's header, and
// an instance emits through `spec.outputs`. So the tracer sits on both sides of the instance. It
// rebuilds an atom with each handler first telling the tracer which value it is about to handle;
// the tracer matches it to its header by position in the batch. And it is the instance's
// `outputs`, so every emission made meanwhile is stamped with that record's metadata. Batches
// without traced records pass with one check per batch (and one per record in the wrapped
// handler). Stream bodies get their traced records pushed apart instead; batch handlers see a
// whole batch, so their outputs derive from all its traced records. Emissions outside a batch
// (`end`, timers) take the lineage kept per key (keyed operators) or per instance (other stateful
// operators).

import {
  atom,
  type AnyCodec,
  type AtomBody,
  type AtomContext,
  type Batch,
  type Header,
  type Instance,
  type InstanceInfo,
  type InstanceSpec,
  type Key,
  type Operator,
  type Outputs,
  type PortCodecs,
  type RequestOptions,
  type Spawned,
  type SpawnOptions,
  type StateAccess,
  type TimerHandle,
} from '../../kernel/index.js'
import type { HopEvent, TraceLog } from './chrome-trace.js'
import { Accumulator, appendHop, type Bounds, type Hop, metadataIn, now, OpenHop, type RecordMetadata, withMetadata } from './record.js'
import type { Sampler } from './sampler.js'

/** What the tracers of one layer share. */
export interface TracerShared extends Bounds {
  /** The peer name hops carry. */
  readonly peer: string
  readonly maxKeys: number
  readonly log: TraceLog
  /** Source records seen and traced, over every job. */
  readonly counts: { records: number; sampled: number }
  /** Remembers the metadata of an object value a sink received. */
  remember(value: object, metadata: RecordMetadata): void
}

// ---------------------------------------------------------------------------------------------
// Sources

/**
 * The outputs of a source instance: assigns each record its lineage id, `${operator}#${instance}:${seq}`,
 * and stamps the records the sampler picks. Records not picked go through untouched.
 */
export class SourceOutputs implements Outputs {
  private seq = 0
  private readonly prefix: string
  // Record sampling: records to let pass before the next traced one.
  private untilNext = 0
  // Batch sampling: the window (`batchSize` records emitted one by one, or one `emitAll`) and whether it is traced.
  private windowEnd = 0
  private windowTraced = false
  private hop: OpenHop | undefined
  private hops: readonly Hop[] = []
  private event: HopEvent | undefined

  constructor(
    private readonly inner: Outputs,
    private readonly info: InstanceInfo,
    private readonly shared: TracerShared,
    private readonly sampler: Sampler,
    private readonly byRecord: boolean,
  ) {
    this.prefix = `${info.operator}#${info.instance}:`
    // Either way the sampler draws gaps: in records, or in windows.
    this.untilNext = sampler.gap()
  }

  emit(port: string, value: unknown, header?: Header): void {
    const seq = this.seq++
    this.shared.counts.records++
    if (this.byRecord) {
      if (this.untilNext > 0) {
        this.untilNext--
        this.inner.emit(port, value, header)
        return
      }
      this.untilNext = this.sampler.gap()
      if (this.hop === undefined || seq >= this.windowEnd) {
        this.windowEnd = seq - (seq % this.info.batchSize) + this.info.batchSize
        this.open()
      }
    } else {
      if (seq >= this.windowEnd) this.nextWindow(seq + this.info.batchSize)
      if (!this.windowTraced) {
        this.inner.emit(port, value, header)
        return
      }
    }
    this.inner.emit(port, value, withMetadata(header, this.origin(seq)))
  }

  emitAll(port: string, values: readonly unknown[]): void {
    const n = values.length
    const first = this.seq
    this.seq += n
    this.shared.counts.records += n
    if (!this.byRecord) {
      // One emitAll is one window; a window of one-by-one emissions in progress ends here.
      this.nextWindow(this.seq)
      if (!this.windowTraced) this.plain(port, values, 0, n)
      else for (let i = 0; i < n; i++) this.inner.emit(port, values[i], { fields: { metadata: this.origin(first + i) } })
      return
    }
    let at = this.untilNext
    if (at >= n) {
      this.untilNext = at - n
      this.plain(port, values, 0, n)
      return
    }
    this.windowEnd = this.seq
    this.open()
    let start = 0
    while (at < n) {
      if (at > start) this.plain(port, values, start, at)
      this.inner.emit(port, values[at], { fields: { metadata: this.origin(first + at) } })
      start = at + 1
      at = start + this.sampler.gap()
    }
    if (start < n) this.plain(port, values, start, n)
    this.untilNext = at - n
  }

  /** Closes the open hop (the source finished). */
  close(): void {
    this.hop = undefined
  }

  /** Starts a window of batch sampling that ends before record `end`. */
  private nextWindow(end: number): void {
    this.windowEnd = end
    if (this.untilNext > 0) {
      this.untilNext--
      this.windowTraced = false
      return
    }
    this.untilNext = this.sampler.gap()
    this.windowTraced = true
    this.open()
  }

  private plain(port: string, values: readonly unknown[], start: number, end: number): void {
    const inner = this.inner
    if (start === 0 && end === values.length && inner.emitAll !== undefined) inner.emitAll(port, values)
    else for (let i = start; i < end; i++) inner.emit(port, values[i])
  }

  private open(): void {
    const hop = new OpenHop(this.info.operator, this.info.instance, this.shared.peer, now())
    this.hop = hop
    this.hops = [hop]
    this.event = this.shared.log.add(hop, this.info.job)
  }

  private origin(seq: number): RecordMetadata {
    const id = this.prefix + seq
    this.shared.counts.sampled++
    this.event!.records++
    return { trace: id, inputs: [id], hops: this.hops }
  }
}

// ---------------------------------------------------------------------------------------------
// Operators with inputs

/** What the instance is doing, which decides what an emission derives from. */
const enum Mode {
  /** Outside any batch: start, run, end, timers. */
  Free,
  /** Handling a batch with no traced record. */
  Plain,
  /** Handling a batch with traced records: emissions derive from `record`. */
  Record,
}

/** What an emission during a traced record derives from. */
const enum Attribution {
  /** The record itself (stateless operators, stream bodies, batch handlers). */
  Record,
  /** Every traced record of the record's key so far (keyed operators). */
  Key,
  /** Every traced record the instance handled so far (unkeyed stateful operators). */
  Slot,
}

const EMPTY: readonly unknown[] = []

/** The tracer of one instance of an operator with inputs; it is also the instance's `outputs`. */
export class InstanceTracer implements Outputs {
  /** The operator the kernel builds the instance from: for atoms, a copy whose handlers report each record. */
  readonly operator: Operator
  /** Metadata of the input record being handled, when it is traced. */
  record: RecordMetadata | undefined

  private mode = Mode.Free
  /** The traced batch an atom is handling: its handlers find their record by position (see `enter`). */
  headers: readonly (Header | undefined)[] | undefined
  private values: readonly unknown[] = EMPTY
  private cursor = 0
  private lastHeaderIn: Header | undefined
  private lastRecordIn: RecordMetadata | undefined
  private attribution: Attribution
  private readonly defaultAttribution: Attribution
  private key: Key | undefined
  private readonly batchPorts: ReadonlySet<string>
  private readonly sink: boolean
  private readonly streamForm: boolean
  private readonly handlers: HandlerTable | undefined
  // The hop of the batch being handled, opened at its first traced record.
  private batchStart = 0
  private hop: OpenHop | undefined
  private event: HopEvent | undefined
  // The hop of emissions outside a batch (end, timers), opened at the first traced one.
  private freeHop: OpenHop | undefined
  private freeEvent: HopEvent | undefined
  // Lineage kept for emissions that derive from more than one record.
  private readonly keys: Map<Key, Accumulator> | undefined
  private overflow: Accumulator | undefined
  private readonly slot: Accumulator | undefined
  private endKey: Key | undefined
  private endKeySet = false
  private merged = 0
  private union: { merged: number; accumulator: Accumulator } | undefined
  // Memos: records of one batch share input hops, and one record's outputs share a header.
  private lastIn: RecordMetadata | undefined
  private lastOut: RecordMetadata | undefined
  private lastHopsIn: readonly Hop[] | undefined
  private lastHopsOut: Hop[] | undefined
  private lastMetadata: RecordMetadata | undefined
  private lastHeader: Header | undefined
  private lastSinkHops: readonly Hop[] | undefined

  constructor(
    private readonly inner: Outputs,
    private readonly info: InstanceInfo,
    operator: Operator,
    private readonly shared: TracerShared,
  ) {
    const body = operator.body
    this.sink = Object.keys(operator.outputs).length === 0
    this.streamForm = body.form === 'stream'
    this.batchPorts = new Set(body.form === 'atom' ? Object.keys(body.batchHandlers ?? {}).filter((port) => body.handlers[port] === undefined) : [])
    const keyed = body.form === 'atom' && body.key !== undefined
    const stateful = body.form === 'stream' || (body.form === 'atom' && (body.state !== undefined || this.batchPorts.size > 0))
    this.keys = keyed ? new Map() : undefined
    this.slot = !keyed && stateful ? new Accumulator(shared) : undefined
    this.defaultAttribution = keyed ? Attribution.Key : body.form === 'atom' && body.state !== undefined ? Attribution.Slot : Attribution.Record
    this.attribution = this.defaultAttribution
    if (body.form === 'atom') {
      const built = traceable(operator, body, this)
      this.operator = built.operator
      this.handlers = built.handlers
    } else this.operator = operator
  }

  /**
   * Puts the wrapped handler of `port` in the table the kernel reads (traced batches) or the
   * original (other batches), so that untraced batches pay no wrapper call per record. Only an
   * optimization: the wrapped ones are in place from the start, so a kernel that read the table
   * once would call them always, and tracing would be just as right.
   */
  private install(port: string, traced: boolean): void {
    const table = this.handlers
    if (table === undefined) return
    const handler = traced ? table.wrapped[port] : table.original[port]
    if (handler !== undefined && table.live[port] !== handler) table.live[port] = handler
  }

  // --- Instance side ----------------------------------------------------------------------------

  /**
   * Handles a batch through `inner`, knowing which record each emission comes from. A batch
   * without headers costs one check; a traced batch goes through whole to an atom (its wrapped
   * handlers report each record) or to a batch handler, and in parts to a stream body.
   */
  process(inner: Instance, port: string, batch: Batch): void | Promise<void> {
    if (this.freeHop !== undefined) this.closeFreeHop()
    const headers = batch.headers
    if (headers === undefined) {
      this.mode = Mode.Plain
      this.install(port, false)
      return this.settle(() => inner.process(port, batch))
    }
    this.batchStart = now()
    this.mode = Mode.Record
    if (this.batchPorts.has(port)) return this.processWhole(inner, port, batch, headers)
    if (this.streamForm) return this.settle(() => this.split(inner, port, batch, headers, 0))
    // Atom handlers report each record they handle (see `enter`): the batch goes through whole.
    this.values = batch.values
    this.headers = headers
    this.cursor = 0
    this.install(port, true)
    return this.settle(() => inner.process(port, batch))
  }

  /** Ends the instance through `inner`; emissions of `end` take the kept lineage. */
  end(inner: Instance): void | Promise<void> {
    this.mode = Mode.Free
    const ended = (): void => {
      this.setEndKey(undefined)
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

  /** Sets the key whose lineage `end`'s emissions take (`state.entries()` and `state.of(key)` call it). */
  setEndKey(key: Key | undefined): void {
    this.endKey = key
    this.endKeySet = key !== undefined
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
   * Called by the wrapped handlers with the record about to be handled and the kernel's key for it:
   * finds the record's header (the next one, unless the kernel refused values in between), makes
   * its metadata the one emissions derive from, and merges it into the key's (or the instance's)
   * lineage.
   */
  enter(value: unknown, key: Key | undefined): void {
    this.key = key
    const headers = this.headers!
    const values = this.values
    let i = this.cursor
    const at = values[i]
    if (at !== value && !Object.is(at, value)) {
      // Values that fail the port's codec never reach a handler: look further on.
      i = indexFrom(values, value, i + 1)
      if (i < 0) {
        this.record = undefined
        return
      }
    }
    this.cursor = i + 1
    const header = headers[i]
    if (header !== this.lastHeaderIn) {
      this.lastHeaderIn = header
      this.lastRecordIn = metadataIn(header)
    }
    const m = this.lastRecordIn
    this.record = m
    if (m === undefined) return
    if (this.hop === undefined) this.openHop()
    this.event!.records++
    if (this.keys !== undefined) {
      this.entry(key).add(m)
      this.merged++
    } else if (this.slot !== undefined) {
      this.slot.add(m)
      this.merged++
    }
    if (this.sink) this.sinkSaw(value, m)
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
    this.headers = undefined
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
      if (this.keys !== undefined) this.overflowEntry().absorb(merged)
      else this.slot?.absorb(merged)
      this.merged++
      this.record = record
      this.attribution = Attribution.Record
    } else this.mode = Mode.Plain
    return this.settle(() => inner.process(port, batch))
  }

  /** Bookkeeping of the traced records `values[start..end)` of a stream body, which share the metadata `m`. */
  private traced(m: RecordMetadata, values: readonly unknown[], start: number, end: number): void {
    if (this.hop === undefined) this.openHop()
    this.event!.records += end - start
    if (this.slot !== undefined) {
      this.slot.add(m)
      this.merged++
    }
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

  private entry(key: Key | undefined): Accumulator {
    const keys = this.keys!
    let entry = key === undefined ? undefined : keys.get(key)
    if (entry === undefined) {
      if (key !== undefined && keys.size < this.shared.maxKeys) {
        entry = new Accumulator(this.shared)
        keys.set(key, entry)
      } else entry = this.overflowEntry()
    }
    return entry
  }

  /** Keys past `maxKeys` share one entry: their lineage is the union of theirs, marked approximate. */
  private overflowEntry(): Accumulator {
    if (this.overflow === undefined) {
      this.overflow = new Accumulator(this.shared)
      this.overflow.approximate = true
    }
    return this.overflow
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
        return this.entry(this.key).snapshot(this.hop)!
      case Attribution.Slot:
        return this.slot!.snapshot(this.hop)!
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
    let source: Accumulator | undefined
    if (this.keys !== undefined) source = this.endKeySet ? (this.keys.get(this.endKey!) ?? this.overflow) : this.unionOfKeys()
    else source = this.slot
    if (source === undefined || source.trace === undefined) return undefined
    if (this.freeHop === undefined) {
      this.freeHop = new OpenHop(this.info.operator, this.info.instance, this.shared.peer, now())
      this.freeEvent = this.shared.log.add(this.freeHop, this.info.job)
    }
    this.freeEvent!.records++
    return source.snapshot(this.freeHop)
  }

  /** Every key's lineage together: what an emission of a keyed operator outside any key derives from. */
  private unionOfKeys(): Accumulator | undefined {
    if (this.merged === 0) return undefined
    if (this.union !== undefined && this.union.merged === this.merged) return this.union.accumulator
    const accumulator = new Accumulator(this.shared)
    for (const entry of this.keys!.values()) accumulator.absorb(entry)
    if (this.overflow !== undefined) accumulator.absorb(this.overflow)
    accumulator.approximate = true
    this.union = { merged: this.merged, accumulator }
    return accumulator
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

// ---------------------------------------------------------------------------------------------
// The rebuilt operator

function indexFrom(values: readonly unknown[], value: unknown, from: number): number {
  for (let i = from; i < values.length; i++) if (Object.is(values[i], value)) return i
  return -1
}

type AnyHandler = (value: unknown, ctx: AtomContext) => unknown

/** The handlers of a rebuilt atom: the table the kernel reads, the wrapped ones and the originals. */
interface HandlerTable {
  readonly live: Record<string, AnyHandler>
  readonly wrapped: Readonly<Record<string, AnyHandler>>
  readonly original: Readonly<Record<string, AnyHandler>>
}

/**
 * An atom rebuilt to tell the tracer which record it handles: each record handler first calls
 * `tracer.enter` (only while a traced batch is being handled), and a keyed operator's `end` sees a
 * state whose `entries()` and `of(key)` report the key being read. Built with `atom()`, like any
 * operator: same name, ports, codecs, state and annotations.
 */
function traceable(operator: Operator, body: AtomBody, tracer: InstanceTracer): { operator: Operator; handlers: HandlerTable | undefined } {
  const original = body.handlers as Readonly<Record<string, AnyHandler>>
  const wrapped: Record<string, AnyHandler> = {}
  for (const [port, h] of Object.entries(original)) {
    wrapped[port] = (value, ctx) => {
      if (tracer.headers !== undefined) tracer.enter(value, ctx.key)
      return h(value, ctx)
    }
  }
  const end = body.end
  const definition = {
    name: operator.name,
    inputs: codecsOf(operator.inputs),
    outputs: codecsOf(operator.outputs),
    on: wrapped,
    onBatch: body.batchHandlers,
    start: body.start,
    run: body.run,
    end: end === undefined || body.key === undefined ? end : (ctx: AtomContext) => end(new KeyTrackingContext(ctx, tracer)),
    key: body.key,
    state: body.state,
    fusible: body.fusible,
    annotations: operator.annotations,
  }
  const rebuilt = atom(definition as unknown as Parameters<typeof atom>[0]) as Operator
  const live = rebuilt.body.form === 'atom' ? (rebuilt.body.handlers as Record<string, AnyHandler>) : undefined
  return { operator: rebuilt, handlers: live === undefined || Object.isFrozen(live) ? undefined : { live, wrapped, original } }
}

function codecsOf(ports: { readonly [port: string]: { readonly codec: AnyCodec } }): PortCodecs {
  return Object.fromEntries(Object.entries(ports).map(([port, p]) => [port, p.codec]))
}

/** An `end` context whose state reports the key being read to the tracer. */
class KeyTrackingContext implements AtomContext<PortCodecs, unknown> {
  readonly state: StateAccess<unknown>

  constructor(private readonly ctx: AtomContext, tracer: InstanceTracer) {
    this.state = new KeyTrackingState(ctx.state, tracer)
  }

  get info(): InstanceInfo {
    return this.ctx.info
  }
  get key(): Key | undefined {
    return this.ctx.key
  }
  get signal(): AbortSignal {
    return this.ctx.signal
  }
  emit(port: string, value: unknown): void {
    this.ctx.emit(port, value)
  }
  emitAll(port: string, values: readonly unknown[]): void {
    this.ctx.emitAll(port, values)
  }
  flush(): Promise<void> {
    return this.ctx.flush()
  }
  request<R = unknown>(port: string, value: unknown, options?: RequestOptions): Promise<R> {
    return this.ctx.request<R>(port, value, options)
  }
  timer(ms: number, fn: () => void | Promise<void>): TimerHandle {
    return this.ctx.timer(ms, fn)
  }
  every(ms: number, fn: () => void | Promise<void>): TimerHandle {
    return this.ctx.every(ms, fn)
  }
  sleep(ms: number): Promise<void> {
    return this.ctx.sleep(ms)
  }
  spawn<I extends PortCodecs>(operator: Operator<I, PortCodecs>, options?: SpawnOptions): Spawned<I> {
    return this.ctx.spawn(operator, options)
  }
  call(name: string, argument?: unknown): Promise<unknown> {
    return this.ctx.call(name, argument)
  }
  reject(value: unknown, reason: string): void {
    this.ctx.reject(value, reason)
  }
}

class KeyTrackingState implements StateAccess<unknown> {
  constructor(
    private readonly state: StateAccess<unknown>,
    private readonly tracer: InstanceTracer,
  ) {}

  get(): unknown {
    return this.state.get()
  }
  set(value: unknown): void {
    this.state.set(value)
  }
  update(fn: (value: unknown) => unknown): unknown {
    return this.state.update(fn)
  }
  delete(): void {
    this.state.delete()
  }
  of(key: Key): unknown {
    this.tracer.setEndKey(key)
    return this.state.of(key)
  }
  *entries(): IterableIterator<[Key, unknown]> {
    try {
      for (const entry of this.state.entries()) {
        this.tracer.setEndKey(entry[0])
        yield entry
      }
    } finally {
      this.tracer.setEndKey(undefined)
    }
  }
  get size(): number {
    return this.state.size
  }
}
