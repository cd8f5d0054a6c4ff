// Keyed (or single-slot) operator state with codec-typed snapshots and, on request, the changes since the last look.

import type { Key, StateAccess, StateSnapshot, StateSpec } from '../contracts.js'
import { check, guardOf, renderProblem, type Guard } from '../codec.js'
import { NoKeyInScopeError, StateRestoreError } from '../errors.js'

/** The single slot of an unkeyed operator is stored under this key. */
const SLOT = '\u0000slot'

/** Options of a `StateStore`. All optional. */
export interface StateStoreOptions {
  /**
   * Remember which keys were read or written, for `takeChanges()` (a value read may be mutated in
   * place, so reads count). @default false
   */
  readonly trackChanges?: boolean
  /** Told which key's state code outside a record reads (see `AtomObserver.stateKey`). @default none */
  readonly stateKey?: (key: Key | undefined) => void
}

/** State that changed since the last `takeChanges()`: entries to set (encoded by the state codec) and keys deleted; `null` is an unkeyed operator's slot. */
export interface StateChanges {
  readonly set: readonly (readonly [Key | null, unknown])[]
  readonly deleted: readonly (Key | null)[]
}

/**
 * State of one instance, as `ctx.state` shows it. Keyed operators keep one value per key, read and
 * written for the key of the record being handled (`current`, set by the atom before each handler
 * call); unkeyed operators keep a single slot. Snapshots encode values with the state codec.
 *
 * ```ts
 * const state = new StateStore('count', { codec: t.number, init: () => 0 }, true, { trackChanges: true })
 * state.current = 'fig'
 * state.update((n) => n + 1)
 * state.takeChanges() // { set: [['fig', 1]], deleted: [] }
 * ```
 */
export class StateStore<S> implements StateAccess<S> {
  private readonly values = new Map<Key, S>()
  private guard: Guard | undefined
  /** Keys read or written since the last `takeChanges()` (with `trackChanges`). */
  private readonly touched: Set<Key> | undefined
  private readonly stateKey: ((key: Key | undefined) => void) | undefined
  /** The key of the record being handled; set by the atom before each handler call. */
  current: Key | undefined

  constructor(
    private readonly operator: string,
    private readonly spec: StateSpec<S> | undefined,
    private readonly keyed: boolean,
    options: StateStoreOptions = {},
  ) {
    this.touched = options.trackChanges === true ? new Set() : undefined
    this.stateKey = options.stateKey
  }

  private slot(): Key {
    if (!this.keyed) return SLOT
    if (this.current === undefined) throw new NoKeyInScopeError(this.operator)
    return this.current
  }

  private initial(): S {
    return this.spec === undefined ? (undefined as S) : this.spec.init()
  }

  get(): S {
    return this.read(this.slot())
  }

  of(key: Key): S {
    if (this.stateKey !== undefined && this.current === undefined) this.stateKey(key)
    return this.read(key)
  }

  private read(key: Key): S {
    this.touched?.add(key)
    const values = this.values
    let value = values.get(key)
    if (value === undefined && !values.has(key)) {
      value = this.initial()
      values.set(key, value)
    }
    return value as S
  }

  set(value: S): void {
    const key = this.slot()
    this.touched?.add(key)
    this.values.set(key, value)
  }

  update(fn: (value: S) => S): S {
    const key = this.slot()
    const next = fn(this.read(key))
    this.values.set(key, next)
    return next
  }

  delete(): void {
    const key = this.slot()
    this.touched?.add(key)
    this.values.delete(key)
  }

  setOf(key: Key, value: S): void {
    this.touched?.add(key)
    this.values.set(key, value)
  }

  deleteOf(key: Key): void {
    this.touched?.add(key)
    this.values.delete(key)
  }

  entries(): IterableIterator<[Key, S]> {
    // Every value handed out may be mutated: all of them count as changed.
    if (this.touched !== undefined) for (const key of this.values.keys()) this.touched.add(key)
    return this.stateKey !== undefined && this.current === undefined ? this.reported(this.stateKey) : this.listed()
  }

