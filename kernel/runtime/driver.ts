// The driver of one atom: its loop takes one message at a time (interrupts first, then input batches
// round robin over its channels), runs it through the instance, and flushes emissions with credit.

import type {
  Batch,
  ChannelReceiver,
  ChannelSender,
  Header,
  Marker,
  Instance,
  InstanceInfo,
  Operator,
  Outputs,
  PortCodecs,
  ReplyTo,
  RequestOptions,
  Spawned,
  SpawnOptions,
  TimerHandle,
} from '../contracts.js'
import {
  HandlerError,
  InvalidOptionError,
  JobAbortedError,
  type LaminaError,
  RequestFailedError,
  RequestRoutingError,
  RequestTimeoutError,
  UnknownOutputError,
  type Where,
} from '../errors.js'
import type { Outlet } from './outlet.js'
import { endOfSlice } from './slice.js'
import { WATERMARK, WATERMARK_IDLE } from '../time.js'
import type { AtomServices } from './services.js'

/** What a driver needs from its job. */
export interface DriverJob {
  readonly id: string
  readonly abortSignal: AbortSignal
  readonly stopSignal: AbortSignal
  deadLetter(where: Where, error: LaminaError, value: unknown): void
  call(name: string, argument: unknown, caller: InstanceInfo): Promise<unknown>
  spawn<I extends PortCodecs>(parent: Driver, operator: Operator<I, PortCodecs>, options: SpawnOptions | undefined): Spawned<I>
}

/** One input channel of a driver; auxiliary channels (from spawned children) do not hold the port open. */
export interface InboxEntry {
  readonly port: string
  readonly channel: ChannelReceiver
  readonly auxiliary: boolean
}

interface PortBuffer {
  values: unknown[]
  headers: (Header | undefined)[] | undefined
}

/** The kernel's base `Outputs`: per-port buffers the driver flushes into the port's outlet. */
class EmitBuffers implements Outputs {
  readonly ports = new Map<string, PortBuffer>()
  pending = 0
  unlinked = 0
  // The buffer of the last port emitted on (flushes swap a buffer's arrays, never the buffer).
  private lastPort: string | undefined
  private lastBuffer: PortBuffer | undefined

  constructor(
    private readonly operator: string,
    private readonly declared: ReadonlySet<string>,
  ) {}

  emit(port: string, value: unknown, header?: Header): void {
    let buffer: PortBuffer | undefined
    if (port === this.lastPort) buffer = this.lastBuffer
    else {
      buffer = this.ports.get(port)
      if (buffer !== undefined) {
        this.lastPort = port
        this.lastBuffer = buffer
      }
    }
    if (buffer === undefined) {
      if (!this.declared.has(port)) throw new UnknownOutputError(this.operator, port)
      this.unlinked++
      if (header?.reply !== undefined) header.reply({ ok: false, error: new RequestRoutingError({ operator: this.operator, port }, 'the port has no link') })
      return
    }
    buffer.values.push(value)
    this.pending++
    if (header !== undefined) {
      buffer.headers ??= new Array<Header | undefined>(buffer.values.length - 1).fill(undefined)
      buffer.headers.push(header)
    } else if (buffer.headers !== undefined) buffer.headers.push(undefined)
  }

  emitAll(port: string, values: readonly unknown[]): void {
    const buffer = this.ports.get(port)
    if (buffer === undefined) {
      for (const value of values) this.emit(port, value)
      return
    }
    const target = buffer.values
    // An empty buffer takes a copy in one call (a source's whole batch, usually); the caller keeps its array.
    if (target.length === 0) buffer.values = values.slice()
    else for (let i = 0; i < values.length; i++) target.push(values[i])
    if (buffer.headers !== undefined) for (let i = 0; i < values.length; i++) buffer.headers.push(undefined)
    this.pending += values.length
  }
}

type Interrupt = () => unknown

