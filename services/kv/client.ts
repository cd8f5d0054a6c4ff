// The KV client: routes each call to its key's shard, to the replica that leads it, and retries
// what is safe to retry until the call's deadline.
//
// Keys are spread over shards by rendezvous hashing (kmods/ring), so the shard of a key is the
// same on every client. A call goes to the shard's leader as the client last learned it; a
// replica that is not the leader answers with the one it knows, and the client follows. Writes
// carry a request id, and a shard applies each id once (state.ts), so a write whose answer was
// lost is retried without being applied twice: retries cannot break linearizability.

import '../../kmods/transport/polyfill.js'
import { randomBytes } from 'node:crypto'
import { lpStream } from '@libp2p/utils'
import { Observable } from 'rxjs'
import { Ring } from '../../kmods/ring/index.js'
import type { PeerNode } from '../../kmods/transport/index.js'
import { KvCommandError, KvCompactedError, KvLeaseNotFoundError, KvProtocolError, KvRemoteError, KvUnavailableError } from './errors.js'
import { type LocalKvHost, localKvHost } from './local.js'
import { KV_PROTOCOL, KvAnswer, type KvRequest, type KvTxRead, MAX_KV_FRAME_BYTES, problemPath } from './protocol.js'
import type { KvConsistency } from './replica.js'
import { type KvCommand, type KvEntry, type KvEvent, type KvResult, type KvScan, KV_LIMITS, KvState } from './state.js'
import type { TxCommand } from './txn.js'

/** Where one shard's replicas run: peer id → an address to dial it at. */
export interface KvShardLayout {
  readonly shard: string
  readonly members: Readonly<Record<string, string>>
  /** 'eventual': any replica answers at once and replicas converge (eventual.ts). @default linearizable (Raft) */
  readonly mode?: 'eventual'
}

/** Options of a KV client. */
export interface KvClientOptions {
  /** The node the client dials from (any admitted peer). */
  readonly node: PeerNode
  readonly shards: readonly KvShardLayout[]
  /** Milliseconds a call keeps trying (leader changes, unreachable replicas) before KvUnavailableError. @default 10000 */
  readonly timeoutMs?: number
  /** Reads' consistency unless a call says otherwise. @default 'linearizable' */
  readonly consistency?: KvConsistency
}

/** One change, as a watch delivers it: the event and the shard whose revision it carries. */
export interface KvWatchEvent extends KvEvent {
  readonly shard: string
}

/** Options of `watch`. */
export interface KvWatchOptions {
  /**
   * Deliver events from this revision on (inclusive): one number for every shard, or one per
   * shard (a resume point: for each shard, the last revision seen plus one). Revisions count per
   * shard. @default from now
   */
  readonly fromRevision?: number | Readonly<Record<string, number>>
}

/** A lease granted by `grant`: keys put with it go when it expires (no keep-alive within its TTL) or is revoked. */
export interface KvLease {
  readonly id: string
  readonly ttlMs: number
  /** Restarts the countdown on every shard the lease was used on. Rejects with KvLeaseNotFoundError once it has expired. */
  keepAlive(): Promise<void>
  /** Keeps the lease alive every third of its TTL until `revoke()` (or an expiry, which `lost` reports). */
  keepAliveForever(): { readonly lost: Promise<Error> }
  /** Revokes the lease: its keys are deleted on every shard. */
  revoke(): Promise<void>
}

/** A client of the KV service. Its calls reject with typed errors with a `code`; `retryable` says whether the same call may succeed later. */
export class KvClient {
  private readonly ring: Ring
  private readonly layouts: Map<string, KvShardLayout>
  private readonly leaders = new Map<string, string>()
  private readonly connections = new Map<string, Link>()
  private readonly timeoutMs: number
  private readonly consistency: KvConsistency
  private readonly clientId = randomBytes(8).toString('hex')
  private requests = 0
  private closed = false
  private readonly offset = Math.floor(Math.random() * 1000)

  constructor(private readonly options: KvClientOptions) {
    if (options.shards.length === 0) throw new KvProtocolError(options.node.peerId, 'a client needs at least one shard')
    this.layouts = new Map(options.shards.map((s) => [s.shard, s]))
    this.ring = new Ring(this.layouts.keys())
    this.timeoutMs = options.timeoutMs ?? 10_000
    this.consistency = options.consistency ?? 'linearizable'
  }

