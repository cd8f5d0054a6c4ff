// kmods/transport (`lamina/transport`): Lamina peers over libp2p — identity, admission, and remote channels as frames of bytes (the kernel's remoteSender/remoteReceiver give them values).

import './polyfill.js'

export { POLYFILL_URL } from './polyfill.js'
export * from './errors.js'
export { memoryLogger, shortId, stderrLogger, type Logger } from './logger.js'
export { formatPsk, generatePsk, parsePsk, readOrCreatePskFile, readPskFile, writePskFile, type Psk } from './psk.js'
export { loadOrCreateIdentity, PEER_DB, type PeerIdentity } from './identity.js'
export { PSK_MISMATCH, type Allowlist } from './admission.js'
export { createPeerNode, type DialOptions, type DialTarget, type PeerNode, type PeerNodeOptions } from './node.js'
export {
  dataFrameInPlace,
  decodeFrames,
  encodeCredit,
  encodeData,
  encodeEnd,
  encodeError,
  encodeMarker,
  encodeOpen,
  encodeReply,
  DATA_HEADROOM,
  FrameDecoder,
  FrameKind,
  MAX_FRAME_BYTES,
  type CreditFrame,
  type DataFrame,
  type DecoderOptions,
  type EndFrame,
  type ErrorFrame,
  type Frame,
  type MarkerFrame,
  type OpenFrame,
  type ReplyFrame,
} from './frames.js'
export { CHANNEL_PROTOCOL, channelKey, channelKeyOf } from './remote-channel.js'
export { openFrameSender, type FrameSenderOptions, type FrameSenderStats, type StreamFrameSender } from './remote-sender.js'
export {
  createReceiverRegistry,
  type FrameReceiverStats,
  type ReceiverRegistry,
  type ReceiverRegistryOptions,
  type ReceiveSpec,
  type StreamFrameReceiver,
  type StreamProblem,
  type StreamProblemContext,
} from './remote-receiver.js'
