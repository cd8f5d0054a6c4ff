// The consensus core of the replicated log: one Raft node as a deterministic state machine.
//
// It follows "In Search of an Understandable Consensus Algorithm" (Ongaro and Ousterhout, 2014),
// section 5: leader election with randomized timeouts (5.2), log replication with the consistency
// check on the previous entry (5.3), and the election restriction plus the rule that a leader
// commits only entries of its own term by counting replicas (5.4). As in etcd's raft package, the
// node does no I/O and keeps no clock: its owner calls `tick()` at a fixed interval, feeds it the
// messages that arrive with `step()`, and drains `ready()`, which says what to persist, what to
// send and what is committed. The owner must make `ready().persist` and `ready().hardState`
// durable before it sends `ready().messages` (a vote or an acknowledgement promises that the state
// behind it survives a crash).
//
// Linearizable reads use ReadIndex (the Raft thesis, section 6.4).
// Snapshots: the owner compacts with `compact`; a follower too far behind gets the leader's
// snapshot (section 7). Pre-vote (9.6) and check-quorum
// (6.2) keep a member that was cut off from deposing a working leader.
//
// Membership changes add or remove one member at a time (the thesis, section 4.1, as etcd and
// TiKV do by default): a configuration entry in the log, in force on each member as soon as it is
// in its log, committed or not. Any two majorities of configurations that differ by one member
// overlap, so there is never a moment with two leaders. A leader proposes a change only once the
// previous one committed and once it has committed an entry of its own term (the fix to the
// single-server algorithm Ongaro posted in 2015). A leader that removes itself leads until the
// change commits, without counting itself, then steps down; a member not in the configuration
// never stands for election.

import { RaftArgumentError, RaftConfigChangeError, RaftInvariantError, RaftNotLeaderError } from './errors.js'

/** A member of a group, by its stable name (the peer id of its libp2p peer in a cluster). */
export type NodeId = string

/** One entry of the replicated log. Indexes start at 1; `data` is opaque to the core. */
export interface Entry {
  readonly index: number
  readonly term: number
  /** The command, or `null` for the no-op entry a new leader appends to commit earlier entries (and for configuration entries). */
  readonly data: string | null
  /**
   * A configuration entry: the group's members from this entry on, each with what the owner keeps
   * about it (its address, opaque here). In force once in the log.
   */
  readonly config?: Readonly<Record<NodeId, string>>
  /** Members of `config` that are learners: they get the log but neither vote nor count toward a quorum (thesis 4.2.1). */
  readonly learners?: readonly NodeId[]
}

/** The messages nodes exchange; `from` and `to` are node ids, `term` the sender's term. */
export type Message =
  /** Pre-vote (thesis 9.6): "would you vote for me in `term`?", asked before a real election; changes no one's term. */
  | { readonly type: 'pre-vote'; readonly from: NodeId; readonly to: NodeId; readonly term: number; readonly lastIndex: number; readonly lastTerm: number }
  /** `term`: the term asked about when granted, the voter's own term when refused. */
  | { readonly type: 'pre-vote-reply'; readonly from: NodeId; readonly to: NodeId; readonly term: number; readonly granted: boolean }
  | { readonly type: 'vote'; readonly from: NodeId; readonly to: NodeId; readonly term: number; readonly lastIndex: number; readonly lastTerm: number }
  | { readonly type: 'vote-reply'; readonly from: NodeId; readonly to: NodeId; readonly term: number; readonly granted: boolean }
  | {
      readonly type: 'append'
      readonly from: NodeId
      readonly to: NodeId
      readonly term: number
      readonly prevIndex: number
      readonly prevTerm: number
      readonly entries: readonly Entry[]
      readonly commit: number
      /** The leader's latest read sequence number (ReadIndex): the reply echoes it. */
      readonly read?: number
    }
  | {
      /** The leader's snapshot, for a follower whose next entry was compacted away. */
      readonly type: 'snapshot'
      readonly from: NodeId
      readonly to: NodeId
      readonly term: number
      readonly snapshot: Snapshot
    }
  | {
      readonly type: 'append-reply'
      readonly from: NodeId
      readonly to: NodeId
      readonly term: number
      readonly success: boolean
      /** On success, the last index the follower now holds from the leader; on failure, where the leader should try next. */
      readonly index: number
      /** The `read` of the append answered: this member still followed the sender in `term`. */
      readonly read?: number
    }

