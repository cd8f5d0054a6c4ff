// A shard's half of distributed transactions (services/txkv holds the coordinator's half): locks,
// the writes a prepared transaction will make, and transaction status records.
//
// The protocol is optimistic concurrency with two-phase commit through the shards' logs:
// - a transaction reads without locks, noting each key's `modRevision` (0: absent) and each range's
//   keys and revisions;
// - to commit, it prepares every shard it touched (`tx-prepare`): the shard checks that what the
//   transaction read is still current and that no other transaction holds a conflicting lock,
//   then locks the keys and ranges read (shared) and written (exclusive) and keeps the writes.
//   Nothing waits for a lock: a conflict refuses the prepare (no-wait), so there is no deadlock;
// - the transaction's status record lives on its primary shard (the shard of its first written
//   key), created `pending` by that shard's prepare, with the list of participants. The
//   transaction commits the moment its last participant is prepared (parallel commits, as in
//   CockroachDB): a pending record whose participants are all prepared is committed, and
//   `tx-commit` on the primary (pending -> committed, applying the primary's own writes) only
//   records that afterwards. `tx-abort` (pending -> aborted, dropping the primary's own locks) is
//   what a coordinator whose prepare was refused applies. Both go through the primary's log, so
//   exactly one of them wins;
// - whoever finds the locks of a transaction pending past its time limit (its coordinator died)
//   asks every other participant `tx-check`: prepared here, or never (a later prepare is refused).
//   All prepared -> `tx-commit`; any never -> `tx-abort`;
// - `tx-resolve` on each participant then applies the writes (commit) or drops them (abort) and
//   releases the locks. Anyone who finds a lock can resolve it from the record's status.
//   Coordinators batch their resolves and forgets per shard (`tx-finish`, one log entry for many).
// Locks held from prepare to resolve make the validated reads current at the commit point, which
// is what makes committed transactions strictly serializable.
//
// Everything here is deterministic: expiry is decided by whoever asks for `tx-abort`, using the
// record's start time and TTL as the coordinator wrote them.

import * as t from 'io-ts'
import { KvCommandError } from './errors.js'

/** What a transaction read or writes on one shard, as `tx-prepare` carries it. */
export const TxPrepare = t.intersection([
  t.type({
    op: t.literal('tx-prepare'),
    tx: t.string,
    /** The shard and key of the transaction's status record. */
    primary: t.type({ shard: t.string, key: t.string }),
    /** Keys read, each with the `modRevision` seen (0: the key did not exist). */
    reads: t.array(t.type({ key: t.string, modRevision: t.number })),
    /** Keys written: a value to put, or none to delete. */
    writes: t.array(t.intersection([t.type({ key: t.string }), t.partial({ value: t.string })])),
  }),
  t.partial({
    /** Ranges read `[from, to)` (`to` absent: to the end), with every key seen and its revision. */
    ranges: t.array(t.intersection([t.type({ from: t.string, keys: t.array(t.type({ key: t.string, modRevision: t.number })) }), t.partial({ to: t.string })])),
    /** On the primary shard only: the status record to create, pending. */
    record: t.type({ startedAtMs: t.number, ttlMs: t.number, participants: t.array(t.string) }),
    /**
     * The transaction's only participant (one-phase commit): checked as any prepare, then its
     * writes apply at once and its record is created committed; no lock is taken.
     */
    onePhase: t.boolean,
  }),
])
export type TxPrepare = t.TypeOf<typeof TxPrepare>

/** The transaction commands a shard applies. */
export const TxCommand = t.union([
  TxPrepare,
  /** Primary: the commit point (pending -> committed). */
  t.type({ op: t.literal('tx-commit'), tx: t.string }),
  /**
   * Primary: pending -> aborted; with no record yet, an aborted one, so a late prepare cannot
   * create it. With `ifAbsent`, only the latter: a record that exists is left as it is (a reader
   * that found no record must not abort one created since, which may be committed already: its
   * prepares may all have succeeded).
   */
  t.intersection([t.type({ op: t.literal('tx-abort'), tx: t.string }), t.partial({ ifAbsent: t.boolean })]),
  /** Any participant: apply (commit) or drop the transaction's writes here, and release its locks. */
  t.type({ op: t.literal('tx-resolve'), tx: t.string, commit: t.boolean }),
  /** Primary: drop a finished record once every participant resolved. */
  t.type({ op: t.literal('tx-forget'), tx: t.string }),
  /**
   * Any other participant, for whoever recovers an expired transaction: is it prepared here? If
   * not, it never will be (a later prepare is refused), so the answer stays true.
   */
  t.type({ op: t.literal('tx-check'), tx: t.string }),
  /**
   * Many transactions' resolves and forgets in one log entry, in that order (what coordinators do
   * after their answers, batched per shard). `tx` names the batch.
   */
  t.type({
    op: t.literal('tx-finish'),
    tx: t.string,
    resolve: t.array(t.type({ tx: t.string, commit: t.boolean })),
    forget: t.array(t.string),
  }),
])
export type TxCommand = t.TypeOf<typeof TxCommand>

