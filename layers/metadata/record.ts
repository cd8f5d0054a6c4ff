// Provenance records: what the metadata layer piggybacks on each envelope, and how lineage is read from it.

import type { Header } from '../../kernel/index.js'

/** The header field (`Header.fields.metadata`) the layer's records travel under: the layer's name. */
export const FIELD = 'metadata'

/** One operator instance a record went through. */
export interface Hop {
  readonly operator: string
  readonly instance: number
  /** The peer that ran the instance (the layer's `peer` option there). */
  readonly peer: string
  /** When the instance began the batch that held the record: milliseconds since the epoch, fractional. */
  readonly time: number
  /** Milliseconds the instance spent on that batch; 0 while unknown (sources, or a batch still running when the record left). */
  readonly duration: number
}

/**
 * The provenance one record carries in `Header.fields.metadata`. Plain JSON: it crosses peers in
 * DATA frames as it is.
 */
export interface RecordMetadata {
  /**
   * The trace the record belongs to: the lineage id of the source record it descends from. A
   * record made from several inputs (an aggregate's output) carries the trace of its first input.
   */
  readonly trace: string
  /**
   * Lineage ids of the source records that produced this record, `${operator}#${instance}:${seq}`
   * (the seq-th record that source instance emitted). At most the layer's `maxInputs`.
   */
  readonly inputs: readonly string[]
  /** Contributions of further source records, left out by the bound (one that contributed twice may count twice). */
  readonly dropped?: number
  /** The operator instances the record (or, for an aggregate, its inputs) went through, in order. */
  readonly hops: readonly Hop[]
  /** True when `inputs` may name more records than produced this one (see the layer's `maxKeys`). */
  readonly approximate?: boolean
}

/** One operator instance, as a lineage names it. */
export interface OperatorInstance {
  readonly operator: string
  readonly instance: number
  readonly peer: string
}

/** What `lineage()` answers: which inputs and which operators produced a record. */
export interface Lineage {
  readonly trace: string
  /** Lineage ids of the source records that produced it. */
  readonly inputs: readonly string[]
  /** Contributing source records left out of `inputs` by the bound. */
  readonly dropped: number
  /** The operator instances that produced it, each once, in the order of their first hop. */
  readonly operators: readonly OperatorInstance[]
  readonly hops: readonly Hop[]
  /** True when `inputs` is a superset of the records that produced it. */
  readonly approximate: boolean
}

/**
 * True when `value` has the shape of a record's metadata. Checked on every record read from a
 * header: fields that came from another peer are only JSON until then.
 */
export function isRecordMetadata(value: unknown): value is RecordMetadata {
  if (typeof value !== 'object' || value === null) return false
  const m = value as { trace?: unknown; inputs?: unknown; hops?: unknown }
  return typeof m.trace === 'string' && Array.isArray(m.inputs) && Array.isArray(m.hops)
}

/** The metadata a header carries, or undefined (no header, no field, or a field of the wrong shape). */
export function metadataIn(header: Header | undefined): RecordMetadata | undefined {
  const fields = header?.fields
  if (fields === undefined) return undefined
  const m = fields[FIELD]
  return isRecordMetadata(m) ? m : undefined
}

/** A header carrying `metadata`, keeping whatever else `header` carries (a reply path, other layers' fields). */
export function withMetadata(header: Header | undefined, metadata: RecordMetadata): Header {
  if (header === undefined) return { fields: { [FIELD]: metadata } }
  return { ...header, fields: { ...header.fields, [FIELD]: metadata } }
}

/** The lineage answer for one record's metadata. */
export function lineageOf(m: RecordMetadata): Lineage {
  const operators: OperatorInstance[] = []
  const seen = new Set<string>()
  for (const hop of m.hops) {
    const id = `${hop.operator}#${hop.instance}@${hop.peer}`
    if (seen.has(id)) continue
    seen.add(id)
    operators.push({ operator: hop.operator, instance: hop.instance, peer: hop.peer })
  }
  return { trace: m.trace, inputs: m.inputs, dropped: m.dropped ?? 0, operators, hops: m.hops, approximate: m.approximate === true }
}

