// The checkpoint store on one peer: snapshots, complete checkpoints and sink commits, kept in the embedded store (kmods/store).

import { statSync } from 'node:fs'
import { resolve } from 'node:path'
import { openStore, type Store } from '../../kmods/store/index.js'
import { idKey, type CheckpointId, type Completed } from './protocol.js'

const SNAPSHOTS = 'checkpoint.snapshot'
const COMPLETED = 'checkpoint.completed'
const COMMITS = 'checkpoint.commit'
/** Complete checkpoints kept as savepoints, on the peer that coordinated their job. */
const SAVEPOINTS = 'checkpoint.savepoint'
/** Checkpoints whose snapshots a peer keeps for a savepoint (on every peer of the job). */
const RETAINED = 'checkpoint.retained'

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

  /** Lineages collected by this connection: a snapshot of one that arrives late is not stored. */
  private readonly ended = new Set<string>()

  /** Stores a snapshot (JSON text); not one of a lineage already collected. */
  put(lineage: string, id: CheckpointId, key: string, value: string): void {
    if (this.ended.has(lineage)) return
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

  /** Keeps the snapshots of checkpoint `id` here: neither `collect` after newer checkpoints nor `collectLineage` removes them. */
  retain(lineage: string, id: number): void {
    this.store.put(RETAINED, `${lineage}/${idKey(id)}`, '1')
  }

  /** Whether checkpoint `id`'s snapshots are kept for a savepoint. */
  retained(lineage: string, id: number): boolean {
    return this.store.get(RETAINED, `${lineage}/${idKey(id)}`) !== undefined
  }

  /** Records a complete checkpoint as a savepoint (on the coordinating peer): a later job starts from it. */
  recordSavepoint(lineage: string, completed: Completed): void {
    this.store.put(SAVEPOINTS, `${lineage}/${idKey(completed.id)}`, JSON.stringify(completed))
  }

  /** A savepoint recorded here, or undefined. */
  savepoint(lineage: string, id: number): Completed | undefined {
    const value = this.store.get(SAVEPOINTS, `${lineage}/${idKey(id)}`)
    return typeof value === 'string' ? (JSON.parse(value) as Completed) : undefined
  }

  /** The checkpoint ids of a lineage's savepoints recorded here, oldest first. */
  savepoints(lineage: string): number[] {
    return this.store.keys(SAVEPOINTS, `${lineage}/`).map((key) => Number(key.slice(lineage.length + 1)))
  }

  /**
   * A lineage's job succeeded: deletes, in one transaction, its snapshots, complete-checkpoint
   * records and sink commits, but not what a savepoint needs (the retained checkpoints' snapshots,
   * the final snapshots of instances that had finished by then, and the savepoint records). A
   * snapshot of the lineage that arrives later is not stored. Returns how many entries went.
   */
  collectLineage(lineage: string): number {
    this.ended.add(lineage)
    return this.store.transaction((tx) => {
      const kept = new Set(tx.keys(RETAINED, `${lineage}/`).map((key) => key.slice(lineage.length + 1)))
      let removed = 0
      if (kept.size === 0) removed += tx.deletePrefix(SNAPSHOTS, `${lineage}/`)
      else {
        kept.add(idKey('final'))
        const ids = new Set(tx.keys(SNAPSHOTS, `${lineage}/`).map((key) => key.slice(lineage.length + 1, key.indexOf('/', lineage.length + 1))))
        for (const id of ids) if (!kept.has(id)) removed += tx.deletePrefix(SNAPSHOTS, `${lineage}/${id}/`)
      }
      removed += tx.deletePrefix(COMPLETED, `${lineage}/`)
      removed += tx.deletePrefix(COMMITS, `${lineage}/`)
      return removed
    })
  }
}

/**
 * The connection this process keeps to each checkpoint store file, by its absolute path, with the
 * file it opened (device and inode).
 *
 * One per file and process, not one per layer value: a layer value has no end at which it could
 * close one, and a peer builds a new one for every job share it runs (a program module's
 * `layers(args)` is called again for each attempt), so connections owned by layer values piled up
 * on the surviving peers, two descriptors (`checkpoints.db` and its `-wal`) per recovery. What is
 * shared is only the connection to a file that is shared anyway; what the layer keeps in memory
 * stays with each layer value. A connection is used only synchronously (better-sqlite3), so the
 * transactions of two users never interleave.
 */
const connections = new Map<string, { readonly store: Store; readonly snapshots: SnapshotStore; readonly file: string | undefined }>()

/** The device and inode of the file at `path`, or undefined when there is none. */
function fileAt(path: string): string | undefined {
  try {
    const stats = statSync(path, { bigint: true })
    return `${stats.dev}:${stats.ino}`
  } catch {
    return undefined
  }
}

/**
 * The checkpoint stores of one checkpoints layer: the store in a directory is this process's one
 * connection to its `checkpoints.db`, opened on first use and kept for the process's life, shared
 * by every layer value that uses that directory (every attempt of every job on this peer).
 */
export class SnapshotStores {
  /**
   * The store in `dir`. A connection whose file was removed or replaced since it was opened (a
   * deleted directory used again) is closed and the file opened again, so writes never go to a
   * file that is gone.
   */
  at(dir: string): SnapshotStore {
    const path = resolve(dir, 'checkpoints.db')
    const known = connections.get(path)
    if (known !== undefined && !known.store.closed && known.file !== undefined && known.file === fileAt(path)) return known.snapshots
    known?.store.close()
    // `normal` durability: a killed process loses nothing committed (WAL); only a power loss may
    // lose the newest checkpoint, which recovery then skips (it restores the one before).
    const store = openStore(path, { durability: 'normal' })
    const snapshots = new SnapshotStore(store)
    connections.set(path, { store, snapshots, file: fileAt(path) })
    return snapshots
  }
}
