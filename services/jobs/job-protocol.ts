// The job protocol: how a submitting peer hands a job to the other peers and hears back from them.
// One libp2p stream per peer and job, carrying length-prefixed JSON messages checked by codecs.

import type { Stream } from '@libp2p/interface'
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils'
import * as t from 'io-ts'
import { check, renderProblem } from '../../kernel/index.js'
import type { DeadLetter, JobStats } from '../../kernel/index.js'
import { JobProtocolError } from './errors.js'

/** The protocol id of job streams. */
export const JOB_PROTOCOL = '/lamina/job/3.0.0'

const Stats = t.type({
  instances: t.array(t.type({ operator: t.string, instance: t.number, recordsIn: t.number, recordsOut: t.number, deadLetters: t.number, unlinked: t.number })),
  channels: t.array(
    t.intersection([t.type({ link: t.string, from: t.number, to: t.number, records: t.number, queued: t.number, maxQueued: t.number }), t.partial({ peer: t.string })]),
  ),
  deadLetters: t.number,
})

/** A dead letter as it travels: the value rendered as JSON where possible. */
const WireDeadLetter = t.type({
  where: t.partial({ operator: t.string, port: t.string, instance: t.number, peer: t.string }),
  code: t.string,
  message: t.string,
  value: t.unknown,
  time: t.number,
})
export type WireDeadLetter = t.TypeOf<typeof WireDeadLetter>

/** A program's code as a submission names it (see code.ts). */
export const CodeManifestCodec = t.type({ hash: t.string, name: t.string, size: t.number, dependencies: t.record(t.string, t.string) })

/** Every message of the protocol. */
export const JobMessage = t.union([
  t.intersection([
    // `plan`: instance -> peer; `annotations`: what the submitter's plan hooks set on each operator (see ShippedPlan).
    t.type({
      type: t.literal('submit'),
      job: t.string,
      // The program's code, by hash (see code.ts): a peer runs nothing else, and imports no path it names.
      code: CodeManifestCodec,
      args: t.array(t.string),
      plan: t.record(t.string, t.string),
      annotations: t.record(t.string, t.record(t.string, t.unknown)),
      submitter: t.string,
      addresses: t.record(t.string, t.array(t.string)),
      peers: t.array(t.type({ id: t.string, tags: t.record(t.string, t.string) })),
    }),
    // A restart after a failure: which attempt of which job (see Attempt).
    // A failover job's attempt: the fencing token its coordinator holds the role with (failover.ts).
    t.partial({
      attempt: t.intersection([t.type({ lineage: t.string, number: t.number }), t.partial({ resume: t.unknown })]),
      members: t.array(t.string),
      failover: t.type({ token: t.number }),
    }),
  ]),
  /** A peer does not have the code of the submission cached: the submitter sends it (`code`) on the same stream. */
  t.type({ type: t.literal('need-code'), peer: t.string, hash: t.string }),
  /** The bundle a `need-code` asked for, base64-encoded. */
  t.type({ type: t.literal('code'), hash: t.string, bundle: t.string }),
  t.type({ type: t.literal('accepted'), peer: t.string, instances: t.number }),
  t.type({ type: t.literal('refused'), peer: t.string, code: t.string, message: t.string }),
  t.type({ type: t.literal('start') }),
  t.type({ type: t.literal('progress'), peer: t.string, stats: Stats }),
  t.type({ type: t.literal('dead-letter'), peer: t.string, letter: WireDeadLetter }),
  t.type({ type: t.literal('done'), peer: t.string, stats: Stats }),
  t.type({ type: t.literal('failed'), peer: t.string, code: t.string, message: t.string }),
  t.type({ type: t.literal('abort'), reason: t.string }),
  /** A peer is leaving gracefully: move its instances off before it goes. */
  t.type({ type: t.literal('leaving'), peer: t.string }),
  /** A layer event of a peer's share (restart, checkpoint…), forwarded to the submitter. */
  t.type({ type: t.literal('event'), peer: t.string, layer: t.string, kind: t.string, message: t.string, data: t.unknown }),
])
export type JobMessage = t.TypeOf<typeof JobMessage>

/** Strips a dead letter to what can travel: the error becomes its code and message. */
export function toWire(letter: DeadLetter, peer: string): WireDeadLetter {
  let value: unknown = letter.value
  try {
    value = JSON.parse(JSON.stringify(letter.value ?? null)) as unknown
  } catch {
    value = String(letter.value)
  }
  return { where: { ...letter.where, peer: letter.where.peer ?? peer }, code: letter.code, message: letter.message, value, time: letter.time }
}

/** Plain stats for the wire. */
export function statsToWire(stats: JobStats): t.TypeOf<typeof Stats> {
  return {
    instances: stats.instances.map((i) => ({ ...i })),
    channels: stats.channels.map(({ link, from, to, records, queued, maxQueued, peer }) => ({
      link,
      from,
      to,
      records,
      queued,
      maxQueued,
      ...(peer === undefined ? {} : { peer }),
    })),
    deadLetters: stats.deadLetters,
  }
}

/** One job stream: typed messages in both directions. */
export class JobChannel {
  private readonly lp: LengthPrefixedStream<Stream>
  private readonly encoder = new TextEncoder()
  private readonly decoder = new TextDecoder()

  constructor(
    readonly stream: Stream,
    readonly remotePeer: string,
  ) {
    this.lp = lpStream(stream, { maxDataLength: 64 * 1024 * 1024 })
  }

  /** Sends one message. */
  async send(message: JobMessage, options?: { signal?: AbortSignal }): Promise<void> {
    await this.lp.write(this.encoder.encode(JSON.stringify(message)), options)
  }

  /** Receives the next message; throws JobProtocolError on malformed input or when the stream ends. */
  async receive(options?: { signal?: AbortSignal }): Promise<JobMessage> {
    let bytes: Uint8Array
    try {
      bytes = (await this.lp.read(options)).subarray()
    } catch (error) {
      throw new JobProtocolError(this.remotePeer, `the job stream ended: ${error instanceof Error ? error.message : String(error)}`, error)
    }
    let parsed: unknown
    try {
      parsed = JSON.parse(this.decoder.decode(bytes))
    } catch {
      throw new JobProtocolError(this.remotePeer, `a message is not JSON (${bytes.length} bytes)`)
    }
    const problems = check(JobMessage, parsed)
    if (problems !== undefined) throw new JobProtocolError(this.remotePeer, `a message does not fit the job protocol: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
    return parsed as JobMessage
  }

  /**
   * Resets the stream at once (a pending `receive` rejects), without waiting for the other side:
   * for a peer that no longer answers (declared dead by membership).
   */
  abort(error: Error): void {
    this.stream.abort(error)
  }

  /** Closes the stream, ignoring a stream that is already gone. */
  async close(): Promise<void> {
    try {
      await this.stream.close()
    } catch {
      this.stream.abort(new Error('closed'))
    }
  }
}
