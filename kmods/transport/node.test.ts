// Tests of peer nodes with real libp2p on loopback: identity across restarts, PSK and allowlist admission with both sides' log lines.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AdmissionError } from './errors.js'
import { recordingLogger } from './interop/fixtures/recording-logger.js'
import { memoryLogger } from './logger.js'
import { createPeerNode, reachableFirst, type PeerNode, type PeerNodeOptions } from './node.js'
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
  const logger = recordingLogger()
  const node = await createPeerNode({ workdir: join(dir, `peer-${counter++}`), psk, logger, ...options })
  nodes.push(node)
  return { node, logger, lines: logger.lines }
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
    const opened: string[] = []
    b.node.libp2p.addEventListener('connection:open', (event) => void opened.push(event.detail.remotePeer.toString()))
    const started = Date.now()
    const error = await failure(a.node.dial(b.node.multiaddrs()[0]!))
    // pnet never checks the key: the next protocol reads noise and fails at once or, when that
    // noise reads as a length longer than what came, waits for libp2p's 6 s per-address dial timeout.
    expect(Date.now() - started).toBeLessThan(9000)
    expect(error.code).toBe('ERR_ADMISSION')
    expect(error.reason).toBe('psk')
    expect(error.message).toContain(PSK_MISMATCH)
    expect(error.message).toContain(b.node.multiaddrs()[0]!)
    // Nor can it open a stream.
    expect((await failure(a.node.dialProtocol(b.node.multiaddrs()[0]!, '/ipfs/ping/1.0.0'))).reason).toBe('psk')
    const refused =
      /^warn: dial to \/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\/\w+ refused: pre-shared key mismatch \(most likely another swarm key\), or not a peer of this private network \(.+\)$/
    expect(await a.logger.waitFor(2)).toEqual([expect.stringMatching(refused), expect.stringMatching(refused)])
    const inbound =
      /^warn: inbound connection from \/ip4\/127\.0\.0\.1\/tcp\/\d+ refused: pre-shared key mismatch \(most likely another swarm key\), or not a peer of this private network \(.+\)$/
    expect(await b.logger.waitFor(2)).toEqual([expect.stringMatching(inbound), expect.stringMatching(inbound)])
    expect(a.node.libp2p.getConnections()).toEqual([])
    expect(b.node.libp2p.getConnections()).toEqual([])
    expect(opened).toEqual([])
  })

  it('refuse a peer not on the allowlist, naming it, in both directions, before any protocol stream is read', async () => {
    const psk = generatePsk()
    const allowed = new Set<string>()
    const a = await start(psk, { allowlist: () => allowed })
    const c = await start(psk)
    const opened: string[] = []
    a.node.libp2p.addEventListener('connection:open', (event) => void opened.push(event.detail.remotePeer.toString()))
    let handled = 0
    await a.node.libp2p.handle('/lamina/admission-test/1.0.0', () => void handled++)

    // c dials a: a's gater refuses c right after the encrypted handshake; c learns why.
    const inbound = await failure(c.node.dial(a.node.multiaddrs()[0]!))
    expect(inbound.reason).toBe('refused-by-remote')
    expect(inbound.detail.peer).toBe(a.node.peerId)
    expect(inbound.message).toContain(`peer ${a.node.peerId}`)
    expect(inbound.message).toContain(`this peer (${c.node.peerId}) is most likely not on its allowlist`)
    expect(await a.logger.waitFor(1)).toEqual([
      expect.stringMatching(new RegExp(`^warn: refused inbound connection from peer ${c.node.peerId} at /ip4/127\\.0\\.0\\.1/tcp/\\d+: not on this node's allowlist$`)),
    ])
    expect(await c.logger.waitFor(1)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^warn: peer ${a.node.peerId} at .* refused the connection right after the encrypted handshake: this peer \\(${c.node.peerId}\\) is most likely not on its allowlist \\(.+\\)$`,
        ),
      ),
    ])
    await expect(c.node.dialProtocol(a.node.multiaddrs()[0]!, '/lamina/admission-test/1.0.0')).rejects.toMatchObject({ code: 'ERR_ADMISSION', reason: 'refused-by-remote' })
    expect(a.node.libp2p.getConnections()).toEqual([])
    expect(opened).toEqual([])
    expect(handled).toBe(0)

    // a dials c: refused locally, before dialing when the id is known, after the handshake when it is not.
    a.lines.length = 0
    c.lines.length = 0
    const byId = await failure(a.node.dial(c.node.peerId))
    expect(byId.reason).toBe('not-allowed')
    expect(byId.message).toBe(`refused to dial peer ${c.node.peerId}: not on this node's allowlist`)
    const byAddress = await failure(a.node.dialProtocol(c.node.multiaddrs()[0]!.split('/p2p/')[0]!, '/ipfs/ping/1.0.0'))
    expect(byAddress.reason).toBe('not-allowed')
    expect(byAddress.message).toContain(`peer ${c.node.peerId}`)
    expect(await a.logger.waitFor(2)).toEqual([byId.message, byAddress.message].map((m) => `warn: ${m}`))
    // c saw a leave during (or right after) the encrypted handshake.
    expect(await c.logger.waitFor(1)).toEqual([
      expect.stringMatching(
        /^warn: (inbound connection from \/ip4\/127\.0\.0\.1\/tcp\/\d+ closed during the encrypted handshake|peer \w+ at .* refused the connection right after the encrypted handshake)/,
      ),
    ])
    expect(c.node.libp2p.getConnections()).toEqual([])

    // Once on the list, c is admitted (the list is read at every connection).
    a.lines.length = 0
    allowed.add(c.node.peerId)
    const stream = await c.node.dialProtocol(a.node.multiaddrs()[0]!, '/ipfs/ping/1.0.0')
    expect(stream.protocol).toBe('/ipfs/ping/1.0.0')
    expect(opened).toEqual([c.node.peerId])
    expect(a.lines).toEqual([])
  })

  it('report start failures as typed errors', async () => {
    await expect(createPeerNode({ workdir: join(dir, 'bad'), psk: generatePsk(), listen: ['not a multiaddr'], logger: memoryLogger() })).rejects.toMatchObject({
      code: 'ERR_NODE_START',
    })
    await expect(createPeerNode({ workdir: join(dir, 'bad'), psk: new TextEncoder().encode('nope'), logger: memoryLogger() })).rejects.toMatchObject({ code: 'ERR_PSK_FORMAT' })
    const a = await start(generatePsk())
    const port = a.node.multiaddrs()[0]!.split('/')[4]
    await expect(createPeerNode({ workdir: join(dir, 'clash'), psk: generatePsk(), listen: [`/ip4/127.0.0.1/tcp/${port}`], logger: memoryLogger() })).rejects.toMatchObject({
      code: 'ERR_NODE_START',
    })
  })

  it('report a dial to nothing as DialError', async () => {
    const a = await start(generatePsk())
    const b = await start(generatePsk())
    const address = b.node.multiaddrs()[0]!
    await b.node.stop()
    await expect(a.node.dial(address)).rejects.toMatchObject({ code: 'ERR_DIAL', message: expect.stringContaining(address) })
  })
})

describe('advertised addresses', () => {
  it('put what other hosts can reach first and loopback last, keeping each group in order', () => {
    const id = '/p2p/12D3KooWA3XCnW6AfWP624hCRS1ezruYhbqYBGpwGtA5gh12NaBJ'
    const listening = [`/ip4/127.0.0.1/tcp/4101${id}`, `/ip4/10.77.1.11/tcp/4101${id}`, `/ip6/::1/tcp/4101${id}`, `/ip4/192.168.0.5/tcp/4101${id}`]
    expect(reachableFirst(listening)).toEqual([`/ip4/10.77.1.11/tcp/4101${id}`, `/ip4/192.168.0.5/tcp/4101${id}`, `/ip4/127.0.0.1/tcp/4101${id}`, `/ip6/::1/tcp/4101${id}`])
    // Loopback alone (a cluster on one host) stays as it is.
    expect(reachableFirst([`/ip4/127.0.0.1/tcp/1${id}`])).toEqual([`/ip4/127.0.0.1/tcp/1${id}`])
  })
})