/**
 * One marker kind being aligned: the newest marker of that kind and the primary inputs it arrived on.
 *
 * A marker is a cut through the data, like a barrier in Chandy–Lamport's distributed snapshots as
 * Flink aligns them (asynchronous barrier snapshots): when the instance sees marker n it has
 * processed everything before n on every input and nothing after it. So an input that delivered n
 * is held (its data waits) until n has arrived on every open primary input, and then n is passed
 * once. An input that ends counts as arrived for every kind.
 *
 * Layers inject their kinds independently (and each peer injects at its own sources), so every
 * kind aligns on its own; within a kind a newer id supersedes the one being aligned (given up: a
 * checkpoint is then abandoned, the next one supersedes it) and an older id is stale (dropped).
 *
 * A held input still delivers a marker of a kind it is not held for when that marker comes before
 * any more data: its cut on that input is the same place, so the instance cannot tell the two
 * markers' order apart. The instance therefore sees each input's data and markers in order, except
 * that markers with no data between them may pass in another order; each kind passes in id order.
 * Without this, inputs delivering A,B and B,A back to back would hold each other.
 *
 * Markers that cross with data between them (input 1: A x B, input 2: B y A) have no cuts that one
 * instance can take in turn: A's includes y and not x, B's includes x and not y. Their alignments
 * wait for each other for ever. When no input can deliver anything, the driver looks for such a
 * cycle of alignments (each missing an input that waits for the next) and gives up the youngest on
 * it, releasing its inputs (the older one goes on, as in wait–die deadlock prevention); the given-up
 * marker is then stale here and never reaches downstream. So a marker is dropped only as
 * superseded, stale or the younger of a crossing, and is never passed at a cut that is not one.
 */
interface Alignment {
  readonly marker: Marker
  readonly batch: Batch
  /** The open primary inputs that delivered the marker: each is held until it arrived on all of them. */
  readonly arrived: Set<InboxEntry>
}

/**
 * Drives one instance. Memory stays bounded: the driver takes a batch only after flushing the
 * previous one's emissions into channels with credit, so a slow consumer stalls its producers.
 */
export class Driver implements AtomServices {
  readonly outputs: EmitBuffers
  readonly stopSignal: AbortSignal
  instance: Instance | undefined
  recordsIn = 0
  recordsOut = 0
  deadLetters = 0
  finished = false

  private readonly entries: InboxEntry[] = []
  private primaryOpen = 0
  private turn = 0
  private readonly interrupts: Interrupt[] = []
  private readonly timers = new Set<{ cancel(): void }>()
  private readonly futures = new Set<(error: LaminaError) => void>()
  private readonly children = new Set<Driver>()
  private childInputs: (() => void)[] = []
  private running = false
  private closing = false
  private wakeUp: (() => void) | undefined
  /** Markers injected at this (source) instance, waiting for the loop. */
  private readonly injected: Batch[] = []
  /** The alignment of each marker kind under way, in the order they started (oldest first). */
  private readonly aligning = new Map<string, Alignment>()
  /** Per kind, the newest marker id passed or given up: a marker with this id or an older one is stale. */
  private readonly settled = new Map<string, number>()
  /** Aligned markers waiting for the loop to pass them, in the order their alignments completed. */
  private readonly aligned: { port: string; batch: Batch }[] = []
  /** The next batch of a held input, taken from its channel and kept until the input may deliver it. */
  private readonly heads = new Map<InboxEntry, Batch>()
  /** The newest watermark each primary input delivered (event time; inputs that delivered none are absent). */
  private readonly watermarks = new Map<InboxEntry, number>()
  /** The instance's watermark: the minimum over its open primary inputs, as passed on (or, at a source, as emitted). */
  private watermarkAt = Number.NEGATIVE_INFINITY
  /** Primary inputs that declared themselves idle (WATERMARK_IDLE) and sent nothing since: the minimum leaves them out. */
  private readonly idleInputs = new Set<InboxEntry>()
  /** The instance passed on (or, at a source, declared) idleness, and has not sent anything since. */
  private idleOut = false

  constructor(
    readonly info: InstanceInfo,
    readonly operator: Operator,
    private readonly outlets: ReadonlyMap<string, Outlet>,
    private readonly job: DriverJob,
    /** The input ports whose values the instance checks against their codecs. */
    readonly checkedPorts: Set<string>,
  ) {
    this.outputs = new EmitBuffers(info.operator, new Set(Object.keys(operator.outputs)))
    for (const port of outlets.keys()) this.outputs.ports.set(port, { values: [], headers: undefined })
    this.stopSignal = job.stopSignal
  }

  /** Adds an input channel (before start, or later for a spawned child's outputs). */
  addInput(entry: InboxEntry): void {
    this.entries.push(entry)
    if (!entry.auxiliary) this.primaryOpen++
    entry.channel.onReadable(() => this.wake())
  }

  get unlinked(): number {
    return this.outputs.unlinked
  }

