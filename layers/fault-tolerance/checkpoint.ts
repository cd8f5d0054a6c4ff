// The checkpoint half of the fault tolerance layer: aligned checkpoint barriers (asynchronous
// barrier snapshots, after Carbone et al., "Lightweight Asynchronous Snapshots for Distributed
// Dataflows", the scheme Flink uses), snapshots kept in the embedded store on their peer and copied
// to another, transactional sinks, and resumption of a restarted job from the last complete checkpoint.
//
// How it fits together, per job:
// - the submitter's share runs the coordinator: every `intervalMs` it asks each peer to inject
//   barrier n at its sources (`JobView.inject`); the kernel aligns barriers at every instance and
//   calls `Instance.marker`, where this layer takes the instance's snapshot synchronously and
//   persists it in the background (local store, then `replicas` other peers, then an ack);
// - checkpoint n is complete when every instance acknowledged it (or finished earlier, leaving a
//   final snapshot); the coordinator records it durably and tells every peer, and sinks commit
//   the output they staged up to barrier n;
// - a restarted job (a new attempt, after a peer died) asks the coordinator for the last complete
//   checkpoint; every instance restores its snapshot from whichever peer holds a copy, sources
//   resume from their offsets, and sinks commit what that checkpoint staged but had not committed.

import { tmpdir } from 'node:os'
import { join } from 'node:path'
import {
  instanceOfKey,
  LaminaError,
  wrapInstance,
  type Batch,
  type ControlRegistry,
  type Instance,
  type InstanceSpec,
  type JobCluster,
  type JobView,
  type Layer,
  type Marker,
  type Operator,
  type Program,
  type StateSnapshot,
} from '../../kernel/index.js'
import { openStore, type Store } from '../../kmods/store/index.js'

/** The commit a sink records once it has written everything (at the end of its input). */
const FINAL_COMMIT = Number.MAX_SAFE_INTEGER

/** Milliseconds after a resumed attempt has restored before its first checkpoint (at most the interval). */
const RESUMED_CHECKPOINT_MS = 200

/** The marker kind of checkpoint barriers. */
export const CHECKPOINT_MARKER = 'checkpoint'

/** Options of the checkpoint layer. All optional. */
export interface CheckpointOptions {
  /** Milliseconds between checkpoints. @default 1000 */
  readonly intervalMs?: number
  /** A checkpoint not complete after this long is abandoned; the next one supersedes it. @default 60000 */
  readonly timeoutMs?: number
  /** Other peers each snapshot is copied to (fewer when the job has fewer peers). @default 1 */
  readonly replicas?: number
  /** Where the store lives when the peer has no work directory (in-process runs). @default a directory under the OS temp dir */
  readonly dir?: string
  /** How many times a cluster job may be restarted from its last checkpoint. @default 5 */
  readonly attempts?: number
  /**
   * Milliseconds a restoring instance waits for a peer holding its snapshot to come back when no
   * holder answers (the holders may be restarting) before the attempt fails. @default 15000
   */
  readonly restoreWaitMs?: number
}

/** What `guaranteeOf` says a program gets under this layer. */
export interface Guarantee {
  readonly level: 'exactly-once' | 'at-most-once'
  /** Why the guarantee is weaker, one line per source that cannot replay. */
  readonly because: readonly string[]
}

/** Thrown when a restarted instance's snapshot is on no reachable peer. */
export class CheckpointMissingError extends LaminaError {
  readonly code = 'ERR_CHECKPOINT_MISSING'
  override readonly name = 'CheckpointMissingError'
  constructor(readonly instance: string, readonly checkpoint: number | 'final', readonly peers: readonly string[], cause?: unknown) {
    super(`the snapshot of ${instance} in checkpoint ${checkpoint} is on no reachable peer (tried ${peers.join(', ') || 'none'})`, { cause })
  }
}

/** Thrown when a restored operator's parallelism changed but its state cannot be split by key. */
export class RescaleStateError extends LaminaError {
  readonly code = 'ERR_RESCALE_STATE'
  override readonly name = 'RescaleStateError'
  constructor(readonly operator: string, from: number, to: number, reason: string) {
    super(`cannot restore ${operator} at parallelism ${to} from a checkpoint taken at ${from}: ${reason}`)
  }
}

