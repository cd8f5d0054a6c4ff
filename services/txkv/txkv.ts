// The transactional KV store: interactive transactions over any keys of any shards of a KV store,
// strictly serializable, with the coordinator's half of the protocol in services/kv/txn.ts.
//
// A transaction reads through linearizable `txread`s (no locks), keeping each key's modRevision
// and each range's keys, and buffers its writes. Commit:
// - read-only: the reads are read again; if nothing changed (and no transaction committed writes
//   to them meanwhile) the transaction held a consistent snapshot the whole time between the two
//   reads (the double-collect argument), and commits without writing anything: it never blocks a
//   writer;
// - otherwise every shard it touched is prepared at once; the primary (the shard of its first
//   written key, in key order) creates the status record, listing the participants. The commit
//   point is the last participant's prepare (parallel commits, after CockroachDB's): transact
//   answers then, claiming it only within the transaction's time limit. In the background, the
//   primary records the commit (`tx-commit`, applying its writes), each other participant resolves
//   (applies its writes, drops the locks) and the record is forgotten, batched per shard with
//   other transactions' (finisher.ts). A prepare refused for a conflict aborts the transaction
//   (no-wait: nothing waits for a lock, so there is no deadlock) and transact runs it again after
//   a randomized, growing pause (against livelock), within a budget of attempts and time.
// Whoever finds another transaction's lock (a read, a prepare) resolves it from that transaction's
// record: applies it if committed, drops it if aborted, and, if it stayed pending past its time
// limit (its coordinator died), recovers it: asks every other participant whether it is prepared
// (`tx-check`, which also forbids a later prepare), then commits it if all are, aborts it if not.
// So no transaction stays half-applied.

import { randomBytes } from 'node:crypto'
import type { KvClient } from '../kv/client.js'
import { KvCommandError } from '../kv/errors.js'
import type { KvTxRead } from '../kv/protocol.js'
import type { KvEntry } from '../kv/state.js'
import type { TxConflict, TxPrepare, TxStatus } from '../kv/txn.js'
import { Finisher } from './finisher.js'
import { TxAbortedError, TxClosedError, TxConflictError, TxIndeterminateError, TxLimitError, TxRetriesExhaustedError } from './errors.js'

/** Limits of one transaction, enforced with TxLimitError (services/txkv/README.md). */
export const TXKV_LIMITS = {
  /** Keys read or written (each key of a range read counts). */
  keys: 1_000,
  /** Bytes of keys and values written. */
  bytes: 1024 * 1024,
  /** From the first read to the commit point. A transaction pending longer may be aborted by anyone. */
  durationMs: 5_000,
} as const

/** How transact retries a transaction that lost to another. */
export interface TxRetryOptions {
  /** Attempts at most (the first included). @default 20 */
  readonly attempts?: number
  /** Milliseconds from the first attempt after which no new one starts. @default 10000 */
  readonly budgetMs?: number
  /** The first pause; each next one doubles, up to `maxDelayMs`, each drawn at random below that. @default 4 */
  readonly baseDelayMs?: number
  /** @default 250 */
  readonly maxDelayMs?: number
}

/**
 * The isolation a transaction gets (services/txkv/README.md):
 * - `strict-serializable` (the default): as if transactions ran one at a time, in an order that
 *   respects real time. Every read is validated and locked at prepare.
 * - `snapshot`: snapshot isolation. Reads see one consistent snapshot, taken during the
 *   transaction; two transactions that write the same key do not both commit (first committer
 *   wins); write skew is allowed (two transactions that each read what the other writes may both
 *   commit). Cheaper where a transaction reads keys it does not write: those are checked by reading
 *   them again, without a lock, so writers of them are not refused, and shards only read are not
 *   prepared. Blind writes are checked as if read (a concurrent committed write refuses them).
 */
export type TxIsolation = 'strict-serializable' | 'snapshot'

/** Options of one `transact`: its retries and its isolation. */
export interface TxOptions extends TxRetryOptions {
  /** @default the TxKv's `isolation`, else 'strict-serializable' */
  readonly isolation?: TxIsolation
}