  /**
   * A client of the KV service `name` of a running cluster, from any member's address: asks it
   * for the service's layout (every member keeps it), then talks to the shards' replicas.
   *
   * @throws KvCommandError when the member knows no service of that name.
   */
  static async connect(options: {
    readonly node: PeerNode
    readonly contact: string
    readonly name?: string
    readonly timeoutMs?: number
    readonly consistency?: KvConsistency
  }): Promise<KvClient> {
    const name = options.name ?? 'kv'
    const contact = options.contact.split('/p2p/').at(-1) ?? options.contact
    const probe = KvClient.direct(options.node)
    let layouts: Record<string, KvShardLayout[]>
    try {
      layouts = (await probe.askPeer(contact, options.contact, { type: 'layouts' }, options.timeoutMs ?? 10_000)) as Record<string, KvShardLayout[]>
    } finally {
      probe.close()
    }
    const shards = layouts[name]
    if (shards === undefined || shards.length === 0)
      throw new KvCommandError(
        'name',
        `no KV service ${JSON.stringify(name)} on this cluster (${contact} knows ${
          Object.keys(layouts)
            .map((n) => JSON.stringify(n))
            .join(', ') || 'none'
        }): start one with startKv`,
      )
    return new KvClient({
      node: options.node,
      shards,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
      ...(options.consistency === undefined ? {} : { consistency: options.consistency }),
    })
  }

  /**
   * A client for `askPeer` alone (it knows no shard of its own): how hosts and `startKv` talk to
   * one peer's KV host at a time.
   */
  static direct(node: PeerNode): KvClient {
    return new KvClient({ node, shards: [{ shard: '-', members: {} }] })
  }

  /** The node the client dials from. */
  get node(): PeerNode {
    return this.options.node
  }

  /** The shards, in name order. */
  get shards(): readonly string[] {
    return this.ring.nodes
  }

  /** Where each shard's replicas run, as this client knows it. */
  get layout(): readonly KvShardLayout[] {
    return this.ring.nodes.map((shard) => this.layouts.get(shard)!)
  }

  /**
   * Adds or removes one replica of `shard` (through its leader: see RaftGroup.changeMembers):
   * `members` is every replica after the change, with its address. Resolves once the change is
   * committed; the client routes by the new members from then on.
   */
  async reconfigure(shard: string, members: Readonly<Record<string, string>>): Promise<void> {
    const layout = this.layouts.get(shard)
    if (layout === undefined) throw new KvCommandError('shard', `${JSON.stringify(shard)} is not a shard of this service (${this.shards.join(', ')})`)
    // The leader is among the old members; a member being added is reachable at its new address.
    this.layouts.set(shard, { ...layout, members: { ...members, ...layout.members } })
    try {
      await this.call(shard, 'reconfigure', () => ({ type: 'reconfigure', shard, members }))
    } finally {
      this.layouts.set(shard, { ...layout, members: { ...members } })
      if (this.leaders.get(shard) !== undefined && !(this.leaders.get(shard)! in members)) this.leaders.delete(shard)
    }
  }

  /** The shard a key lives in. */
  shardOf(key: string): string {
    return this.ring.owner(key)!
  }

  /** The key's entry, or undefined when it does not exist. */
  async get(key: string, options?: { readonly consistency?: KvConsistency }): Promise<KvEntry | undefined> {
    const shard = this.shardOf(key)
    const value = await this.call(shard, 'get', () => ({ type: 'get', shard, key, consistency: options?.consistency ?? this.consistency }))
    return (value ?? undefined) as KvEntry | undefined
  }

  /** Sets the key's value; with `lease`, the key goes when the lease does. */
  put(key: string, value: string, options?: { readonly lease?: KvLease }): Promise<KvResult> {
    const lease = options?.lease?.id
    return this.write(key, lease === undefined ? { op: 'put', key, value } : { op: 'put', key, value, lease }, options?.lease)
  }

