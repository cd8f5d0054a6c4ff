// A Raft group over libp2p: drives a RaftNode with a clock, its SQLite storage and streams to the
// other members, and applies what commits.
//
// Each member keeps one outbound stream per other member (protocol /lamina/raft/1.0.0), carrying
// length-prefixed JSON frames `{ group, message }`. Raft tolerates lost messages, so a broken
// stream drops what was queued on it and the next message dials again. Every inbound frame is
// checked before the node sees it: its size, its shape, that its group runs here, and that its
// `from` is the peer the stream comes from. A frame that fails is refused with a log line naming
// the peer, and the stream goes on: one bad message costs nothing else.

import '../transport/polyfill.js'
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import * as t from 'io-ts'
import type { Logger, PeerNode } from '../transport/index.js'
import { RaftArgumentError, RaftConfigChangeError, RaftNotLeaderError, RaftProposalLostError, RaftStoppedError } from './errors.js'
import { RaftNode, type Entry, type Message, type NodeId } from './raft.js'
import type { RaftStorage } from './storage.js'

/** The libp2p protocol of Raft messages. */
export const RAFT_PROTOCOL = '/lamina/raft/1.0.0'

/** Largest frame accepted (an append of at most `maxEntriesPerMessage` entries must fit). */
export const MAX_RAFT_FRAME_BYTES = 4 * 1024 * 1024

const WireEntry = t.intersection([
  t.type({ index: t.number, term: t.number, data: t.union([t.string, t.null]) }),
  t.partial({ config: t.record(t.string, t.string), learners: t.array(t.string) }),
])
const WireMessage = t.union([
  t.type({ type: t.literal('pre-vote'), from: t.string, to: t.string, term: t.number, lastIndex: t.number, lastTerm: t.number }),
  t.type({ type: t.literal('pre-vote-reply'), from: t.string, to: t.string, term: t.number, granted: t.boolean }),
  t.type({ type: t.literal('vote'), from: t.string, to: t.string, term: t.number, lastIndex: t.number, lastTerm: t.number }),
  t.type({ type: t.literal('vote-reply'), from: t.string, to: t.string, term: t.number, granted: t.boolean }),
  t.intersection([
    t.type({
      type: t.literal('append'),
      from: t.string,
      to: t.string,
      term: t.number,
      prevIndex: t.number,
      prevTerm: t.number,
      entries: t.array(WireEntry),
      commit: t.number,
    }),
    t.partial({ read: t.number }),
  ]),
  t.type({
    type: t.literal('snapshot'),
    from: t.string,
    to: t.string,
    term: t.number,
    snapshot: t.intersection([t.type({ index: t.number, term: t.number, data: t.string }), t.partial({ config: t.record(t.string, t.string), learners: t.array(t.string) })]),
  }),
  t.intersection([t.type({ type: t.literal('append-reply'), from: t.string, to: t.string, term: t.number, success: t.boolean, index: t.number }), t.partial({ read: t.number })]),
])
/**
 * A snapshot too big for one frame travels in chunks of SNAPSHOT_CHUNK_CHARS characters of its
 * data (`seq` of `count`); the receiver puts them together and hands the core one snapshot message.
 */
const WireChunk = t.intersection([
  t.type({ from: t.string, to: t.string, term: t.number, index: t.number, snapTerm: t.number, seq: t.number, count: t.number, data: t.string }),
  t.partial({ config: t.record(t.string, t.string), learners: t.array(t.string) }),
])
const WireFrame = t.union([t.type({ group: t.string, message: WireMessage }), t.type({ group: t.string, chunk: WireChunk })])

/** Characters of snapshot data per chunk (a chunk frame stays well under MAX_RAFT_FRAME_BYTES). */
export const SNAPSHOT_CHUNK_CHARS = 1024 * 1024

/** Largest snapshot a member puts together from chunks. */
export const MAX_SNAPSHOT_CHARS = 512 * 1024 * 1024
// Every message type of the core has a wire form: a type error here names one that does not.
const everyTypeOnTheWire: Exclude<Message['type'], t.TypeOf<typeof WireMessage>['type']> extends never ? true : never = true
void everyTypeOnTheWire