/** What one attempt of a transaction did, for tests and history recorders. */
export interface TxAttempt {
  readonly tx: string
  readonly attempt: number
  readonly outcome: 'committed' | 'conflict' | 'aborted' | 'indeterminate' | 'failed'
  readonly error?: Error
}

/** Options of a TxKv. */
export interface TxKvOptions {
  readonly retry?: TxRetryOptions
  /** The isolation of every transaction that does not ask for one. @default 'strict-serializable' */
  readonly isolation?: TxIsolation
  /** Called after every attempt (a history recorder, metrics). */
  readonly onAttempt?: (attempt: TxAttempt) => void
  /** Milliseconds a peer's clock may be off another's when deciding that a transaction expired. @default 1000 */
  readonly clockSkewMs?: number
}

/**
 * One operation of a one-shot transaction (`TxKv.run`): read a key, compare it (`if`: its value
 * must be `value`, or absent when `value` is undefined), write or delete it.
 */
export type TxOp =
  | { readonly op: 'get'; readonly key: string }
  | { readonly op: 'if'; readonly key: string; readonly value: string | undefined }
  | { readonly op: 'put'; readonly key: string; readonly value: string }
  | { readonly op: 'delete'; readonly key: string }

/** What a one-shot transaction did. */
export interface TxRunResult {
  /** False when a compare failed: nothing was written. */
  readonly committed: boolean
  /** The value of every key read (`get` and `if`), null when absent. */
  readonly reads: Readonly<Record<string, string | null>>
  /** The compare that failed, with the value found (undefined: absent). */
  readonly failed?: { readonly key: string; readonly expected: string | undefined; readonly actual: string | undefined }
}

/** A scan of a transaction: a prefix, or the half-open range `[from, to)`. */
export type TxScan = { readonly prefix: string } | { readonly from: string; readonly to?: string }

/** A key's value as a transaction sees it. */
export interface TxEntry {
  readonly key: string
  readonly value: string
}

/**
 * One transaction: reads see the store as of a consistent point plus the transaction's own writes;
 * writes are applied at commit, all or nothing. Made by `TxKv.transact`; not used after it ends.
 */
export class Transaction {
  /** Keys read: their modRevision when read (0: absent), by shard. */
  private readonly reads = new Map<string, { shard: string; modRevision: number }>()
  private readonly ranges: { shard: string; from: string; to: string | undefined; keys: { key: string; modRevision: number }[] }[] = []
  /** Writes in order of first write: a value, or undefined for a delete. */
  private readonly writes = new Map<string, string | undefined>()
  private ended = false
  private bytes = 0
  readonly startedAtMs = Date.now()

  constructor(
    /** The transaction's id: its locks and record are named by it. */
    readonly id: string,
    private readonly store: TxKv,
    /** The isolation it commits with. */
    readonly isolation: TxIsolation = 'strict-serializable',
  ) {}

  /** The key's value (this transaction's own write, if any), or undefined. */
  async get(key: string): Promise<string | undefined> {
    this.open()
    if (this.writes.has(key)) return this.writes.get(key)
    const entry = await this.read(key)
    return entry?.value
  }

