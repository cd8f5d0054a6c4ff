// How handlers (sinks above all) read the metadata of the record they are handling.

import { atom, type Annotations, type AnyCodec, type InstanceInfo, type Operator, type t } from '../../kernel/index.js'
import type { RecordMetadata } from './record.js'

/** Anything that knows the record its instance is handling. */
interface RecordCursor {
  readonly record: RecordMetadata | undefined
}

// Tracers by the InstanceInfo of their instance: the one object the kernel hands both the instance
// hook and the handler's context. Keyed by that object's identity, an entry belongs to one
// instance of one stack, so two stacks in one process (two peers, two kernels running jobs of the
// same id) never see each other's; it goes when the instance ends, or with the instance.
const byInfo = new WeakMap<InstanceInfo, RecordCursor>()

/** Registers the tracer of an instance (called by the layer's instance hook). */
export function registerCursor(info: InstanceInfo, cursor: RecordCursor): void {
  byInfo.set(info, cursor)
}

/** Forgets the tracer of an instance that ended. */
export function unregisterCursor(info: InstanceInfo): void {
  byInfo.delete(info)
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
  return byInfo.get(ctx.info)?.record
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
