// The admin protocol: what the operator's CLI asks of a running cluster. Every peer serves it; a
// peer answers for the jobs it coordinates (those submitted to it, or from it), and for membership.
// One request per stream, one answer (exchange.ts). Reading (members, jobs, status) is open to
// every admitted peer; changing anything (submit, cancel, rescale, savepoint) only to the peers
// allowed to submit (`PeerOptions.submitters`), checked against the stream's authenticated peer id.

import type { Stream } from '@libp2p/interface'
import * as t from 'io-ts'
import { CHECKPOINT_EVENTS } from '../../layers/index.js'
import type { Membership } from '../../kmods/membership/index.js'
import type { Logger } from '../../kmods/transport/logger.js'
import { NotAuthorizedError, UnknownJobError } from './errors.js'
import { answerOne } from './exchange.js'
import { CodeManifestCodec } from './job-protocol.js'
import { totals } from './progress.js'
import type { ClusterReport, SubmitOptions, SubmittedJob, Submitter } from './submission.js'

/** The protocol id of admin streams. */
export const ADMIN_PROTOCOL = '/lamina/admin/1.0.0'

/** Largest admin message: a submission carries its bundle (at most 32 MiB, base64). */
export const MAX_ADMIN_MESSAGE = 48 * 1024 * 1024

const SavepointCodec = t.type({ lineage: t.string, checkpoint: t.number })

/** Every request of the admin protocol. */
export const AdminRequest = t.union([
  t.type({ command: t.literal('members') }),
  t.type({ command: t.literal('jobs') }),
  t.type({ command: t.literal('status'), job: t.string }),
  t.intersection([
    t.type({ command: t.literal('submit'), code: CodeManifestCodec, bundle: t.string, args: t.array(t.string) }),
    t.partial({ fromSavepoint: SavepointCodec, failover: t.boolean }),
  ]),
  t.type({ command: t.literal('cancel'), job: t.string }),
  t.type({ command: t.literal('rescale'), job: t.string, operator: t.string, n: t.number }),
  t.type({ command: t.literal('savepoint'), job: t.string }),
  t.type({ command: t.literal('upgrade'), job: t.string, code: CodeManifestCodec, bundle: t.string, args: t.array(t.string) }),
])
export type AdminRequest = t.TypeOf<typeof AdminRequest>

const Nullable = <C extends t.Mixed>(codec: C) => t.union([codec, t.null])

/** One member as `lamina members` shows it. */
export const MemberRow = t.type({ peerId: t.string, status: t.string, multiaddrs: t.array(t.string), tags: t.record(t.string, t.string), self: t.boolean })
export type MemberRow = t.TypeOf<typeof MemberRow>

/** One job as `lamina jobs` lists it. */
export const JobSummary = t.type({
  id: t.string,
  program: t.string,
  /** The peer that coordinates it (sources and sinks run there). */
  coordinator: t.string,
  /** The peer that submitted it (the coordinator itself, or the operator's CLI). */
  submittedBy: t.string,
  state: t.keyof({ running: null, finished: null, failed: null, cancelled: null }),
  submittedAt: t.number,
  endedAt: Nullable(t.number),
  /** Attempts so far: one more per recovery and per rescale. */
  attempts: t.number,
  recoveries: t.number,
  rescales: t.number,
  /** Attempts started by an upgrade (a new version of the program). */
  upgrades: t.number,
  /** Records the sources emitted (in the current attempt while running). */
  records: t.number,
  deadLetters: t.number,
  /** The hash of the code it runs. */
  code: t.string,
  error: Nullable(t.type({ code: t.string, message: t.string })),
})
export type JobSummary = t.TypeOf<typeof JobSummary>

/** A job in detail, as `lamina status` shows it. */
export const JobStatus = t.intersection([
  JobSummary,
  t.type({
    /** Where each instance runs: instance -> peer. */
    plan: t.record(t.string, t.string),
    operators: t.array(t.type({ operator: t.string, instances: t.number, recordsIn: t.number, recordsOut: t.number, deadLetters: t.number })),
    /** The latest things that happened (recoveries, rescales, layer events), oldest first. */
    events: t.array(t.type({ at: t.number, message: t.string })),
    savepoints: t.array(t.type({ lineage: t.string, checkpoint: t.number, at: t.number })),
    checkpoints: t.type({ completed: t.number, last: Nullable(t.string) }),
    /** The first dead letters of the job (all of them are on the coordinator). */
    deadLetterSamples: t.array(t.type({ code: t.string, message: t.string })),
  }),
])
export type JobStatus = t.TypeOf<typeof JobStatus>

/** What a rescale through the admin protocol answers. */
export const RescaleAnswer = t.type({ changes: t.record(t.string, t.type({ from: t.number, to: t.number })), checkpoint: t.number, pauseMs: t.number, attempt: t.number })

/** What an upgrade through the admin protocol answers (UpgradeReport). */
export const UpgradeAnswer = t.type({
  from: t.type({ hash: t.string, name: t.string }),
  to: t.type({ hash: t.string, name: t.string }),
  checkpoint: t.number,
  state: t.type({
    kept: t.array(t.string),
    migrated: t.array(t.type({ operator: t.string, from: t.string, to: t.string })),
    added: t.array(t.string),
    removed: t.array(t.string),
  }),
  pauseMs: t.number,
  attempt: t.number,
})

