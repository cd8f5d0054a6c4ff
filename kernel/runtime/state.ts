// Keyed (or single-slot) operator state with codec-typed snapshots.

import type { Key, StateAccess, StateSnapshot, StateSpec } from '../contracts.js'
import { check, guardOf, renderProblem, type Guard } from '../codec.js'
import { NoKeyInScopeError, StateRestoreError } from '../errors.js'

/** The single slot of an unkeyed operator is stored under this key. */
const SLOT = '\u0000slot'

/**
 * State of one instance. Keyed operators keep one value per key, read and written for the key of
 * the record being handled; unkeyed operators keep a single slot.
 */
export class StateStore<S> implements StateAccess<S> {
  private readonly values = new Map<Key, S>()
  private guard: Guard | undefined
  /** The key of the record being handled; set by the atom before each handler call. */
  current: Key | undefined

  constructor(
    private readonly operator: string,
    private readonly spec: StateSpec<S> | undefined,
    private readonly keyed: boolean,
  ) {}

  private slot(): Key {
    if (!this.keyed) return SLOT
    if (this.current === undefined) throw new NoKeyInScopeError(this.operator)
    return this.current
  }

  private initial(): S {
    return this.spec === undefined ? (undefined as S) : this.spec.init()
  }

  get(): S {
    return this.of(this.slot())
  }

  of(key: Key): S {
    const values = this.values
    let value = values.get(key)
    if (value === undefined && !values.has(key)) {
      value = this.initial()
      values.set(key, value)
    }
    return value as S
  }

  set(value: S): void {
    this.values.set(this.slot(), value)
  }

  update(fn: (value: S) => S): S {
    const key = this.slot()
    const next = fn(this.of(key))
    this.values.set(key, next)
    return next
  }

  delete(): void {
    this.values.delete(this.slot())
  }

  *entries(): IterableIterator<[Key, S]> {
    // The single slot of an unkeyed operator has no key to show: read it with get().
    for (const [key, value] of this.values) if (this.keyed) yield [key, value]
  }

  get size(): number {
    return this.values.size
  }

  snapshot(): StateSnapshot {
    const codec = this.spec?.codec
    const entries: [Key | null, unknown][] = []
    for (const [key, value] of this.values) entries.push([key === SLOT ? null : key, codec === undefined ? value : codec.encode(value)])
    return { operator: this.operator, entries }
  }

  restore(snapshot: StateSnapshot): void {
    const decoded = new Map<Key, S>()
    // A value the codec's compiled guard accepts is already decoded (the kernel's port check does
    // the same): restoring 100,000 keys then costs a guard call each, not a full decode.
    const guard = this.spec === undefined ? undefined : (this.guard ??= guardOf(this.spec.codec))
    for (const [key, encoded] of snapshot.entries) {
      let value = encoded as S
      if (this.spec !== undefined && !guard!(encoded)) {
        const result = this.spec.codec.decode(encoded)
        if (result._tag === 'Left') {
          const problems = check(this.spec.codec, encoded) ?? []
          throw new StateRestoreError(this.operator, `key ${JSON.stringify(key)}: ${problems.map(renderProblem).join('; ')}`)
        }
        value = result.right
      }
      if ((key === null) === this.keyed) throw new StateRestoreError(this.operator, `snapshot is ${key === null ? 'unkeyed' : 'keyed'} but the operator is ${this.keyed ? 'keyed' : 'unkeyed'}`)
      decoded.set(key === null ? SLOT : key, value)
    }
    this.values.clear()
    for (const [key, value] of decoded) this.values.set(key, value)
  }
}
