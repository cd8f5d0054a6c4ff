// Workflows: functions of several steps whose progress is journaled step by step, so that when the
// process running one dies another peer resumes it from its last completed step, replaying the
// journal instead of redoing steps (as Temporal and Restate do).
//
// A workflow run is itself a durable request (named `wf.<name>`): it is leased, redelivered when
// its worker dies, retried and dead-lettered like any request. Each step is journaled at
// `_lamina/wf/<name>/<id>/<n>` once it completed: a call's result (the call itself is a durable
// request whose idempotency key is `<id>.<n>`, so even a step that was running when the workflow's
// worker died is not run twice: its request is found and awaited), or a sleep's wake-up time.
//
// The determinism rule: given the same input, workflow code must ask for the same steps, in the
// same order, with the same inputs; everything else it needs that may differ between runs (the
// time, random numbers, reads of outside state) must come from a step. A replay that asks for
// another step than the journal holds at that place fails with WorkflowDeterminismError (and the
// run becomes a dead letter: retrying the same code cannot help).

import { createHash } from 'node:crypto'
import type { KvClient } from '../kv/client.js'
import type { CallOptions, Durable, RequestContext, ServeOptions, Worker } from './durable.js'
import { WorkflowDeterminismError } from './errors.js'

/** What a workflow's code steps through. */
export interface WorkflowContext {
  readonly workflow: string
  /** The run's id (its idempotency key). */
  readonly id: string
  /** Calls durable request `name` as the next step: journaled, so a replay returns its result without calling again. */
  call<O = unknown>(name: string, input: unknown, options?: Omit<CallOptions, 'idempotencyKey' | 'signal'>): Promise<O>
  /** Sleeps as the next step: the wake-up time is journaled, so a replay after it does not sleep again. */
  sleep(ms: number): Promise<void>
  /** 1 for the first run of the workflow, more after a crash or a retry (replays). */
  readonly attempt: number
}

/** Journaled steps of a workflow run. */
type Step =
  | { readonly kind: 'call'; readonly name: string; readonly input: string; readonly result: unknown }
  | { readonly kind: 'sleep'; readonly ms: number; readonly until: number }

function stepKey(workflow: string, id: string, n: number): string {
  return `_lamina/wf/${workflow}/${id}/${String(n).padStart(6, '0')}`
}

function digest(value: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify(value ?? null))
    .digest('hex')
    .slice(0, 16)
}

/** The request name a workflow runs under. */
export function workflowRequest(name: string): string {
  return `wf.${name}`
}

/**
 * Serves workflow `name` (its runs are requests named `wf.<name>`; start one with
 * `durable.call(workflowRequest(name), input)` or `startWorkflow`).
 */
export function serveWorkflow<I, O>(
  d: Durable,
  kv: KvClient,
  name: string,
  fn: (w: WorkflowContext, input: I) => Promise<O>,
  options: Omit<ServeOptions<never, never>, 'input' | 'output'> = {},
): Worker {
  return d.serve(
    workflowRequest(name),
    async (input: unknown, ctx: RequestContext) => {
      let n = 0
      const journaled = async (): Promise<Step | undefined> => {
        const entry = await kv.get(stepKey(name, ctx.id, n))
        return entry === undefined ? undefined : (JSON.parse(entry.value) as Step)
      }
      const w: WorkflowContext = {
        workflow: name,
        id: ctx.id,
        attempt: ctx.attempt,
        call: async <R>(request: string, callInput: unknown, callOptions: Omit<CallOptions, 'idempotencyKey' | 'signal'> = {}): Promise<R> => {
          const at = ++n
          const key = stepKey(name, ctx.id, at)
          const before = await journaled()
          const wanted = `call ${request}(${digest(callInput)})`
          if (before !== undefined) {
            const had = before.kind === 'call' ? `call ${before.name}(${before.input})` : `sleep ${before.ms} ms`
            if (had !== wanted) throw Object.assign(new WorkflowDeterminismError(name, ctx.id, at, had, wanted), { final: true })
            return (before as Extract<Step, { kind: 'call' }>).result as R
          }
          const result = await d.call<R>(request, callInput, { ...callOptions, idempotencyKey: `${ctx.id}.${at}`, signal: ctx.signal })
          const step: Step = { kind: 'call', name: request, input: digest(callInput), result: result === undefined ? null : result }
          await kv.cas(key, JSON.stringify(step), { ifModRevision: 0 })
          return result
        },
        sleep: async (ms: number): Promise<void> => {
          const at = ++n
          const before = await journaled()
          let until: number
          if (before !== undefined) {
            if (before.kind !== 'sleep' || before.ms !== ms)
              throw Object.assign(
                new WorkflowDeterminismError(name, ctx.id, at, before.kind === 'sleep' ? `sleep ${before.ms} ms` : `call ${before.name}(${before.input})`, `sleep ${ms} ms`),
                {
                  final: true,
                },
              )
            until = before.until
          } else {
            until = Date.now() + ms
            await kv.cas(stepKey(name, ctx.id, at), JSON.stringify({ kind: 'sleep', ms, until } satisfies Step), { ifModRevision: 0 })
          }
          const left = until - Date.now()
          if (left > 0)
            await new Promise<void>((resolve, reject) => {
              const timer = setTimeout(resolve, left)
              ctx.signal.addEventListener(
                'abort',
                () => {
                  clearTimeout(timer)
                  reject(ctx.signal.reason)
                },
                { once: true },
              )
            })
        },
      }
      return fn(w, input as I)
    },
    options,
  )
}

/** The steps a run has journaled so far, in order (for `lamina requests show` and tests). */
export async function workflowSteps(kv: KvClient, name: string, id: string): Promise<{ readonly step: number; readonly kind: string; readonly detail: string }[]> {
  const prefix = `_lamina/wf/${name}/${id}/`
  return (await kv.scan({ prefix })).map((e) => {
    const step = JSON.parse(e.value) as Step
    return { step: Number(e.key.slice(prefix.length)), kind: step.kind, detail: step.kind === 'call' ? step.name : `${step.ms} ms` }
  })
}
