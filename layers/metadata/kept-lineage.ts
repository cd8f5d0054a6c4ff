// The lineage an operator instance keeps for emissions that derive from more than one record: per key, or per instance.

import type { Key } from '../../kernel/index.js'
import { Accumulator, type Hop, type RecordMetadata } from './record.js'
import type { TracerShared } from './tracer-shared.js'

/**
 * What a stateful instance's outputs derive from beyond the record being handled. A keyed operator
 * keeps the traced records of each key apart (up to `maxKeys`; further keys share one lineage,
 * marked approximate); another stateful operator keeps one lineage for the instance. Emissions
 * outside a batch (`end`, timers) take the lineage of the key whose state the code reads (see
 * `setEndKey`), or of every key together.
 */
export class KeptLineage {
  private readonly keys: Map<Key, Accumulator> | undefined
  private overflow: Accumulator | undefined
  private readonly slot: Accumulator | undefined
  private endKey: Key | undefined
  private endKeySet = false
  /** Merges so far: the union of every key's lineage is rebuilt only after new ones. */
  private merged = 0
  private union: { merged: number; accumulator: Accumulator } | undefined

  constructor(
    private readonly shared: TracerShared,
    keyed: boolean,
    stateful: boolean,
  ) {
    this.keys = keyed ? new Map() : undefined
    this.slot = !keyed && stateful ? new Accumulator(shared) : undefined
  }

  /** Merges a traced record handled for `key` (keyed operators) or by the instance (other stateful ones). */
  add(key: Key | undefined, m: RecordMetadata): void {
    if (this.keys !== undefined) {
      this.entry(key).add(m)
      this.merged++
    } else if (this.slot !== undefined) {
      this.slot.add(m)
      this.merged++
    }
  }

  /** Merges the traced records of a whole batch (a batch handler's): a keyed operator cannot tell their keys apart. */
  absorb(records: Accumulator): void {
    if (this.keys !== undefined) this.overflowEntry().absorb(records)
    else this.slot?.absorb(records)
    this.merged++
  }

  /** The metadata of an output made from `key`'s lineage by the instance whose hop is `hop`. */
  ofKey(key: Key | undefined, hop: Hop | undefined): RecordMetadata {
    return this.entry(key).snapshot(hop)!
  }

  /** The metadata of an output made from the instance's lineage by the instance whose hop is `hop`. */
  ofSlot(hop: Hop | undefined): RecordMetadata {
    return this.slot!.snapshot(hop)!
  }

  /** What an emission outside a batch derives from; undefined when nothing traced was kept. */
  free(): Accumulator | undefined {
    const source = this.keys !== undefined ? (this.endKeySet ? (this.keys.get(this.endKey!) ?? this.overflow) : this.unionOfKeys()) : this.slot
    return source === undefined || source.trace === undefined ? undefined : source
  }

  /** Sets the key whose lineage emissions outside a batch take (undefined: every key's). */
  setEndKey(key: Key | undefined): void {
    this.endKey = key
    this.endKeySet = key !== undefined
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
}
