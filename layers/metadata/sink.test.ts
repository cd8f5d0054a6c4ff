// Traced sinks read their record's metadata from their own stack: two stacks in one process, running
// jobs of the same id at the same time, each see only their own metadata.
import { describe, expect, it } from 'vitest'
import { kernel, link, map, program, source, t } from 'lamina'
import { metadata, tracedSink, type RecordMetadata } from 'lamina/layers'

describe('recordMetadata per stack', () => {
  it('two stacks running a job of the same id keep their record metadata apart, before and after the other finishes', async () => {
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    let holding!: () => void
    const held = new Promise<void>((resolve) => (holding = resolve))
    const build = (out: (value: number, m: RecordMetadata | undefined) => unknown) => {
      const nums = source('nums', t.number, [1, 2, 3, 4])
      const double = map('double', t.number, t.number, (n) => n * 2)
      const sinkOp = tracedSink('out', t.number, out)
      return program('same', { operators: [nums, double, sinkOp], links: [link(nums.outputs.out, double.inputs.in), link(double.outputs.out, sinkOp.inputs.in)] })
    }
    const seenA: (RecordMetadata | undefined)[] = []
    const a = kernel.with(metadata({ peer: 'A' })).run(
      build(async (_value, m) => {
        seenA.push(m)
        if (seenA.length === 1) {
          holding()
          await gate
        }
      }),
      { id: 'same', batchSize: 1 },
    )
    await held
    const seenB: (RecordMetadata | undefined)[] = []
    await kernel.with(metadata({ peer: 'B' })).run(
      build((_value, m) => void seenB.push(m)),
      { id: 'same', batchSize: 1 },
    ).done
    open()
    await a.done
    for (const [seen, peer] of [
      [seenA, 'A'],
      [seenB, 'B'],
    ] as const) {
      expect(seen).toHaveLength(4)
      for (const m of seen) {
        expect(m).toBeDefined()
        expect(new Set(m!.hops.map((h) => h.peer))).toEqual(new Set([peer]))
      }
    }
  })
})