/** Thrown when a control message of the checkpoint protocol is malformed. */
export class CheckpointProtocolError extends LaminaError {
  readonly code = 'ERR_CHECKPOINT_PROTOCOL'
  override readonly name = 'CheckpointProtocolError'
  constructor(kind: string, reason: string) {
    super(`checkpoint message ${kind}: ${reason}`)
  }
}

/**
 * The guarantee a program gets under checkpoints: exactly-once for deterministic operators when
 * every source can replay; at-most-once for records read since the last checkpoint from a source
 * that cannot (`replay: 'none'`: async iterables, Observables, one-shot iterators).
 */
export function guaranteeOf(program: Program): Guarantee {
  const because = program.operators
    .filter((o) => Object.keys(o.inputs).length === 0 && o.annotations.replay === 'none')
    .map((o) => `source ${o.name} cannot replay its input: after a failure, records it read since the last checkpoint are lost`)
  return { level: because.length === 0 ? 'exactly-once' : 'at-most-once', because }
}

// --- the store ----------------------------------------------------------------------------------

const SNAPSHOTS = 'checkpoint.snapshot'
const COMPLETED = 'checkpoint.completed'
const COMMITS = 'checkpoint.commit'
const stores = new Map<string, Store>()

/** The peer's checkpoint store (one connection per file per process). */
function storeAt(dir: string): Store {
  const path = join(dir, 'checkpoints.db')
  let store = stores.get(path)
  if (store === undefined || store.closed) {
    // `normal` durability: a killed process loses nothing committed (WAL); only a power loss may
    // lose the newest checkpoint, which recovery then skips (it restores the one before).
    store = openStore(path, { durability: 'normal' })
    stores.set(path, store)
  }
  return store
}

/**
 * A sink's writes on this peer, across the attempts of its job: the tail of a chain every write
 * joins, by `<lineage>/<instance>`. A restored sink reads its last commit only after the writes of
 * the attempt before it have settled, so nothing an aborted attempt was still writing is written again.
 */
const sinkWrites = new Map<string, Promise<void>>()

/** Runs `write` after every earlier write of the same sink on this peer. */
function serialWrite(sink: string, write: () => Promise<void> | void): Promise<void> {
  const next = (sinkWrites.get(sink) ?? Promise.resolve()).then(write)
  const tail = next.catch(() => undefined)
  sinkWrites.set(sink, tail)
  void tail.then(() => {
    if (sinkWrites.get(sink) === tail) sinkWrites.delete(sink)
  })
  return next
}

type CheckpointId = number | 'final'
const idKey = (id: CheckpointId): string => (id === 'final' ? 'final' : String(id).padStart(12, '0'))
const instanceKey = (operator: string, instance: number): string => `${operator}#${instance}`

/** Where a snapshot is, as the coordinator records it. */
interface Located {
  readonly peers: readonly string[]
  readonly final: boolean
}

/** A completed checkpoint: every instance's snapshot and where its copies are. */
interface Completed {
  readonly id: number
  readonly snapshots: { readonly [instance: string]: Located }
  readonly time: number
}

/** A sink's output received between two checkpoint barriers: written when checkpoint `id` completes. */
interface Stage {
  readonly id: number
  readonly batches: readonly { readonly port: string; readonly batch: Batch }[]
}

/** A snapshot as stored: the instance's state, whether it had finished, and a sink's staged output. */
interface Stored {
  readonly state: StateSnapshot
  readonly final: boolean
  readonly pending?: readonly { readonly id: number; readonly batches: readonly { readonly port: string; readonly values: readonly unknown[] }[] }[]
}

// --- one job's share on one peer --------------------------------------------------------------

/** Everything the layer keeps for one job share. */
class Share {
  readonly lineage: string
  readonly store: Store
  readonly instances = new Map<string, CheckpointedInstance>()
  /** Snapshot keys this peer stored, by checkpoint, so completed ones can be collected. */
  private readonly storedKeys = new Map<number, string[]>()
  private previousCompleted = 0
  coordinator: Coordinator | undefined
  private resumeInfo: Promise<Completed | undefined> | undefined

  constructor(readonly job: JobView, readonly cluster: JobCluster, private readonly options: Required<Omit<CheckpointOptions, 'dir'>> & { dir: string }, readonly notify: ControlRegistry['notify']) {
    this.lineage = job.attempt.lineage
    this.store = storeAt(cluster.workDir ?? options.dir)
  }