/** A state machine's state as of log index `index` (whose entry had term `term`): `data` is the owner's, opaque here. */
export interface Snapshot {
  readonly index: number
  readonly term: number
  readonly data: string
  /** The configuration in force at `index` (absent: the members the node was created with). */
  readonly config?: Readonly<Record<NodeId, string>>
  /** Its learners. */
  readonly learners?: readonly NodeId[]
}

/** What a node must keep across restarts besides its log: the term, its vote in it, the commit index. */
export interface HardState {
  readonly term: number
  readonly votedFor: NodeId | null
  readonly commit: number
}

/** Entries to make durable: delete every stored entry at `from` or later, then store `entries` (which start at `from`). */
export interface Persist {
  readonly from: number
  readonly entries: readonly Entry[]
}

/** A linearizable read that may now be served: once the owner has applied up to `index`, local state answers it. */
export interface ReadState {
  readonly id: string
  readonly index: number
}

/** What the owner has to do since the last `ready()`, in this order: persist, then send; apply `committed` in order. */
export interface Ready {
  readonly hardState: HardState | undefined
  readonly persist: Persist | undefined
  readonly messages: readonly Message[]
  readonly committed: readonly Entry[]
  /**
   * A snapshot to make durable (the log up to its index may then be deleted). With `install`, it
   * came from the leader: the owner's state machine must be replaced by `data` before it applies
   * `committed`.
   */
  readonly snapshot: (Snapshot & { readonly install: boolean }) | undefined
  /** Reads (see `readIndex`) confirmed by a quorum. */
  readonly reads: readonly ReadState[]
  /** Reads that will never be confirmed here: this node stopped being leader. Ask the new one. */
  readonly lostReads: readonly string[]
}

/** Options of a node. */
export interface RaftOptions {
  readonly id: NodeId
  /** Every member of the group, this node included. */
  readonly members: readonly NodeId[]
  /** Ticks without hearing from a leader before a follower stands for election: a random number in [electionTicks, 2 × electionTicks). @default 10 */
  readonly electionTicks?: number
  /** Ticks between a leader's heartbeats. Must be less than electionTicks. @default 1 */
  readonly heartbeatTicks?: number
  /** Uniform in [0, 1): randomizes election timeouts (seed it in tests). @default Math.random */
  readonly random?: () => number
  /** Entries per append message at most. @default 256 */
  readonly maxEntriesPerMessage?: number
  /**
   * Pre-vote (thesis 9.6): a member whose election timer fires first asks whether a quorum would
   * vote for it, and only then raises its term. A member cut off and coming back then cannot
   * depose a working leader. @default true
   */
  readonly preVote?: boolean
  /**
   * Check-quorum (thesis 6.2): a leader that has not heard from a quorum within an election timeout
   * steps down, and a member that hears from its leader ignores vote requests until an election
   * timeout passes. A leader cut off in a minority then stops serving. @default true
   */
  readonly checkQuorum?: boolean
  /** State recovered from storage after a restart: entries follow the snapshot, if there is one (the owner loads its data itself). */
  readonly restore?: { readonly hardState: HardState; readonly entries: readonly Entry[]; readonly snapshot?: Snapshot | undefined }
}

/** A node's role in its current term. */
export type Role = 'follower' | 'pre-candidate' | 'candidate' | 'leader'

/** One member of a Raft group: see the module comment for how its owner drives it. */
export class RaftNode {
  readonly id: NodeId
  /** The configuration the node was created with (used until the log or a snapshot has one). */
  private readonly initial: Readonly<Record<NodeId, string>>
  /** The configuration in force: the newest in the log, else the snapshot's, else `initial`. */
  private configNow: Readonly<Record<NodeId, string>>
  /** Index of the entry that set `configNow` (the snapshot's index when it came from there, 0 for `initial`). */
  private configIndex = 0
  /** The voters in force (the configuration's members that are not learners). */
  private members: readonly NodeId[]
  /** Every member in force, learners included: who gets the log. */
  private replicas: readonly NodeId[]
  private learnerSet: ReadonlySet<NodeId> = new Set()
  private readonly electionTicks: number
  private readonly heartbeatTicks: number
  private readonly random: () => number
  private readonly maxEntries: number
  private readonly preVote: boolean
  private readonly checkQuorum: boolean
  /** Leader with check-quorum: members heard from in this election timeout, and the ticks into it. */
  private heard = new Set<NodeId>()
  private quorumTicks = 0

  private currentTerm = 0
  private votedFor: NodeId | null = null
  private commit = 0
  private applied = 0
  /** The log after the snapshot: `log[i]` holds index `snap.index + i + 1`. */
  private log: Entry[] = []
  /** Everything up to `snap.index` is in the snapshot (index 0: none yet). */
  private snap: Snapshot = { index: 0, term: 0, data: '' }
  private snapshotOut: (Snapshot & { install: boolean }) | undefined
  private roleNow: Role = 'follower'
  private leaderNow: NodeId | undefined

