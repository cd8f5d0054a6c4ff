// The checkpoint protocol: the control messages between a job's shares and its coordinator, the
// checks of their payloads, the forms snapshots and complete checkpoints take in the store and on
// the wire, and the typed layer events the checkpoints layer reports.

import { layerEvent, type Batch, type StateSnapshot } from '../../kernel/index.js'
import { CheckpointProtocolError } from './errors.js'

/** The checkpoints layer's name: its events carry it. */
export const CHECKPOINTS_LAYER = 'checkpoints'

/** The marker kind of checkpoint barriers. */
export const CHECKPOINT_MARKER = 'checkpoint'

/** The commit a sink records once it has written everything (at the end of its input). */
export const FINAL_COMMIT = Number.MAX_SAFE_INTEGER

/**
 * The control message kinds of the protocol, each answered by every share (`job.control(kind)`):
 * - `trigger` `{ id }`: inject barrier `id` at this peer's sources;
 * - `put` / `get` `{ lineage, id, key, value? }`: store / read a copy of a snapshot here;
 * - `complete` `{ id }`: checkpoint `id` is complete: sinks commit, older snapshots go;
 * and by the coordinator's share only:
 * - `ack` `{ id, key, peers, bytes }`: a snapshot is stored on `peers`;
 * - `resume`: the newest complete checkpoint (a restarted attempt restores from it), or null;
 * - `restored` `{ key }`: an instance of a resumed attempt has restored;
 * - `now`: take a checkpoint now, resolve with its id once complete (what `SAVEPOINTS.take` does);
 * - `status`: the latest and in-flight checkpoint ids, how many completed, the last one's duration.
 */
export const CONTROL = {
  trigger: 'checkpoint.trigger',
  put: 'checkpoint.put',
  get: 'checkpoint.get',
  complete: 'checkpoint.complete',
  ack: 'checkpoint.ack',
  resume: 'checkpoint.resume',
  restored: 'checkpoint.restored',
  now: 'checkpoint.now',
  status: 'checkpoint.status',
  /** Keep checkpoint `id` as a savepoint: never collect its snapshots (sent to every peer of the job). */
  retain: 'checkpoint.retain',
  /** The job succeeded: drop everything of its lineage but its savepoints (sent to every peer of the job). */
  collect: 'checkpoint.collect',
} as const

/**
 * The `layer` events of the checkpoints layer, typed: test events with them instead of comparing
 * kind strings.
 *
 * ```ts
 * job.events.subscribe((e) => { if (CHECKPOINT_EVENTS.completed.is(e)) console.log(`checkpoint ${e.data.id}: ${e.data.bytes} bytes`) })
 * ```
 */
export const CHECKPOINT_EVENTS = {
  /** A checkpoint's barriers were sent to every peer. */
  started: layerEvent<{ readonly id: number }>('checkpoint-start', { layer: CHECKPOINTS_LAYER }),
  /** Every instance acknowledged its snapshot: the checkpoint is complete and recorded. */
  completed: layerEvent<{ readonly id: number; readonly bytes: number; readonly ms: number }>('checkpoint', { layer: CHECKPOINTS_LAYER }),
  /** Every instance of a resumed attempt restored its state. */
  restored: layerEvent<{ readonly checkpoint: number | null; readonly at: number }>('restored', { layer: CHECKPOINTS_LAYER }),
  /** A checkpoint did not complete within `timeoutMs`; the next one supersedes it. */
  abandoned: layerEvent<undefined>('checkpoint-abandoned', { layer: CHECKPOINTS_LAYER }),
  /** A peer did not take a checkpoint's barrier. */
  triggerFailed: layerEvent<undefined>('checkpoint-trigger-failed', { layer: CHECKPOINTS_LAYER }),
  /** A snapshot could not be saved (the checkpoint stays incomplete). */
  failed: layerEvent<undefined>('checkpoint-failed', { layer: CHECKPOINTS_LAYER }),
  /** A sink could not commit a checkpoint's output. */
  commitFailed: layerEvent<undefined>('commit-failed', { layer: CHECKPOINTS_LAYER }),
  /** No peer holding a snapshot to restore answers yet: the instance waits for one (`restoreWaitMs`). */
  waiting: layerEvent<{ readonly key: string; readonly id: number | 'final'; readonly peers: readonly string[] }>('checkpoint-waiting', { layer: CHECKPOINTS_LAYER }),
  /** A checkpoint was kept as a savepoint (`Savepoints.take(job, { retain: true })`). */
  savepoint: layerEvent<{ readonly lineage: string; readonly id: number }>('savepoint', { layer: CHECKPOINTS_LAYER }),
  /** The job succeeded and its snapshots were collected on every peer of its last attempt (savepoints kept). */
  collected: layerEvent<{ readonly lineage: string; readonly entries: number; readonly peers: number; readonly kept: readonly number[] }>('checkpoints-collected', {
    layer: CHECKPOINTS_LAYER,
  }),
  /** The program gets a weaker guarantee than exactly-once (see `guaranteeOf`). */
  guarantee: layerEvent<{ readonly level: 'exactly-once' | 'at-least-once' | 'at-most-once'; readonly because: readonly string[] }>('guarantee', { layer: CHECKPOINTS_LAYER }),
} as const

