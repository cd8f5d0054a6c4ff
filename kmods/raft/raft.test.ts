// The Raft core under a simulated network (seeded: message order, loss, partitions, crashes and
// restarts from what each node persisted), checking the safety properties of the paper's
// Figure 3 after every round: one leader per term, and every node applies a prefix of one sequence.

import { describe, expect, it } from 'vitest'
import { seededRandom } from '../../kernel/index.js'
import { RaftArgumentError, RaftConfigChangeError, RaftNode, RaftNotLeaderError, type Entry, type HardState, type Message, type NodeId, type Snapshot } from './index.js'

const seeded = seededRandom

/** What a node made durable, as its storage would hold it. */
interface Disk {
  hardState: HardState
  entries: Entry[]
  snapshot?: Snapshot
}

class Sim {
  readonly nodes = new Map<NodeId, RaftNode>()
  readonly disks = new Map<NodeId, Disk>()
  /** Reads each node confirmed, and the ids of reads it lost. */
  readonly reads = new Map<NodeId, { id: string; index: number }[]>()
  readonly lostReads = new Map<NodeId, string[]>()
  /** What each node applied since it last started, in order. */
  readonly applied = new Map<NodeId, Entry[]>()
  /** Every entry any node applied, by index: a second, different one breaks State Machine Safety. */
  private readonly committedAt = new Map<number, string>()
  private readonly leaders = new Map<number, NodeId>()
  private inFlight: Message[] = []
  readonly down = new Set<NodeId>()
  /** Nodes on different sides of a partition cannot talk; undefined: no partition. */
  side: Map<NodeId, number> | undefined
  drop = 0
  /** Compact a node's log once it applied this many entries past its snapshot (0: never). */
  compactEvery = 0
  /** Snapshots installed from a leader, per node. */
  readonly installs = new Map<NodeId, number>()

  /** The members each node was first created with (a node added later starts with the new configuration). */
  private readonly initial = new Map<NodeId, readonly NodeId[]>()

  constructor(
    readonly ids: NodeId[],
    readonly rng: () => number,
  ) {
    for (const id of ids) {
      this.disks.set(id, { hardState: { term: 0, votedFor: null, commit: 0 }, entries: [] })
      this.initial.set(id, [...ids])
      this.start(id)
    }
  }

  /** Drops what a node stored (its data directory deleted): it restarts empty. */
  wipe(id: NodeId): void {
    this.disks.set(id, { hardState: { term: 0, votedFor: null, commit: 0 }, entries: [] })
  }

  /** Starts a new, empty node that knows `members` (the configuration it is being added with). */
  add(id: NodeId, members: readonly NodeId[]): void {
    this.ids.push(id)
    this.disks.set(id, { hardState: { term: 0, votedFor: null, commit: 0 }, entries: [] })
    this.initial.set(id, [...members])
    this.start(id)
  }

  private start(id: NodeId): void {
    const disk = this.disks.get(id)!
    this.nodes.set(
      id,
      new RaftNode({ id, members: this.initial.get(id)!, random: this.rng, restore: { hardState: disk.hardState, entries: [...disk.entries], snapshot: disk.snapshot } }),
    )
    // The state machine (the applied entries) starts from the snapshot, as an owner's would.
    this.applied.set(id, disk.snapshot === undefined ? [] : (JSON.parse(disk.snapshot.data) as Entry[]))
    this.reads.set(id, [])
    this.lostReads.set(id, [])
  }

  crash(id: NodeId): void {
    this.down.add(id)
  }

  restart(id: NodeId): void {
    this.down.delete(id)
    this.start(id)
  }

  private connected(a: NodeId, b: NodeId): boolean {
    return this.nodes.has(b) && !this.down.has(a) && !this.down.has(b) && (this.side === undefined || this.side.get(a) === this.side.get(b))
  }