  /** Deletes the key (`ok` either way; `prev` says whether it existed). */
  delete(key: string): Promise<KvResult> {
    return this.write(key, { op: 'delete', key })
  }

  /**
   * Compare-and-set: writes `value` only if the key's value is `ifValue` and/or its last change was
   * at revision `ifModRevision` (0: the key must not exist). `ok: false` (and `prev`) when not.
   */
  cas(key: string, value: string, compare: { readonly ifValue?: string; readonly ifModRevision?: number; readonly lease?: KvLease }): Promise<KvResult> {
    const { lease, ...rest } = compare
    return this.write(key, { op: 'cas', key, value, ...rest, ...(lease === undefined ? {} : { lease: lease.id }) }, lease)
  }

  /**
   * Keys in a prefix or range `[from, to)`, in key order, at most `limit` (≤ KV_LIMITS.scanLimit).
   * Each shard answers at its own consistent point; the pages are merged.
   */
  async scan(scan: KvScan, options?: { readonly consistency?: KvConsistency }): Promise<KvEntry[]> {
    const limit = scan.limit ?? KV_LIMITS.scanLimit
    const range = 'prefix' in scan ? { prefix: scan.prefix } : { from: scan.from, ...(scan.to === undefined ? {} : { to: scan.to }) }
    const pages = await Promise.all(
      this.shards.map(
        (shard) => this.call(shard, 'scan', () => ({ type: 'scan', shard, ...range, limit, consistency: options?.consistency ?? this.consistency })) as Promise<KvEntry[]>,
      ),
    )
    return pages
      .flat()
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .slice(0, limit)
  }

  /**
   * Every change under `prefix`, in revision order per shard, across leader changes and restarts:
   * the watch resumes where it was on another replica and never skips an event. If the history it
   * needs was compacted, it errors with KvCompactedError rather than skip.
   */
  watch(prefix: string, options: KvWatchOptions = {}): Observable<KvWatchEvent> {
    return new Observable<KvWatchEvent>((subscriber) => {
      const stops = this.shards.map((shard) => {
        const from = typeof options.fromRevision === 'number' ? options.fromRevision : options.fromRevision?.[shard]
        return this.watchShard(
          shard,
          prefix,
          from === undefined ? -1 : from - 1,
          (events) => {
            for (const e of events) subscriber.next({ ...e, shard })
          },
          (error) => subscriber.error(error),
        )
      })
      return () => {
        for (const stop of stops) stop()
      }
    })
  }

  /** Grants a lease of `ttlMs` milliseconds (from 1 s to 24 h). */
  async grant(ttlMs: number): Promise<KvLease> {
    const id = `${this.clientId}-${randomBytes(6).toString('hex')}`
    KvState.check({ op: 'grant', lease: id, ttlMs })
    const granted = new Set<string>()
    let forever: NodeJS.Timeout | undefined
    const lease: KvLease = {
      id,
      ttlMs,
      keepAlive: async () => {
        await Promise.all([...granted].map((shard) => this.call(shard, 'keepalive', () => ({ type: 'keepalive', shard, lease: id }))))
      },
      keepAliveForever: () => {
        let lose: (error: Error) => void = () => undefined
        const lost = new Promise<Error>((resolve) => (lose = resolve))
        const beat = (): void => {
          forever = setTimeout(() => {
            lease.keepAlive().then(beat, (error: unknown) => lose(error instanceof Error ? error : new Error(String(error))))
          }, ttlMs / 3)
          forever.unref()
        }
        beat()
        return { lost }
      },
      revoke: async () => {
        clearTimeout(forever)
        await Promise.all([...granted].map((shard) => this.call(shard, 'revoke', (rid) => ({ type: 'revoke', shard, lease: id, rid }))))
      },
    }
    this.leaseShards.set(id, granted)
    return lease
  }

  /**
   * Applies a transaction command (`tx-prepare`, `tx-commit` …; services/kv/txn.ts) on `shard`
   * through its log, retried with one request id until the deadline. For services/txkv.
   */
  async tx(shard: string, command: TxCommand): Promise<KvResult> {
    KvState.check(command)
    return (await this.call(shard, command.op, (rid) => ({ type: 'tx', shard, command, rid }))) as KvResult
  }

