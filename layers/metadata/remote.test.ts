// Metadata across peers: two kernels in one process joined by channels that encode every batch into
// DATA frames; two peers over real libp2p in this process, each with its own layer; and a launched
// cluster of peer processes, which stack the layer the program module exports.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isChannelSender, kernel, wrapChannel, type Batch, type Channel, type ChannelInfo, type Layer } from 'lamina'
import { decodeRecords, encodeRecords, type Deployment, type RemoteEnd } from 'lamina/internal'
import { memoryLogger } from 'lamina/transport'
import { Peer, startCluster, type Cluster } from '../../services/jobs/index.js'
import { generatePsk } from '../../kmods/transport/index.js'
import { tracing } from './fixtures/traced-cluster-program.js'
import build, { results } from './fixtures/traced-program.js'
import { metadata, type Lineage, type MetadataLayer } from './index.js'

const fixture = new URL('./fixtures/traced-program.ts', import.meta.url).pathname
const clusterFixture = new URL('./fixtures/traced-cluster-program.ts', import.meta.url).pathname

/** A bounded channel between two in-process "peers" whose batches cross as DATA payloads, encoded and decoded. */
class FramedChannel implements Channel {
  private batches: Batch[] = []
  private ended = false
  private readable: (() => void) | undefined
  private waiters: (() => void)[] = []
  queued = 0
  frames = 0
  constructor(
    readonly info: ChannelInfo,
    private readonly capacity: number,
  ) {}
  send(batch: Batch): void {
    const frame = decodeRecords(encodeRecords(batch.values, batch.headers), batch.values.length)
    this.frames++
    this.batches.push(frame.headers === undefined ? { values: frame.values } : { values: frame.values, headers: frame.headers })
    this.queued += frame.values.length
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

function deployment(self: string, placement: Record<string, string>, wires: Map<string, FramedChannel>): Deployment {
  return {
    self,
    peerOf: (operator, instance) => placement[`${operator}#${instance}`] ?? placement[operator] ?? 'A',
    connect: (end: RemoteEnd) => {
      const id = `${end.info.link.id}#${end.info.from.instance}->${end.info.to.instance}`
      let wire = wires.get(id)
      if (wire === undefined) wires.set(id, (wire = new FramedChannel(end.info, end.capacity)))
      return wire
    },
  }
}

/** The source ids of the numbers of `key` (see the fixture: key = n % keys). */
const idsOf = (key: number, n: number, keys: number) =>
  Array.from({ length: n }, (_, i) => i)
    .filter((i) => i % keys === key)
    .map((i) => `numbers#0:${i}`)

const path = (lineage: Lineage | undefined) => lineage?.operators.map((o) => `${o.operator}#${o.instance}@${o.peer}`)

describe('metadata across peers', () => {
  it('two kernels joined by framed channels: lineage and hops cross in the DATA frames', async () => {
    results.length = 0
    const a = metadata({ peer: 'A' })
    const b = metadata({ peer: 'B' })
    const p = build(['200', '5'])
    // numbers, count#0 and out on A; double and count#1 on B.
    const placement = { numbers: 'A', double: 'B', 'count#0': 'A', 'count#1': 'B', out: 'A' }
    const wires = new Map<string, FramedChannel>()
    const jobA = kernel.with(a).run(p, { id: 'j', deployment: deployment('A', placement, wires), batchSize: 32 })
    const jobB = kernel.with(b).run(p, { id: 'j', deployment: deployment('B', placement, wires), batchSize: 32 })
    await Promise.all([jobA.done, jobB.done])
    expect([...wires.values()].reduce((n, w) => n + w.frames, 0)).toBeGreaterThan(0)
    expect(results.map((r) => [r.key, r.count]).sort((x, y) => x[0]! - y[0]!)).toEqual([0, 1, 2, 3, 4].map((k) => [k, 40]))
    for (const { key, metadata: m } of results) {
      const lineage = a.lineage(m)
      // 40 numbers per key; the lineage keeps the first 32 (maxInputs) and counts the rest.
      expect(lineage?.inputs).toEqual(idsOf(key, 200, 5).slice(0, 32))
      expect(lineage?.dropped).toBe(8)
      const counter = path(lineage)!.find((o) => o.startsWith('count'))!
      expect(path(lineage)).toEqual(['numbers#0@A', 'double#0@B', counter])
      expect(['count#0@A', 'count#1@B']).toContain(counter)
    }
    // A's trace holds its own hops and, learned from what reached its sink, B's.
    const trace = a.toChromeTrace()
    const hops = trace.traceEvents.filter((e) => e.ph === 'X').map((e) => `${e.name}@${String(e.args!.peer)}${e.args!.remote === true ? ' (remote)' : ''}`)
    expect(new Set(hops)).toEqual(new Set(['numbers@A', 'double@B (remote)', 'count@A', 'count@B (remote)', 'out@A']))
    expect(trace.traceEvents.filter((e) => e.name === 'process_name').map((e) => e.args!.name)).toEqual(['peer A', 'peer B'])
  })

  describe('two peers over libp2p, each with the layer', () => {
    let dir: string
    const peers: Peer[] = []
    const layers: MetadataLayer[] = []
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'lamina-metadata-peers-'))
      const psk = generatePsk()
      for (let i = 0; i < 2; i++) {
        let id = ''
        // The peer's id is known once it has started: the layer asks for it when an instance starts.
        const layer = metadata({ peer: () => id })
        const peer = await Peer.start({
          workdir: join(dir, `p${i}`),
          psk,
          logger: memoryLogger(),
          kernel: kernel.with(layer),
          ...(i === 0 ? {} : { bootstrap: peers[0]!.multiaddrs() }),
        })
        id = peer.id
        peers.push(peer)
        layers.push(layer)
      }
      await Promise.all(
        peers.map(
          (p) =>
            new Promise<void>((resolve, reject) => {
              const timer = setTimeout(() => reject(new Error('membership did not converge in 10 s')), 10_000)
              const check = (): void => {
                if (p.membership.members().filter((m) => m.status === 'alive').length === 2) {
                  clearTimeout(timer)
                  subscription.unsubscribe()
                  resolve()
                }
              }
              const subscription = p.membership.events.subscribe(check)
              check()
            }),
        ),
      )
    }, 60_000)
    afterAll(async () => {
      await Promise.all(peers.map((p) => p.stop()))
      await rm(dir, { recursive: true, force: true })
    })

    it('the submitter sink gets the lineage, with the hops the other peer ran', async () => {
      results.length = 0
      const [submitter, worker] = [peers[0]!, peers[1]!]
      const job = await submitter.submit(fixture, { args: ['300', '3'] })
      await job.done
      expect(job.plan['double#0']).toBe(worker.id)
      expect(results.map((r) => [r.key, r.count]).sort((x, y) => x[0]! - y[0]!)).toEqual([0, 1, 2].map((k) => [k, 100]))
      for (const { key, metadata: m } of results) {
        const lineage = layers[0]!.lineage(m)
        expect(lineage?.inputs).toHaveLength(32) // the default bound, maxInputs
        expect(lineage?.inputs).toEqual(idsOf(key, 300, 3).slice(0, 32))
        expect(lineage?.dropped).toBe(100 - 32)
        const [numbers, double, counter] = path(lineage)!
        expect([numbers, double]).toEqual([`numbers#0@${submitter.id}`, `double#0@${worker.id}`])
        expect([`count#0@${worker.id}`, `count#1@${worker.id}`]).toContain(counter)
        expect(path(lineage)).toHaveLength(3)
      }
      const peersInTrace = layers[0]!
        .toChromeTrace({ job: job.id })
        .traceEvents.filter((e) => e.name === 'process_name')
        .map((e) => e.args!.name)
      expect(peersInTrace).toEqual([`peer ${submitter.id}`, `peer ${worker.id}`])
    })
  })

  describe('a launched cluster whose program module exports the layer', () => {
    let dir: string
    let cluster: Cluster
    const sent: Batch[] = []
    // Sees the batches the submitter sends to the peer processes (the metadata layer comes from the module).
    const spy: Layer = {
      name: 'spy',
      channel: (channel, next) => {
        const inner = next(channel)
        if (channel.info.link.from.operator !== 'numbers' || !isChannelSender(inner)) return inner
        return wrapChannel(inner, {
          send: (batch) => {
            sent.push(batch)
            inner.send(batch)
          },
        })
      },
    }
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'lamina-metadata-cluster-'))
      cluster = await startCluster({ peers: 2, workdir: dir, logger: memoryLogger(), kernel: kernel.with(spy) })
    }, 60_000)
    afterAll(async () => {
      await cluster?.stop()
      await rm(dir, { recursive: true, force: true })
    })

    it('every peer process traces: lineage and hops come back across processes', async () => {
      results.length = 0
      const job = await cluster.submit(clusterFixture, { args: ['400', '4'] })
      await job.done
      // Hops name the peer ids of the instances that ran them (InstanceInfo.peer on a cluster).
      const self = cluster.self.id
      const others = cluster.members().map((m) => m.peerId)
      expect(job.plan['double#0']).not.toBe(cluster.self.id)
      // Every number left the submitter with its metadata in the header (it crosses in DATA frames).
      const headers = sent.flatMap((b) => b.headers ?? [])
      expect(headers.map((h) => tracing.lineage(h)?.inputs[0])).toEqual(Array.from({ length: 400 }, (_, i) => `numbers#0:${i}`))
      expect(results.map((r) => [r.key, r.count]).sort((x, y) => x[0]! - y[0]!)).toEqual([0, 1, 2, 3].map((k) => [k, 100]))
      for (const { key, metadata: m } of results) {
        const lineage = tracing.lineage(m)!
        expect(lineage.inputs).toEqual(idsOf(key, 400, 4).slice(0, 32))
        expect(lineage.dropped).toBe(100 - 32)
        const [numbers, double, counter, ...rest] = lineage.operators
        expect(rest).toEqual([])
        expect(numbers).toEqual({ operator: 'numbers', instance: 0, peer: self })
        expect(double).toMatchObject({ operator: 'double', instance: 0 })
        expect(counter?.operator).toBe('count')
        expect(others).toContain(double!.peer)
        expect(others).toContain(counter!.peer)
      }
      // The submitter's trace has its own hops and the peer processes' ones its sink learned.
      const peersInTrace = tracing
        .toChromeTrace({ job: job.id })
        .traceEvents.filter((e) => e.name === 'process_name')
        .map((e) => String(e.args!.name))
      expect(peersInTrace[0]).toBe(`peer ${self}`)
      expect(peersInTrace.slice(1).every((name) => others.some((o) => name === `peer ${o}`))).toBe(true)
      expect(peersInTrace.length).toBeGreaterThan(1)
    })
  })
})
