// Transactions on 3 real peer processes: concurrent transfers between accounts on different shards
// keep the bank's total (and read-only snapshots see it whole), a dead coordinator's locks are
// resolved by whoever finds them, and limits and conflicts fail with typed errors.

import { execFile } from 'node:child_process'
import { appendFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCluster, type Cluster } from 'lamina/cluster'
import { loadOrCreateIdentity, memoryLogger } from 'lamina/transport'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { type AtomBody, type AtomContext, kernel, link, program, source, t, type PortCodecs } from 'lamina'
import { CHECKPOINT_EVENTS, checkpoints } from 'lamina/layers'
import { sinkMarkerKey, startTxKv, type Transaction, TxClosedError, TxLimitError, TXKV_LIMITS, txkvSink, type TxAttempt, type TxKvStore } from './index.js'

const cliPath = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'lamina.js')

let dir = ''
let cluster: Cluster | undefined
let db: TxKvStore | undefined
const attempts: TxAttempt[] = []

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lamina-txkv-'))
  cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger() })
  db = await startTxKv(cluster, { shards: 2, replicas: 3, readyTimeoutMs: 30_000, onAttempt: (a) => void attempts.push(a) })
}, 60_000)

afterAll(async () => {
  await db?.stop()
  await cluster?.stop()
  if (dir !== '') await rm(dir, { recursive: true, force: true })
})

const accounts = Array.from({ length: 6 }, (_, i) => `acct/${i}`)

