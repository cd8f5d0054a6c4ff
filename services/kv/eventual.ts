// The KV store's eventual mode: any replica answers at once, from its own copy; replicas converge.
//
// Each write is stamped with a hybrid logical clock (Kulkarni et al., "Logical Physical Clocks",
// 2014): wall-clock milliseconds and a counter, so that stamps follow causality even when clocks
// drift, ordered by (time, counter, replica id). A key's value is the write with the greatest stamp
// (last writer wins); a delete is a write of a tombstone. The replica that takes a write makes it
// durable in its store, answers, and pushes it to the others. Pushes can be lost (a partition, a
// crash), so every second each replica also runs anti-entropy with the others, as Dynamo and
// Cassandra do: it sends a digest of its copy, one hash per bucket of keys, and the two exchange
// the entries of the buckets that differ. Once a partition heals, every replica holds the same
// entries (of every key, the write with the greatest stamp) within a few rounds.

import { createHash } from 'node:crypto'
import type { Store } from '../../kmods/store/index.js'
import type { Logger } from '../../kmods/transport/index.js'
import { KvCommandError } from './errors.js'
import type { KvEntry, KvResult, KvScan } from './state.js'
import { KV_LIMITS, KvState } from './state.js'

/** A stamp of the hybrid logical clock: wall time (ms), counter, and the replica that made it. */
export type Hlc = readonly [wall: number, counter: number, replica: string]

/** One key as an eventual replica keeps it: the newest write (a tombstone when `value` is null). */
export interface EventualEntry {
  readonly key: string
  readonly value: string | null
  readonly hlc: Hlc
}

/** Orders stamps: negative when `a` is older. */
export function compareHlc(a: Hlc, b: Hlc): number {
  return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0)
}

/** Buckets of the anti-entropy digest. */
const BUCKETS = 64

function bucketOf(key: string): number {
  return createHash('sha1').update(key).digest()[0]! % BUCKETS
}

/** How an eventual replica reaches the others (the KV host's links). */
export interface EventualPeers {
  /** The other replicas' ids. */
  others(): readonly string[]
  /** Sends entries to a replica (best effort). */
  push(peer: string, entries: readonly EventualEntry[]): Promise<void>
  /** Sends a digest; the replica answers with its entries of the buckets that differ, and the buckets it wants. */
  exchange(peer: string, digest: readonly string[]): Promise<{ readonly entries: readonly EventualEntry[]; readonly want: readonly number[] }>
}

/** One replica of an eventual shard. */
export class EventualReplica {
  private readonly entries = new Map<string, EventualEntry>()
  private wall = 0
  private counter = 0
  private changes = 0
  private readonly timer: NodeJS.Timeout
  private stopped = false
  private readonly unreachable = new Set<string>()

  constructor(
    readonly shard: string,
    private readonly id: string,
    private readonly store: Store,
    private readonly peers: EventualPeers,
    private readonly logger: Logger,
    antiEntropyMs = 1000,
  ) {
    for (const { value } of store.list(this.ns)) {
      const e = JSON.parse(String(value)) as EventualEntry
      this.entries.set(e.key, e)
      this.observe(e.hlc)
    }
    this.timer = setInterval(() => void this.antiEntropy(), antiEntropyMs)
    this.timer.unref()
  }

  private get ns(): string {
    return `kv-eventual/${this.shard}`
  }

  get revision(): number {
    return this.changes
  }

  put(key: string, value: string): KvResult {
    KvState.check({ op: 'put', key, value })
    return this.local(key, value)
  }

  delete(key: string): KvResult {
    KvState.check({ op: 'delete', key })
    return this.local(key, null)
  }

  get(key: string): KvEntry | undefined {
    KvState.check({ op: 'delete', key })
    return this.view(this.entries.get(key))
  }

  scan(scan: KvScan): KvEntry[] {
    const limit = scan.limit ?? KV_LIMITS.scanLimit
    if (!Number.isInteger(limit) || limit < 1 || limit > KV_LIMITS.scanLimit)
      throw new KvCommandError('limit', `must be a whole number from 1 to ${KV_LIMITS.scanLimit}, got ${limit}`)
    const inside = 'prefix' in scan ? (k: string) => k.startsWith(scan.prefix) : (k: string) => k >= scan.from && (scan.to === undefined || k < scan.to)
    return [...this.entries.values()]
      .filter((e) => e.value !== null && inside(e.key))
      .sort((a, b) => (a.key < b.key ? -1 : 1))
      .slice(0, limit)
      .map((e) => this.view(e)!)
  }

