import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { memoryLogger } from '../../kmods/transport/logger.js'
import { results } from './fixtures/count-program.js'
import { answers } from './fixtures/request-program.js'
import { startCluster, type Cluster } from './launcher.js'
import { alive } from 'lamina/testing'

const fixture = new URL('./fixtures/count-program.ts', import.meta.url).pathname
const requestFixture = new URL('./fixtures/request-program.ts', import.meta.url).pathname

describe('startCluster (peer processes on loopback)', () => {
  let dir: string
  let cluster: Cluster
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-cluster-'))
    cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger() })
  }, 60_000)
  afterAll(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('starts every peer as its own process and runs a job across them', async () => {
    const members = cluster.members()
    expect(members).toHaveLength(3)
    expect(new Set(members.map((m) => m.pid)).size).toBe(3)
    expect(members.every((m) => m.pid !== process.pid && alive(m.pid!))).toBe(true)
    results.length = 0
    const job = await cluster.submit(fixture, { args: ['5000', '13'] })
    const report = await job.done
    expect(results.sort((a, b) => a[0] - b[0])).toEqual(Array.from({ length: 13 }, (_, k) => [k, Math.ceil((5000 - k) / 13)]))
    // The counter ran in the peer processes, not here.
    const here = report.stats[cluster.self.id]!.instances.map((i) => i.operator)
    expect(here).not.toContain('counter')
    expect(Object.keys(report.stats).sort()).toEqual([cluster.self.id, ...cluster.members().map((m) => m.peerId)].sort())
  })

  it('carries ctx.request between operators on two peer processes: replies, and failures as errors', async () => {
    answers.length = 0
    const job = await cluster.submit(requestFixture, { args: ['200'] })
    const report = await job.done
    // The asking and the answering operator ran on two different peers, neither the submitter.
    expect(job.plan['ask#0']).toBe(cluster.members()[0]!.peerId)
    expect(job.plan['lookup#0']).toBe(cluster.members()[1]!.peerId)
    expect(answers.sort((a, b) => a[0] - b[0])).toEqual(Array.from({ length: 200 }, (_, k) => [k, k % 7 === 0 ? -1 : k * k]))
    // A refused request is the requester's business: no dead letter on either side for the replies.
    expect(report.deadLetters.filter((d) => d.code !== 'ERR_HANDLER')).toEqual([])
  })

  it('stops every peer process: no orphans', async () => {
    const pids = cluster.members().map((m) => m.pid!)
    await cluster.stop()
    expect(pids.filter(alive)).toEqual([])
  })
})
