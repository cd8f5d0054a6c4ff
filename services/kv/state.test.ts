// The KV state machine: revisions, compare-and-set, scans, watch history and its compaction,
// snapshots, limits and malformed commands, and replicas that agree when they apply one log.

import { describe, expect, it } from 'vitest'
import { seededRandom } from '../../kernel/index.js'
import { KV_LIMITS, KvCommandError, KvCompactedError, KvLimitError, KvState } from './index.js'

describe('the KV state machine', () => {
  it('counts revisions per store and per key, as etcd does', () => {
    const kv = new KvState()
    expect(kv.apply({ op: 'put', key: 'a', value: '1' })).toEqual({ ok: true, revision: 1, prev: undefined })
    kv.apply({ op: 'put', key: 'b', value: '2' })
    const second = kv.apply({ op: 'put', key: 'a', value: '3' })
    expect(second.prev).toEqual({ key: 'a', value: '1', createRevision: 1, modRevision: 1, version: 1 })
    expect(kv.get('a')).toEqual({ key: 'a', value: '3', createRevision: 1, modRevision: 3, version: 2 })
    expect(kv.apply({ op: 'delete', key: 'a' }).revision).toBe(4)
    expect(kv.get('a')).toBeUndefined()
    // Deleting a missing key writes nothing.
    expect(kv.apply({ op: 'delete', key: 'a' })).toEqual({ ok: true, revision: 4, prev: undefined })
    // A key created again starts a new life.
    kv.apply({ op: 'put', key: 'a', value: '5' })
    expect(kv.get('a')).toMatchObject({ createRevision: 5, modRevision: 5, version: 1 })
  })

  it('compare-and-set on the value, on the revision, or on absence (revision 0)', () => {
    const kv = new KvState()
    expect(kv.apply({ op: 'cas', key: 'lock', value: 'me', ifModRevision: 0 })).toMatchObject({ ok: true, revision: 1 })
    expect(kv.apply({ op: 'cas', key: 'lock', value: 'you', ifModRevision: 0 })).toMatchObject({ ok: false, revision: 1 })
    expect(kv.apply({ op: 'cas', key: 'lock', value: 'you', ifValue: 'them' })).toMatchObject({ ok: false })
    expect(kv.apply({ op: 'cas', key: 'lock', value: 'you', ifValue: 'me', ifModRevision: 1 })).toMatchObject({ ok: true, revision: 2 })
    expect(kv.get('lock')?.value).toBe('you')
  })

  it('scans a prefix or a range in key order, a page at a time', () => {
    const kv = new KvState()
    for (const k of ['b/2', 'a/1', 'b/1', 'c', 'b/3']) kv.apply({ op: 'put', key: k, value: k })
    expect(kv.scan({ prefix: 'b/' }).map((e) => e.key)).toEqual(['b/1', 'b/2', 'b/3'])
    expect(kv.scan({ prefix: 'b/', limit: 2 }).map((e) => e.key)).toEqual(['b/1', 'b/2'])
    expect(kv.scan({ from: 'a/1', to: 'b/3' }).map((e) => e.key)).toEqual(['a/1', 'b/1', 'b/2'])
    expect(kv.scan({ from: 'b/3' }).map((e) => e.key)).toEqual(['b/3', 'c'])
    expect(() => kv.scan({ prefix: '', limit: KV_LIMITS.scanLimit + 1 })).toThrow(KvLimitError)
  })

  it('keeps the events a watch resumes from, and says so when they are compacted instead of skipping them', () => {
    const kv = new KvState(3)
    for (let i = 1; i <= 5; i++) kv.apply({ op: 'put', key: `k${i}`, value: String(i) })
    expect(kv.eventsAfter(2).map((e) => e.revision)).toEqual([3, 4, 5])
    expect(kv.eventsAfter(5)).toEqual([])
    let error: unknown
    try {
      kv.eventsAfter(1)
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(KvCompactedError)
    expect(error).toMatchObject({ code: 'ERR_KV_COMPACTED', revision: 2, oldest: 3, retryable: false })
  })

  it('refuses malformed commands and broken limits with typed errors naming the field, and changes nothing', () => {
    const kv = new KvState()
    kv.apply({ op: 'put', key: 'a', value: '1' })
    expect(() => kv.apply({ op: 'put', key: 'a', value: 7 })).toThrow(KvCommandError)
    expect(() => kv.apply({ op: 'put', key: 'a', value: 7 })).toThrow(/command field value/)
    expect(() => kv.apply({ op: 'rename', key: 'a' })).toThrow(/command field op/)
    expect(() => kv.apply({ op: 'put', key: '', value: 'x' })).toThrow(/command field key: must not be empty/)
    expect(() => kv.apply({ op: 'put', key: 'k'.repeat(KV_LIMITS.keyBytes + 1), value: 'x' })).toThrow(KvLimitError)
    expect(() => kv.apply({ op: 'put', key: 'a', value: 'é'.repeat(KV_LIMITS.valueBytes / 2 + 1) })).toThrow(/value is 262146 bytes/)
    expect(kv.revision).toBe(1)
    expect(kv.get('a')?.value).toBe('1')
  })

  it('replicas applying one log agree, and a replica loaded from a snapshot goes on like the others', () => {
    const random = seededRandom(3)
    const log = Array.from({ length: 2000 }, () => {
      const key = `k${Math.floor(random() * 50)}`
      const roll = random()
      if (roll < 0.5) return { op: 'put', key, value: String(Math.floor(random() * 1000)) }
      if (roll < 0.7) return { op: 'delete', key }
      return { op: 'cas', key, value: 'c', ifModRevision: Math.floor(random() * 40) }
    })
    const [a, b, c] = [new KvState(500), new KvState(500), new KvState(500)]
    for (const cmd of log.slice(0, 1000)) [a, b].forEach((kv) => kv.apply(cmd))
    c.load(b.snapshot())
    for (const cmd of log.slice(1000)) [a, b, c].forEach((kv) => kv.apply(cmd))
    expect(b.snapshot()).toBe(a.snapshot())
    expect(c.snapshot()).toBe(a.snapshot())
    expect(c.eventsAfter(c.revision - 10)).toEqual(a.eventsAfter(a.revision - 10))
  })

  it('leases: keys put with one go when it is revoked; an unknown lease writes nothing; snapshots keep them', () => {
    const kv = new KvState()
    expect(kv.apply({ op: 'put', key: 'x', value: '1', lease: 'L' })).toMatchObject({ ok: false, missingLease: 'L', revision: 0 })
    expect(kv.get('x')).toBeUndefined()
    kv.apply({ op: 'grant', lease: 'L', ttlMs: 5000 })
    kv.apply({ op: 'put', key: 'lock/a', value: 'me', lease: 'L' })
    kv.apply({ op: 'put', key: 'lock/b', value: 'me', lease: 'L' })
    kv.apply({ op: 'put', key: 'lock/b', value: 'plain' }) // a put without the lease detaches the key
    expect(kv.lease('L')).toEqual({ id: 'L', ttlMs: 5000, keys: ['lock/a'] })
    const copy = new KvState()
    copy.load(kv.snapshot())
    for (const s of [kv, copy]) {
      expect(s.apply({ op: 'revoke', lease: 'L' })).toMatchObject({ ok: true, revision: 4 })
      expect(s.get('lock/a')).toBeUndefined()
      expect(s.get('lock/b')?.value).toBe('plain')
      expect(s.eventsAfter(3)).toEqual([{ type: 'delete', key: 'lock/a', revision: 4 }])
      expect(s.leases()).toEqual([])
    }
    expect(() => kv.apply({ op: 'grant', lease: 'M', ttlMs: 10 })).toThrow(/command field ttlMs/)
  })

  it('a command retried with the same request id is applied once, with the first answer', () => {
    const kv = new KvState()
    const first = kv.apply({ op: 'cas', key: 'a', value: '1', ifModRevision: 0, rid: 'c1:1' })
    kv.apply({ op: 'put', key: 'a', value: '2', rid: 'c2:1' })
    expect(kv.apply({ op: 'cas', key: 'a', value: '1', ifModRevision: 0, rid: 'c1:1' })).toEqual({ ok: first.ok, revision: first.revision, prev: undefined, duplicate: true })
    expect(kv.get('a')?.value).toBe('2')
    const copy = new KvState()
    copy.load(kv.snapshot())
    expect(copy.apply({ op: 'put', key: 'a', value: '2', rid: 'c2:1' }).revision).toBe(2)
    expect(copy.revision).toBe(2)
  })
})
