// Gossip membership with failure detection: no master, join through any member, heartbeats spread by push-pull gossip.
//
// Each peer keeps a table of members with a heartbeat counter; every `heartbeatMs` it increments
// its own counter and exchanges its table with a few random members (gossip-style failure
// detection, as in van Renesse, Minsky and Hayden, "A Gossip-Style Failure Detection Service",
// 1998). A member whose counter stops advancing for `suspectAfterMs` is suspect, for `deadAfterMs`
// dead: each peer decides that locally, so dead entries are never gossiped. A graceful leave
// gossips a `left` entry with a higher counter.

import '../transport/polyfill.js'
import { readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Stream } from '@libp2p/interface'
import { lpStream } from '@libp2p/utils'
import { Subject, type Observable } from 'rxjs'
import type { Logger, PeerNode } from '../transport/index.js'
import { MembershipJoinError, MembershipMessageError, MembershipOptionError, MembershipStoppedError } from './errors.js'

/** The libp2p protocol of membership gossip (one push-pull exchange per stream). */
export const MEMBERSHIP_PROTOCOL = '/lamina/membership/1.0.0'

/** A member's state as this peer sees it. */
export type MemberStatus = 'alive' | 'suspect' | 'dead' | 'left'

/** One member of the cluster. */
export interface Member {
  readonly peerId: string
  readonly multiaddrs: readonly string[]
  readonly tags: Readonly<Record<string, string>>
  /** Incremented by the member every heartbeat. */
  readonly heartbeat: number
  /** When the member (this run of it) started, in ms: a restarted peer has a higher one. */
  readonly generation: number
  readonly status: MemberStatus
  /** When this peer last saw the member's heartbeat advance (its own clock, ms). */
  readonly lastSeen: number
  /** True for this peer's own entry. */
  readonly self: boolean
}

/** What happened to a member. */
export type MembershipEventType = 'join' | 'leave' | 'suspect' | 'alive' | 'dead'

/** A membership change, as seen by this peer. */
export interface MembershipEvent {
  readonly type: MembershipEventType
  readonly member: Member
  /** When this peer noticed it (ms). */
  readonly at: number
}

/** Options of `startMembership`. All optional. */
export interface MembershipOptions {
  /** Multiaddrs of members to join through (any one answering is enough). @default [] (this peer starts a cluster) */
  readonly bootstrap?: readonly string[]
  /**
   * How long to keep trying the bootstrap addresses, with backoff (250 ms doubling to 4 s), when
   * none answers: members started together, each bootstrapping from the others, join once one is
   * up. Past it the start fails with MembershipJoinError. @default 0 (one round)
   */
  readonly joinTimeoutMs?: number
  /** Milliseconds between heartbeats (and gossip rounds). @default 200 */
  readonly heartbeatMs?: number
  /** A member whose heartbeat has not advanced for this long is suspect. @default 1000 */
  readonly suspectAfterMs?: number
  /** A member whose heartbeat has not advanced for this long is dead. @default 2000 */
  readonly deadAfterMs?: number
  /** Members gossiped with per round. @default 3 */
  readonly fanout?: number
  /** Labels of this peer, gossiped with its entry. @default the node's tags */
  readonly tags?: Readonly<Record<string, string>>
  /** Dead and left members are forgotten after this long. @default 60000 */
  readonly forgetAfterMs?: number
  /** @default the node's logger */
  readonly logger?: Logger
  /**
   * Remember the members seen, in `<workdir>/members.json`, and try them (after `bootstrap`) when
   * starting again, so any member's restart rejoins, the seed's (started without bootstrap)
   * included. When none of them answers, a member without `bootstrap` starts alone and keeps
   * trying them while alone. @default true
   */
  readonly remember?: boolean
  /** Aborts the join; aborting later stops the membership (without telling the others, like a crash). */
  readonly signal?: AbortSignal
}

/** A membership: created with `createMembership`, running after `start()`. */
export interface Membership {
  /** Join, leave, suspect, alive and dead events of other members (subscribe before `start()` to see the joins found while joining). Completes on stop. */
  readonly events: Observable<MembershipEvent>
  /** Joins through the bootstrap addresses and starts gossiping. @throws MembershipJoinError when none answered. */
  start(): Promise<void>
  /** The live view: members alive or suspect, this peer included, by peer id. */
  members(): Member[]
  /** Every entry, dead and left ones included. */
  table(): Member[]
  /** Leaves gracefully: tells the members, then stops. */
  leave(options?: { signal?: AbortSignal }): Promise<void>
  /** Stops gossiping without telling anyone (the others will declare this peer dead). Idempotent. */
  stop(): Promise<void>
}

