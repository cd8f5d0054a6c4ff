import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { firstValueFrom, filter } from 'rxjs'
import { describe, expect, it } from 'vitest'
import { Nursery, type NurseryEvent } from './nursery.js'
import { alive, until } from 'lamina/testing'

const child = new URL('./fixtures/child.mjs', import.meta.url).pathname
const parent = new URL('./fixtures/parent.mjs', import.meta.url).pathname
const tsx = ['--import', 'tsx']

describe('nursery', () => {
  it('starts children, reports them ready, and stops every one', async () => {
    const nursery = new Nursery({ module: child, args: (i) => [`wait-${i}`], count: 3, execArgv: tsx })
    await nursery.start()
    const pids = nursery.pids()
    expect(new Set(pids).size).toBe(3)
    expect(nursery.infos().map((i) => (i as { mode: string }).mode)).toEqual(['wait-0', 'wait-1', 'wait-2'])
    expect(pids.every(alive)).toBe(true)
    await nursery.stop()
    await nursery.stop()
    expect(pids.some(alive)).toBe(false)
  })

  it('fails as a whole when a child dies under the fail policy', async () => {
    const nursery = new Nursery({ module: child, args: (i) => [i === 1 ? 'crash' : 'wait'], count: 3, execArgv: tsx })
    const started = nursery.start()
    await expect(nursery.failed).rejects.toMatchObject({ code: 'ERR_PEER_FAILED', index: 1, exitCode: 3 })
    await started.catch(() => undefined)
    await until(() => nursery.pids().length === 0, 5000, 'the other children to stop')
  })

  it('restarts a child that dies, up to the restart intensity', async () => {
    const nursery = new Nursery({ module: child, args: () => ['crash'], count: 1, execArgv: tsx, policy: { kind: 'restart', max: 2, withinMs: 60_000 } })
    const events: NurseryEvent['type'][] = []
    nursery.events.subscribe((e) => events.push(e.type))
    const failed = firstValueFrom(nursery.events.pipe(filter((e) => e.type === 'failed')))
    await nursery.start()
    await failed
    await expect(nursery.failed).rejects.toMatchObject({ code: 'ERR_PEER_FAILED' })
    expect(events.filter((e) => e === 'restart')).toHaveLength(2)
    expect(events.filter((e) => e === 'ready')).toHaveLength(3)
  })

  it('refuses a child that never becomes ready', async () => {
    const nursery = new Nursery({ module: child, args: () => ['never'], count: 1, execArgv: tsx, readyTimeoutMs: 1500 })
    await expect(nursery.start()).rejects.toMatchObject({ code: 'ERR_PEER_START' })
    expect(nursery.pids()).toEqual([])
  })

  it('leaves no orphans when the parent is killed with SIGKILL', async () => {
    const proc = spawn(process.execPath, [...tsx, parent], { stdio: ['ignore', 'pipe', 'inherit'] })
    const [line] = (await once(proc.stdout!, 'data')) as [Buffer]
    const pids = JSON.parse(line.toString()) as number[]
    expect(pids).toHaveLength(2)
    expect(pids.every(alive)).toBe(true)
    proc.kill('SIGKILL')
    await until(() => !pids.some(alive), 5000, 'the children of a killed parent to exit')
  })
})