/** What a savepoint through the admin protocol answers. */
export const SavepointAnswer = t.type({ lineage: t.string, checkpoint: t.number, at: t.number })

/** How many ended jobs a peer remembers for `lamina jobs` (the oldest are forgotten first). */
const ENDED_KEPT = 200
/** Events kept per job for `lamina status`. */
const EVENTS_KEPT = 50

interface JobRecord {
  readonly job: SubmittedJob
  readonly submittedBy: string
  readonly submittedAt: number
  state: JobSummary['state']
  endedAt: number | null
  report: ClusterReport | undefined
  error: { code: string; message: string } | null
  cancelledBy: string | undefined
  recoveries: number
  rescales: number
  upgrades: number
  checkpoints: number
  lastCheckpoint: string | null
  readonly events: { at: number; message: string }[]
  readonly savepoints: { lineage: string; checkpoint: number; at: number }[]
  readonly ended: Promise<void>
}

/** The jobs this peer coordinates, running and recently ended: what the admin protocol answers about. */
export class JobRegistry {
  private readonly records = new Map<string, JobRecord>()

  constructor(private readonly self: string) {}

  /** Follows a job submitted here (by this peer's program, or by `submittedBy` over the admin protocol). */
  track(job: SubmittedJob, submittedBy: string): void {
    const record: JobRecord = {
      job,
      submittedBy,
      submittedAt: Date.now(),
      state: 'running',
      endedAt: null,
      report: undefined,
      error: null,
      cancelledBy: undefined,
      recoveries: 0,
      rescales: 0,
      upgrades: 0,
      checkpoints: 0,
      lastCheckpoint: null,
      events: [],
      savepoints: [],
      ended: job.done.then(
        (report) => {
          record.report = report
          record.state = 'finished'
        },
        (error: unknown) => {
          record.state = record.cancelledBy === undefined ? 'failed' : 'cancelled'
          record.error = {
            code: (error as { code?: unknown }).code === undefined ? 'ERR_JOB' : String((error as { code: unknown }).code),
            message: error instanceof Error ? error.message : String(error),
          }
        },
      ),
    }
    const note = (message: string): void => {
      record.events.push({ at: Date.now(), message })
      if (record.events.length > EVENTS_KEPT) record.events.shift()
    }
    job.events.subscribe((event) => {
      if (event.type === 'recovering') {
        record.recoveries++
        note(`attempt ${event.attempt}: recovering without ${event.lost.join(', ') || 'no peer'} (${event.reason})`)
      } else if (event.type === 'rescaling') {
        record.rescales++
        note(`attempt ${event.attempt}: ${event.reason}, from checkpoint ${event.checkpoint}`)
      } else if (event.type === 'upgrading') {
        record.upgrades++
        note(`attempt ${event.attempt}: upgraded to code ${event.code.hash.slice(0, 12)}, from checkpoint ${event.checkpoint}`)
      } else if (event.type === 'layer') {
        if (CHECKPOINT_EVENTS.completed.is(event)) {
          record.checkpoints++
          record.lastCheckpoint = event.message
        } else if (!CHECKPOINT_EVENTS.started.is(event)) note(`[${event.layer}] ${event.kind} on ${event.peer}: ${event.message}`)
      }
    })
    void record.ended.then(() => {
      record.endedAt = Date.now()
      note(record.state === 'finished' ? 'finished' : `${record.state}: ${record.error?.message ?? ''}`)
      this.forgetOld()
    })
    this.records.set(job.id, record)
  }

  /** Summaries of every job known here, newest first. */
  summaries(): JobSummary[] {
    return [...this.records.values()].reverse().map((r) => this.summary(r))
  }

  /** One job in detail. @throws UnknownJobError when it is not coordinated here. */
  status(id: string): JobStatus {
    const record = this.find(id)
    const stats = record.report?.stats ?? record.job.stats()
    const letters = record.report?.deadLetters ?? []
    return {
      ...this.summary(record),
      plan: { ...(record.report?.plan ?? record.job.plan) },
      operators: totals(Object.values(stats)),
      events: [...record.events],
      savepoints: [...record.savepoints],
      checkpoints: { completed: record.checkpoints, last: record.lastCheckpoint },
      deadLetterSamples: letters.slice(0, 10).map((l) => ({ code: l.code, message: l.message })),
    }
  }

  /** The running job `id`. @throws UnknownJobError when it is not coordinated here or has ended. */
  running(id: string): SubmittedJob {
    const record = this.find(id)
    if (record.state !== 'running') throw new UnknownJobError(id, `it has ended (${record.state}) on ${this.self}`)
    return record.job
  }