  /** Keys of a prefix or range in key order with their values, this transaction's writes included. */
  async scan(scan: TxScan): Promise<TxEntry[]> {
    this.open()
    const from = 'prefix' in scan ? scan.prefix : scan.from
    const to = 'prefix' in scan ? prefixEnd(scan.prefix) : scan.to
    const found = new Map<string, string>()
    await Promise.all(
      this.store.kv.shardIds.map(async (shard) => {
        const range = await this.store.readRange(shard, from, to)
        this.ranges.push({ shard, from, to, keys: range.map((e) => ({ key: e.key, modRevision: e.modRevision })) })
        for (const e of range) found.set(e.key, e.value)
      }),
    )
    this.count()
    for (const [key, value] of this.writes) {
      if (key < from || (to !== undefined && key >= to)) continue
      if (value === undefined) found.delete(key)
      else found.set(key, value)
    }
    return [...found].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, value]) => ({ key, value }))
  }

  /** Sets the key's value, at commit. */
  put(key: string, value: string): void {
    this.open()
    this.write(key, value)
  }

  /** Deletes the key, at commit. */
  delete(key: string): void {
    this.open()
    this.write(key, undefined)
  }

  private write(key: string, value: string | undefined): void {
    if (key.length === 0) throw new KvCommandError('key', 'must not be empty')
    this.bytes += byteLength(key) + (value === undefined ? 0 : byteLength(value))
    this.writes.set(key, value)
    if (this.bytes > TXKV_LIMITS.bytes) throw new TxLimitError('bytes', TXKV_LIMITS.bytes, this.bytes)
    this.count()
  }

  private async read(key: string): Promise<KvEntry | undefined> {
    const shard = this.store.kv.shardOf(key)
    const entry = await this.store.readKey(shard, key)
    const seen = this.reads.get(key)
    const modRevision = entry?.modRevision ?? 0
    // Reading a key twice and seeing it change is a conflict already.
    if (seen !== undefined && seen.modRevision !== modRevision) throw new TxConflictError(key, undefined)
    this.reads.set(key, { shard, modRevision })
    this.count()
    return entry
  }

  private count(): void {
    const keys = new Set([...this.reads.keys(), ...this.writes.keys(), ...this.ranges.flatMap((r) => r.keys.map((k) => k.key))]).size
    if (keys > TXKV_LIMITS.keys) throw new TxLimitError('keys', TXKV_LIMITS.keys, keys)
    const elapsed = Date.now() - this.startedAtMs
    if (elapsed > TXKV_LIMITS.durationMs) throw new TxLimitError('durationMs', TXKV_LIMITS.durationMs, elapsed)
  }

  private open(): void {
    if (this.ended) throw new TxClosedError(this.id)
  }

  /** Commits (see the header). Called once, by transact. */
  async commit(): Promise<void> {
    this.open()
    this.ended = true
    this.count()
    if (this.writes.size === 0) return this.validateReadOnly(new Set())
    if (this.isolation === 'snapshot') await this.takeSnapshot()
    const byShard = new Map<string, Omit<TxPrepare, 'op' | 'tx' | 'primary'> & { reads: { key: string; modRevision: number }[]; writes: { key: string; value?: string }[] }>()
    const part = (shard: string) => {
      let p = byShard.get(shard)
      if (p === undefined) byShard.set(shard, (p = { reads: [], writes: [], ranges: [] }))
      return p
    }
    // Under snapshot isolation only the written keys are validated at prepare (the rest was checked
    // by takeSnapshot), so shards that were only read take no part.
    const snapshot = this.isolation === 'snapshot'
    for (const [key, { shard, modRevision }] of this.reads) if (!snapshot || this.writes.has(key)) part(shard).reads.push({ key, modRevision })
    if (!snapshot) for (const r of this.ranges) part(r.shard).ranges!.push(r.to === undefined ? { from: r.from, keys: r.keys } : { from: r.from, to: r.to, keys: r.keys })
    const written = [...this.writes.keys()].sort()
    for (const key of written) {
      const value = this.writes.get(key)
      part(this.store.kv.shardOf(key)).writes.push(value === undefined ? { key } : { key, value })
    }
    const primary = { shard: this.store.kv.shardOf(written[0]!), key: written[0]! }
    const participants = [...byShard.keys()]
    const prepare = (shard: string): TxPrepare => {
      const p = byShard.get(shard)!
      return {
        op: 'tx-prepare',
        tx: this.id,
        primary,
        reads: p.reads,
        writes: p.writes,
        ...(p.ranges!.length === 0 ? {} : { ranges: p.ranges }),
        ...(shard === primary.shard ? { record: { startedAtMs: this.startedAtMs, ttlMs: TXKV_LIMITS.durationMs, participants } } : {}),
        ...(onePhase ? { onePhase } : {}),
      }
    }
    // One shard only: one-phase commit (the prepare applies the writes; nothing else to do but
    // forget the record, in the background).
    const onePhase = participants.length === 1
    const kv = this.store.kv
    const deadline = this.startedAtMs + TXKV_LIMITS.durationMs
    // Every participant at once. The primary's prepare creates the record every lock points to; a
    // reader who finds another participant's lock before that record exists writes an aborted one
    // (see TxKv.resolve), which makes the primary refuse the prepare: the transaction aborts, safely.
    const targets = failpointAt('after-prepare-primary') ? [primary.shard] : participants
    const results = await Promise.all(
      targets.map((shard) =>
        kv.tx(shard, prepare(shard)).then(
          (r) => ({ shard, r }),
          (error: unknown) => ({ shard, error: asError(error) }),
        ),
      ),
    )
    if (targets.length < participants.length) failpoint('after-prepare-primary')
    const only = results[0]
    if (onePhase && only !== undefined && 'r' in only && (only.r.ok || only.r.tx?.status === 'committed')) {
      this.store.forgetLater(primary.shard, this.id)
      return
    }
    // The commit point: the last participant prepared (parallel commits). Claimed only within the
    // time limit, before which nobody may recover the transaction (TxKv.resolve).
    if (results.every((one) => 'r' in one && one.r.ok) && Date.now() < deadline) {
      failpoint('after-prepare')
      this.store.finish(this.id, primary.shard, participants)
      return
    }
    // Not committed, or not within the limit. A prepare with no answer may have applied: its locks
    // are dropped with the others'. A primary that refused created no record, and a late copy of
    // its prepare is answered from the same request id: nobody can commit the transaction then.
    const prepared = results.flatMap((one) => (!('r' in one) || one.r.ok ? [one.shard] : []))
    const primaryRefused = results.some((one) => one.shard === primary.shard && 'r' in one && !one.r.ok)
    let status: string | undefined = primaryRefused ? 'aborted' : undefined
    if (!primaryRefused) {
      try {
        // Wins over a recovery's tx-commit, or loses to it (every participant prepared after all).
        status = (await kv.tx(primary.shard, { op: 'tx-abort', tx: this.id })).tx?.status
      } catch (error) {
        throw new TxIndeterminateError(this.id, asError(error).message)
      }
    }
    if (status === 'committed') {
      this.store.finish(this.id, primary.shard, participants)
      return
    }
    // Aborted (the abort dropped the primary's own locks): drop the others'.
    const release = prepared.filter((shard) => primaryRefused || shard !== primary.shard)
    await Promise.all(release.map((shard) => this.store.finisher.resolve(shard, this.id, false).catch(() => undefined)))
    const failed = results.find((one) => 'error' in one)
    if (failed !== undefined && 'error' in failed) throw failed.error
    const refusal = results.find((one) => 'r' in one && !one.r.ok)
    if (refusal !== undefined && 'r' in refusal) {
      const tx = refusal.r.tx
      if (tx?.conflict !== undefined) {
        // Help the holder along (it may be a dead coordinator's), so that the retry can win.
        await this.store.resolve(refusal.shard, tx.conflict).catch(() => undefined)
        throw new TxConflictError(tx.conflict.key, tx.conflict.holder)
      }
      if (tx?.stale !== undefined) throw new TxConflictError(tx.stale, undefined)
      throw new TxAbortedError(this.id, `shard ${refusal.shard} refused the prepare (${tx?.status ?? 'no record'})`)
    }
    throw new TxAbortedError(this.id, `its prepares took past its time limit of ${TXKV_LIMITS.durationMs} ms`)
  }

  /**
   * Snapshot isolation, before the prepares: the blind writes' keys are read (their revisions are
   * checked at prepare, as if read at the start), then everything read but not written is read
   * again. Unchanged, it was all current at one moment between the two reads: the snapshot. The
   * written keys are checked at prepare, later, so they were current at that moment too.
   */
  private async takeSnapshot(): Promise<void> {
    await Promise.all([...this.writes.keys()].filter((key) => !this.reads.has(key)).map((key) => this.read(key)))
    await this.validateReadOnly(new Set(this.writes.keys()))
  }

  /**
   * Reads again every key and range read, except `written`: throws TxConflictError if any changed,
   * or has a prepared write, since it was read.
   */
  private async validateReadOnly(written: ReadonlySet<string>): Promise<void> {
    const kv = this.store.kv
    const byShard = new Map<string, string[]>()
    for (const [key, { shard }] of this.reads) if (!written.has(key)) byShard.set(shard, [...(byShard.get(shard) ?? []), key])
    const shards = new Set([...byShard.keys(), ...this.ranges.map((r) => r.shard)])
    await Promise.all(
      [...shards].map(async (shard) => {
        const keys = byShard.get(shard) ?? []
        const ranges = this.ranges.filter((r) => r.shard === shard)
        const again = await kv.txRead(shard, { keys, ranges: ranges.map((r) => (r.to === undefined ? { from: r.from } : { from: r.from, to: r.to })) })
        keys.forEach((key, i) => {
          const now = again.entries[i]?.modRevision ?? 0
          if (now !== this.reads.get(key)!.modRevision) throw new TxConflictError(key, undefined)
          // A transaction that committed a write here but has not resolved it yet changed it too.
          const writer = again.writers[i]
          if (writer !== null && writer !== undefined) throw new TxConflictError(key, writer.holder)
        })
        ranges.forEach((r, i) => {
          const now = again.ranges[i]!
          const same = now.entries.length === r.keys.length && now.entries.every((e, j) => e.key === r.keys[j]!.key && e.modRevision === r.keys[j]!.modRevision)
          if (!same) throw new TxConflictError(r.from, undefined)
          const writer = now.writers[0]
          if (writer !== undefined) throw new TxConflictError(writer.key, writer.holder)
        })
      }),
    )
  }
}

