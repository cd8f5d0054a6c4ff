// The KV host: the part of the KV service that runs on every peer. It runs this peer's replicas of
// KV shards (replica.ts), remembers which in its store so that a restarted peer brings them back
// by itself, and serves the KV protocol (protocol.ts) to clients and to `startKv`.
//
// Bad input costs only itself: a frame that is not JSON or does not fit the protocol is answered
// with ERR_KV_PROTOCOL naming the field, logged with the peer that sent it and counted, and the
// stream goes on. A frame over the size limit cannot be skipped (its length is all there is), so
// that one stream is closed, with a log line; the peer and its other streams go on.

import '../../kmods/transport/polyfill.js'
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { LaminaError } from '../../kernel/index.js'
import type { Store } from '../../kmods/store/index.js'
import type { Logger, PeerNode } from '../../kmods/transport/index.js'
import { RaftNotLeaderError } from '../../kmods/raft/index.js'
import { KvClient } from './client.js'
import { KvCommandError, KvNotHereError, KvProtocolError } from './errors.js'
import { type EventualEntry, type EventualPeers, EventualReplica } from './eventual.js'
import { localKvHost, setLocalKvHost, setLocalKvNode } from './local.js'
import { KV_PROTOCOL, type KvAnswer, KvRequest, type KvShardStatus, type KvTxRead, MAX_KV_FRAME_BYTES, problemPath } from './protocol.js'
import { type KvReplica, type KvReplicaWatch, startKvReplica } from './replica.js'
import { type KvCommand, type KvScan, KvState } from './state.js'

/** Options of `startKvHost`. */
export interface KvHostOptions {
  readonly node: PeerNode
  /** Where the shards' logs, snapshots and the list of shards live. */
  readonly store: Store
  /** Raft tick of the shards. @default 50 */
  readonly tickMs?: number
  /** @default the node's logger */
  readonly logger?: Logger
}

/** The KV host of one peer. */
export interface KvHost {
  /** The replicas this peer runs, by shard. */
  readonly replicas: ReadonlyMap<string, KvReplica>
  /** Frames refused since start (malformed, oversized). */
  readonly refused: number
  /** Starts (or keeps) this peer's replica of `shard` and remembers it across restarts. */
  open(shard: string, members: Readonly<Record<string, string>>, compactEvery?: number, mode?: 'eventual'): Promise<void>
  /** Stops this peer's replica of `shard` and forgets it; its data stays in the store unless `drop` (a replica moved away). */
  close(shard: string, drop?: boolean): Promise<void>
  status(): KvShardStatus[]
  stop(): Promise<void>
}

/** The store namespace of the list of shards a host runs. */
const SHARDS_NS = 'kv/shards'
/** The store namespace of the services' layouts (every shard of each, and where it runs), by service name. */
const LAYOUTS_NS = 'kv/layouts'

interface ShardSpec {
  readonly members: Record<string, string>
  readonly compactEvery?: number
  readonly mode?: 'eventual'
}

/** Starts the KV host on `node`: reopens the shards it ran before, and serves the KV protocol. */
export async function startKvHost(options: KvHostOptions): Promise<KvHost> {
  const host = new Host(options)
  setLocalKvNode(options.node)
  setLocalKvHost({
    peerId: options.node.peerId,
    call: (request) => host.local(request),
    watch: (request, onFrame) => host.localWatch(request, onFrame),
  })
  for (const { key, value } of options.store.list(SHARDS_NS)) {
    const spec = JSON.parse(String(value)) as ShardSpec
    await host.open(key, spec.members, spec.compactEvery, spec.mode)
  }
  await options.node.libp2p.handle(KV_PROTOCOL, (stream, connection) => void host.serve(stream, connection.remotePeer.toString()), {
    maxInboundStreams: 1024,
    maxOutboundStreams: 1024,
  })
  return host
}

class Host implements KvHost {
  readonly replicas = new Map<string, KvReplica>()
  /** Replicas of shards in the eventual mode. */
  readonly eventual = new Map<string, EventualReplica>()
  refused = 0
  /** For the eventual replicas' calls to the others. */
  private peerClient: KvClient | undefined
  private readonly logger: Logger
  private readonly opening = new Map<string, Promise<void>>()
  private readonly streams = new Set<Stream>()
  private stopped = false

  constructor(private readonly options: KvHostOptions) {
    this.logger = options.logger ?? options.node.logger
  }

