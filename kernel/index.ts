// Lamina's public API: operators, links and programs as values; the kernel that runs them; the layer API.

export type * from './contracts.js'
export * from './errors.js'
export { t, check, renderProblem, type DecodeProblem } from './codec.js'
export { atom, stream, type AtomDefinition, type StreamDefinition } from './operator.js'
export { link, makeLink, forward, hash, broadcast, roundRobin, type LinkOptions } from './link.js'
export { program, validateProgram, type ProgramDefinition } from './program.js'
export { Kernel, kernel } from './kernel.js'
export { orderLayers, wrapChannel, wrapInstance, capability, provide, layerEvent, SAVEPOINTS } from './layer.js'
export { fuseChains } from './fusion.js'
export { fnv1a, hashKey, keyGroupOf, instanceOfKey, instanceOfKeyGroup, KEY_GROUPS, seededRandom } from './hash.js'
export { source, type SourceInput, type SourceOptions, type SourcePart, type SourceReplay } from './operators/source.js'
export { fileSource, type FileSourceOptions } from './operators/file-source.js'
export { sink, type SinkTarget } from './operators/sink.js'
export { map } from './operators/map.js'
export { filter } from './operators/filter.js'
export { flatMap } from './operators/flat-map.js'
export { native, stringLayout, recordLayout, utf8ChunkLayout, Utf8Bytes, type NativeLayout, type NativeDefinition, type RecordFields, type StepSpec } from './operators/native.js'
export { atomInstance, type AtomInstanceOptions } from './runtime/atom.js'
export { StateStore, type StateStoreOptions, type StateChanges } from './runtime/state.js'
export type { AtomServices } from './runtime/services.js'
export type * from './contracts/frames.js'
export { isChannelReceiver, isChannelSender } from './runtime/channel.js'
export type { ChannelOverrides } from './layer.js'
export * from './remote/errors.js'
export { remoteSender, linkName, type RemoteSender, type RemoteSenderOptions, type RemoteSenderStats } from './remote/sender.js'
export { remoteReceiver, type RemoteReceiver, type RemoteReceiverOptions, type RemoteReceiverStats } from './remote/receiver.js'
export {
  encodeRecords,
  encodeRecordsLenient,
  decodeRecords,
  encodeMarkerPayload,
  decodeMarkerPayload,
  encodeReplyPayload,
  decodeReplyPayload,
  ValueEncoding,
  type Records,
  type Reply,
} from './remote/payload.js'
// Byte-level helpers the wire formats share (kmods/transport's frames, the adapter's payloads); internal, like the encoders above.
export { ByteReader, typeName, varintSize, writeVarint } from './bytes.js'
