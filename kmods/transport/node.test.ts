// Tests of peer nodes with real libp2p on loopback: identity across restarts, PSK and allowlist admission with both sides' log lines.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AdmissionError } from './errors.js'
import { memoryLogger } from './logger.js'
import { createPeerNode, type PeerNode, type PeerNodeOptions } from './node.js'
import { generatePsk, type Psk } from './psk.js'
import { PSK_MISMATCH } from './admission.js'

let dir: string
let nodes: PeerNode[] = []
let counter = 0

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lamina-node-'))
})
afterEach(async () => {
  await Promise.all(nodes.map((n) => n.stop()))
  nodes = []
  rmSync(dir, { recursive: true, force: true })
})

async function start(psk: Psk, options: Partial<PeerNodeOptions> = {}) {
  const logger = memoryLogger()
  const node = await createPeerNode({ workdir: join(dir, `peer-${counter++}`), psk, logger, ...options })
  nodes.push(node)
  return { node, lines: logger.lines }
}

async function failure(promise: Promise<unknown>): Promise<AdmissionError> {
  try {
    await promise
  } catch (error) {
    expect(error).toBeInstanceOf(AdmissionError)
    return error as AdmissionError
  }
  throw new Error('expected the dial to fail')
}

/** Waits until `lines` has `count` entries (log lines are written as each side notices). */
async function lines(lines: string[], count: number): Promise<string[]> {
  const deadline = Date.now() + 5000
  while (lines.length < count && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve))
  return lines
}

