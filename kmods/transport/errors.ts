// The transport's error classes: admission, dialing, frames and remote links, each with a stable `code`.

import { LaminaError } from '../../kernel/index.js'

/** Why a peer was not admitted. */
export type AdmissionReason =
  /**
   * The connection closed before any protocol could be negotiated under the private-network
   * cipher: the other side most likely holds another pre-shared key, or is not a peer of this
   * private network (pnet itself cannot tell a mismatch apart).
   */
  | 'psk'
  /** This node refused the other peer (its connection gater): its id is not on this node's allowlist. */
  | 'not-allowed'
  /**
   * The other node closed the connection right after the encrypted handshake (or, seen by a
   * listener, during it): this peer is most likely not on its allowlist.
   */
  | 'refused-by-remote'

/**
 * Thrown when a connection is refused by admission: a pre-shared key mismatch, or a peer id not on
 * an allowlist. `reason` says which, as far as this side can tell.
 */
export class AdmissionError extends LaminaError {
  readonly code = 'ERR_ADMISSION'
  override readonly name = 'AdmissionError'
  constructor(
    readonly reason: AdmissionReason,
    readonly detail: { readonly peer?: string; readonly address?: string; readonly direction?: 'inbound' | 'outbound' },
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
  }
}

/** Thrown when a dial fails for a reason other than admission (nothing listening, timeout, unreachable). */
export class DialError extends LaminaError {
  readonly code = 'ERR_DIAL'
  override readonly name = 'DialError'
  constructor(
    readonly target: string,
    cause: unknown,
  ) {
    super(`cannot connect to ${target}: ${describe(cause)}`, { cause })
  }
}

/** Thrown when a pre-shared key (file or bytes) is not in the `/key/swarm/psk/1.0.0/` base16 format. */
export class PskFormatError extends LaminaError {
  readonly code = 'ERR_PSK_FORMAT'
  override readonly name = 'PskFormatError'
  constructor(
    readonly source: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`pre-shared key ${source}: ${reason} (expected "/key/swarm/psk/1.0.0/", "/base16/", then 64 hex digits, one per line)`, options)
  }
}

/** Thrown when a peer's stored identity cannot be read or created (unreadable store, not an Ed25519 key). */
export class IdentityError extends LaminaError {
  readonly code = 'ERR_IDENTITY'
  override readonly name = 'IdentityError'
  constructor(
    readonly workdir: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`peer identity in ${workdir}: ${reason}`, options)
  }
}

/** Thrown when a peer node cannot start (bad listen address, address in use, bad options). */
export class NodeStartError extends LaminaError {
  readonly code = 'ERR_NODE_START'
  override readonly name = 'NodeStartError'
  constructor(
    readonly workdir: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`peer node in ${workdir} cannot start: ${reason}`, options)
  }
}

/** Thrown by the frame decoder for any malformed frame; `offset` is the byte offset in the stream where the problem was found. */
export class FrameError extends LaminaError {
  readonly code = 'ERR_FRAME'
  override readonly name = 'FrameError'
  constructor(
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`malformed frame at byte ${offset}: ${reason}`)
  }
}

/** Thrown when a well-formed frame breaks the channel protocol (data past the granted credit, data after END, a second OPEN). */
export class LinkProtocolError extends LaminaError {
  readonly code = 'ERR_LINK_PROTOCOL'
  override readonly name = 'LinkProtocolError'
  constructor(
    readonly link: string,
    readonly peer: string,
    reason: string,
  ) {
    super(`link ${link} with peer ${peer}: protocol violation: ${reason}`)
  }
}

/** Thrown when a receiving half is registered twice for the same channel (job, link, from, to). */
export class DuplicateChannelError extends LaminaError {
  readonly code = 'ERR_CHANNEL_DUPLICATE'
  override readonly name = 'DuplicateChannelError'
  constructor(readonly channel: string) {
    super(`channel ${channel} already has a receiver on this peer`)
  }
}

/** Reported (and sent to the sender) when a channel stream names a channel no receiver registered in time. */
export class UnknownChannelError extends LaminaError {
  readonly code = 'ERR_CHANNEL_UNKNOWN'
  override readonly name = 'UnknownChannelError'
  constructor(
    readonly channel: string,
    readonly peer: string,
    waitedMs: number,
  ) {
    super(`peer ${peer} opened channel ${channel}, but no receiver registered for it within ${waitedMs} ms`)
  }
}

function describe(cause: unknown): string {
  if (cause instanceof Error) return cause.message === '' ? cause.name : cause.message
  return String(cause)
}

// Moved to the kernel's remote-channel adapter (kernel/remote/errors.ts) with the value encoding;
// re-exported here, where `lamina/transport` users found them.
export { ABORTED, ChannelEndedError, LinkBrokenError, RemoteLinkError, RemoteRequestError, UnencodableValueError } from '../../kernel/index.js'

/** Sent to senders whose streams are reset because this peer stopped receiving. */
export class RemoteStopError extends LaminaError {
  readonly code = 'ERR_RECEIVER_STOPPED'
  constructor() {
    super('the consuming peer stopped receiving channels')
  }
}

/** Why a stream was reset when handling its frames threw. */
export class StreamHandlerError extends LaminaError {
  readonly code = 'ERR_LINK_HANDLER'
  constructor(cause: unknown) {
    super(`handling a frame failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  }
}
