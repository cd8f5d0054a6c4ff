// The wordcount example on three hosts: peers in three network namespaces, joined by veth pairs to
// a bridge in this one. The program lives in a directory of the submitting host only: each peer runs
// in its own mount namespace, where an empty tmpfs covers that directory, so the code it runs can
// only be the bundle that travelled with the job. The test process (a fourth host) joins them
// (joinCluster) and runs wordcount: the answer equals in-process.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { copyFile, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { kernel } from 'lamina'
import { joinCluster, type Cluster } from 'lamina/cluster'
import { loadOrCreateIdentity, memoryLogger, readOrCreatePskFile } from 'lamina/transport'
import { wordcount, type WordCount } from './wordcount.js'

const root = join(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli', 'lamina.js')
const tag = `${process.pid % 10000}`
const bridge = `lmbr${tag}`
const subnet = `10.77.${process.pid % 200}`
const hosts = [1, 2, 3].map((i) => ({ ns: `lamina-${tag}-${i}`, veth: `lmv${tag}h${i}`, ip: `${subnet}.${10 + i}` }))

function sh(...args: string[]): void {
  execFileSync(args[0]!, args.slice(1), { stdio: 'pipe' })
}

/** Why network namespaces cannot be used here, or undefined when they can. */
function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root'
  try {
    sh('ip', 'netns', 'add', `lamina-probe-${tag}`)
    sh('ip', 'netns', 'del', `lamina-probe-${tag}`)
    return undefined
  } catch (error) {
    return `ip netns failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`
  }
}

const unavailable = netnsUnavailable()
if (unavailable !== undefined) process.stderr.write(`multi-host test skipped: ${unavailable}\n`)

describe.skipIf(unavailable !== undefined)('peers on three hosts (network namespaces)', () => {
  let dir: string
  const procs: ChildProcess[] = []
  let cluster: Cluster | undefined
  /** Peer ids of the three hosts, then the submitter's. */
  let ids: string[] = []
  /** The program's directory: on the submitting host only (each peer sees an empty tmpfs there). */
  let programDir: string

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-hosts-'))
    sh('ip', 'link', 'add', bridge, 'type', 'bridge')
    sh('ip', 'addr', 'add', `${subnet}.1/24`, 'dev', bridge)
    sh('ip', 'link', 'set', bridge, 'up')
    for (const h of hosts) {
      sh('ip', 'netns', 'add', h.ns)
      sh('ip', 'link', 'add', h.veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns)
      sh('ip', 'link', 'set', h.veth, 'master', bridge)
      sh('ip', 'link', 'set', h.veth, 'up')
      sh('ip', 'netns', 'exec', h.ns, 'ip', 'addr', 'add', `${h.ip}/24`, 'dev', 'eth0')
      sh('ip', 'netns', 'exec', h.ns, 'ip', 'link', 'set', 'eth0', 'up')
      sh('ip', 'netns', 'exec', h.ns, 'ip', 'link', 'set', 'lo', 'up')
    }
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
    cluster = await joinCluster({ bootstrap: addresses, psk: pskFile, workdir: join(dir, 'submitter'), allowlist: ids, listen: [`/ip4/${subnet}.1/tcp/0`], logger: memoryLogger() })
  }, 60_000)

  afterAll(async () => {
    await cluster?.stop()
    for (const proc of procs) proc.kill('SIGTERM')
    await Promise.all(procs.map((p) => (p.exitCode === null ? new Promise((resolve) => p.once('exit', resolve)) : undefined)))
    for (const h of hosts) {
      try {
        sh('ip', 'netns', 'del', h.ns)
      } catch {
        // already gone
      }
    }
    try {
      sh('ip', 'link', 'del', bridge)
    } catch {
      // already gone
    }
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
