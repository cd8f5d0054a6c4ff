// One job's share on one peer under checkpoints: stores its snapshots, copies them to other peers,
// fetches them back for a restore, and answers the checkpoint protocol's control messages.

import type { ControlRegistry, JobCluster, JobView, LayerNotice } from '../../kernel/index.js'
import { Ring } from '../../kmods/ring/index.js'
import type { Coordinator } from './coordinator.js'
import { CheckpointMissingError, CheckpointProtocolError } from './errors.js'
import type { CheckpointedInstance } from './instance.js'
import { CHECKPOINT_EVENTS, CHECKPOINT_MARKER, CONTROL, field, savepointOf, type CheckpointId, type Completed, type Located, type Stored } from './protocol.js'
import type { SnapshotStore } from './snapshot-store.js'
import type { SinkWrites } from './transactional-sink.js'

/** The settings of a checkpoints layer a share needs. */
export interface ShareSettings {
  readonly replicas: number
  readonly restoreWaitMs: number
}

/** Everything the layer keeps for one job share. */
export class Share {
  readonly lineage: string
  readonly instances = new Map<string, CheckpointedInstance>()
  /** Snapshot keys this peer stored, by checkpoint, so completed ones can be collected. */
  private readonly storedKeys = new Map<number, string[]>()
  private previousCompleted = 0
  coordinator: Coordinator | undefined
  private resumeInfo: Promise<Completed | undefined> | undefined

  constructor(
    readonly job: JobView,
    readonly cluster: JobCluster,
    private readonly options: ShareSettings,
    readonly notify: ControlRegistry['notify'],
    readonly store: SnapshotStore,
    /** The sink write chains of the layer this share belongs to (they outlive the share's attempt). */
    readonly sinkWrites: SinkWrites,
  ) {
    this.lineage = job.attempt.lineage
  }

  /** The checkpoint this attempt resumes from (asked once of the coordinator), if any: an earlier attempt's, or the savepoint the job started from. */
  resume(): Promise<Completed | undefined> {
    if (this.job.attempt.number === 0 && savepointOf(this.job.attempt.resume) === undefined) return Promise.resolve(undefined)
    this.resumeInfo ??= this.cluster.call(this.cluster.submitter, CONTROL.resume, null).then((value) => (value === null ? undefined : (value as Completed)))
    return this.resumeInfo
  }

  /**
   * Stores a snapshot here, copies it to other peers, and acknowledges it to the coordinator. The
   * copies go to the `replicas` other peers the ring picks for the instance, so they spread.
   */
  async persist(id: CheckpointId, key: string, value: string): Promise<void> {
    this.store.put(this.lineage, id, key, value)
    if (id !== 'final') this.storedKeys.set(id, [...(this.storedKeys.get(id) ?? []), key])
    const replicas = new Ring(this.cluster.peers().filter((p) => p !== this.cluster.self)).owners(key, this.options.replicas)
    await Promise.all(replicas.map((peer) => this.cluster.call(peer, CONTROL.put, { lineage: this.lineage, id, key, value })))
    await this.cluster.call(this.cluster.submitter, CONTROL.ack, { id, key, peers: [this.cluster.self, ...replicas], bytes: value.length })
  }