/** Options of `startRaftGroup`. */
export interface RaftGroupOptions {
  /** This peer's node; its peer id is this member's id. */
  readonly node: PeerNode
  /** The group's name: the same on every member, one storage namespace per group. */
  readonly group: string
  /** Every member, this one included: peer id → an address to dial it at. */
  readonly members: Readonly<Record<NodeId, string>>
  readonly storage: RaftStorage
  /** Called with each committed command, in log order, once per start (a restart applies from the first entry). */
  readonly apply: (data: string, entry: Entry) => void
  /**
   * Log compaction: once `every` entries were applied past the last snapshot, `take()` gives the
   * state machine's state, which replaces the log up to there (in storage too); `load(data)`
   * replaces the state machine's state with a snapshot's, at start (from storage) and when the
   * leader sends one to a member too far behind. Without it the log grows without bound.
   */
  readonly snapshot?: { readonly every: number; readonly take: () => string; readonly load: (data: string) => void }
  /** Milliseconds per tick. Elections start after 10 to 19 ticks without a leader. @default 50 */
  readonly tickMs?: number
  /** @default the node's logger */
  readonly logger?: Logger
}

/** A running member of a Raft group. */
export interface RaftGroup {
  readonly id: NodeId
  readonly group: string
  /** The leader as this member knows it. */
  readonly leader: NodeId | undefined
  readonly term: number
  readonly isLeader: boolean
  /**
   * Replicates `data` and resolves with its index once it is committed (durable on a majority) and
   * applied here. Rejects with RaftNotLeaderError (retryable, names the leader) on a follower, and
   * with RaftProposalLostError (retryable) if leadership moved before the entry committed.
   */
  propose(data: string): Promise<number>
  /**
   * A linearizable read barrier (ReadIndex): resolves once a quorum has confirmed this member
   * still leads and it has applied every command committed before the call, so its state then
   * answers a read as of a moment between the call and the resolution. Rejects with
   * RaftNotLeaderError (retryable) on a follower, or if leadership moves before confirmation.
   */
  read(): Promise<void>
  /**
   * Changes the group's members (leader only): adds or removes one member, given every member
   * with its address. Resolves once the change is committed. Start a member being added first
   * (`startRaftGroup` on its peer, with the new members): it catches up from the leader. Rejects
   * with RaftConfigChangeError (retryable) while an earlier change is pending.
   */
  changeMembers(members: Readonly<Record<NodeId, string>>): Promise<void>
  /** The members in force, with their addresses. */
  readonly members: Readonly<Record<NodeId, string>>
  /** Frames refused since start (malformed, oversized, spoofed, unknown group). */
  readonly refused: number
  stop(): Promise<void>
}

/** Groups running on each peer node, by name: one protocol handler serves them all. */
const registries = new WeakMap<PeerNode, Map<string, Group>>()

/** Starts this peer's member of a group: recovers its state from storage and joins in. */
export async function startRaftGroup(options: RaftGroupOptions): Promise<RaftGroup> {
  const { node, group } = options
  if (!(node.peerId in options.members)) throw new RaftArgumentError(node.peerId, 'members', `must include this peer (${node.peerId})`)
  let registry = registries.get(node)
  if (registry === undefined) {
    registry = new Map()
    registries.set(node, registry)
    const groups = registry
    await node.libp2p.handle(RAFT_PROTOCOL, (stream, connection) => void serve(stream, connection.remotePeer.toString(), groups, node.logger), {
      maxInboundStreams: 256,
      maxOutboundStreams: 256,
    })
  }
  if (registry.has(group)) throw new RaftArgumentError(node.peerId, 'group', `${JSON.stringify(group)} already runs on this peer`)
  const g = new Group(options)
  registry.set(group, g)
  g.start()
  return g
}

