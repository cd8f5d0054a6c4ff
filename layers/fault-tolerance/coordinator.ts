// The checkpoint coordinator, on the job's submitting peer: triggers checkpoints, collects the
// acknowledgements of every instance's snapshot, and records each complete checkpoint durably.

import { CheckpointProtocolError } from './errors.js'
import { CHECKPOINT_EVENTS, CONTROL, instanceKey, savepointOf, type CheckpointId, type Completed, type Located } from './protocol.js'
import type { Share } from './share.js'

/** Milliseconds after a resumed attempt has restored before its first checkpoint (at most the interval). */
const RESUMED_CHECKPOINT_MS = 200

/** Triggers checkpoints, collects acknowledgements, and records complete checkpoints. */
export class Coordinator {
  latest: Completed | undefined
  private readonly expected: Set<string>
  private readonly finals = new Map<string, Located>()
  private nextId: number
  private inflight: { id: number; started: number; acks: Map<string, Located>; bytes: number } | undefined
  private timer: NodeJS.Timeout | undefined
  private completedCount = 0
  private lastDuration = 0
  /** Waiting for the next checkpoint to complete (`now()`); `fail` when none can complete any more. */
  private waiters: { wake(id: number): void; fail(error: Error): void }[] = []
  private readonly restoredKeys = new Set<string>()

  constructor(
    private readonly share: Share,
    private readonly options: { readonly intervalMs: number; readonly timeoutMs: number },
  ) {
    this.expected = new Set(share.job.program.operators.flatMap((o) => Array.from({ length: o.annotations.parallelism ?? 1 }, (_, i) => instanceKey(o.name, i))))
    // The newest complete checkpoint of this job (from earlier attempts), else the savepoint it
    // started from, and ids past every one used.
    this.latest = newest(share.store.latest(share.lineage), checkpointFrom(share)) ?? savepointFrom(share)
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

  /** Stops, and completes no checkpoint any more: the job is over (its lineage is being collected). */
  close(): void {
    this.stop()
    this.closed = true
    this.inflight = undefined
  }

  private closed = false

  status(): { latest: number | null; inflight: number | null; completed: number; lastDurationMs: number } {
    return { latest: this.latest?.id ?? null, inflight: this.inflight?.id ?? null, completed: this.completedCount, lastDurationMs: this.lastDuration }
  }

  /**
   * Takes a checkpoint now (a savepoint, e.g. before a rescale) and resolves with its id once it
   * is complete. A checkpoint already in flight is waited for first. Rejects when `signal` aborts
   * or no checkpoint completes within `timeoutMs`.
   */
  now(signal?: AbortSignal): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer)
        reject(signal?.reason)
      }
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort)
        reject(new CheckpointProtocolError(CONTROL.now, `no checkpoint completed within ${this.options.timeoutMs} ms`))
      }, this.options.timeoutMs)
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      const after = this.inflight?.id
      const waiter = {
        wake: (id: number): void => {
          // The one in flight may have started before what the caller wants to capture.
          if (after !== undefined && id <= after) {
            this.waiters.push(waiter)
            queueMicrotask(() => this.trigger(true))
            return
          }
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          resolve(id)
        },
        fail: (error: Error): void => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          reject(error)
        },
      }
      this.waiters.push(waiter)
      this.trigger(true)
    })
  }

  /** An instance of a resumed attempt restored its state; the last one reports the attempt restored. */
  restored(key: string): void {
    if (!this.expected.has(key) || this.restoredKeys.has(key)) return
    this.restoredKeys.add(key)
    if (this.restoredKeys.size < this.expected.size) return
    this.share.notify(
      CHECKPOINT_EVENTS.restored.kind,
      `attempt ${this.share.job.attempt.number}: all ${this.expected.size} instances restored from checkpoint ${this.latest?.id ?? 'none'}`,
      { checkpoint: this.latest?.id ?? null, at: Date.now() },
    )
    // Sinks show nothing until a checkpoint completes: after a restore, the first one comes soon
    // (what was processed since), so output resumes without waiting a whole interval.
    const soon = setTimeout(() => this.trigger(true), Math.min(RESUMED_CHECKPOINT_MS, this.options.intervalMs))
    soon.unref?.()
  }

  private trigger(soon = false): void {
    if (this.share.job.abortSignal.aborted || this.closed) return this.stop()
    if (soon && this.inflight !== undefined) return
    if (this.inflight !== undefined && Date.now() - this.inflight.started < this.options.timeoutMs) return
    if (this.inflight !== undefined)
      this.share.notify(
        CHECKPOINT_EVENTS.abandoned.kind,
        `checkpoint ${this.inflight.id} abandoned after ${this.options.timeoutMs} ms (${this.inflight.acks.size} of ${this.expected.size} snapshots)`,
      )
    if ([...this.expected].every((key) => this.finals.has(key))) {
      // Every instance has finished: no checkpoint will ever complete, so nobody may wait for one.
      const waiters = this.waiters
      this.waiters = []
      for (const waiter of waiters)
        waiter.fail(new CheckpointProtocolError(CONTROL.now, `every instance of job ${this.share.job.id} has finished its input: there is nothing left to checkpoint`))
      return this.stop()
    }
    const id = this.nextId++
    this.inflight = { id, started: Date.now(), acks: new Map(), bytes: 0 }
    this.share.notify(CHECKPOINT_EVENTS.started.kind, `checkpoint ${id} started`, { id })
    for (const peer of this.share.cluster.peers()) {
      this.share.cluster.call(peer, CONTROL.trigger, { id }).catch((error: unknown) => {
        // A peer that cannot be reached will fail the job too; the checkpoint just stays incomplete.
        if (this.inflight?.id === id)
          this.share.notify(
            CHECKPOINT_EVENTS.triggerFailed.kind,
            `checkpoint ${id}: peer ${peer} did not take the barrier: ${error instanceof Error ? error.message : String(error)}`,
          )
      })
    }
  }

  ack(id: CheckpointId, key: string, peers: readonly string[], bytes: number): void {
    // A late acknowledgement must not complete a checkpoint of an attempt that was aborted.
    if (!this.expected.has(key) || this.share.job.abortSignal.aborted || this.closed) return
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
    this.inflight = undefined
    const record = this.share.cluster.recordCheckpoint
    if (record === undefined) return this.completed(completed, inflight)
    // A failover job: the checkpoint is complete once a successor could find it (recorded in the
    // replicated store), and only then may any of its output be committed. Records go in order.
    this.recording = this.recording
      .then(() => record({ id: completed.id, record: completed }))
      .then(
        () => {
          if (!this.share.job.abortSignal.aborted) this.completed(completed, inflight)
        },
        (error: unknown) =>
          this.share.notify(
            CHECKPOINT_EVENTS.failed.kind,
            `checkpoint ${completed.id} could not be recorded for a successor: ${error instanceof Error ? error.message : String(error)}`,
          ),
      )
  }

  /** Records in the replicated store, in order (failover jobs). */
  private recording: Promise<void> = Promise.resolve()

  /** Checkpoint `completed` is complete: recorded here, reported, and its output committed everywhere. */
  private completed(completed: Completed, inflight: { readonly id: number; readonly started: number; readonly bytes: number }): void {
    this.share.store.recordCompleted(this.share.lineage, completed)
    if (this.latest === undefined || completed.id > this.latest.id) this.latest = completed
    this.completedCount++
    this.lastDuration = completed.time - inflight.started
    this.share.notify(
      CHECKPOINT_EVENTS.completed.kind,
      `checkpoint ${inflight.id} complete: ${Object.keys(completed.snapshots).length} snapshots, ${inflight.bytes} bytes, ${this.lastDuration} ms`,
      {
        id: inflight.id,
        bytes: inflight.bytes,
        ms: this.lastDuration,
      },
    )
    for (const peer of this.share.cluster.peers()) {
      this.share.cluster.call(peer, CONTROL.complete, { id: inflight.id }).catch(() => undefined)
    }
    const waiters = this.waiters
    this.waiters = []
    for (const waiter of waiters) waiter.wake(inflight.id)
  }
}

