// The messages between an isolated instance's host (the peer's main thread) and its worker thread or child process.
//
// The host drives; the isolated side runs nothing on its own. One conversation per call:
//   host → isolate   call {id, op}            start, process (a batch), run, end, or fire a timer
//   isolate → host   sys {id, kind, sync}     0..n syscalls on the way: flush, call, request
//   host → isolate   reply {id, ...}          each syscall's answer (a flush is answered once the
//                                             host's outputs have credit again: backpressure)
//   isolate → host   done {id, sync, ...}     the call's outcome
// Every isolate → host message that carries `sync` hands over what the operator did since the last
// one, all together: its emissions (one encoded batch per port), the state it touched (encoded
// with the state codec) and the values it rejected. Emissions and state therefore reach the host
// in step, so the host's copy of the state always matches the output it has delivered: that copy
// is what `Instance.snapshot()` returns, synchronously. When a layer on the host watches the
// instance's record loop (the metadata layer), syncs also carry a trail of which record each
// emission came from, which the host replays to that layer as if the record loop ran there.

import type { InstanceInfo, Key, StateChanges } from '../../kernel/index.js'
import type { EncodedBatch } from './batch-codec.js'
import type { ModuleRef } from './annotations.js'

/** An error crossing the boundary: enough to rebuild it on the other side. */
export interface SerializedError {
  readonly name: string
  readonly message: string
  readonly stack?: string
  /** The stable code of a Lamina error. */
  readonly code?: string
  /** True when the original was a LaminaError (its code is kept as is on the host). */
  readonly lamina: boolean
}

/** State the operator touched: entries to set (encoded by the state codec) and keys to forget. `null` is an unkeyed operator's slot. */
export type StateDelta = StateChanges

/**
 * One step of what a watched operator did, in order: `[0, index, key]` the kernel entered record
 * `index` of the batch (with its key); `[1, key]` code outside a record read `key`'s state (undefined:
 * `entries()` ended); `[2, port, n]` the next `n` values of `port` in `Sync.out` were emitted.
 */
export type TrailStep = readonly [0, number, Key | undefined] | readonly [1, Key | undefined] | [2, string, number]

/** What the operator did since the last sync point. */
export interface Sync {
  readonly out?: readonly { readonly port: string; readonly batch: EncodedBatch }[]
  /** Watched instances only (`InitMessage.watched`): the order of the records entered, the state keys read and the emissions in `out`. */
  readonly trail?: readonly TrailStep[]
  readonly delta?: StateDelta
  readonly rejected?: readonly { readonly value: unknown; readonly reason: string }[]
  /**
   * Within a `process` call: records of the batch before this index are done and their output is
   * in this or an earlier sync (a flush inside record i's handler counts record i as done).
   */
  readonly done?: number
}

/** What the isolated side needs to rebuild and run the operator. */
export interface InitMessage {
  readonly t: 'init'
  readonly from: ModuleRef
  readonly info: InstanceInfo
  readonly inputs: readonly string[]
  readonly outputs: readonly string[]
  readonly crashes: boolean
  /** A layer on the host watches the instance's record loop: syncs carry a trail. */
  readonly watched?: boolean
  /** Worker threads only: `[call id, record index]` of the record being handled, for the host to blame after a fault. */
  readonly progress?: SharedArrayBuffer
}

/** The operations a call runs. */
export type CallOp = 'start' | 'process' | 'run' | 'end' | 'timer'

/** Messages from the host. */
export type HostMessage =
  | InitMessage
  | { readonly t: 'call'; readonly id: number; readonly op: 'start' | 'run' | 'end' }
  | {
      readonly t: 'call'
      readonly id: number
      readonly op: 'process'
      readonly port: string
      readonly batch: EncodedBatch
      readonly requests?: readonly number[]
      /** The host watches this batch's records: the trail names each record entered. */
      readonly observe?: boolean
    }
  | { readonly t: 'call'; readonly id: number; readonly op: 'timer'; readonly timer: number }
  | { readonly t: 'reply'; readonly id: number; readonly ok: true; readonly value?: unknown }
  | { readonly t: 'reply'; readonly id: number; readonly ok: false; readonly error: SerializedError }
  | { readonly t: 'restore'; readonly entries: readonly (readonly [Key | null, unknown])[] }
  | { readonly t: 'abort'; readonly reason: string }
  | { readonly t: 'ping'; readonly n: number }

/** A record of a `process` call that failed: a handler error, or a value that does not fit the port's codec. */
export interface RecordFailure {
  readonly index: number
  readonly error: SerializedError
  /** The value does not fit the input port's codec (the host records a DecodeError). */
  readonly undecodable?: boolean
}

/** The outcome of a call. */
export interface DoneMessage {
  readonly t: 'done'
  readonly id: number
  readonly sync: Sync
  /** `process`: the records that failed, in order. */
  readonly failures?: readonly RecordFailure[]
  /** `process`: replies to the records that were requests, by index. */
  readonly replies?: readonly (readonly [number, unknown])[]
  /** `process` under `onError: 'crash'`: the record whose failure ended the batch (the last of `failures`). */
  readonly crashedAt?: number
  /** `process` on a batch-handler port: the handler failed (the whole batch is one dead letter). */
  readonly batchFailed?: SerializedError
  /** start, run, end, timer: what the operator's code threw. */
  readonly error?: SerializedError
}

/** Messages from the isolated side. */
export type IsolateMessage =
  | { readonly t: 'hello' }
  | { readonly t: 'ready' }
  /** The operator could not be built: `reason` says why (the IsolationModuleError's reason, or the error). */
  | { readonly t: 'init-failed'; readonly reason: string }
  | { readonly t: 'sys'; readonly id: number; readonly kind: 'flush'; readonly sync: Sync }
  | { readonly t: 'sys'; readonly id: number; readonly kind: 'call'; readonly name: string; readonly argument: unknown; readonly sync: Sync }
  | { readonly t: 'sys'; readonly id: number; readonly kind: 'request'; readonly port: string; readonly value: unknown; readonly timeout?: number; readonly sync: Sync }
  | { readonly t: 'timer'; readonly timer: number; readonly ms: number; readonly repeat: boolean }
  | { readonly t: 'cancel'; readonly timer: number }
  | DoneMessage
  | { readonly t: 'pong'; readonly n: number }
  /** An error nothing caught on the isolated side: it exits next. */
  | { readonly t: 'fatal'; readonly error: SerializedError }

/** Serializes an error for the other side; a Lamina error is recognised by its class chain, even from another copy of the kernel. */
export function serializeError(error: unknown): SerializedError {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return {
      name: error.name,
      message: error.message,
      ...(error.stack === undefined ? {} : { stack: error.stack }),
      ...(typeof code === 'string' ? { code } : {}),
      lamina: isLaminaError(error),
    }
  }
  return { name: 'Error', message: typeof error === 'string' ? error : safeJson(error), lamina: false }
}

function isLaminaError(error: Error): boolean {
  for (let proto: unknown = Object.getPrototypeOf(error); proto !== null && proto !== undefined; proto = Object.getPrototypeOf(proto)) {
    if ((proto as { constructor?: { name?: string } }).constructor?.name === 'LaminaError') return true
  }
  return false
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** The buffers of a sync's emissions, for a transfer list. */
export function transfers(sync: Sync): ArrayBuffer[] {
  return sync.out === undefined ? [] : sync.out.map((o) => o.batch.buffer)
}