/**
 * Starts membership on a node: joins through `bootstrap` (any member's multiaddr), then gossips.
 *
 * ```ts
 * const membership = await startMembership(node, { bootstrap: ['/ip4/127.0.0.1/tcp/4001/p2p/12D3…'] })
 * membership.events.subscribe((e) => console.log(e.type, e.member.peerId))
 * ```
 *
 * @throws MembershipJoinError when bootstrap addresses were given and none answered.
 */
export async function startMembership(node: PeerNode, options: MembershipOptions = {}): Promise<Membership> {
  const membership = createMembership(node, options)
  await membership.start()
  return membership
}

/**
 * A membership on a node, not started yet: subscribe to `events` first to see every join,
 * including those found while joining, then `start()`.
 *
 * @throws MembershipOptionError when the timing options are inconsistent.
 */
export function createMembership(node: PeerNode, options: MembershipOptions = {}): Membership {
  return new GossipMembership(node, options)
}

/** An entry as it travels in gossip. */
interface WireMember {
  peerId: string
  multiaddrs: string[]
  tags: Record<string, string>
  heartbeat: number
  generation: number
  status: 'alive' | 'left'
}

interface Entry {
  peerId: string
  multiaddrs: string[]
  tags: Record<string, string>
  heartbeat: number
  generation: number
  status: MemberStatus
  lastSeen: number
  /** When the status last changed (for forgetting). */
  since: number
}

class GossipMembership implements Membership {
  private readonly subject = new Subject<MembershipEvent>()
  readonly events: Observable<MembershipEvent> = this.subject.asObservable()
  private readonly entries = new Map<string, Entry>()
  private readonly self: Entry
  private readonly heartbeatMs: number
  private readonly suspectAfterMs: number
  private readonly deadAfterMs: number
  private readonly fanout: number
  private readonly forgetAfterMs: number
  private readonly logger: Logger
  private readonly busy = new Set<string>()
  private readonly streams = new Set<Stream>()
  private timer: NodeJS.Timeout | undefined
  private stopping: Promise<void> | undefined
  /** Addresses of members remembered from an earlier run (see `remember`). */
  private remembered: string[] = []
  /** What was last written to members.json, so that only changes are written. */
  private saved = ''

  constructor(
    private readonly node: PeerNode,
    private readonly options: MembershipOptions,
  ) {
    this.heartbeatMs = options.heartbeatMs ?? 200
    this.suspectAfterMs = options.suspectAfterMs ?? 1000
    this.deadAfterMs = options.deadAfterMs ?? 2000
    this.fanout = options.fanout ?? 3
    this.forgetAfterMs = options.forgetAfterMs ?? 60_000
    this.logger = options.logger ?? node.logger
    if (!(this.heartbeatMs > 0)) throw new MembershipOptionError('heartbeatMs', `must be positive, got ${this.heartbeatMs}`)
    if (!(this.suspectAfterMs > this.heartbeatMs)) throw new MembershipOptionError('suspectAfterMs', `must exceed heartbeatMs (${this.heartbeatMs}), got ${this.suspectAfterMs}`)
    if (!(this.deadAfterMs > this.suspectAfterMs)) throw new MembershipOptionError('deadAfterMs', `must exceed suspectAfterMs (${this.suspectAfterMs}), got ${this.deadAfterMs}`)
    if (!(this.fanout >= 1)) throw new MembershipOptionError('fanout', `must be at least 1, got ${this.fanout}`)
    const now = Date.now()
    this.self = {
      peerId: node.peerId,
      multiaddrs: node.multiaddrs(),
      tags: { ...(options.tags ?? node.tags) },
      heartbeat: 0,
      generation: now,
      status: 'alive',
      lastSeen: now,
      since: now,
    }
    this.entries.set(node.peerId, this.self)
  }

  private started = false

