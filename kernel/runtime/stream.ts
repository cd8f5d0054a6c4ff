// The base instance of a stream-form operator: input batches become rxjs Subject pushes.

import { Subject, type Observable, type Subscription } from 'rxjs'
import type { Batch, Instance, InstanceInfo, InstanceSpec, StateSnapshot, StreamBody } from '../contracts.js'
import { acceptsAll, check, renderProblem } from '../codec.js'
import { DecodeError, HandlerError } from '../errors.js'
import type { AtomServices } from './services.js'

/**
 * Runs a stream body. Each input port is a Subject; each output Observable's values go to the
 * instance's outputs. If the body's pipeline errors, the error is recorded as a dead letter with
 * the record being pushed, and the body is started again for the records that follow (the
 * pipeline's internal state, e.g. a `scan`, starts afresh: stream-form operators are stateless).
 */
export class StreamInstance implements Instance {
  private readonly body: StreamBody
  private subjects = new Map<string, Subject<unknown>>()
  private subscriptions: Subscription[] = []
  private openOutputs = 0
  private outputsDone: (() => void) | undefined
  private failedWith: unknown
  private current: unknown

  constructor(
    private readonly spec: InstanceSpec,
    private readonly services: AtomServices,
  ) {
    const body = spec.operator.body
    if (body.form !== 'stream') throw new TypeError(`StreamInstance needs a stream-form operator, got ${body.form}`)
    this.body = body
  }

  get info(): InstanceInfo {
    return this.services.info
  }

  start(): void {
    this.subscribe()
  }

  private subscribe(): void {
    const inputs: Record<string, Observable<unknown>> = {}
    this.subjects = new Map()
    for (const port of Object.keys(this.spec.operator.inputs)) {
      const subject = new Subject<unknown>()
      this.subjects.set(port, subject)
      inputs[port] = subject.asObservable()
    }
    const outputs = this.body.fn(inputs, this.services.info)
    this.openOutputs = 0
    for (const port of Object.keys(this.spec.operator.outputs)) {
      const output = outputs[port]
      if (output === undefined) continue
      this.openOutputs++
      this.subscriptions.push(
        output.subscribe({
          next: (value) => {
            this.spec.outputs.emit(port, value)
            this.services.emitted()
          },
          error: (error: unknown) => {
            this.failedWith = error
            this.closeOutput()
          },
          complete: () => this.closeOutput(),
        }),
      )
    }
  }

  private closeOutput(): void {
    this.openOutputs--
    if (this.openOutputs === 0) this.outputsDone?.()
  }

  process(port: string, batch: Batch): void {
    const input = this.spec.operator.inputs[port]
    const codec = input !== undefined && this.services.checkedPorts.has(port) && !acceptsAll(input.codec) ? input.codec : undefined
    for (const value of batch.values) {
      if (codec !== undefined && !codec.is(value)) {
        const where = { operator: this.services.info.operator, port, instance: this.services.info.instance }
        this.services.deadLetter(where, new DecodeError(where, (check(codec, value) ?? []).map(renderProblem)), value)
        continue
      }
      this.current = value
      this.subjects.get(port)?.next(value)
      if (this.failedWith !== undefined) this.restartAfterError(port, value)
    }
  }

  private restartAfterError(port: string, value: unknown): void {
    const where = { operator: this.services.info.operator, port, instance: this.services.info.instance }
    this.services.deadLetter(where, new HandlerError(where, this.failedWith), value)
    this.failedWith = undefined
    for (const s of this.subscriptions) s.unsubscribe()
    this.subscriptions = []
    this.subscribe()
  }

  run(): void {}

  end(): void | Promise<void> {
    const done = new Promise<void>((resolve) => {
      this.outputsDone = resolve
    })
    for (const subject of this.subjects.values()) subject.complete()
    if (this.failedWith !== undefined) {
      const where = { operator: this.services.info.operator, instance: this.services.info.instance }
      this.services.deadLetter(where, new HandlerError(where, this.failedWith), this.current)
      this.failedWith = undefined
    }
    if (this.openOutputs <= 0) return
    return done
  }

  snapshot(): StateSnapshot {
    return { operator: this.spec.operator.name, entries: [] }
  }

  restore(): void {}
}
