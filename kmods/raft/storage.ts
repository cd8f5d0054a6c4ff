// A Raft node's durable state in the embedded store (kmods/store, SQLite with synchronous=FULL by
// default): the hard state and the log of one group, written in one transaction per `ready()`, so
// that one fsync covers every entry and vote of a round (group commit).

import type { Store } from '../store/index.js'
import { RaftStorageError } from './errors.js'
import type { Entry, HardState, Ready } from './raft.js'

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

  constructor(
    private readonly store: Store,
    readonly group: string,
  ) {
    this.ns = `raft/${group}`
    this.last = this.load().entries.length
  }

  /** The stored hard state and entries (indexes 1, 2, …), checked: a gap or a bad record throws RaftStorageError. */
  load(): { hardState: HardState; entries: Entry[] } {
    const hard = this.store.get(this.ns, 'hard')
    const hardState = hard === undefined ? { term: 0, votedFor: null, commit: 0 } : (this.parse('hard', hard) as HardState)
    const entries = this.store.list(this.ns, 'e/').map(({ key, value }, i): Entry => {
      const index = Number(key.slice(2))
      if (index !== i + 1) throw new RaftStorageError(this.group, `entry ${i + 1} is missing (found ${key} in its place)`)
      const { term, data } = this.parse(key, value) as { term: number; data: string | null }
      return { index, term, data }
    })
    return { hardState, entries }
  }

  /** Makes what `ready` asks to persist durable, in one transaction. Call before sending its messages. */
  save(ready: Pick<Ready, 'hardState' | 'persist'>): void {
    const { hardState, persist } = ready
    if (hardState === undefined && persist === undefined) return
    this.store.transaction((tx) => {
      if (hardState !== undefined) tx.put(this.ns, 'hard', JSON.stringify(hardState))
      if (persist === undefined) return
      // Entries from `from` on are replaced: a conflicting suffix goes (rare; appends skip this).
      for (let i = persist.from; i <= this.last; i++) tx.delete(this.ns, `e/${indexKey(i)}`)
      for (const e of persist.entries) tx.put(this.ns, `e/${indexKey(e.index)}`, JSON.stringify({ term: e.term, data: e.data }))
    })
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
