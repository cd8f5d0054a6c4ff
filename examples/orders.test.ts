// The orders example in one process and on a local cluster of three peer processes (the compiled
// CLI, as docs/guide-dataflow.md runs it): both print the windows a plain loop computes.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { kernel, type WindowResult } from 'lamina'
import { explain, planOf } from 'lamina/layers'
import { alive } from 'lamina/testing'
import { reference } from './fixtures/orders-reference.js'
import { formatRevenue, layers, OUT_OF_ORDER_MS, orderAt, orders, type Revenue } from './orders.js'

const root = join(import.meta.dirname, '..')
const cli = join(root, 'dist', 'cli', 'lamina.js')
const exec = promisify(execFile)

describe('orders', () => {
  it('generates orders out of order, but never by more than the declared bound', () => {
    let latest = Number.NEGATIVE_INFINITY
    let disordered = 0
    for (let i = 0; i < 10_000; i++) {
      const { time } = orderAt(i)
      expect(time).toBeGreaterThan(latest - OUT_OF_ORDER_MS)
      if (time < latest) disordered++
      latest = Math.max(latest, time)
    }
    // Enough disorder that windows must wait for the watermark, not for the next window's first order.
    expect(disordered).toBeGreaterThan(1000)
    expect(orderAt(1234)).toEqual(orderAt(1234))
  })

  it('in one process, prints the windows of a plain computation, each once, none late', async () => {
    const rows: WindowResult<Revenue>[] = []
    const report = await kernel.run(orders({ count: 20_000, out: (row) => void rows.push(row) })).done
    expect(report.deadLetters).toEqual([])
    expect(rows.every((row) => !row.late)).toBe(true)
    expect(rows.map(formatRevenue).sort()).toEqual(reference(20_000))
  })

  it('previews its placement on three imagined peers: paid spread, sale beside it, the windows on peer-0', async () => {
    const peers = [{ id: 'submitter', tags: {} }, ...[0, 1, 2].map((i) => ({ id: `p${i}`, tags: { name: `peer-${i}` } }))]
    const planned = await kernel.with(...layers).plan(orders({ out: () => undefined }), { peers, self: 'submitter' })
    const peerOf = new Map(explain(planOf(planned)!).entries.map((e) => [e.id, e.peer]))
    expect(new Set([0, 1, 2].map((i) => peerOf.get(`paid#${i}`))).size).toBe(3)
    for (const i of [0, 1, 2]) expect(peerOf.get(`sale#${i}`)).toBe(peerOf.get(`paid#${i}`))
    expect([peerOf.get('revenue#0'), peerOf.get('revenue#1')]).toEqual(['p0', 'p0'])
    expect([peerOf.get('orders#0'), peerOf.get('print#0')]).toEqual(['submitter', 'submitter'])
  })

  it('on three peer processes (`lamina run --peers 3`), prints the same windows, and stops every peer', async () => {
    const count = 30_000
    const { stdout, stderr } = await exec(process.execPath, [cli, 'run', 'examples/orders.ts', '--peers', '3', '--', String(count)], { cwd: root, timeout: 60_000 })
    expect(stdout.trim().split('\n').sort()).toEqual(reference(count))
    expect(stderr).toContain('0 dead letters')
    expect(stderr).toMatch(/revenue#0 +-> \S+ \(peer-0\) +\[tags\] needs tag name=peer-0/)
    const pids = [...stderr.matchAll(/pid (\d+)/g)].map((m) => Number(m[1]))
    expect(pids).toHaveLength(3)
    expect(pids.filter(alive)).toEqual([])
  }, 60_000)
})
