// One request, one answer, on one libp2p stream: a length-prefixed JSON request, then one
// length-prefixed JSON answer {ok: true, value} or {ok: false, code, message}. The control protocol
// (a layer's call to a job share elsewhere) and the admin protocol (the operator's CLI) both use it.

import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import * as t from 'io-ts'
import { check, LaminaError, renderProblem } from '../../kernel/index.js'

const Answer = t.union([t.type({ ok: t.literal(true), value: t.unknown }), t.type({ ok: t.literal(false), code: t.string, message: t.string })])
type Answer = t.TypeOf<typeof Answer>

/** How an exchange reports a failure: the reason, and the code the other side answered with, if it did. */
export type ExchangeFailure = (reason: string, remoteCode?: string) => Error

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * Sends `request` over `stream` and returns the answer's value. An answer that is not JSON or not
 * an answer, and a refusal (`ok: false`, with its code), throw what `fail` makes.
 */
export async function ask(
  stream: Stream,
  request: unknown,
  options: { readonly maxBytes: number; readonly fail: ExchangeFailure; readonly signal?: AbortSignal },
): Promise<unknown> {
  const lp = lpStream(stream, { maxDataLength: options.maxBytes })
  const signal = options.signal === undefined ? {} : { signal: options.signal }
  await lp.write(encoder.encode(JSON.stringify(request)), signal)
  const raw = await lp.read(signal)
  let answer: unknown
  try {
    answer = JSON.parse(decoder.decode(raw.subarray())) as unknown
  } catch {
    throw options.fail('the answer is not JSON')
  }
  const problems = check(Answer, answer)
  if (problems !== undefined) throw options.fail(`the answer does not fit the protocol: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
  const typed = answer as Answer
  if (!typed.ok) throw options.fail(`${typed.code}: ${typed.message}`, typed.code)
  return typed.value
}

/**
 * Serves one request on `stream`: checks it against `codec`, answers with what `handle` returns, or
 * with the code and message of what it throws (a LaminaError's code; `fallbackCode` otherwise).
 * A request that is not JSON or does not fit the codec is answered with `invalidCode` and what is
 * wrong (field paths), and never reaches `handle`.
 */
export async function answerOne<R>(
  stream: Stream,
  codec: t.Type<R, unknown>,
  handle: (request: R) => Promise<unknown>,
  options: { readonly maxBytes: number; readonly invalidCode: string; readonly fallbackCode: string },
): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: options.maxBytes })
  let answer: Answer
  try {
    const bytes = (await lp.read()).subarray()
    let request: unknown
    try {
      request = JSON.parse(decoder.decode(bytes)) as unknown
    } catch {
      throw new InvalidRequest(options.invalidCode, `the request is not JSON (${bytes.length} bytes)`)
    }
    const problems = check(codec, request)
    if (problems !== undefined) throw new InvalidRequest(options.invalidCode, `the request does not fit the protocol: ${problems.slice(0, 3).map(renderProblem).join('; ')}`)
    answer = { ok: true, value: (await handle(request as R)) ?? null }
  } catch (error) {
    answer = { ok: false, code: error instanceof LaminaError ? error.code : options.fallbackCode, message: error instanceof Error ? error.message : String(error) }
  }
  try {
    await lp.write(encoder.encode(JSON.stringify(answer)))
    await stream.close()
  } catch {
    stream.abort(new Error('the exchange stream closed'))
  }
}

/** A request that is not JSON or does not fit the protocol (answered with the protocol's own code). */
class InvalidRequest extends LaminaError {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}