/**
 * A transactional KV store over the shards of a KV store (a KvClient of `startKv`):
 *
 * ```ts
 * const db = new TxKv(kv)
 * await db.transact(async (tx) => {
 *   const a = Number((await tx.get('acct/a')) ?? 0)
 *   const b = Number((await tx.get('acct/b')) ?? 0)
 *   tx.put('acct/a', String(a - 10))
 *   tx.put('acct/b', String(b + 10))
 * })
 * ```
 */
export class TxKv {
  private readonly clientId = randomBytes(6).toString('hex')
  private transactions = 0
  /** Resolves and forgets, batched per shard (finisher.ts). */
  readonly finisher: Finisher

  constructor(
    /** The KV store's client: routing, retries and leaders are its business. */
    readonly kv: KvClient,
    private readonly options: TxKvOptions = {},
  ) {
    this.finisher = new Finisher(kv)
  }

  /**
   * Runs `fn` in a transaction and commits it; on a retryable failure (a conflict, an abort) runs
   * it again after a randomized pause, within the retry budget. Resolves with `fn`'s result once a
   * run committed. `fn` may run more than once: keep its side effects in the transaction.
   *
   * @throws TxRetriesExhaustedError when every attempt lost (its cause is the last error).
   * @throws TxLimitError, TxIndeterminateError, or what `fn` throws, without retrying.
   */
  async transact<T>(fn: (tx: Transaction) => Promise<T>, options: TxOptions = {}): Promise<T> {
    const retry = { ...this.options.retry, ...options }
    const attempts = retry.attempts ?? 20
    const budgetMs = retry.budgetMs ?? 10_000
    const base = retry.baseDelayMs ?? 4
    const max = retry.maxDelayMs ?? 250
    const started = performance.now()
    for (let attempt = 1; ; attempt++) {
      const tx = new Transaction(`${this.clientId}-${++this.transactions}`, this, options.isolation ?? this.options.isolation ?? 'strict-serializable')
      try {
        const result = await fn(tx)
        await tx.commit()
        this.options.onAttempt?.({ tx: tx.id, attempt, outcome: 'committed' })
        return result
      } catch (error) {
        const e = asError(error)
        const retryable = (e as { retryable?: unknown }).retryable === true && !(e instanceof TxIndeterminateError)
        this.options.onAttempt?.({
          tx: tx.id,
          attempt,
          outcome: e instanceof TxConflictError ? 'conflict' : e instanceof TxAbortedError ? 'aborted' : e instanceof TxIndeterminateError ? 'indeterminate' : 'failed',
          error: e,
        })
        const elapsed = performance.now() - started
        if (!retryable) throw e
        if (attempt >= attempts || elapsed >= budgetMs) throw new TxRetriesExhaustedError(attempt, elapsed, { cause: e })
        await pause(Math.random() * Math.min(max, base * 2 ** (attempt - 1)))
      }
    }
  }