  /** One round: every live node ticks, what it must persist is persisted, then its messages go out and a shuffled batch is delivered. */
  round(): void {
    for (const id of this.ids) if (!this.down.has(id)) this.nodes.get(id)!.tick()
    this.drain()
    const batch = this.inFlight
    this.inFlight = []
    for (let i = batch.length - 1; i > 0; i--) {
      const j = Math.floor(this.rng() * (i + 1))
      ;[batch[i], batch[j]] = [batch[j]!, batch[i]!]
    }
    for (const m of batch) {
      if (!this.connected(m.from, m.to) || this.rng() < this.drop) continue
      this.nodes.get(m.to)!.step(m)
    }
    this.drain()
    this.check()
  }

  private drain(): void {
    for (const id of this.ids) {
      if (this.down.has(id)) continue
      const ready = this.nodes.get(id)!.ready()
      const disk = this.disks.get(id)!
      // Persist before sending: what a message promises is on disk first.
      if (ready.hardState !== undefined) disk.hardState = ready.hardState
      const base = () => disk.snapshot?.index ?? 0
      if (ready.snapshot !== undefined) {
        disk.snapshot = ready.snapshot
        disk.entries = disk.entries.filter((e) => e.index > ready.snapshot!.index)
        if (ready.snapshot.install) {
          this.applied.set(id, JSON.parse(ready.snapshot.data) as Entry[])
          this.installs.set(id, (this.installs.get(id) ?? 0) + 1)
        }
      }
      if (ready.persist !== undefined) disk.entries = [...disk.entries.filter((e) => e.index < ready.persist!.from), ...ready.persist.entries]
      expect(disk.entries.every((e, i) => e.index === base() + i + 1)).toBe(true)
      this.inFlight.push(...ready.messages)
      this.applied.get(id)!.push(...ready.committed)
      const node = this.nodes.get(id)!
      const done = this.applied.get(id)!.length
      if (this.compactEvery > 0 && done - node.snapshotIndex >= this.compactEvery) node.compact(done, JSON.stringify(this.applied.get(id)))
      if (this.compactEvery > 0) {
        const r2 = node.ready()
        if (r2.snapshot !== undefined) {
          disk.snapshot = r2.snapshot
          disk.entries = disk.entries.filter((e) => e.index > r2.snapshot!.index)
        }
        if (r2.hardState !== undefined) disk.hardState = r2.hardState
        // Nothing else can have happened between the two calls.
        expect([r2.persist, r2.committed, r2.messages, r2.reads, r2.lostReads]).toEqual([undefined, [], [], [], []])
      }
      this.reads.get(id)!.push(...ready.reads)
      this.lostReads.get(id)!.push(...ready.lostReads)
    }
  }

  private check(): void {
    for (const id of this.ids) {
      const node = this.nodes.get(id)!
      if (this.down.has(id) || node.role !== 'leader') continue
      const known = this.leaders.get(node.term)
      if (known !== undefined && known !== id) throw new Error(`two leaders in term ${node.term}: ${known} and ${id}`)
      this.leaders.set(node.term, id)
    }
    for (const [id, entries] of this.applied) {
      entries.forEach((e, i) => {
        if (e.index !== i + 1) throw new Error(`${id} applied index ${e.index} at position ${i + 1}`)
        const seen = this.committedAt.get(e.index)
        const mine = `${e.term}:${e.data}`
        if (seen !== undefined && seen !== mine) throw new Error(`${id} applied ${mine} at ${e.index}, another node ${seen}`)
        this.committedAt.set(e.index, mine)
      })
    }
  }

  leader(): RaftNode | undefined {
    const leaders = this.ids.filter((id) => !this.down.has(id) && this.nodes.get(id)!.role === 'leader').map((id) => this.nodes.get(id)!)
    return leaders.sort((a, b) => b.term - a.term)[0]
  }

  /** Rounds until `done` holds; fails after `limit` rounds. */
  until(done: () => boolean, limit: number, what: string): void {
    for (let r = 0; r < limit; r++) {
      if (done()) return
      this.round()
    }
    if (!done()) throw new Error(`not within ${limit} rounds: ${what}`)
  }

  /** The commands (no-ops left out) `id` applied. */
  commands(id: NodeId): string[] {
    return this.applied
      .get(id)!
      .map((e) => e.data)
      .filter((d): d is string => d !== null)
  }
}