  open(shard: string, members: Readonly<Record<string, string>>, compactEvery?: number, mode?: 'eventual'): Promise<void> {
    if (this.replicas.has(shard) || this.eventual.has(shard)) return Promise.resolve()
    if (mode === 'eventual') {
      this.options.store.put(SHARDS_NS, shard, JSON.stringify({ members: { ...members }, mode } satisfies ShardSpec))
      this.eventual.set(shard, new EventualReplica(shard, this.options.node.peerId, this.options.store, this.eventualPeers(shard, members), this.logger))
      return Promise.resolve()
    }
    let opening = this.opening.get(shard)
    if (opening === undefined) {
      opening = (async () => {
        const spec: ShardSpec = compactEvery === undefined ? { members: { ...members } } : { members: { ...members }, compactEvery }
        this.options.store.put(SHARDS_NS, shard, JSON.stringify(spec))
        const replica = await startKvReplica({
          node: this.options.node,
          members,
          store: this.options.store,
          shard,
          tickMs: this.options.tickMs ?? 50,
          ...(compactEvery === undefined ? {} : { compactEvery }),
        })
        this.replicas.set(shard, replica)
      })().finally(() => this.opening.delete(shard))
      this.opening.set(shard, opening)
    }
    return opening
  }

  async close(shard: string, drop = false): Promise<void> {
    this.options.store.delete(SHARDS_NS, shard)
    this.eventual.get(shard)?.stop()
    this.eventual.delete(shard)
    if (drop) this.options.store.deletePrefix(`kv-eventual/${shard}`, '')
    const replica = this.replicas.get(shard)
    this.replicas.delete(shard)
    await replica?.stop()
    if (drop) this.options.store.deletePrefix(`raft/${shard}`, '')
  }

  status(): KvShardStatus[] {
    const eventual = [...this.eventual.entries()].map(
      ([shard, r]): KvShardStatus => ({
        shard,
        mode: 'eventual' as const,
        members: Object.keys((JSON.parse(String(this.options.store.get(SHARDS_NS, shard) ?? '{"members":{}}')) as ShardSpec).members),
        leader: undefined,
        isLeader: false,
        term: 0,
        revision: r.revision,
      }),
    )
    return [...this.replicas.values()]
      .map(
        (r): KvShardStatus => ({
          shard: r.shard,
          mode: 'linearizable',
          members: Object.keys(r.members),
          leader: r.leader,
          isLeader: r.isLeader,
          term: r.term,
          revision: r.revision,
        }),
      )
      .concat(eventual)
  }

  /** How an eventual replica of `shard` reaches the others: the KV protocol, peer to peer. */
  private eventualPeers(shard: string, members: Readonly<Record<string, string>>): EventualPeers {
    const others = Object.keys(members).filter((p) => p !== this.options.node.peerId)
    const client = (): KvClient => (this.peerClient ??= KvClient.direct(this.options.node))
    return {
      others: () => others,
      push: async (peer, entries) => {
        await client().askPeer(peer, members[peer]!, { type: 'ev-push', shard, entries }, 3000)
      },
      exchange: (peer, digest) => client().askPeer(peer, members[peer]!, { type: 'ev-digest', shard, digest }, 3000) as Promise<{ entries: EventualEntry[]; want: number[] }>,
    }
  }

  /** Serves one stream: answers calls as they come (concurrently), until it ends. */
  async serve(stream: Stream, peer: string): Promise<void> {
    if (this.stopped) {
      stream.abort(new Error('the KV host stopped'))
      return
    }
    this.streams.add(stream)
    const lp = lpStream(stream, { maxDataLength: MAX_KV_FRAME_BYTES })
    const watches = new Map<number, KvReplicaWatch>()
    // Answers go out one at a time, in the order they are ready.
    let sending = Promise.resolve()
    const send = (answer: KvAnswer): void => {
      sending = sending.then(() => lp.write(new TextEncoder().encode(JSON.stringify(answer)))).catch(() => undefined)
    }
    try {
      for (;;) {
        let bytes: Uint8Array
        try {
          bytes = (await lp.read()).subarray()
        } catch (error) {
          const message = error instanceof Error ? error.message : String(error)
          if (/too long|length/i.test(message)) {
            this.refused++
            this.logger.warn(`kv: refused a frame from ${peer} over ${MAX_KV_FRAME_BYTES} bytes; closing that stream`)
          }
          return
        }
        let frame: unknown
        try {
          frame = JSON.parse(new TextDecoder().decode(bytes))
        } catch {
          this.refuse(peer, send, undefined, `not JSON (${bytes.length} bytes)`)
          continue
        }
        const decoded = KvRequest.decode(frame)
        if (decoded._tag === 'Left') {
          const id = typeof (frame as { id?: unknown })?.id === 'number' ? (frame as { id: number }).id : undefined
          this.refuse(peer, send, id, `not a KV call (bad field ${problemPath(decoded.left)})`)
          continue
        }
        const request = decoded.right
        if (request.type === 'watch') {
          this.watch(request, watches, send)
          continue
        }
        if (request.type === 'unwatch') {
          watches.get(request.watch)?.cancel()
          watches.delete(request.watch)
          send({ id: request.id, ok: true, value: null })
          continue
        }
        void this.answer(request).then(send)
      }
    } finally {
      for (const w of watches.values()) w.cancel()
      this.streams.delete(stream)
    }
  }