  /**
   * A one-shot transaction over any keys: every `get` and `if` is read first; if every compare
   * holds, every `put` and `delete` is applied, all in one transaction (all or none). A failed
   * compare writes nothing and says which (`committed: false`). Retried as `transact` is.
   *
   * ```ts
   * await db.run([{ op: 'if', key: 'lock', value: undefined }, { op: 'put', key: 'lock', value: 'me' }])
   * ```
   */
  async run(ops: readonly TxOp[], options: TxOptions = {}): Promise<TxRunResult> {
    return this.transact(async (tx) => {
      const reads: Record<string, string | null> = {}
      for (const o of ops) {
        if (o.op !== 'get' && o.op !== 'if') continue
        const actual = await tx.get(o.key)
        reads[o.key] = actual ?? null
        if (o.op === 'if' && actual !== o.value) return { committed: false, reads, failed: { key: o.key, expected: o.value, actual } }
      }
      for (const o of ops) {
        if (o.op === 'put') tx.put(o.key, o.value)
        else if (o.op === 'delete') tx.delete(o.key)
      }
      return { committed: true, reads }
    }, options)
  }

  /** A key's committed value, resolving a transaction that committed a write to it first. */
  async readKey(shard: string, key: string): Promise<KvEntry | undefined> {
    for (let round = 0; ; round++) {
      const read = await this.kv.txRead(shard, { keys: [key] })
      const writer = read.writers[0]
      if (writer === null || writer === undefined || !(await this.resolve(shard, writer))) return read.entries[0] ?? undefined
      if (round >= 3) throw new TxConflictError(key, writer.holder)
    }
  }

