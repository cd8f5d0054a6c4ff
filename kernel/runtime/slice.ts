// Time slices: atoms run on microtasks, so without a pause now and then timers and I/O would starve.

import { performance } from 'node:perf_hooks'

/** How long atoms may run before the runtime lets the event loop turn (timers, sockets, files). */
const SLICE_MS = 4

let sliceStart = performance.now()

/**
 * Resolves at once while the current slice lasts, else after one turn of the event loop
 * (`setImmediate`). Every driver calls it between batches: the cooperative loop stays fair to
 * everything else in the process.
 */
export function endOfSlice(): Promise<void> | undefined {
  if (performance.now() - sliceStart < SLICE_MS) return undefined
  return new Promise<void>((resolve) =>
    setImmediate(() => {
      sliceStart = performance.now()
      resolve()
    }),
  )
}
