// Waiting in tests: is a process alive, and waiting on a condition or an event with a deadline.

import { EmptyError, filter, firstValueFrom, throwError, timeout, type Observable } from 'rxjs'
import { WaitEndedError, WaitTimeoutError } from './errors.js'

/** True while a process with this id exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * Waits until `condition` holds (it may be async), checking every 25 ms; rejects with WaitTimeoutError naming `what`
 * after `ms`. For conditions no event announces (a process gone, a file written by another process).
 *
 * ```ts
 * await until(() => !alive(pid), 5000, `process ${pid} to exit`)
 * ```
 */
export async function until(condition: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > deadline) throw new WaitTimeoutError(what, ms)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/**
 * The first event of `events` that satisfies `predicate`; rejects with WaitTimeoutError naming
 * `what` after `ms`, or with WaitEndedError when the events complete first.
 *
 * ```ts
 * await waitFor(cluster.events!, (e) => e.type === 'ready' && e.index === 1, 30_000, 'peer 1 to restart')
 * ```
 */
export function waitFor<T>(events: Observable<T>, predicate: (event: T) => boolean, ms: number, what: string): Promise<T> {
  return firstValueFrom(events.pipe(filter(predicate), timeout({ first: ms, with: () => throwError(() => new WaitTimeoutError(what, ms)) }))).catch((error: unknown) => {
    throw error instanceof EmptyError ? new WaitEndedError(what) : error
  })
}
