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

/** Limits, enforced on every command and call (documented in services/kv/README.md). */
export const KV_LIMITS = {
  /** Bytes of a key (UTF-8). */
  keyBytes: 1024,
  /** Bytes of a value (UTF-8). */
  valueBytes: 256 * 1024,
  /** Keys one scan returns at most. */
  scanLimit: 10_000,
} as const

/** A key's current value and its revisions. */
export interface KvEntry {
  readonly key: string
  readonly value: string
  readonly createRevision: number
  readonly modRevision: number
  readonly version: number
}

/** One change, as watches see it. */
export interface KvEvent {
  readonly type: 'put' | 'delete'
  readonly key: string
  /** The value after a put; absent for a delete. */
  readonly value?: string
  readonly revision: number
}

const Command = t.union([
  t.type({ op: t.literal('put'), key: t.string, value: t.string }),
  t.type({ op: t.literal('delete'), key: t.string }),
  t.intersection([
    t.type({ op: t.literal('cas'), key: t.string, value: t.string }),
    // Compare on the current value, on the revision of its last change (0: the key must not exist), or both.
    t.partial({ ifValue: t.string, ifModRevision: t.number }),
  ]),
])
/** A write, as it travels through the log. */
export type KvCommand = t.TypeOf<typeof Command>

/** What a write did. */
export interface KvResult {
  /** False only for a cas whose comparison failed (nothing was written). */
  readonly ok: boolean
  /** The store's revision after the command (unchanged when nothing was written). */
  readonly revision: number
  /** The key before the command, if it existed. */
  readonly prev: KvEntry | undefined
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

  constructor(
    /** Events kept for watches to resume from. @default 10000 */
    private readonly history = 10_000,
  ) {}

  /** The store's revision: the number of writes applied. */
  get revision(): number {
    return this.rev
  }

  /** Checks a command before it is proposed (and again when applied): throws KvCommandError or KvLimitError. */
  static check(command: unknown): KvCommand {
    const decoded = Command.decode(command)
    if (decoded._tag === 'Left') {
      const path =
        decoded.left[0]?.context
          .map((c) => c.key)
          .filter((k) => k !== '' && !/^\d+$/.test(k))
          .join('.') || 'op'
      throw new KvCommandError(path, `not a put, delete or cas command (got ${JSON.stringify(command)?.slice(0, 120)})`)
    }
    const c = decoded.right
    checkKey(c.key)
    if (c.op !== 'delete') checkValue(c.value)
    return c
  }

  /** Applies one committed command. A command that fails its check changes nothing (and throws). */
  apply(command: unknown): KvResult {
    const c = KvState.check(command)
    const prev = this.entries.get(c.key)
    if (c.op === 'cas') {
      const valueOk = c.ifValue === undefined || prev?.value === c.ifValue
      const revOk = c.ifModRevision === undefined || (prev?.modRevision ?? 0) === c.ifModRevision
      if (!valueOk || !revOk) return { ok: false, revision: this.rev, prev }
    }
    if (c.op === 'delete') {
      if (prev === undefined) return { ok: true, revision: this.rev, prev }
      this.rev++
      this.entries.delete(c.key)
      this.record({ type: 'delete', key: c.key, revision: this.rev })
      return { ok: true, revision: this.rev, prev }
    }
    this.rev++
    this.entries.set(c.key, { key: c.key, value: c.value, createRevision: prev?.createRevision ?? this.rev, modRevision: this.rev, version: (prev?.version ?? 0) + 1 })
    this.record({ type: 'put', key: c.key, value: c.value, revision: this.rev })
    return { ok: true, revision: this.rev, prev }
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
    return JSON.stringify({ rev: this.rev, oldest: this.oldestKept, entries: [...this.entries.values()], events: this.events })
  }

  /** Replaces the state with a snapshot's. */
  load(data: string): void {
    const parsed = JSON.parse(data) as { rev: number; oldest: number; entries: KvEntry[]; events: KvEvent[] }
    this.entries.clear()
    for (const e of parsed.entries) this.entries.set(e.key, e)
    this.rev = parsed.rev
    this.oldestKept = parsed.oldest
    this.events = parsed.events
  }

  private record(event: KvEvent): void {
    this.events.push(event)
    if (this.events.length > this.history) {
      const drop = this.events.length - this.history
      this.events = this.events.slice(drop)
      this.oldestKept += drop
    }
  }
}

function checkKey(key: string): void {
  if (key.length === 0) throw new KvCommandError('key', 'must not be empty')
  const bytes = utf8.encode(key).length
  if (bytes > KV_LIMITS.keyBytes) throw new KvLimitError('key', KV_LIMITS.keyBytes, bytes)
}

function checkValue(value: string): void {
  const bytes = utf8.encode(value).length
  if (bytes > KV_LIMITS.valueBytes) throw new KvLimitError('value', KV_LIMITS.valueBytes, bytes)
}
