// Two kernels in one process, each running its share of one program: the kernel side of a cluster.
// The channel joining them is an in-memory stand-in for the libp2p channel (kernel/transport).
import { describe, expect, it } from 'vitest'
import { atom, instanceOfKey, kernel, link, program, sink, source, t, type Batch, type Channel, type ChannelInfo, type Layer } from 'lamina'
import type { Deployment, RemoteEnd } from 'lamina/internal'

/** A bounded in-memory channel shared by the two "peers" (both halves in one object). */
class SharedChannel implements Channel {
  private batches: Batch[] = []
  private ended = false
  private readable: (() => void) | undefined
  private waiters: (() => void)[] = []
  queued = 0
  constructor(
    readonly info: ChannelInfo,
    private readonly capacity: number,
  ) {}
  send(batch: Batch): void {
    this.batches.push(batch)
    this.queued += batch.values.length
    this.readable?.()
  }
  ready(): boolean {
    return this.queued < this.capacity
  }
  whenReady(): Promise<void> {
    return this.ready() ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve))
  }
  end(): void {
    this.ended = true
    this.readable?.()
  }
  take(): Batch | 'end' | undefined {
    const batch = this.batches.shift()
    if (batch === undefined) return this.ended ? 'end' : undefined
    this.queued -= batch.values.length
    if (this.ready()) for (const wake of this.waiters.splice(0)) wake()
    return batch
  }
  onReadable(fn: () => void): void {
    this.readable = fn
  }
}

function deployment(self: string, placement: Record<string, string>, wires: Map<string, SharedChannel>, ends: RemoteEnd[]): Deployment {
  return {
    self,
    peerOf: (operator, instance) => placement[`${operator}#${instance}`] ?? placement[operator] ?? 'A',
    connect: (end) => {
      ends.push(end)
      const id = `${end.info.link.id}#${end.info.from.instance}->${end.info.to.instance}`
      let wire = wires.get(id)
      if (wire === undefined) wires.set(id, (wire = new SharedChannel(end.info, end.capacity)))
      return wire
    },
  }
}

describe('deployments', () => {
  it('each kernel runs only its instances; crossing links use the deployment channels', async () => {
    const numbers = source(
      'numbers',
      t.number,
      Array.from({ length: 1000 }, (_, i) => i),
    )
    const counter = atom({
      name: 'counter',
      inputs: { in: t.number },
      outputs: { out: t.tuple([t.number, t.number]) },
      key: (n) => n % 10,
      state: { codec: t.number, init: () => 0 },
      on: { in: (_n, ctx) => void ctx.state.update((c) => c + 1) },
      end: (ctx) => {
        for (const [key, count] of ctx.state.entries()) ctx.emit('out', [Number(key), count])
      },
      annotations: { parallelism: 2 },
    })
    const results: [number, number][] = []
    const out = sink('out', t.tuple([t.number, t.number]), results)
    const p = program('split', { operators: [numbers, counter, out], links: [link(numbers.outputs.out, counter.inputs.in), link(counter.outputs.out, out.inputs.in)] })
    // numbers and out on A; counter instance 0 on A, instance 1 on B.
    const placement = { numbers: 'A', 'counter#0': 'A', 'counter#1': 'B', out: 'A' }
    const wires = new Map<string, SharedChannel>()
    const endsA: RemoteEnd[] = []
    const endsB: RemoteEnd[] = []
    // Instances know the peer they run on (InstanceInfo.peer), as layers see them.
    const where: string[] = []
    const witness: Layer = { name: 'witness', instance: (spec, next) => (where.push(`${spec.info.operator}#${spec.info.instance}@${spec.info.peer}`), next(spec)) }
    const jobA = kernel.with(witness).run(p, { id: 'j', deployment: deployment('A', placement, wires, endsA), capacity: 64 })
    const jobB = kernel.with(witness).run(p, { id: 'j', deployment: deployment('B', placement, wires, endsB), capacity: 64 })
    const [a, b] = await Promise.all([jobA.done, jobB.done])
    expect(results.sort((x, y) => x[0] - y[0])).toEqual(Array.from({ length: 10 }, (_, k) => [k, 100]))
    expect(where.sort()).toEqual(['counter#0@A', 'counter#1@B', 'numbers#0@A', 'out#0@A'])
    expect(a.stats.instances.map((i) => `${i.operator}#${i.instance}`)).toEqual(['numbers#0', 'counter#0', 'out#0'])
    expect(b.stats.instances.map((i) => `${i.operator}#${i.instance}`)).toEqual(['counter#1'])
    expect(endsA.map((e) => `${e.side} ${e.info.link.id} ${e.info.from.instance}->${e.info.to.instance} @${e.peer}`).sort()).toEqual([
      'receiver counter.out -> out.in 1->0 @B',
      'sender numbers.out -> counter.in 0->1 @B',
    ])
    expect(endsB.map((e) => `${e.side} ${e.info.link.id} ${e.info.from.instance}->${e.info.to.instance} @${e.peer}`).sort()).toEqual([
      'receiver numbers.out -> counter.in 0->1 @A',
      'sender counter.out -> out.in 1->0 @A',
    ])
    expect(endsB.find((e) => e.side === 'receiver')?.codec.name).toBe('number')
    const crossing = a.stats.channels.filter((c) => c.peer === 'B')
    // Records of the keys instance 1 owns cross to B, and one count per such key comes back.
    const keysOnB = Array.from({ length: 10 }, (_, k) => k).filter((k) => instanceOfKey(k, 2) === 1).length
    expect(crossing.reduce((n, c) => n + c.records, 0)).toBe(keysOnB * 100 + keysOnB)
  })
})
