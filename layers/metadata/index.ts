// The metadata layer: provenance (trace id, hops, lineage ids) piggybacked on envelopes, lineage queries, Chrome trace export.

export { metadata, type MetadataInit, type MetadataLayer, type MetadataStats, type TraceOptions } from './metadata.js'
export { recordMetadata, tracedSink } from './sink.js'
export { FIELD, type Hop, type Lineage, type OperatorInstance, type RecordMetadata } from './record.js'
export type { ChromeTrace, ChromeTraceEvent } from './chrome-trace.js'
export { TraceExportError } from './errors.js'