  /** A range's committed entries on one shard, resolving committed transactions' writes into it first. */
  async readRange(shard: string, from: string, to: string | undefined): Promise<KvEntry[]> {
    for (let round = 0; ; round++) {
      const read: KvTxRead = await this.kv.txRead(shard, { ranges: [to === undefined ? { from } : { from, to }] })
      const range = read.ranges[0]!
      let changed = false
      for (const writer of range.writers) changed = (await this.resolve(shard, writer)) || changed
      if (!changed) return [...range.entries]
      if (round >= 3) throw new TxConflictError(range.writers[0]!.key, range.writers[0]!.holder)
    }
  }

  /**
   * Settles the lock `found` on `shard` from its transaction's record: applies it if the
   * transaction committed, drops it if it aborted, and aborts it first if it stayed pending past
   * its time limit. Resolves with whether the lock is gone (a pending, live transaction's stays).
   */
  async resolve(shard: string, found: TxConflict): Promise<boolean> {
    const { holder, primary } = found
    if (primary.shard === '') return false
    const read = await this.kv.txRead(primary.shard, { records: [holder] })
    let status = read.records[0]?.status
    const record = read.records[0]
    if (status === 'pending' && record !== null && record !== undefined) {
      const expired = Date.now() > record.startedAtMs + record.ttlMs + (this.options.clockSkewMs ?? 1000)
      if (!expired) return false
      status = await this.recover(holder, primary.shard, record.participants)
    } else if (status === undefined) {
      // No record: the holder's primary prepare had not applied (or it was forgotten after every
      // participant resolved). An aborted record forbids it from appearing later; but a record
      // created since is left alone (`ifAbsent`): its transaction may have committed already, at
      // its last prepare, and only a recovery past its time limit may decide it.
      status = (await this.kv.tx(primary.shard, { op: 'tx-abort', tx: holder, ifAbsent: true })).tx?.status
    }
    if (status !== 'committed' && status !== 'aborted') return false
    await this.finisher.resolve(shard, holder, status === 'committed')
    return true
  }