/** A checkpoint's id, or `final`: the snapshot an instance leaves when it finished. */
export type CheckpointId = number | 'final'

/** A checkpoint id as a store key part: zero-padded, so keys sort by id. */
export const idKey = (id: CheckpointId): string => (id === 'final' ? 'final' : String(id).padStart(12, '0'))

/** An instance's key in snapshots and acknowledgements: `operator#instance`. */
export const instanceKey = (operator: string, instance: number): string => `${operator}#${instance}`

/** Where a snapshot is, as the coordinator records it. */
export interface Located {
  readonly peers: readonly string[]
  readonly final: boolean
  /** The lineage the snapshot is stored under, when it is not the job's own: a savepoint of another job that this one started from. */
  readonly lineage?: string
}

/** A completed checkpoint: every instance's snapshot and where its copies are. */
export interface Completed {
  readonly id: number
  readonly snapshots: { readonly [instance: string]: Located }
  readonly time: number
}

/** Where a job started from a savepoint finds it: `Attempt.resume` is `{ savepoint: SavepointRef }`. */
export interface SavepointRef {
  readonly lineage: string
  readonly checkpoint: number
}

/** The savepoint an attempt starts from (`attempt.resume.savepoint`), or undefined; throws CheckpointProtocolError when it is malformed. */
export function savepointOf(resume: unknown): SavepointRef | undefined {
  const savepoint = typeof resume === 'object' && resume !== null ? (resume as { savepoint?: unknown }).savepoint : undefined
  if (savepoint === undefined) return undefined
  const lineage = field(savepoint, 'lineage', 'resume.savepoint', 'string') as string
  const checkpoint = field(savepoint, 'checkpoint', 'resume.savepoint', 'number') as number
  return { lineage, checkpoint }
}

/** A sink's output received between two checkpoint barriers: written when checkpoint `id` completes. */
export interface Stage {
  readonly id: number
  readonly batches: readonly { readonly port: string; readonly batch: Batch }[]
}

/** A snapshot as stored: the instance's state, whether it had finished, and a sink's staged output. */
export interface Stored {
  readonly state: StateSnapshot
  readonly final: boolean
  readonly pending?: readonly { readonly id: number; readonly batches: readonly { readonly port: string; readonly values: readonly unknown[] }[] }[]
}

/** Checks one field of a control payload; throws CheckpointProtocolError naming the message and field. */
export function field(payload: unknown, name: string, kind: string, type: 'string' | 'number' | 'id' | 'array'): unknown {
  const value = typeof payload === 'object' && payload !== null ? (payload as Record<string, unknown>)[name] : undefined
  const ok =
    type === 'array'
      ? Array.isArray(value) && value.every((v) => typeof v === 'string')
      : type === 'id'
        ? value === 'final' || (typeof value === 'number' && Number.isSafeInteger(value))
        : typeof value === type
  if (!ok) throw new CheckpointProtocolError(kind, `.${name} expected ${type}, got ${JSON.stringify(value)}`)
  return value
}
