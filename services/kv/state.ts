// The KV store's state machine: what every replica applies, in log order, to the commands a Raft
// group commits. Deterministic (no clock, no randomness), so every replica holds the same state at
// the same log index.
//
// As in etcd's MVCC model, one store-wide revision counts the writes. Each key keeps the revision
// that created it (`createRevision`), the revision of its last change (`modRevision`) and its
// number of changes (`version`). Every change is also an event, kept in a bounded history from
// which watches resume at a revision. Compaction drops old events, and a resume below what is kept
// fails with KvCompactedError rather than skip events silently.

import * as t from 'io-ts'
import { KvCommandError, KvCompactedError, KvLimitError } from './errors.js'
import { type TxCommand, TxCommand as TxCommandCodec, type TxConflict, type TxOutcome, type TxRecord, TxnTable } from './txn.js'

/** Limits, enforced on every command and call (documented in services/kv/README.md). */
export const KV_LIMITS = {
  /** Bytes of a key (UTF-8). */
  keyBytes: 1024,
  /** Bytes of a value (UTF-8). */
  valueBytes: 256 * 1024,
  /** Keys one scan returns at most. */
  scanLimit: 10_000,
  /** Bytes of one request on the wire (a put of the largest key and value fits). */
  requestBytes: 512 * 1024,
  /** Shortest and longest lease TTL, in milliseconds. */
  minLeaseTtlMs: 1000,
  maxLeaseTtlMs: 24 * 3600 * 1000,
  /** Request ids each shard remembers, so that a retried write is applied once. */
  requestIds: 100_000,
} as const

/** A key's current value and its revisions. */
export interface KvEntry {
  readonly key: string
  readonly value: string
  readonly createRevision: number
  readonly modRevision: number
  readonly version: number
  /** The lease the key is attached to: it is deleted when the lease expires or is revoked. */
  readonly lease?: string
}

/** One change, as watches see it. */
export interface KvEvent {
  readonly type: 'put' | 'delete'
  readonly key: string
  /** The value after a put; absent for a delete. */
  readonly value?: string
  readonly revision: number
}

const Command = t.intersection([
  t.union([
    t.intersection([t.type({ op: t.literal('put'), key: t.string, value: t.string }), t.partial({ lease: t.string })]),
    t.type({ op: t.literal('delete'), key: t.string }),
    t.intersection([
      t.type({ op: t.literal('cas'), key: t.string, value: t.string }),
      // Compare on the current value, on the revision of its last change (0: the key must not exist), or both.
      t.partial({ ifValue: t.string, ifModRevision: t.number, lease: t.string }),
    ]),
    // Leases (as etcd's): a TTL the leader counts down; keys put with the lease go when it does.
    t.type({ op: t.literal('grant'), lease: t.string, ttlMs: t.number }),
    t.type({ op: t.literal('revoke'), lease: t.string }),
  ]),
  // A request id: a command retried with the same one is applied once (the Raft thesis's client sessions, §6.3).
  t.partial({ rid: t.string }),
])
/** A write, as it travels through the log. */
export type KvCommand = t.TypeOf<typeof Command>

/** A transaction command (services/kv/txn.ts), as it travels through the log. */
export type TxShardCommand = TxCommand & { readonly rid?: string }

/** What a write did. */
export interface KvResult {
  /** False only for a cas whose comparison failed (nothing was written). */
  readonly ok: boolean
  /** The store's revision after the command (unchanged when nothing was written). */
  readonly revision: number
  /** The key before the command, if it existed. */
  readonly prev: KvEntry | undefined
  /** Set when a put or cas named a lease the shard does not hold (nothing was written). */
  readonly missingLease?: string
  /**
   * Set on the answer to a command retried with a request id the shard had applied already: `ok`
   * and `revision` are the first answer's; `prev` is not kept for retries (it is undefined).
   */
  readonly duplicate?: true
  /** Set when a put, delete or cas found its key locked by a transaction in progress (nothing was written). */
  readonly locked?: TxConflict
  /** What a transaction command (`tx-…`) did. */
  readonly tx?: TxOutcome
}

/** A lease as the state machine keeps it: its TTL and the keys attached to it. */
export interface KvLease {
  readonly id: string
  readonly ttlMs: number
  readonly keys: readonly string[]
}

