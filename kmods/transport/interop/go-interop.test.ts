// Interoperability with a libp2p peer nobody here wrote: a stock go-libp2p program (go-peer/) against a Lamina peer node, on loopback.
// Run: npx vitest run kmods/transport/interop/go-interop.test.ts (needs `go` on PATH; the first run builds go-peer, downloading go-libp2p through the Go module proxy).

import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { generateKeyPairFromSeed } from '@libp2p/crypto/keys'
import type { IdentifyResult } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import type { Ping } from '@libp2p/ping'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { PSK_MISMATCH } from '../admission.js'
import { createPeerNode, type PeerNode } from '../node.js'
import { generatePsk, writePskFile } from '../psk.js'
import { recordingLogger, type RecordingLogger } from './fixtures/recording-logger.js'

const run = promisify(execFile)
const source = fileURLToPath(new URL('./go-peer/', import.meta.url))

/** What `go-peer -dial` prints: how far it got. */
interface GoDial {
  readonly peerId: string
  readonly remote?: string
  readonly connected: boolean
  readonly identified: boolean
  readonly protocols?: string[]
  readonly agentVersion?: string
  readonly protocolVersion?: string
  readonly pingRttMs?: number[]
  readonly stage: 'connect' | 'identify' | 'ping' | 'done' | 'start'
  readonly error?: string
}

const go = spawnSync('go', ['version'], { encoding: 'utf8' }).error === undefined
const suite = go ? 'a stock go-libp2p peer' : 'a stock go-libp2p peer (skipped: `go` is not on PATH, so go-peer/ cannot be built)'

/** Two fixed identities of the Go peer: one Lamina admits, one it does not. */
const ALLOWED_SEED = '11'.repeat(32)
const STRANGER_SEED = '22'.repeat(32)

describe.skipIf(!go)(suite, () => {
  let binary: string
  let dir: string
  let swarmKey: string
  let otherKey: string
  let node: PeerNode
  let logger: RecordingLogger
  let allowedId: string
  let strangerId: string
  const children = new Set<ChildProcess>()

  beforeAll(async () => {
    binary = await buildGoPeer()
    dir = mkdtempSync(join(tmpdir(), 'lamina-go-interop-'))
    swarmKey = join(dir, 'swarm.key')
    otherKey = join(dir, 'other.key')
    const psk = generatePsk()
    await writePskFile(swarmKey, psk)
    await writePskFile(otherKey, generatePsk())
    allowedId = await nodePeerId(ALLOWED_SEED)
    strangerId = await nodePeerId(STRANGER_SEED)
    logger = recordingLogger()
    node = await createPeerNode({ workdir: join(dir, 'lamina'), psk, allowlist: () => new Set([allowedId]), logger })
  }, 300_000)

  afterEach(async () => {
    await Promise.all([...children].map(stopChild))
    logger.lines.length = 0
  })

  afterAll(async () => {
    await node?.stop()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  it('derives the same peer id from a seed as js-libp2p does', async () => {
    const { stdout } = await run(binary, ['-seed', ALLOWED_SEED, '-print-id'])
    expect(JSON.parse(stdout)).toEqual({ peerId: allowedId })
  })

  it('with the key and an allowed id, identifies and pings a Lamina peer', async () => {
    const identified = identifyOf(node, allowedId)
    const result = await goDial(['-psk', swarmKey, '-seed', ALLOWED_SEED, '-dial', node.multiaddrs()[0]!])
    expect(result).toMatchObject({ peerId: allowedId, remote: node.peerId, connected: true, identified: true, stage: 'done' })
    expect(result.protocols).toEqual(expect.arrayContaining(['/ipfs/id/1.0.0', '/ipfs/ping/1.0.0']))
    expect(result.pingRttMs).toHaveLength(3)
    // The Lamina side identified the Go peer too.
    const theirs = await identified
    expect(theirs.agentVersion).toMatch(/go-peer|go-libp2p/)
    expect(theirs.protocols).toEqual(expect.arrayContaining(['/ipfs/ping/1.0.0']))
    expect(logger.lines.filter((line) => line.startsWith('warn'))).toEqual([])
  })

  it('with another key, is refused, and the Lamina peer says a key mismatch is most likely', async () => {
    const result = await goDial(['-psk', otherKey, '-seed', ALLOWED_SEED, '-dial', node.multiaddrs()[0]!, '-timeout', '8s'])
    expect(result.identified).toBe(false)
    expect(result.stage).toBe('connect')
    expect(await logger.waitFor(1, 15_000)).toEqual([expect.stringMatching(/^warn: inbound connection from \/ip4\/127\.0\.0\.1\/tcp\/\d+ refused: /)])
    expect(logger.lines[0]).toContain(PSK_MISMATCH)
    expect(node.libp2p.getConnections(peerIdFromString(allowedId))).toEqual([])
  })

  it('with an id off the allowlist, is refused after the encrypted handshake, and the Lamina peer names it', async () => {
    const result = await goDial(['-psk', swarmKey, '-seed', STRANGER_SEED, '-dial', node.multiaddrs()[0]!, '-timeout', '8s'])
    expect(result.peerId).toBe(strangerId)
    expect(result.identified).toBe(false)
    expect(result.stage).not.toBe('done')
    expect(await logger.waitFor(1)).toEqual([
      expect.stringMatching(new RegExp(`^warn: refused inbound connection from peer ${strangerId} at /ip4/127\\.0\\.0\\.1/tcp/\\d+: not on this node's allowlist$`)),
    ])
    expect(node.libp2p.getConnections(peerIdFromString(strangerId))).toEqual([])
  })

  it('is dialled, identified and pinged by the Lamina peer', async () => {
    const listening = await goListen(['-psk', swarmKey, '-seed', ALLOWED_SEED, '-listen', '/ip4/127.0.0.1/tcp/0'])
    expect(listening.peerId).toBe(allowedId)
    const identified = identifyOf(node, allowedId)
    const connection = await node.dial(listening.listening[0]!)
    expect(connection.remotePeer.toString()).toBe(allowedId)
    expect((await identified).protocols).toEqual(expect.arrayContaining(['/ipfs/ping/1.0.0']))
    const rtt = await (node.libp2p.services as { ping: Ping }).ping.ping(connection.remotePeer, { signal: AbortSignal.timeout(5000) })
    expect(rtt).toBeGreaterThanOrEqual(0)
    await connection.close()
  })

  /** Runs go-peer to its end and returns its JSON line. */
  async function goDial(args: string[]): Promise<GoDial> {
    const { stdout } = await run(binary, args, { timeout: 30_000 }).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? '' }))
    const line = stdout.trim().split('\n').at(-1) ?? ''
    return JSON.parse(line) as GoDial
  }

  /** Starts go-peer listening and returns its first line (its id and addresses); `afterEach` stops it. */
  async function goListen(args: string[]): Promise<{ peerId: string; listening: string[] }> {
    const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'inherit'] })
    children.add(child)
    const lines = createInterface({ input: child.stdout! })
    const first = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('go-peer did not start listening within 10 s')), 10_000)
      lines.once('line', (line) => {
        clearTimeout(timer)
        resolve(line)
      })
      child.once('exit', (code) => {
        clearTimeout(timer)
        reject(new Error(`go-peer exited with ${code} before listening`))
      })
    })
    return JSON.parse(first) as { peerId: string; listening: string[] }
  }
})

