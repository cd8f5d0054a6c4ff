// The checkpoint store on one peer: snapshots, complete checkpoints and sink commits, kept in the embedded store (kmods/store).

import { join } from 'node:path'
import { openStore, type Store } from '../../kmods/store/index.js'
import { idKey, type CheckpointId, type Completed } from './protocol.js'

const SNAPSHOTS = 'checkpoint.snapshot'
const COMPLETED = 'checkpoint.completed'
const COMMITS = 'checkpoint.commit'

/**
 * What the checkpoints layer keeps durably on a peer, in `checkpoints.db` of its directory:
 * snapshots by `lineage/checkpoint/instance`, the newest two complete checkpoints of each job
 * (on its coordinating peer), and the last checkpoint each sink instance committed.
 */
export class SnapshotStore {
  constructor(private readonly store: Store) {}

  /** True once the underlying store was closed (it is then opened again). */
  get closed(): boolean {
    return this.store.closed
  }

  /** Stores a snapshot (JSON text). */
  put(lineage: string, id: CheckpointId, key: string, value: string): void {
    this.store.put(SNAPSHOTS, `${lineage}/${idKey(id)}/${key}`, value)
  }

  /** A snapshot stored here, or undefined. */
  get(lineage: string, id: CheckpointId, key: string): string | undefined {
    const value = this.store.get(SNAPSHOTS, `${lineage}/${idKey(id)}/${key}`)
    return typeof value === 'string' ? value : undefined
  }

  /** Deletes the snapshots of checkpoint `id` under these instance keys, in one transaction. */
  collect(lineage: string, id: number, keys: readonly string[]): void {
    this.store.transaction((tx) => {
      for (const key of keys) tx.delete(SNAPSHOTS, `${lineage}/${idKey(id)}/${key}`)
    })
  }

  /** The newest complete checkpoint of a job recorded here (by its coordinator), if any. */
  latest(lineage: string): Completed | undefined {
    const last = this.store.list(COMPLETED, `${lineage}/`).at(-1)
    return last === undefined ? undefined : (JSON.parse(String(last.value)) as Completed)
  }

  /**
   * Records a complete checkpoint, keeping the newest two: the one before stays until every peer
   * collected its snapshots.
   */
  recordCompleted(lineage: string, completed: Completed): void {
    this.store.transaction((tx) => {
      tx.put(COMPLETED, `${lineage}/${idKey(completed.id)}`, JSON.stringify(completed))
      for (const old of tx.list(COMPLETED, `${lineage}/`).slice(0, -2)) tx.delete(COMPLETED, old.key)
    })
  }

  /** The last checkpoint a sink instance committed (0 when none). */
  committed(lineage: string, key: string): number {
    const value = this.store.get(COMMITS, `${lineage}/${key}`)
    return typeof value === 'string' ? Number(value) : 0
  }

  /** Records that a sink instance wrote everything up to checkpoint `id` (never moves back). */
  recordCommit(lineage: string, key: string, id: number): void {
    if (id > this.committed(lineage, key)) this.store.put(COMMITS, `${lineage}/${key}`, String(id))
  }
}

/**
 * The checkpoint stores one checkpoints layer opened: one connection per file, kept while the
 * layer lives (its jobs, and the attempts after them, use the same one). Two layers, in two stacks
 * of one process, keep separate connections.
 */
export class SnapshotStores {
  private readonly open = new Map<string, SnapshotStore>()

  /** The store in `dir`, opened on first use. */
  at(dir: string): SnapshotStore {
    const path = join(dir, 'checkpoints.db')
    let store = this.open.get(path)
    if (store === undefined || store.closed) {
      // `normal` durability: a killed process loses nothing committed (WAL); only a power loss may
      // lose the newest checkpoint, which recovery then skips (it restores the one before).
      store = new SnapshotStore(openStore(path, { durability: 'normal' }))
      this.open.set(path, store)
    }
    return store
  }
}
