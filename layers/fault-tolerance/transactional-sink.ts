// Transactional sinks: what a sink receives is staged per checkpoint and reaches the real sink only
// when that checkpoint completes (or at the end of its input), so a restarted job never writes a
// record twice. Its writes on a peer go through one queue across the attempts of its job.

import type { Batch, StateSnapshot } from '../../kernel/index.js'
import { CheckpointedInstance } from './instance.js'
import { CHECKPOINT_EVENTS, FINAL_COMMIT, type Stage, type Stored } from './protocol.js'

/**
 * The sinks' write queues of one checkpoints layer: the tail of a chain every write of a sink
 * joins, by `<lineage>/<instance>`, across the attempts of its job. A restored sink reads its last
 * commit only after the writes of the attempt before it have settled, so nothing an aborted
 * attempt was still writing is written again. (The submitting peer runs every attempt of a job on
 * one stack, so its sinks' attempts share one layer and one queue.)
 */
export class SinkWrites {
  private readonly tails = new Map<string, Promise<void>>()

  /** Runs `write` after every earlier write of the same sink. */
  serial(sink: string, write: () => Promise<void> | void): Promise<void> {
    const next = (this.tails.get(sink) ?? Promise.resolve()).then(write)
    const tail = next.catch(() => undefined)
    this.tails.set(sink, tail)
    void tail.then(() => {
      if (this.tails.get(sink) === tail) this.tails.delete(sink)
    })
    return next
  }

  /** Resolves once every write of `sink` queued so far has settled. */
  settled(sink: string): Promise<void> {
    return this.tails.get(sink) ?? Promise.resolve()
  }
}

/** A sink instance (an operator without outputs) under checkpoints: staged, committed at checkpoints. */
export class TransactionalSink extends CheckpointedInstance {
  private current: { port: string; batch: Batch }[] = []
  private staged: Stage[] = []
  /** The end of the input was reached: everything staged is being written as final output. */
  private closing = false

  private get queue(): string {
    return `${this.share.lineage}/${this.key}`
  }

  protected override process(port: string, batch: Batch): void {
    this.current.push({ port, batch })
  }

  protected override async restored(): Promise<void> {
    // A sink that committed its final output (end of stream) in an earlier attempt has written
    // everything: whatever this attempt replays must not reach it again. Asked once the earlier
    // attempt's writes here have settled.
    await this.share.sinkWrites.settled(this.queue)
    if ((await this.committed()) >= FINAL_COMMIT) this.finished = true
  }

  /**
   * The newest checkpoint whose output this sink wrote: what this peer recorded, or, for a sink
   * that commits its output itself (SinkCommit), what it says it holds (which counts even when
   * the job died between its write and this peer's record).
   */
  private async committed(): Promise<number> {
    const recorded = this.share.committed(this.key)
    const own = this.inner.lastCommitted === undefined ? -1 : await this.inner.lastCommitted()
    return Math.max(recorded, own)
  }

  protected override async started(pending: Stored['pending'], upTo: number): Promise<void> {
    // Output a restored sink staged for checkpoints that completed but were not yet committed here.
    // The last commit is read only once the attempt before has finished writing (the queue).
    const restored = pending ?? []
    await this.write(async () => {
      const committed = await this.committed()
      return restored
        .filter((stage) => stage.id > committed && stage.id <= upTo)
        .map((stage) => ({ id: stage.id, batches: stage.batches.map(({ port, values }) => ({ port, batch: { values: values.map((v) => this.decode(port, v)) } })) }))
    }, upTo)
  }

  protected override snapshotAt(id: number, state: StateSnapshot): Stored {
    this.staged.push({ id, batches: this.current })
    this.current = []
    return { state, final: false, pending: this.encodeStaged() }
  }

  /** Commits the output staged up to checkpoint `id` (in order, after earlier commits). */
  override commit(id: number): void {
    // Once the input ended, `end` writes everything staged: a commit arriving meanwhile has nothing to add.
    if (this.finished || this.closing) return
    const ready = this.staged.filter((s) => s.id <= id)
    if (ready.length === 0) return
    this.staged = this.staged.filter((s) => s.id > id)
    void this.write(() => ready, id).catch((error: unknown) =>
      this.share.notify(CHECKPOINT_EVENTS.commitFailed.kind, `${this.key} could not commit checkpoint ${id}: ${error instanceof Error ? error.message : String(error)}`),
    )
  }

  protected override async ending(): Promise<void> {
    // End of stream: every input is complete, so everything staged is final. Taken over now,
    // synchronously, so a checkpoint completing meanwhile cannot write any of it a second time.
    this.closing = true
    const rest: Stage[] = [...this.staged, { id: FINAL_COMMIT, batches: this.current }]
    this.staged = []
    this.current = []
    await this.write(() => rest, FINAL_COMMIT)
  }

  /**
   * Writes stages to the real sink, in order, after every earlier write of this sink on this peer
   * (this attempt's and the attempt's before), recording each stage's commit as soon as it is
   * written; `through` is recorded at the end. An aborted attempt writes nothing: the next one
   * restores and writes instead. `stages` is evaluated when the write's turn comes.
   */
  private write(stages: () => readonly Stage[] | Promise<readonly Stage[]>, through: number): Promise<void> {
    return this.share.sinkWrites.serial(this.queue, async () => {
      if (this.share.job.abortSignal.aborted) return
      const commitStage = this.inner.commitStage
      for (const stage of await stages()) {
        // A sink with its own commit writes the stage and its record in one step (SinkCommit).
        if (commitStage !== undefined)
          await commitStage(
            stage.id,
            stage.batches.map(({ port, batch }) => ({ port, values: batch.values })),
          )
        else for (const { port, batch } of stage.batches) await this.inner.process(port, batch)
        this.share.recordCommit(this.key, stage.id)
      }
      this.share.recordCommit(this.key, through)
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