  /** The checkpoint this attempt resumes from (asked once of the coordinator), if any. */
  resume(): Promise<Completed | undefined> {
    if (this.job.attempt.number === 0) return Promise.resolve(undefined)
    this.resumeInfo ??= this.cluster.call(this.cluster.submitter, 'checkpoint.resume', null).then((value) => (value === null ? undefined : (value as Completed)))
    return this.resumeInfo
  }

  /** Stores a snapshot here, copies it to other peers, and acknowledges it to the coordinator. */
  async persist(id: CheckpointId, key: string, value: string): Promise<void> {
    this.store.put(SNAPSHOTS, `${this.lineage}/${idKey(id)}/${key}`, value)
    if (id !== 'final') this.storedKeys.set(id, [...(this.storedKeys.get(id) ?? []), key])
    const replicas = replicasFor(key, this.cluster.peers().filter((p) => p !== this.cluster.self), this.options.replicas)
    await Promise.all(replicas.map((peer) => this.cluster.call(peer, 'checkpoint.put', { lineage: this.lineage, id, key, value })))
    await this.cluster.call(this.cluster.submitter, 'checkpoint.ack', { id, key, peers: [this.cluster.self, ...replicas], bytes: value.length })
  }

  /**
   * A snapshot: from this peer's store, else from a peer holding a copy. When no holder answers,
   * it tries again every half second for `restoreWaitMs` (a holder may be restarting: its store
   * survives the restart), then fails with `CheckpointMissingError`.
   */
  async fetch(id: CheckpointId, key: string, located: Located): Promise<Stored> {
    const local = this.store.get(SNAPSHOTS, `${this.lineage}/${idKey(id)}/${key}`)
    if (typeof local === 'string') return JSON.parse(local) as Stored
    const deadline = Date.now() + this.options.restoreWaitMs
    let lastError: unknown
    for (let round = 0; ; round++) {
      let unreachable = 0
      for (const peer of located.peers) {
        if (peer === this.cluster.self) continue
        try {
          const value = await this.cluster.call(peer, 'checkpoint.get', { lineage: this.lineage, id, key }, { timeoutMs: 10_000 })
          if (typeof value === 'string') return JSON.parse(value) as Stored
        } catch (error) {
          lastError = error
          unreachable++
        }
      }
      // Every holder answered without it: waiting will not help.
      const signal = this.job.abortSignal
      if (unreachable === 0 || Date.now() >= deadline || signal.aborted) throw new CheckpointMissingError(key, id, located.peers, lastError)
      if (round === 0) {
        const detail = lastError instanceof Error ? lastError.message : String(lastError)
        this.notify('checkpoint-waiting', `no peer holding the snapshot of ${key} in checkpoint ${id} answers (${detail}); waiting up to ${this.options.restoreWaitMs} ms for one to come back`, { key, id, peers: located.peers })
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 500)
        function done(): void {
          clearTimeout(timer)
          signal.removeEventListener('abort', done)
          resolve()
        }
        signal.addEventListener('abort', done, { once: true })
      })
    }
  }

  /** Checkpoint `id` is complete: sinks commit, older snapshots here are collected. */
  async completed(id: number): Promise<void> {
    // An aborted attempt commits nothing more: the next attempt restores and commits instead.
    if (this.job.abortSignal.aborted) return
    for (const instance of this.instances.values()) instance.commit(id)
    for (const [stored, keys] of this.storedKeys) {
      if (stored >= this.previousCompleted) continue
      this.store.transaction((tx) => {
        for (const key of keys) tx.delete(SNAPSHOTS, `${this.lineage}/${idKey(stored)}/${key}`)
      })
      this.storedKeys.delete(stored)
    }
    this.previousCompleted = id
  }

  /** The last commit a sink instance made (durable, on this peer). */
  committed(key: string): number {
    const value = this.store.get(COMMITS, `${this.lineage}/${key}`)
    return typeof value === 'string' ? Number(value) : 0
  }

  /** Records that a sink instance wrote everything up to checkpoint `id` (never moves back). */
  recordCommit(key: string, id: number): void {
    if (id > this.committed(key)) this.store.put(COMMITS, `${this.lineage}/${key}`, String(id))
  }

  /** Registers this share's control messages. */
  register(registry: ControlRegistry): void {
    registry.handle('checkpoint.trigger', (payload) => {
      const id = field(payload, 'id', 'checkpoint.trigger', 'number') as number
      return this.job.inject({ kind: CHECKPOINT_MARKER, id })
    })
    registry.handle('checkpoint.put', (payload) => {
      const lineage = field(payload, 'lineage', 'checkpoint.put', 'string') as string
      const id = field(payload, 'id', 'checkpoint.put', 'id') as CheckpointId
      const key = field(payload, 'key', 'checkpoint.put', 'string') as string
      const value = field(payload, 'value', 'checkpoint.put', 'string') as string
      this.store.put(SNAPSHOTS, `${lineage}/${idKey(id)}/${key}`, value)
      if (id !== 'final') this.storedKeys.set(id, [...(this.storedKeys.get(id) ?? []), key])
      return true
    })
    registry.handle('checkpoint.get', (payload) => {
      const lineage = field(payload, 'lineage', 'checkpoint.get', 'string') as string
      const id = field(payload, 'id', 'checkpoint.get', 'id') as CheckpointId
      const key = field(payload, 'key', 'checkpoint.get', 'string') as string
      const value = this.store.get(SNAPSHOTS, `${lineage}/${idKey(id)}/${key}`)
      return typeof value === 'string' ? value : null
    })
    registry.handle('checkpoint.complete', async (payload) => {
      await this.completed(field(payload, 'id', 'checkpoint.complete', 'number') as number)
      return true
    })
    registry.handle('checkpoint.ack', (payload) => {
      if (this.coordinator === undefined) throw new CheckpointProtocolError('checkpoint.ack', `peer ${this.cluster.self} does not coordinate job ${this.job.id}`)
      const id = field(payload, 'id', 'checkpoint.ack', 'id') as CheckpointId
      const key = field(payload, 'key', 'checkpoint.ack', 'string') as string
      const peers = field(payload, 'peers', 'checkpoint.ack', 'array') as string[]
      const bytes = field(payload, 'bytes', 'checkpoint.ack', 'number') as number
      this.coordinator.ack(id, key, peers, bytes)
      return true
    })
    registry.handle('checkpoint.resume', () => {
      if (this.coordinator === undefined) throw new CheckpointProtocolError('checkpoint.resume', `peer ${this.cluster.self} does not coordinate job ${this.job.id}`)
      return this.coordinator.latest ?? null
    })
    registry.handle('checkpoint.status', () => this.coordinator?.status() ?? null)
    registry.handle('checkpoint.now', () => {
      if (this.coordinator === undefined) throw new CheckpointProtocolError('checkpoint.now', `peer ${this.cluster.self} does not coordinate job ${this.job.id}`)
      return this.coordinator.now()
    })
    registry.handle('checkpoint.restored', (payload) => {
      this.coordinator?.restored(field(payload, 'key', 'checkpoint.restored', 'string') as string)
      return true
    })
  }
}

