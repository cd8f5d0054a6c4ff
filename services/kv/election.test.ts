// Roles held through the KV store on 3 real peer processes: one holder at a time, fencing tokens
// that only grow, an old holder's orders refused by a Fence, and a holder process that is SIGKILLed
// (its role passes on once its lease expires) or stopped with SIGTERM (it resigns at once).
import { type ChildProcess, spawn } from 'node:child_process'
import { appendFile, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCluster, type Cluster } from 'lamina/cluster'
import { until } from 'lamina/testing'
import { loadOrCreateIdentity, memoryLogger } from 'lamina/transport'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { campaign, Fence, holderOf, isHolder, KvFencedError, startKv, type Kv } from './index.js'

const cliPath = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'lamina.js')

describe('roles with fencing tokens on the KV store', () => {
  let dir: string
  let cluster: Cluster
  let kv: Kv
  const children: ChildProcess[] = []

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-election-'))
    cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger() })
    kv = await startKv(cluster, { shards: 2, replicas: 3, readyTimeoutMs: 30_000 })
    await appendFile(join(dir, 'allowlist'), `${(await loadOrCreateIdentity(join(dir, 'cli'))).peerId}\n`)
  }, 60_000)

  afterAll(async () => {
    for (const child of children) child.kill('SIGKILL')
    await kv?.stop()
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  /** `lamina kv elect ROLE NAME` in its own process; resolves with it and its token once it holds the role. */
  async function holder(role: string, name: string): Promise<{ child: ChildProcess; token: number; exited: Promise<number | null> }> {
    const host = cluster.members()[0]!
    const child = spawn(
      process.execPath,
      [cliPath, 'kv', 'elect', role, name, '--ttl', '1500', '--cluster', host.multiaddrs![0]!, '--psk', join(dir, 'swarm.key'), '--workdir', join(dir, 'cli')],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    children.push(child)
    let out = ''
    let err = ''
    child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()))
    child.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()))
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    await until(() => out.includes('\n') || child.exitCode !== null, 30_000, `${name} to hold ${role} (${err})`)
    const [shown, by, token] = out.trim().split(' ')
    expect([shown, by]).toEqual([role, name])
    return { child, token: Number(token), exited }
  }

  it('one holder at a time; the next one after a resign has a greater token; a Fence refuses the old one', async () => {
    const client = kv
    const a = await campaign(client, 'r1', 'a')
    let bHeld = false
    const b = campaign(client, 'r1', 'b').then((held) => {
      bHeld = true
      return held
    })
    expect(await holderOf(client, 'r1')).toEqual({ holder: 'a', token: a.token })
    // b waits while a holds the role (a read of the store shows a, every time).
    for (let i = 0; i < 3; i++) expect((await holderOf(client, 'r1'))?.holder).toBe('a')
    expect(bHeld).toBe(false)
    await a.resign()
    const second = await b
    expect(second.token).toBeGreaterThan(a.token)
    expect([await isHolder(client, 'r1', a.token), await isHolder(client, 'r1', second.token)]).toEqual([false, true])
    const fence = new Fence('r1')
    fence.admit(a.token)
    fence.admit(second.token)
    expect(() => fence.admit(a.token)).toThrow(KvFencedError)
    expect(() => fence.admit(a.token)).toThrow(expect.objectContaining({ code: 'ERR_KV_FENCED', token: a.token, newest: second.token }))
    await second.resign()
  })

  it('a holder SIGKILLed keeps the role until its lease expires, then the next candidate holds it; one stopped with SIGTERM resigns at once', async () => {
    const client = kv
    const first = await holder('jobs/coordinator', 'cli-1')
    const killedAt = performance.now()
    first.child.kill('SIGKILL')
    const next = await campaign(client, 'jobs/coordinator', 'me', { ttlMs: 1500 })
    const tookOver = performance.now() - killedAt
    expect(next.token).toBeGreaterThan(first.token)
    // Not before the dead holder's lease (1.5 s) ran out; not much after.
    expect(tookOver).toBeGreaterThan(1000)
    expect(tookOver).toBeLessThan(10_000)
    await next.resign()

    const polite = await holder('jobs/coordinator', 'cli-2')
    expect(polite.token).toBeGreaterThan(next.token)
    const stoppedAt = performance.now()
    polite.child.kill('SIGTERM')
    expect(await polite.exited).toBe(0)
    const after = await campaign(client, 'jobs/coordinator', 'me-again', { ttlMs: 1500 })
    const handedOver = performance.now() - stoppedAt
    expect(after.token).toBeGreaterThan(polite.token)
    process.stderr.write(`election: took over ${Math.round(tookOver)} ms after a SIGKILL (ttl 1500 ms), ${Math.round(handedOver)} ms after a SIGTERM\n`)
    expect(handedOver).toBeLessThan(tookOver)
    await after.resign()
  }, 60_000)
})
