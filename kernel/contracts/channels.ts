// Contracts of channels: the batches and markers that travel on a link, and the two ends of a channel.
// This file imports no implementation.

import type { Link } from './links.js'

/**
 * Per-record fields that travel with a value (metadata layers add trace ids; requests carry a
 * reply path). Kept apart from the value so that plain dataflow carries no per-record object.
 */
export interface Header {
  /** Set on a request: the continuation that delivers the reply to the requester's future table. */
  readonly reply?: ReplyTo
  /** Fields piggybacked by layers, by layer name. */
  readonly fields?: { readonly [layer: string]: unknown }
}

/** Delivers the reply of a request (or its failure) back to the requester. */
export type ReplyTo = (outcome: { ok: true; value: unknown } | { ok: false; error: unknown }) => void

/**
 * A batch of records crossing a channel. `headers`, when present, is parallel to `values`.
 * A batch is immutable once sent: receivers never mutate it (broadcast shares one batch).
 */
export interface Batch {
  readonly values: readonly unknown[]
  readonly headers?: readonly (Header | undefined)[]
  /** Set on a marker batch (no values): a marker that flows in order with the data. */
  readonly marker?: Marker
}

/**
 * A marker flows with the data, in order, through every channel (a checkpoint barrier, as in
 * Flink's asynchronous barrier snapshots). Sources emit it when a layer injects it
 * (`JobView.inject`); an instance with several inputs aligns it: once a marker arrives on one
 * input, that input is held until the same marker has arrived on every other open input. Then
 * the kernel flushes the instance's emissions, calls `Instance.marker`, and forwards the marker on
 * every output channel. Markers take no channel credit.
 */
export interface Marker {
  /** Who the marker is for, e.g. `checkpoint`. */
  readonly kind: string
  /** Increasing per kind; a newer marker arriving during alignment supersedes an older one. */
  readonly id: number
  /** JSON data travelling with the marker. */
  readonly data?: unknown
}

/** What a channel joins: one producer instance's port to one consumer instance's port. */
export interface ChannelInfo {
  readonly job: string
  readonly link: Link
  readonly from: { readonly operator: string; readonly port: string; readonly instance: number }
  readonly to: { readonly operator: string; readonly port: string; readonly instance: number }
}

/**
 * The producer's end of a channel: where an instance's output goes. The producer calls `send`
 * while `ready()`; otherwise it awaits `whenReady()` (credit-based backpressure, across peers too).
 */
export interface ChannelSender {
  readonly info: ChannelInfo
  /** Enqueues a batch (the producer checked `ready()` first; one batch may overshoot). */
  send(batch: Batch): void
  /** True while the channel has credit for more records. */
  ready(): boolean
  /** Resolves when the channel has credit again. */
  whenReady(signal?: AbortSignal): Promise<void>
  /** The producer has no more records. */
  end(): void
  /** Records queued now (on a remote sending half: accepted and not yet sent). */
  readonly queued: number
}

/** The consumer's end of a channel: where an instance's input comes from. */
export interface ChannelReceiver {
  readonly info: ChannelInfo
  /** Takes the next batch, `'end'` once ended and drained, or undefined when empty. Returns credit. */
  take(): Batch | 'end' | undefined
  /** Calls `fn` when the channel becomes non-empty or ends. One listener: the consuming atom. */
  onReadable(fn: () => void): void
  /** Records queued now. */
  readonly queued: number
}

/**
 * A materialized link between two instances on one peer: a bounded queue of batches with
 * credit-based backpressure, both ends in one object. A link whose ends are on two peers has a
 * ChannelSender on one and a ChannelReceiver on the other (see Deployment.connect).
 */
export interface Channel extends ChannelSender, ChannelReceiver {}

/**
 * One end of a channel as a layer's channel hook sees it: the sending or the receiving end (see
 * `isChannelSender`, `isChannelReceiver`).
 */
export type ChannelEnd = ChannelSender | ChannelReceiver