/** Checks one field of a control payload. */
function field(payload: unknown, name: string, kind: string, type: 'string' | 'number' | 'id' | 'array'): unknown {
  const value = typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>)[name] : undefined
  const ok =
    type === 'array' ? Array.isArray(value) && value.every((v) => typeof v === 'string') : type === 'id' ? value === 'final' || (typeof value === 'number' && Number.isSafeInteger(value)) : typeof value === type
  if (!ok) throw new CheckpointProtocolError(kind, `.${name} expected ${type}, got ${JSON.stringify(value)}`)
  return value
}

/** The `n` peers a snapshot is copied to: rendezvous hashing, so copies spread over the peers. */
function replicasFor(key: string, peers: readonly string[], n: number): string[] {
  return [...peers].sort((a, b) => score(key, a) - score(key, b) || (a < b ? -1 : 1)).slice(0, n)
}

function score(key: string, peer: string): number {
  let hash = 0x811c9dc5
  const text = `${key}\u0000${peer}`
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193)
  return hash >>> 0
}

// --- the coordinator (on the submitter) -------------------------------------------------------

/** Triggers checkpoints, collects acknowledgements, and records complete checkpoints. */
class Coordinator {
  latest: Completed | undefined
  private readonly expected: Set<string>
  private readonly finals = new Map<string, Located>()
  private nextId: number
  private inflight: { id: number; started: number; acks: Map<string, Located>; bytes: number } | undefined
  private timer: NodeJS.Timeout | undefined
  private completedCount = 0
  private lastDuration = 0
  /** Waiting for the next checkpoint to complete (`now()`). */
  private waiters: ((id: number) => void)[] = []
  private readonly restoredKeys = new Set<string>()