/** Reads frames from one inbound stream until it ends; refuses bad frames one by one. */
async function serve(stream: Stream, peer: string, groups: Map<string, Group>, logger: Logger): Promise<void> {
  const lp = lpStream(stream, { maxDataLength: MAX_RAFT_FRAME_BYTES })
  for (;;) {
    let bytes: Uint8Array
    try {
      bytes = (await lp.read()).subarray()
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      // The end of a stream is how a member stops or reconnects; anything else is worth a line.
      if (!/end|closed|reset|abort/i.test(message)) logger.warn(`raft: stream from ${peer} ended: ${message}`)
      stream.abort(error instanceof Error ? error : new Error(message))
      return
    }
    const refuse = (reason: string, group?: Group): void => {
      if (group !== undefined) group.refusedCount++
      else for (const g of groups.values()) g.refusedCount++
      logger.warn(`raft: refused a message from ${peer}: ${reason}`)
    }
    let frame: unknown
    try {
      frame = JSON.parse(new TextDecoder().decode(bytes))
    } catch {
      refuse(`not JSON (${bytes.length} bytes)`)
      continue
    }
    const decoded = WireFrame.decode(frame)
    if (decoded._tag === 'Left') {
      const paths = decoded.left.slice(0, 3).map((e) =>
        e.context
          .map((c) => c.key)
          .filter((k) => k !== '')
          .join('.'),
      )
      refuse(`not a Raft message (bad field ${[...new Set(paths)].join(', ') || 'frame'})`)
      continue
    }
    const { group: name } = decoded.right
    const g = groups.get(name)
    if (g === undefined) {
      refuse(`group ${JSON.stringify(name)} does not run here`)
      continue
    }
    const from = 'message' in decoded.right ? decoded.right.message.from : decoded.right.chunk.from
    if (from !== peer) {
      refuse(`it claims to come from ${from}`, g)
      continue
    }
    if ('message' in decoded.right) {
      g.receive(decoded.right.message)
      continue
    }
    const problem = g.receiveChunk(decoded.right.chunk)
    if (problem !== undefined) refuse(problem, g)
  }
}

class Group implements RaftGroup {
  readonly id: NodeId
  readonly group: string
  refusedCount = 0
  private readonly raft: RaftNode
  private readonly logger: Logger
  private readonly timer: NodeJS.Timeout
  private readonly outbound = new Map<NodeId, Outbound>()
  /** The last snapshot sent to each member, and when. */
  private readonly snapshotsSent = new Map<NodeId, { index: number; at: number }>()
  /** Proposals waiting for their index to commit, with the term they were made in. */
  private readonly waiting = new Map<number, { term: number; resolve: (index: number) => void; reject: (error: Error) => void }>()
  private scheduled = false
  private stopped = false
  private appliedIndex = 0
  private readCounter = 0
  private readonly reads = new Map<string, { resolve: () => void; reject: (error: Error) => void }>()
  /** Confirmed reads waiting for the state to catch up to their index. */
  private readonly catchingUp: { index: number; resolve: () => void }[] = []

  constructor(private readonly options: RaftGroupOptions) {
    this.id = options.node.peerId
    this.group = options.group
    this.logger = options.logger ?? options.node.logger
    const stored = options.storage.load()
    if (stored.snapshot !== undefined) {
      if (options.snapshot === undefined) throw new RaftArgumentError(this.id, 'snapshot', `is needed: group ${JSON.stringify(options.group)} has a stored snapshot to load`)
      options.snapshot.load(stored.snapshot.data)
      this.appliedIndex = stored.snapshot.index
    }
    this.raft = new RaftNode({ id: this.id, members: Object.keys(options.members), restore: stored })
    // The configuration from storage (a restart after a membership change) wins over the option.
    this.timer = setInterval(() => {
      this.raft.tick()
      this.drain()
    }, options.tickMs ?? 50)
    this.timer.unref()
  }

  start(): void {
    this.drain()
  }

  get leader(): NodeId | undefined {
    return this.raft.leader
  }

  get term(): number {
    return this.raft.term
  }

  get isLeader(): boolean {
    return this.raft.role === 'leader'
  }

  get refused(): number {
    return this.refusedCount
  }

