// The control protocol: a layer's call to this job's share on another peer (JobCluster.call).
// One libp2p stream per call: a request {job, kind, payload}, then one answer (see exchange.ts).

import type { Stream } from '@libp2p/interface'
import * as t from 'io-ts'
import { ControlCallError, UnknownJobError } from './errors.js'
import { answerOne, ask } from './exchange.js'

/** The protocol id of control streams. */
export const CONTROL_PROTOCOL = '/lamina/control/1.0.0'

/** Largest control message (snapshots travel here): 256 MiB. */
const MAX_MESSAGE = 256 * 1024 * 1024

const Request = t.type({ job: t.string, kind: t.string, payload: t.unknown })

/** Sends one control call over `stream` and returns the handler's value (the caller's side). */
export function callOver(stream: Stream, peer: string, job: string, kind: string, payload: unknown, signal?: AbortSignal): Promise<unknown> {
  return ask(
    stream,
    { job, kind, payload: payload ?? null },
    {
      maxBytes: MAX_MESSAGE,
      fail: (reason, remoteCode) => new ControlCallError(peer, kind, reason, remoteCode),
      ...(signal === undefined ? {} : { signal }),
    },
  )
}

/** Serves one control stream (the callee's side): `find` returns the job share's `control`. */
export function serveControl(stream: Stream, find: (job: string) => Promise<((kind: string, payload: unknown) => Promise<unknown>) | undefined>): Promise<void> {
  return answerOne(
    stream,
    Request,
    async ({ job, kind, payload }) => {
      const control = await find(job)
      if (control === undefined) throw new UnknownJobError(job)
      return control(kind, payload)
    },
    { maxBytes: MAX_MESSAGE, invalidCode: 'ERR_CONTROL_CALL', fallbackCode: 'ERR_CONTROL' },
  )
}