  /** Every entry, tombstones included, in key order: what must be equal on every replica once they converge. */
  dump(): EventualEntry[] {
    return [...this.entries.values()].sort((a, b) => (a.key < b.key ? -1 : 1))
  }

  /** Merges entries from another replica: of each key, the greater stamp wins. Returns how many changed here. */
  merge(entries: readonly EventualEntry[]): number {
    let changed = 0
    this.store.transaction((tx) => {
      for (const e of entries) {
        this.observe(e.hlc)
        const mine = this.entries.get(e.key)
        if (mine !== undefined && compareHlc(mine.hlc, e.hlc) >= 0) continue
        this.entries.set(e.key, e)
        tx.put(this.ns, e.key, JSON.stringify(e))
        changed++
      }
    })
    this.changes += changed
    return changed
  }

  /** One hash per bucket of keys. */
  digest(): string[] {
    const hashes = Array.from({ length: BUCKETS }, () => createHash('sha1'))
    for (const e of this.dump()) hashes[bucketOf(e.key)]!.update(`${e.key}\u0000${e.hlc.join(':')}\u0000`)
    return hashes.map((h) => h.digest('base64'))
  }

  /** Answers another replica's digest: my entries of the buckets that differ, and those buckets (so it sends me its own). */
  answer(digest: readonly string[]): { entries: EventualEntry[]; want: number[] } {
    const mine = this.digest()
    const want = mine.flatMap((h, i) => (h !== digest[i] ? [i] : []))
    const differ = new Set(want)
    return { entries: this.dump().filter((e) => differ.has(bucketOf(e.key))), want }
  }

  /** One round of anti-entropy with each other replica. */
  async antiEntropy(): Promise<void> {
    if (this.stopped) return
    for (const peer of this.peers.others()) {
      try {
        const { entries, want } = await this.peers.exchange(peer, this.digest())
        this.merge(entries)
        if (want.length > 0) {
          const wanted = new Set(want)
          await this.peers.push(
            peer,
            this.dump().filter((e) => wanted.has(bucketOf(e.key))),
          )
        }
        if (this.unreachable.delete(peer)) this.logger.info(`kv ${this.shard}: anti-entropy reaches ${peer} again`)
      } catch (error) {
        // Unreachable now (a partition, a restart): the next round tries again.
        if (!this.unreachable.has(peer)) this.logger.info(`kv ${this.shard}: anti-entropy cannot reach ${peer}: ${error instanceof Error ? error.message : String(error)}`)
        this.unreachable.add(peer)
      }
    }
  }

  stop(): void {
    this.stopped = true
    clearInterval(this.timer)
  }

  private local(key: string, value: string | null): KvResult {
    const prev = this.view(this.entries.get(key))
    const entry: EventualEntry = { key, value, hlc: this.tick() }
    this.merge([entry])
    for (const peer of this.peers.others()) this.peers.push(peer, [entry]).catch(() => undefined) // anti-entropy repairs a lost push
    return { ok: true, revision: this.changes, prev }
  }

  private view(e: EventualEntry | undefined): KvEntry | undefined {
    if (e === undefined || e.value === null) return undefined
    // Revisions are not comparable across replicas in this mode: the stamp's time stands in.
    return { key: e.key, value: e.value, createRevision: 0, modRevision: e.hlc[0], version: 0 }
  }

  /** A stamp for a local write. */
  private tick(): Hlc {
    const now = Date.now()
    if (now > this.wall) {
      this.wall = now
      this.counter = 0
    } else this.counter++
    return [this.wall, this.counter, this.id]
  }

  /** Moves the clock past a stamp seen from another replica (or from disk). */
  private observe(hlc: Hlc): void {
    if (hlc[0] > this.wall) {
      this.wall = hlc[0]
      this.counter = hlc[1]
    } else if (hlc[0] === this.wall && hlc[1] > this.counter) this.counter = hlc[1]
  }
}