describe('peer nodes', () => {
  it('keep their peer id across restarts in the same work directory', async () => {
    const psk = generatePsk()
    const workdir = join(dir, 'stable')
    const first = await createPeerNode({ workdir, psk, logger: memoryLogger() })
    const id = first.peerId
    await first.stop()
    await first.stop()
    const second = await createPeerNode({ workdir, psk, logger: memoryLogger() })
    nodes.push(second)
    expect(second.peerId).toBe(id)
    expect(second.multiaddrs()[0]).toMatch(new RegExp(`^/ip4/127\\.0\\.0\\.1/tcp/\\d+/p2p/${id}$`))
    const other = await start(psk)
    expect(other.node.peerId).not.toBe(id)
  })

  it('connect and open streams when they share the key', async () => {
    const psk = generatePsk()
    const a = await start(psk)
    const b = await start(psk)
    const connection = await a.node.dial(b.node.multiaddrs()[0]!)
    expect(connection.remotePeer.toString()).toBe(b.node.peerId)
    const stream = await a.node.dialProtocol(b.node.peerId, '/ipfs/ping/1.0.0')
    expect(stream.protocol).toBe('/ipfs/ping/1.0.0')
    expect(a.lines).toEqual([])
    expect(b.lines).toEqual([])
  })

  it('refuse a peer with another pre-shared key: typed error, one clear line on each side', async () => {
    const a = await start(generatePsk())
    const b = await start(generatePsk())
    const started = Date.now()
    const error = await failure(a.node.dial(b.node.multiaddrs()[0]!))
    expect(Date.now() - started).toBeLessThan(3000)
    expect(error.code).toBe('ERR_ADMISSION')
    expect(error.reason).toBe('psk')
    expect(error.message).toContain(PSK_MISMATCH)
    expect(error.message).toContain(b.node.multiaddrs()[0]!)
    // Nor can it open a stream.
    expect((await failure(a.node.dialProtocol(b.node.multiaddrs()[0]!, '/ipfs/ping/1.0.0'))).reason).toBe('psk')
    expect(await lines(a.lines, 2)).toEqual([expect.stringMatching(/^warn: dial to .* refused: pre-shared key mismatch or not a Lamina peer/), expect.stringContaining(PSK_MISMATCH)])
    expect(await lines(b.lines, 2)).toEqual([expect.stringMatching(/^warn: inbound connection from \/ip4\/127\.0\.0\.1\/tcp\/\d+ refused: pre-shared key mismatch or not a Lamina peer/), expect.stringContaining(PSK_MISMATCH)])
    expect(a.node.libp2p.getConnections()).toEqual([])
    expect(b.node.libp2p.getConnections()).toEqual([])
  })

  it('refuse a peer not on the allowlist, naming it, in both directions', async () => {
    const psk = generatePsk()
    const allowed = new Set<string>()
    const a = await start(psk, { allowlist: () => allowed })
    const c = await start(psk)

    // c dials a: a refuses c right after the encrypted handshake; c learns why.
    const inbound = await failure(c.node.dial(a.node.multiaddrs()[0]!))
    expect(inbound.reason).toBe('refused-by-remote')
    expect(inbound.detail.peer).toBe(a.node.peerId)
    expect(inbound.message).toContain(`peer ${a.node.peerId}`)
    expect(inbound.message).toContain(`this peer (${c.node.peerId}) is not on its allowlist`)
    expect(await lines(a.lines, 1)).toEqual([expect.stringMatching(new RegExp(`^warn: refused inbound connection from peer ${c.node.peerId} at /ip4/127\\.0\\.0\\.1/tcp/\\d+: not on this node's allowlist$`))])
    expect(await lines(c.lines, 1)).toEqual([expect.stringMatching(new RegExp(`^warn: peer ${a.node.peerId} at .* refused the connection: this peer \\(${c.node.peerId}\\) is not on its allowlist$`))])
    await expect(c.node.dialProtocol(a.node.multiaddrs()[0]!, '/ipfs/ping/1.0.0')).rejects.toMatchObject({ code: 'ERR_ADMISSION', reason: 'refused-by-remote' })
    expect(a.node.libp2p.getConnections()).toEqual([])

    // a dials c: refused locally, before dialing when the id is known, after the handshake when it is not.
    a.lines.length = 0
    const byId = await failure(a.node.dial(c.node.peerId))
    expect(byId.reason).toBe('not-allowed')
    expect(byId.message).toBe(`refused to dial peer ${c.node.peerId}: not on this node's allowlist`)
    const byAddress = await failure(a.node.dialProtocol(c.node.multiaddrs()[0]!.split('/p2p/')[0]!, '/ipfs/ping/1.0.0'))
    expect(byAddress.reason).toBe('not-allowed')
    expect(byAddress.message).toContain(`peer ${c.node.peerId}`)
    expect(await lines(a.lines, 2)).toEqual([byId.message, byAddress.message].map((m) => `warn: ${m}`))

    // Once on the list, c is admitted (the list is read at every connection).
    allowed.add(c.node.peerId)
    const stream = await c.node.dialProtocol(a.node.multiaddrs()[0]!, '/ipfs/ping/1.0.0')
    expect(stream.protocol).toBe('/ipfs/ping/1.0.0')
  })

  it('report start failures as typed errors', async () => {
    await expect(createPeerNode({ workdir: join(dir, 'bad'), psk: generatePsk(), listen: ['not a multiaddr'], logger: memoryLogger() })).rejects.toMatchObject({ code: 'ERR_NODE_START' })
    await expect(createPeerNode({ workdir: join(dir, 'bad'), psk: new TextEncoder().encode('nope'), logger: memoryLogger() })).rejects.toMatchObject({ code: 'ERR_PSK_FORMAT' })
    const a = await start(generatePsk())
    const port = a.node.multiaddrs()[0]!.split('/')[4]
    await expect(createPeerNode({ workdir: join(dir, 'clash'), psk: generatePsk(), listen: [`/ip4/127.0.0.1/tcp/${port}`], logger: memoryLogger() })).rejects.toMatchObject({ code: 'ERR_NODE_START' })
  })

  it('report a dial to nothing as DialError', async () => {
    const a = await start(generatePsk())
    const b = await start(generatePsk())
    const address = b.node.multiaddrs()[0]!
    await b.node.stop()
    await expect(a.node.dial(address)).rejects.toMatchObject({ code: 'ERR_DIAL', message: expect.stringContaining(address) })
  })
})