  /** Answers one call: its value, or the error frame of what it threw. */
  private answer(request: Exclude<KvRequest, { type: 'watch' | 'unwatch' }>): Promise<Extract<KvAnswer, { ok: boolean }>> {
    return this.handle(request).then(
      (value) => ({ id: request.id, ok: true as const, value: value ?? null }),
      (error: unknown) => failure(request.id, error),
    )
  }

  /** A call from this process (a client on this peer): checked like a frame, answered like one. */
  local(request: Readonly<Record<string, unknown>>): Promise<Extract<KvAnswer, { ok: boolean }>> {
    const decoded = KvRequest.decode(request)
    const id = typeof request.id === 'number' ? request.id : 0
    if (decoded._tag === 'Left') return Promise.resolve(failure(id, new KvProtocolError(this.options.node.peerId, `not a KV call (bad field ${problemPath(decoded.left)})`)))
    const r = decoded.right
    if (r.type === 'watch' || r.type === 'unwatch') return Promise.resolve(failure(id, new KvProtocolError(this.options.node.peerId, 'watch through localWatch')))
    return this.answer(r)
  }

  /** A watch from this process: frames go to `onFrame`; returns its cancel. */
  localWatch(request: Readonly<Record<string, unknown>>, onFrame: (frame: KvAnswer) => void): () => void {
    const decoded = KvRequest.decode(request)
    if (decoded._tag === 'Left' || decoded.right.type !== 'watch') {
      onFrame(failure(typeof request.id === 'number' ? request.id : 0, new KvProtocolError(this.options.node.peerId, 'not a watch')))
      return () => undefined
    }
    const watches = new Map<number, KvReplicaWatch>()
    this.watch(decoded.right, watches, onFrame)
    return () => {
      for (const w of watches.values()) w.cancel()
    }
  }

  private refuse(peer: string, send: (answer: KvAnswer) => void, id: number | undefined, reason: string): void {
    this.refused++
    this.logger.warn(`kv: refused a frame from ${peer}: ${reason}`)
    // A frame without an id cannot be answered; the log line and the count keep it.
    if (id !== undefined) send(failure(id, new KvProtocolError(peer, reason)))
  }

  private watch(request: Extract<KvRequest, { type: 'watch' }>, watches: Map<number, KvReplicaWatch>, send: (answer: KvAnswer) => void): void {
    const replica = this.replicas.get(request.shard)
    if (replica === undefined) {
      send(failure(request.id, new KvNotHereError(request.shard, this.options.node.peerId)))
      return
    }
    const w = replica.watch(
      request.prefix,
      request.after,
      (events, revision) => send({ id: request.id, events, revision }),
      (error) => {
        watches.delete(request.id)
        send(failure(request.id, error))
      },
    )
    watches.set(request.id, w)
    // The first frame says where the watch starts, so that a client resuming elsewhere starts there.
    send({ id: request.id, events: [], revision: w.after })
  }

