// The syscalls' implementations an atom instance runs on: the driver's, or a layer's that runs the atom elsewhere (isolation).

import type { Header, InstanceInfo, Operator, PortCodecs, RequestOptions, Spawned, SpawnOptions, TimerHandle } from '../contracts.js'
import type { LaminaError, Where } from '../errors.js'

/**
 * What the kernel's base instances run on: the syscalls' implementations. The driver of each
 * instance is one; `atomInstance(spec, services)` runs an atom on others (the isolation layer
 * forwards them from a worker thread or child process to the host).
 */
export interface AtomServices {
  readonly info: InstanceInfo
  /** Fires on graceful stop and on abort: sources stop producing. */
  readonly stopSignal: AbortSignal
  /** The input ports whose values must be checked against their codecs. */
  readonly checkedPorts: ReadonlySet<string>
  flush(): Promise<void>
  /** Sends a request; `emit` puts it on the (layer-wrapped) outputs with the reply header. */
  request(port: string, value: unknown, options: RequestOptions | undefined, emit: (header: Header) => void): Promise<unknown>
  timer(ms: number, fn: () => unknown, repeat: boolean): TimerHandle
  sleep(ms: number): Promise<void>
  spawn<I extends PortCodecs>(operator: Operator<I, PortCodecs>, options: SpawnOptions | undefined): Spawned<I>
  call(name: string, argument: unknown): Promise<unknown>
  /**
   * Records a value that was not processed. `record` is the value's index in the batch being
   * processed when it is one record of it (a value failing the port's codec, a record whose handler
   * failed); undefined for a batch handler's whole batch, a lifecycle hook and `ctx.reject`.
   */
  deadLetter(where: Where, error: LaminaError, value: unknown, record?: number): void
  /** Wakes the driver after an emission outside a handler (an asynchronous rxjs emission). */
  emitted(): void
  /** A source's watermark (event time), passed on after what it emitted so far; absent where atoms cannot emit one. */
  watermark?(time: number): void
  /** A source's idleness (see AtomContext.markIdle); absent where atoms cannot emit watermarks. */
  markIdle?(): void
}

/** Reply to a request's header, if the record was one. */
export function replyOk(header: Header | undefined, value: unknown): void {
  header?.reply?.({ ok: true, value })
}

/** Fail a request's header, if the record was one. */
export function replyError(header: Header | undefined, error: unknown): void {
  header?.reply?.({ ok: false, error })
}