  /**
   * A linearizable read of keys, ranges and transaction status records on `shard`, with the
   * pending transactional writes on them (services/kv/txn.ts). For services/txkv.
   */
  async txRead(
    shard: string,
    read: { readonly keys?: readonly string[]; readonly ranges?: readonly { readonly from: string; readonly to?: string }[]; readonly records?: readonly string[] },
  ): Promise<KvTxRead> {
    return (await this.call(shard, 'txread', () => ({ type: 'txread', shard, keys: read.keys ?? [], ranges: read.ranges ?? [], records: read.records ?? [] }))) as KvTxRead
  }

  /** The shards of this client's store, in ring order. */
  get shardIds(): readonly string[] {
    return this.shards
  }

  /** Shards each lease of this client was granted on (a lease is granted on a shard when first used there). */
  private readonly leaseShards = new Map<string, Set<string>>()

  /**
   * One call to the KV host of one peer, answered by that peer alone (no retries): how `startKv`
   * opens and closes replicas, and how `status` is asked. Rejects with KvRemoteError on a refusal.
   */
  async askPeer(peer: string, address: string, request: Readonly<Record<string, unknown>>, timeoutMs = this.timeoutMs): Promise<unknown> {
    const answer = await this.connection(peer, address).call(request, timeoutMs)
    if (!answer.ok) throw remoteError('-', peer, answer)
    return answer.value
  }

  /** Closes the client's streams. Calls in flight reject. */
  close(): void {
    this.closed = true
    for (const c of this.connections.values()) c.close()
    this.connections.clear()
  }

  private async write(key: string, command: KvCommand, lease?: KvLease): Promise<KvResult> {
    KvState.check(command)
    const shard = this.shardOf(key)
    if (lease !== undefined) {
      const granted = this.leaseShards.get(lease.id)
      if (granted === undefined) throw new KvLeaseNotFoundError(shard, lease.id)
      if (!granted.has(shard)) {
        await this.call(shard, 'grant', (rid) => ({ type: 'grant', shard, lease: lease.id, ttlMs: lease.ttlMs, rid }))
        granted.add(shard)
      }
    }
    const { op, ...rest } = command
    return (await this.call(shard, op, (rid) => ({ ...rest, type: op, shard, rid }) as KvRequest)) as KvResult
  }

  /**
   * One call to a shard, retried on its replicas until the deadline: to the leader each refusal
   * names, else to the next replica. `make` builds the request; a write's request id stays the
   * same across retries.
   */
  private async call(shard: string, what: string, make: (rid: string) => Omit<KvRequest, 'id'> | Record<string, unknown>): Promise<unknown> {
    const layout = this.layouts.get(shard)!
    const peers = Object.keys(layout.members)
    const rid = `${this.clientId}:${++this.requests}`
    const request = make(rid)
    const deadline = performance.now() + this.timeoutMs
    // Each client starts at its own replica, and keeps to it while it answers (read-your-writes in the eventual mode).
    let next = this.offset % peers.length
    let last = 'no replica answered'
    for (let attempt = 0; ; attempt++) {
      if (this.closed) throw new KvUnavailableError(shard, what, 'the client was closed')
      const left = deadline - performance.now()
      if (left <= 0) throw new KvUnavailableError(shard, what, `${last} within ${this.timeoutMs} ms`)
      const peer = this.leaders.get(shard) ?? peers[next++ % peers.length]!
      let answer: Extract<KvAnswer, { ok: boolean }>
      try {
        answer = await this.connection(peer, layout.members[peer]!).call(request, Math.max(1, Math.min(left, 2000)))
      } catch (error) {
        last = `${peer}: ${error instanceof Error ? error.message : String(error)}`
        this.leaders.delete(shard)
        await pause(Math.min(left, 20 * attempt))
        continue
      }
      if (answer.ok) return answer.value
      if (answer.code === 'ERR_RAFT_NOT_LEADER' || answer.code === 'ERR_RAFT_STOPPED' || answer.retryable) {
        last = `${peer}: ${answer.message}`
        if (answer.leader !== undefined && answer.leader in layout.members && answer.leader !== peer) this.leaders.set(shard, answer.leader)
        else {
          this.leaders.delete(shard)
          // No leader known yet (an election is on): wait a little before asking again.
          await pause(Math.min(left, 10 + 20 * attempt))
        }
        continue
      }
      throw remoteError(shard, peer, answer)
    }
  }