/** Options of a scan: a prefix, or a half-open key range `[from, to)`, and a page size. */
export type KvScan = ({ readonly prefix: string } | { readonly from: string; readonly to?: string }) & { readonly limit?: number }

const utf8 = new TextEncoder()

/** The state machine of one KV shard. */
export class KvState {
  private readonly entries = new Map<string, KvEntry>()
  private rev = 0
  /** Events of revisions `oldest` .. `rev`, in order. */
  private events: KvEvent[] = []
  private oldestKept = 1
  private readonly leaseKeys = new Map<string, { ttlMs: number; keys: Set<string> }>()
  /**
   * What the newest commands that carried a request id did, oldest first (bounded:
   * KV_LIMITS.requestIds): `ok` and the revision, without `prev`, so that the table (which every
   * snapshot holds) stays small.
   */
  private readonly done = new Map<string, { readonly ok: boolean; readonly revision: number; readonly missingLease?: string; readonly tx?: TxOutcome }>()
  /** Transactions prepared here, their locks, and the status records of those whose primary this shard is. */
  private readonly txns = new TxnTable({
    modRevision: (key) => this.entries.get(key)?.modRevision ?? 0,
    range: (from, to) =>
      [...this.entries.keys()]
        .filter((k) => k >= from && (to === undefined || k < to))
        .sort()
        .map((key) => ({ key, modRevision: this.entries.get(key)!.modRevision })),
    write: (key, value) => {
      if (value === undefined) this.remove(key)
      else this.put(key, value, undefined)
    },
  })

  constructor(
    /** Events kept for watches to resume from. @default 10000 */
    private readonly history = 10_000,
  ) {}

  /** The store's revision: the number of writes applied. */
  get revision(): number {
    return this.rev
  }

  /** Checks a command before it is proposed (and again when applied): throws KvCommandError or KvLimitError. */
  static check(command: unknown): KvCommand | TxShardCommand {
    const op = typeof command === 'object' && command !== null ? (command as { op?: unknown }).op : undefined
    if (typeof op === 'string' && op.startsWith('tx-')) {
      const decoded = t.intersection([TxCommandCodec, t.partial({ rid: t.string })]).decode(command)
      if (decoded._tag === 'Left') throw new KvCommandError(fieldPath(decoded.left) || 'op', `not a transaction command (got ${JSON.stringify(command)?.slice(0, 120)})`)
      TxnTable.check(decoded.right)
      if (decoded.right.op === 'tx-prepare') {
        for (const r of decoded.right.reads) checkKey(r.key)
        for (const w of decoded.right.writes) {
          checkKey(w.key)
          if (w.value !== undefined) checkValue(w.value)
        }
      }
      return decoded.right
    }
    const decoded = Command.decode(command)
    if (decoded._tag === 'Left') {
      const path = fieldPath(decoded.left) || 'op'
      throw new KvCommandError(path, `not a put, delete, cas, grant or revoke command (got ${JSON.stringify(command)?.slice(0, 120)})`)
    }
    const c = decoded.right
    if (c.op === 'grant' || c.op === 'revoke') {
      checkLease(c.lease)
      if (c.op === 'grant' && (!Number.isInteger(c.ttlMs) || c.ttlMs < KV_LIMITS.minLeaseTtlMs || c.ttlMs > KV_LIMITS.maxLeaseTtlMs))
        throw new KvCommandError('ttlMs', `must be a whole number of milliseconds from ${KV_LIMITS.minLeaseTtlMs} to ${KV_LIMITS.maxLeaseTtlMs}, got ${c.ttlMs}`)
      return c
    }
    checkKey(c.key)
    if (c.op !== 'delete') checkValue(c.value)
    if (c.op !== 'delete' && c.lease !== undefined) checkLease(c.lease)
    return c
  }

  /** Applies one committed command. A command that fails its check changes nothing (and throws). */
  apply(command: unknown): KvResult {
    const c = KvState.check(command)
    if (c.rid === undefined) return this.applyOnce(c)
    const seen = this.done.get(c.rid)
    if (seen !== undefined) return { ...seen, prev: undefined, duplicate: true }
    const result = this.applyOnce(c)
    this.done.set(c.rid, {
      ok: result.ok,
      revision: result.revision,
      ...(result.missingLease === undefined ? {} : { missingLease: result.missingLease }),
      ...(result.tx === undefined ? {} : { tx: result.tx }),
    })
    if (this.done.size > KV_LIMITS.requestIds) this.done.delete(this.done.keys().next().value!)
    return result
  }

