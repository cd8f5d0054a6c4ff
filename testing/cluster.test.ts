// The cluster fixture: real peer processes for a test, and nothing left behind once it stops.
import { existsSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { alive, startTestCluster, untilMembersAlive, useCluster } from 'lamina/testing'
import { sums } from './fixtures/sum-program.js'

const module = new URL('./fixtures/sum-program.ts', import.meta.url).pathname
const expected = [0, 1, 2].map((k) => [
  k,
  Array.from({ length: 300 }, (_, i) => i)
    .filter((i) => i % 3 === k)
    .reduce((a, b) => a + b, 0),
])

describe('useCluster', () => {
  const fixture = useCluster({ peers: 2 })

  it('starts peer processes, all alive in membership, and runs a job on them', async () => {
    expect(fixture.cluster.members()).toHaveLength(2)
    expect(fixture.cluster.members().every((m) => m.pid !== undefined && alive(m.pid))).toBe(true)
    await untilMembersAlive(fixture.cluster, 5_000)
    sums.length = 0
    const job = await fixture.cluster.submit(module, { args: ['300'] })
    await job.done
    expect(sums.sort((a, b) => a[0] - b[0])).toEqual(expected)
    expect(existsSync(fixture.dir)).toBe(true)
  })
})

describe('startTestCluster', () => {
  it('stop leaves no process and no directory, and can be called twice', async () => {
    const test = await startTestCluster({ peers: 1, prefix: 'lamina-fixture-' })
    const pids = test.cluster.members().map((m) => m.pid!)
    expect(pids.every(alive)).toBe(true)
    await Promise.all([test.stop(), test.stop()])
    expect(pids.filter(alive)).toEqual([])
    expect(existsSync(test.dir)).toBe(false)
  }, 60_000)
})