  private elapsed = 0
  private timeout = 0
  private votes = new Set<NodeId>()
  /** Leader only: the next index to send each follower, and the highest index known replicated there. */
  private readonly next = new Map<NodeId, number>()
  private readonly match = new Map<NodeId, number>()

  /** ReadIndex (Raft thesis, section 6.4): reads waiting for a quorum to confirm this leader. */
  private readSeq = 0
  private pendingReads: { id: string; index: number; seq: number; acks: Set<NodeId> }[] = []
  /** Reads asked before this leader committed an entry of its term (its commit index may be stale until then). */
  private deferredReads: string[] = []
  private confirmedReads: ReadState[] = []
  private lost: string[] = []

  private outbox: Message[] = []
  /** Proposals since the last `ready()`: send appends then. */
  private broadcast = false
  /** Reads asked since the last `ready()`: a round of heartbeats then, with a new read sequence. */
  private readRound = false
  /** Followers whose last reply was a refusal: sent one append at a time until they match again. */
  private readonly probing = new Set<NodeId>()
  private hardDirty = false
  private persistFrom: number | undefined

  constructor(options: RaftOptions) {
    this.id = options.id
    this.initial = Object.fromEntries([...new Set(options.members)].map((m) => [m, '']))
    this.configNow = this.initial
    this.members = Object.keys(this.initial)
    this.replicas = this.members
    this.electionTicks = options.electionTicks ?? 10
    this.heartbeatTicks = options.heartbeatTicks ?? 1
    this.random = options.random ?? Math.random
    this.maxEntries = options.maxEntriesPerMessage ?? 256
    this.preVote = options.preVote ?? true
    this.checkQuorum = options.checkQuorum ?? true
    if (!this.members.includes(this.id)) throw new RaftArgumentError(this.id, 'members', `must include the node itself (${JSON.stringify(this.id)})`)
    if (!Number.isInteger(this.electionTicks) || this.electionTicks < 2) throw new RaftArgumentError(this.id, 'electionTicks', `must be an integer >= 2, got ${this.electionTicks}`)
    if (!Number.isInteger(this.heartbeatTicks) || this.heartbeatTicks < 1 || this.heartbeatTicks >= this.electionTicks)
      throw new RaftArgumentError(this.id, 'heartbeatTicks', `must be an integer in [1, electionTicks), got ${this.heartbeatTicks}`)
    const restore = options.restore
    if (restore !== undefined) {
      if (restore.snapshot !== undefined) this.snap = restore.snapshot
      const base = this.snap.index
      restore.entries.forEach((e, i) => {
        if (e.index !== base + i + 1) throw new RaftArgumentError(this.id, `restore.entries[${i}].index`, `must be ${base + i + 1}, got ${e.index}`)
      })
      this.log.push(...restore.entries)
      this.applied = base
      this.currentTerm = restore.hardState.term
      this.votedFor = restore.hardState.votedFor
      // What was committed stays committed; what follows the snapshot is applied again.
      this.commit = Math.max(base, Math.min(restore.hardState.commit, this.lastIndex()))
      this.recomputeConfig()
    }
    this.resetTimeout()
  }

  /** The members in force (the newest configuration in the log), with what the owner keeps about each; learners included. */
  get config(): Readonly<Record<NodeId, string>> {
    return this.configNow
  }

  /** The learners of the configuration in force. */
  get learners(): ReadonlySet<NodeId> {
    return this.learnerSet
  }

  /** Leader only: the highest index known to be on `peer` (0 if none), or undefined when this node does not lead. */
  matchOf(peer: NodeId): number | undefined {
    if (this.roleNow !== 'leader') return undefined
    return peer === this.id ? this.lastIndex() : (this.match.get(peer) ?? 0)
  }

