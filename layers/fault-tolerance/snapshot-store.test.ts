// Tests of the checkpoint store's connections: one per file in a process, however many layer values
// (attempts) use it, and a file removed under it is opened again.
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { atom, kernel, link, program, sink, source, t, type Layer, type SourcePart } from 'lamina'
import { checkpoints } from 'lamina/layers'
import { openStore } from '../../kmods/store/index.js'
import { SnapshotStores } from './snapshot-store.js'

const dirs: string[] = []
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lamina-snapshot-store-test-'))
  dirs.push(dir)
  return dir
}

/** Descriptors of this process open on the file at `path` (Linux: /proc/self/fd). */
function descriptorsOn(path: string): number {
  let n = 0
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) === path) n++
    } catch {
      // The descriptor readdir itself used, closed by now.
    }
  }
  return n
}

/** A small keyed count whose source replays by seeking, as the checkpoints layer wants. */
function countProgram(total: number) {
  function* records(part: SourcePart): Generator<number> {
    for (let i = part.instance + part.offset * part.parallelism; i < total; i += part.parallelism) yield i
  }
  const numbers = source('numbers', t.number, records, { replay: 'seek', annotations: { parallelism: 2 } })
  const count = atom({
    name: 'count',
    inputs: { in: t.number },
    outputs: { out: t.number },
    key: (n: number) => n % 8,
    state: { codec: t.number, init: () => 0 },
    on: { in: (_n: number, ctx) => void ctx.state.update((c) => c + 1) },
    end: (ctx) => {
      for (const [, c] of ctx.state.entries()) ctx.emit('out', c)
    },
  })
  const out = sink('out', t.number, () => undefined)
  return program('counts', { operators: [numbers, count, out], links: [link(numbers.outputs.out, count.inputs.in), link(count.outputs.out, out.inputs.in)] })
}

describe('checkpoint store connections', () => {
  it.skipIf(!existsSync('/proc/self/fd'))(
    'successive attempts, each under a new checkpoints layer value (as a peer runs them), keep one connection to checkpoints.db',
    async () => {
      const dir = tempDir()
      const file = join(dir, 'checkpoints.db')
      // Held, as a peer may hold them, so that no connection is closed by the garbage collector.
      const layers: Layer[] = []
      for (let attempt = 0; attempt < 5; attempt++) {
        const layer = checkpoints({ intervalMs: 5, dir })
        layers.push(layer)
        // The layer opens the store when the job starts (its control hook), checkpoint or not.
        await kernel.with(layer).run(countProgram(50_000), { batchSize: 256, capacity: 512 }).done
        expect(descriptorsOn(file), `descriptors on checkpoints.db after attempt ${attempt}`).toBe(1)
      }
      expect(layers).toHaveLength(5)
    },
  )

  it('two layers of one process see the same store, and a store whose directory was removed is opened again', () => {
    const dir = tempDir()
    const a = new SnapshotStores().at(dir)
    const b = new SnapshotStores().at(dir)
    a.put('job', 1, 'count#0', '{"n":1}')
    expect(b.get('job', 1, 'count#0')).toBe('{"n":1}')

    rmSync(dir, { recursive: true, force: true })
    const again = new SnapshotStores().at(dir)
    expect(again.get('job', 1, 'count#0')).toBeUndefined()
    again.put('job', 2, 'count#0', '{"n":2}')
    // The write went to the file now in the directory, as another connection sees it.
    const reader = openStore(join(dir, 'checkpoints.db'), { readonly: true })
    try {
      expect(reader.get('checkpoint.snapshot', 'job/000000000002/count#0')).toBe('{"n":2}')
    } finally {
      reader.close()
    }
  })
})