  private *listed(): IterableIterator<[Key, S]> {
    // The single slot of an unkeyed operator has no key to show: read it with get().
    for (const [key, value] of this.values) if (this.keyed) yield [key, value]
  }

  private *reported(stateKey: (key: Key | undefined) => void): IterableIterator<[Key, S]> {
    try {
      for (const entry of this.listed()) {
        stateKey(entry[0])
        yield entry
      }
    } finally {
      stateKey(undefined)
    }
  }

  get size(): number {
    return this.values.size
  }

  /** With `trackChanges`: the entries read or written since the last call, encoded like a snapshot's, and the keys deleted; undefined when nothing was. */
  takeChanges(): StateChanges | undefined {
    const touched = this.touched
    if (touched === undefined || touched.size === 0) return undefined
    const codec = this.spec?.codec
    const set: [Key | null, unknown][] = []
    const deleted: (Key | null)[] = []
    for (const key of touched) {
      const shown = key === SLOT ? null : key
      if (this.values.has(key)) {
        const value = this.values.get(key) as S
        set.push([shown, codec === undefined ? value : codec.encode(value)])
      } else deleted.push(shown)
    }
    touched.clear()
    return { set, deleted }
  }

  snapshot(): StateSnapshot {
    const codec = this.spec?.codec
    const entries: [Key | null, unknown][] = []
    for (const [key, value] of this.values) entries.push([key === SLOT ? null : key, codec === undefined ? value : codec.encode(value)])
    return codec === undefined ? { operator: this.operator, entries } : { operator: this.operator, entries, codec: codec.name }
  }

  restore(snapshot: StateSnapshot): void {
    if (this.spec !== undefined && snapshot.codec !== undefined && snapshot.codec !== this.spec.codec.name) return this.migrate(snapshot)
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
      if ((key === null) === this.keyed)
        throw new StateRestoreError(this.operator, `snapshot is ${key === null ? 'unkeyed' : 'keyed'} but the operator is ${this.keyed ? 'keyed' : 'unkeyed'}`)
      decoded.set(key === null ? SLOT : key, value)
    }
    this.values.clear()
    this.touched?.clear()
    for (const [key, value] of decoded) this.values.set(key, value)
  }

  /** Restores a snapshot taken under another codec through the spec's migration (an upgrade). */
  private migrate(snapshot: StateSnapshot): void {
    const spec = this.spec!
    const migration = spec.migrate
    if (migration === undefined || migration.from.name !== snapshot.codec)
      throw new StateRestoreError(
        this.operator,
        `the snapshot's state codec is ${snapshot.codec} and the operator's is ${spec.codec.name}, with ${migration === undefined ? 'no migration' : `a migration from ${migration.from.name}`}`,
      )
    const converted: [Key | null, unknown][] = []
    for (const [key, encoded] of snapshot.entries) {
      const old = migration.from.decode(encoded)
      if (old._tag === 'Left') {
        const problems = check(migration.from, encoded) ?? []
        throw new StateRestoreError(this.operator, `key ${JSON.stringify(key)} under ${migration.from.name}: ${problems.map(renderProblem).join('; ')}`)
      }
      let value: S
      try {
        value = migration.to(old.right)
      } catch (error) {
        throw new StateRestoreError(
          this.operator,
          `key ${JSON.stringify(key)}: the migration from ${migration.from.name} threw: ${error instanceof Error ? error.message : String(error)}`,
          { cause: error },
        )
      }
      if (!spec.codec.is(value)) {
        const problems = check(spec.codec, spec.codec.encode(value)) ?? []
        throw new StateRestoreError(this.operator, `key ${JSON.stringify(key)}: the migration made a value ${spec.codec.name} refuses: ${problems.map(renderProblem).join('; ')}`)
      }
      converted.push([key, spec.codec.encode(value)])
    }
    this.restore({ operator: snapshot.operator, entries: converted, codec: spec.codec.name })
  }
}