/** A transaction's status, as its record holds it. */
export type TxStatus = 'pending' | 'committed' | 'aborted'

/** A transaction status record (on the primary shard). */
export interface TxRecord {
  readonly tx: string
  status: TxStatus
  /** When the coordinator started the transaction (its clock), and how long it may stay pending. */
  readonly startedAtMs: number
  readonly ttlMs: number
  /** Every shard the transaction prepared, the primary included. */
  readonly participants: readonly string[]
}

/** The lock in the way of a transaction: the key and the transaction holding it (with its primary, to resolve it). */
export interface TxConflict {
  readonly key: string
  readonly holder: string
  readonly primary: { readonly shard: string; readonly key: string }
}

/** What a transaction command did on a shard. */
export interface TxOutcome {
  readonly ok: boolean
  /** The record's status after the command (primary commands), or the status that refused it. */
  readonly status?: TxStatus
  /** A prepare refused: another transaction's lock on this key. */
  readonly conflict?: TxConflict
  /** A prepare refused: this key (or a key of this range, or one that appeared in it) changed since it was read. */
  readonly stale?: string
}

/** What a shard's transactions need of the store: its entries, and writes that bypass locks. */
export interface TxStore {
  /** The key's revision of its last change, or 0 when it does not exist. */
  modRevision(key: string): number
  /** Keys in `[from, to)` with their revisions, in key order. */
  range(from: string, to: string | undefined): { key: string; modRevision: number }[]
  /** Writes a committed transaction's value (undefined: delete). */
  write(key: string, value: string | undefined): void
}

/** One prepared transaction on this shard. */
interface Intent {
  readonly tx: string
  readonly primary: { readonly shard: string; readonly key: string }
  readonly reads: readonly string[]
  readonly writes: readonly { readonly key: string; readonly value?: string }[]
  readonly ranges: readonly { readonly from: string; readonly to?: string }[]
}

/** Resolves and forgets one `tx-finish` carries at most. */
export const TX_FINISH_MAX = 256

/** Finished records kept at most (oldest dropped first) when coordinators die before forgetting them. */
export const TX_RECORDS_KEPT = 100_000

/** The transactions of one shard: prepared intents, the locks they hold, and the records of those whose primary it is. */
export class TxnTable {
  private readonly intents = new Map<string, Intent>()
  /** Key -> the transaction holding its exclusive (write) lock. */
  private readonly writers = new Map<string, string>()
  /** Key -> the transactions holding a shared (read) lock on it. */
  private readonly readers = new Map<string, Set<string>>()
  /** Status records of transactions whose primary this shard is, in creation order. */
  private readonly records = new Map<string, TxRecord>()
  /** Transactions a `tx-check` found unprepared here: their prepares are refused from then on (oldest first). */
  private readonly refused = new Set<string>()

  constructor(private readonly store: TxStore) {}

  /** Checks a decoded command's fields beyond their types (a TxCommand): throws KvCommandError. */
  static check(c: TxCommand): void {
    if (c.tx.length === 0 || c.tx.length > 128) throw new KvCommandError('tx', `must be 1 to 128 characters, got ${c.tx.length}`)
    if (c.op === 'tx-finish') {
      const count = c.resolve.length + c.forget.length
      if (count === 0 || count > TX_FINISH_MAX) throw new KvCommandError('resolve', `a tx-finish carries 1 to ${TX_FINISH_MAX} resolves and forgets, got ${count}`)
      for (const [i, r] of c.resolve.entries())
        if (r.tx.length === 0 || r.tx.length > 128) throw new KvCommandError(`resolve.${i}.tx`, `must be 1 to 128 characters, got ${r.tx.length}`)
      for (const [i, tx] of c.forget.entries()) if (tx.length === 0 || tx.length > 128) throw new KvCommandError(`forget.${i}`, `must be 1 to 128 characters, got ${tx.length}`)
      return
    }
    if (c.op !== 'tx-prepare') return
    const written = new Set<string>()
    for (const [i, w] of c.writes.entries()) {
      if (written.has(w.key)) throw new KvCommandError(`writes.${i}.key`, `writes ${JSON.stringify(w.key)} twice`)
      written.add(w.key)
    }
    if (c.onePhase === true && (c.record === undefined || c.record.participants.length !== 1))
      throw new KvCommandError('onePhase', "a one-phase prepare is its transaction's only participant and carries its record (record.participants: one shard)")
    if (c.record !== undefined) {
      if (!Number.isFinite(c.record.ttlMs) || c.record.ttlMs <= 0) throw new KvCommandError('record.ttlMs', `must be a positive number of milliseconds, got ${c.record.ttlMs}`)
      if (c.writes.length === 0) throw new KvCommandError('record', 'a transaction that writes nothing on its primary has no record there')
    }
  }