  private async handle(request: Exclude<KvRequest, { type: 'watch' | 'unwatch' }>): Promise<unknown> {
    if (request.type === 'open') return this.open(request.shard, request.members, request.compactEvery, request.mode)
    if (request.type === 'close') return this.close(request.shard, request.drop === true)
    if (request.type === 'status') return this.status()
    if (request.type === 'layout') return void this.options.store.put(LAYOUTS_NS, request.name, JSON.stringify(request.shards))
    if (request.type === 'layouts') return Object.fromEntries(this.options.store.list(LAYOUTS_NS).map(({ key, value }) => [key, JSON.parse(String(value)) as unknown]))
    const eventual = this.eventual.get(request.shard)
    if (eventual !== undefined) return this.handleEventual(eventual, request)
    if (request.type === 'ev-push' || request.type === 'ev-digest' || request.type === 'ev-dump') throw new KvNotHereError(request.shard, this.options.node.peerId)
    const replica = this.replicas.get(request.shard)
    if (replica === undefined) throw new KvNotHereError(request.shard, this.options.node.peerId)
    const consistency = (c: 'linearizable' | 'serializable' | undefined) => ({ consistency: c ?? 'linearizable' })
    switch (request.type) {
      case 'get':
        return replica.get(request.key, consistency(request.consistency))
      case 'scan': {
        const range: KvScan = request.prefix !== undefined ? { prefix: request.prefix } : { from: request.from ?? '', ...(request.to === undefined ? {} : { to: request.to }) }
        return replica.scan(request.limit === undefined ? range : { ...range, limit: request.limit }, consistency(request.consistency))
      }
      case 'keepalive':
        return replica.keepAlive(request.lease)
      case 'reconfigure':
        return replica.changeMembers(request.members)
      case 'tx': {
        const command = KvState.check({ ...request.command, rid: request.rid })
        if (!command.op.startsWith('tx-')) throw new KvCommandError('command.op', `must be a transaction command (tx-…), got ${JSON.stringify(command.op)}`)
        return replica.write(command)
      }
      case 'txread': {
        const { keys, ranges = [], records = [] } = request
        return replica.inspect(
          (state): KvTxRead => ({
            entries: keys.map((key) => state.get(key) ?? null),
            writers: keys.map((key) => state.writerOf(key) ?? null),
            ranges: ranges.map(({ from, to }) => {
              const entries = state.scan(to === undefined ? { from } : { from, to })
              return { entries, writers: state.writersIn(from, to) }
            }),
            records: records.map((tx) => state.txRecord(tx) ?? null),
          }),
          consistency('linearizable'),
        )
      }
      default:
        return replica.write(toCommand(request))
    }
  }

  /** A call on a shard in the eventual mode: this replica answers from its own copy. */
  private handleEventual(replica: EventualReplica, request: Exclude<KvRequest, { type: 'watch' | 'unwatch' | 'open' | 'close' | 'status' | 'layout' | 'layouts' }>): unknown {
    switch (request.type) {
      case 'get':
        return replica.get(request.key)
      case 'scan': {
        const range: KvScan = request.prefix !== undefined ? { prefix: request.prefix } : { from: request.from ?? '', ...(request.to === undefined ? {} : { to: request.to }) }
        return replica.scan(request.limit === undefined ? range : { ...range, limit: request.limit })
      }
      case 'put':
        if (request.lease !== undefined) throw new KvCommandError('lease', 'leases need a shard in the linearizable mode')
        return replica.put(request.key, request.value)
      case 'delete':
        return replica.delete(request.key)
      case 'ev-push':
        return replica.merge(request.entries)
      case 'ev-digest':
        return replica.answer(request.digest)
      case 'ev-dump':
        return replica.dump()
      default:
        throw new KvCommandError('type', `${request.type} needs a shard in the linearizable mode (shard ${replica.shard} is eventual)`)
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    for (const r of this.eventual.values()) r.stop()
    this.peerClient?.close()
    if (localKvHost(this.options.node.peerId) !== undefined) setLocalKvHost(undefined)
    await this.options.node.libp2p.unhandle(KV_PROTOCOL).catch(() => undefined)
    for (const s of this.streams) s.abort(new Error('the KV host stopped'))
    await Promise.allSettled([...this.opening.values()])
    await Promise.all([...this.replicas.values()].map((r) => r.stop()))
    this.replicas.clear()
  }
}

/** The log command of a write call. */
function toCommand(request: Extract<KvRequest, { type: 'put' | 'delete' | 'cas' | 'grant' | 'revoke' }>): KvCommand {
  const { id: _id, shard: _shard, type, ...rest } = request
  return { op: type, ...rest } as KvCommand
}

/** The error frame of a failed call: the error's code, and for not-leader refusals the leader to ask. */
function failure(id: number, error: unknown): Extract<KvAnswer, { ok: false }> {
  const message = error instanceof Error ? error.message : String(error)
  const code = error instanceof LaminaError ? error.code : 'ERR_KV_INTERNAL'
  const retryable = (error as { retryable?: unknown })?.retryable === true
  const leader = error instanceof RaftNotLeaderError ? error.leader : undefined
  return leader === undefined ? { id, ok: false, code, message, retryable } : { id, ok: false, code, message, retryable, leader }
}