  async start(): Promise<void> {
    if (this.stopping !== undefined) throw new MembershipStoppedError('start')
    if (this.started) return
    this.started = true
    const signal = this.options.signal
    signal?.throwIfAborted()
    await this.node.libp2p.handle(MEMBERSHIP_PROTOCOL, (stream, connection) => this.serve(stream, connection.remotePeer.toString()), {
      maxInboundStreams: 64,
      maxOutboundStreams: 64,
    })
    this.remembered = this.recall()
    try {
      const configured = this.options.bootstrap ?? []
      // Configured addresses first, then the members remembered from the last run.
      const bootstrap = [...new Set([...configured, ...this.remembered])]
      const deadline = Date.now() + (this.options.joinTimeoutMs ?? 0)
      for (let round = 0; bootstrap.length > 0; round++) {
        const failures: string[] = []
        const joined = await Promise.all(
          bootstrap.map(async (address) => {
            try {
              await this.exchange(address, signal)
              return true
            } catch (error) {
              failures.push(`${address}: ${error instanceof Error ? error.message : String(error)}`)
              return false
            }
          }),
        )
        signal?.throwIfAborted()
        if (joined.some(Boolean)) break
        // A member that was given no bootstrap (the seed) starts alone when nobody it remembers
        // answers, and keeps trying them while alone (see tick).
        if (configured.length === 0) {
          this.logger.info(`none of the ${this.remembered.length} members remembered from the last run answers; starting alone and trying them while alone`)
          break
        }
        const wait = Math.min(4_000, 250 * 2 ** round)
        if (Date.now() + wait > deadline) throw new MembershipJoinError(bootstrap, failures, round + 1)
        if (round === 0 || round % 5 === 0)
          this.logger.info(`no bootstrap address answers yet (${failures.length} tried); trying again for up to ${Math.round((deadline - Date.now()) / 1000)} s`)
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, wait)
          function done(): void {
            clearTimeout(timer)
            signal?.removeEventListener('abort', done)
            resolve()
          }
          signal?.addEventListener('abort', done, { once: true })
        })
        signal?.throwIfAborted()
      }
    } catch (error) {
      await this.stop()
      throw error
    }
    this.timer = setInterval(() => this.tick(), this.heartbeatMs)
    signal?.addEventListener('abort', () => void this.stop(), { once: true })
  }

  members(): Member[] {
    return [...this.entries.values()].filter((e) => e.status === 'alive' || e.status === 'suspect').map((e) => this.view(e))
  }

  table(): Member[] {
    return [...this.entries.values()].map((e) => this.view(e))
  }

  async leave(options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.stopping !== undefined || !this.started) throw new MembershipStoppedError('leave')
    clearInterval(this.timer)
    this.self.heartbeat++
    this.self.status = 'left'
    const signal =
      options.signal === undefined
        ? AbortSignal.timeout(Math.max(1000, this.suspectAfterMs))
        : AbortSignal.any([options.signal, AbortSignal.timeout(Math.max(1000, this.suspectAfterMs))])
    // Tell every live member directly: a leave should not wait for gossip rounds that will not come.
    const targets = [...this.entries.values()].filter((e) => e !== this.self && (e.status === 'alive' || e.status === 'suspect'))
    await Promise.all(targets.map((e) => this.exchange(e.multiaddrs[0]!, signal).catch(() => undefined)))
    await this.stop()
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.timer)
      for (const stream of this.streams) stream.abort(new Error('membership stopped'))
      if (this.started && !this.node.stopped) await this.node.libp2p.unhandle(MEMBERSHIP_PROTOCOL).catch(() => undefined)
      this.subject.complete()
    })()
    return this.stopping
  }

  /** One heartbeat: advance our counter, judge the others, gossip with a few. */
  private tick(): void {
    const now = Date.now()
    this.self.heartbeat++
    this.self.lastSeen = now
    this.self.multiaddrs = this.node.multiaddrs()
    for (const entry of this.entries.values()) {
      if (entry === this.self) continue
      const quiet = now - entry.lastSeen
      if (entry.status === 'alive' && quiet > this.suspectAfterMs) this.change(entry, 'suspect', 'suspect', now)
      if ((entry.status === 'alive' || entry.status === 'suspect') && quiet > this.deadAfterMs) this.change(entry, 'dead', 'dead', now)
      if ((entry.status === 'dead' || entry.status === 'left') && now - entry.since > this.forgetAfterMs) this.entries.delete(entry.peerId)
    }
    const live = [...this.entries.values()].filter((e) => e !== this.self && (e.status === 'alive' || e.status === 'suspect') && !this.busy.has(e.peerId))
    for (const target of pick(live, this.fanout)) {
      this.busy.add(target.peerId)
      this.exchange(target.multiaddrs[0]!, AbortSignal.timeout(Math.max(this.heartbeatMs * 4, 1000)))
        .catch(() => undefined) // a member that does not answer is judged by its heartbeat, not here
        .finally(() => this.busy.delete(target.peerId))
    }
    if (this.self.heartbeat % 10 === 0) this.remember(live)
    // Alone (everyone else gone, or the bootstrap was not up yet): try the bootstrap addresses and
    // the members remembered from the last run again.
    if (live.length === 0 && this.busy.size === 0) {
      for (const address of new Set([...(this.options.bootstrap ?? []), ...this.remembered])) {
        if (address.includes(`/p2p/${this.self.peerId}`)) continue
        this.busy.add(address)
        this.exchange(address, AbortSignal.timeout(Math.max(this.heartbeatMs * 4, 1000)))
          .catch(() => undefined)
          .finally(() => this.busy.delete(address))
      }
    }
  }

  /** Push-pull: sends our table to `address`, merges the table it answers with. */
  private async exchange(address: string, signal: AbortSignal | undefined): Promise<void> {
    const stream = await this.node.dialProtocol(address, MEMBERSHIP_PROTOCOL, { signal })
    this.streams.add(stream)
    try {
      const lp = lpStream(stream)
      await lp.write(this.encode(), { signal })
      const reply = await lp.read({ signal })
      this.merge(decode(reply.subarray(), address), Date.now())
      await stream.close({ signal }).catch(() => undefined)
    } catch (error) {
      stream.abort(error instanceof Error ? error : new Error(String(error)))
      throw error
    } finally {
      this.streams.delete(stream)
    }
  }

  /** Answers an exchange: merges the caller's table, replies with ours. */
  private async serve(stream: Stream, peer: string): Promise<void> {
    this.streams.add(stream)
    const signal = AbortSignal.timeout(Math.max(this.heartbeatMs * 4, 1000))
    try {
      const lp = lpStream(stream)
      const message = await lp.read({ signal })
      let members: WireMember[]
      try {
        members = decode(message.subarray(), peer)
      } catch (error) {
        this.logger.warn((error as Error).message)
        stream.abort(error as Error)
        return
      }
      this.merge(members, Date.now())
      await lp.write(this.encode(), { signal })
      await stream.close({ signal }).catch(() => undefined)
    } catch (error) {
      stream.abort(error instanceof Error ? error : new Error(String(error)))
    } finally {
      this.streams.delete(stream)
    }
  }

  private encode(): Uint8Array {
    const members: WireMember[] = []
    for (const e of this.entries.values()) {
      if (e.status === 'dead') continue
      members.push({ peerId: e.peerId, multiaddrs: e.multiaddrs, tags: e.tags, heartbeat: e.heartbeat, generation: e.generation, status: e.status === 'left' ? 'left' : 'alive' })
    }
    return new TextEncoder().encode(JSON.stringify({ members }))
  }

  /** Takes in what another member knows: newer heartbeats (by generation, then counter) win. */
  private merge(members: WireMember[], now: number): void {
    if (this.stopping !== undefined) return
    for (const wire of members) {
      if (wire.peerId === this.self.peerId) continue
      const known = this.entries.get(wire.peerId)
      if (known === undefined) {
        const entry: Entry = { ...wire, status: wire.status, lastSeen: now, since: now }
        this.entries.set(wire.peerId, entry)
        // A member learnt of only as gone never joined in our eyes.
        if (wire.status === 'alive') this.emit('join', entry, now)
        continue
      }
      const newer = wire.generation > known.generation || (wire.generation === known.generation && wire.heartbeat > known.heartbeat)
      if (!newer) continue
      const restarted = wire.generation > known.generation
      const previous = known.status
      known.heartbeat = wire.heartbeat
      known.generation = wire.generation
      known.multiaddrs = wire.multiaddrs
      known.tags = wire.tags
      known.lastSeen = now
      if (wire.status === 'left') {
        if (previous !== 'left') this.change(known, 'left', 'leave', now)
      } else if (previous === 'left' || restarted) {
        this.change(known, 'alive', 'join', now)
      } else if (previous !== 'alive') {
        this.change(known, 'alive', 'alive', now)
      }
    }
  }

  /** The file members are remembered in, or undefined when remembering is off. */
  private get memoryFile(): string | undefined {
    return this.options.remember === false ? undefined : join(this.node.workdir, 'members.json')
  }

  /** The addresses of members remembered from the last run (none when there is no file or it is unreadable). */
  private recall(): string[] {
    const file = this.memoryFile
    if (file === undefined) return []
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'))
      const list = Array.isArray(parsed) ? parsed : []
      return list.filter((a): a is string => typeof a === 'string' && a.startsWith('/') && !a.includes(`/p2p/${this.self.peerId}`))
    } catch {
      return []
    }
  }

  /** Writes the first address of each live member (atomically, and only when it changed). */
  private remember(live: readonly Entry[]): void {
    const file = this.memoryFile
    if (file === undefined || live.length === 0) return
    const addresses = live.map((e) => e.multiaddrs[0]!).sort()
    const text = JSON.stringify(addresses)
    if (text === this.saved) return
    try {
      writeFileSync(`${file}.tmp`, text)
      renameSync(`${file}.tmp`, file)
      this.saved = text
      this.remembered = addresses
    } catch (error) {
      this.logger.warn(`cannot remember the members in ${file}: ${error instanceof Error ? error.message : String(error)}`)
    }
  }

  private change(entry: Entry, status: MemberStatus, event: MembershipEventType, now: number): void {
    entry.status = status
    entry.since = now
    if (event === 'dead' || event === 'suspect') this.logger.info(`member ${entry.peerId} is ${event}: no heartbeat for ${now - entry.lastSeen} ms`)
    this.emit(event, entry, now)
  }

  private emit(type: MembershipEventType, entry: Entry, at: number): void {
    this.subject.next({ type, member: this.view(entry), at })
  }

  private view(entry: Entry): Member {
    return {
      peerId: entry.peerId,
      multiaddrs: [...entry.multiaddrs],
      tags: { ...entry.tags },
      heartbeat: entry.heartbeat,
      generation: entry.generation,
      status: entry.status,
      lastSeen: entry.lastSeen,
      self: entry === this.self,
    }
  }
}

