// Coordination as a role, not a place: a failover job keeps what its coordinator knows in the KV
// store, so that when the peer coordinating it dies another peer takes the role over and resumes
// the job from its last complete checkpoint.
//
// - The role `job/<lineage>` is held through the store with a fencing token (election.ts). The
//   coordinator claims it at submission; its lease expires when the coordinator dies (or is cut
//   off past the TTL), and a peer that ran a share of the job claims it next.
// - The job's record, `_lamina/job/<lineage>` (JSON, JobRecordCodec): the code's manifest and
//   arguments, who coordinates it with which token, the attempt, the shape (parallelism, peers
//   moved off), the newest complete checkpoint's record (where every snapshot is) and the state.
//   Every write is a compare-and-set on the revision its writer last saw: a successor's first
//   write (its claim of the record) makes every later write of the old coordinator fail, which
//   fences it out of the record even while it still thinks it holds the role.
// - Each attempt is claimed once, create-only, at `_lamina/attempt/<lineage>/<n>`: no two peers
//   ever coordinate the same attempt, and the keys are the record of who coordinated which.
// - Peers running shares admit a coordinator's submissions through a Fence (election.ts): an
//   attempt stamped with an older token than one already admitted is refused.
//
// Compare Flink's JobManager high availability (the job graph and checkpoint pointers in
// ZooKeeper or Kubernetes config maps, a leader elected among standby JobManagers); here every
// peer that runs a share is a standby, and the store is the cluster's own KV service.

import * as t from 'io-ts'
import { Observable } from 'rxjs'
import { check, renderProblem } from '../../kernel/index.js'
import type { KvClient } from '../kv/client.js'
import { claim, holderOf, type Leadership, roleVacated } from '../kv/election.js'
import { CoordinatorFencedError, JobRecordError, UnknownJobError } from './errors.js'
import { CodeManifestCodec } from './job-protocol.js'

const Nullable = <C extends t.Mixed>(codec: C) => t.union([codec, t.null])

/** A failover job's record in the KV store. */
export const JobRecordCodec = t.type({
  lineage: t.string,
  /** The program's name. */
  program: t.string,
  code: CodeManifestCodec,
  args: t.array(t.string),
  /** Who submitted it (a peer, or the operator's CLI). */
  submittedBy: t.string,
  submittedAt: t.number,
  /** The peer coordinating it, and the fencing token it holds the role with. */
  coordinator: t.string,
  token: t.number,
  /** The newest attempt started (claimed at `attemptKey`). */
  attempt: t.number,
  /** Parallelism set by rescales, and peers moved off. */
  parallelism: t.record(t.string, t.number),
  excluded: t.array(t.string),
  /** The peers that may run transforms, when the submission named them. */
  workers: Nullable(t.array(t.string)),
  /** The checkpoints layer's record of the newest complete checkpoint (null: none yet). */
  checkpoint: t.unknown,
  fromSavepoint: Nullable(t.type({ lineage: t.string, checkpoint: t.number })),
  counts: t.type({ recoveries: t.number, rescales: t.number, upgrades: t.number, takeovers: t.number }),
  state: t.keyof({ running: null, finished: null, failed: null, cancelled: null }),
  error: Nullable(t.type({ code: t.string, message: t.string })),
  updatedAt: t.number,
})
export type JobRecord = t.TypeOf<typeof JobRecordCodec>

/** Where a failover job's record lives. */
export function jobRecordKey(lineage: string): string {
  return `_lamina/job/${lineage}`
}

/** The role whose holder coordinates a failover job. */
export function jobRole(lineage: string): string {
  return `job/${lineage}`
}

/** Where attempt `n` of a failover job is claimed by its coordinator (create-only). */
export function attemptKey(lineage: string, n: number): string {
  return `_lamina/attempt/${lineage}/${String(n).padStart(6, '0')}`
}

/** Who claimed an attempt (the value at `attemptKey`). */
export const AttemptClaimCodec = t.type({ coordinator: t.string, token: t.number, at: t.number })
export type AttemptClaim = t.TypeOf<typeof AttemptClaimCodec>

