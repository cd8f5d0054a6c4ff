// Joining with retries: members started together, each bootstrapping from the other, join once
// the other is up; a member that cannot join gives up at its deadline with the reason.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { until } from 'lamina/testing'
import { createPeerNode, generatePsk, loadOrCreateIdentity, memoryLogger, type PeerNode } from '../transport/index.js'
import { MembershipJoinError } from './errors.js'
import { startMembership, type Membership } from './index.js'

/** A TCP port free right now on loopback. */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe('joining a cluster', () => {
  let dir: string
  const psk = generatePsk()
  const nodes: PeerNode[] = []
  const memberships: Membership[] = []
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lamina-join-'))
  })
  afterEach(async () => {
    await Promise.all(memberships.splice(0).map((m) => m.stop()))
    await Promise.all(nodes.splice(0).map((n) => n.stop()))
    rmSync(dir, { recursive: true, force: true })
  })

  it('two members bootstrapping from each other, the second started after the first tried, both join', async () => {
    const [portA, portB] = [await freePort(), await freePort()]
    const [idA, idB] = [(await loadOrCreateIdentity(join(dir, 'a'))).peerId, (await loadOrCreateIdentity(join(dir, 'b'))).peerId]
    const logA = memoryLogger()
    const a = await createPeerNode({ workdir: join(dir, 'a'), psk, logger: logA, listen: [`/ip4/127.0.0.1/tcp/${portA}`] })
    nodes.push(a)
    // A starts first: B is not listening yet, so A's first round fails and it tries again.
    const joiningA = startMembership(a, { bootstrap: [`/ip4/127.0.0.1/tcp/${portB}/p2p/${idB}`], joinTimeoutMs: 15_000 })
    await until(() => logA.lines.some((line) => line.includes('no bootstrap address answers yet')), 10_000, 'A to fail its first round')
    const b = await createPeerNode({ workdir: join(dir, 'b'), psk, logger: memoryLogger(), listen: [`/ip4/127.0.0.1/tcp/${portB}`] })
    nodes.push(b)
    const joiningB = startMembership(b, { bootstrap: [`/ip4/127.0.0.1/tcp/${portA}/p2p/${idA}`], joinTimeoutMs: 15_000 })
    memberships.push(...(await Promise.all([joiningA, joiningB])))
    const [ma, mb] = memberships as [Membership, Membership]
    await until(() => ma.members().some((m) => m.peerId === idB) && mb.members().some((m) => m.peerId === idA), 10_000, 'each to see the other')
  })

  it('the seed (started without bootstrap) restarts and rejoins through the members it remembers', async () => {
    const seed = await createPeerNode({ workdir: join(dir, 'seed'), psk, logger: memoryLogger() })
    nodes.push(seed)
    const seedMembership = await startMembership(seed)
    const others = await Promise.all(
      ['a', 'b'].map(async (name) => {
        const node = await createPeerNode({ workdir: join(dir, name), psk, logger: memoryLogger() })
        nodes.push(node)
        const membership = await startMembership(node, { bootstrap: seed.multiaddrs() })
        memberships.push(membership)
        return { node, membership }
      }),
    )
    const remembered = join(dir, 'seed', 'members.json')
    const rememberedBoth = (): boolean => existsSync(remembered) && (JSON.parse(readFileSync(remembered, 'utf8')) as string[]).length === 2
    await until(rememberedBoth, 10_000, 'the seed to remember both members')
    const before = others[0]!.membership.members().find((m) => m.peerId === seed.peerId)!.generation
    // The seed goes away (its port with it) and starts again in its work directory, with no bootstrap.
    await seedMembership.stop()
    await seed.stop()
    nodes.splice(nodes.indexOf(seed), 1)
    const again = await createPeerNode({ workdir: join(dir, 'seed'), psk, logger: memoryLogger() })
    nodes.push(again)
    const rejoined = await startMembership(again)
    memberships.push(rejoined)
    await until(() => rejoined.members().length === 3, 10_000, 'the restarted seed to see both members')
    await until(
      () => others.every(({ membership }) => membership.members().some((m) => m.peerId === seed.peerId && m.generation > before && m.status === 'alive')),
      10_000,
      'both members to see the restarted seed as a new generation',
    )
  })

  it('gives up at the deadline with every address and why it failed', async () => {
    const node = await createPeerNode({ workdir: join(dir, 'alone'), psk, logger: memoryLogger() })
    nodes.push(node)
    const nobody = `/ip4/127.0.0.1/tcp/${await freePort()}/p2p/${(await loadOrCreateIdentity(join(dir, 'nobody'))).peerId}`
    const started = Date.now()
    const failure = await startMembership(node, { bootstrap: [nobody], joinTimeoutMs: 1_500 }).catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(MembershipJoinError)
    expect((failure as MembershipJoinError).rounds).toBeGreaterThan(1)
    expect((failure as Error).message).toContain(nobody)
    // Within the deadline plus one round's dial.
    expect(Date.now() - started).toBeLessThan(1_500 + 7_000)
  })
})
