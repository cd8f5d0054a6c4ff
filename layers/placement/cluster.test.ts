// End to end: a program runs with kernel.with(placement()) on a real local cluster of peer processes.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { kernel, type ChannelStats } from 'lamina'
import { memoryLogger } from 'lamina/transport'
import { startCluster, type Cluster } from '../../services/jobs/index.js'
import { results } from './fixtures/placed-program.js'
import { placement } from './layer.js'
import { explain, planOf, type PlacementPlan } from './plan.js'

const fixture = new URL('./fixtures/placed-program.ts', import.meta.url).pathname
const layered = new URL('./fixtures/layered-program.ts', import.meta.url).pathname
const N = 2000

/** Every channel of `link` in a cluster report, with the peer whose stats list it. */
function channelsOf(stats: { readonly [peer: string]: { readonly channels: readonly ChannelStats[] } }, link: string): (ChannelStats & { at: string })[] {
  return Object.entries(stats).flatMap(([at, s]) => s.channels.filter((c) => c.link === link).map((c) => ({ ...c, at })))
}

describe('placement on a real local cluster', () => {
  let dir: string
  let cluster: Cluster
  const logger = memoryLogger()
  const plans: PlacementPlan[] = []
  /** Peer id by `name` tag. */
  const byName: Record<string, string> = {}

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-placement-'))
    cluster = await startCluster({
      peers: 3,
      workdir: dir,
      logger,
      kernel: kernel.with(placement({ onPlan: (plan) => plans.push(plan) })),
      // Tags reach the plan context through membership: names for pins, and one peer with an ssd.
      tags: (i) => ({ name: `peer-${i}`, ...(i === 2 ? { disk: 'ssd' } : {}) }),
    })
    for (const m of cluster.self.membership.members()) if (m.tags['name'] !== undefined) byName[m.tags['name']] = m.peerId
  }, 60_000)

  afterAll(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('a pinned operator runs on the chosen peer; tags and spread are honoured; the explanation is readable', async () => {
    expect(Object.keys(byName).sort()).toEqual(['peer-0', 'peer-1', 'peer-2'])
    const self = cluster.self.id
    results.length = 0
    plans.length = 0
    const job = await cluster.submit(fixture, { args: [String(N), 'peer-1'] })
    const report = await job.done
    expect(results.sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i * 2 + 1))

    // The plan the cluster deployed by is the placement layer's.
    expect(report.plan).toMatchObject({ 'numbers#0': self, 'double#0': byName['peer-1'], 'inc#0': byName['peer-1'], 'tagged#0': byName['peer-2'], 'out#0': self })
    expect(new Set([0, 1, 2].map((i) => report.plan[`spreadOut#${i}`])).size).toBe(3)

    // The pinned operator really ran there: peer-1's own stats count its records, nobody else ran it.
    const ranDouble = Object.entries(report.stats).filter(([, s]) => s.instances.some((i) => i.operator === 'double'))
    expect(ranDouble.map(([peer]) => peer)).toEqual([byName['peer-1']])
    expect(report.stats[byName['peer-1']!]!.instances.find((i) => i.operator === 'double')!.recordsIn).toBe(N)
    expect(report.stats[byName['peer-2']!]!.instances.find((i) => i.operator === 'tagged')!.recordsIn).toBe(N)

    // The co-located link is one in-memory channel on peer-1; a link crossing peers has a channel at each end.
    expect(channelsOf(report.stats, 'double.out -> inc.in').map((c) => [c.at, c.records])).toEqual([[byName['peer-1'], N]])
    expect(
      channelsOf(report.stats, 'numbers.out -> double.in')
        .map((c) => c.at)
        .sort(),
    ).toEqual([byName['peer-1'], self].sort())

    // The explanation, from the planned program the submitter deployed.
    const plan = planOf(job.program)!
    expect(plan).toEqual(plans[0])
    const text = explain(plan).text
    expect(text).toContain(`double#0    -> ${byName['peer-1']} (peer-1)  [pin] pinned to "peer-1" (name tag)`)
    expect(text).toContain(`inc#0       -> ${byName['peer-1']} (peer-1)  [colocate] co-located with double#0, placed by pin`)
    expect(text).toContain(`tagged#0    -> ${byName['peer-2']} (peer-2)  [tags] needs tag disk=ssd`)
  }, 60_000)

  it('a co-located link opens no libp2p stream: its channel has no remote peer, while links to other peers do', async () => {
    // Pin the pair to the submitter, whose stats are read in-process (with each channel's remote `peer`).
    const self = cluster.self.id
    results.length = 0
    const job = await cluster.submit(fixture, { args: [String(N), self] })
    const report = await job.done
    expect(results).toHaveLength(N)
    expect(report.plan).toMatchObject({ 'double#0': self, 'inc#0': self, 'tagged#0': byName['peer-2'] })
    const local = report.stats[self]!.channels
    const colocated = local.filter((c) => c.link === 'double.out -> inc.in')
    expect(colocated).toHaveLength(1)
    expect(colocated[0]!.records).toBe(N)
    expect(colocated[0]).not.toHaveProperty('peer')
    // Nothing of that link anywhere else.
    expect(channelsOf(report.stats, 'double.out -> inc.in')).toHaveLength(1)
    // The link out of the pair crosses to peer-2: a remote channel (a libp2p stream), and the stats say to whom.
    expect(local.filter((c) => c.link === 'inc.out -> tagged.in').map((c) => c.peer)).toEqual([byName['peer-2']])
  }, 60_000)

  it("a program module exporting placement() runs on this cluster: the program's layer takes the place of the kernel's, and the peer says so", async () => {
    // As layers/placement/README.md's cluster and examples/wordcount.ts's `layers` together: once
    // "two layers are named placement".
    results.length = 0
    plans.length = 0
    const job = await cluster.submit(layered, { args: [String(N), 'peer-2'] })
    const report = await job.done
    expect(results.sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i * 2 + 1))
    // The program's placement placed the job (pinned to peer-2); the kernel's (which records its plans) did not run.
    expect(report.plan).toMatchObject({ 'double#0': byName['peer-2'], 'inc#0': byName['peer-2'] })
    expect(planOf(job.program)).toBeDefined()
    expect(plans).toEqual([])
    expect(logger.lines.filter((l) => l.includes(`the program's layer "placement" replaces the peer kernel's`))).not.toEqual([])
  }, 60_000)
})