  private applyOnce(c: KvCommand | TxShardCommand): KvResult {
    if (c.op.startsWith('tx-')) {
      const tx = this.txns.apply(c as TxShardCommand)
      return { ok: tx.ok, revision: this.rev, prev: undefined, tx }
    }
    c = c as KvCommand
    if (c.op === 'grant') {
      const held = this.leaseKeys.get(c.lease)
      if (held === undefined) this.leaseKeys.set(c.lease, { ttlMs: c.ttlMs, keys: new Set() })
      else held.ttlMs = c.ttlMs
      return { ok: true, revision: this.rev, prev: undefined }
    }
    if (c.op === 'revoke') {
      const held = this.leaseKeys.get(c.lease)
      this.leaseKeys.delete(c.lease)
      for (const key of [...(held?.keys ?? [])].sort()) this.remove(key)
      return { ok: held !== undefined, revision: this.rev, prev: undefined }
    }
    const prev = this.entries.get(c.key)
    const locked = this.txns.lockOn(c.key)
    if (locked !== undefined) return { ok: false, revision: this.rev, prev, locked }
    if (c.op !== 'delete' && c.lease !== undefined && !this.leaseKeys.has(c.lease)) return { ok: false, revision: this.rev, prev, missingLease: c.lease }
    if (c.op === 'cas') {
      const valueOk = c.ifValue === undefined || prev?.value === c.ifValue
      const revOk = c.ifModRevision === undefined || (prev?.modRevision ?? 0) === c.ifModRevision
      if (!valueOk || !revOk) return { ok: false, revision: this.rev, prev }
    }
    if (c.op === 'delete') {
      if (prev !== undefined) this.remove(c.key)
      return { ok: true, revision: this.rev, prev }
    }
    this.put(c.key, c.value, c.lease)
    return { ok: true, revision: this.rev, prev }
  }

  /** Writes a key: one revision, one event, attached to `lease` (which the shard holds) if given. */
  private put(key: string, value: string, lease: string | undefined): void {
    const prev = this.entries.get(key)
    this.rev++
    if (prev?.lease !== undefined) this.leaseKeys.get(prev.lease)?.keys.delete(key)
    if (lease !== undefined) this.leaseKeys.get(lease)!.keys.add(key)
    const entry: KvEntry = { key, value, createRevision: prev?.createRevision ?? this.rev, modRevision: this.rev, version: (prev?.version ?? 0) + 1 }
    this.entries.set(key, lease === undefined ? entry : { ...entry, lease })
    this.record({ type: 'put', key, value, revision: this.rev })
  }

  /** The transaction whose pending writes hold `key` (a reader resolves it before trusting the value), if any. */
  writerOf(key: string): TxConflict | undefined {
    return this.txns.writerOf(key)
  }

  /** Every pending transactional write into `[from, to)` (`to` absent: to the end), existing key or not. */
  writersIn(from: string, to: string | undefined): TxConflict[] {
    return this.txns.writersIn(from, to)
  }

  /** The status record of transaction `tx`, if this shard is its primary and keeps it. */
  txRecord(tx: string): TxRecord | undefined {
    const record = this.txns.record(tx)
    return record === undefined ? undefined : { ...record }
  }

  /** The leases the shard holds, with their keys. */
  leases(): KvLease[] {
    return [...this.leaseKeys].map(([id, l]) => ({ id, ttlMs: l.ttlMs, keys: [...l.keys] }))
  }

  /** Each lease's id and TTL, without copying its keys (the leader's countdown reads this every tick). */
  *leaseTtls(): IterableIterator<[string, number]> {
    for (const [id, l] of this.leaseKeys) yield [id, l.ttlMs]
  }

  /** True when the shard holds lease `id`. */
  hasLease(id: string): boolean {
    return this.leaseKeys.has(id)
  }

  /** The lease `id`, if the shard holds it. */
  lease(id: string): KvLease | undefined {
    const l = this.leaseKeys.get(id)
    return l === undefined ? undefined : { id, ttlMs: l.ttlMs, keys: [...l.keys] }
  }

