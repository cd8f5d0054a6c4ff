// A Raft node's state in a real SQLite file: saved per ready(), read back after the store is
// closed and opened again, with conflicting suffixes replaced and unreadable records named.

import { fork } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { openStore, type Store } from '../store/index.js'
import { RaftNode, RaftStorage, RaftStorageError, type Message } from './index.js'

const dirs: string[] = []
const stores: Store[] = []
function open(dir: string, name: string): Store {
  const store = openStore(join(dir, `${name}.db`))
  stores.push(store)
  return store
}
afterEach(() => {
  for (const s of stores.splice(0)) s.close()
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-raft-'))
  dirs.push(dir)
  return dir
}

describe('Raft storage in SQLite', () => {
  it('a group of 3 whose stores are closed and reopened restarts with its logs, votes and commits', () => {
    const dir = tempDir()
    const members = ['a', 'b', 'c']
    let storages = members.map((id) => new RaftStorage(open(dir, id), 'g'))
    let nodes = members.map((id, i) => new RaftNode({ id, members, random: () => i / 3, restore: storages[i]!.load() }))
    const applied = new Map<string, (string | null)[]>(members.map((id) => [id, []]))
    const run = (rounds: number, each?: () => void): void => {
      for (let r = 0; r < rounds; r++) {
        for (const n of nodes) n.tick()
        each?.()
        let flight: Message[] = []
        for (let hop = 0; hop < 4; hop++) {
          nodes.forEach((n, i) => {
            const ready = n.ready()
            storages[i]!.save(ready)
            flight.push(...ready.messages)
            applied.get(n.id)!.push(...ready.committed.map((e) => e.data))
          })
          const now = flight
          flight = []
          for (const m of now) nodes[members.indexOf(m.to)]!.step(m)
        }
      }
    }
    let proposed = 0
    run(60, () => {
      const leader = nodes.find((n) => n.role === 'leader')
      if (leader !== undefined && proposed < 20) leader.propose(`c${proposed++}`)
    })
    expect(proposed).toBe(20)
    const before = nodes.map((n) => ({ term: n.term, commit: n.commitIndex, entries: n.entries() }))
    expect(before.every((b) => b.commit === b.entries.length)).toBe(true)
    // Every store closed (as a process exit would) and opened again.
    for (const s of stores.splice(0)) s.close()
    storages = members.map((id) => new RaftStorage(open(dir, id), 'g'))
    nodes = members.map((id, i) => new RaftNode({ id, members, restore: storages[i]!.load() }))
    nodes.forEach((n, i) => {
      expect(n.term).toBe(before[i]!.term)
      expect(n.entries()).toEqual(before[i]!.entries)
      expect(n.commitIndex).toBe(before[i]!.commit)
    })
    // The committed commands come out again for a state machine that starts empty.
    for (const id of members) applied.set(id, [])
    run(40, () => {
      const leader = nodes.find((n) => n.role === 'leader')
      if (leader !== undefined && proposed === 20) leader.propose(`c${proposed++}`)
    })
    const commands = Array.from({ length: 21 }, (_, i) => `c${i}`)
    for (const id of members) expect(applied.get(id)!.filter((d) => d !== null)).toEqual(commands)
  })

  it('what save() returned from survives a SIGKILL of the process, 3 times over', async () => {
    const dir = tempDir()
    const path = join(dir, 'killed.db')
    let acknowledged = 0
    for (let round = 0; round < 3; round++) {
      const child = fork(fileURLToPath(new URL('./fixtures/saver.ts', import.meta.url)), [path], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
      const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)))
      // Killed at a different point each round, mid-stream.
      const target = acknowledged + 50 + round * 37
      try {
        await new Promise<void>((resolve, reject) => {
          child.on('message', (m: { saved: number }) => {
            acknowledged = Math.max(acknowledged, m.saved)
            if (m.saved >= target) resolve()
          })
          void exited.then((signal) => reject(new Error(`the saver exited (${signal}) before index ${target}`)))
        })
        child.kill('SIGKILL')
        expect(await exited).toBe('SIGKILL')
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      }
      const store = open(dir, 'killed')
      const { hardState, entries } = new RaftStorage(store, 'g').load()
      store.close()
      // Everything acknowledged is there, contiguous, with the hard state of the last round saved.
      // (A SIGKILL leaves the OS's page cache: this checks that a returned save is committed and
      // whole, not that it reached the disk, which SQLite's synchronous=FULL is there for.)
      expect(entries.length).toBeGreaterThanOrEqual(acknowledged)
      expect(entries.every((e, i) => e.index === i + 1 && e.term === i + 1)).toBe(true)
      expect(hardState.term).toBe(entries.length)
    }
  }, 60_000)

  it('replaces a conflicting suffix, and names the group when a record cannot be read', () => {
    const dir = tempDir()
    const store = open(dir, 'x')
    const storage = new RaftStorage(store, 'g1')
    storage.save({
      hardState: { term: 2, votedFor: 'b', commit: 1 },
      persist: {
        from: 1,
        entries: [
          { index: 1, term: 1, data: 'a' },
          { index: 2, term: 1, data: 'b' },
          { index: 3, term: 1, data: 'c' },
        ],
      },
    })
    storage.save({ hardState: undefined, persist: { from: 2, entries: [{ index: 2, term: 2, data: 'B' }] } })
    expect(new RaftStorage(store, 'g1').load()).toEqual({
      hardState: { term: 2, votedFor: 'b', commit: 1 },
      snapshot: undefined,
      entries: [
        { index: 1, term: 1, data: 'a' },
        { index: 2, term: 2, data: 'B' },
      ],
    })
    // A snapshot through index 1 replaces entry 1, in the same transaction.
    storage.save({ snapshot: { index: 1, term: 1, data: '["a"]', install: false } })
    expect(new RaftStorage(store, 'g1').load()).toEqual({
      hardState: { term: 2, votedFor: 'b', commit: 1 },
      snapshot: { index: 1, term: 1, data: '["a"]' },
      entries: [{ index: 2, term: 2, data: 'B' }],
    })
    expect(store.keys('raft/g1', 'e/')).toEqual(['e/0000000000000002'])
    // Another group in the same file is separate.
    expect(new RaftStorage(store, 'g2').load().entries).toEqual([])
    store.put('raft/g1', 'e/0000000000000002', 'not json')
    expect(() => new RaftStorage(store, 'g1')).toThrow(RaftStorageError)
    expect(() => new RaftStorage(store, 'g1')).toThrow(/raft group "g1": stored state unreadable: record e\/0000000000000002 is not JSON/)
    store.delete('raft/g1', 'e/0000000000000002')
    store.put('raft/g1', 'e/0000000000000004', JSON.stringify({ term: 2, data: 'c' }))
    expect(() => new RaftStorage(store, 'g1')).toThrow(/entry 2 is missing \(found e\/0000000000000004 in its place\)/)
  })
})
