// The linearizability checker the KV store's fault tests use (checker/, through fixtures/porcupine.ts): it accepts
// linearizable histories, unknown outcomes either way, and rejects stale reads and lost updates.
// The first run builds checker/ with `go build` (downloading porcupine through the Go module proxy once per machine).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkLinearizable, HistoryRecorder, type KvHistoryOp } from './fixtures/porcupine.js'

const put = (client: number, key: string, value: string, call: number, ret: number): KvHistoryOp => ({ client, op: 'put', key, value, call, return: ret, outcome: 'ok' })
const get = (client: number, key: string, got: string | undefined, call: number, ret: number): KvHistoryOp =>
  got === undefined ? { client, op: 'get', key, call, return: ret, outcome: 'ok', found: false } : { client, op: 'get', key, call, return: ret, outcome: 'ok', found: true, got }
const cas = (client: number, key: string, ifValue: string | null, value: string, swapped: boolean, call: number, ret: number): KvHistoryOp => ({
  client,
  op: 'cas',
  key,
  ifValue,
  value,
  call,
  return: ret,
  outcome: 'ok',
  swapped,
})
/** `op` without an answer: it may or may not have taken effect. */
const unknown = ({ found: _found, got: _got, swapped: _swapped, ...op }: KvHistoryOp): KvHistoryOp => ({ ...op, outcome: 'unknown', return: null })