  /**
   * Proposes a new configuration (leaders only): at most one member added or removed (changing
   * what is kept about members is fine too). Returns the entry's index: the change is done once
   * it is committed. Throws RaftConfigChangeError (retryable) while an earlier change is not
   * committed or this leader has not committed an entry of its term yet, and RaftArgumentError
   * for a change of more than one member.
   */
  proposeConfig(config: Readonly<Record<NodeId, string>>, learners: readonly NodeId[] = []): number {
    if (this.roleNow !== 'leader') throw new RaftNotLeaderError(this.id, this.leaderNow)
    const now = new Set(this.members)
    for (const l of learners) if (!(l in config)) throw new RaftArgumentError(this.id, 'learners', `names ${l}, which is not in the configuration`)
    // One voter added or removed at a time; learners come and go freely (they count toward nothing).
    const next = Object.keys(config).filter((m) => !learners.includes(m))
    if (next.length === 0) throw new RaftArgumentError(this.id, 'config', 'must name at least one voting member')
    const added = next.filter((m) => !now.has(m))
    const removed = this.members.filter((m) => !next.includes(m))
    if (added.length + removed.length > 1)
      throw new RaftArgumentError(this.id, 'config', `may add or remove one member at a time (adds ${added.join(', ') || 'none'}, removes ${removed.join(', ') || 'none'})`)
    if (this.configIndex > this.commit) throw new RaftConfigChangeError(this.id, `the change at index ${this.configIndex} is not committed yet`)
    if (this.termAt(this.commit) !== this.currentTerm) throw new RaftConfigChangeError(this.id, 'this leader has not committed an entry of its term yet')
    const index = this.lastIndex() + 1
    const entry: Entry =
      learners.length === 0
        ? { index, term: this.currentTerm, data: null, config: { ...config } }
        : { index, term: this.currentTerm, data: null, config: { ...config }, learners: [...learners] }
    this.log.push(entry)
    this.persistFrom = Math.min(this.persistFrom ?? index, index)
    this.useConfig(entry.config!, index, entry.learners)
    for (const peer of this.others()) this.sendAppend(peer)
    this.advanceCommit()
    return index
  }

  get role(): Role {
    return this.roleNow
  }

  get term(): number {
    return this.currentTerm
  }

  /** The leader of the current term as far as this node knows. */
  get leader(): NodeId | undefined {
    return this.leaderNow
  }

  get commitIndex(): number {
    return this.commit
  }

  /** The index the snapshot covers (0: none). */
  get snapshotIndex(): number {
    return this.snap.index
  }

  /**
   * The owner took a snapshot of its state machine as of `index` (at most what it applied): the
   * log up to `index` goes, and followers that need it get the snapshot instead.
   */
  compact(index: number, data: string): void {
    if (!Number.isInteger(index) || index <= this.snap.index || index > this.applied)
      throw new RaftArgumentError(this.id, 'compact index', `must be an applied index after the snapshot's (${this.snap.index + 1} to ${this.applied}), got ${index}`)
    const term = this.termAt(index)
    const at = this.configAt(index)
    this.log = this.log.slice(index - this.snap.index)
    this.snap = at === undefined ? { index, term, data } : { index, term, data, ...at }
    this.snapshotOut = { ...this.snap, install: false }
  }

  /** The entries this node holds after its snapshot (a copy), for tests and inspection. */
  entries(): Entry[] {
    return [...this.log]
  }

  /** Advances the logical clock by one tick: followers may stand for election, leaders send heartbeats. */
  tick(): void {
    this.elapsed++
    if (this.roleNow === 'leader') {
      if (this.checkQuorum && ++this.quorumTicks >= this.electionTicks) {
        this.quorumTicks = 0
        const heard = this.heard.add(this.id)
        this.heard = new Set()
        if (!this.isQuorum(heard)) return this.becomeFollower(this.currentTerm, undefined)
      }
      if (this.elapsed >= this.heartbeatTicks) {
        this.elapsed = 0
        for (const peer of this.others()) this.sendAppend(peer)
      }
      return
    }
    if (this.elapsed >= this.timeout) {
      // A member the configuration does not name never stands (it was removed, or is not added yet).
      if (!this.members.includes(this.id)) return this.resetTimeout()
      if (this.preVote) this.preCampaign()
      else this.campaign()
    }
  }

  /** Appends a command to the log (leaders only); returns its index. Committed once `ready().committed` includes it. */
  propose(data: string): number {
    if (this.roleNow !== 'leader') throw new RaftNotLeaderError(this.id, this.leaderNow)
    const index = this.appendLocal(data)
    // Sent once per `ready()`, however many proposals came since: one append per follower.
    this.broadcast = true
    this.advanceCommit()
    return index
  }

  /**
   * Asks for a linearizable read (ReadIndex, Raft thesis section 6.4; leaders only). The leader
   * notes its commit index, then confirms it still leads by a round of heartbeats acknowledged by
   * a quorum; `ready().reads` then gives `{ id, index }`, and state applied up to `index` answers
   * the read. No clock is trusted. A new leader first commits an entry of its own term, so that
   * its commit index covers every write acknowledged before it. If the node stops being leader,
   * the read comes out in `ready().lostReads` instead.
   */
  readIndex(id: string): void {
    if (this.roleNow !== 'leader') throw new RaftNotLeaderError(this.id, this.leaderNow)
    if (this.termAt(this.commit) !== this.currentTerm) this.deferredReads.push(id)
    else this.startRead(id)
  }