/** A failover job's record and the revision it was read at, or undefined when there is none. */
export async function readJobRecord(kv: KvClient, lineage: string): Promise<{ record: JobRecord; revision: number } | undefined> {
  const key = jobRecordKey(lineage)
  const entry = await kv.get(key)
  if (entry === undefined) return undefined
  let value: unknown
  try {
    value = JSON.parse(entry.value)
  } catch {
    throw new JobRecordError(lineage, key, `is not JSON: ${JSON.stringify(entry.value.slice(0, 80))}`)
  }
  const problems = check(JobRecordCodec, value)
  if (problems !== undefined) throw new JobRecordError(lineage, key, `does not have the record's shape: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
  return { record: value as JobRecord, revision: entry.modRevision }
}

/** Options of a coordination: how long the role outlives its holder's last keep-alive. */
export interface CoordinationOptions {
  /** Milliseconds. Shorter: faster takeover; longer: fewer false ones under load. @default 2000 */
  readonly ttlMs?: number
}

/** What a successor waits for before it claims the role (Coordination.takeOver). */
export interface TakeOverOptions extends CoordinationOptions {
  /** Asked between looks: false once this peer no longer needs to take over (a newer attempt reached it). */
  readonly wanted?: () => boolean
  /** Gives up after this long. @default 120000 */
  readonly timeoutMs?: number
  readonly signal?: AbortSignal
}

/** This peer's hold on a failover job's coordinator role and record. */
export class Coordination {
  private queue: Promise<unknown> = Promise.resolve()
  private fencedBy: CoordinatorFencedError | undefined
  private readonly onFenced: ((error: CoordinatorFencedError) => void)[] = []

  private constructor(
    private readonly kv: KvClient,
    private current: JobRecord,
    private revision: number,
    private readonly leadership: Leadership,
  ) {
    void leadership.lost.then((reason) => this.fence(`its lease on the role could not be kept alive (${reason.message})`))
  }

  /**
   * Claims the role of a new job's coordinator and writes its first record.
   * @throws CoordinatorFencedError when the role or the record exists already (the job id is taken).
   */
  static async begin(
    kv: KvClient,
    init: Omit<JobRecord, 'coordinator' | 'token' | 'attempt' | 'checkpoint' | 'counts' | 'state' | 'error' | 'updatedAt'>,
    self: string,
    options: CoordinationOptions = {},
  ): Promise<Coordination> {
    const leadership = await claim(kv, jobRole(init.lineage), self, { ttlMs: options.ttlMs ?? 2000 })
    if (leadership === undefined) throw new CoordinatorFencedError(init.lineage, self, 0, 'another peer holds the role of its coordinator already')
    const record: JobRecord = {
      ...init,
      coordinator: self,
      token: leadership.token,
      attempt: -1,
      checkpoint: null,
      counts: { recoveries: 0, rescales: 0, upgrades: 0, takeovers: 0 },
      state: 'running',
      error: null,
      updatedAt: Date.now(),
    }
    const written = await kv.cas(jobRecordKey(init.lineage), JSON.stringify(record), { ifModRevision: 0 })
    if (!written.ok) {
      await leadership.resign().catch(() => undefined)
      throw new CoordinatorFencedError(init.lineage, self, leadership.token, `a record exists at ${jobRecordKey(init.lineage)} already`)
    }
    return new Coordination(kv, record, written.revision, leadership)
  }

  /**
   * Takes over the coordination of `lineage` once its coordinator (holding token `token`) is gone:
   * waits until the role is free, claims it, and claims the record with the new token. Resolves
   * undefined when there is nothing to take over: the job ended, another peer took it over first,
   * the coordinator came back with a newer attempt (`wanted`), or `timeoutMs` passed.
   */
  static async takeOver(kv: KvClient, lineage: string, self: string, token: number, options: TakeOverOptions = {}): Promise<Coordination | undefined> {
    const ttlMs = options.ttlMs ?? 2000
    const deadline = Date.now() + (options.timeoutMs ?? 120_000)
    const role = jobRole(lineage)
    for (;;) {
      options.signal?.throwIfAborted()
      if (Date.now() > deadline || options.wanted?.() === false) return undefined
      const found = await readJobRecord(kv, lineage)
      if (found === undefined || found.record.state !== 'running' || found.record.token > token) return undefined
      const holder = await holderOf(kv, role)
      if (holder !== undefined && holder.token > token) return undefined
      if (holder === undefined) {
        const won = await claim(kv, role, self, { ttlMs })
        if (won === undefined) continue
        const now = await readJobRecord(kv, lineage).catch(() => undefined)
        if (now === undefined || now.record.state !== 'running' || now.record.token > token) {
          await won.resign().catch(() => undefined)
          return undefined
        }
        const record: JobRecord = {
          ...now.record,
          coordinator: self,
          token: won.token,
          counts: { ...now.record.counts, takeovers: now.record.counts.takeovers + 1 },
          updatedAt: Date.now(),
        }
        const written = await kv.cas(jobRecordKey(lineage), JSON.stringify(record), { ifModRevision: now.revision })
        if (!written.ok) {
          await won.resign().catch(() => undefined)
          return undefined
        }
        return new Coordination(kv, record, written.revision, won)
      }
      // The coordinator's lease is still alive: it may be dying (the lease runs out), or alive and
      // about to start the next attempt (then `wanted` turns false). Look again when the role goes.
      await roleVacated(kv, role, Math.max(250, ttlMs / 2), options.signal)
    }
  }

  /** The record as this coordinator last wrote it. */
  get record(): JobRecord {
    return this.current
  }

  /** The fencing token this coordinator holds the role with. */
  get token(): number {
    return this.current.token
  }

  /** Set once this coordinator lost its role: it must stop coordinating. */
  get fenced(): CoordinatorFencedError | undefined {
    return this.fencedBy
  }

  /** Calls `handler` once this coordinator is fenced (at once when it is already). */
  whenFenced(handler: (error: CoordinatorFencedError) => void): void {
    if (this.fencedBy !== undefined) handler(this.fencedBy)
    else this.onFenced.push(handler)
  }

  /**
   * Writes `patch` into the record (a compare-and-set on the revision this coordinator wrote last;
   * writes go in order).
   * @throws CoordinatorFencedError when another peer wrote the record since (it coordinates the job now).
   */
  update(patch: Partial<Omit<JobRecord, 'lineage' | 'coordinator' | 'token'>>): Promise<void> {
    const run = async (): Promise<void> => {
      if (this.fencedBy !== undefined) throw this.fencedBy
      const next: JobRecord = { ...this.current, ...patch, updatedAt: Math.max(Date.now(), this.current.updatedAt + 1) }
      let written: { ok: boolean; revision: number }
      try {
        written = await this.kv.cas(jobRecordKey(next.lineage), JSON.stringify(next), { ifModRevision: this.revision })
      } catch (error) {
        // The write may have been applied although its answer was lost: then the record is ours.
        const now = await readJobRecord(this.kv, next.lineage).catch(() => undefined)
        if (now === undefined || now.record.token !== next.token || now.record.updatedAt !== next.updatedAt) throw error
        written = { ok: true, revision: now.revision }
      }
      if (!written.ok) throw this.fence('another peer wrote the job record since: it coordinates the job now')
      this.revision = written.revision
      this.current = next
    }
    const done = this.queue.then(run)
    this.queue = done.catch(() => undefined)
    return done
  }

  /**
   * Claims attempt `n` (create-only: one coordinator per attempt, ever) and records it.
   * @throws CoordinatorFencedError when another coordinator claimed it.
   */
  async claimAttempt(n: number): Promise<void> {
    if (this.fencedBy !== undefined) throw this.fencedBy
    const claimRecord: AttemptClaim = { coordinator: this.current.coordinator, token: this.token, at: Date.now() }
    const key = attemptKey(this.current.lineage, n)
    const created = await this.kv.cas(key, JSON.stringify(claimRecord), { ifModRevision: 0 })
    if (!created.ok) {
      const mine = await this.kv.get(key)
      const held = mine === undefined ? undefined : (JSON.parse(mine.value) as AttemptClaim)
      // A lost answer to our own claim is still ours.
      if (held?.token !== this.token) throw this.fence(`attempt ${n} is claimed by ${held?.coordinator ?? 'another peer'} (token ${held?.token ?? '?'})`)
    }
    await this.update({ attempt: n })
  }

  /** Records how the job ended and gives the role up. A fenced coordinator writes nothing. */
  async end(state: 'finished' | 'failed' | 'cancelled', error?: { readonly code: string; readonly message: string }): Promise<void> {
    try {
      if (this.fencedBy === undefined) await this.update({ state, error: error === undefined ? null : { code: error.code, message: error.message } })
    } finally {
      await this.leadership.resign().catch(() => undefined)
    }
  }

  private fence(reason: string): CoordinatorFencedError {
    if (this.fencedBy === undefined) {
      this.fencedBy = new CoordinatorFencedError(this.current.lineage, this.current.coordinator, this.token, reason)
      for (const handler of this.onFenced.splice(0)) handler(this.fencedBy)
    }
    return this.fencedBy
  }
}

/** Every attempt of `lineage` claimed so far, oldest first: who coordinated each, with which token. */
export async function attemptClaims(kv: KvClient, lineage: string): Promise<{ readonly attempt: number; readonly claim: AttemptClaim }[]> {
  const prefix = `_lamina/attempt/${lineage}/`
  const entries = await kv.scan({ prefix })
  return entries.map((e) => ({ attempt: Number(e.key.slice(prefix.length)), claim: JSON.parse(e.value) as AttemptClaim }))
}

/** A failover job followed from anywhere in the cluster, through its record (`Cluster.attach`). */
export interface AttachedJob {
  readonly id: string
  /** The record as it is now (a linearizable read). */
  record(): Promise<JobRecord>
  /** Every change of the record from now on (who coordinates, the attempt, checkpoints, the state). */
  readonly changes: Observable<JobRecord>
  /**
   * Resolves with the record once the job ended (`finished`, `failed` or `cancelled`: its `state`
   * and `error` say which); the output is wherever its sinks wrote it.
   */
  readonly done: Promise<JobRecord>
}

/**
 * Attaches to failover job `lineage` through its record in the KV store, whoever coordinates it
 * now and however often that changed.
 * @throws UnknownJobError when the store has no record of it (it was not submitted with `failover`).
 */
export async function attachJob(kv: KvClient, lineage: string): Promise<AttachedJob> {
  const key = jobRecordKey(lineage)
  const read = async (): Promise<JobRecord> => {
    const found = await readJobRecord(kv, lineage)
    if (found === undefined) throw new UnknownJobError(lineage, `the KV store has no record of it at ${key} (only jobs submitted with failover have one)`)
    return found.record
  }
  await read()
  const changes = new Observable<JobRecord>((subscriber) => {
    const subscription = kv.watch(key).subscribe({
      next: (event) => {
        if (event.key !== key || event.type !== 'put' || event.value === undefined) return
        const value = JSON.parse(event.value) as unknown
        if (check(JobRecordCodec, value) === undefined) subscriber.next(value as JobRecord)
      },
      error: (error: unknown) => subscriber.error(error),
    })
    return () => subscription.unsubscribe()
  })
  const done = new Promise<JobRecord>((resolve, reject) => {
    // The watch first, then a read: an end between the two is seen by one of them.
    const subscription = changes.subscribe({
      next: (record) => {
        if (record.state === 'running') return
        subscription.unsubscribe()
        resolve(record)
      },
      error: reject,
    })
    read().then((record) => {
      if (record.state === 'running') return
      subscription.unsubscribe()
      resolve(record)
    }, reject)
  })
  done.catch(() => undefined)
  return { id: lineage, record: read, changes, done }
}