describe('checkLinearizable (porcupine)', () => {
  let dir: string

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lamina-kv-checker-test-'))
    // Builds the checker once for the file (the only slow step; later calls take milliseconds).
    expect(await checkLinearizable({ ops: [] })).toEqual({ linearizable: true, operations: 0, keys: 0 })
  }, 120_000)

  afterAll(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  it('accepts a concurrent history with a linearization', async () => {
    const ops = [
      put(0, 'x', '1', 0, 10),
      get(1, 'x', undefined, 2, 4), // before either put took effect
      put(1, 'x', '2', 6, 8), // concurrent with put 1, and took effect first
      get(2, 'x', '1', 5, 12),
      put(3, 'y', 'a', 0, 3),
      cas(0, 'y', 'a', 'b', true, 11, 13),
      get(3, 'y', 'b', 14, 15),
    ]
    expect(await checkLinearizable({ ops })).toEqual({ linearizable: true, operations: 7, keys: 2 })
  })

  it('rejects a stale read, and writes the visualization', async () => {
    const ops = [put(0, 'x', '1', 0, 1), put(1, 'x', '2', 2, 3), get(2, 'x', '1', 4, 5)]
    const visualizeTo = join(dir, 'stale.html')
    expect(await checkLinearizable({ ops }, { visualizeTo })).toEqual({ linearizable: false, operations: 3, keys: 1 })
    expect(readFileSync(visualizeTo, 'utf8')).toContain('get(\\"x\\") → \\"1\\"')
  })

  it('rejects a lost update: two cas from the same value both swapped', async () => {
    const ops = [put(0, 'n', '0', 0, 1), cas(1, 'n', '0', '1', true, 2, 5), cas(2, 'n', '0', '1', true, 3, 6)]
    expect((await checkLinearizable({ ops })).linearizable).toBe(false)
  })

  it('lets an unknown put take effect at any time after its call, or never, but not undo itself', async () => {
    const before = [put(0, 'x', '1', 0, 1), unknown(put(1, 'x', '2', 2, 3))]
    const check = async (...reads: KvHistoryOp[]): Promise<boolean> => (await checkLinearizable({ ops: [...before, ...reads] })).linearizable
    expect(await check(get(2, 'x', '2', 10, 11))).toBe(true)
    expect(await check(get(2, 'x', '1', 10, 11))).toBe(true)
    expect(await check(get(2, 'x', '1', 10, 11), get(2, 'x', '2', 12, 13))).toBe(true)
    expect(await check(get(2, 'x', '2', 10, 11), get(2, 'x', '1', 12, 13))).toBe(false)
    expect(await check(get(2, 'x', '2', 0, 1))).toBe(false)
  })

  it('drops a failed write and an unanswered read', async () => {
    const ops: KvHistoryOp[] = [put(0, 'x', '1', 0, 1), { ...put(1, 'x', '2', 2, 3), outcome: 'fail' }, unknown(get(2, 'x', 'zzz', 2, 3)), get(2, 'x', '2', 4, 5)]
    expect(await checkLinearizable({ ops })).toEqual({ linearizable: false, operations: 2, keys: 1 })
  })

  it('refuses a malformed history, naming the op and the field', async () => {
    const ops = [put(0, 'x', '1', 0, 1), { ...put(0, 'x', '1', 2, 3), return: null }]
    await expect(checkLinearizable({ ops })).rejects.toMatchObject({ code: 'ERR_KV_HISTORY_INVALID', message: expect.stringContaining('ops[1].return: null') })
  })

  it('records concurrent clients of a store that is linearizable, and of one that serves stale reads', async () => {
    // A toy store that acts when called and answers a turn of the event loop later.
    const answer = <T>(value: T): Promise<T> => new Promise((resolve) => setImmediate(() => resolve(value)))
    const primary = new Map<string, string>()
    const stale = new Map<string, string>() // a replica that never catches up
    const store = (reads: Map<string, string>) => ({
      get: (key: string) => answer(reads.get(key)),
      put: (key: string, value: string) => answer(void primary.set(key, value)),
      cas: (key: string, ifValue: string | null, value: string) => {
        const holds = ifValue === null ? !primary.has(key) : primary.get(key) === ifValue
        if (holds) primary.set(key, value)
        return answer(holds)
      },
    })
    const run = async (kv: ReturnType<typeof store>): Promise<HistoryRecorder> => {
      const recorder = new HistoryRecorder()
      await Promise.all(
        [0, 1, 2, 3].map(async (client) => {
          for (let i = 0; i < 25; i++) {
            const key = `k${(client + i) % 3}`
            if (i % 3 === 0) {
              const call = recorder.invoke(client, { op: 'put', key, value: `${client}.${i}` })
              await kv.put(key, `${client}.${i}`)
              call.ok()
            } else if (i % 3 === 1) {
              const call = recorder.invoke(client, { op: 'get', key })
              const value = await kv.get(key)
              call.ok(value === undefined ? { found: false } : { found: true, got: value })
            } else {
              const ifValue = primary.get(key) ?? null
              const call = recorder.invoke(client, { op: 'cas', key, ifValue, value: `${client}.${i}.cas` })
              call.ok({ swapped: await kv.cas(key, ifValue, `${client}.${i}.cas`) })
            }
          }
        }),
      )
      return recorder
    }

    const good = await run(store(primary))
    expect(await checkLinearizable(good.history())).toEqual({ linearizable: true, operations: 100, keys: 3 })
    primary.clear()
    const bad = await run(store(stale))
    expect(await checkLinearizable(bad.history())).toEqual({ linearizable: false, operations: 100, keys: 3 })
  })

  it('records how each call ended; a call still in flight is unknown, and a call ends once', () => {
    const recorder = new HistoryRecorder()
    const put1 = recorder.invoke(0, { op: 'put', key: 'x', value: '1' })
    const cas1 = recorder.invoke(1, { op: 'cas', key: 'x', ifValue: null, value: '2' })
    const get1 = recorder.invoke(2, { op: 'get', key: 'x' })
    const del1 = recorder.invoke(3, { op: 'delete', key: 'x' })
    recorder.invoke(4, { op: 'get', key: 'y' })
    put1.ok()
    cas1.ok({ swapped: false })
    get1.ok({ found: true, got: '1' })
    del1.fail()
    expect(() => put1.unknown()).toThrow(expect.objectContaining({ code: 'ERR_KV_HISTORY_INVALID' }))
    const { ops } = recorder.history()
    expect(ops).toEqual([
      { client: 0, op: 'put', key: 'x', value: '1', call: expect.any(Number), return: expect.any(Number), outcome: 'ok' },
      { client: 1, op: 'cas', key: 'x', ifValue: null, value: '2', call: expect.any(Number), return: expect.any(Number), outcome: 'ok', swapped: false },
      { client: 2, op: 'get', key: 'x', call: expect.any(Number), return: expect.any(Number), outcome: 'ok', found: true, got: '1' },
      { client: 3, op: 'delete', key: 'x', call: expect.any(Number), return: expect.any(Number), outcome: 'fail' },
      { client: 4, op: 'get', key: 'y', call: expect.any(Number), return: null, outcome: 'unknown' },
    ])
    // Nanoseconds since the recorder was made, each call before its return.
    expect(ops.every((op) => Number.isInteger(op.call) && op.call >= 0 && (op.return === null || op.return >= op.call))).toBe(true)
  })
})