  /**
   * Decides a transaction whose coordinator stopped short (pending past its time limit): it
   * committed if every participant is prepared (parallel commits), else it never will be. Each
   * other participant is asked `tx-check`, which also forbids a prepare from arriving later; the
   * answer is recorded on the primary, where a commit and an abort have one winner.
   */
  private async recover(tx: string, primary: string, participants: readonly string[]): Promise<TxStatus | undefined> {
    const checks = await Promise.all(participants.filter((shard) => shard !== primary).map((shard) => this.kv.tx(shard, { op: 'tx-check', tx })))
    const all = checks.every((c) => c.tx?.ok === true)
    return (await this.kv.tx(primary, all ? { op: 'tx-commit', tx } : { op: 'tx-abort', tx })).tx?.status
  }

  /** Resolves still in flight (see `finish`). */
  private readonly finishing = new Set<Promise<void>>()

  /**
   * After the commit point (every participant prepared), in the background: the primary records
   * the commit and applies its writes, then the other participants apply theirs, then the record
   * goes. A participant that does not answer keeps its locks until a reader resolves them from the
   * record (or recovers the transaction, when even the primary did not answer), which then stays.
   */
  finish(tx: string, primary: string, participants: readonly string[]): void {
    const others = participants.filter((shard) => shard !== primary)
    const done = (async () => {
      const status = (await this.kv.tx(primary, { op: 'tx-commit', tx }).catch(() => undefined))?.tx?.status
      if (status !== 'committed') return
      failpoint('after-commit')
      const resolved = await Promise.all(
        others.map((shard) =>
          this.finisher.resolve(shard, tx, true).then(
            () => true,
            () => false,
          ),
        ),
      )
      if (resolved.every(Boolean)) await this.finisher.forget(primary, tx).catch(() => undefined)
    })()
    this.finishing.add(done)
    void done.finally(() => this.finishing.delete(done))
  }

  /** Drops a one-phase transaction's committed record, in the background (batched; `settled` waits for it). */
  forgetLater(shard: string, tx: string): void {
    const done = this.finisher.forget(shard, tx).catch(() => undefined)
    this.finishing.add(done)
    void done.finally(() => this.finishing.delete(done))
  }

  /** Resolves once every committed transaction's participants were told (or failed to answer). */
  async settled(): Promise<void> {
    while (this.finishing.size > 0) await Promise.all([...this.finishing])
  }
}

/**
 * A coordinator's death where it hurts most, for fault tests (as etcd's gofail failpoints): with
 * LAMINA_TXKV_FAILPOINT=after-prepare-primary (it prepares the primary only, as if it died before
 * its other prepares went out: recovery aborts), after-prepare (every shard prepared, which is the
 * commit point, and nothing recorded: recovery commits) or after-commit (the primary recorded the
 * commit, nothing else resolved), the process SIGKILLs itself there. Unset, this does nothing.
 */
function failpoint(at: Failpoint): void {
  if (failpointAt(at)) process.kill(process.pid, 'SIGKILL')
}

type Failpoint = 'after-prepare-primary' | 'after-prepare' | 'after-commit'

function failpointAt(at: Failpoint): boolean {
  return process.env['LAMINA_TXKV_FAILPOINT'] === at
}

/** The first string after every string that starts with `prefix` (the end of a prefix scan). */
function prefixEnd(prefix: string): string | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    const code = prefix.charCodeAt(i)
    if (code < 0xffff) return prefix.slice(0, i) + String.fromCharCode(code + 1)
  }
  return undefined
}

const utf8 = new TextEncoder()
function byteLength(s: string): number {
  return utf8.encode(s).length
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error))
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
