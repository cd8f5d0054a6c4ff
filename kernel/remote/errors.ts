// The error classes of remote channels: a link that broke, a failure the other side reported, payloads that cannot be encoded or decoded, requests answered with a failure.

import { LaminaError } from '../errors.js'

/** The ERROR frame code a peer sends when it closes a channel because its job was aborted on purpose. */
export const ABORTED = 'ERR_JOB_ABORTED'

/**
 * Thrown on both halves of a remote channel when the other side goes away before the channel
 * ended cleanly: the connection closed, the stream was reset, the peer was killed or reported an
 * error. Frame-channel transports report their failures with it.
 */
export class LinkBrokenError extends LaminaError {
  readonly code = 'ERR_LINK_BROKEN'
  override readonly name = 'LinkBrokenError'
  constructor(
    readonly link: string,
    readonly peer: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`link ${link} with peer ${peer} is broken: ${reason}`, options)
  }
}

/** Thrown (as the cause of a LinkBrokenError) when the other side of a link reported a failure in an ERROR frame: its `code` and message, as received. */
export class RemoteLinkError extends LaminaError {
  readonly code = 'ERR_LINK_REMOTE'
  override readonly name = 'RemoteLinkError'
  constructor(
    readonly peer: string,
    readonly remoteCode: string,
    readonly remoteMessage: string,
  ) {
    super(`peer ${peer} reported ${remoteCode}: ${remoteMessage}`)
  }
}

/** Thrown when a frame's payload (records, a marker or a reply) is malformed; `offset` is the byte offset in the payload where the problem was found. */
export class PayloadError extends LaminaError {
  readonly code = 'ERR_PAYLOAD'
  override readonly name = 'PayloadError'
  constructor(
    readonly offset: number,
    readonly reason: string,
  ) {
    super(`malformed payload at byte ${offset}: ${reason}`)
  }
}

/** Thrown (reported as a dead letter at the producer's peer) when a value cannot be put in a frame: a BigInt, a cycle, or a value past the frame size limit. */
export class UnencodableValueError extends LaminaError {
  readonly code = 'ERR_UNENCODABLE'
  override readonly name = 'UnencodableValueError'
  constructor(
    readonly link: string,
    readonly peer: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`link ${link} to peer ${peer}: a value cannot be sent: ${reason}`, options)
  }
}

/** Thrown when a producer sends on a remote channel it has already ended. */
export class ChannelEndedError extends LaminaError {
  readonly code = 'ERR_CHANNEL_ENDED'
  override readonly name = 'ChannelEndedError'
  constructor(readonly link: string) {
    super(`link ${link}: send after end()`)
  }
}

/** Thrown (to the requester) when a request was answered with a failure on the consumer's peer: its handler threw, or the value was refused there. */
export class RemoteRequestError extends LaminaError {
  readonly code = 'ERR_REMOTE_REQUEST'
  override readonly name = 'RemoteRequestError'
  constructor(
    readonly peer: string,
    readonly remoteCode: string,
    readonly remoteMessage: string,
  ) {
    super(`peer ${peer} answered the request with ${remoteCode}: ${remoteMessage}`)
  }
}