  /** Cancels a running job and waits (at most `waitMs`) until it has ended. */
  async cancel(id: string, by: string, waitMs = 30_000): Promise<JobSummary> {
    const record = this.find(id)
    if (record.state === 'running') {
      record.cancelledBy = by
      record.job.abort(`cancelled by ${by}`)
      await Promise.race([record.ended, new Promise((resolve) => setTimeout(resolve, waitMs).unref())])
    }
    return this.summary(record)
  }

  /** Takes a savepoint of a running job and remembers it. */
  async savepoint(id: string): Promise<{ lineage: string; checkpoint: number; at: number }> {
    const record = this.find(id)
    const taken = { ...(await this.running(id).savepoint()), at: Date.now() }
    record.savepoints.push(taken)
    return taken
  }

  private find(id: string): JobRecord {
    const record = this.records.get(id)
    if (record === undefined) throw new UnknownJobError(id, `no job by this id is coordinated by ${this.self}`)
    return record
  }

  private summary(record: JobRecord): JobSummary {
    const stats = Object.values(record.report?.stats ?? record.job.stats())
    const sources = new Set(record.job.program.operators.filter((o) => Object.keys(o.inputs).length === 0).map((o) => o.name))
    const operators = totals(stats)
    return {
      id: record.job.id,
      program: record.job.program.name,
      coordinator: this.self,
      submittedBy: record.submittedBy,
      state: record.state,
      submittedAt: record.submittedAt,
      endedAt: record.endedAt,
      attempts: record.report?.attempts ?? 1 + record.recoveries + record.rescales + record.upgrades,
      recoveries: record.recoveries,
      rescales: record.rescales,
      upgrades: record.upgrades,
      records: operators.filter((o) => sources.has(o.operator)).reduce((n, o) => n + o.recordsOut, 0),
      deadLetters: record.report?.deadLetters.length ?? operators.reduce((n, o) => n + o.deadLetters, 0),
      code: record.job.code.hash,
      error: record.error,
    }
  }

  private forgetOld(): void {
    const ended = [...this.records.values()].filter((r) => r.state !== 'running')
    for (const record of ended.slice(0, Math.max(0, ended.length - ENDED_KEPT))) this.records.delete(record.job.id)
  }
}

/** What serving the admin protocol needs of its peer. */
export interface AdminComponents {
  readonly self: string
  readonly logger: Logger
  readonly membership: Pick<Membership, 'members'>
  readonly jobs: JobRegistry
  readonly submitter: Pick<Submitter, 'submitPacked'>
  /** Peer ids that may change things (submit, cancel, rescale, savepoint); undefined: every admitted peer. */
  readonly submitters: (() => ReadonlySet<string>) | undefined
}

/** Serves one admin stream from `remote` (its authenticated peer id). */
export function serveAdmin(stream: Stream, remote: string, components: AdminComponents): Promise<void> {
  return answerOne(stream, AdminRequest, (request) => handle(request, remote, components), {
    maxBytes: MAX_ADMIN_MESSAGE,
    invalidCode: 'ERR_ADMIN_PROTOCOL',
    fallbackCode: 'ERR_ADMIN',
  })
}

async function handle(request: AdminRequest, remote: string, c: AdminComponents): Promise<unknown> {
  if (request.command === 'members') {
    return c.membership.members().map((m): MemberRow => ({ peerId: m.peerId, status: m.status, multiaddrs: [...m.multiaddrs], tags: { ...m.tags }, self: m.self }))
  }
  if (request.command === 'jobs') return c.jobs.summaries()
  if (request.command === 'status') return c.jobs.status(request.job)
  // Everything below changes something: only the peers allowed to submit may.
  const submitters = c.submitters?.()
  if (submitters !== undefined && !submitters.has(remote)) {
    c.logger.warn(`refused admin command ${request.command} from ${remote}: not one of the ${submitters.size} peers allowed to submit`)
    throw new NotAuthorizedError(remote, c.self, request.command)
  }
  if (request.command === 'submit') {
    const options: SubmitOptions = {
      args: request.args,
      ...(request.fromSavepoint === undefined ? {} : { fromSavepoint: request.fromSavepoint }),
      ...(request.failover === true ? { failover: true } : {}),
    }
    const job = await c.submitter.submitPacked({ manifest: request.code, bundle: Buffer.from(request.bundle, 'base64') }, options)
    c.jobs.track(job, remote)
    c.logger.info(`job ${job.id} (${request.code.name}, code ${request.code.hash.slice(0, 12)}) submitted by ${remote}`)
    return c.jobs.summaries().find((s) => s.id === job.id)
  }
  if (request.command === 'cancel') {
    c.logger.info(`job ${request.job}: cancelled by ${remote}`)
    return c.jobs.cancel(request.job, remote)
  }
  if (request.command === 'rescale') return c.jobs.running(request.job).rescale(request.operator, request.n)
  if (request.command === 'upgrade') {
    const report = await c.jobs.running(request.job).upgradePacked({ manifest: request.code, bundle: Buffer.from(request.bundle, 'base64') }, { args: request.args })
    c.logger.info(`job ${request.job}: upgraded by ${remote} to code ${request.code.hash.slice(0, 12)} (from checkpoint ${report.checkpoint})`)
    return report
  }
  return c.jobs.savepoint(request.job)
}