  /** Deletes a key that exists: one revision, one event, detached from its lease. */
  private remove(key: string): void {
    const prev = this.entries.get(key)
    if (prev === undefined) return
    if (prev.lease !== undefined) this.leaseKeys.get(prev.lease)?.keys.delete(key)
    this.rev++
    this.entries.delete(key)
    this.record({ type: 'delete', key, revision: this.rev })
  }

  get(key: string): KvEntry | undefined {
    checkKey(key)
    return this.entries.get(key)
  }

  /** Keys in the prefix or range, in key order (by UTF-16 code units), at most `limit` (default and maximum KV_LIMITS.scanLimit). */
  scan(scan: KvScan): KvEntry[] {
    const limit = scan.limit ?? KV_LIMITS.scanLimit
    if (!Number.isInteger(limit) || limit < 1) throw new KvCommandError('limit', `must be a whole number >= 1, got ${limit}`)
    if (limit > KV_LIMITS.scanLimit) throw new KvLimitError('limit', KV_LIMITS.scanLimit, limit)
    const inside = 'prefix' in scan ? (k: string) => k.startsWith(scan.prefix) : (k: string) => k >= scan.from && (scan.to === undefined || k < scan.to)
    return [...this.entries.keys()]
      .filter(inside)
      .sort()
      .slice(0, limit)
      .map((k) => this.entries.get(k)!)
  }

  /** The events after `revision` (watch resumption): all of them, in order, or KvCompactedError if some are gone. */
  eventsAfter(revision: number): KvEvent[] {
    if (revision + 1 < this.oldestKept) throw new KvCompactedError(revision + 1, this.oldestKept)
    return this.events.slice(Math.max(0, revision + 1 - this.oldestKept))
  }

  /** The whole state as text (for Raft snapshots). */
  snapshot(): string {
    return JSON.stringify({
      rev: this.rev,
      oldest: this.oldestKept,
      entries: [...this.entries.values()],
      events: this.events,
      leases: this.leases().map(({ id, ttlMs }) => ({ id, ttlMs })),
      done: [...this.done],
      txns: this.txns.snapshot(),
    })
  }

  /** Replaces the state with a snapshot's. */
  load(data: string): void {
    const parsed = JSON.parse(data) as {
      rev: number
      oldest: number
      entries: KvEntry[]
      events: KvEvent[]
      leases?: { id: string; ttlMs: number }[]
      done?: [string, { ok: boolean; revision: number }][]
      txns?: Parameters<TxnTable['load']>[0]
    }
    this.entries.clear()
    this.leaseKeys.clear()
    this.done.clear()
    for (const [rid, result] of parsed.done ?? []) this.done.set(rid, result)
    for (const l of parsed.leases ?? []) this.leaseKeys.set(l.id, { ttlMs: l.ttlMs, keys: new Set() })
    for (const e of parsed.entries) {
      this.entries.set(e.key, e)
      if (e.lease !== undefined) this.leaseKeys.get(e.lease)?.keys.add(e.key)
    }
    this.rev = parsed.rev
    this.oldestKept = parsed.oldest
    this.events = parsed.events
    this.txns.load(parsed.txns)
  }

  private record(event: KvEvent): void {
    this.events.push(event)
    // Trimmed in batches (a quarter of the history at a time), so a write costs O(1) amortized.
    if (this.events.length > this.history + Math.max(1, this.history >> 2)) {
      const drop = this.events.length - this.history
      this.events = this.events.slice(drop)
      this.oldestKept += drop
    }
  }
}

/** The field path of the first decoding error (`reads.0.key`), without io-ts's union and index noise. */
function fieldPath(errors: t.Errors): string {
  return (
    errors[0]?.context
      .map((c) => c.key)
      .filter((k) => k !== '' && !/^\d+$/.test(k))
      .join('.') ?? ''
  )
}

function checkKey(key: string): void {
  if (key.length === 0) throw new KvCommandError('key', 'must not be empty')
  const bytes = utf8.encode(key).length
  if (bytes > KV_LIMITS.keyBytes) throw new KvLimitError('key', KV_LIMITS.keyBytes, bytes)
}

function checkLease(lease: string): void {
  if (lease.length === 0 || lease.length > 64) throw new KvCommandError('lease', `must be 1 to 64 characters, got ${lease.length}`)
}

function checkValue(value: string): void {
  const bytes = utf8.encode(value).length
  if (bytes > KV_LIMITS.valueBytes) throw new KvLimitError('value', KV_LIMITS.valueBytes, bytes)
}
