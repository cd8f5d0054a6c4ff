// Lamina's internal entry (`lamina/internal`): the contracts and pieces the kernel shares with Lamina's
// own tiers and nobody else needs: how a cluster runtime deploys a job's share (Deployment,
// RemoteEnd), the remote-channel adapter that turns a frame channel into a typed channel, the
// payload encoders of its DATA, MARKER and REPLY frames, and the byte helpers the wire formats share.
// kmods/transport, services/jobs and lamina/testing import it; user code should not (as with libp2p's
// @libp2p/interface-internal, it carries no stability promise and may change in any release).

export type * from './contracts/deployment.js'
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
export { ByteReader, typeName, varintSize, writeVarint } from './bytes.js'
