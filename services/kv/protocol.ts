// The KV protocol (/lamina/kv/1.0.0): what clients and `startKv` say to the KV host on each peer.
//
// One long-lived stream per client and peer carries many calls at once: length-prefixed JSON
// frames `{ id, type, … }`, each answered by one frame `{ id, ok: true, value }` or
// `{ id, ok: false, code, message, retryable, leader? }`. A watch is answered by any number of
// `{ id, events }` frames, until `unwatch` or an error frame ends it. Every frame is checked
// against the codecs below before anything acts on it.

import * as t from 'io-ts'
import type { KvEntry } from './state.js'
import { KV_LIMITS } from './state.js'
import type { TxConflict, TxRecord } from './txn.js'

/** The libp2p protocol id. */
export const KV_PROTOCOL = '/lamina/kv/1.0.0'

/** Largest frame either side accepts: a put of the largest key and value, or a page of a scan. */
export const MAX_KV_FRAME_BYTES = 16 * 1024 * 1024

const Consistency = t.keyof({ linearizable: null, serializable: null })
const shard = t.string
const key = t.string

/** A call, as it travels. */
export const KvRequest = t.intersection([
  t.type({ id: t.number }),
  t.union([
    t.intersection([t.type({ type: t.literal('open'), shard, members: t.record(t.string, t.string) }), t.partial({ compactEvery: t.number, mode: t.literal('eventual') })]),
    // The eventual mode's replica-to-replica calls (eventual.ts): pushed writes, and anti-entropy digests.
    t.type({ type: t.literal('ev-push'), shard, entries: t.array(t.type({ key: t.string, value: t.union([t.string, t.null]), hlc: t.tuple([t.number, t.number, t.string]) })) }),
    t.type({ type: t.literal('ev-digest'), shard, digest: t.array(t.string) }),
    t.type({ type: t.literal('ev-dump'), shard }),
    t.intersection([t.type({ type: t.literal('close'), shard }), t.partial({ drop: t.boolean })]),
    // A membership change of a shard's Raft group (to its leader): one replica added or removed.
    t.type({ type: t.literal('reconfigure'), shard, members: t.record(t.string, t.string) }),
    t.type({ type: t.literal('status') }),
    // The layout of a service (where its shards are), kept by every host for clients that come later (the CLI).
    t.type({ type: t.literal('layout'), name: t.string, shards: t.array(t.type({ shard, members: t.record(t.string, t.string) })) }),
    t.type({ type: t.literal('layouts') }),
    t.intersection([t.type({ type: t.literal('get'), shard, key }), t.partial({ consistency: Consistency })]),
    t.intersection([t.type({ type: t.literal('scan'), shard }), t.partial({ prefix: t.string, from: t.string, to: t.string, limit: t.number, consistency: Consistency })]),
    t.intersection([t.type({ type: t.literal('put'), shard, key, value: t.string, rid: t.string }), t.partial({ lease: t.string })]),
    t.type({ type: t.literal('delete'), shard, key, rid: t.string }),
    t.intersection([t.type({ type: t.literal('cas'), shard, key, value: t.string, rid: t.string }), t.partial({ ifValue: t.string, ifModRevision: t.number, lease: t.string })]),
    t.type({ type: t.literal('grant'), shard, lease: t.string, ttlMs: t.number, rid: t.string }),
    t.type({ type: t.literal('keepalive'), shard, lease: t.string }),
    t.type({ type: t.literal('revoke'), shard, lease: t.string, rid: t.string }),
    t.type({ type: t.literal('watch'), shard, prefix: t.string, after: t.number }),
    // Transactions (services/kv/txn.ts): a tx-… command through the shard's log, and a linearizable
    // read of keys, ranges and status records together with the locks on them.
    t.type({ type: t.literal('tx'), shard, command: t.UnknownRecord, rid: t.string }),
    t.intersection([
      t.type({ type: t.literal('txread'), shard, keys: t.array(t.string) }),
      t.partial({ ranges: t.array(t.intersection([t.type({ from: t.string }), t.partial({ to: t.string })])), records: t.array(t.string) }),
    ]),
    t.type({ type: t.literal('unwatch'), watch: t.number }),
  ]),
])
/** A call, as it travels. */
export type KvRequest = t.TypeOf<typeof KvRequest>

/** An answer frame. */
export const KvAnswer = t.union([
  t.type({ id: t.number, ok: t.literal(true), value: t.unknown }),
  t.intersection([t.type({ id: t.number, ok: t.literal(false), code: t.string, message: t.string, retryable: t.boolean }), t.partial({ leader: t.string })]),
  // Watch frames: events, and the revision the watch has caught up to (the first frame has none).
  t.type({ id: t.number, events: t.array(t.unknown), revision: t.number }),
])
/** An answer frame. */
export type KvAnswer = t.TypeOf<typeof KvAnswer>

/** What `status` answers: each shard this host runs a replica of. */
export interface KvShardStatus {
  readonly shard: string
  /** 'eventual' for a shard in the eventual mode (no leader: any replica answers). */
  readonly mode: 'linearizable' | 'eventual'
  readonly members: readonly string[]
  readonly leader: string | undefined
  readonly isLeader: boolean
  readonly term: number
  readonly revision: number
}

/** The field path of the first problem io-ts found (`type`, `key`, `members.x` …), for error messages. */
export function problemPath(errors: t.Errors): string {
  const paths = errors.slice(0, 3).map((e) =>
    e.context
      .map((c) => c.key)
      .filter((k) => k !== '' && !/^\d+$/.test(k))
      .join('.'),
  )
  return [...new Set(paths)].filter((p) => p !== '').join(', ') || 'frame'
}

/** The request size limit, in bytes (KV_LIMITS.requestBytes), re-exported for the client's check. */
export const REQUEST_BYTES = KV_LIMITS.requestBytes

/** What `txread` answers: each key's entry and pending writer, each range's entries and writers, each record asked for. */
export interface KvTxRead {
  readonly entries: readonly (KvEntry | null)[]
  readonly writers: readonly (TxConflict | null)[]
  readonly ranges: readonly { readonly entries: readonly KvEntry[]; readonly writers: readonly TxConflict[] }[]
  readonly records: readonly (TxRecord | null)[]
}