  /** Follows one shard's events from revision `after`, moving to another replica when one fails. */
  private watchShard(shard: string, prefix: string, after: number, onEvents: (events: KvEvent[]) => void, onError: (error: Error) => void): () => void {
    const layout = this.layouts.get(shard)!
    const peers = Object.keys(layout.members)
    let stopped = false
    let cancel: (() => void) | undefined
    let next = 0
    let failures = 0
    const start = (): void => {
      if (stopped || this.closed) return
      const peer = this.leaders.get(shard) ?? peers[next++ % peers.length]!
      const connection = this.connection(peer, layout.members[peer]!)
      cancel = connection.watch(
        { type: 'watch', shard, prefix, after },
        (events, revision) => {
          failures = 0
          const fresh = (events as KvEvent[]).filter((e) => e.revision > after)
          after = Math.max(after, revision, fresh[fresh.length - 1]?.revision ?? -1)
          if (fresh.length > 0) onEvents(fresh)
        },
        (answer) => {
          if (stopped) return
          if (answer !== undefined && answer.code === 'ERR_KV_COMPACTED') {
            const oldest = Number(/oldest revision kept is (\d+)/.exec(answer.message)?.[1] ?? 0)
            onError(new KvCompactedError(after + 1, oldest))
            return
          }
          // The replica went away (a crash, a restart, the stream broke): resume on another from `after`.
          this.leaders.delete(shard)
          setTimeout(start, Math.min(1000, 20 * ++failures)).unref()
        },
      )
    }
    start()
    return () => {
      stopped = true
      cancel?.()
    }
  }

  private connection(peer: string, address: string): Link {
    let c = this.connections.get(peer)
    if (c === undefined || c.broken) {
      const local = localKvHost(peer)
      if (local !== undefined && peer === this.options.node.peerId) {
        c = new LocalLink(local)
        this.connections.set(peer, c)
        return c
      }
      // After a broken stream, dial the peer id: a replica restarted on a new port is found at the
      // addresses libp2p has learned for it since; the address given at start comes first.
      const failures = (this.dialFailures.get(peer) ?? -1) + 1
      this.dialFailures.set(peer, failures)
      c = new Connection(this.options.node, peer, failures % 2 === 0 ? address : peer)
      this.connections.set(peer, c)
    }
    return c
  }

  private readonly dialFailures = new Map<string, number>()
}

/** A remote refusal as a typed error: the remote code, message and retryability. */
function remoteError(shard: string, peer: string, answer: Extract<KvAnswer, { ok: false }>): Error {
  if (answer.code === 'ERR_KV_LEASE_NOT_FOUND') return new KvLeaseNotFoundError(shard, /lease "([^"]*)"/.exec(answer.message)?.[1] ?? '?')
  return new KvRemoteError(answer.code, answer.message, answer.retryable, peer)
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

type Answered = Extract<KvAnswer, { ok: boolean }>

/** How the client reaches one peer's KV host: a stream, or in-process when the host runs here. */
interface Link {
  readonly broken: boolean
  call(request: Readonly<Record<string, unknown>>, timeoutMs: number): Promise<Answered>
  watch(
    request: Record<string, unknown>,
    onEvents: (events: unknown[], revision: number) => void,
    onEnd: (answer: Extract<KvAnswer, { ok: false }> | undefined) => void,
  ): () => void
  close(): void
}

/** The KV host of the client's own peer, called in-process. */
class LocalLink implements Link {
  broken = false
  private ids = 0

  constructor(private readonly host: LocalKvHost) {}

  call(request: Readonly<Record<string, unknown>>): Promise<Answered> {
    return this.host.call({ ...request, id: ++this.ids })
  }