  private startRead(id: string): void {
    if (this.isQuorum(new Set([this.id]))) {
      this.confirmedReads.push({ id, index: this.commit })
      return
    }
    // Every read asked before the next `ready()` shares one round of heartbeats (etcd batches them so too).
    const seq = this.readSeq + 1
    this.pendingReads.push({ id, index: this.commit, seq, acks: new Set([this.id]) })
    this.readRound = true
  }

  /** Takes a message from another member of the group. Messages from a stale term are answered or ignored, never applied. */
  step(m: Message): void {
    // A leader is heard even when this member's configuration does not name it yet (a member being
    // added may have started with an older one): its entries bring the configuration.
    if (m.to !== this.id || (!this.replicas.includes(m.from) && m.type !== 'append' && m.type !== 'snapshot')) return
    if (m.type === 'pre-vote') return this.onPreVote(m)
    if (m.type === 'pre-vote-reply') return this.onPreVoteReply(m)
    // Check-quorum's other half: while its leader is alive, a member ignores vote requests (a
    // member cut off and back must not depose it).
    if (m.type === 'vote' && m.term > this.currentTerm && this.checkQuorum && this.inLease()) return
    if (m.term > this.currentTerm) this.becomeFollower(m.term, m.type === 'append' || m.type === 'snapshot' ? m.from : undefined)
    if (this.roleNow === 'leader' && m.term === this.currentTerm) this.heard.add(m.from)
    switch (m.type) {
      case 'snapshot':
        return this.onSnapshot(m)
      case 'vote':
        return this.onVote(m)
      case 'vote-reply':
        return this.onVoteReply(m)
      case 'append':
        return this.onAppend(m)
      case 'append-reply':
        return this.onAppendReply(m)
    }
  }

  /** Drains what happened since the last call. */
  ready(): Ready {
    if (this.roleNow === 'leader' && (this.broadcast || this.readRound)) {
      if (this.readRound) this.readSeq++
      for (const peer of this.others()) this.sendAppend(peer)
    }
    this.broadcast = false
    this.readRound = false
    const hardState = this.hardDirty ? { term: this.currentTerm, votedFor: this.votedFor, commit: this.commit } : undefined
    const base = this.snap.index
    const snapshot = this.snapshotOut
    this.snapshotOut = undefined
    // Entries the snapshot now covers are not persisted as entries (the snapshot holds them).
    const from = this.persistFrom === undefined ? undefined : Math.max(this.persistFrom, base + 1)
    const persist = from === undefined ? undefined : { from, entries: this.log.slice(from - base - 1) }
    const committed = this.log.slice(this.applied - base, this.commit - base)
    this.applied = this.commit
    const messages = this.outbox
    this.outbox = []
    this.hardDirty = false
    this.persistFrom = undefined
    const reads = this.confirmedReads
    this.confirmedReads = []
    const lostReads = this.lost
    this.lost = []
    return { hardState, persist, snapshot, messages, committed, reads, lostReads }
  }

  // --- Elections (section 5.2) -------------------------------------------------------------

  /** True while this member heard from a leader less than an election timeout ago. */
  private inLease(): boolean {
    return this.leaderNow !== undefined && this.roleNow !== 'leader' && this.elapsed < this.electionTicks
  }

  private preCampaign(): void {
    this.roleNow = 'pre-candidate'
    this.leaderNow = undefined
    this.votes = new Set([this.id])
    this.resetTimeout()
    if (this.isQuorum(this.votes)) return this.campaign()
    for (const peer of this.others()) this.send({ type: 'pre-vote', from: this.id, to: peer, term: this.currentTerm + 1, lastIndex: this.lastIndex(), lastTerm: this.lastTerm() })
  }

  private onPreVote(m: Extract<Message, { type: 'pre-vote' }>): void {
    // Granted as a vote would be, but without a leader heard from recently; nothing is recorded.
    const upToDate = m.lastTerm > this.lastTerm() || (m.lastTerm === this.lastTerm() && m.lastIndex >= this.lastIndex())
    const granted = m.term > this.currentTerm && upToDate && !this.inLease() && this.roleNow !== 'leader'
    this.send({ type: 'pre-vote-reply', from: this.id, to: m.from, term: granted ? m.term : this.currentTerm, granted })
  }

