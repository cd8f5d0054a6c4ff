// A shard's half of transactions, through the shard state machine itself (KvState.apply):
// validation of what was read, no-wait locks, the status record's one winner, resolve, snapshots.
import { describe, expect, it } from 'vitest'
import { KvState } from './state.js'

const primary = { shard: 's1', key: 'x' }
const record = { startedAtMs: 1000, ttlMs: 5000, participants: ['s1', 's2'] }
type Prepare = {
  tx: string
  reads?: { key: string; modRevision: number }[]
  writes?: { key: string; value?: string }[]
  ranges?: { from: string; to?: string; keys: { key: string; modRevision: number }[] }[]
  record?: typeof record
  onePhase?: boolean
}
const prepare = (shard: KvState, p: Prepare) => shard.apply({ op: 'tx-prepare', primary, reads: [], writes: [], ...p })

describe('shard transactions', () => {
  it('commit across two shards: prepared writes stay invisible until resolved, then apply; locks go', () => {
    const s1 = new KvState()
    const s2 = new KvState()
    s1.apply({ op: 'put', key: 'x', value: '10' })
    s2.apply({ op: 'put', key: 'y', value: '20' })
    const xRev = s1.get('x')!.modRevision
    const yRev = s2.get('y')!.modRevision
    expect(prepare(s1, { tx: 't1', reads: [{ key: 'x', modRevision: xRev }], writes: [{ key: 'x', value: '5' }], record }).tx).toEqual({ ok: true, status: 'pending' })
    expect(prepare(s2, { tx: 't1', reads: [{ key: 'y', modRevision: yRev }], writes: [{ key: 'y', value: '25' }] }).tx).toEqual({ ok: true, status: 'pending' })
    expect(s1.get('x')!.value).toBe('10')
    expect(s1.writerOf('x')).toEqual({ key: 'x', holder: 't1', primary })
    expect(s1.txRecord('t1')?.status).toBe('pending')
    expect(s1.apply({ op: 'tx-commit', tx: 't1' }).tx).toEqual({ ok: true, status: 'committed' })
    expect(s1.apply({ op: 'tx-resolve', tx: 't1', commit: true }).ok).toBe(true)
    expect(s2.apply({ op: 'tx-resolve', tx: 't1', commit: true }).ok).toBe(true)
    expect([s1.get('x')!.value, s2.get('y')!.value]).toEqual(['5', '25'])
    expect(s1.writerOf('x')).toBeUndefined()
    // Resolving again changes nothing (a recovering reader may resolve what the coordinator did).
    const rev = s1.revision
    s1.apply({ op: 'tx-resolve', tx: 't1', commit: true })
    expect(s1.revision).toBe(rev)
    expect(s1.apply({ op: 'tx-forget', tx: 't1' }).tx).toEqual({ ok: true, status: 'committed' })
    expect(s1.txRecord('t1')).toBeUndefined()
  })

  it('refuses a prepare whose reads changed, and locks nothing then', () => {
    const s = new KvState()
    s.apply({ op: 'put', key: 'x', value: '1' })
    const seen = s.get('x')!.modRevision
    s.apply({ op: 'put', key: 'x', value: '2' })
    expect(prepare(s, { tx: 't', reads: [{ key: 'x', modRevision: seen }], writes: [{ key: 'y', value: 'v' }] }).tx).toEqual({ ok: false, stale: 'x' })
    // A key read as absent (revision 0) that now exists is stale too.
    expect(prepare(s, { tx: 't', reads: [{ key: 'x', modRevision: 0 }] }).tx).toEqual({ ok: false, stale: 'x' })
    expect(s.writerOf('y')).toBeUndefined()
    expect(s.apply({ op: 'put', key: 'y', value: 'free' }).ok).toBe(true)
  })

  it('no-wait locks: a conflicting prepare or plain write is refused naming the holder; after the holder resolves it succeeds', () => {
    const s = new KvState()
    expect(prepare(s, { tx: 'a', writes: [{ key: 'x', value: 'A' }], record }).tx?.ok).toBe(true)
    expect(prepare(s, { tx: 'b', reads: [{ key: 'x', modRevision: 0 }] }).tx).toEqual({ ok: false, conflict: { key: 'x', holder: 'a', primary } })
    expect(prepare(s, { tx: 'b', writes: [{ key: 'x', value: 'B' }] }).tx?.conflict?.holder).toBe('a')
    const put = s.apply({ op: 'put', key: 'x', value: 'plain' })
    expect(put.ok).toBe(false)
    expect(put.locked).toEqual({ key: 'x', holder: 'a', primary })
    expect(s.apply({ op: 'tx-abort', tx: 'a' }).tx).toEqual({ ok: true, status: 'aborted' })
    s.apply({ op: 'tx-resolve', tx: 'a', commit: false })
    expect(s.get('x')).toBeUndefined()
    expect(prepare(s, { tx: 'b', writes: [{ key: 'x', value: 'B' }] }).tx?.ok).toBe(true)
  })

  it('read locks are shared; a write to a key read by a prepared transaction is refused', () => {
    const s = new KvState()
    s.apply({ op: 'put', key: 'y', value: '1' })
    const rev = s.get('y')!.modRevision
    expect(prepare(s, { tx: 'a', reads: [{ key: 'y', modRevision: rev }] }).tx?.ok).toBe(true)
    expect(prepare(s, { tx: 'b', reads: [{ key: 'y', modRevision: rev }] }).tx?.ok).toBe(true)
    expect(prepare(s, { tx: 'c', writes: [{ key: 'y', value: '2' }] }).tx?.conflict).toMatchObject({ key: 'y', holder: 'a' })
    expect(s.apply({ op: 'delete', key: 'y' }).locked?.holder).toBe('a')
    s.apply({ op: 'tx-resolve', tx: 'a', commit: true })
    expect(prepare(s, { tx: 'c', writes: [{ key: 'y', value: '2' }] }).tx?.conflict?.holder).toBe('b')
    s.apply({ op: 'tx-resolve', tx: 'b', commit: true })
    expect(prepare(s, { tx: 'c', writes: [{ key: 'y', value: '2' }] }).tx?.ok).toBe(true)
  })

  it('ranges: a key that appeared since the scan is stale; a range locked by a prepared scan refuses writes into it, and the reverse', () => {
    const s = new KvState()
    s.apply({ op: 'put', key: 'a1', value: '1' })
    const keys = [{ key: 'a1', modRevision: s.get('a1')!.modRevision }]
    s.apply({ op: 'put', key: 'a2', value: '2' })
    expect(prepare(s, { tx: 'r', ranges: [{ from: 'a', to: 'b', keys }] }).tx).toEqual({ ok: false, stale: 'a2' })
    const now = s.scan({ from: 'a', to: 'b' }).map((e) => ({ key: e.key, modRevision: e.modRevision }))
    expect(prepare(s, { tx: 'r', ranges: [{ from: 'a', to: 'b', keys: now }] }).tx?.ok).toBe(true)
    // A write into the locked range (a phantom for r) waits for nobody: it is refused.
    expect(prepare(s, { tx: 'w', writes: [{ key: 'a3', value: '3' }] }).tx?.conflict?.holder).toBe('r')
    expect(s.apply({ op: 'put', key: 'a3', value: 'plain' }).locked?.holder).toBe('r')
    // Keys outside it are free.
    expect(prepare(s, { tx: 'w', writes: [{ key: 'b1', value: '3' }] }).tx?.ok).toBe(true)
    s.apply({ op: 'tx-resolve', tx: 'r', commit: true })
    // The reverse order: a prepared write into a range refuses a scan of it.
    expect(prepare(s, { tx: 'v', writes: [{ key: 'c5', value: '5' }] }).tx?.ok).toBe(true)
    expect(prepare(s, { tx: 'q', ranges: [{ from: 'c', keys: [] }] }).tx?.conflict).toMatchObject({ key: 'c5', holder: 'v' })
  })

  it('the record has one winner: commit after abort fails, abort after commit fails, an abort before the prepare forbids it', () => {
    const s = new KvState()
    prepare(s, { tx: 'a', writes: [{ key: 'x', value: '1' }], record })
    expect(s.apply({ op: 'tx-abort', tx: 'a' }).tx).toEqual({ ok: true, status: 'aborted' })
    expect(s.apply({ op: 'tx-commit', tx: 'a' }).tx).toEqual({ ok: false, status: 'aborted' })
    prepare(s, { tx: 'b', writes: [{ key: 'z', value: '1' }], record })
    expect(s.apply({ op: 'tx-commit', tx: 'b' }).tx).toEqual({ ok: true, status: 'committed' })
    expect(s.apply({ op: 'tx-abort', tx: 'b' }).tx).toEqual({ ok: false, status: 'committed' })
    expect(s.apply({ op: 'tx-forget', tx: 'b' }).ok).toBe(true)
    // A resolver aborted c before its coordinator's prepare reached the primary: the prepare is refused.
    expect(s.apply({ op: 'tx-abort', tx: 'c' }).tx).toEqual({ ok: true, status: 'aborted' })
    expect(prepare(s, { tx: 'c', writes: [{ key: 'w', value: '1' }], record }).tx).toEqual({ ok: false, status: 'aborted' })
    expect(s.writerOf('w')).toBeUndefined()
    // A pending record is not forgotten.
    prepare(s, { tx: 'd', writes: [{ key: 'v', value: '1' }], record })
    expect(s.apply({ op: 'tx-forget', tx: 'd' }).tx).toEqual({ ok: false, status: 'pending' })
  })

  it("a reader's abort `ifAbsent` forbids a record that does not exist yet, and leaves one created since (it may be committed)", () => {
    const s = new KvState()
    // The race it closes: a reader found no record, then the primary's prepare created it and every
    // prepare succeeded (the transaction committed); the reader's abort must not undo that.
    prepare(s, { tx: 'p', writes: [{ key: 'x', value: '1' }], record })
    expect(s.apply({ op: 'tx-abort', tx: 'p', ifAbsent: true }).tx).toEqual({ ok: false, status: 'pending' })
    expect([s.txRecord('p')?.status, s.writerOf('x')?.holder]).toEqual(['pending', 'p'])
    expect(s.apply({ op: 'tx-abort', tx: 'q', ifAbsent: true }).tx).toEqual({ ok: true, status: 'aborted' })
    expect(prepare(s, { tx: 'q', writes: [{ key: 'y', value: '1' }], record }).tx).toEqual({ ok: false, status: 'aborted' })
  })

  it('an abort on the primary drops its own locks with the record', () => {
    const s = new KvState()
    prepare(s, { tx: 'a', reads: [{ key: 'r', modRevision: 0 }], writes: [{ key: 'x', value: '1' }], record })
    expect(s.writerOf('x')?.holder).toBe('a')
    expect(s.apply({ op: 'tx-abort', tx: 'a' }).tx).toEqual({ ok: true, status: 'aborted' })
    expect(s.writerOf('x')).toBeUndefined()
    expect(s.apply({ op: 'put', key: 'r', value: 'free' }).ok).toBe(true)
    expect(s.get('x')).toBeUndefined()
  })

  it('tx-finish: many resolves then forgets in one command; an empty or oversized one is refused by field', () => {
    const s1 = new KvState()
    const s2 = new KvState()
    for (const tx of ['a', 'b', 'c']) {
      prepare(s1, { tx, writes: [{ key: `p/${tx}`, value: tx }], record })
      prepare(s2, { tx, writes: [{ key: `q/${tx}`, value: tx }] })
    }
    s1.apply({ op: 'tx-commit', tx: 'a' })
    s1.apply({ op: 'tx-commit', tx: 'b' })
    s1.apply({ op: 'tx-abort', tx: 'c' })
    expect(
      s2.apply({
        op: 'tx-finish',
        tx: 'f1',
        resolve: [
          { tx: 'a', commit: true },
          { tx: 'b', commit: true },
          { tx: 'c', commit: false },
        ],
        forget: [],
      }).ok,
    ).toBe(true)
    expect(['a', 'b', 'c'].map((tx) => s2.get(`q/${tx}`)?.value)).toEqual(['a', 'b', undefined])
    expect(['a', 'b', 'c'].map((tx) => s2.writerOf(`q/${tx}`))).toEqual([undefined, undefined, undefined])
    // Forgetting a pending record is skipped; the finished ones go.
    prepare(s1, { tx: 'd', writes: [{ key: 'p/d', value: 'd' }], record })
    expect(s1.apply({ op: 'tx-finish', tx: 'f2', resolve: [], forget: ['a', 'b', 'd'] }).ok).toBe(true)
    expect(['a', 'b', 'c', 'd'].map((tx) => s1.txRecord(tx)?.status)).toEqual([undefined, undefined, 'aborted', 'pending'])
    expect(() => s1.apply({ op: 'tx-finish', tx: 'f3', resolve: [], forget: [] })).toThrow(/resolve.*1 to 256/)
    const many = Array.from({ length: 257 }, (_, i) => `t${i}`)
    expect(() => s1.apply({ op: 'tx-finish', tx: 'f4', resolve: [], forget: many })).toThrow(/got 257/)
    expect(() => s1.apply({ op: 'tx-finish', tx: 'f5', resolve: [{ tx: '', commit: true }], forget: [] })).toThrow(/resolve\.0\.tx/)
  })

  it('tx-check: prepared here says so; not prepared is final (a later prepare is refused, also after a snapshot)', () => {
    const s = new KvState()
    prepare(s, { tx: 'p', writes: [{ key: 'x', value: '1' }] })
    expect(s.apply({ op: 'tx-check', tx: 'p' }).tx).toEqual({ ok: true, status: 'pending' })
    expect(s.apply({ op: 'tx-check', tx: 'late' }).tx).toEqual({ ok: false })
    const copy = new KvState()
    copy.load(s.snapshot())
    for (const shard of [s, copy]) {
      expect(prepare(shard, { tx: 'late', writes: [{ key: 'y', value: '1' }] }).tx).toEqual({ ok: false, status: 'aborted' })
      expect(shard.writerOf('y')).toBeUndefined()
    }
  })

  it('one-phase commit: the only participant applies at once, locks nothing, and its record says committed', () => {
    const s = new KvState()
    s.apply({ op: 'put', key: 'x', value: '1' })
    const seen = s.get('x')!.modRevision
    const only = { ...record, participants: ['s1'] }
    expect(prepare(s, { tx: 'p', reads: [{ key: 'x', modRevision: seen }], writes: [{ key: 'x', value: '2' }, { key: 'y' }], record: only, onePhase: true } as Prepare).tx).toEqual(
      { ok: true, status: 'committed' },
    )
    expect([s.get('x')?.value, s.writerOf('x'), s.txRecord('p')?.status]).toEqual(['2', undefined, 'committed'])
    // A coordinator that got no answer aborts: the record says it committed.
    expect(s.apply({ op: 'tx-abort', tx: 'p' }).tx).toEqual({ ok: false, status: 'committed' })
    // Refused like any prepare: a stale read, another's lock.
    expect(prepare(s, { tx: 'q', reads: [{ key: 'x', modRevision: seen }], writes: [{ key: 'x', value: '3' }], record: only, onePhase: true } as Prepare).tx).toEqual({
      ok: false,
      stale: 'x',
    })
    prepare(s, { tx: 'holder', writes: [{ key: 'z', value: 'h' }], record })
    expect(prepare(s, { tx: 'r', writes: [{ key: 'z', value: 'r' }], record: only, onePhase: true } as Prepare).tx?.conflict?.holder).toBe('holder')
    expect(s.get('x')?.value).toBe('2')
    expect(() => s.apply({ op: 'tx-prepare', tx: 'bad', primary, reads: [], writes: [{ key: 'w', value: '1' }], onePhase: true })).toThrow(/onePhase/)
    expect(() => s.apply({ op: 'tx-prepare', tx: 'bad', primary, reads: [], writes: [{ key: 'w', value: '1' }], record, onePhase: true })).toThrow(/only participant/)
  })

  it('a retried prepare or commit (same request id) is applied once', () => {
    const s = new KvState()
    const first = s.apply({ op: 'tx-prepare', tx: 'a', primary, reads: [], writes: [{ key: 'x', value: '1' }], record, rid: 'r1' })
    const again = s.apply({ op: 'tx-prepare', tx: 'a', primary, reads: [], writes: [{ key: 'x', value: '1' }], record, rid: 'r1' })
    expect(again).toMatchObject({ duplicate: true, ok: true, tx: first.tx })
    expect(prepare(s, { tx: 'a', writes: [{ key: 'x', value: '1' }], record }).tx).toEqual({ ok: true, status: 'pending' })
    s.apply({ op: 'tx-commit', tx: 'a', rid: 'r2' })
    expect(s.apply({ op: 'tx-commit', tx: 'a', rid: 'r2' })).toMatchObject({ duplicate: true, ok: true, tx: { ok: true, status: 'committed' } })
  })

  it('snapshots keep intents, locks and records: a replica loaded from one refuses and resolves the same', () => {
    const s = new KvState()
    s.apply({ op: 'put', key: 'k', value: '0' })
    prepare(s, { tx: 'a', reads: [{ key: 'k', modRevision: s.get('k')!.modRevision }], writes: [{ key: 'x', value: '1' }], ranges: [{ from: 'r', to: 's', keys: [] }], record })
    const copy = new KvState()
    copy.load(s.snapshot())
    expect(copy.writerOf('x')?.holder).toBe('a')
    expect(copy.txRecord('a')).toMatchObject({ status: 'pending', ttlMs: 5000, participants: ['s1', 's2'] })
    expect(copy.apply({ op: 'put', key: 'k', value: '1' }).locked?.holder).toBe('a')
    expect(copy.apply({ op: 'put', key: 'r1', value: '1' }).locked?.holder).toBe('a')
    copy.apply({ op: 'tx-commit', tx: 'a' })
    copy.apply({ op: 'tx-resolve', tx: 'a', commit: true })
    expect(copy.get('x')?.value).toBe('1')
    expect(copy.apply({ op: 'put', key: 'k', value: '1' }).ok).toBe(true)
  })

  it('malformed transaction commands are refused with the field named, and change nothing', () => {
    const s = new KvState()
    expect(() => s.apply({ op: 'tx-prepare', tx: 'a', primary, reads: [], writes: [{ key: 'x', value: '1' }, { key: 'x' }] })).toThrow(
      expect.objectContaining({ code: 'ERR_KV_COMMAND', field: 'writes.1.key' }),
    )
    expect(() => s.apply({ op: 'tx-prepare', tx: '', primary, reads: [], writes: [] })).toThrow(expect.objectContaining({ code: 'ERR_KV_COMMAND', field: 'tx' }))
    expect(() => s.apply({ op: 'tx-prepare', tx: 'a', primary, reads: [], writes: [{ key: 'x' }], record: { ...record, ttlMs: 0 } })).toThrow(
      expect.objectContaining({ field: 'record.ttlMs' }),
    )
    expect(() => s.apply({ op: 'tx-prepare', tx: 'a', primary, reads: [{ key: 'x' }], writes: [] })).toThrow(
      expect.objectContaining({ code: 'ERR_KV_COMMAND', field: 'reads.modRevision' }),
    )
    expect(() => s.apply({ op: 'tx-commit' })).toThrow(expect.objectContaining({ code: 'ERR_KV_COMMAND' }))
    expect(() => s.apply({ op: 'tx-prepare', tx: 'a', primary, reads: [], writes: [{ key: 'x', value: 'v'.repeat(300_000) }] })).toThrow(
      expect.objectContaining({ code: 'ERR_KV_LIMIT' }),
    )
    expect(s.writerOf('x')).toBeUndefined()
    expect(s.revision).toBe(0)
  })
})
