// Hop events kept for export, and their rendering as Chrome trace event JSON (opens in Perfetto and chrome://tracing).

import type { Hop } from './record.js'

/** One hop as the trace log keeps it: which job, how many traced records the batch held. */
export interface HopEvent {
  readonly hop: Hop
  readonly job: string
  /** Traced records the instance handled in this hop (0 for hops learned from records of other peers). */
  records: number
  /** True for hops run by another peer, learned from the records that reached this one. */
  readonly remote: boolean
}

/**
 * One event of the Chrome trace event format: `X` (complete) events for hops, `M` (metadata)
 * events naming processes (peers) and threads (operator instances).
 * See "Trace Event Format", Google, docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU.
 */
export interface ChromeTraceEvent {
  readonly name: string
  readonly ph: 'X' | 'M'
  readonly pid: number
  readonly tid: number
  readonly cat?: string
  /** Microseconds since the trace's origin (`otherData.originMs`). */
  readonly ts?: number
  /** Microseconds. */
  readonly dur?: number
  readonly args?: { readonly [name: string]: unknown }
}

/** A Chrome trace: the JSON object format, with the hop events of the traced records. */
export interface ChromeTrace {
  readonly traceEvents: readonly ChromeTraceEvent[]
  readonly displayTimeUnit: 'ms'
  readonly otherData: {
    readonly layer: 'metadata'
    /** Milliseconds since the epoch that `ts` 0 stands for. */
    readonly originMs: number
    /** Hop events left out because the log was full (the oldest go first). */
    readonly droppedEvents: number
  }
}

/**
 * A bounded log of hop events: at most `capacity`, the oldest dropped first. Hops are known by
 * identity (this process's) or by peer, operator, instance and time (copies decoded from records
 * of other peers), so each is logged once.
 */
export class TraceLog {
  private events: (HopEvent | undefined)[] = []
  private head = 0
  private size = 0
  dropped = 0
  private readonly local = new WeakSet<Hop>()
  private readonly known = new Set<string>()

  constructor(private readonly capacity: number) {}

  /** Logs a hop of this process. */
  add(hop: Hop, job: string): HopEvent {
    this.local.add(hop)
    this.known.add(signature(hop))
    const event: HopEvent = { hop, job, records: 0, remote: false }
    this.push(event)
    return event
  }

  /** Logs a hop read from a record, unless it is known already. */
  learn(hop: Hop, job: string): void {
    if (this.local.has(hop)) return
    const id = signature(hop)
    if (this.known.has(id)) return
    this.known.add(id)
    this.local.add(hop)
    this.push({ hop, job, records: 0, remote: true })
  }

  private push(event: HopEvent): void {
    if (this.capacity <= 0) return
    if (this.size < this.capacity) {
      this.events.push(event)
      this.size++
      return
    }
    const evicted = this.events[this.head]
    if (evicted !== undefined) this.known.delete(signature(evicted.hop))
    this.events[this.head] = event
    this.head = (this.head + 1) % this.capacity
    this.dropped++
  }

  /** The events, oldest first. */
  list(): HopEvent[] {
    const out: HopEvent[] = []
    for (let i = 0; i < this.size; i++) {
      const event = this.events[(this.head + i) % this.size]
      if (event !== undefined) out.push(event)
    }
    return out
  }

  clear(): void {
    this.events = []
    this.head = 0
    this.size = 0
    this.dropped = 0
    this.known.clear()
  }
}

function signature(hop: Hop): string {
  return `${hop.peer}\u0000${hop.operator}\u0000${hop.instance}\u0000${hop.time}`
}

/**
 * Renders hop events as a Chrome trace: one process per peer, one thread per operator instance,
 * one complete event per hop (the instance working on a batch that held traced records).
 */
export function toChromeTrace(events: readonly HopEvent[], droppedEvents: number): ChromeTrace {
  const origin = events.reduce((min, e) => Math.min(min, e.hop.time), Infinity)
  const originMs = Number.isFinite(origin) ? origin : 0
  const pids = new Map<string, number>()
  const tids = new Map<string, number>()
  const traceEvents: ChromeTraceEvent[] = []
  for (const { hop, job, records, remote } of events) {
    let pid = pids.get(hop.peer)
    if (pid === undefined) {
      pid = pids.size + 1
      pids.set(hop.peer, pid)
      traceEvents.push({ name: 'process_name', ph: 'M', pid, tid: 0, args: { name: `peer ${hop.peer}` } })
    }
    const thread = `${hop.peer}\u0000${hop.operator}#${hop.instance}`
    let tid = tids.get(thread)
    if (tid === undefined) {
      tid = tids.size + 1
      tids.set(thread, tid)
      traceEvents.push({ name: 'thread_name', ph: 'M', pid, tid, args: { name: `${hop.operator}#${hop.instance}` } })
    }
    traceEvents.push({
      name: hop.operator,
      cat: 'lamina.hop',
      ph: 'X',
      ts: round3((hop.time - originMs) * 1000),
      dur: round3(Math.max(0, hop.duration) * 1000),
      pid,
      tid,
      args: { operator: hop.operator, instance: hop.instance, peer: hop.peer, job, ...(remote ? { remote: true } : { records }) },
    })
  }
  return { traceEvents, displayTimeUnit: 'ms', otherData: { layer: 'metadata', originMs, droppedEvents } }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000
}
