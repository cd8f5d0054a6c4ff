// Pre-authentication load: idle and slow TCP connections from one address, opened before any
// handshake and reopened as they are closed, must not lock admitted peers out of a peer.
import { mkdtemp, rm } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from 'lamina/testing'
import { memoryLogger } from '../../kmods/transport/logger.js'
import { generatePsk } from '../../kmods/transport/psk.js'
import { results } from './fixtures/count-program.js'
import { Peer } from './peer.js'

const fixture = new URL('./fixtures/count-program.ts', import.meta.url).pathname
/** The attacker's source address: another loopback address than the peers' 127.0.0.1. */
const ATTACKER = '127.0.0.2'
const CONNECTIONS = 64

/** Keeps `count` connections to `port` open from ATTACKER: half send nothing, half a byte of noise every 300 ms; each closed one is reopened. */
function flood(port: number, count: number): { opened: () => number; stop: () => void } {
  let stopped = false
  let opened = 0
  const sockets = new Set<Socket>()
  const open = (slow: boolean): void => {
    if (stopped) return
    const socket = connect({ host: '127.0.0.1', port, localAddress: ATTACKER })
    opened++
    sockets.add(socket)
    const drip = slow ? setInterval(() => socket.write(Buffer.from([0x2a])), 300) : undefined
    socket.on('error', () => undefined)
    socket.on('close', () => {
      clearInterval(drip)
      sockets.delete(socket)
      // Reopened 50 ms later (a refused one closes at once): the load lasts as long as the test.
      setTimeout(() => open(slow), 50)
    })
  }
  for (let i = 0; i < count; i++) open(i % 2 === 1)
  return {
    opened: () => opened,
    stop: () => {
      stopped = true
      for (const socket of sockets) socket.destroy()
    },
  }
}

function portOf(peer: Peer): number {
  return Number(/\/tcp\/(\d+)\//.exec(peer.multiaddrs()[0]!)![1])
}

describe('a peer under pre-authentication load', () => {
  let dir: string
  const psk = generatePsk()
  const peers: Peer[] = []
  const target = memoryLogger()
  let load: ReturnType<typeof flood> | undefined
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-preauth-'))
    peers.push(await Peer.start({ workdir: join(dir, 'submitter'), psk, logger: memoryLogger() }))
    peers.push(await Peer.start({ workdir: join(dir, 'target'), psk, logger: target, bootstrap: peers[0]!.multiaddrs() }))
    await until(() => peers[0]!.membership.members().filter((m) => m.status === 'alive').length === 2, 10_000, 'the two peers to see each other')
  })
  afterAll(async () => {
    load?.stop()
    await Promise.all(peers.map((p) => p.stop()))
    await rm(dir, { recursive: true, force: true })
  })

  it(`keeps admitting peers and runs jobs exactly while ${CONNECTIONS} idle or slow connections from one address come and go`, async () => {
    const [submitter, loaded] = peers as [Peer, Peer]
    load = flood(portOf(loaded), CONNECTIONS)
    await until(() => load!.opened() >= CONNECTIONS, 10_000, 'the idle connections to open')
    // A new peer joins through the loaded one: new admitted connections still get in.
    const joiner = await Peer.start({ workdir: join(dir, 'joiner'), psk, logger: memoryLogger(), bootstrap: loaded.multiaddrs() })
    peers.push(joiner)
    await until(() => submitter.membership.members().filter((m) => m.status === 'alive').length === 3, 15_000, 'the joiner to be seen by the submitter')
    // Jobs keep running exactly on the loaded peer, each on fresh streams, while the load goes on
    // (several handshake timeouts long: idle connections are closed and reopened meanwhile).
    const started = Date.now()
    for (let round = 0; round < 4 || Date.now() - started < 12_000; round++) {
      results.length = 0
      const job = await submitter.submit(fixture, { args: ['3000', '7'], workers: [loaded.id, joiner.id] })
      const report = await job.done
      expect(results.sort((a, b) => a[0] - b[0])).toEqual(Array.from({ length: 7 }, (_, k) => [k, Math.ceil((3000 - k) / 7)]))
      expect(report.attempts).toBe(1)
    }
    // The load was met by the limits and reported as what it is, never as a key mismatch.
    expect(load.opened()).toBeGreaterThan(CONNECTIONS)
    const about = target.lines.filter((line) => line.includes(ATTACKER))
    expect(about.length).toBeGreaterThan(0)
    expect(
      about.every((line) => /pre-authentication load|idle or slow client/.test(line)),
      about.join('\n'),
    ).toBe(true)
    expect(about.some((line) => line.includes('pre-shared key'))).toBe(false)
  }, 60_000)
})