  /**
   * A snapshot: from this peer's store, else from a peer holding a copy. When no holder answers,
   * it tries again every half second for `restoreWaitMs` (a holder may be restarting: its store
   * survives the restart), then fails with `CheckpointMissingError`.
   */
  async fetch(id: CheckpointId, key: string, located: Located): Promise<Stored> {
    // A snapshot of the savepoint the job started from is stored under that job's lineage.
    const lineage = located.lineage ?? this.lineage
    const local = this.store.get(lineage, id, key)
    if (local !== undefined) return JSON.parse(local) as Stored
    const deadline = Date.now() + this.options.restoreWaitMs
    let lastError: unknown
    // Holders that run this attempt first: a holder left out of it (declared dead: frozen, or cut
    // off) may not answer at all, and each call to it waits for its timeout.
    const members = new Set(this.cluster.peers())
    const holders = [...located.peers.filter((p) => members.has(p)), ...located.peers.filter((p) => !members.has(p))]
    for (let round = 0; ; round++) {
      let unreachable = 0
      for (const peer of holders) {
        if (peer === this.cluster.self) continue
        try {
          const value = await this.cluster.call(peer, CONTROL.get, { lineage, id, key }, { timeoutMs: 10_000 })
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
        this.notify(
          CHECKPOINT_EVENTS.waiting.kind,
          `no peer holding the snapshot of ${key} in checkpoint ${id} answers (${detail}); waiting up to ${this.options.restoreWaitMs} ms for one to come back`,
          { key, id, peers: located.peers },
        )
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
      // A savepoint's snapshots stay (until its lineage is collected, and then too).
      if (!this.store.retained(this.lineage, stored)) this.store.collect(this.lineage, stored, keys)
      this.storedKeys.delete(stored)
    }
    this.previousCompleted = id
  }

  /**
   * Keeps complete checkpoint `id` as a savepoint (the coordinator's share): its record stays
   * here, and every peer of the job keeps its snapshots.
   */
  async retain(id: number): Promise<void> {
    const coordinator = this.coordinating('savepoint')
    const completed = coordinator.latest
    if (completed === undefined || completed.id !== id)
      throw new CheckpointProtocolError('savepoint', `checkpoint ${id} is not the newest complete one (${completed?.id ?? 'none'})`)
    await Promise.all(this.cluster.peers().map((peer) => this.cluster.call(peer, CONTROL.retain, { id })))
    this.store.recordSavepoint(this.lineage, completed)
    this.notify(CHECKPOINT_EVENTS.savepoint.kind, `checkpoint ${id} kept as savepoint ${this.lineage}@${id}`, { lineage: this.lineage, id })
  }

  /**
   * The job succeeded (the coordinator's share): every peer of its last attempt drops the job's
   * snapshots, complete-checkpoint records and sink commits, all but its savepoints.
   */
  async collectLineage(): Promise<LayerNotice> {
    // The job succeeded: no checkpoint of it completes any more (a late acknowledgement would
    // record one after the collection).
    this.coordinator?.close()
    const counts = await Promise.all(
      this.cluster.peers().map((peer) =>
        this.cluster.call(peer, CONTROL.collect, null).then(
          (n) => (typeof n === 'number' ? n : 0),
          (error: unknown) => {
            this.notify(CHECKPOINT_EVENTS.failed.kind, `peer ${peer} did not collect the snapshots of ${this.lineage}: ${error instanceof Error ? error.message : String(error)}`)
            return 0
          },
        ),
      ),
    )
    const kept = this.store.savepoints(this.lineage)
    const entries = counts.reduce((a, b) => a + b, 0)
    return {
      kind: CHECKPOINT_EVENTS.collected.kind,
      message: `job ${this.lineage} succeeded: ${entries} stored entries collected on ${counts.length} peer(s)${kept.length > 0 ? `, savepoints ${kept.join(', ')} kept` : ''}`,
      data: { lineage: this.lineage, entries, peers: counts.length, kept },
    }
  }

  /** The last commit a sink instance made (durable, on this peer). */
  committed(key: string): number {
    return this.store.committed(this.lineage, key)
  }

  /** Records that a sink instance wrote everything up to checkpoint `id` (never moves back). */
  recordCommit(key: string, id: number): void {
    this.store.recordCommit(this.lineage, key, id)
  }

  /** Registers this share's control messages (see CONTROL). */
  register(registry: ControlRegistry): void {
    registry.handle(CONTROL.trigger, (payload) => {
      const id = field(payload, 'id', CONTROL.trigger, 'number') as number
      return this.job.inject({ kind: CHECKPOINT_MARKER, id })
    })
    registry.handle(CONTROL.put, (payload) => {
      const lineage = field(payload, 'lineage', CONTROL.put, 'string') as string
      const id = field(payload, 'id', CONTROL.put, 'id') as CheckpointId
      const key = field(payload, 'key', CONTROL.put, 'string') as string
      const value = field(payload, 'value', CONTROL.put, 'string') as string
      this.store.put(lineage, id, key, value)
      if (id !== 'final') this.storedKeys.set(id, [...(this.storedKeys.get(id) ?? []), key])
      return true
    })
    registry.handle(CONTROL.get, (payload) => {
      const lineage = field(payload, 'lineage', CONTROL.get, 'string') as string
      const id = field(payload, 'id', CONTROL.get, 'id') as CheckpointId
      const key = field(payload, 'key', CONTROL.get, 'string') as string
      return this.store.get(lineage, id, key) ?? null
    })
    registry.handle(CONTROL.complete, async (payload) => {
      await this.completed(field(payload, 'id', CONTROL.complete, 'number') as number)
      return true
    })
    registry.handle(CONTROL.ack, (payload) => {
      const coordinator = this.coordinating(CONTROL.ack)
      const id = field(payload, 'id', CONTROL.ack, 'id') as CheckpointId
      const key = field(payload, 'key', CONTROL.ack, 'string') as string
      const peers = field(payload, 'peers', CONTROL.ack, 'array') as string[]
      const bytes = field(payload, 'bytes', CONTROL.ack, 'number') as number
      coordinator.ack(id, key, peers, bytes)
      return true
    })
    registry.handle(CONTROL.resume, () => this.coordinating(CONTROL.resume).latest ?? null)
    registry.handle(CONTROL.retain, (payload) => {
      this.store.retain(this.lineage, field(payload, 'id', CONTROL.retain, 'number') as number)
      return true
    })
    registry.handle(CONTROL.collect, () => {
      this.storedKeys.clear()
      return this.store.collectLineage(this.lineage)
    })
    registry.handle(CONTROL.status, () => this.coordinator?.status() ?? null)
    registry.handle(CONTROL.now, () => this.coordinating(CONTROL.now).now())
    registry.handle(CONTROL.restored, (payload) => {
      this.coordinator?.restored(field(payload, 'key', CONTROL.restored, 'string') as string)
      return true
    })
  }

  /** The coordinator, when this share is the job's coordinating one; else CheckpointProtocolError. */
  coordinating(kind: string): Coordinator {
    if (this.coordinator === undefined) throw new CheckpointProtocolError(kind, `peer ${this.cluster.self} does not coordinate job ${this.job.id}`)
    return this.coordinator
  }
}