  constructor(private readonly share: Share, private readonly options: { intervalMs: number; timeoutMs: number }) {
    this.expected = new Set(share.job.program.operators.flatMap((o) => Array.from({ length: o.annotations.parallelism ?? 1 }, (_, i) => instanceKey(o.name, i))))
    // The newest complete checkpoint of this job (from earlier attempts), and ids past every one used.
    const done = share.store.list(COMPLETED, `${share.lineage}/`)
    const last = done.at(-1)
    this.latest = last === undefined ? undefined : (JSON.parse(String(last.value)) as Completed)
    for (const [key, located] of Object.entries(this.latest?.snapshots ?? {})) if (located.final) this.finals.set(key, located)
    this.nextId = (this.latest?.id ?? 0) + 1 + share.job.attempt.number * 1_000_000
  }

  start(): void {
    this.timer = setInterval(() => this.trigger(), this.options.intervalMs)
    this.timer.unref?.()
  }

  stop(): void {
    clearInterval(this.timer)
  }

  status(): { latest: number | null; inflight: number | null; completed: number; lastDurationMs: number } {
    return { latest: this.latest?.id ?? null, inflight: this.inflight?.id ?? null, completed: this.completedCount, lastDurationMs: this.lastDuration }
  }

  /**
   * Takes a checkpoint now (a savepoint, e.g. before a rescale) and resolves with its id once it
   * is complete. A checkpoint already in flight is waited for first.
   */
  now(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new CheckpointProtocolError('checkpoint.now', `no checkpoint completed within ${this.options.timeoutMs} ms`)), this.options.timeoutMs)
      const after = this.inflight?.id
      const wait = (id: number): void => {
        // The one in flight may have started before what the caller wants to capture.
        if (after !== undefined && id <= after) {
          this.waiters.push(wait)
          queueMicrotask(() => this.trigger(true))
          return
        }
        clearTimeout(timer)
        resolve(id)
      }
      this.waiters.push(wait)
      this.trigger(true)
    })
  }

  /** An instance of a resumed attempt restored its state; the last one reports the attempt restored. */
  restored(key: string): void {
    if (!this.expected.has(key) || this.restoredKeys.has(key)) return
    this.restoredKeys.add(key)
    if (this.restoredKeys.size < this.expected.size) return
    this.share.notify('restored', `attempt ${this.share.job.attempt.number}: all ${this.expected.size} instances restored from checkpoint ${this.latest?.id ?? 'none'}`, { checkpoint: this.latest?.id ?? null, at: Date.now() })
    // Sinks show nothing until a checkpoint completes: after a restore, the first one comes soon
    // (what was processed since), so output resumes without waiting a whole interval.
    const soon = setTimeout(() => this.trigger(true), Math.min(RESUMED_CHECKPOINT_MS, this.options.intervalMs))
    soon.unref?.()
  }

  private trigger(soon = false): void {
    if (this.share.job.abortSignal.aborted) return this.stop()
    if (soon && this.inflight !== undefined) return
    if (this.inflight !== undefined && Date.now() - this.inflight.started < this.options.timeoutMs) return
    if (this.inflight !== undefined) this.share.notify('checkpoint-abandoned', `checkpoint ${this.inflight.id} abandoned after ${this.options.timeoutMs} ms (${this.inflight.acks.size} of ${this.expected.size} snapshots)`)
    if ([...this.expected].every((key) => this.finals.has(key))) return this.stop()
    const id = this.nextId++
    this.inflight = { id, started: Date.now(), acks: new Map(), bytes: 0 }
    this.share.notify('checkpoint-start', `checkpoint ${id} started`, { id })
    for (const peer of this.share.cluster.peers()) {
      this.share.cluster.call(peer, 'checkpoint.trigger', { id }).catch((error: unknown) => {
        // A peer that cannot be reached will fail the job too; the checkpoint just stays incomplete.
        if (this.inflight?.id === id) this.share.notify('checkpoint-trigger-failed', `checkpoint ${id}: peer ${peer} did not take the barrier: ${error instanceof Error ? error.message : String(error)}`)
      })
    }
  }

  ack(id: CheckpointId, key: string, peers: readonly string[], bytes: number): void {
    // A late acknowledgement must not complete a checkpoint of an attempt that was aborted.
    if (!this.expected.has(key) || this.share.job.abortSignal.aborted) return
    if (id === 'final') this.finals.set(key, { peers, final: true })
    else if (this.inflight?.id === id) {
      this.inflight.acks.set(key, { peers, final: false })
      this.inflight.bytes += bytes
    }
    this.check()
  }

  private check(): void {
    const inflight = this.inflight
    if (inflight === undefined) return
    const snapshots: Record<string, Located> = {}
    for (const key of this.expected) {
      const located = inflight.acks.get(key) ?? this.finals.get(key)
      if (located === undefined) return
      snapshots[key] = located
    }
    const completed: Completed = { id: inflight.id, snapshots, time: Date.now() }
    this.share.store.transaction((tx) => {
      tx.put(COMPLETED, `${this.share.lineage}/${idKey(inflight.id)}`, JSON.stringify(completed))
      // Keep the newest two records: the one before stays until every peer collected its snapshots.
      for (const old of tx.list(COMPLETED, `${this.share.lineage}/`).slice(0, -2)) tx.delete(COMPLETED, old.key)
    })
    this.latest = completed
    this.inflight = undefined
    this.completedCount++
    this.lastDuration = completed.time - inflight.started
    this.share.notify('checkpoint', `checkpoint ${inflight.id} complete: ${Object.keys(snapshots).length} snapshots, ${inflight.bytes} bytes, ${this.lastDuration} ms`, {
      id: inflight.id,
      bytes: inflight.bytes,
      ms: this.lastDuration,
    })
    for (const peer of this.share.cluster.peers()) {
      this.share.cluster.call(peer, 'checkpoint.complete', { id: inflight.id }).catch(() => undefined)
    }
    const waiters = this.waiters
    this.waiters = []
    for (const wake of waiters) wake(inflight.id)
  }
}

