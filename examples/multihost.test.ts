// The wordcount example on three hosts: peers in three network namespaces, joined by veth pairs to
// a bridge in this one. The program lives in a directory of the submitting host only: each peer runs
// in its own mount namespace, where an empty tmpfs covers that directory, so the code it runs can
// only be the bundle that travelled with the job. The test process (a fourth host) joins them
// (joinCluster) and runs wordcount: the answer equals in-process.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { kernel } from 'lamina'
import { joinCluster, type Cluster } from 'lamina/cluster'
import { loadOrCreateIdentity, memoryLogger, readOrCreatePskFile } from 'lamina/transport'
import { createNetnsHosts, type NetnsHost, type NetnsHosts, netnsUnavailable } from 'lamina/testing'
import { wordcount, type WordCount } from './wordcount.js'

const root = join(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli', 'lamina.js')
const unavailable = netnsUnavailable()
if (unavailable !== undefined) process.stderr.write(`multi-host test skipped: ${unavailable}\n`)

describe.skipIf(unavailable !== undefined)('peers on three hosts (network namespaces)', () => {
  let dir: string
  let network: NetnsHosts | undefined
  let hosts: readonly NetnsHost[] = []
  const procs: ChildProcess[] = []
  let cluster: Cluster | undefined
  /** Peer ids of the three hosts, then the submitter's. */
  let ids: string[] = []
  /** The program's directory: on the submitting host only (each peer sees an empty tmpfs there). */
  let programDir: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-hosts-'))
    network = createNetnsHosts('lm', 3, 77)
    hosts = network.hosts
    // The program and the local module it imports, in a project of their own that has lamina installed.
    programDir = join(dir, 'program')
    await mkdir(join(programDir, 'fixtures'), { recursive: true })
    await mkdir(join(programDir, 'node_modules'))
    await symlink(root, join(programDir, 'node_modules', 'lamina'))
    await copyFile(join(import.meta.dirname, 'wordcount.ts'), join(programDir, 'wordcount.ts'))
    await copyFile(join(import.meta.dirname, 'fixtures', 'wordcount-program.ts'), join(programDir, 'fixtures', 'wordcount-program.ts'))
    const pskFile = join(dir, 'swarm.key')
    await readOrCreatePskFile(pskFile)
    ids = await Promise.all([...hosts.map((_, i) => join(dir, `host-${i + 1}`)), join(dir, 'submitter')].map(async (d) => (await loadOrCreateIdentity(d)).peerId))
    const allowFile = join(dir, 'allowlist')
    await writeFile(allowFile, ids.join('\n'))
    const addresses = hosts.map((h, i) => `/ip4/${h.ip}/tcp/4101/p2p/${ids[i]}`)
    for (const [i, h] of hosts.entries()) {
      const args = [
        'netns',
        'exec',
        h.ns,
        // `ip netns exec` gives the peer a mount namespace of its own: hide the program's directory there.
        'sh',
        '-c',
        'mount -t tmpfs lamina-empty "$0" && exec "$@"',
        programDir,
        process.execPath,
        cli,
        'peer',
        '--workdir',
        join(dir, `host-${i + 1}`),
        '--psk',
        pskFile,
        '--allow',
        allowFile,
        '--listen',
        // Host 1 listens on every interface: what it advertises must be its veth address, not loopback.
        i === 0 ? '/ip4/0.0.0.0/tcp/4101' : `/ip4/${h.ip}/tcp/4101`,
      ]
      const proc = spawn('ip', args, { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] })
      procs.push(proc)
      await new Promise<void>((resolve, reject) => {
        let err = ''
        proc.stderr!.on('data', (chunk: Buffer) => {
          err += chunk.toString()
          if (err.includes('listening on')) resolve()
        })
        proc.once('exit', (code) => reject(new Error(`peer in ${h.ns} exited with ${code}: ${err}`)))
      })
    }
    cluster = await joinCluster({
      bootstrap: addresses,
      psk: pskFile,
      workdir: join(dir, 'submitter'),
      allowlist: ids,
      listen: [`/ip4/${network!.gateway}/tcp/0`],
      logger: memoryLogger(),
    })
  }, 60_000)

  afterAll(async () => {
    await cluster?.stop()
    for (const proc of procs) proc.kill('SIGTERM')
    await Promise.all(procs.map((p) => (p.exitCode === null ? new Promise((resolve) => p.once('exit', resolve)) : undefined)))
    network?.remove()
    await rm(dir, { recursive: true, force: true })
  })

  it('runs wordcount across the hosts with the same answer as in-process', async () => {
    const file = join(dir, 'text.txt')
    const text = Array.from({ length: 2000 }, (_, i) => `Line ${i % 37} of the text, with words: alpha beta ${i % 11 === 0 ? 'Gamma' : 'delta'} ÉTÉ`).join('\n')
    await writeFile(file, text)
    const expected: WordCount[] = []
    await kernel.run(wordcount({ lines: text.split('\n'), out: (row) => void expected.push(row) })).done
    // No peer can see the program: its directory is an empty tmpfs in each peer's mount namespace.
    const program = join(programDir, 'fixtures', 'wordcount-program.ts')
    for (const proc of procs) expect(existsSync(`/proc/${proc.pid}/root${program}`)).toBe(false)
    expect(existsSync(program)).toBe(true)
    const { rows } = (await import(program)) as { rows: WordCount[] }
    const job = await cluster!.submit(program, { args: [file], workers: cluster!.members().map((m) => m.peerId) })
    const report = await job.done
    expect(rows).toEqual(expected)
    // Each host ran the bundle it was sent, cached by hash in its work directory.
    for (const i of hosts.keys()) expect((await readdir(join(dir, `host-${i + 1}`, 'code'))).filter((f) => f.endsWith('.bundle.js'))).toHaveLength(1)
    // A second job of the same code runs from the caches, with the same answer.
    rows.length = 0
    await (await cluster!.submit(program, { args: [file], workers: cluster!.members().map((m) => m.peerId) })).done
    expect(rows).toEqual(expected)
    // Host 1 listens on 0.0.0.0: membership learned its veth address first, not loopback.
    const host1 = cluster!.members().find((m) => m.peerId === ids[0])
    expect(host1?.multiaddrs[0]).toContain(`/ip4/${hosts[0]!.ip}/`)
    // Every host ran part of the job.
    for (const member of cluster!.members()) expect(report.stats[member.peerId]?.instances.length ?? 0).toBeGreaterThan(0)
  })
})