  get members(): Readonly<Record<NodeId, string>> {
    const config = this.raft.config
    // The initial configuration carries no addresses: those are the option's.
    return Object.fromEntries(Object.keys(config).map((id) => [id, config[id] || this.options.members[id] || '']))
  }

  async changeMembers(members: Readonly<Record<NodeId, string>>): Promise<void> {
    if (this.stopped) throw new RaftStoppedError(this.group)
    if (this.raft.role !== 'leader') throw new RaftNotLeaderError(this.id, this.raft.leader)
    const learners = [...this.raft.learners]
    const voters = Object.keys(this.raft.config).filter((id) => !this.raft.learners.has(id))
    const added = Object.keys(members).filter((id) => !voters.includes(id))
    if (added.length === 1) {
      // A new member joins as a learner (thesis 4.2.1): it gets the log but counts toward no
      // quorum until it has caught up, so a slow copy never stalls writes. Then it votes.
      const x = added[0]!
      if (!this.raft.learners.has(x)) await this.commitConfig({ ...this.raft.config, [x]: members[x]! }, [...learners, x])
      await this.untilCaughtUp(x)
    }
    await this.commitConfig(
      members,
      learners.filter((l) => l in members && !added.includes(l)),
    )
  }

  /** Proposes a configuration and resolves once it is committed. */
  private async commitConfig(config: Readonly<Record<NodeId, string>>, learners: readonly NodeId[]): Promise<void> {
    if (this.raft.role !== 'leader') throw new RaftNotLeaderError(this.id, this.raft.leader)
    const index = this.raft.proposeConfig(config, learners)
    const term = this.raft.term
    const done = new Promise<number>((resolve, reject) => this.waiting.set(index, { term, resolve, reject }))
    this.schedule()
    await done
  }

  /** Resolves once `peer` holds every committed entry (the leader's view); RaftConfigChangeError after 60 s. */
  private async untilCaughtUp(peer: NodeId): Promise<void> {
    const deadline = performance.now() + 60_000
    for (;;) {
      if (this.stopped) throw new RaftStoppedError(this.group)
      const match = this.raft.matchOf(peer)
      if (match === undefined) throw new RaftNotLeaderError(this.id, this.raft.leader)
      if (match >= this.raft.commitIndex) return
      if (performance.now() > deadline)
        throw new RaftConfigChangeError(this.id, `learner ${peer} has not caught up in 60 s (it holds up to ${match}, the commit index is ${this.raft.commitIndex})`)
      await new Promise((resolve) => setTimeout(resolve, this.options.tickMs ?? 50))
    }
  }

  propose(data: string): Promise<number> {
    if (this.stopped) return Promise.reject(new RaftStoppedError(this.group))
    if (this.raft.role !== 'leader') return Promise.reject(new RaftNotLeaderError(this.id, this.raft.leader))
    const index = this.raft.propose(data)
    const term = this.raft.term
    // Waiting before anything can commit (a group of one commits at once), and drained once per
    // turn of the event loop: proposals made together share one append and one fsync.
    const done = new Promise<number>((resolve, reject) => this.waiting.set(index, { term, resolve, reject }))
    this.schedule()
    return done
  }

  read(): Promise<void> {
    if (this.stopped) return Promise.reject(new RaftStoppedError(this.group))
    if (this.raft.role !== 'leader') return Promise.reject(new RaftNotLeaderError(this.id, this.raft.leader))
    const id = String(++this.readCounter)
    const done = new Promise<void>((resolve, reject) => this.reads.set(id, { resolve, reject }))
    this.raft.readIndex(id)
    this.schedule()
    return done
  }

  receive(message: Message): void {
    if (this.stopped) return
    this.raft.step(message)
    this.schedule()
  }

  /** Snapshots being put together from chunks, by sender: one at a time each. */
  private readonly assembling = new Map<NodeId, { index: number; term: number; count: number; parts: string[]; chars: number }>()

