// Upgrading a running job to a new version of its program on a real 3-peer cluster: refused
// before anything stops when an operator's state codec changed without a migration; otherwise a
// savepoint, then the new version (one more operator, a migrated state field) runs from it, and
// the output is what the old version gives up to the savepoint followed by the new version after
// it: every running count of every key exactly once, in order of versions, with the migrated field
// right from the first record of the new version on.
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startCluster, type Cluster } from 'lamina/cluster'
import { waitFor } from 'lamina/testing'
import { memoryLogger } from 'lamina/transport'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EVERY, finalCounts, type Out } from './fixtures/upgrade-common.js'

const v1 = new URL('./fixtures/upgrade-v1.ts', import.meta.url).pathname
const v2 = new URL('./fixtures/upgrade-v2.ts', import.meta.url).pathname
// Paced to at least 3 s (upgrade-common.ts): two upgrades (each bundles the new version) fit in it.
const RECORDS = 300_000

describe('upgrading a running job', () => {
  let dir: string
  let cluster: Cluster

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lamina-upgrade-'))
    cluster = await startCluster({ peers: 3, workdir: dir, logger: memoryLogger() })
  }, 60_000)

  afterAll(async () => {
    await cluster?.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('to a version with one more operator and a migrated state field: nothing lost or repeated; an unmigrated codec change is refused first', async () => {
    const file = join(dir, 'out.jsonl')
    const job = await cluster.submit(v1, { args: [String(RECORDS), file] })
    const events: string[] = []
    job.events.subscribe((e) => events.push(e.type))
    await waitFor(job.events, (e) => e.type === 'layer' && e.kind === 'checkpoint', 30_000, 'a first checkpoint')

    // Refused before anything stops: the job goes on under version 1.
    const refused = await job.upgrade(v2, { args: [String(RECORDS), file, 'unmigrated'] }).catch((error: unknown) => error)
    expect(refused).toMatchObject({ code: 'ERR_UPGRADE_STATE', operator: 'count', fromCodec: '{ count: number }', toCodec: '{ count: number, doubled: number }' })
    expect(events).not.toContain('upgrading')
    const before = job.code.hash

    const report = await job.upgrade(v2, { args: [String(RECORDS), file] })
    expect(report.from.hash).toBe(before)
    expect(report.to.hash).not.toBe(before)
    expect(job.code.hash).toBe(report.to.hash)
    expect(report.state).toEqual({
      kept: ['events', 'out'],
      migrated: [{ operator: 'count', from: '{ count: number }', to: '{ count: number, doubled: number }' }],
      added: ['tag'],
      removed: [],
    })
    expect(Object.keys(job.plan).some((k) => k.startsWith('tag#'))).toBe(true)
    const done = await job.done
    expect(done.upgrades).toBe(1)

    const lines = (await readFile(file, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Out)
    const finals = finalCounts(RECORDS)
    for (const [key, total] of finals) {
      const mine = lines.filter((o) => o.key === key)
      const progress = mine.filter((o) => !o.final)
      // Every running count once: what version 1 emitted up to the savepoint, then version 2.
      expect(progress.map((o) => o.count).sort((a, b) => a - b)).toEqual(Array.from({ length: Math.floor(total / EVERY) }, (_, i) => (i + 1) * EVERY))
      const lastV1 = Math.max(0, ...progress.filter((o) => o.v === 1).map((o) => o.count))
      const firstV2 = Math.min(...progress.filter((o) => o.v === 2).map((o) => o.count))
      expect(lastV1).toBeLessThan(firstV2)
      // Version 2's state came from version 1's through the migration, and its records through the new operator.
      for (const o of mine.filter((o) => o.v === 2)) expect([o.doubled, o.tag]).toEqual([o.count * 2, 'v2'])
      expect(mine.filter((o) => o.final)).toEqual([{ key, count: total, doubled: total * 2, v: 2, final: true, tag: 'v2' }])
    }
    const byVersion = [1, 2].map((v) => lines.filter((o) => o.v === v && !o.final).length)
    process.stderr.write(`upgrade: checkpoint ${report.checkpoint}, paused ${report.pauseMs} ms; ${byVersion[0]} results from version 1, ${byVersion[1]} from version 2\n`)
    expect(byVersion.every((n) => n > 0)).toBe(true)
  }, 120_000)
})
