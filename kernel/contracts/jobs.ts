// Contracts of jobs: run options, dead letters, statistics, events and reports of a running job.
// This file imports no implementation.

import type { Observable } from 'rxjs'
import type { LaminaError, Where } from '../errors.js'
import type { Marker } from './channels.js'
import type { Program } from './programs.js'
import type { PeerDescription } from './layers.js'
import type { Deployment } from './deployment.js'

/** A record the kernel could not deliver or process, with the reason. Nothing is dropped without one. */
export interface DeadLetter {
  readonly job: string
  readonly where: Where
  /** The error's stable code: ERR_DECODE, ERR_HANDLER, ERR_REQUEST_TIMEOUT … */
  readonly code: string
  readonly message: string
  readonly value: unknown
  readonly error: LaminaError
  readonly time: number
}

/** Counters of one operator instance. */
export interface InstanceStats {
  readonly operator: string
  readonly instance: number
  readonly recordsIn: number
  readonly recordsOut: number
  readonly deadLetters: number
  /** Records emitted on output ports that have no link (counted, never silently dropped). */
  readonly unlinked: number
}

/** Counters of one channel. */
export interface ChannelStats {
  readonly link: string
  readonly from: number
  readonly to: number
  readonly records: number
  readonly queued: number
  /** The most records ever queued: bounded by the capacity plus one batch. */
  readonly maxQueued: number
  /** For a channel crossing to another peer: that peer. */
  readonly peer?: string
}

/** Counters of a job. */
export interface JobStats {
  readonly instances: readonly InstanceStats[]
  readonly channels: readonly ChannelStats[]
  readonly deadLetters: number
}

/** Events a job reports while it runs. */
export type JobEvent =
  | { readonly type: 'started'; readonly job: string }
  | { readonly type: 'instance-finished'; readonly operator: string; readonly instance: number }
  | { readonly type: 'dead-letter'; readonly deadLetter: DeadLetter }
  | { readonly type: 'finished'; readonly job: string }
  | { readonly type: 'failed'; readonly job: string; readonly error: LaminaError }
  /** Something a layer did (restart, escalation, checkpoint, recovery), reported with `ControlRegistry.notify`. */
  | { readonly type: 'layer'; readonly layer: string; readonly kind: string; readonly message: string; readonly data?: unknown; readonly peer?: string }

/** A read-only view of a running job, as layers see it. */
export interface JobView {
  readonly id: string
  readonly program: Program
  readonly events: Observable<JobEvent>
  stats(): JobStats
  readonly deadLetters: readonly DeadLetter[]
  /** Which attempt of a job this is: restarts after a failure run the same job again. */
  readonly attempt: Attempt
  /** Aborted when the job is aborted or fails: a layer must then stop acting for it (e.g. committing). */
  readonly abortSignal: AbortSignal
  /**
   * Injects a marker at every source instance on this peer (instances of operators without
   * inputs that are still running); it then flows with the data. Returns how many took it.
   */
  inject(marker: Marker): number
}

/** One attempt of a job. A recovered job runs again as attempt 1, 2…, under a new job id. */
export interface Attempt {
  /** The id of the job's first attempt: the same for every attempt (durable state is kept under it). */
  readonly lineage: string
  /** 0 for the first run. */
  readonly number: number
  /**
   * What the layers need to resume, JSON. A job started from a savepoint has
   * `{ savepoint: { lineage, checkpoint } }` in every attempt (the checkpoints layer restores it
   * until the job has a checkpoint of its own). An attempt started by a failover job's new
   * coordinator has `{ checkpoint }`: the record of the newest complete checkpoint, as its old
   * coordinator's layer recorded it (`JobCluster.recordCheckpoint`).
   */
  readonly resume?: unknown
}

/** What a finished job reports. */
export interface JobReport {
  readonly job: string
  readonly stats: JobStats
  readonly deadLetters: readonly DeadLetter[]
  readonly elapsedMs: number
}

/** A running job. */
export interface Job extends JobView {
  /** Resolves with the report when every operator has finished; rejects with a typed error on failure. */
  readonly done: Promise<JobReport>
  /** Graceful stop: sources stop producing, in-flight records drain, `done` resolves. */
  stop(): Promise<JobReport>
  /** Immediate stop: `done` rejects with JobAbortedError. */
  abort(reason?: unknown): void
  /** Sends a control message to the handler a layer registered for `kind`. */
  control(kind: string, payload?: unknown): Promise<unknown>
}

/** What a dead letter does to its job. */
export type DeadLetterPolicy = 'record' | 'fail'

/** Options of `kernel.run`. All optional. */
export interface RunOptions {
  /** Job id. @default the program name plus a counter */
  readonly id?: string
  /** `record`: dead letters are kept and the job goes on; `fail`: the first one fails the job. @default 'record' */
  readonly deadLetters?: DeadLetterPolicy
  /** Dead letters past this many fail the job (DeadLetterLimitError). @default 100000 */
  readonly deadLetterLimit?: number
  /** Records per batch sent by sources and flushed by operators. @default 1024 */
  readonly batchSize?: number
  /** Default channel capacity in records, for links that set none. @default 4096 */
  readonly capacity?: number
  /**
   * Where values are checked against input port codecs in-process:
   * - `edges`: where values enter the program (links from sources) and on links whose two ends
   *   have different codecs (e.g. an `unknown` output into a typed input). Between ports typed by
   *   the same codec, TypeScript has already checked the emitting code;
   * - `always`: at every input port;
   * - `none`: nowhere (values from other processes are still decoded).
   * @default 'edges'
   */
  readonly validate?: 'edges' | 'always' | 'none'
  readonly signal?: AbortSignal
  /** Called with each dead letter as it is recorded. */
  readonly onDeadLetter?: (deadLetter: DeadLetter) => void
  /** Runs only this peer's share of the program (see Deployment). @default everything runs here */
  readonly deployment?: Deployment
  /** Chain fusible operators joined by forward links on one peer (see Fusible). @default true */
  readonly fuse?: boolean
  /** What plan hooks see as the peers to place on. @default this process alone */
  readonly peers?: readonly PeerDescription[]
  /** Skip the layers' plan hooks: the program was planned already (by the submitting peer). @default false */
  readonly planned?: boolean
  /** Which attempt this run is (set by whoever restarts a failed job). @default the first attempt */
  readonly attempt?: Attempt
}