// --- the instance wrapper -----------------------------------------------------------------------

/**
 * One instance under checkpoints. Sinks (operators without outputs) are transactional: what they
 * receive is staged per checkpoint and reaches the real sink only when that checkpoint completes
 * (or at the end of the stream), so a restarted job never writes a record twice.
 */
class CheckpointedInstance {
  /** Restored from a final snapshot: it had finished, its output is downstream already. */
  private finished = false
  private readonly sink: boolean
  private current: { port: string; batch: Batch }[] = []
  private staged: Stage[] = []
  /** The end of the input was reached: everything staged is being written as final output. */
  private ending = false
  readonly key: string

  constructor(private readonly inner: Instance, private readonly operator: Operator, private readonly share: Share) {
    this.key = instanceKey(inner.info.operator, inner.info.instance)
    this.sink = Object.keys(operator.outputs).length === 0
  }

  wrapped(): Instance {
    return wrapInstance(this.inner, {
      start: () => this.start(),
      run: () => (this.finished ? undefined : this.inner.run()),
      process: (port, batch) => {
        if (this.finished) return undefined
        if (!this.sink) return this.inner.process(port, batch)
        this.current.push({ port, batch })
        return undefined
      },
      marker: (marker) => this.marker(marker),
      end: () => this.end(),
    })
  }

  private async start(): Promise<void> {
    const resume = await this.share.resume()
    let pending: Stored['pending']
    if (resume !== undefined) {
      const { operator, parallelism } = this.inner.info
      const before = Object.keys(resume.snapshots).filter((key) => key.slice(0, key.lastIndexOf('#')) === operator).length
      const located = resume.snapshots[this.key]
      if (before === parallelism && located !== undefined) {
        const stored = await this.share.fetch(located.final ? 'final' : resume.id, this.key, located)
        this.inner.restore(stored.state)
        this.finished = stored.final
        pending = stored.pending
      } else if (before > 0) await this.redistribute(resume, before)
      // A sink that committed its final output (end of stream) in an earlier attempt has written
      // everything: whatever this attempt replays must not reach it again. Asked once the earlier
      // attempt's writes here have settled.
      if (this.sink) await sinkWrites.get(`${this.share.lineage}/${this.key}`)
      if (this.sink && this.share.committed(this.key) >= FINAL_COMMIT) this.finished = true
      void this.share.cluster.call(this.share.cluster.submitter, 'checkpoint.restored', { key: this.key }).catch(() => undefined)
    }
    if (this.finished) return
    await this.inner.start()
    // Output a restored sink staged for checkpoints that completed but were not yet committed here.
    // Read the last commit only once the attempt before has finished writing (`serialWrite`).
    if (pending !== undefined && resume !== undefined) {
      const restoredPending = pending
      const upTo = resume.id
      await this.write(() => {
        const committed = this.share.committed(this.key)
        return restoredPending
          .filter((stage) => stage.id > committed && stage.id <= upTo)
          .map((stage) => ({ id: stage.id, batches: stage.batches.map(({ port, values }) => ({ port, batch: { values: values.map((v) => this.decode(port, v)) } })) }))
      }, upTo)
    }
  }