/** The newer of two complete checkpoints. */
function newest(a: Completed | undefined, b: Completed | undefined): Completed | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  return b.id > a.id ? b : a
}

/**
 * The checkpoint a failover job's new coordinator resumes from (`attempt.resume.checkpoint`, what
 * the old coordinator recorded through `JobCluster.recordCheckpoint`), checked for its shape.
 */
function checkpointFrom(share: Share): Completed | undefined {
  const resume = share.job.attempt.resume
  const given = typeof resume === 'object' && resume !== null ? (resume as { checkpoint?: unknown }).checkpoint : undefined
  if (given === undefined || given === null) return undefined
  const c = given as Partial<Completed>
  const valid =
    typeof c.id === 'number' &&
    typeof c.time === 'number' &&
    typeof c.snapshots === 'object' &&
    c.snapshots !== null &&
    Object.values(c.snapshots).every((l) => Array.isArray(l?.peers) && typeof l.final === 'boolean')
  if (!valid) throw new CheckpointProtocolError('resume', `attempt.resume.checkpoint is not a complete checkpoint's record: ${JSON.stringify(given).slice(0, 200)}`)
  return c as Completed
}

/**
 * The savepoint a job starts from (`attempt.resume.savepoint`), as a complete checkpoint whose
 * snapshots name the savepoint's lineage. It is looked up in this peer's store, where the job that
 * took it was coordinated. @throws CheckpointProtocolError when this peer does not keep it.
 */
function savepointFrom(share: Share): Completed | undefined {
  const ref = savepointOf(share.job.attempt.resume)
  if (ref === undefined) return undefined
  const kept = share.store.savepoint(ref.lineage, ref.checkpoint)
  if (kept === undefined)
    throw new CheckpointProtocolError(
      'resume',
      `savepoint ${ref.lineage}@${ref.checkpoint} is not kept on ${share.cluster.self} (kept here: ${share.store.savepoints(ref.lineage).join(', ') || 'none of that job'}): submit the job to the peer that coordinated ${ref.lineage}`,
    )
  return { ...kept, snapshots: Object.fromEntries(Object.entries(kept.snapshots).map(([key, located]) => [key, { ...located, lineage: located.lineage ?? ref.lineage }])) }
}