  /** The lock on `key` that a plain (non-transactional) write must not break, if any. */
  lockOn(key: string): TxConflict | undefined {
    const holder = this.writers.get(key) ?? this.readers.get(key)?.values().next().value ?? this.rangeHolder(key, undefined)
    return holder === undefined ? undefined : this.conflict(key, holder)
  }

  /** The transaction holding an exclusive lock on `key` (its writes are pending), if any: readers resolve it first. */
  writerOf(key: string): TxConflict | undefined {
    const holder = this.writers.get(key)
    return holder === undefined ? undefined : this.conflict(key, holder)
  }

  /** Every pending write by a prepared transaction into `[from, to)`. */
  writersIn(from: string, to: string | undefined): TxConflict[] {
    const out: TxConflict[] = []
    for (const [key, tx] of this.writers) if (key >= from && (to === undefined || key < to)) out.push(this.conflict(key, tx))
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  }

  /** The status record of `tx`, if this shard is its primary and still keeps it. */
  record(tx: string): TxRecord | undefined {
    return this.records.get(tx)
  }

  /** Applies a transaction command (already checked). */
  apply(c: TxCommand): TxOutcome {
    switch (c.op) {
      case 'tx-prepare':
        return this.prepare(c)
      case 'tx-commit': {
        const record = this.records.get(c.tx)
        if (record === undefined) return { ok: false }
        if (record.status === 'pending') record.status = 'committed'
        // The primary's own writes apply with the commit point (one log entry, not two).
        if (record.status === 'committed') this.resolve(c.tx, true)
        return { ok: record.status === 'committed', status: record.status }
      }
      case 'tx-abort': {
        const record = this.records.get(c.tx)
        if (record === undefined) {
          this.keep({ tx: c.tx, status: 'aborted', startedAtMs: 0, ttlMs: 0, participants: [] })
          return { ok: true, status: 'aborted' }
        }
        if (c.ifAbsent === true) return { ok: record.status === 'aborted', status: record.status }
        if (record.status === 'pending') record.status = 'aborted'
        // The primary's own locks go with the abort (one log entry, not two), as its writes go with the commit.
        if (record.status === 'aborted') this.resolve(c.tx, false)
        return { ok: record.status === 'aborted', status: record.status }
      }
      case 'tx-resolve':
        return this.resolve(c.tx, c.commit)
      case 'tx-finish': {
        for (const r of c.resolve) this.resolve(r.tx, r.commit)
        for (const tx of c.forget) this.forget(tx)
        return { ok: true }
      }
      case 'tx-forget':
        return this.forget(c.tx)
      case 'tx-check': {
        if (this.intents.has(c.tx)) return { ok: true, status: 'pending' }
        this.refused.add(c.tx)
        if (this.refused.size > TX_RECORDS_KEPT) this.refused.delete(this.refused.values().next().value!)
        return { ok: false }
      }
    }
  }

  private forget(tx: string): TxOutcome {
    const record = this.records.get(tx)
    if (record === undefined || record.status === 'pending') return { ok: false, ...(record === undefined ? {} : { status: record.status }) }
    this.records.delete(tx)
    return { ok: true, status: record.status }
  }

