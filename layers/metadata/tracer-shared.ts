// What the tracers of one metadata layer share: the peer name, the bounds, the trace log and the counters.

import type { TraceLog } from './chrome-trace.js'
import type { Bounds, RecordMetadata } from './record.js'

/** What the tracers of one layer share. */
export interface TracerShared extends Bounds {
  /** The peer name hops carry. */
  readonly peer: string
  readonly maxKeys: number
  readonly log: TraceLog
  /** Source records seen and traced, over every job. */
  readonly counts: { records: number; sampled: number }
  /** Remembers the metadata of an object value a sink received. */
  remember(value: object, metadata: RecordMetadata): void
}
