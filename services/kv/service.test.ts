// The KV service on a cluster of 3 real peer processes: startKv places shards and waits for
// leaders; the client routes, follows leaders, scans across shards, watches, and holds leases;
// bad frames are refused with a typed answer while the peer keeps serving; a restarted cluster on
// the same work directories recovers the data.

import { execFile, spawn } from 'node:child_process'
import { appendFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { lpStream } from '@libp2p/utils'
import { filter, firstValueFrom, take, toArray } from 'rxjs'
import { startCluster, type Cluster } from 'lamina/cluster'
import { loadOrCreateIdentity, memoryLogger } from 'lamina/transport'
import { promisify } from 'node:util'
import { until } from 'lamina/testing'
import { afterEach, describe, expect, it } from 'vitest'
import { looked } from './fixtures/kv-program.js'
import { KV_PROTOCOL, KvLeaseNotFoundError, KvLimitError, kvLayoutArg, startKv, type Kv } from './index.js'

const program = join(import.meta.dirname, 'fixtures', 'kv-program.ts')
const cliPath = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'lamina.js')
const exec = promisify(execFile)

let dir = ''
let cluster: Cluster | undefined
let kv: Kv | undefined
afterEach(async () => {
  await kv?.stop()
  await cluster?.stop()
  kv = undefined
  cluster = undefined
  if (dir !== '') await rm(dir, { recursive: true, force: true })
})

const start = async (): Promise<{ cluster: Cluster; kv: Kv }> => {
  cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger() })
  kv = await startKv(cluster, { shards: 2, replicas: 3, readyTimeoutMs: 30_000 })
  return { cluster, kv }
}