  /** Resumes the loop if it waits for work (new input, an interrupt, an abort). */
  wake(): void {
    const wake = this.wakeUp
    if (wake !== undefined) {
      this.wakeUp = undefined
      wake()
    }
  }

  private idle(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wakeUp = resolve
    })
  }

  /**
   * Injects a marker at this instance as if it had arrived on every input (used at sources).
   * Returns false once the instance is finishing: its outputs end instead.
   */
  inject(batch: Batch): boolean {
    if (this.closing || this.finished) return false
    this.injected.push(batch)
    this.wake()
    return true
  }

  /** Takes the next data batch or aligned marker, round robin over the input channels; retires channels that ended. */
  private take(): { port: string; batch: Batch } | undefined {
    for (;;) {
      const ready = this.aligned.shift()
      if (ready !== undefined) return ready
      const next = this.scan()
      if (next !== undefined) return next
      if (!this.breakDeadlock()) return undefined
    }
  }

  /** One round over the inputs: the first data batch, or the first marker whose alignment completed. */
  private scan(): { port: string; batch: Batch } | undefined {
    const entries = this.entries
    for (let tries = entries.length; tries > 0; tries--) {
      if (this.turn >= entries.length) this.turn = 0
      const entry = entries[this.turn]!
      const batch = this.next(entry)
      if (batch === undefined) {
        this.turn++
        continue
      }
      if (batch === 'end') {
        entries.splice(this.turn, 1)
        if (!entry.auxiliary) {
          this.primaryOpen--
          // An input that ended counts as aligned for every kind: it will deliver nothing more.
          for (const alignment of this.aligning.values()) alignment.arrived.delete(entry)
          if (this.complete(entry.port)) return this.aligned.shift()
          // Nor does it hold the watermark back any more.
          this.watermarks.delete(entry)
          this.idleInputs.delete(entry)
          const advanced = this.advanceWatermark(entry.port)
          if (advanced !== undefined) return advanced
        }
        continue
      }
      this.turn++
      if (batch.marker !== undefined) {
        if (entry.auxiliary) continue // Markers are not forwarded to spawned children; none come back.
        const kind = batch.marker.kind
        if (kind === WATERMARK || kind === WATERMARK_IDLE) {
          // Watermarks are not aligned: each input's only rises, and the instance's is their minimum
          // over the inputs that are not idle. An idle input is active again once it sends anything.
          if (kind === WATERMARK_IDLE) this.idleInputs.add(entry)
          else {
            if (this.idleInputs.size > 0) this.activate(entry)
            if (batch.marker.id > (this.watermarks.get(entry) ?? Number.NEGATIVE_INFINITY)) this.watermarks.set(entry, batch.marker.id)
          }
          const advanced = this.advanceWatermark(entry.port)
          if (advanced !== undefined) return advanced
          // Nothing to pass on, but a batch was taken: every input gets a new turn (the loop must
          // not go idle while inputs hold data: their channels only signal when they become readable).
          tries = entries.length + 1
          continue
        }
        if (this.align(entry, batch.marker, batch)) return this.aligned.shift()
        // Taking a marker may have released or held inputs: every input gets a new turn.
        tries = entries.length + 1
        continue
      }
      if (this.idleInputs.size > 0 && !entry.auxiliary) this.activate(entry)
      return { port: entry.port, batch }
    }
    return undefined
  }

  /** An idle input sent data or a watermark: it holds the watermark back again, and so may this instance. */
  private activate(entry: InboxEntry): void {
    if (this.idleInputs.delete(entry)) this.idleOut = false
  }

  /**
   * The instance's watermark after an input's rose or ended: the minimum over the open primary
   * inputs, once every one of them has delivered one. A watermark batch to pass on when that
   * minimum rose, else undefined. When no input is open the stream's end says the rest.
   */
  private advanceWatermark(port: string): { port: string; batch: Batch } | undefined {
    if (this.primaryOpen === 0) return undefined
    const idle = this.idleInputs
    const active = this.primaryOpen - idle.size
    if (active === 0) {
      // Every open input is idle: so is this instance, downstream.
      if (this.idleOut) return undefined
      this.idleOut = true
      return { port, batch: { values: [], marker: { kind: WATERMARK_IDLE, id: 0 } } }
    }
    if (this.watermarks.size < active) return undefined
    let low = Number.POSITIVE_INFINITY
    let counted = 0
    for (const [entry, time] of this.watermarks) {
      if (idle.size > 0 && idle.has(entry)) continue
      counted++
      if (time < low) low = time
    }
    if (counted < active || low <= this.watermarkAt) return undefined
    this.idleOut = false
    this.watermarkAt = low
    return { port, batch: { values: [], marker: { kind: WATERMARK, id: low } } }
  }

  /** The next batch of `entry`, or undefined when it has none or its next one must wait (kept as its head). */
  private next(entry: InboxEntry): Batch | 'end' | undefined {
    if (this.aligning.size === 0 && this.heads.size === 0) return entry.channel.take()
    const head = this.heads.get(entry)
    const batch = head ?? entry.channel.take()
    if (batch === undefined || batch === 'end' || entry.auxiliary) return batch
    if (this.waits(entry, batch)) {
      if (head === undefined) this.heads.set(entry, batch)
      return undefined
    }
    if (head !== undefined) this.heads.delete(entry)
    return batch
  }

  /** Whether `batch`, next on primary input `entry`, must wait: data for every alignment the input arrived in, a marker for its own kind's. */
  private waits(entry: InboxEntry, batch: Batch): boolean {
    if (batch.marker !== undefined) return this.aligning.get(batch.marker.kind)?.arrived.has(entry) === true
    for (const alignment of this.aligning.values()) if (alignment.arrived.has(entry)) return true
    return false
  }

  /** Records `marker` arriving on `entry`; true when that completed its alignment (the marker is then in `aligned`). */
  private align(entry: InboxEntry, marker: Marker, batch: Batch): boolean {
    const settled = this.settled.get(marker.kind)
    if (settled !== undefined && marker.id <= settled) return false // stale: passed or given up already
    let alignment = this.aligning.get(marker.kind)
    if (alignment !== undefined && marker.id < alignment.marker.id) return false // stale
    if (alignment === undefined || marker.id > alignment.marker.id) {
      // A newer marker supersedes the one being aligned (its checkpoint is abandoned); the newer
      // alignment starts now, so it goes to the end of the start order.
      if (alignment !== undefined) this.giveUp(marker.kind, alignment)
      alignment = { marker, batch, arrived: new Set() }
      this.aligning.set(marker.kind, alignment)
    }
    alignment.arrived.add(entry)
    return this.complete(entry.port)
  }

  /** Moves the marker of every alignment that arrived on all open primary inputs to `aligned`, oldest first; true if any. */
  private complete(port: string): boolean {
    let any = false
    for (const [kind, alignment] of this.aligning) {
      if (alignment.arrived.size < this.primaryOpen) continue
      this.aligning.delete(kind)
      this.settled.set(kind, alignment.marker.id)
      this.aligned.push({ port, batch: alignment.batch })
      any = true
    }
    return any
  }

  /** Drops an alignment without passing its marker: its inputs are released and the marker is stale from now on. */
  private giveUp(kind: string, alignment: Alignment): void {
    this.aligning.delete(kind)
    this.settled.set(kind, alignment.marker.id)
  }

  /**
   * When alignments of different kinds hold each other's inputs for ever, gives up the youngest
   * alignment on such a cycle and returns true (see `Alignment` for why). Called only when no
   * input could deliver anything.
   */
  private breakDeadlock(): boolean {
    if (this.aligning.size < 2) return false
    // Alignment K waits for L when an input K misses has a head that waits for L: it delivers
    // nothing more until L completes (or is given up).
    const waitsFor = new Map<string, string[]>()
    for (const [kind, alignment] of this.aligning) {
      const on: string[] = []
      for (const [entry, head] of this.heads) {
        if (alignment.arrived.has(entry) || !this.waits(entry, head)) continue
        if (head.marker !== undefined) on.push(head.marker.kind)
        else for (const [other, holding] of this.aligning) if (holding.arrived.has(entry)) on.push(other)
      }
      waitsFor.set(kind, on)
    }
    // The alignments that can never complete: each waits for one of the others (a greatest fixpoint).
    const stuck = new Set(this.aligning.keys())
    for (let changed = true; changed; ) {
      changed = false
      for (const kind of stuck) {
        if (waitsFor.get(kind)!.some((other) => stuck.has(other))) continue
        stuck.delete(kind)
        changed = true
      }
    }
    if (stuck.size === 0) return false
    // Follow the wait-for edges among them until a kind repeats: those from its first visit on form a cycle.
    const path: string[] = []
    let kind = stuck.values().next().value!
    while (!path.includes(kind)) {
      path.push(kind)
      kind = waitsFor.get(kind)!.find((other) => stuck.has(other))!
    }
    const cycle = path.slice(path.indexOf(kind))
    let youngest = kind
    for (const started of this.aligning.keys()) if (cycle.includes(started)) youngest = started
    this.giveUp(youngest, this.aligning.get(youngest)!)
    return true
  }

  /** Flushes what came before the marker, lets the instance see it, and forwards it downstream. */
  private async passMarker(batch: Batch): Promise<void> {
    const flushing = this.flushNow()
    if (flushing !== undefined) await flushing
    const seen = this.instance!.marker?.(batch.marker!)
    if (seen !== undefined) await seen
    const after = this.flushNow()
    for (const outlet of this.outlets.values()) outlet.sendMarker(batch)
    if (after !== undefined) await after
  }

  /** Sends buffered emissions; resolves once every channel written to has credit again. */
  flush(): Promise<void> {
    const flushing = this.flushNow()
    if (flushing !== undefined) return flushing
    return endOfSlice() ?? Promise.resolve()
  }

  private flushNow(): Promise<void> | undefined {
    const outputs = this.outputs
    if (outputs.pending === 0) return undefined
    outputs.pending = 0
    // Records sent: whatever idleness was passed on no longer holds.
    this.idleOut = false
    const full: ChannelSender[] = []
    for (const [port, buffer] of outputs.ports) {
      const values = buffer.values
      if (values.length === 0) continue
      const batch = buffer.headers === undefined ? { values } : { values, headers: buffer.headers }
      buffer.values = []
      buffer.headers = undefined
      this.recordsOut += values.length
      this.outlets.get(port)!.send(batch, full)
    }
    if (full.length === 0) return undefined
    const signal = this.job.abortSignal
    return full.length === 1 ? full[0]!.whenReady(signal) : Promise.all(full.map((c) => c.whenReady(signal))).then(() => undefined)
  }

  /** Runs the instance to completion. Rejects only on abort or a fault of the kernel or a layer. */
  async run(): Promise<void> {
    const instance = this.instance!
    const abort = this.job.abortSignal
    let runPending = false
    let runFailure: unknown
    try {
      await instance.start()
      await this.flushNow()
      const running = instance.run()
      if (running !== undefined) {
        runPending = true
        running.then(
          () => {
            runPending = false
            this.wake()
          },
          (error: unknown) => {
            runFailure = error
            runPending = false
            this.wake()
          },
        )
      }
      for (;;) {
        if (abort.aborted) throw new JobAbortedError(this.job.id, abort.reason)
        if (runFailure !== undefined) throw runFailure
        const interrupt = this.interrupts.shift()
        if (interrupt !== undefined) {
          await this.interrupt(interrupt)
          await this.flushNow()
          continue
        }
        const injected = this.injected.shift()
        if (injected !== undefined) {
          await this.passMarker(injected)
          continue
        }
        const next = this.take()
        if (next !== undefined) {
          if (next.batch.marker !== undefined) {
            await this.passMarker(next.batch)
            continue
          }
          this.recordsIn += next.batch.values.length
          this.running = true
          const processing = instance.process(next.port, next.batch)
          if (processing !== undefined) await processing
          this.running = false
          const flushing = this.flushNow()
          if (flushing !== undefined) await flushing
          const pause = endOfSlice()
          if (pause !== undefined) await pause
          continue
        }
        if (this.outputs.pending > 0) {
          await this.flushNow()
          continue
        }
        if (this.primaryOpen === 0 && !runPending) {
          if (this.childInputs.length > 0) {
            // Inputs are done: end the children's inputs so they drain, then wait for them.
            for (const end of this.childInputs) end()
            this.childInputs = []
          }
          if (this.children.size === 0 && this.entries.length === 0) break
        }
        await this.idle()
      }
      this.closing = true
      await instance.end()
      await this.flushNow()
      for (const outlet of this.outlets.values()) outlet.end()
    } finally {
      this.finished = true
      for (const timer of [...this.timers]) timer.cancel()
      const stopped = new JobAbortedError(this.job.id, 'the operator finished')
      for (const cancel of [...this.futures]) cancel(stopped)
    }
  }

  private async interrupt(fn: Interrupt): Promise<void> {
    try {
      await fn()
    } catch (error) {
      this.deadLetter(
        { operator: this.info.operator, instance: this.info.instance, port: 'timer' },
        new HandlerError({ operator: this.info.operator, instance: this.info.instance, port: 'timer' }, error),
        undefined,
      )
    }
  }

  // --- syscalls (AtomServices) ------------------------------------------------------------------

  /**
   * A source's watermark: no record it emits from now on has an event time below `time`. Passed on
   * after what the source emitted before it; one that does not rise is ignored.
   */
  watermark(time: number): void {
    if (!Number.isFinite(time)) throw new InvalidOptionError('watermark', 'time', `must be a finite number of milliseconds, got ${time}`)
    const at = Math.floor(time)
    if (at <= this.watermarkAt) return
    this.watermarkAt = at
    this.idleOut = false
    this.inject({ values: [], marker: { kind: WATERMARK, id: at } })
  }

  /**
   * A source's idleness: it emits nothing for now, so operators downstream leave it out of their
   * watermark until it emits again (a record or a watermark). Declared once until then.
   */
  markIdle(): void {
    if (this.idleOut) return
    this.idleOut = true
    this.inject({ values: [], marker: { kind: WATERMARK_IDLE, id: 0 } })
  }

  deadLetter(where: Where, error: LaminaError, value: unknown): void {
    this.deadLetters++
    this.job.deadLetter(where, error, value)
  }

  emitted(): void {
    if (!this.running) this.wake()
  }

  request(port: string, _value: unknown, options: RequestOptions | undefined, emit: (header: Header) => void): Promise<unknown> {
    const where = { operator: this.info.operator, port, instance: this.info.instance }
    const outlet = this.outlets.get(port)
    if (outlet === undefined) return Promise.reject(new RequestRoutingError(where, 'the port has no link'))
    if (!outlet.routesOneReceiver()) return Promise.reject(new RequestRoutingError(where, 'its link reaches more than one receiver (broadcast or several links)'))
    const timeout = options?.timeout ?? 30_000
    const signal = options?.signal
    return new Promise<unknown>((resolve, reject) => {
      let settled = false
      const settle = (action: () => void): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        this.futures.delete(cancel)
        action()
      }
      const cancel = (error: LaminaError): void => settle(() => reject(error))
      const onAbort = (): void => settle(() => reject(new JobAbortedError(this.job.id, signal?.reason)))
      const timer = setTimeout(() => settle(() => reject(new RequestTimeoutError(where, timeout))), timeout)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.futures.add(cancel)
      const reply: ReplyTo = (outcome) => settle(() => (outcome.ok ? resolve(outcome.value) : reject(new RequestFailedError(where, outcome.error))))
      const header: Header = { reply }
      emit(header)
      this.flushNow()?.catch((error: unknown) => cancel(error instanceof JobAbortedError ? error : new JobAbortedError(this.job.id, error)))
    })
  }

  timer(ms: number, fn: () => unknown, repeat: boolean): TimerHandle {
    const fire = (): void => {
      if (this.finished) return
      this.interrupts.push(fn)
      this.wake()
    }
    let handle: { cancel(): void }
    if (repeat) {
      const id = setInterval(fire, ms)
      handle = { cancel: () => (clearInterval(id), this.timers.delete(handle)) }
    } else {
      const id = setTimeout(() => {
        this.timers.delete(handle)
        fire()
      }, ms)
      handle = { cancel: () => (clearTimeout(id), this.timers.delete(handle)) }
    }
    this.timers.add(handle)
    return { cancel: () => handle.cancel() }
  }

  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const abort = this.job.abortSignal
      if (abort.aborted) return reject(new JobAbortedError(this.job.id, abort.reason))
      const onAbort = (): void => {
        clearTimeout(id)
        reject(new JobAbortedError(this.job.id, abort.reason))
      }
      const id = setTimeout(() => {
        abort.removeEventListener('abort', onAbort)
        resolve()
      }, ms)
      abort.addEventListener('abort', onAbort, { once: true })
    })
  }

  spawn<I extends PortCodecs>(operator: Operator<I, PortCodecs>, options: SpawnOptions | undefined): Spawned<I> {
    return this.job.spawn(this, operator, options)
  }

  /** Registers a spawned child: the driver waits for it before ending, and ends its inputs when its own end. */
  adopt(child: Driver, endInputs: () => void, done: Promise<void>): void {
    this.children.add(child)
    this.childInputs.push(endInputs)
    const release = (): void => {
      this.children.delete(child)
      this.wake()
    }
    done.then(release, release)
  }

  call(name: string, argument: unknown): Promise<unknown> {
    return this.job.call(name, argument, this.info)
  }
}