/** A hop whose duration is filled in when its batch is done (records share one hop object per batch). */
export class OpenHop implements Hop {
  duration = 0
  constructor(
    readonly operator: string,
    readonly instance: number,
    readonly peer: string,
    readonly time: number,
  ) {}
}

/** Milliseconds since the epoch with sub-millisecond precision (comparable across processes of one host). */
export function now(): number {
  return performance.timeOrigin + performance.now()
}

/** Bounds on what records and accumulators keep. */
export interface Bounds {
  readonly maxInputs: number
  readonly maxHops: number
}

/** `hops` followed by `hop`, keeping at most `max` (the first hop and the most recent ones). */
export function appendHop(hops: readonly Hop[], hop: Hop, max: number): Hop[] {
  if (hops.length < max) {
    const out = hops.slice()
    out.push(hop)
    return out
  }
  return [hops[0]!, ...hops.slice(hops.length - max + 2), hop]
}

/**
 * The merged provenance of several records: a keyed aggregate keeps one per key, a stateful
 * operator one per instance. Inputs stay distinct and bounded; hops keep one per operator instance.
 */
export class Accumulator {
  trace: string | undefined
  readonly inputs: string[] = []
  dropped = 0
  readonly hops: Hop[] = []
  approximate = false
  /** Records merged so far. */
  count = 0
  // Records from one upstream batch or one source record share their arrays: skip what was just merged.
  private lastInputs: readonly string[] | undefined
  private lastHops: readonly Hop[] | undefined
  private cached: RecordMetadata | undefined
  private cachedCount = -1
  private cachedHop: Hop | undefined

  constructor(private readonly bounds: Bounds) {}

  add(m: RecordMetadata): void {
    this.count++
    this.trace ??= m.trace
    if (m.approximate === true) this.approximate = true
    if (m.dropped !== undefined) this.dropped += m.dropped
    const ids = m.inputs
    if (ids !== this.lastInputs) {
      this.lastInputs = ids
      const inputs = this.inputs
      const max = this.bounds.maxInputs
      for (let i = 0; i < ids.length; i++) {
        // Once full, ids are counted without comparing: comparing costs more than the answer is worth.
        if (inputs.length >= max) {
          this.dropped += ids.length - i
          break
        }
        const id = ids[i]!
        if (!inputs.includes(id)) inputs.push(id)
      }
    }
    const hops = m.hops
    if (hops !== this.lastHops) {
      this.lastHops = hops
      for (let i = 0; i < hops.length; i++) mergeHop(this.hops, hops[i]!, this.bounds.maxHops)
    }
  }

  /** Merges everything another accumulator holds. */
  absorb(other: Accumulator): void {
    if (other.trace === undefined) return
    this.add({ trace: other.trace, inputs: other.inputs, dropped: other.dropped, hops: other.hops, approximate: other.approximate })
    this.count += other.count - 1
  }

  /** The metadata of a record made from everything merged so far, by the instance whose hop is `hop` (undefined: no hop added). */
  snapshot(hop: Hop | undefined): RecordMetadata | undefined {
    if (this.trace === undefined) return undefined
    if (this.cached !== undefined && this.cachedCount === this.count && this.cachedHop === hop) return this.cached
    const hops = hop === undefined ? this.hops.slice() : appendHop(this.hops, hop, this.bounds.maxHops)
    const m: RecordMetadata = {
      trace: this.trace,
      inputs: this.inputs.slice(),
      ...(this.dropped > 0 ? { dropped: this.dropped } : {}),
      hops,
      ...(this.approximate ? { approximate: true } : {}),
    }
    this.cached = m
    this.cachedCount = this.count
    this.cachedHop = hop
    return m
  }
}

/** Adds `hop` to `hops` unless its operator instance is there already. */
function mergeHop(hops: Hop[], hop: Hop, max: number): void {
  for (let i = 0; i < hops.length; i++) {
    const h = hops[i]!
    if (h === hop || (h.instance === hop.instance && h.operator === hop.operator && h.peer === hop.peer)) return
  }
  if (hops.length < max) hops.push(hop)
}