  /**
   * The operator's parallelism changed (a rescale): this instance takes, from every old instance's
   * snapshot, the keys whose key group it now owns. Only keyed state can be split this way.
   */
  private async redistribute(resume: Completed, before: number): Promise<void> {
    const { operator, instance, parallelism } = this.inner.info
    const old = await Promise.all(
      Array.from({ length: before }, (_, i) => instanceKey(operator, i)).map(async (key) => {
        const located = resume.snapshots[key]
        if (located === undefined) throw new RescaleStateError(operator, before, parallelism, `checkpoint ${resume.id} has no snapshot of ${key}`)
        return this.share.fetch(located.final ? 'final' : resume.id, key, located)
      }),
    )
    if (old.every((s) => s.final)) this.finished = true
    const keyed = this.operator.body.form === 'atom' && this.operator.body.key !== undefined
    if (this.sink || Object.keys(this.operator.inputs).length === 0) throw new RescaleStateError(operator, before, parallelism, 'sources and sinks keep per-instance offsets and staged output: only transforms rescale')
    if (!keyed) {
      if (old.some((s) => s.state.entries.length > 0)) throw new RescaleStateError(operator, before, parallelism, 'its state is not keyed, so it cannot be split between instances')
      return
    }
    const entries = old.flatMap((s) => s.state.entries.filter(([key]) => key !== null && instanceOfKey(key, parallelism) === instance))
    this.inner.restore({ operator, entries })
  }

  private marker(marker: Marker): void | Promise<void> {
    if (marker.kind !== CHECKPOINT_MARKER || this.finished) return this.inner.marker?.(marker)
    // The synchronous part: the state as of the barrier (a copy), and a sink's staged output.
    const state = this.inner.snapshot()
    if (this.sink) {
      this.staged.push({ id: marker.id, batches: this.current })
      this.current = []
    }
    const stored: Stored = this.sink ? { state, final: false, pending: this.encodeStaged() } : { state, final: false }
    // The asynchronous part: store, copy, acknowledge, while the instance goes on.
    this.share.persist(marker.id, this.key, JSON.stringify(stored)).catch((error: unknown) => {
      this.share.notify('checkpoint-failed', `snapshot of ${this.key} in checkpoint ${marker.id} not saved: ${error instanceof Error ? error.message : String(error)}`)
    })
    return this.inner.marker?.(marker)
  }

  /** Commits a sink's output staged up to checkpoint `id` (in order, after earlier commits). */
  commit(id: number): void {
    // Once the input ended, `end` writes everything staged: a commit arriving meanwhile has nothing to add.
    if (!this.sink || this.finished || this.ending) return
    const ready = this.staged.filter((s) => s.id <= id)
    if (ready.length === 0) return
    this.staged = this.staged.filter((s) => s.id > id)
    void this.write(() => ready, id).catch((error: unknown) => this.share.notify('commit-failed', `${this.key} could not commit checkpoint ${id}: ${error instanceof Error ? error.message : String(error)}`))
  }

  /**
   * Writes stages to the real sink, in order, after every earlier write of this sink on this peer
   * (this attempt's and the attempt's before), recording each stage's commit as soon as it is
   * written; `through` is recorded at the end. An aborted attempt writes nothing: the next one
   * restores and writes instead. `stages` is evaluated when the write's turn comes.
   */
  private write(stages: () => readonly Stage[], through: number): Promise<void> {
    return serialWrite(`${this.share.lineage}/${this.key}`, async () => {
      if (this.share.job.abortSignal.aborted) return
      for (const stage of stages()) {
        for (const { port, batch } of stage.batches) await this.inner.process(port, batch)
        this.share.recordCommit(this.key, stage.id)
      }
      this.share.recordCommit(this.key, through)
    })
  }