/** The js-libp2p peer id of an Ed25519 key made from `seed` (hex), as the Go peer makes its own. */
async function nodePeerId(seed: string): Promise<string> {
  return peerIdFromPrivateKey(await generateKeyPairFromSeed('Ed25519', Buffer.from(seed, 'hex'))).toString()
}

/** Resolves when `node` has identified the peer `peer`, or rejects after 10 s. */
function identifyOf(node: PeerNode, peer: string): Promise<IdentifyResult> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      node.libp2p.removeEventListener('peer:identify', listener)
      reject(new Error(`peer ${peer} was not identified within 10 s`))
    }, 10_000)
    const listener = (event: CustomEvent<IdentifyResult>): void => {
      if (event.detail.peerId.toString() !== peer) return
      clearTimeout(timer)
      node.libp2p.removeEventListener('peer:identify', listener)
      resolve(event.detail)
    }
    node.libp2p.addEventListener('peer:identify', listener)
  })
}

/** Ends a child process (closing its stdin ends go-peer's listen mode) and waits for it to exit. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.stdin?.end()
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

/**
 * Builds go-peer into a cache directory outside the repository, keyed by the hash of its sources,
 * so later runs reuse it. The first build downloads go-libp2p through the Go module proxy.
 */
async function buildGoPeer(): Promise<string> {
  const hash = createHash('sha256')
  for (const file of ['go.mod', 'go.sum', 'main.go']) hash.update(readFileSync(join(source, file)))
  const cache = join(tmpdir(), 'lamina-go-peer', hash.digest('hex').slice(0, 16))
  const binary = join(cache, 'go-peer')
  if (existsSync(binary)) return binary
  mkdirSync(cache, { recursive: true })
  const building = join(cache, `go-peer.${process.pid}.tmp`)
  await run('go', ['build', '-o', building, '.'], { cwd: source, timeout: 300_000, maxBuffer: 16 * 2 ** 20 })
  renameSync(building, binary)
  return binary
}
