// Tests of the embedded store: persistence, namespaces, prefixes, transactions, concurrent connections.
import { fork } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openStore, prefixEnd, type Store } from './index.js'

let dir: string
const open: Store[] = []
const storeAt = (name = 'test.db'): Store => {
  const store = openStore(join(dir, name))
  open.push(store)
  return store
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lamina-store-'))
})
afterEach(() => {
  for (const store of open.splice(0)) store.close()
  rmSync(dir, { recursive: true, force: true })
})

describe('openStore', () => {
  it('keeps strings and bytes, each with its type, across close and reopen', () => {
    const a = storeAt()
    a.put('identity', 'key', new Uint8Array([1, 2, 3, 255]))
    a.put('identity', 'name', 'peer-a')
    a.put('other', 'key', 'x')
    a.close()
    expect(a.closed).toBe(true)
    const b = storeAt()
    const bytes = b.get('identity', 'key')
    expect(bytes).toBeInstanceOf(Uint8Array)
    expect(Array.from(bytes as Uint8Array)).toEqual([1, 2, 3, 255])
    expect(b.get('identity', 'name')).toBe('peer-a')
    expect(b.get('other', 'key')).toBe('x')
    expect(b.get('identity', 'missing')).toBeUndefined()
  })

  it('uses WAL mode, and a read-only connection reads what another wrote', () => {
    storeAt().put('n', 'k', 'v')
    expect(existsSync(join(dir, 'test.db-wal'))).toBe(true)
    const reader = openStore(join(dir, 'test.db'), { readonly: true })
    open.push(reader)
    expect(reader.get('n', 'k')).toBe('v')
  })

  it('overwrites, deletes and lists by prefix in key order', () => {
    const s = storeAt()
    for (const key of ['b/2', 'a/1', 'b/1', 'b', 'c', 'b/10']) s.put('ns', key, key.toUpperCase())
    s.put('ns', 'a/1', 'again')
    s.put('other', 'b/3', 'not listed')
    expect(s.list('ns').map((e) => e.key)).toEqual(['a/1', 'b', 'b/1', 'b/10', 'b/2', 'c'])
    expect(s.list('ns', 'b/')).toEqual([
      { key: 'b/1', value: 'B/1' },
      { key: 'b/10', value: 'B/10' },
      { key: 'b/2', value: 'B/2' },
    ])
    expect(s.get('ns', 'a/1')).toBe('again')
    expect(s.delete('ns', 'a/1')).toBe(true)
    expect(s.delete('ns', 'a/1')).toBe(false)
    expect(s.list('ns', 'a')).toEqual([])
  })

  it('lists by prefix exactly like a filter, for any keys (property)', () => {
    const s = storeAt()
    fc.assert(
      fc.property(fc.uniqueArray(fc.string({ unit: 'grapheme', maxLength: 4 }), { maxLength: 20 }), fc.string({ unit: 'grapheme', maxLength: 2 }), (keys, prefix) => {
        s.transaction((tx) => {
          for (const e of tx.list('p')) tx.delete('p', e.key)
          for (const k of keys) tx.put('p', k, k)
        })
        const expected = keys.filter((k) => k.startsWith(prefix)).sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)))
        expect(s.list('p', prefix).map((e) => e.key)).toEqual(expected)
      }),
      { numRuns: 200 },
    )
    expect(prefixEnd('\u{10FFFF}')).toBeUndefined()
    expect(prefixEnd('a\u{10FFFF}')).toBe('b')
    expect(prefixEnd('\uD7FF')).toBe('\uE000')
  })

  it('commits a transaction whole, and rolls it back whole when it throws', () => {
    const s = storeAt()
    s.put('kv', 'balance', '10')
    const result = s.transaction((tx) => {
      tx.put('kv', 'a', '1')
      tx.put('kv', 'b', '2')
      return 'ok'
    })
    expect(result).toBe('ok')
    class Boom extends Error {}
    expect(() =>
      s.transaction((tx) => {
        tx.put('kv', 'balance', '0')
        tx.delete('kv', 'a')
        // A nested transaction is a savepoint: rolled back with its parent.
        s.transaction((inner) => inner.put('kv', 'c', '3'))
        throw new Boom('stop')
      }),
    ).toThrow(Boom)
    expect(s.list('kv')).toEqual([
      { key: 'a', value: '1' },
      { key: 'b', value: '2' },
      { key: 'balance', value: '10' },
    ])
    s.close()
    expect(storeAt().get('kv', 'balance')).toBe('10')
  })

  it('refuses an asynchronous transaction function and rolls it back', () => {
    const s = storeAt()
    expect(() =>
      s.transaction(async (tx) => {
        tx.put('kv', 'a', '1')
      }),
    ).toThrow(expect.objectContaining({ code: 'ERR_STORE_ASYNC_TRANSACTION' }))
    expect(s.get('kv', 'a')).toBeUndefined()
  })

  it('gives typed errors: closed store, bad arguments, not a database', () => {
    const s = storeAt()
    s.close()
    s.close()
    expect(() => s.get('a', 'b')).toThrow(expect.objectContaining({ code: 'ERR_STORE_CLOSED', name: 'StoreClosedError' }))
    const t = storeAt('t.db')
    expect(() => t.put('', 'k', 'v')).toThrow(expect.objectContaining({ code: 'ERR_STORE_ARGUMENT' }))
    expect(() => t.put('n', 'k', 42 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_STORE_ARGUMENT', message: expect.stringContaining('got number') }))
    const garbage = join(dir, 'garbage.db')
    writeFileSync(garbage, 'this is not a database, just text that is long enough to have a header: '.repeat(20))
    expect(() => openStore(garbage)).toThrow(expect.objectContaining({ code: 'ERR_STORE_OPEN', message: expect.stringContaining(garbage) }))
  })

  it('two connections in one process see each other, and closing one leaves the other working', () => {
    const a = storeAt()
    const b = storeAt()
    a.put('n', 'from-a', '1')
    b.put('n', 'from-b', '2')
    expect(b.get('n', 'from-a')).toBe('1')
    expect(a.get('n', 'from-b')).toBe('2')
    a.close()
    b.transaction((tx) => tx.put('n', 'after', '3'))
    expect(
      storeAt()
        .list('n')
        .map((e) => e.key),
    ).toEqual(['after', 'from-a', 'from-b'])
  })

  it('another process writes while this one writes and reopens: nothing is lost', async () => {
    const path = join(dir, 'shared.db')
    const s = openStore(path)
    open.push(s)
    const child = fork(fileURLToPath(new URL('./fixtures/writer.ts', import.meta.url)), [path, 'child', '2000'], { execArgv: ['--import', 'tsx'], stdio: 'inherit' })
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    try {
      // Write, close and reopen repeatedly while the child writes its own keys.
      let current = s
      for (let round = 0; round < 20; round++) {
        for (let i = 0; i < 50; i++) current.put('parent', `r${round}-${i}`, 'v')
        current.close()
        current = openStore(path)
        open.push(current)
      }
      expect(await exited).toBe(0)
      expect(current.list('parent')).toHaveLength(1000)
      const childKeys = current.list('child')
      expect(childKeys).toHaveLength(2000)
      expect(childKeys[1999]).toEqual({ key: 'k001999', value: 'child-1999' })
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL')
    }
  })
})
