// Internal contract between an instance body and the driver that runs it (not part of the public API).

import type { Header, InstanceInfo, Operator, PortCodecs, RequestOptions, Spawned, SpawnOptions, TimerHandle } from '../contracts.js'
import type { LaminaError, Where } from '../errors.js'

/** What the driver gives the kernel's base instances: the syscalls' implementations. */
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
  deadLetter(where: Where, error: LaminaError, value: unknown): void
  /** Wakes the driver after an emission outside a handler (an asynchronous rxjs emission). */
  emitted(): void
}

/** Reply to a request's header, if the record was one. */
export function replyOk(header: Header | undefined, value: unknown): void {
  header?.reply?.({ ok: true, value })
}

/** Fail a request's header, if the record was one. */
export function replyError(header: Header | undefined, error: unknown): void {
  header?.reply?.({ ok: false, error })
}
