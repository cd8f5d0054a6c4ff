// The log source: emits a durable log's entries from an offset on, and resumes there after a restore.

import { setTimeout as sleep } from 'node:timers/promises'
import { InvalidOptionError, source, type Annotations, type AnyCodec, type Operator, type SourcePart } from '../../kernel/index.js'
import type { StoreOptions } from '../store/index.js'
import { openLog } from './log.js'

/** Options of `logSource`. */
export interface LogSourceOptions {
  /** The store's database file (opened where the source runs). */
  readonly path: string
  readonly topic: string
  /**
   * `false`: end at the log's length as of the instance's start; `true`: after the end, keep
   * polling for appends until the job stops or aborts. @default false
   */
  readonly follow?: boolean
  /** Milliseconds between polls for appends once caught up (follow). @default 100 */
  readonly pollMs?: number
  /** Entries read from the store at a time. @default 1000 */
  readonly readMax?: number
  /** How the store is opened. @default {} */
  readonly store?: StoreOptions
  /** Milliseconds a partial batch may wait for more entries before it is sent. @default 5 */
  readonly lingerMs?: number
  readonly annotations?: Annotations
}

/**
 * Entries of one instance's block: with parallelism n, instance i reads blocks i, i + n, i + 2n …
 * of this many consecutive offsets (an aligned block is one listing of the store, see openLog).
 */
const BLOCK = 1000

/**
 * A source emitting the values of the log `topic` in the store at `path`, in offset order. The
 * values are the log's JSON; the kernel checks them against `codec` where they enter the program
 * (a value that does not fit is a dead letter ERR_DECODE).
 *
 * Replay is `seek`: the source's offset (entries this instance emitted) maps to a log offset, so
 * after a restore from a checkpoint it reads on from there and emits nothing twice. With
 * parallelism n, instance i reads the blocks of 1000 offsets i, i + n, i + 2n … (its share, in
 * order); with parallelism 1, the whole log in order.
 *
 * With `follow: true` the source never ends by itself: once caught up it polls the log's length
 * every `pollMs` and emits what was appended (by any connection or process), until the job stops
 * or aborts.
 *
 * ```ts
 * const orders = logSource('orders', Order, { path: '/var/lamina/events.db', topic: 'orders', follow: true })
 * ```
 */
export function logSource<C extends AnyCodec>(name: string, codec: C, options: LogSourceOptions): Operator<Record<never, never>, { out: C }> {
  const where = `logSource ${name}`
  if (typeof options?.path !== 'string' || options.path === '') throw new InvalidOptionError(where, 'path', 'must be a non-empty string')
  if (typeof options.topic !== 'string' || options.topic === '') throw new InvalidOptionError(where, 'topic', 'must be a non-empty string')
  const settings: Settings = {
    path: options.path,
    topic: options.topic,
    follow: options.follow ?? false,
    pollMs: positiveInteger(where, 'pollMs', options.pollMs, 100),
    readMax: positiveInteger(where, 'readMax', options.readMax, 1000),
    store: options.store ?? {},
  }
  return source(name, codec, (part) => logValues(settings, part), { replay: 'seek', lingerMs: options.lingerMs, annotations: options.annotations })
}

interface Settings {
  readonly path: string
  readonly topic: string
  readonly follow: boolean
  readonly pollMs: number
  readonly readMax: number
  readonly store: StoreOptions
}

function positiveInteger(where: string, option: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isSafeInteger(value) || value <= 0) throw new InvalidOptionError(where, option, `must be a positive integer, got ${String(value)}`)
  return value
}

/** The log offset of a part's `k`-th entry (from 0). */
function offsetOf(k: number, part: SourcePart): number {
  return (Math.floor(k / BLOCK) * part.parallelism + part.instance) * BLOCK + (k % BLOCK)
}

/** This part's values of the log, from its entry `part.offset` on. */
async function* logValues(settings: Settings, part: SourcePart): AsyncGenerator<unknown> {
  const log = openLog(settings.path, settings.topic, settings.store)
  try {
    const end = settings.follow ? Infinity : log.length
    for (let k = part.offset; ; ) {
      if (part.signal.aborted) return
      const at = offsetOf(k, part)
      const available = settings.follow ? log.length : end
      if (at >= available) {
        if (!settings.follow) return
        if (!(await pause(settings.pollMs, part.signal))) return
        continue
      }
      const blockEnd = (Math.floor(at / BLOCK) + 1) * BLOCK
      for (const entry of log.read(at, Math.min(settings.readMax, blockEnd - at, available - at))) {
        k++
        yield entry.value
      }
    }
  } finally {
    log.close()
  }
}

/** Waits `ms`; false when `signal` aborted first. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal })
    return true
  } catch {
    return false
  }
}
