// One operator instance under checkpoints: its snapshot at each barrier, its final snapshot, and
// its restore when a later attempt of the job resumes (redistributing keyed state by key group
// when the operator's parallelism changed).

import { wrapInstance, type Batch, type Instance, type Marker, type Operator, type StateSnapshot } from '../../kernel/index.js'
import { keyGroups } from '../../kmods/ring/index.js'
import { RescaleStateError } from './errors.js'
import { CHECKPOINT_EVENTS, CHECKPOINT_MARKER, CONTROL, instanceKey, type Completed, type Stored } from './protocol.js'
import type { Share } from './share.js'

/**
 * One instance under checkpoints. At a barrier it takes its snapshot synchronously and persists
 * it in the background; when its input ends it leaves a final snapshot; an instance of a resumed
 * attempt restores its snapshot before it starts. Sinks are `TransactionalSink`s, which add
 * staging and commits.
 */
export class CheckpointedInstance {
  /** Restored from a final snapshot: it had finished, its output is downstream already. */
  protected finished = false
  readonly key: string

  constructor(
    protected readonly inner: Instance,
    protected readonly operator: Operator,
    protected readonly share: Share,
  ) {
    this.key = instanceKey(inner.info.operator, inner.info.instance)
  }

  /** The instance the kernel drives. */
  wrapped(): Instance {
    return wrapInstance(this.inner, {
      start: () => this.start(),
      run: () => (this.finished ? undefined : this.inner.run()),
      process: (port, batch) => (this.finished ? undefined : this.process(port, batch)),
      marker: (marker) => this.marker(marker),
      end: () => this.end(),
    })
  }

  /** Commits output staged up to checkpoint `id`: only sinks stage output. */
  commit(_id: number): void {}

  protected process(port: string, batch: Batch): void | Promise<void> {
    return this.inner.process(port, batch)
  }

  /** Called once a resumed instance has restored (sinks wait for the attempt before them here). */
  protected async restored(): Promise<void> {}

  /** Called once a resumed instance has started, with the sink output its snapshot had staged. */
  protected async started(_pending: Stored['pending'], _upTo: number): Promise<void> {}

  /** The snapshot to store at barrier `id`, from the state the instance had there. */
  protected snapshotAt(_id: number, state: StateSnapshot): Stored {
    return { state, final: false }
  }

  /** Called when the input ended, before the inner instance's `end` (sinks write their final output). */
  protected async ending(): Promise<void> {}

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
        // Output another job (the savepoint's) staged is that job's to write, not this one's.
        pending = located.lineage === undefined ? stored.pending : undefined
      } else if (before > 0) await this.redistribute(resume, before)
      await this.restored()
      void this.share.cluster.call(this.share.cluster.submitter, CONTROL.restored, { key: this.key }).catch(() => undefined)
    }
    if (this.finished) return
    await this.inner.start()
    if (pending !== undefined && resume !== undefined) await this.started(pending, resume.id)
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
    const sink = Object.keys(this.operator.outputs).length === 0
    if (sink || Object.keys(this.operator.inputs).length === 0)
      throw new RescaleStateError(operator, before, parallelism, 'sources and sinks keep per-instance offsets and staged output: only transforms rescale')
    if (!keyed) {
      if (old.some((s) => s.state.entries.length > 0)) throw new RescaleStateError(operator, before, parallelism, 'its state is not keyed, so it cannot be split between instances')
      return
    }
    const entries = old.flatMap((s) => s.state.entries.filter(([key]) => key !== null && keyGroups.ownerOfKey(key, parallelism) === instance))
    this.inner.restore({ operator, entries })
  }

  private marker(marker: Marker): void | Promise<void> {
    if (marker.kind !== CHECKPOINT_MARKER || this.finished) return this.inner.marker?.(marker)
    // The synchronous part: the state as of the barrier (a copy), and a sink's staged output.
    const stored = this.snapshotAt(marker.id, this.inner.snapshot())
    // The asynchronous part: store, copy, acknowledge, while the instance goes on.
    this.share.persist(marker.id, this.key, JSON.stringify(stored)).catch((error: unknown) => {
      this.share.notify(CHECKPOINT_EVENTS.failed.kind, `snapshot of ${this.key} in checkpoint ${marker.id} not saved: ${error instanceof Error ? error.message : String(error)}`)
    })
    return this.inner.marker?.(marker)
  }

  private async end(): Promise<void> {
    if (this.finished) return
    await this.ending()
    await this.inner.end()
    const stored: Stored = { state: this.inner.snapshot(), final: true }
    this.share.persist('final', this.key, JSON.stringify(stored)).catch((error: unknown) => {
      this.share.notify(CHECKPOINT_EVENTS.failed.kind, `final snapshot of ${this.key} not saved: ${error instanceof Error ? error.message : String(error)}`)
    })
  }
}