/** Up to `n` distinct random items. */
function pick<T>(items: T[], n: number): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[copy[i], copy[j]] = [copy[j]!, copy[i]!]
  }
  return copy.slice(0, n)
}

/** Parses and checks a gossip message. @throws MembershipMessageError naming the peer (its id or address). */
function decode(bytes: Uint8Array, peer: string): WireMember[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (error) {
    throw new MembershipMessageError(peer, `not UTF-8 JSON: ${error instanceof Error ? error.message : String(error)}`)
  }
  const members = (parsed as { members?: unknown } | null)?.members
  if (!Array.isArray(members)) throw new MembershipMessageError(peer, 'no "members" array')
  return members.map((m: unknown, i) => {
    const e = m as Partial<WireMember> | null
    const bad = (field: string): never => {
      throw new MembershipMessageError(peer, `members[${i}].${field} is missing or has the wrong type`)
    }
    if (e === null || typeof e !== 'object') return bad('(entry)')
    if (typeof e.peerId !== 'string' || e.peerId === '') bad('peerId')
    if (!Array.isArray(e.multiaddrs) || e.multiaddrs.length === 0 || !e.multiaddrs.every((a) => typeof a === 'string' && a.startsWith('/'))) bad('multiaddrs')
    if (e.tags === null || typeof e.tags !== 'object' || Array.isArray(e.tags) || !Object.values(e.tags).every((v) => typeof v === 'string')) bad('tags')
    if (typeof e.heartbeat !== 'number' || !Number.isSafeInteger(e.heartbeat) || e.heartbeat < 0) bad('heartbeat')
    if (typeof e.generation !== 'number' || !Number.isSafeInteger(e.generation) || e.generation < 0) bad('generation')
    if (e.status !== 'alive' && e.status !== 'left') bad('status')
    return { peerId: e.peerId!, multiaddrs: e.multiaddrs!, tags: e.tags!, heartbeat: e.heartbeat!, generation: e.generation!, status: e.status! }
  })
}
