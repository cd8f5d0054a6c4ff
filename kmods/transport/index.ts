// kmods/transport (`lamina/transport`): Lamina peers over libp2p — identity, admission, frames and remote channels.

import './polyfill.js'

export { POLYFILL_URL } from './polyfill.js'
export * from './errors.js'
export { memoryLogger, shortId, stderrLogger, type Logger } from './logger.js'
export { formatPsk, generatePsk, parsePsk, readOrCreatePskFile, readPskFile, writePskFile, type Psk } from './psk.js'
export { loadOrCreateIdentity, PEER_DB, type PeerIdentity } from './identity.js'
export { PSK_MISMATCH, type Allowlist } from './admission.js'
export { createPeerNode, type DialOptions, type DialTarget, type PeerNode, type PeerNodeOptions } from './node.js'
export {
  decodeFrames,
  encodeCredit,
  encodeData,
  encodeDataLenient,
  encodeEnd,
  encodeError,
  encodeOpen,
  FrameDecoder,
  FrameKind,
  MAX_FRAME_BYTES,
  ValueEncoding,
  type CreditFrame,
  type DataFrame,
  type DecoderOptions,
  type EndFrame,
  type ErrorFrame,
  type Frame,
  type OpenFrame,
} from './frames.js'
export { CHANNEL_PROTOCOL, channelKey, channelKeyOf } from './remote-channel.js'
export { openRemoteSender, type RemoteSender, type RemoteSenderOptions, type RemoteSenderStats } from './remote-sender.js'
export {
  createReceiverRegistry,
  type ReceiverRegistry,
  type ReceiverRegistryOptions,
  type ReceiveSpec,
  type RemoteReceiver,
  type RemoteReceiverStats,
  type StreamProblem,
  type StreamProblemContext,
} from './remote-receiver.js'