  private async end(): Promise<void> {
    if (this.finished) return
    if (this.sink) {
      // End of stream: every input is complete, so everything staged is final. Taken over now,
      // synchronously, so a checkpoint completing meanwhile cannot write any of it a second time.
      this.ending = true
      const rest: Stage[] = [...this.staged, { id: FINAL_COMMIT, batches: this.current }]
      this.staged = []
      this.current = []
      await this.write(() => rest, FINAL_COMMIT)
    }
    await this.inner.end()
    const stored: Stored = { state: this.inner.snapshot(), final: true }
    this.share.persist('final', this.key, JSON.stringify(stored)).catch((error: unknown) => {
      this.share.notify('checkpoint-failed', `final snapshot of ${this.key} not saved: ${error instanceof Error ? error.message : String(error)}`)
    })
  }

  private encodeStaged(): Stored['pending'] {
    return this.staged.map(({ id, batches }) => ({
      id,
      batches: batches.map(({ port, batch }) => {
        const codec = this.operator.inputs[port]?.codec
        return { port, values: codec === undefined ? batch.values : batch.values.map((v) => codec.encode(v)) }
      }),
    }))
  }

  private decode(port: string, value: unknown): unknown {
    const codec = this.operator.inputs[port]?.codec
    if (codec === undefined) return value
    const decoded = codec.decode(value)
    return decoded._tag === 'Right' ? decoded.right : value
  }
}

// --- the layer ----------------------------------------------------------------------------------

/**
 * The checkpoint layer: aligned barriers every `intervalMs`, snapshots in the embedded store on
 * each peer and copied to `replicas` others, transactional sinks, and resumption of a cluster job
 * from its last complete checkpoint after a peer dies (`recovery`).
 *
 * ```ts
 * export const layers = [placement(), checkpoints({ intervalMs: 1000 })]
 * ```
 */
export function checkpoints(options: CheckpointOptions = {}): Layer {
  const settings = {
    intervalMs: options.intervalMs ?? 1000,
    timeoutMs: options.timeoutMs ?? 60_000,
    replicas: options.replicas ?? 1,
    attempts: options.attempts ?? 5,
    restoreWaitMs: options.restoreWaitMs ?? 15_000,
    dir: options.dir ?? join(tmpdir(), `lamina-checkpoints-${process.pid}`),
  }
  for (const [name, value] of Object.entries({ intervalMs: settings.intervalMs, timeoutMs: settings.timeoutMs })) {
    if (!Number.isFinite(value) || value <= 0) throw new CheckpointProtocolError('options', `${name} must be a positive number of milliseconds, got ${value}`)
  }
  if (!Number.isFinite(settings.restoreWaitMs) || settings.restoreWaitMs < 0) throw new CheckpointProtocolError('options', `restoreWaitMs must be zero or more milliseconds, got ${settings.restoreWaitMs}`)
  const shares = new Map<string, Share>()
  return {
    name: 'checkpoints',
    recovery: { attempts: settings.attempts },
    control(registry) {
      const job = registry.job
      const share = new Share(job, registry.cluster, settings, (kind, message, data) => registry.notify(kind, message, data))
      shares.set(job.id, share)
      share.register(registry)
      if (registry.cluster.self === registry.cluster.submitter) {
        share.coordinator = new Coordinator(share, settings)
        const guarantee = guaranteeOf(job.program)
        if (guarantee.level !== 'exactly-once') registry.notify('guarantee', `at-most-once: ${guarantee.because.join('; ')}`, guarantee)
        share.coordinator.start()
      }
      job.events.subscribe({
        next: (event) => {
          if (event.type === 'finished' || event.type === 'failed') {
            share.coordinator?.stop()
            shares.delete(job.id)
          }
        },
        complete: () => {
          share.coordinator?.stop()
          shares.delete(job.id)
        },
      })
    },
    instance(spec: InstanceSpec, next) {
      const inner = next(spec)
      const share = shares.get(spec.info.job)
      const key = instanceKey(spec.info.operator, spec.info.instance)
      // Spawned children are not part of the plan: their parent's state is what is checkpointed.
      if (share === undefined || !share.job.program.operators.some((o) => o.name === spec.info.operator)) return inner
      const instance = new CheckpointedInstance(inner, spec.operator, share)
      share.instances.set(key, instance)
      return instance.wrapped()
    },
  }
}