  private onPreVoteReply(m: Extract<Message, { type: 'pre-vote-reply' }>): void {
    if (!m.granted) {
      if (m.term > this.currentTerm) this.becomeFollower(m.term, undefined)
      return
    }
    if (this.roleNow !== 'pre-candidate' || m.term !== this.currentTerm + 1) return
    this.votes.add(m.from)
    if (this.isQuorum(this.votes)) this.campaign()
  }

  private campaign(): void {
    this.roleNow = 'candidate'
    this.leaderNow = undefined
    this.currentTerm++
    this.votedFor = this.id
    this.hardDirty = true
    this.votes = new Set([this.id])
    this.resetTimeout()
    if (this.isQuorum(this.votes)) return this.becomeLeader()
    for (const peer of this.others()) this.send({ type: 'vote', from: this.id, to: peer, term: this.currentTerm, lastIndex: this.lastIndex(), lastTerm: this.lastTerm() })
  }

  private onVote(m: Extract<Message, { type: 'vote' }>): void {
    // The election restriction (5.4.1): vote only for a candidate whose log is at least as up to date.
    const upToDate = m.lastTerm > this.lastTerm() || (m.lastTerm === this.lastTerm() && m.lastIndex >= this.lastIndex())
    const granted = m.term === this.currentTerm && (this.votedFor === null || this.votedFor === m.from) && upToDate
    if (granted) {
      this.votedFor = m.from
      this.hardDirty = true
      this.elapsed = 0
    }
    this.send({ type: 'vote-reply', from: this.id, to: m.from, term: this.currentTerm, granted })
  }

  private onVoteReply(m: Extract<Message, { type: 'vote-reply' }>): void {
    if (this.roleNow !== 'candidate' || m.term !== this.currentTerm || !m.granted) return
    this.votes.add(m.from)
    if (this.isQuorum(this.votes)) this.becomeLeader()
  }

  private becomeFollower(term: number, leader: NodeId | undefined): void {
    if (this.roleNow === 'leader') {
      this.lost.push(...this.deferredReads, ...this.pendingReads.map((r) => r.id))
      this.deferredReads = []
      this.pendingReads = []
    }
    this.roleNow = 'follower'
    this.leaderNow = leader
    if (term !== this.currentTerm) {
      this.currentTerm = term
      this.votedFor = null
      this.hardDirty = true
    }
    this.elapsed = 0
    this.resetTimeout()
  }

  private becomeLeader(): void {
    this.roleNow = 'leader'
    this.leaderNow = this.id
    this.elapsed = 0
    this.heard = new Set()
    this.quorumTicks = 0
    this.probing.clear()
    for (const peer of this.others()) {
      this.next.set(peer, this.lastIndex() + 1)
      this.match.set(peer, 0)
      this.probing.add(peer)
    }
    // A no-op of the new term: entries of earlier terms commit once it does (5.4.2).
    this.appendLocal(null)
    for (const peer of this.others()) this.sendAppend(peer)
    this.advanceCommit()
  }

  // --- Replication (section 5.3) -----------------------------------------------------------

  private sendAppend(peer: NodeId): void {
    const next = this.next.get(peer) ?? this.lastIndex() + 1
    const prevIndex = next - 1
    if (prevIndex < this.snap.index) {
      // The entries it needs are compacted away: it gets the snapshot (resent until it answers).
      this.send({ type: 'snapshot', from: this.id, to: peer, term: this.currentTerm, snapshot: this.snap })
      return
    }
    const base = this.snap.index
    const entries = this.log.slice(prevIndex - base, prevIndex - base + this.maxEntries)
    const read = this.readSeq > 0 ? { read: this.readSeq } : {}
    this.send({ type: 'append', from: this.id, to: peer, term: this.currentTerm, prevIndex, prevTerm: this.termAt(prevIndex), entries, commit: this.commit, ...read })
    // A follower that matches gets the next entries pipelined, without waiting for this reply (as
    // etcd's replicate state); a lost message is found by the refusal of the next one.
    if (entries.length > 0 && !this.probing.has(peer)) this.next.set(peer, prevIndex + entries.length + 1)
  }