  private prepare(c: TxPrepare): TxOutcome {
    // A retried prepare (same transaction) finds its intent: it succeeded the first time.
    if (this.intents.has(c.tx)) return { ok: true, status: 'pending' }
    // A recovering reader found it unprepared here and decided so (tx-check): too late now.
    if (this.refused.has(c.tx)) return { ok: false, status: 'aborted' }
    const record = this.records.get(c.tx)
    if (record !== undefined && record.status !== 'pending') return { ok: false, status: record.status }
    const tx = c.tx
    for (const r of c.reads) {
      const writer = this.writers.get(r.key)
      if (writer !== undefined && writer !== tx) return { ok: false, conflict: this.conflict(r.key, writer) }
      if (this.store.modRevision(r.key) !== r.modRevision) return { ok: false, stale: r.key }
    }
    for (const range of c.ranges ?? []) {
      const now = this.store.range(range.from, range.to)
      for (const { key } of now) {
        const writer = this.writers.get(key)
        if (writer !== undefined && writer !== tx) return { ok: false, conflict: this.conflict(key, writer) }
      }
      const pendingInto = this.pendingWriteInto(range.from, range.to, tx)
      if (pendingInto !== undefined) return { ok: false, conflict: this.conflict(pendingInto.key, pendingInto.tx) }
      const seen = range.keys
      const changed = now.find((k, i) => seen[i]?.key !== k.key || seen[i]?.modRevision !== k.modRevision) ?? (seen.length > now.length ? seen[now.length] : undefined)
      if (changed !== undefined) return { ok: false, stale: changed.key }
    }
    for (const w of c.writes) {
      const writer = this.writers.get(w.key)
      if (writer !== undefined && writer !== tx) return { ok: false, conflict: this.conflict(w.key, writer) }
      for (const reader of this.readers.get(w.key) ?? []) if (reader !== tx) return { ok: false, conflict: this.conflict(w.key, reader) }
      const ranged = this.rangeHolder(w.key, tx)
      if (ranged !== undefined) return { ok: false, conflict: this.conflict(w.key, ranged) }
    }
    // Every check passed. The only participant commits at once: no lock, the record committed.
    if (c.onePhase === true) {
      for (const w of c.writes) this.store.write(w.key, w.value)
      if (c.record !== undefined && record === undefined) this.keep({ tx, status: 'committed', ...c.record })
      return { ok: true, status: 'committed' }
    }
    // Lock, and keep the writes (and, on the primary, the pending record).
    const intent: Intent = {
      tx,
      primary: c.primary,
      reads: c.reads.map((r) => r.key),
      writes: c.writes,
      ranges: (c.ranges ?? []).map(({ from, to }) => (to === undefined ? { from } : { from, to })),
    }
    this.intents.set(tx, intent)
    for (const key of intent.reads) {
      let held = this.readers.get(key)
      if (held === undefined) this.readers.set(key, (held = new Set()))
      held.add(tx)
    }
    for (const w of intent.writes) this.writers.set(w.key, tx)
    if (c.record !== undefined && record === undefined) this.keep({ tx, status: 'pending', ...c.record })
    return { ok: true, status: 'pending' }
  }

  private resolve(tx: string, commit: boolean): TxOutcome {
    const intent = this.intents.get(tx)
    if (intent === undefined) return { ok: true }
    this.intents.delete(tx)
    for (const key of intent.reads) {
      const held = this.readers.get(key)
      held?.delete(tx)
      if (held?.size === 0) this.readers.delete(key)
    }
    for (const w of intent.writes) {
      if (this.writers.get(w.key) === tx) this.writers.delete(w.key)
      if (commit) this.store.write(w.key, w.value)
    }
    return { ok: true }
  }

  /** A transaction other than `except` whose range lock covers `key`. */
  private rangeHolder(key: string, except: string | undefined): string | undefined {
    for (const intent of this.intents.values()) {
      if (intent.tx === except) continue
      for (const r of intent.ranges) if (key >= r.from && (r.to === undefined || key < r.to)) return intent.tx
    }
    return undefined
  }

  /** A pending write by a transaction other than `except` into `[from, to)`: a key about to appear in (or leave) the range. */
  private pendingWriteInto(from: string, to: string | undefined, except: string): { key: string; tx: string } | undefined {
    for (const [key, tx] of this.writers) if (tx !== except && key >= from && (to === undefined || key < to)) return { key, tx }
    return undefined
  }

  private conflict(key: string, holder: string): TxConflict {
    const intent = this.intents.get(holder)
    return { key, holder, primary: intent?.primary ?? { shard: '', key: '' } }
  }

  private keep(record: TxRecord): void {
    this.records.set(record.tx, record)
    if (this.records.size <= TX_RECORDS_KEPT) return
    // Drop the oldest finished record (a pending one is never dropped).
    for (const [tx, r] of this.records) {
      if (r.status === 'pending') continue
      this.records.delete(tx)
      return
    }
  }

  /** The table as plain data, for the shard's snapshots. */
  snapshot(): { intents: Intent[]; records: TxRecord[]; refused: string[] } {
    return { intents: [...this.intents.values()], records: [...this.records.values()], refused: [...this.refused] }
  }

  /** Replaces the table with a snapshot's. */
  load(data: { intents?: Intent[]; records?: TxRecord[]; refused?: string[] } | undefined): void {
    this.intents.clear()
    this.writers.clear()
    this.readers.clear()
    this.records.clear()
    this.refused.clear()
    for (const tx of data?.refused ?? []) this.refused.add(tx)
    for (const record of data?.records ?? []) this.records.set(record.tx, { ...record })
    for (const intent of data?.intents ?? []) {
      this.intents.set(intent.tx, intent)
      for (const key of intent.reads) {
        let held = this.readers.get(key)
        if (held === undefined) this.readers.set(key, (held = new Set()))
        held.add(intent.tx)
      }
      for (const w of intent.writes) this.writers.set(w.key, intent.tx)
    }
  }
}
