// How handlers (sinks above all) read the metadata of the record they are handling.

import { atom, type Annotations, type AnyCodec, type InstanceInfo, type Operator, type t } from '../../kernel/index.js'
import type { RecordMetadata } from './record.js'

/** Anything that knows the record its instance is handling. */
interface RecordCursor {
  readonly record: RecordMetadata | undefined
}

// Instances by their InstanceInfo (the object the kernel hands both the instance hook and the
// handler's context), and by job, operator and instance as a fallback. Entries go when the instance
// ends or its job stops.
const byInfo = new WeakMap<InstanceInfo, RecordCursor>()
const byJob = new Map<string, Map<string, RecordCursor>>()

function nameOf(info: InstanceInfo): string {
  return `${info.operator}#${info.instance}`
}

/** Registers the tracer of an instance (called by the layer's instance hook). */
export function registerCursor(info: InstanceInfo, cursor: RecordCursor): void {
  byInfo.set(info, cursor)
  let instances = byJob.get(info.job)
  if (instances === undefined) byJob.set(info.job, (instances = new Map()))
  instances.set(nameOf(info), cursor)
}

/** Forgets the tracer of an instance that ended. */
export function unregisterCursor(info: InstanceInfo): void {
  byInfo.delete(info)
  const instances = byJob.get(info.job)
  instances?.delete(nameOf(info))
  if (instances?.size === 0) byJob.delete(info.job)
}

/** Forgets every tracer of a job (it finished or failed, maybe without ending its instances). */
export function forgetJob(job: string): void {
  byJob.delete(job)
}

/**
 * The metadata of the record a handler is handling now, when a metadata layer traces it; else
 * undefined. Call it from a handler with the handler's `ctx` (in async handlers, also after awaits).
 *
 * ```ts
 * const out = atom({ name: 'out', inputs: { in: t.string }, on: { in: (word, ctx) => seen.push([word, recordMetadata(ctx)]) } })
 * ```
 */
export function recordMetadata(ctx: { readonly info: InstanceInfo }): RecordMetadata | undefined {
  const info = ctx.info
  return (byInfo.get(info) ?? byJob.get(info.job)?.get(nameOf(info)))?.record
}

/**
 * A sink that hands `target` each value with the metadata of its record (undefined for records not
 * traced). A returned promise is awaited, like a sink callback's.
 *
 * ```ts
 * const rows: { value: number; metadata?: RecordMetadata }[] = []
 * const out = tracedSink('out', t.number, (value, metadata) => void rows.push({ value, metadata }))
 * ```
 */
export function tracedSink<C extends AnyCodec>(
  name: string,
  codec: C,
  target: (value: t.TypeOf<C>, metadata: RecordMetadata | undefined) => unknown,
  annotations?: Annotations,
): Operator<{ in: C }, Record<never, never>> {
  return atom<{ in: C }, Record<never, never>>({
    name,
    inputs: { in: codec },
    on: { in: (value, ctx) => target(value, recordMetadata(ctx)) },
    ...(annotations === undefined ? {} : { annotations }),
  })
}
