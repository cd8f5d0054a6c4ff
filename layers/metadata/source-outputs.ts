// The outputs of a source instance: gives each record its lineage id and stamps the records the sampler picks.

import type { Header, InstanceInfo, Outputs } from '../../kernel/index.js'
import type { HopEvent } from './chrome-trace.js'
import { type Hop, now, OpenHop, type RecordMetadata, withMetadata } from './record.js'
import type { Sampler } from './sampler.js'
import type { TracerShared } from './tracer-shared.js'

/**
 * The outputs of a source instance: assigns each record its lineage id, `${operator}#${instance}:${seq}`,
 * and stamps the records the sampler picks. Records not picked go through untouched.
 */
export class SourceOutputs implements Outputs {
  private seq = 0
  private readonly prefix: string
  // Record sampling: records to let pass before the next traced one.
  private untilNext = 0
  // Batch sampling: the window (`batchSize` records emitted one by one, or one `emitAll`) and whether it is traced.
  private windowEnd = 0
  private windowTraced = false
  private hop: OpenHop | undefined
  private hops: readonly Hop[] = []
  private event: HopEvent | undefined

  constructor(
    private readonly inner: Outputs,
    private readonly info: InstanceInfo,
    private readonly shared: TracerShared,
    private readonly sampler: Sampler,
    private readonly byRecord: boolean,
  ) {
    this.prefix = `${info.operator}#${info.instance}:`
    // Either way the sampler draws gaps: in records, or in windows.
    this.untilNext = sampler.gap()
  }

  emit(port: string, value: unknown, header?: Header): void {
    const seq = this.seq++
    this.shared.counts.records++
    if (this.byRecord) {
      if (this.untilNext > 0) {
        this.untilNext--
        this.inner.emit(port, value, header)
        return
      }
      this.untilNext = this.sampler.gap()
      if (this.hop === undefined || seq >= this.windowEnd) {
        this.windowEnd = seq - (seq % this.info.batchSize) + this.info.batchSize
        this.open()
      }
    } else {
      if (seq >= this.windowEnd) this.nextWindow(seq + this.info.batchSize)
      if (!this.windowTraced) {
        this.inner.emit(port, value, header)
        return
      }
    }
    this.inner.emit(port, value, withMetadata(header, this.origin(seq)))
  }

  emitAll(port: string, values: readonly unknown[]): void {
    const n = values.length
    const first = this.seq
    this.seq += n
    this.shared.counts.records += n
    if (!this.byRecord) {
      // One emitAll is one window; a window of one-by-one emissions in progress ends here.
      this.nextWindow(this.seq)
      if (!this.windowTraced) this.plain(port, values, 0, n)
      else for (let i = 0; i < n; i++) this.inner.emit(port, values[i], { fields: { metadata: this.origin(first + i) } })
      return
    }
    let at = this.untilNext
    if (at >= n) {
      this.untilNext = at - n
      this.plain(port, values, 0, n)
      return
    }
    this.windowEnd = this.seq
    this.open()
    let start = 0
    while (at < n) {
      if (at > start) this.plain(port, values, start, at)
      this.inner.emit(port, values[at], { fields: { metadata: this.origin(first + at) } })
      start = at + 1
      at = start + this.sampler.gap()
    }
    if (start < n) this.plain(port, values, start, n)
    this.untilNext = at - n
  }

  /** Closes the open hop (the source finished). */
  close(): void {
    this.hop = undefined
  }

  /** Starts a window of batch sampling that ends before record `end`. */
  private nextWindow(end: number): void {
    this.windowEnd = end
    if (this.untilNext > 0) {
      this.untilNext--
      this.windowTraced = false
      return
    }
    this.untilNext = this.sampler.gap()
    this.windowTraced = true
    this.open()
  }

  private plain(port: string, values: readonly unknown[], start: number, end: number): void {
    const inner = this.inner
    if (start === 0 && end === values.length && inner.emitAll !== undefined) inner.emitAll(port, values)
    else for (let i = start; i < end; i++) inner.emit(port, values[i])
  }

  private open(): void {
    const hop = new OpenHop(this.info.operator, this.info.instance, this.shared.peer, now())
    this.hop = hop
    this.hops = [hop]
    this.event = this.shared.log.add(hop, this.info.job)
  }

  private origin(seq: number): RecordMetadata {
    const id = this.prefix + seq
    this.shared.counts.sampled++
    this.event!.records++
    return { trace: id, inputs: [id], hops: this.hops }
  }
}
