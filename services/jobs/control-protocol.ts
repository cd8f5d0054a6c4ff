// The control protocol: a layer's call to this job's share on another peer (JobCluster.call).
// One libp2p stream per call: a length-prefixed JSON request {job, kind, payload}, then one
// length-prefixed JSON answer {ok: true, value} or {ok: false, code, message}.

import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import * as t from 'io-ts'
import { check, LaminaError, renderProblem } from '../../kernel/index.js'
import { ControlCallError } from './errors.js'

/** The protocol id of control streams. */
export const CONTROL_PROTOCOL = '/lamina/control/1.0.0'

/** Largest control message (snapshots travel here): 256 MiB. */
const MAX_MESSAGE = 256 * 1024 * 1024

const Request = t.type({ job: t.string, kind: t.string, payload: t.unknown })
const Answer = t.union([t.type({ ok: t.literal(true), value: t.unknown }), t.type({ ok: t.literal(false), code: t.string, message: t.string })])
type Answer = t.TypeOf<typeof Answer>

const encoder = new TextEncoder()
const decoder = new TextDecoder()

async function readJson(stream: Stream, what: string, peer: string, signal?: AbortSignal): Promise<unknown> {
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE })
  const bytes = (await lp.read(signal === undefined ? {} : { signal })).subarray()
  try {
    return JSON.parse(decoder.decode(bytes)) as unknown
  } catch {
    throw new ControlCallError(peer, what, `the ${what} is not JSON (${bytes.length} bytes)`)
  }
}

/** Sends one control call over `stream` and returns the handler's value (the caller's side). */
export async function callOver(stream: Stream, peer: string, job: string, kind: string, payload: unknown, signal?: AbortSignal): Promise<unknown> {
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE })
  await lp.write(encoder.encode(JSON.stringify({ job, kind, payload: payload ?? null })), signal === undefined ? {} : { signal })
  const raw = await lp.read(signal === undefined ? {} : { signal })
  let answer: unknown
  try {
    answer = JSON.parse(decoder.decode(raw.subarray())) as unknown
  } catch {
    throw new ControlCallError(peer, kind, 'the answer is not JSON')
  }
  const problems = check(Answer, answer)
  if (problems !== undefined) throw new ControlCallError(peer, kind, `the answer does not fit the control protocol: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
  const typed = answer as Answer
  if (!typed.ok) throw new ControlCallError(peer, kind, `${typed.code}: ${typed.message}`, typed.code)
  return typed.value
}

/** Serves one control stream (the callee's side): `find` returns the job share's `control`. */
export async function serveControl(
  stream: Stream,
  peer: string,
  find: (job: string) => Promise<((kind: string, payload: unknown) => Promise<unknown>) | undefined>,
): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: MAX_MESSAGE })
  let answer: Answer
  try {
    const request = await readJson(stream, 'request', peer)
    const problems = check(Request, request)
    if (problems !== undefined) throw new ControlCallError(peer, 'request', `does not fit the control protocol: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
    const { job, kind, payload } = request as t.TypeOf<typeof Request>
    const control = await find(job)
    if (control === undefined) answer = { ok: false, code: 'ERR_UNKNOWN_JOB', message: `no share of job ${job} runs on this peer` }
    else answer = { ok: true, value: (await control(kind, payload)) ?? null }
  } catch (error) {
    answer = { ok: false, code: error instanceof LaminaError ? error.code : 'ERR_CONTROL', message: error instanceof Error ? error.message : String(error) }
  }
  try {
    await lp.write(encoder.encode(JSON.stringify(answer)))
    await stream.close()
  } catch {
    stream.abort(new Error('control stream closed'))
  }
}
