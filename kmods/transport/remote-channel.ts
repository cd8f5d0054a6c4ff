// What both halves of a remote channel share: the protocol id, the channel key, and a frame-level wrapper of one libp2p stream.

import './polyfill.js'
import type { Stream } from '@libp2p/interface'
import type { ChannelInfo } from '../../kernel/index.js'
import { FrameError, LinkBrokenError, StreamHandlerError } from './errors.js'
import { encodeError, FrameDecoder, type Frame } from './frames.js'

/** The libp2p protocol of channel streams: one stream per channel, producer's peer to consumer's peer. */
export const CHANNEL_PROTOCOL = '/lamina/channel/1.0.0'

/** The key a receiver matches streams by: job, link id, producer instance, consumer instance. */
export function channelKey(job: string, link: string, from: number, to: number): string {
  return `${job}/${link}#${from}->${to}`
}

/** The key of a channel described by a kernel ChannelInfo. */
export function channelKeyOf(info: ChannelInfo): string {
  return channelKey(info.job, info.link.id, info.from.instance, info.to.instance)
}

/** What a FrameStream tells its owner. */
export interface FrameStreamEvents {
  /** Frames decoded from one chunk, in order. */
  frames(frames: Frame[]): void
  /** A malformed chunk: the stream was already reset. */
  malformed(error: FrameError): void
  /** The other side closed its writing end cleanly (after all its frames). */
  remoteEnd(): void
  /** The stream is gone: reset, aborted, or its connection closed. `error` is undefined after a clean close of both ends. */
  closed(error: Error | undefined, local: boolean): void
  /** The write buffer drained after `write` returned false. */
  drain(): void
}

/**
 * One libp2p stream seen as frames: decodes what arrives (strictly: a malformed frame resets the
 * stream), writes frames with the stream's own 'drain' event for backpressure (never `onDrain`,
 * which stops waiting after its first use in @libp2p/utils 7.4), and reports the end of the stream once.
 */
export class FrameStream {
  private readonly decoder: FrameDecoder
  private finished = false
  /** True after `write` returned false, until the stream's 'drain' event. */
  needsDrain = false
  /** Bytes received so far. */
  bytesIn = 0

  constructor(
    readonly stream: Stream,
    private readonly events: FrameStreamEvents,
    options: { maxFrameBytes?: number } = {},
  ) {
    this.decoder = new FrameDecoder({ maxFrameBytes: options.maxFrameBytes })
    stream.addEventListener('message', (event) => {
      const data = event.data
      if (data instanceof Uint8Array) this.receive(data)
      else for (const chunk of data) this.receive(chunk)
    })
    stream.addEventListener('drain', () => {
      if (!this.needsDrain) return
      this.needsDrain = false
      this.events.drain()
    })
    stream.addEventListener('remoteCloseWrite', () => this.onRemoteEnd())
    stream.addEventListener('close', (event) => this.onClose(event.error, event.local === true))
    // Whatever happened before these listeners existed (data buffered by libp2p is dispatched in a
    // microtask once a 'message' listener is added; these run after it).
    if (stream.remoteWriteStatus === 'closed') queueMicrotask(() => this.onRemoteEnd())
    if (stream.status !== 'open') queueMicrotask(() => this.onClose(stream.status === 'closed' ? undefined : new Error(`stream ${stream.status}`), false))
  }

  private remoteEnded = false

  private onRemoteEnd(): void {
    if (this.finished || this.remoteEnded) return
    this.remoteEnded = true
    try {
      this.decoder.end()
    } catch (error) {
      if (error instanceof FrameError) return this.fail(error)
      throw error
    }
    this.events.remoteEnd()
  }

  private onClose(error: Error | undefined, local: boolean): void {
    if (this.finished) return
    this.finished = true
    this.events.closed(error, local)
  }

  /** True while frames can be written. */
  get writable(): boolean {
    return !this.finished && this.stream.writeStatus === 'writable'
  }

  /** Writes one frame; false when the caller should wait for `drain` before writing more. */
  write(frame: Uint8Array): boolean {
    const more = this.stream.send(frame)
    if (!more) this.needsDrain = true
    return more
  }

  /** Closes the writing end once written frames are flushed (the other side sees `remoteEnd`). */
  closeWrite(): void {
    this.stream.close().catch(() => undefined)
  }

  /** Sends an ERROR frame when possible, then resets the stream and reports `closed(error, true)`. Idempotent. */
  reset(error: Error & { code?: string }): void {
    if (this.finished) return
    try {
      if (this.stream.writeStatus === 'writable') this.stream.send(encodeError(error.code ?? 'ERR_UNKNOWN', error.message))
    } catch {
      // the stream is already going away: the reset below is what matters
    }
    this.stream.abort(error)
    this.onClose(error, true)
  }

  private receive(chunk: Uint8Array): void {
    if (this.finished) return
    this.bytesIn += chunk.byteLength
    let frames: Frame[]
    try {
      frames = this.decoder.push(chunk)
    } catch (error) {
      if (error instanceof FrameError) return this.fail(error)
      throw error
    }
    if (frames.length === 0) return
    try {
      this.events.frames(frames)
    } catch (error) {
      // A fault while handling frames (a throwing callback) must not escape into libp2p's event
      // dispatch, where it would be an uncaught exception: it breaks this stream only.
      this.reset(new StreamHandlerError(error))
    }
  }

  private fail(error: FrameError): void {
    this.reset(error)
    this.events.malformed(error)
  }
}

/** A LinkBrokenError for a stream that closed, reset or was reported broken by the other side. */
export function brokenBy(link: string, peer: string, reason: string, cause?: unknown): LinkBrokenError {
  return new LinkBrokenError(link, peer, reason, cause === undefined ? undefined : { cause })
}

/** One line describing why a stream closed: our own reasons as they are, the transport's with what most likely happened. */
export function describeClose(error: Error | undefined, local: boolean): string {
  if (local && error !== undefined) return error.message
  if (error === undefined) return 'the stream closed (connection closed or peer gone)'
  const name = error.name === 'Error' || error.name === '' ? '' : `${error.name}: `
  return `${name}${error.message === '' ? 'the stream was reset' : error.message} (connection closed, stream reset or peer gone)`
}