describe('startKv on 3 peer processes', () => {
  it('serves reads, writes, scans, watches and leases, and recovers from disk', async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-kv-service-'))
    const { kv: store, cluster: c } = await start()
    expect(store.layout.map((s) => Object.keys(s.members).length)).toEqual([3, 3])

    // A watch from now sees every later change of its prefix, in order per shard.
    const watched = firstValueFrom(store.watch('user/').pipe(take(4), toArray()))
    const keys = ['user/ann', 'user/bob', 'user/cy', 'other']
    for (const key of keys) expect(await store.put(key, `v-${key}`)).toMatchObject({ ok: true })
    expect(new Set(keys.map((k) => store.shardOf(k))).size).toBe(2)
    expect(await store.get('user/ann')).toMatchObject({ value: 'v-user/ann', version: 1 })
    expect(await store.get('nobody')).toBeUndefined()
    expect((await store.cas('user/ann', 'x', { ifValue: 'wrong' })).ok).toBe(false)
    expect((await store.cas('user/ann', 'x', { ifValue: 'v-user/ann' })).ok).toBe(true)
    expect((await store.scan({ prefix: 'user/' })).map((e) => [e.key, e.value])).toEqual([
      ['user/ann', 'x'],
      ['user/bob', 'v-user/bob'],
      ['user/cy', 'v-user/cy'],
    ])
    expect((await store.scan({ from: 'a', limit: 2 })).map((e) => e.key)).toEqual(['other', 'user/ann'])
    const events = await watched
    expect(events.map((e) => `${e.type} ${e.key}`).sort()).toEqual(['put user/ann', 'put user/ann', 'put user/bob', 'put user/cy'])
    // A watch resumed from revision 1 of every shard replays history, never skipping.
    const replay = await firstValueFrom(store.watch('user/', { fromRevision: 1 }).pipe(take(4), toArray()))
    expect(replay.map((e) => e.key).sort()).toEqual(['user/ann', 'user/ann', 'user/bob', 'user/cy'])

    // Limits are typed errors, checked before anything is sent.
    await expect(store.put('k'.repeat(2000), 'v')).rejects.toBeInstanceOf(KvLimitError)

    // A lease: kept alive it holds its key; revoked, the key is gone.
    const lease = await store.grant(1000)
    await store.put('lock/a', 'me', { lease })
    await lease.keepAlive()
    expect((await store.get('lock/a'))?.lease).toBe(lease.id)
    await lease.revoke()
    expect(await store.get('lock/a')).toBeUndefined()
    await expect(lease.keepAlive()).rejects.toBeInstanceOf(KvLeaseNotFoundError)
    // Left alone, a lease expires after its TTL and takes its key with it.
    const short = await store.grant(1000)
    await store.put('lock/b', 'me', { lease: short })
    // (A watch "from now" starts at the revision of the replica it reads, which may not have the put yet.)
    const gone = await firstValueFrom(
      store.watch('lock/b').pipe(
        filter((e) => e.type === 'delete'),
        take(1),
      ),
    )
    expect(gone).toMatchObject({ type: 'delete', key: 'lock/b' })

    // A malformed frame from an admitted peer gets a typed refusal naming the field; the stream and the peer go on.
    const host = c.members()[0]!
    const lp = lpStream(await c.self.node.dialProtocol(host.multiaddrs[0]!, KV_PROTOCOL))
    await lp.write(new TextEncoder().encode(JSON.stringify({ id: 7, type: 'put', shard: 'kv-0', key: 42 })))
    const refusal = JSON.parse(new TextDecoder().decode((await lp.read()).subarray())) as Record<string, unknown>
    expect(refusal).toMatchObject({ id: 7, ok: false, code: 'ERR_KV_PROTOCOL' })
    expect(String(refusal.message)).toContain('key')
    await lp.write(new TextEncoder().encode(JSON.stringify({ id: 8, type: 'get', shard: 'kv-0', key: 'user/ann', consistency: 'serializable' })))
    expect(JSON.parse(new TextDecoder().decode((await lp.read()).subarray()))).toMatchObject({ id: 8, ok: true })
    await lp.unwrap().close()

    // From a dataflow program on the peers: one operator writes, another looks up (with backpressure).
    await store.put('seen/0', 'zero')
    await store.put('seen/1', 'one')
    const job = await c.submit(program, { args: [kvLayoutArg(store), '60'], workers: c.members().map((m) => m.peerId) })
    const report = await job.done
    expect(report.deadLetters).toEqual([])
    expect((await store.scan({ prefix: 'order/' })).length).toBe(60)
    expect((await store.get('order/42'))?.value).toBe('420')
    expect(looked.length).toBe(60)
    expect(looked.find((r) => r.id === 4)?.value).toBe('one')
    expect(looked.find((r) => r.id === 5)?.value).toBeNull()

    // The CLI, as a client of its own admitted by the peers' allowlist (they re-read it).
    const cli = async (...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> =>
      exec(process.execPath, [cliPath, 'kv', ...args, '--cluster', host.multiaddrs[0]!, '--psk', join(dir, 'swarm.key'), '--workdir', join(dir, 'cli')]).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
      )
    await appendFile(join(dir, 'allowlist'), `${(await loadOrCreateIdentity(join(dir, 'cli'))).peerId}\n`)
    expect(await cli('get', 'user/ann')).toMatchObject({ code: 0, stdout: 'x\n' })
    expect(await cli('put', 'from-cli', 'hello')).toMatchObject({ code: 0, stdout: expect.stringMatching(/^kv-\d revision \d+\n$/) })
    expect((await store.get('from-cli'))?.value).toBe('hello')
    expect(await cli('scan', 'user/', '--limit', '2')).toMatchObject({ code: 0, stdout: 'user/ann=x\nuser/bob=v-user/bob\n' })
    expect(await cli('get', 'nobody')).toMatchObject({ code: 1, stderr: expect.stringContaining('nobody does not exist') })
    expect(await cli('frob', 'x')).toMatchObject({ code: 2, stderr: expect.stringContaining('unknown verb "frob"') })
    await store.delete('from-cli')
    // watch prints every change from a revision on until Ctrl-C.
    const watcher = spawn(process.execPath, [
      cliPath,
      'kv',
      'watch',
      'user/',
      '--from-revision',
      '1',
      '--cluster',
      host.multiaddrs[0]!,
      '--psk',
      join(dir, 'swarm.key'),
      '--workdir',
      join(dir, 'cli'),
    ])
    let printed = ''
    watcher.stdout.on('data', (chunk: Buffer) => (printed += chunk.toString()))
    const exited = new Promise((resolve) => watcher.once('exit', resolve))
    try {
      await until(() => printed.split('\n').filter((l) => l.includes(' put user/')).length >= 4, 20_000, 'lamina kv watch to print the puts under user/')
    } finally {
      watcher.kill('SIGINT')
      await exited
    }
    expect(printed).toMatch(/^kv-\d@\d+ put user\/ann=v-user\/ann$/m)

    // Stopped and started again on the same work directories: the data is there.
    await c.stop()
    cluster = undefined
    kv = undefined
    const again = await start()
    expect(await again.kv.get('user/ann')).toMatchObject({ value: 'x', version: 2 })
    expect((await again.kv.scan({ prefix: 'user/' })).length).toBe(3)
    expect((await again.kv.scan({ prefix: 'order/' })).length).toBe(60)
  }, 120_000)
})