describe('startTxKv on 3 peer processes', () => {
  it('concurrent transfers across shards keep the total; read-only snapshots always see it whole', async () => {
    const store = db!
    expect(new Set(accounts.map((a) => store.kv.shardOf(a))).size).toBe(2)
    await store.transact(async (tx) => {
      for (const a of accounts) tx.put(a, '100')
    })
    let seed = 7
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) | 0
      return (seed >>> 8) % n
    }
    const transfers = async (): Promise<number> => {
      let done = 0
      for (let i = 0; i < 12; i++) {
        const from = accounts[random(accounts.length)]!
        const to = accounts[(accounts.indexOf(from) + 1 + random(accounts.length - 1)) % accounts.length]!
        const amount = 1 + random(30)
        const moved = await store.transact(async (tx) => {
          const a = Number(await tx.get(from))
          const b = Number(await tx.get(to))
          if (a < amount) return false
          tx.put(from, String(a - amount))
          tx.put(to, String(b + amount))
          return true
        })
        if (moved) done++
      }
      return done
    }
    const totals: number[] = []
    let stop = false
    const audit = (async () => {
      while (!stop) {
        totals.push(
          await store.transact(async (tx) => {
            const all = await tx.scan({ prefix: 'acct/' })
            return all.reduce((sum, e) => sum + Number(e.value), 0)
          }),
        )
      }
    })()
    await Promise.all([0, 1, 2, 3].map(() => transfers()))
    stop = true
    await audit
    const final = await store.transact(async (tx) => Promise.all(accounts.map(async (a) => Number(await tx.get(a)))))
    expect(final.reduce((s, x) => s + x, 0)).toBe(600)
    expect(final.every((x) => x >= 0)).toBe(true)
    expect(totals.length).toBeGreaterThan(0)
    expect(totals.every((t) => t === 600)).toBe(true)
    // Contention happened and was retried, not lost: 48 transfers + 1 setup + audits committed.
    const committed = attempts.filter((a) => a.outcome === 'committed').length
    expect(committed).toBeGreaterThanOrEqual(49 + totals.length + 1)
    expect(attempts.filter((a) => a.outcome === 'failed' || a.outcome === 'indeterminate')).toEqual([])
  }, 120_000)

  it('reads its own writes, scans with them, and deletes', async () => {
    const store = db!
    const seen = await store.transact(async (tx) => {
      tx.put('user/ann', 'a')
      tx.put('user/bob', 'b')
      const mine = await tx.get('user/ann')
      tx.delete('user/bob')
      return { mine, scan: await tx.scan({ prefix: 'user/' }) }
    })
    expect(seen).toEqual({ mine: 'a', scan: [{ key: 'user/ann', value: 'a' }] })
    expect(await store.transact(async (tx) => [await tx.get('user/ann'), await tx.get('user/bob')])).toEqual(['a', undefined])
  })

  it("resolves a dead coordinator's locks: expired and unprepared somewhere -> aborted; prepared everywhere or committed -> applied", async () => {
    const store = db!
    const kv = store.kv
    // A coordinator prepared "orphan/x" long ago (its record is past its time limit) and died
    // before preparing its other shard.
    const shard = kv.shardOf('orphan/x')
    const primary = { shard, key: 'orphan/x' }
    const elsewhere = kv.shardIds.find((s) => s !== shard)!
    await kv.tx(shard, {
      op: 'tx-prepare',
      tx: 'dead-1',
      primary,
      reads: [],
      writes: [{ key: 'orphan/x', value: 'never' }],
      record: { startedAtMs: Date.now() - 60_000, ttlMs: 1000, participants: [shard, elsewhere] },
    })
    // Another coordinator reached its commit point (on its primary, "orphan/p", which applies the
    // primary's writes) but died before resolving "orphan/y", on the other shard.
    const yShard = kv.shardOf('orphan/y')
    const p = Array.from({ length: 64 }, (_, i) => `orphan/p${i}`).find((k) => kv.shardOf(k) !== yShard)!
    const pShard = kv.shardOf(p)
    const dead2 = { tx: 'dead-2', primary: { shard: pShard, key: p }, reads: [] }
    await kv.tx(pShard, { op: 'tx-prepare', ...dead2, writes: [{ key: p, value: 'primary' }], record: { startedAtMs: Date.now(), ttlMs: 5000, participants: [pShard, yShard] } })
    await kv.tx(yShard, { op: 'tx-prepare', ...dead2, writes: [{ key: 'orphan/y', value: 'committed' }] })
    await kv.tx(pShard, { op: 'tx-commit', tx: 'dead-2' })
    expect((await kv.get(p))?.value).toBe('primary')
    // A plain read of the KV store does not see the unresolved commit; a transaction does.
    expect((await kv.get('orphan/y'))?.value).toBeUndefined()
    const read = await store.transact(async (tx) => {
      const y = await tx.get('orphan/y')
      tx.put('orphan/x', 'mine')
      return y
    })
    expect(read).toBe('committed')
    expect(await store.transact(async (tx) => tx.get('orphan/x'))).toBe('mine')
    expect((await kv.txRead(shard, { records: ['dead-1'] })).records[0]?.status).toBe('aborted')
    expect((await kv.txRead(yShard, { keys: ['orphan/y'] })).writers[0]).toBeNull()
    // The recovery forbade dead-1's prepare on the other shard: arriving late, it is refused.
    expect((await kv.tx(elsewhere, { op: 'tx-prepare', tx: 'dead-1', primary, reads: [], writes: [{ key: 'orphan/late', value: 'no' }] })).tx).toEqual({
      ok: false,
      status: 'aborted',
    })

    // A third prepared both its shards (its commit point) and died with nothing recorded: past its
    // time limit, the next reader finds every participant prepared and commits it.
    const q = Array.from({ length: 64 }, (_, i) => `orphan/q${i}`).find((k) => kv.shardOf(k) !== yShard)!
    const dead3 = { tx: 'dead-3', primary: { shard: kv.shardOf(q), key: q }, reads: [] }
    await kv.tx(kv.shardOf(q), {
      op: 'tx-prepare',
      ...dead3,
      writes: [{ key: q, value: 'q' }],
      record: { startedAtMs: Date.now() - 60_000, ttlMs: 1000, participants: [kv.shardOf(q), yShard] },
    })
    const z = Array.from({ length: 64 }, (_, i) => `orphan/z${i}`).find((k) => kv.shardOf(k) === yShard)!
    await kv.tx(yShard, { op: 'tx-prepare', ...dead3, writes: [{ key: z, value: 'z' }] })
    expect(await store.transact(async (tx) => [await tx.get(z), await tx.get(q)])).toEqual(['z', 'q'])
    expect((await kv.txRead(kv.shardOf(q), { records: ['dead-3'] })).records[0]?.status).toBe('committed')
  })

  it('snapshot isolation: shards only read are not prepared nor locked, a concurrent write to what was read still aborts, lost updates cannot happen', async () => {
    const store = db!
    const kv = store.kv
    const [a, b] = kv.shardIds
    const onA = Array.from({ length: 64 }, (_, i) => `si/a${i}`).find((k) => kv.shardOf(k) === a)!
    const onB = Array.from({ length: 64 }, (_, i) => `si/b${i}`).find((k) => kv.shardOf(k) === b)!
    await store.transact(async (tx) => {
      tx.put(onA, '0')
      tx.put(onB, 'seen')
    })
    const prepared: string[] = []
    const ops: string[] = []
    const tx = kv.tx.bind(kv)
    const spy = vi.spyOn(kv, 'tx').mockImplementation((shard, command) => {
      ops.push(command.op)
      if (command.op === 'tx-prepare') prepared.push(shard)
      return tx(shard, command)
    })
    try {
      const readAndWrite = async (t: Transaction) => {
        const seen = await t.get(onB)
        t.put(onA, `${seen}-${await t.get(onA)}`)
      }
      await store.transact(readAndWrite, { isolation: 'snapshot' })
      // It writes one shard only: one-phase commit, one prepare and no separate commit.
      expect(prepared).toEqual([a])
      expect(ops.filter((op) => op === 'tx-commit')).toEqual([])
      prepared.length = 0
      ops.length = 0
      await store.transact(readAndWrite)
      expect(prepared.sort()).toEqual([a, b].sort())
      await store.settled()
      expect(ops).toContain('tx-commit')
    } finally {
      spy.mockRestore()
    }
    // What it read changed before it committed: refused, and the retry sees the new value.
    let runs = 0
    await store.transact(
      async (t) => {
        const seen = await t.get(onB)
        if (runs++ === 0) await store.transact(async (other) => other.put(onB, 'changed'))
        t.put(onA, String(seen))
      },
      { isolation: 'snapshot' },
    )
    expect([runs, (await kv.get(onA))?.value]).toEqual([2, 'changed'])
    // 20 concurrent increments of one counter under snapshot isolation: first committer wins, no update is lost.
    await store.transact(async (t) => t.put(onA, '0'))
    await Promise.all(
      Array.from({ length: 20 }, () => store.transact(async (t) => t.put(onA, String(Number(await t.get(onA)) + 1)), { isolation: 'snapshot', attempts: 200, budgetMs: 30_000 })),
    )
    expect((await kv.get(onA))?.value).toBe('20')
  })

  it('one-shot transactions: every compare first, then the writes, all or none', async () => {
    const store = db!
    const claim = [
      { op: 'if', key: 'os/lock', value: undefined },
      { op: 'put', key: 'os/lock', value: 'me' },
      { op: 'put', key: 'os/other', value: '1' },
    ] as const
    expect(await store.run(claim)).toEqual({ committed: true, reads: { 'os/lock': null } })
    const again = await store.run([
      { op: 'if', key: 'os/lock', value: undefined },
      { op: 'put', key: 'os/lock', value: 'you' },
      { op: 'delete', key: 'os/other' },
    ])
    expect(again).toEqual({ committed: false, reads: { 'os/lock': 'me' }, failed: { key: 'os/lock', expected: undefined, actual: 'me' } })
    expect(
      await store.run([
        { op: 'get', key: 'os/lock' },
        { op: 'get', key: 'os/other' },
      ]),
    ).toEqual({ committed: true, reads: { 'os/lock': 'me', 'os/other': '1' } })
  })

  it('a live transaction holding a lock makes others wait by retrying, then give up with the conflict as the cause', async () => {
    const store = db!
    const kv = store.kv
    const shard = kv.shardOf('busy')
    await kv.tx(shard, {
      op: 'tx-prepare',
      tx: 'live-1',
      primary: { shard, key: 'busy' },
      reads: [],
      writes: [{ key: 'busy', value: 'held' }],
      record: { startedAtMs: Date.now(), ttlMs: 60_000, participants: [shard] },
    })
    const failed = await store
      .transact(
        async (tx) => {
          tx.put('busy', 'me')
        },
        { attempts: 3 },
      )
      .catch((error: unknown) => error)
    expect(failed).toMatchObject({ code: 'ERR_TXKV_RETRIES', attempts: 3, cause: { code: 'ERR_TXKV_CONFLICT', key: 'busy', holder: 'live-1', retryable: true } })
    await kv.tx(shard, { op: 'tx-abort', tx: 'live-1' })
    await kv.tx(shard, { op: 'tx-resolve', tx: 'live-1', commit: false })
    await store.transact(async (tx) => tx.put('busy', 'me'))
    expect(await store.transact(async (tx) => tx.get('busy'))).toBe('me')
  })

  it('enforces its limits with typed errors, and a transaction cannot be used after it ended', async () => {
    const store = db!
    const tooMany = await store
      .transact(async (tx) => {
        for (let i = 0; i <= TXKV_LIMITS.keys; i++) tx.put(`many/${i}`, 'x')
      })
      .catch((error: unknown) => error)
    expect(tooMany).toBeInstanceOf(TxLimitError)
    expect(tooMany).toMatchObject({ code: 'ERR_TXKV_LIMIT', limit: 'keys', max: TXKV_LIMITS.keys, retryable: false })
    const big = await store.transact(async (tx) => tx.put('big', 'x'.repeat(TXKV_LIMITS.bytes + 1))).catch((error: unknown) => error)
    expect(big).toMatchObject({ code: 'ERR_TXKV_LIMIT', limit: 'bytes' })
    let kept: { put(key: string, value: string): void } | undefined
    await store.transact(async (tx) => {
      kept = tx
    })
    expect(() => kept!.put('late', 'x')).toThrow(TxClosedError)
  })

  it('`lamina txkv` runs one transaction from the shell; a coordinator SIGKILLed before, at or after its commit point leaves nothing half-applied', async () => {
    const store = db!
    const host = cluster!.members()[0]!
    await appendFile(join(dir, 'allowlist'), `${(await loadOrCreateIdentity(join(dir, 'cli'))).peerId}\n`)
    const cli = (args: readonly string[], failpoint?: string) =>
      new Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [cliPath, 'txkv', ...args, '--cluster', host.multiaddrs![0]!, '--psk', join(dir, 'swarm.key'), '--workdir', join(dir, 'cli')],
          { env: { ...process.env, ...(failpoint === undefined ? {} : { LAMINA_TXKV_FAILPOINT: failpoint }) } },
          (error, stdout, stderr) => resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, signal: error?.signal ?? null, stdout, stderr }),
        )
      })
    expect(await cli(['put', 'cli/a=100', 'put', 'cli/b=100', 'if-absent', 'cli/a'])).toMatchObject({ code: 0 })
    expect(await cli(['get', 'cli/a', 'get', 'cli/b', 'get', 'cli/none'])).toMatchObject({ code: 0, stdout: 'cli/a=100\ncli/b=100\ncli/none absent\n' })
    // A compare that fails writes nothing.
    const refused = await cli(['if', 'cli/a=7', 'put', 'cli/a=0'])
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining('cli/a is "100", not "7"') })
    expect(await cli(['get', 'cli/a', '--json'])).toMatchObject({ code: 0, stdout: '{"committed":true,"reads":{"cli/a":"100"}}\n' })

    // Killed after preparing the primary only, before its other prepare went out: its locks stay
    // until the time limit passes; then the next transaction recovers it, finds the other shard
    // unprepared (and forbids that prepare from then on), aborts it and goes on.
    const c = Array.from({ length: 64 }, (_, i) => `cli/c${i}`).find((k) => store.kv.shardOf(k) !== store.kv.shardOf('cli/a'))!
    const early = await cli(['put', 'cli/a=0', 'put', `${c}=1`], 'after-prepare-primary')
    expect(early.signal).toBe('SIGKILL')
    const locked = await store.kv.txRead(store.kv.shardOf('cli/a'), { keys: ['cli/a'] })
    expect(locked.writers[0]).toMatchObject({ key: 'cli/a' })
    await store.transact(async (tx) => tx.put('cli/a', String(Number(await tx.get('cli/a')) + 1)), { budgetMs: 20_000, attempts: 100, maxDelayMs: 500 })
    expect(await store.transact(async (tx) => [await tx.get('cli/a'), await tx.get(c)])).toEqual(['101', undefined])

    // Killed once every shard prepared (the commit point) with nothing recorded: the transaction
    // committed; once its time limit passes, the next reader recovers it and applies it everywhere.
    const implicit = await cli(['put', 'cli/a=7', 'put', `${c}=8`], 'after-prepare')
    expect(implicit.signal).toBe('SIGKILL')
    expect(await store.transact(async (tx) => [await tx.get('cli/a'), await tx.get(c)], { budgetMs: 20_000, attempts: 100, maxDelayMs: 500 })).toEqual(['7', '8'])

    // Killed after the commit point, before resolving: the transaction is committed, and whoever reads next applies it.
    const committed = await cli(['put', 'cli/a=5', 'put', `${c}=6`], 'after-commit')
    expect(committed.signal).toBe('SIGKILL')
    expect(await store.transact(async (tx) => [await tx.get('cli/a'), await tx.get(c)])).toEqual(['5', '6'])
    for (const key of ['cli/a', c]) expect((await store.kv.txRead(store.kv.shardOf(key), { keys: [key] })).writers[0]).toBeNull()
  }, 60_000)

  it('a dataflow sink under checkpoints commits each checkpoint in one transaction with its record: every record once', async () => {
    const store = db!
    const Rec = t.type({ id: t.number })
    // A replayable async input (it seeks to the offset a restore gives), slow enough for several checkpoints.
    const records = (from: number) =>
      (async function* () {
        for (let i = from; i < 300; i++) {
          if (i % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 15))
          yield { id: i }
        }
      })()
    const from = source('recs', Rec, (part) => records(part.offset), { replay: 'seek' })
    const into = txkvSink('orders-out', { store, input: Rec, key: (r) => `sink/${r.id}`, value: (r) => String(r.id * 2) })
    const before = attempts.filter((a) => a.outcome === 'committed').length
    const job = kernel
      .with(checkpoints({ dir: join(dir, 'checkpoints'), intervalMs: 40 }))
      .run(program('to-txkv', { operators: [from, into], links: [link(from.outputs.out, into.inputs.in)] }))
    let completed = 0
    job.events.subscribe((e) => {
      if (CHECKPOINT_EVENTS.completed.is(e)) completed++
    })
    await job.done
    await store.settled()
    const written = attempts.filter((a) => a.outcome === 'committed').length - before
    expect(completed).toBeGreaterThan(1)
    // One transaction per checkpoint with output (plus the end), each with the marker; a read of the marker per restore.
    expect(written).toBeGreaterThan(1)
    expect(written).toBeLessThanOrEqual(completed + 2)
    const entries = await Promise.all(Array.from({ length: 300 }, (_, i) => store.kv.get(`sink/${i}`)))
    expect(entries.map((e) => e?.value)).toEqual(Array.from({ length: 300 }, (_, i) => String(i * 2)))
    expect(entries.every((e) => e?.version === 1)).toBe(true)
    expect((await store.kv.get(sinkMarkerKey(job.id, 'orders-out', 0)))?.value).toBe(String(Number.MAX_SAFE_INTEGER))

    // Written again (the job died after the transaction, before its peer recorded the commit): nothing changes.
    const commit = (into.body as AtomBody).commit!
    const ctx = { info: { operator: 'orders-out', instance: 0 } } as unknown as AtomContext<PortCodecs, unknown>
    await commit.write(Number.MAX_SAFE_INTEGER, [{ port: 'in', values: [{ id: 1 }, { id: 2 }] }], ctx)
    expect((await store.kv.get('sink/1'))?.version).toBe(1)
    expect(await commit.committed(ctx)).toBe(Number.MAX_SAFE_INTEGER)
  }, 60_000)
})