  watch(
    request: Record<string, unknown>,
    onEvents: (events: unknown[], revision: number) => void,
    onEnd: (answer: Extract<KvAnswer, { ok: false }> | undefined) => void,
  ): () => void {
    return this.host.watch({ ...request, id: ++this.ids }, (frame) => {
      if ('events' in frame) onEvents(frame.events, frame.revision)
      else if (!frame.ok) onEnd(frame)
    })
  }

  close(): void {
    this.broken = true
  }
}

/** One stream to one peer's KV host, carrying many calls at once. */
class Connection implements Link {
  broken = false
  private stream: Promise<ReturnType<typeof lpStream>> | undefined
  private ids = 0
  private readonly calls = new Map<number, { resolve: (a: Answered) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>()
  private readonly watches = new Map<number, { onEvents: (events: unknown[], revision: number) => void; onEnd: (answer: Extract<KvAnswer, { ok: false }> | undefined) => void }>()
  private sending = Promise.resolve()

  constructor(
    private readonly node: PeerNode,
    private readonly peer: string,
    private readonly address: string,
  ) {}

  call(request: Readonly<Record<string, unknown>>, timeoutMs: number): Promise<Answered> {
    const id = ++this.ids
    return new Promise<Answered>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id)
        reject(new Error(`no answer in ${Math.round(timeoutMs)} ms`))
      }, timeoutMs)
      this.calls.set(id, { resolve, reject, timer })
      this.send({ ...request, id })
    })
  }

  watch(
    request: Record<string, unknown>,
    onEvents: (events: unknown[], revision: number) => void,
    onEnd: (answer: Extract<KvAnswer, { ok: false }> | undefined) => void,
  ): () => void {
    const id = ++this.ids
    this.watches.set(id, { onEvents, onEnd })
    this.send({ ...request, id })
    return () => {
      if (!this.watches.delete(id) || this.broken) return
      this.send({ type: 'unwatch', watch: id, id: ++this.ids })
    }
  }

  close(): void {
    this.fail(new Error('the client was closed'))
    void this.stream?.then((lp) => lp.unwrap().close()).catch(() => undefined)
  }

  private send(frame: Record<string, unknown>): void {
    const bytes = new TextEncoder().encode(JSON.stringify(frame))
    this.sending = this.sending
      .then(async () => {
        if (this.broken) return
        if (this.stream === undefined) {
          this.stream = this.node.dialProtocol(this.address, KV_PROTOCOL, { signal: AbortSignal.timeout(3000) }).then((s) => lpStream(s, { maxDataLength: MAX_KV_FRAME_BYTES }))
          void this.stream.then(
            (lp) => this.read(lp),
            () => undefined,
          )
        }
        await (await this.stream).write(bytes)
      })
      .catch((error: unknown) => this.fail(error instanceof Error ? error : new Error(String(error))))
  }

  private async read(lp: ReturnType<typeof lpStream>): Promise<void> {
    try {
      for (;;) {
        const raw = JSON.parse(new TextDecoder().decode((await lp.read()).subarray())) as unknown
        const decoded = KvAnswer.decode(raw)
        if (decoded._tag === 'Left') throw new KvProtocolError(this.peer, `an answer does not fit the protocol (bad field ${problemPath(decoded.left)})`)
        const answer = decoded.right
        if ('events' in answer) {
          this.watches.get(answer.id)?.onEvents(answer.events, answer.revision)
          continue
        }
        const call = this.calls.get(answer.id)
        if (call !== undefined) {
          this.calls.delete(answer.id)
          clearTimeout(call.timer)
          call.resolve(answer)
          continue
        }
        const watch = this.watches.get(answer.id)
        if (watch !== undefined && !answer.ok) {
          this.watches.delete(answer.id)
          watch.onEnd(answer)
        }
      }
    } catch (error) {
      this.fail(error instanceof Error ? error : new Error(String(error)))
    }
  }

  private fail(error: Error): void {
    if (this.broken) return
    this.broken = true
    for (const c of this.calls.values()) {
      clearTimeout(c.timer)
      c.reject(error)
    }
    this.calls.clear()
    const watches = [...this.watches.values()]
    this.watches.clear()
    for (const w of watches) w.onEnd(undefined)
    void this.stream?.then((lp) => lp.unwrap().abort(error)).catch(() => undefined)
  }
}
