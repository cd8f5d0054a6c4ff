// A Raft node's durable state in the embedded store (kmods/store, SQLite with synchronous=FULL by
// default): the hard state and the log of one group, written in one transaction per `ready()`, so
// that one fsync covers every entry and vote of a round (group commit).

import type { Store } from '../store/index.js'
import { RaftStorageError } from './errors.js'
import type { Entry, HardState, Ready, Snapshot } from './raft.js'

/** Width of an index as a store key: keys sort as the indexes do. */
const WIDTH = 16

const indexKey = (index: number): string => String(index).padStart(WIDTH, '0')

/**
 * Where one group's node keeps what it must not lose: namespace `raft/<group>` of `store`, with
 * the hard state under `hard` and entry `i` under `e/<i, zero-padded>`.
 *
 * ```ts
 * const storage = new RaftStorage(openStore(`${workdir}/raft.db`), 'kv-0')
 * const node = new RaftNode({ id, members, restore: storage.load() })
 * const ready = node.ready()
 * storage.save(ready)   // durable before ready.messages are sent
 * ```
 */
export class RaftStorage {
  private readonly ns: string
  private last: number
  private first: number

  constructor(
    private readonly store: Store,
    readonly group: string,
  ) {
    this.ns = `raft/${group}`
    const { snapshot, entries } = this.load()
    this.first = (snapshot?.index ?? 0) + 1
    this.last = this.first - 1 + entries.length
  }

  /**
   * The stored hard state, snapshot and the entries after it, checked: a gap or a bad record throws
   * RaftStorageError. Pass it as a node's `restore`; load `snapshot.data` into the state machine.
   */
  load(): { hardState: HardState; entries: Entry[]; snapshot: Snapshot | undefined } {
    const hard = this.store.get(this.ns, 'hard')
    const hardState = hard === undefined ? { term: 0, votedFor: null, commit: 0 } : (this.parse('hard', hard) as HardState)
    const snap = this.store.get(this.ns, 'snap')
    const snapshot = snap === undefined ? undefined : (this.parse('snap', snap) as Snapshot)
    const base = snapshot?.index ?? 0
    const entries = this.store.list(this.ns, 'e/').map(({ key, value }, i): Entry => {
      const index = Number(key.slice(2))
      if (index !== base + i + 1) throw new RaftStorageError(this.group, `entry ${base + i + 1} is missing (found ${key} in its place)`)
      const { term, data, config, learners } = this.parse(key, value) as { term: number; data: string | null; config?: Record<string, string>; learners?: string[] }
      if (config === undefined) return { index, term, data }
      return learners === undefined ? { index, term, data, config } : { index, term, data, config, learners }
    })
    return { hardState, entries, snapshot }
  }

  /** Makes what `ready` asks to persist durable, in one transaction. Call before sending its messages. */
  save(ready: Partial<Pick<Ready, 'hardState' | 'persist' | 'snapshot'>>): void {
    const { hardState, persist, snapshot } = ready
    if (hardState === undefined && persist === undefined && snapshot === undefined) return
    this.store.transaction((tx) => {
      if (hardState !== undefined) tx.put(this.ns, 'hard', JSON.stringify(hardState))
      if (snapshot !== undefined) {
        // The snapshot replaces the entries it covers, in the same transaction.
        tx.put(this.ns, 'snap', JSON.stringify({ index: snapshot.index, term: snapshot.term, data: snapshot.data, config: snapshot.config, learners: snapshot.learners }))
        for (let i = this.first; i <= Math.min(snapshot.index, this.last); i++) tx.delete(this.ns, `e/${indexKey(i)}`)
      }
      if (persist === undefined) return
      // Entries from `from` on are replaced: a conflicting suffix goes (rare; appends skip this).
      for (let i = persist.from; i <= this.last; i++) tx.delete(this.ns, `e/${indexKey(i)}`)
      for (const e of persist.entries) tx.put(this.ns, `e/${indexKey(e.index)}`, JSON.stringify({ term: e.term, data: e.data, config: e.config, learners: e.learners }))
    })
    if (snapshot !== undefined) {
      this.first = snapshot.index + 1
      this.last = Math.max(this.last, snapshot.index)
    }
    if (persist !== undefined) this.last = persist.from - 1 + persist.entries.length
  }

  private parse(key: string, value: string | Uint8Array): unknown {
    try {
      return JSON.parse(typeof value === 'string' ? value : new TextDecoder().decode(value))
    } catch (error) {
      throw new RaftStorageError(this.group, `record ${key} is not JSON`, { cause: error })
    }
  }
}
