// Internal contracts between the kernel and a cluster runtime: where instances run and how a channel's end reaches another peer. Exported by `lamina/internal`, not by `lamina`.
// This file imports no implementation.

import type { LaminaError, Where } from '../errors.js'
import type { AnyCodec } from './ports.js'
import type { ChannelInfo, ChannelReceiver, ChannelSender } from './channels.js'
import type { RescaleReport, RescaleRequest } from './layers.js'

/** One end of a channel whose other end runs on another peer (see Deployment.connect). */
export interface RemoteEnd {
  /** `sender`: this peer produces into the channel; `receiver`: this peer consumes from it. */
  readonly side: 'sender' | 'receiver'
  readonly info: ChannelInfo
  /** The peer running the other end. */
  readonly peer: string
  /** Records the receiving side holds before the sender waits (granted as credit). */
  readonly capacity: number
  /** The receiving port's codec: a receiver decodes every value with it (process boundaries are always checked). */
  readonly codec: AnyCodec
  /** Records a value that could not be decoded or delivered (receivers name the sending peer in `where`). */
  readonly deadLetter: (where: Where, error: LaminaError, value: unknown) => void
}

/**
 * Where a job's instances run and how channels reach other peers; given to `kernel.run` by the
 * cluster runtime. Each peer runs the same program with the same deployment and materializes only
 * its own instances; a link whose ends are on two peers becomes a remote channel.
 */
export interface Deployment {
  /** The peer this kernel runs on. */
  readonly self: string
  /** The peer that submitted (and planned) the job: plan hooks see it as `PlanContext.self`. @default self */
  readonly submitter?: string
  /** The peer that runs an operator instance. */
  peerOf(operator: string, instance: number): string
  /**
   * One end of a channel crossing to another peer: the sending half on the producer's peer, the
   * receiving half on the consumer's (e.g. the kernel's `remoteSender`/`remoteReceiver` over a
   * transport's frame channel).
   */
  connect(end: RemoteEnd & { readonly side: 'sender' }): ChannelSender
  connect(end: RemoteEnd & { readonly side: 'receiver' }): ChannelReceiver
  /** Calls a control handler of this job's share on another peer (see JobCluster.call). */
  call?(peer: string, kind: string, payload: unknown, options?: { readonly signal?: AbortSignal; readonly timeoutMs?: number }): Promise<unknown>
  /** Every peer that runs part of the job. */
  peers?(): readonly string[]
  /** This peer's work directory. */
  readonly workDir?: string
  /** On the submitting peer: runs the job again with a new shape (see JobCluster.rescale). */
  rescale?(change: RescaleRequest): Promise<RescaleReport>
  /** On the coordinating peer of a failover job: records a complete checkpoint durably (see JobCluster.recordCheckpoint). */
  recordCheckpoint?(checkpoint: { readonly id: number; readonly record: unknown }): Promise<void>
}