const ids = (n: number): NodeId[] => Array.from({ length: n }, (_, i) => `n${i}`)

describe('the Raft core', () => {
  it.each([3, 5])('elects one leader among %i members and commits proposals on every member in one order', (n) => {
    for (let seed = 1; seed <= 20; seed++) {
      const sim = new Sim(ids(n), seeded(seed))
      sim.until(() => sim.leader() !== undefined, 200, 'a leader')
      for (let i = 0; i < 30; i++) {
        sim.until(() => sim.leader() !== undefined, 200, 'a leader')
        sim.leader()!.propose(`c${i}`)
        sim.round()
      }
      sim.until(() => sim.ids.every((id) => sim.commands(id).length === 30), 200, 'every command applied everywhere')
      for (const id of sim.ids) expect(sim.commands(id)).toEqual(Array.from({ length: 30 }, (_, i) => `c${i}`))
    }
  })

  it("a leader cut off from the majority: a new leader is elected, and on healing the old one's uncommitted entries are replaced", () => {
    const sim = new Sim(ids(5), seeded(7))
    sim.until(() => sim.leader() !== undefined, 200, 'a leader')
    const old = sim.leader()!
    old.propose('before')
    sim.until(() => sim.ids.every((id) => sim.commands(id).includes('before')), 100, '"before" applied everywhere')
    // The old leader and one follower on one side, three on the other.
    const follower = sim.ids.find((id) => id !== old.id)!
    sim.side = new Map(sim.ids.map((id) => [id, id === old.id || id === follower ? 0 : 1]))
    old.propose('lost-1')
    old.propose('lost-2')
    sim.until(() => sim.ids.some((id) => id !== old.id && id !== follower && sim.nodes.get(id)!.role === 'leader'), 300, 'a leader in the majority')
    const fresh = sim.ids.map((id) => sim.nodes.get(id)!).find((x) => x.role === 'leader' && x.id !== old.id)!
    expect(fresh.term).toBeGreaterThan(old.term)
    fresh.propose('after')
    sim.until(() => sim.commands(fresh.id).includes('after'), 100, '"after" committed in the majority')
    // The minority cannot commit its entries.
    expect(sim.commands(old.id)).toEqual(['before'])
    expect(old.entries().map((e) => e.data)).toContain('lost-1')
    sim.side = undefined
    sim.until(() => sim.ids.every((id) => sim.commands(id).includes('after')), 300, 'the old leader repaired')
    for (const id of sim.ids) {
      expect(sim.commands(id)).toEqual(['before', 'after'])
      expect(
        sim.nodes
          .get(id)!
          .entries()
          .map((e) => e.data),
      ).not.toContain('lost-1')
    }
  })

  it('50 seeded schedules of loss, reordering, partitions, crashes and restarts from disk: safety always, and the group recovers', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const rng = seeded(seed * 7919)
      const sim = new Sim(ids(5), rng)
      sim.drop = 0.1
      sim.compactEvery = seed % 2 === 0 ? 8 : 0
      const proposed: string[] = []
      for (let r = 0; r < 600; r++) {
        const roll = rng()
        if (roll < 0.01 && sim.down.size < 2) sim.crash(sim.ids[Math.floor(rng() * 5)]!)
        else if (roll < 0.03 && sim.down.size > 0) sim.restart([...sim.down][0]!)
        else if (roll < 0.035) sim.side = new Map(sim.ids.map((id) => [id, rng() < 0.5 ? 0 : 1]))
        else if (roll < 0.05) sim.side = undefined
        const leader = sim.leader()
        if (leader !== undefined && rng() < 0.3) {
          const command = `s${seed}-${r}`
          leader.propose(command)
          proposed.push(command)
        }
        sim.round()
      }
      // Heal everything: every node ends with the same applied commands, all of them proposed.
      sim.side = undefined
      sim.drop = 0
      for (const id of [...sim.down]) sim.restart(id)
      sim.until(() => sim.leader() !== undefined, 300, `seed ${seed}: a leader after healing`)
      // A client retries a proposal its leader lost (deposed before a quorum had it).
      sim.until(
        () => {
          const leader = sim.leader()
          if (leader !== undefined && !leader.entries().some((e) => e.data === 'final')) leader.propose('final')
          return sim.ids.every((id) => sim.commands(id).at(-1) === 'final')
        },
        600,
        `seed ${seed}: "final" applied everywhere`,
      )
      const first = sim.commands(sim.ids[0]!)
      for (const id of sim.ids) expect(sim.commands(id)).toEqual(first)
      for (const c of first) expect(c === 'final' || proposed.includes(c)).toBe(true)
    }
  })

  it("a new leader does not commit an earlier term's entry by counting replicas (the paper's Figure 8)", () => {
    // S1 held entry 2 of term 2 and is elected in term 4; entry 2 then reaches a majority (S1, S2,
    // S3) before any entry of term 4 does. Committing it then would be unsafe: S5, holding a term-3
    // entry at index 2, could still be elected and overwrite it.
    const members = ['s1', 's2', 's3', 's4', 's5']
    const s1 = new RaftNode({
      id: 's1',
      members,
      electionTicks: 2,
      random: () => 0,
      maxEntriesPerMessage: 1,
      preVote: false,
      restore: {
        hardState: { term: 3, votedFor: null, commit: 1 },
        entries: [
          { index: 1, term: 1, data: 'a' },
          { index: 2, term: 2, data: 'b' },
        ],
      },
    })
    s1.tick()
    s1.tick()
    expect(s1.role).toBe('candidate')
    for (const from of ['s2', 's3']) s1.step({ type: 'vote-reply', from, to: 's1', term: 4, granted: true })
    expect(s1.role).toBe('leader')
    s1.ready()
    // S2 has entry 2 and takes the no-op (3); S3 lacks entry 2, gets it, and nothing more yet.
    s1.step({ type: 'append-reply', from: 's2', to: 's1', term: 4, success: true, index: 3 })
    s1.step({ type: 'append-reply', from: 's3', to: 's1', term: 4, success: false, index: 2 })
    s1.step({ type: 'append-reply', from: 's3', to: 's1', term: 4, success: true, index: 2 })
    expect(s1.commitIndex).toBe(1)
    // Once the term-4 entry is on a majority, it and everything before it commit.
    s1.step({ type: 'append-reply', from: 's3', to: 's1', term: 4, success: true, index: 3 })
    expect(s1.commitIndex).toBe(3)
    // (Entry 1, committed before the restart, was handed out again by the first ready().)
    expect(s1.ready().committed.map((e) => e.data)).toEqual(['b', null])
  })

  it("a member down while the others compact their logs catches up from the leader's snapshot, then from its log", () => {
    const sim = new Sim(ids(3), seeded(5))
    sim.compactEvery = 10
    sim.until(() => sim.leader() !== undefined, 200, 'a leader')
    const away = sim.ids.find((id) => id !== sim.leader()!.id)!
    sim.crash(away)
    for (let i = 0; i < 40; i++) {
      sim.until(() => sim.leader() !== undefined, 200, 'a leader')
      sim.leader()!.propose(`c${i}`)
      sim.round()
    }
    sim.until(() => sim.ids.filter((id) => id !== away).every((id) => sim.commands(id).length === 40), 200, 'the two applied 40')
    expect(sim.leader()!.snapshotIndex).toBeGreaterThan(10)
    sim.restart(away)
    sim.until(() => sim.commands(away).length === 40, 200, 'the returning member applied 40')
    expect(sim.installs.get(away)).toBeGreaterThanOrEqual(1)
    sim.leader()!.propose('after')
    sim.until(() => sim.ids.every((id) => sim.commands(id).at(-1) === 'after'), 200, 'everyone applied "after"')
    for (const id of sim.ids) expect(sim.commands(id)).toEqual([...Array.from({ length: 40 }, (_, i) => `c${i}`), 'after'])
  })

  it('pre-vote: a member cut off and back raised no term while away, and the leader stays', () => {
    const sim = new Sim(ids(3), seeded(21))
    sim.until(() => sim.leader() !== undefined, 200, 'a leader')
    const leader = sim.leader()!
    const term = leader.term
    const away = sim.ids.find((id) => id !== leader.id)!
    sim.side = new Map(sim.ids.map((id) => [id, id === away ? 1 : 0]))
    for (let r = 0; r < 300; r++) sim.round()
    expect(sim.nodes.get(away)!.term).toBe(term)
    sim.side = undefined
    for (let r = 0; r < 100; r++) sim.round()
    expect(sim.leader()).toBe(leader)
    expect(leader.term).toBe(term)
  })

  it('check-quorum: a leader cut off from every other member steps down within two election timeouts', () => {
    const sim = new Sim(ids(3), seeded(22))
    sim.until(() => sim.leader() !== undefined, 200, 'a leader')
    const leader = sim.leader()!
    sim.side = new Map(sim.ids.map((id) => [id, id === leader.id ? 1 : 0]))
    sim.until(() => leader.role !== 'leader', 20, 'the cut-off leader to step down')
    expect(leader.leader).toBeUndefined()
  })

  it('ReadIndex: a leader cut off in a minority never confirms a read (it could miss a newer write); the majority leader does', () => {
    const sim = new Sim(ids(5), seeded(11))
    sim.until(() => sim.leader() !== undefined, 200, 'a leader')
    const old = sim.leader()!
    old.propose('w1')
    sim.until(() => sim.ids.every((id) => sim.commands(id).includes('w1')), 100, 'w1 everywhere')
    const follower = sim.ids.find((id) => id !== old.id)!
    sim.side = new Map(sim.ids.map((id) => [id, id === old.id || id === follower ? 0 : 1]))
    old.readIndex('stale?')
    sim.until(() => sim.ids.some((id) => id !== old.id && id !== follower && sim.nodes.get(id)!.role === 'leader'), 300, 'a majority leader')
    const fresh = sim.ids.map((id) => sim.nodes.get(id)!).find((n) => n.role === 'leader' && n.id !== old.id)!
    fresh.propose('w2')
    sim.until(() => sim.commands(fresh.id).includes('w2'), 100, 'w2 committed')
    fresh.readIndex('fresh')
    sim.until(() => sim.reads.get(fresh.id)!.length > 0, 50, 'the majority read confirmed')
    const w2 = fresh.entries().find((e) => e.data === 'w2')!.index
    expect(sim.reads.get(fresh.id)).toEqual([{ id: 'fresh', index: expect.any(Number) }])
    expect(sim.reads.get(fresh.id)![0]!.index).toBeGreaterThanOrEqual(w2)
    for (let r = 0; r < 100; r++) sim.round()
    expect(sim.reads.get(old.id)).toEqual([])
    // Healed, the old leader steps down, and says its read is lost (to be asked again).
    sim.side = undefined
    sim.until(() => sim.lostReads.get(old.id)!.includes('stale?'), 100, 'the stale read reported lost')
    expect(sim.reads.get(old.id)).toEqual([])
  })

  it('ReadIndex: a new leader confirms reads only after it commits an entry of its own term', () => {
    const node = new RaftNode({ id: 's1', members: ['s1', 's2', 's3'], electionTicks: 2, random: () => 0, preVote: false })
    node.tick()
    node.tick()
    node.step({ type: 'vote-reply', from: 's2', to: 's1', term: 1, granted: true })
    expect(node.role).toBe('leader')
    node.readIndex('r')
    node.ready()
    // A heartbeat's acknowledgement alone does not confirm it: the no-op of term 1 is not committed.
    node.step({ type: 'append-reply', from: 's2', to: 's1', term: 1, success: false, index: 1 })
    expect(node.ready().reads).toEqual([])
    // The no-op commits; the read starts with its sequence number and a quorum confirms it.
    node.step({ type: 'append-reply', from: 's2', to: 's1', term: 1, success: true, index: 1 })
    const started = node.ready()
    expect(started.reads).toEqual([])
    const seq = (started.messages.find((m) => m.type === 'append') as { read?: number }).read
    expect(seq).toBe(1)
    node.step({ type: 'append-reply', from: 's3', to: 's1', term: 1, success: true, index: 1, read: seq! })
    expect(node.ready().reads).toEqual([{ id: 'r', index: 1 }])
    // On a follower, a read is refused with the leader it knows.
    const follower = new RaftNode({ id: 's2', members: ['s1', 's2', 's3'] })
    expect(() => follower.readIndex('x')).toThrow(RaftNotLeaderError)
  })

  it('a node restarted from disk keeps its vote: it grants no second vote in the same term', () => {
    const node = new RaftNode({ id: 'a', members: ['a', 'b', 'c'], random: seeded(1) })
    node.step({ type: 'vote', from: 'b', to: 'a', term: 1, lastIndex: 0, lastTerm: 0 })
    const ready = node.ready()
    expect(ready.messages).toEqual([{ type: 'vote-reply', from: 'a', to: 'b', term: 1, granted: true }])
    expect(ready.hardState).toEqual({ term: 1, votedFor: 'b', commit: 0 })
    const restarted = new RaftNode({ id: 'a', members: ['a', 'b', 'c'], restore: { hardState: ready.hardState!, entries: [] } })
    restarted.step({ type: 'vote', from: 'c', to: 'a', term: 1, lastIndex: 0, lastTerm: 0 })
    expect(restarted.ready().messages).toEqual([{ type: 'vote-reply', from: 'a', to: 'c', term: 1, granted: false }])
  })

  it('refuses a vote to a candidate whose log is behind (the election restriction)', () => {
    const node = new RaftNode({
      id: 'a',
      members: ['a', 'b', 'c'],
      restore: { hardState: { term: 2, votedFor: null, commit: 0 }, entries: [{ index: 1, term: 2, data: 'x' }] },
    })
    node.step({ type: 'vote', from: 'b', to: 'a', term: 3, lastIndex: 5, lastTerm: 1 })
    expect(node.ready().messages).toEqual([{ type: 'vote-reply', from: 'a', to: 'b', term: 3, granted: false }])
  })

  it('says what is wrong: bad options, and a proposal to a follower names the leader it knows', () => {
    expect(() => new RaftNode({ id: 'a', members: ['b', 'c'] })).toThrow(RaftArgumentError)
    expect(() => new RaftNode({ id: 'a', members: ['a'], heartbeatTicks: 10 })).toThrow(/heartbeatTicks must be an integer in \[1, electionTicks\), got 10/)
    const node = new RaftNode({ id: 'a', members: ['a', 'b', 'c'] })
    node.step({ type: 'append', from: 'b', to: 'a', term: 1, prevIndex: 0, prevTerm: 0, entries: [], commit: 0 })
    let error: unknown
    try {
      node.propose('x')
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(RaftNotLeaderError)
    expect(error).toMatchObject({ code: 'ERR_RAFT_NOT_LEADER', leader: 'b', retryable: true })
  })

  it('adds and removes members one at a time while serving, the leader included, and keeps the change across restarts', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const sim = new Sim(ids(3), seeded(seed))
      sim.drop = 0.05
      const config = (members: readonly NodeId[]) => Object.fromEntries(members.map((m) => [m, `addr-${m}`]))
      const propose = (command: string): void => {
        sim.until(() => sim.leader() !== undefined, 400, 'a leader')
        sim.leader()!.propose(command)
        sim.round()
      }
      /** Proposes a change on the leader, retrying while it is refused for now; rounds until it is in force everywhere. */
      const change = (members: readonly NodeId[]): void => {
        sim.until(
          () => {
            const leader = sim.leader()
            if (leader === undefined) return false
            try {
              leader.proposeConfig(config(members))
              return true
            } catch (error) {
              if (error instanceof RaftConfigChangeError) return false
              throw error
            }
          },
          400,
          'the change to be accepted',
        )
        sim.until(
          () =>
            sim.ids.filter((id) => members.includes(id) && !sim.down.has(id)).every((id) => Object.keys(sim.nodes.get(id)!.config).sort().join() === [...members].sort().join()),
          400,
          'the change in force on every member',
        )
      }
      for (let i = 0; i < 5; i++) propose(`a${i}`)
      // A fourth member: it starts empty and catches up.
      sim.add('n3', ['n0', 'n1', 'n2', 'n3'])
      change(['n0', 'n1', 'n2', 'n3'])
      for (let i = 0; i < 5; i++) propose(`b${i}`)
      sim.until(() => sim.commands('n3').length === 10, 400, 'the new member applied everything')
      // Remove the leader itself: it steps down once the change commits; the others go on.
      const old = sim.leader()!
      change(sim.ids.filter((id) => id !== old.id))
      sim.until(() => sim.leader() !== undefined && sim.leader()!.id !== old.id, 400, 'a leader among the remaining members')
      for (let i = 0; i < 5; i++) propose(`c${i}`)
      const remaining = sim.ids.filter((id) => id !== old.id)
      sim.until(() => remaining.every((id) => sim.commands(id).length === 15), 400, 'the remaining members applied everything')
      // The removed member never stands for election again.
      const term = Math.max(...remaining.map((id) => sim.nodes.get(id)!.term))
      for (let r = 0; r < 100; r++) sim.round()
      expect(old.role).not.toBe('leader')
      expect(old.role).not.toBe('candidate')
      // Restarted from disk, every remaining member has the new configuration.
      for (const id of remaining) {
        sim.crash(id)
        sim.restart(id)
        expect(Object.keys(sim.nodes.get(id)!.config).sort()).toEqual([...remaining].sort())
      }
      propose('d')
      sim.until(() => remaining.every((id) => sim.commands(id).includes('d')), 400, '"d" applied after the restart')
      // The removed member comes back, empty (its data was dropped): it catches up from scratch.
      sim.crash(old.id)
      sim.wipe(old.id)
      sim.restart(old.id)
      change([...remaining, old.id])
      propose('e')
      sim.until(() => sim.ids.every((id) => sim.commands(id).length === 17), 400, 'the member added again caught up, and the others applied "e"')
      expect(sim.commands(old.id).join()).toEqual(sim.commands(remaining[0]!).join())
      // One leader removes a follower and adds it back, empty: it must not trust what it knew of it.
      sim.drop = 0
      const leader = sim.leader()!
      const follower = sim.ids.find((id) => id !== leader.id && !sim.down.has(id))!
      const all = [...sim.ids].filter((id) => !sim.down.has(id))
      change(all.filter((id) => id !== follower))
      sim.crash(follower)
      sim.wipe(follower)
      sim.restart(follower)
      change(all)
      expect(sim.leader()).toBe(leader)
      propose('f')
      sim.until(() => sim.commands(follower).includes('f'), 400, 'the follower added back caught up')
      expect(sim.commands(follower).join()).toEqual(sim.commands(leader.id).join())
      expect(Math.max(...remaining.map((id) => sim.nodes.get(id)!.term))).toBeGreaterThanOrEqual(term)
      for (const id of remaining) expect(sim.commands(id)).toEqual(sim.commands(remaining[0]!))
    }
  })

  it('refuses a second change before the first commits, and a change of two members at once', () => {
    const sim = new Sim(ids(3), seeded(4))
    sim.until(() => sim.leader() !== undefined && sim.leader()!.commitIndex > 0, 200, 'a leader with a committed entry')
    const leader = sim.leader()!
    expect(() => leader.proposeConfig({ n0: '', n1: '', n2: '', n3: '', n4: '' })).toThrow(RaftArgumentError)
    expect(() => leader.proposeConfig({ n0: '', n1: '', n2: '', n3: '', n4: '' })).toThrow(/one member at a time/)
    leader.proposeConfig({ n0: '', n1: '', n2: '', n3: '' })
    expect(() => leader.proposeConfig({ n0: '', n1: '', n2: '' })).toThrow(RaftConfigChangeError)
    expect(() => sim.nodes.get(sim.ids.find((id) => id !== leader.id)!)!.proposeConfig({ n0: '' })).toThrow(RaftNotLeaderError)
  })

  it('snapshots carry the configuration to a member that installs them', () => {
    const sim = new Sim(ids(3), seeded(11))
    sim.compactEvery = 5
    sim.until(() => sim.leader() !== undefined && sim.leader()!.commitIndex > 0, 200, 'a leader')
    sim.leader()!.proposeConfig({ n0: 'a', n1: 'b', n2: 'c', n3: 'd' })
    for (let i = 0; i < 20; i++) {
      sim.until(() => sim.leader() !== undefined, 200, 'a leader')
      sim.leader()!.propose(`x${i}`)
      sim.round()
    }
    // n3 joins late, with only itself known: the leader's snapshot tells it the members.
    sim.add('n3', ['n3'])
    sim.until(() => sim.commands('n3').length === 20, 400, 'n3 caught up by snapshot')
    expect(sim.installs.get('n3')).toBeGreaterThan(0)
    expect(sim.nodes.get('n3')!.config).toEqual({ n0: 'a', n1: 'b', n2: 'c', n3: 'd' })
  })

  it('split votes: candidates standing at once split the vote and no one leads that term; randomized timeouts then elect one', () => {
    // While `lockstep` holds, every node draws the same election timeout (and messages keep their order).
    let lockstep = true
    const seededRng = seeded(5)
    const sim = new Sim(ids(4), () => (lockstep ? 0 : seededRng()))
    sim.until(() => sim.ids.every((id) => sim.nodes.get(id)!.term >= 1), 100, 'every node to stand in term 1')
    for (let r = 0; r < 5; r++) sim.round()
    // Each voted for itself: no majority of 4 for anyone in term 1.
    expect(sim.ids.map((id) => sim.nodes.get(id)!.role)).not.toContain('leader')
    expect(new Set(sim.ids.map((id) => sim.nodes.get(id)!.term))).toEqual(new Set([1]))
    lockstep = false
    sim.until(() => sim.leader() !== undefined, 400, 'a leader once timeouts are random again')
    expect(sim.leader()!.term).toBeGreaterThan(1)
  })

  it('a learner gets the log but counts toward no quorum and never stands; promoted, it votes', () => {
    const sim = new Sim(ids(3), seeded(21))
    sim.until(() => sim.leader() !== undefined && sim.leader()!.commitIndex > 0, 200, 'a leader with a committed entry')
    sim.add('n3', ['n0', 'n1', 'n2', 'n3'])
    const all = { n0: '', n1: '', n2: '', n3: '' }
    sim.leader()!.proposeConfig(all, ['n3'])
    sim.until(() => sim.ids.every((id) => sim.nodes.get(id)!.learners.has('n3')), 200, 'the learner in the configuration everywhere')
    // The learner and one voter down: two of the three voters still commit (with n3 a voter, 2 of 4 could not).
    const leader = sim.leader()!
    const voter = ['n0', 'n1', 'n2'].find((id) => id !== leader.id)!
    sim.crash('n3')
    sim.crash(voter)
    const before = sim.commands(leader.id).length
    leader.propose('with-a-learner-down')
    sim.until(() => sim.commands(leader.id).length === before + 1, 200, 'a commit without the learner')
    sim.restart('n3')
    sim.restart(voter)
    sim.until(() => sim.commands('n3').includes('with-a-learner-down'), 400, 'the learner caught up')
    for (let r = 0; r < 60; r++) sim.round()
    expect(['leader', 'candidate', 'pre-candidate']).not.toContain(sim.nodes.get('n3')!.role)
    expect(leader.matchOf('n3')).toBeGreaterThanOrEqual(leader.commitIndex)
    // Promoted: one voter added.
    sim.leader()!.proposeConfig(all)
    sim.until(() => sim.ids.every((id) => sim.nodes.get(id)!.learners.size === 0), 200, 'n3 a voter everywhere')
    expect(() => sim.leader()!.proposeConfig({ n0: '', n1: '', n2: '', n3: '', n4: '' }, ['n5'])).toThrow(RaftArgumentError)
  })
})