  /** Takes one chunk of a snapshot; the last one delivers the whole snapshot. Returns what is wrong with a bad chunk. */
  receiveChunk(c: t.TypeOf<typeof WireChunk>): string | undefined {
    if (!Number.isInteger(c.count) || c.count < 1 || !Number.isInteger(c.seq) || c.seq < 0 || c.seq >= c.count) return `snapshot chunk ${c.seq} of ${c.count} is out of range`
    let a = this.assembling.get(c.from)
    if (a === undefined || a.index !== c.index || a.term !== c.term || a.count !== c.count) {
      a = { index: c.index, term: c.term, count: c.count, parts: [], chars: 0 }
      this.assembling.set(c.from, a)
    }
    if (a.parts[c.seq] === undefined) {
      a.chars += c.data.length
      if (a.chars > MAX_SNAPSHOT_CHARS) {
        this.assembling.delete(c.from)
        return `a snapshot over ${MAX_SNAPSHOT_CHARS} characters`
      }
    }
    a.parts[c.seq] = c.data
    if (a.parts.filter((p) => p !== undefined).length < a.count) return undefined
    this.assembling.delete(c.from)
    const snapshot = {
      index: c.index,
      term: c.snapTerm,
      data: a.parts.join(''),
      ...(c.config === undefined ? {} : { config: c.config }),
      ...(c.learners === undefined ? {} : { learners: c.learners }),
    }
    this.receive({ type: 'snapshot', from: c.from, to: c.to, term: c.term, snapshot })
    return undefined
  }

  /** Drains once per turn of the event loop: many messages arriving together share one fsync. */
  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      this.drain()
    })
  }

  private drain(): void {
    if (this.stopped) return
    const compaction = this.options.snapshot
    if (compaction !== undefined && this.appliedIndex - this.raft.snapshotIndex >= compaction.every) this.raft.compact(this.appliedIndex, compaction.take())
    const ready = this.raft.ready()
    // Durable first (one transaction, one fsync), then the messages that promise it.
    this.options.storage.save(ready)
    for (const m of ready.messages) {
      if (m.type !== 'snapshot') {
        this.outboundTo(m.to).send({ group: this.group, message: m })
        continue
      }
      // The core resends a snapshot every heartbeat until the member answers: one copy every few seconds is enough.
      const sent = this.snapshotsSent.get(m.to)
      const now = performance.now()
      if (sent !== undefined && sent.index === m.snapshot.index && now - sent.at < 3000) continue
      this.snapshotsSent.set(m.to, { index: m.snapshot.index, at: now })
      const { data, index, term: snapTerm, config, learners } = m.snapshot
      if (data.length <= SNAPSHOT_CHUNK_CHARS) {
        this.outboundTo(m.to).send({ group: this.group, message: m })
        continue
      }
      const count = Math.ceil(data.length / SNAPSHOT_CHUNK_CHARS)
      for (let seq = 0; seq < count; seq++) {
        const chunk = { from: m.from, to: m.to, term: m.term, index, snapTerm, seq, count, data: data.slice(seq * SNAPSHOT_CHUNK_CHARS, (seq + 1) * SNAPSHOT_CHUNK_CHARS) }
        this.outboundTo(m.to).send({ group: this.group, chunk: { ...chunk, ...(config === undefined ? {} : { config }), ...(learners === undefined ? {} : { learners }) } })
      }
    }
    if (ready.snapshot?.install === true) {
      if (this.options.snapshot === undefined) this.logger.warn(`raft: group ${this.group} was sent a snapshot but has no snapshot.load: its state is behind`)
      else this.options.snapshot.load(ready.snapshot.data)
      this.appliedIndex = ready.snapshot.index
    }
    for (const entry of ready.committed) {
      if (entry.data !== null) this.options.apply(entry.data, entry)
      if (entry.config !== undefined) this.logger.info(`raft: group ${this.group} members now ${Object.keys(entry.config).join(', ')} (entry ${entry.index})`)
      this.appliedIndex = entry.index
      const waiter = this.waiting.get(entry.index)
      if (waiter === undefined) continue
      this.waiting.delete(entry.index)
      if (waiter.term === entry.term) waiter.resolve(entry.index)
      else waiter.reject(new RaftProposalLostError(this.group, entry.index))
    }
    for (const { id, index } of ready.reads) {
      const waiter = this.reads.get(id)
      if (waiter === undefined) continue
      this.reads.delete(id)
      if (index <= this.appliedIndex) waiter.resolve()
      else this.catchingUp.push({ index, resolve: waiter.resolve })
    }
    for (let i = this.catchingUp.length - 1; i >= 0; i--) {
      if (this.catchingUp[i]!.index > this.appliedIndex) continue
      this.catchingUp[i]!.resolve()
      this.catchingUp.splice(i, 1)
    }
    for (const id of ready.lostReads) {
      this.reads.get(id)?.reject(new RaftNotLeaderError(this.id, this.raft.leader))
      this.reads.delete(id)
    }
    // A proposal whose index is now held by another term's entry was overwritten: it is lost.
    if (this.waiting.size > 0 && this.raft.role !== 'leader') {
      for (const [index, waiter] of this.waiting) {
        const held = this.raft.entries()[index - 1]
        if (held === undefined || held.term !== waiter.term) {
          this.waiting.delete(index)
          waiter.reject(new RaftProposalLostError(this.group, index))
        }
      }
    }
  }

  private outboundTo(peer: NodeId): Outbound {
    let out = this.outbound.get(peer)
    if (out === undefined) {
      // The address in the configuration in force, else the option's, else the peer id (libp2p's peer store).
      const address = this.raft.config[peer] || this.options.members[peer] || peer
      out = new Outbound(this.options.node, peer, address, this.logger)
      this.outbound.set(peer, out)
    }
    return out
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    clearInterval(this.timer)
    registries.get(this.options.node)?.delete(this.group)
    for (const waiter of [...this.waiting.values(), ...this.reads.values()]) waiter.reject(new RaftStoppedError(this.group))
    this.waiting.clear()
    this.reads.clear()
    await Promise.all([...this.outbound.values()].map((o) => o.close()))
  }
}