  private onAppend(m: Extract<Message, { type: 'append' }>): void {
    if (m.term < this.currentTerm) {
      this.send({ type: 'append-reply', from: this.id, to: m.from, term: this.currentTerm, success: false, index: 0 })
      return
    }
    // Same term: the sender is the leader (one per term); a candidate of this term steps back.
    if (this.roleNow !== 'follower' || this.leaderNow !== m.from) this.becomeFollower(m.term, m.from)
    const read = m.read === undefined ? {} : { read: m.read }
    this.elapsed = 0
    if (m.prevIndex > this.lastIndex()) {
      this.send({ type: 'append-reply', from: this.id, to: m.from, term: this.currentTerm, success: false, index: this.lastIndex() + 1, ...read })
      return
    }
    // Entries up to the snapshot are committed, so they match the leader's (Log Matching).
    if (m.prevIndex > this.snap.index && this.termAt(m.prevIndex) !== m.prevTerm) {
      // Skip back over the whole conflicting term at once instead of one entry per round trip.
      const conflict = this.termAt(m.prevIndex)
      let first = m.prevIndex
      while (first > this.snap.index + 1 && this.termAt(first - 1) === conflict && first - 1 > this.commit) first--
      this.send({ type: 'append-reply', from: this.id, to: m.from, term: this.currentTerm, success: false, index: Math.max(1, first), ...read })
      return
    }
    for (const e of m.entries) {
      if (e.index <= this.snap.index) continue
      if (e.index <= this.lastIndex()) {
        if (this.termAt(e.index) === e.term) continue
        // A conflicting entry and all after it go; committed entries never conflict (Log Matching).
        if (e.index <= this.commit) throw new RaftInvariantError(this.id, `leader ${m.from} overwrites committed entry ${e.index}`)
        this.log.length = e.index - 1 - this.snap.index
        // A configuration entry that went with the suffix is no longer in force.
        if (this.configIndex >= e.index) this.recomputeConfig()
      }
      this.log.push(e)
      if (e.config !== undefined) this.useConfig(e.config, e.index, e.learners)
      this.persistFrom = Math.min(this.persistFrom ?? e.index, e.index)
    }
    const last = m.prevIndex + m.entries.length
    const commit = Math.min(m.commit, last)
    if (commit > this.commit) {
      this.commit = commit
      this.hardDirty = true
    }
    this.send({ type: 'append-reply', from: this.id, to: m.from, term: this.currentTerm, success: true, index: last, ...read })
  }

  /** Installs the leader's snapshot unless this node has everything in it committed already. */
  private onSnapshot(m: Extract<Message, { type: 'snapshot' }>): void {
    if (m.term < this.currentTerm) {
      this.send({ type: 'append-reply', from: this.id, to: m.from, term: this.currentTerm, success: false, index: 0 })
      return
    }
    if (this.roleNow !== 'follower' || this.leaderNow !== m.from) this.becomeFollower(m.term, m.from)
    this.elapsed = 0
    const s = m.snapshot
    if (s.index > this.commit) {
      // Keep the entries after the snapshot if this log agrees with it there; else start over.
      const keep = s.index <= this.lastIndex() && this.termAt(s.index) === s.term
      this.log = keep ? this.log.slice(s.index - this.snap.index) : []
      this.snap = s
      this.snapshotOut = { ...s, install: true }
      this.commit = s.index
      this.applied = s.index
      this.hardDirty = true
      // A log replaced entirely: the stored entries after the snapshot go too.
      if (!keep) this.persistFrom = s.index + 1
      this.recomputeConfig()
    }
    this.send({ type: 'append-reply', from: this.id, to: m.from, term: this.currentTerm, success: true, index: Math.max(s.index, this.commit) })
  }

  private onAppendReply(m: Extract<Message, { type: 'append-reply' }>): void {
    if (this.roleNow !== 'leader' || m.term !== this.currentTerm) return
    if (m.read !== undefined) this.ackReads(m.from, m.read)
    if (m.success) {
      this.probing.delete(m.from)
      if (m.index > (this.match.get(m.from) ?? 0)) this.match.set(m.from, m.index)
      this.next.set(m.from, Math.max(this.next.get(m.from) ?? 1, m.index + 1))
      this.advanceCommit()
      if ((this.next.get(m.from) ?? 1) <= this.lastIndex()) this.sendAppend(m.from)
      return
    }
    this.probing.add(m.from)
    const next = Math.max(1, Math.min(m.index, (this.next.get(m.from) ?? 1) - 1, this.lastIndex() + 1))
    this.next.set(m.from, Math.max(next, (this.match.get(m.from) ?? 0) + 1))
    this.sendAppend(m.from)
  }

