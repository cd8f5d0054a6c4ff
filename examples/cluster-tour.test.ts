// The cluster tour of docs/guide-cluster.md, run as a user runs it: three `lamina peer` processes,
// the orders program submitted with `lamina submit`, `lamina jobs`, the peers stopped. Its output
// is the windows a plain loop computes, and it leaves no process and no directory behind.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { alive } from 'lamina/testing'
import { reference } from './fixtures/orders-reference.js'

const root = join(import.meta.dirname, '..')
const exec = promisify(execFile)

describe('the cluster tour', () => {
  it('submits the orders program to three peers, prints its windows, lists the job, and stops every peer', async () => {
    const { stdout, stderr } = await exec(process.execPath, ['--import', 'tsx', 'examples/cluster-tour.ts', '--', '20000'], { cwd: root, timeout: 90_000 })
    expect(stdout.trim().split('\n').sort()).toEqual(reference(20_000))
    // `lamina members` saw the three peers alive, with the tags placement matched.
    expect(stderr.match(/^12D3KooW\S+( \(contact\))?\s+alive\s+\S+\s+name=peer-\d$/gm)).toHaveLength(3)
    // `lamina submit` followed the job to its end; `lamina jobs` lists it finished, with every order read.
    const job = /^(orders-\S+) finished$/m.exec(stderr)?.[1]
    expect(job, stderr).toBeDefined()
    expect(stderr).toMatch(new RegExp(`^${job}\\s+finished\\s+orders\\s+\\S+\\s+1\\s+20000\\s`, 'm'))
    expect(stderr).toContain('0 dead letters')
    const pids = [...stderr.matchAll(/^peer-\d \(pid (\d+)\) listening on/gm)].map((m) => Number(m[1]))
    expect(pids).toHaveLength(3)
    expect(pids.filter(alive)).toEqual([])
    const dir = /^tour: removed (\S+)$/m.exec(stderr)?.[1]
    expect(dir).toBeDefined()
    expect(existsSync(dir!)).toBe(false)
  }, 90_000)
})