/**
 * One member's stream to another: frames queue while it dials, and are dropped if it fails. It
 * dials the member's address, and after a failure its peer id: a member restarted on a new port is
 * found at the addresses libp2p learned from it since (identify), as soon as it has connected.
 */
class Outbound {
  private stream: Promise<ReturnType<typeof lpStream>> | undefined
  private queue: Uint8Array[] = []
  private writing = false
  private closed = false
  private failures = 0

  constructor(
    private readonly node: PeerNode,
    private readonly peer: NodeId,
    private readonly address: string,
    private readonly logger: Logger,
  ) {}

  send(frame: unknown): void {
    if (this.closed) return
    // Bounded: a member that cannot be reached does not make the queue grow without end.
    if (this.queue.length >= 1024) this.queue.shift()
    this.queue.push(new TextEncoder().encode(JSON.stringify(frame)))
    void this.flush()
  }

  private async flush(): Promise<void> {
    if (this.writing) return
    this.writing = true
    try {
      while (this.queue.length > 0 && !this.closed) {
        this.stream ??= this.node
          .dialProtocol(this.failures % 2 === 0 ? this.address : this.peer, RAFT_PROTOCOL, { signal: AbortSignal.timeout(2000) })
          .then((s) => lpStream(s, { maxDataLength: MAX_RAFT_FRAME_BYTES }))
        const lp = await this.stream
        const batch = this.queue
        this.queue = []
        for (const frame of batch) await lp.write(frame)
        this.failures = 0
      }
    } catch (error) {
      // Raft retries by itself (heartbeats, elections): drop what was queued and dial again later.
      this.stream = undefined
      this.queue = []
      if (this.failures++ === 0) this.logger.info(`raft: cannot reach ${this.address}: ${error instanceof Error ? error.message : String(error)}`)
    } finally {
      this.writing = false
    }
  }

  async close(): Promise<void> {
    this.closed = true
    const stream = this.stream
    this.stream = undefined
    if (stream === undefined) return
    try {
      await (await stream).unwrap().close()
    } catch {
      // already broken: nothing to close
    }
  }
}