  /** The largest index replicated on a quorum whose entry is of the current term becomes the commit index (5.4.2). */
  private advanceCommit(): void {
    // Over the members in force; a leader that removed itself does not count its own log.
    const indexes = this.members.map((p) => (p === this.id ? this.lastIndex() : (this.match.get(p) ?? 0))).sort((a, b) => b - a)
    const quorumIndex = indexes[Math.floor(this.members.length / 2)]!
    if (quorumIndex > this.commit && this.termAt(quorumIndex) === this.currentTerm) {
      this.commit = quorumIndex
      this.hardDirty = true
      // Removed by a change that is now committed: lead no more (the others elect a leader).
      if (!this.members.includes(this.id) && this.configIndex <= this.commit) return this.becomeFollower(this.currentTerm, undefined)
      const deferred = this.deferredReads
      this.deferredReads = []
      for (const id of deferred) this.startRead(id)
    }
  }

  /** `peer` answered an append carrying read sequence `seq`: it followed this leader then. */
  private ackReads(peer: NodeId, seq: number): void {
    if (this.pendingReads.length === 0) return
    const still: typeof this.pendingReads = []
    for (const r of this.pendingReads) {
      if (r.seq <= seq) r.acks.add(peer)
      if (this.isQuorum(r.acks)) this.confirmedReads.push({ id: r.id, index: r.index })
      else still.push(r)
    }
    this.pendingReads = still
  }

  // --- Helpers -----------------------------------------------------------------------------

  private appendLocal(data: string | null): number {
    const entry: Entry = { index: this.lastIndex() + 1, term: this.currentTerm, data }
    this.log.push(entry)
    this.persistFrom = Math.min(this.persistFrom ?? entry.index, entry.index)
    return entry.index
  }

  private send(m: Message): void {
    this.outbox.push(m)
  }

  /** Every other member that gets the log (learners included). Only voters' answers count (isQuorum). */
  private others(): NodeId[] {
    return this.replicas.filter((p) => p !== this.id)
  }

  /** True when `nodes` hold a majority of the members in force. */
  private isQuorum(nodes: ReadonlySet<NodeId>): boolean {
    let n = 0
    for (const m of this.members) if (nodes.has(m)) n++
    return n > this.members.length / 2
  }

  /** Puts `config` (from entry `index`) in force; a leader starts replicating to new members. */
  private useConfig(config: Readonly<Record<NodeId, string>>, index: number, learners: readonly NodeId[] = []): void {
    this.configNow = config
    this.configIndex = index
    this.learnerSet = new Set(learners)
    this.replicas = Object.keys(config)
    this.members = this.replicas.filter((m) => !this.learnerSet.has(m))
    // What the leader knew of members that are gone is forgotten: one added again later starts afresh.
    for (const peer of [...this.next.keys()]) {
      if (config[peer] !== undefined) continue
      this.next.delete(peer)
      this.match.delete(peer)
    }
    if (this.roleNow !== 'leader') return
    for (const peer of this.others()) {
      if (!this.next.has(peer)) {
        this.next.set(peer, this.lastIndex() + 1)
        this.match.set(peer, 0)
        this.probing.add(peer)
      }
    }
  }

  /** The configuration from the log (its newest configuration entry), else the snapshot's, else the initial one. */
  private recomputeConfig(): void {
    for (let i = this.log.length - 1; i >= 0; i--) {
      const e = this.log[i]!
      if (e.config !== undefined) return this.useConfig(e.config, e.index, e.learners)
    }
    if (this.snap.config !== undefined) this.useConfig(this.snap.config, this.snap.index, this.snap.learners)
    else this.useConfig(this.initial, 0)
  }

  /** The configuration in force at `index` (for a snapshot there), or undefined for the initial one. */
  private configAt(index: number): { readonly config: Readonly<Record<NodeId, string>>; readonly learners?: readonly NodeId[] } | undefined {
    for (let i = index - this.snap.index - 1; i >= 0; i--) {
      const e = this.log[i]
      if (e?.config !== undefined) return e.learners === undefined ? { config: e.config } : { config: e.config, learners: e.learners }
    }
    if (this.snap.config === undefined) return undefined
    return this.snap.learners === undefined ? { config: this.snap.config } : { config: this.snap.config, learners: this.snap.learners }
  }

  private lastIndex(): number {
    return this.snap.index + this.log.length
  }

  private lastTerm(): number {
    return this.termAt(this.lastIndex())
  }

  /** The term of entry `index`: the snapshot's at its index, 0 before it (compacted) or past the end. */
  private termAt(index: number): number {
    if (index === this.snap.index) return this.snap.term
    return this.log[index - this.snap.index - 1]?.term ?? 0
  }

  /** Restarts the election clock with a new random timeout. */
  private resetTimeout(): void {
    this.elapsed = 0
    this.timeout = this.electionTicks + Math.floor(this.random() * this.electionTicks)
  }
}
