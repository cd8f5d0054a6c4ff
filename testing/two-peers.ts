// Two peers in one process: a program's shares run by two kernels whose crossing links are joined in memory.
// The link stands in for the transport: values cross as JSON encoded by the receiving port's codec and are decoded
// on the other side (a process boundary is always checked), with credit and in-order markers.

import {
  DecodeError,
  kernel,
  renderProblem,
  check,
  JobAbortedError,
  type Batch,
  type Channel,
  type Deployment,
  type Header,
  type Job,
  type JobReport,
  type Layer,
  type Marker,
  type PeerDescription,
  type Program,
  type RemoteEnd,
  type RunOptions,
} from '../kernel/index.js'

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
  const wires = new Map<string, MemoryWire>()
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
    connect: (end) => {
      const key = `${end.info.link.id} ${end.info.from.instance}->${end.info.to.instance}`
      let wire = wires.get(key)
      if (wire === undefined) wires.set(key, (wire = new MemoryWire(end.capacity)))
      return end.side === 'sender' ? wire.sender(end) : wire.receiver(end)
    },
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

/** A frame on a memory wire: a batch as the transport would carry it. */
interface Frame {
  readonly json: string
  readonly records: number
}

/** One crossing link: frames in order, credit counted in records, an end. */
class MemoryWire {
  private readonly frames: Frame[] = []
  private queuedRecords = 0
  private ended = false
  private readable: (() => void) | undefined
  private writers: (() => void)[] = []

  constructor(private readonly capacity: number) {}

  sender(end: RemoteEnd): Channel {
    const wire = this
    return {
      info: end.info,
      get queued() {
        return wire.queuedRecords
      },
      send: (batch) => {
        const encoded = { values: batch.values.map((v) => end.codec.encode(v)), fields: batch.headers?.map((h) => h?.fields ?? null), marker: batch.marker }
        this.frames.push({ json: JSON.stringify(encoded), records: batch.values.length })
        this.queuedRecords += batch.values.length
        this.readable?.()
      },
      ready: () => this.queuedRecords < this.capacity,
      whenReady: (signal) =>
        this.queuedRecords < this.capacity
          ? Promise.resolve()
          : new Promise<void>((resolve, reject) => {
              if (signal?.aborted) return reject(new JobAbortedError(end.info.job, signal.reason))
              const onAbort = (): void => reject(new JobAbortedError(end.info.job, signal?.reason))
              signal?.addEventListener('abort', onAbort, { once: true })
              this.writers.push(() => {
                signal?.removeEventListener('abort', onAbort)
                resolve()
              })
            }),
      end: () => {
        this.ended = true
        this.readable?.()
      },
      take: () => undefined,
      onReadable: () => undefined,
    }
  }

  receiver(end: RemoteEnd): Channel {
    const wire = this
    return {
      info: end.info,
      get queued() {
        return wire.queuedRecords
      },
      send: () => undefined,
      ready: () => true,
      whenReady: () => Promise.resolve(),
      end: () => undefined,
      take: () => {
        const frame = this.frames.shift()
        if (frame === undefined) return this.ended ? 'end' : undefined
        this.queuedRecords -= frame.records
        if (this.queuedRecords < this.capacity) for (const wake of this.writers.splice(0)) wake()
        return decodeFrame(frame, end)
      },
      onReadable: (fn) => {
        this.readable = fn
      },
    }
  }
}

/** The batch a frame carries, decoded with the receiving port's codec; values that do not fit are dead letters. */
function decodeFrame(frame: Frame, end: RemoteEnd): Batch {
  const parsed = JSON.parse(frame.json) as { values: unknown[]; fields?: (Header['fields'] | null)[]; marker?: Marker }
  if (parsed.marker !== undefined) return { values: [], marker: parsed.marker }
  const values: unknown[] = []
  const headers: (Header | undefined)[] = []
  parsed.values.forEach((raw, i) => {
    const decoded = end.codec.decode(raw)
    if (decoded._tag === 'Left') {
      const where = { operator: end.info.to.operator, port: end.info.to.port, instance: end.info.to.instance, peer: end.peer }
      end.deadLetter(where, new DecodeError(where, (check(end.codec, raw) ?? []).map(renderProblem)), raw)
      return
    }
    values.push(decoded.right)
    const fields = parsed.fields?.[i]
    headers.push(fields === undefined || fields === null ? undefined : { fields })
  })
  return headers.some((h) => h !== undefined) ? { values, headers } : { values }
}
