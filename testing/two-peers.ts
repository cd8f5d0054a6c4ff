// Two peers in one process: a program's shares run by two kernels whose crossing links are joined in memory.
// Each crossing link is an in-memory frame channel (memory-transport.ts) under the kernel's remote adapter
// (remoteSender / remoteReceiver): values are encoded into frames and decoded with the receiving port's codec,
// with credit, markers and end, as over the libp2p transport, without processes or sockets.

import {
  JobAbortedError,
  kernel,
  type ChannelReceiver,
  type ChannelSender,
  type Job,
  type JobReport,
  type Layer,
  type PeerDescription,
  type Program,
  type RunOptions,
} from '../kernel/index.js'
import { remoteReceiver, remoteSender, type Deployment, type RemoteEnd } from '../kernel/internal.js'
import { memoryFrameChannel, type MemoryFrameChannel } from './memory-transport.js'

/** The two peers' ids. */
export const PEERS = ['A', 'B'] as const
/** One of the two peers. */
export type PeerId = (typeof PEERS)[number]

/** Options of `runOnTwoPeers`. */
export interface TwoPeersOptions {
  /** The job id both shares run under. */
  readonly id: string
  /** The layer stack of each peer (each peer builds its own, as separate processes would). */
  readonly layers: (peer: PeerId) => readonly Layer[]
  readonly program: Program
  /** Where an instance runs when the plan (a placement layer) assigned it nowhere. */
  readonly split: (operator: string, instance: number) => PeerId
  /** Each peer's work directory. */
  readonly workDir: (peer: PeerId) => string
  /** Run options of both shares (not the deployment, id or planned flag). */
  readonly run?: Omit<RunOptions, 'deployment' | 'id' | 'planned' | 'peers'>
}

/** What `runOnTwoPeers` did. */
export interface TwoPeersResult {
  readonly planned: Program
  readonly reports: { readonly [peer in PeerId]: JobReport }
  /** Channels that crossed from one peer to the other. */
  readonly crossing: number
}

/**
 * Plans `program` once on peer A (the submitter) under A's stack, then runs its two shares with
 * `planned: true`, each under its own stack, joined by in-memory links; control calls reach the
 * other share's `Job.control`. Resolves with both reports; if either share fails, the other is
 * aborted and the first failure is thrown.
 */
export async function runOnTwoPeers(options: TwoPeersOptions): Promise<TwoPeersResult> {
  const stacks = { A: kernel.with(...options.layers('A')), B: kernel.with(...options.layers('B')) }
  const peers: PeerDescription[] = PEERS.map((id) => ({ id, tags: { name: id } }))
  const planned = await stacks.A.plan(options.program, { job: options.id, self: 'A', peers })
  const peerOf = (operator: string, instance: number): string => planned.operator(operator)?.annotations.assignment?.peers[instance] ?? options.split(operator, instance)
  const wires = new Map<string, MemoryFrameChannel>()
  const jobs = new Map<string, { job: Promise<Job>; resolve: (job: Job) => void }>()
  for (const peer of PEERS) {
    let resolve!: (job: Job) => void
    jobs.set(peer, { job: new Promise<Job>((r) => (resolve = r)), resolve })
  }
  const deployment = (self: PeerId): Deployment => ({
    self,
    submitter: 'A',
    peerOf,
    peers: () => PEERS,
    workDir: options.workDir(self),
    connect: ((end: RemoteEnd): ChannelSender | ChannelReceiver => {
      const key = `${end.info.link.id} ${end.info.from.instance}->${end.info.to.instance}`
      let wire = wires.get(key)
      if (wire === undefined) {
        const producer = end.side === 'sender' ? self : end.peer
        const consumer = end.side === 'sender' ? end.peer : self
        wires.set(key, (wire = memoryFrameChannel({ link: key, producer, consumer })))
      }
      return end.side === 'sender'
        ? remoteSender(wire.sender, { info: end.info, deadLetter: end.deadLetter })
        : remoteReceiver(wire.receiver, { info: end.info, capacity: end.capacity, codec: end.codec, deadLetter: end.deadLetter })
    }) as Deployment['connect'],
    call: async (peer, kind, payload) => {
      const share = jobs.get(peer)
      if (share === undefined) throw new JobAbortedError(options.id, `no peer ${peer}`)
      return (await share.job).control(kind, payload)
    },
  })
  const started = PEERS.map((peer) => {
    const job = stacks[peer].run(planned, { ...options.run, id: options.id, deployment: deployment(peer), planned: true, peers })
    jobs.get(peer)!.resolve(job)
    return job
  })
  // One share failing leaves the other waiting on links that will never end: abort it.
  for (const job of started) job.done.catch((error: unknown) => started.forEach((other) => other !== job && other.abort(error)))
  const settled = await Promise.allSettled(started.map((job) => job.done))
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected')
  if (failed !== undefined) throw failed.reason
  const [a, b] = settled.map((s) => (s as PromiseFulfilledResult<JobReport>).value) as [JobReport, JobReport]
  return { planned, reports: { A: a, B: b }, crossing: wires.size }
}
