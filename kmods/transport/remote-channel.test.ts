// Tests of remote channels over real libp2p nodes (the transport's frame channels under the kernel's adapter): ordering, END, dead letters naming peers, requests, credit backpressure, broken links, malformed streams.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import * as t from 'io-ts'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { AnyCodec, Batch, ChannelInfo, LaminaError, Link, ReplyTo, Where } from '../../kernel/index.js'
import { encodeRecords, remoteReceiver, remoteSender, type RemoteReceiver, type RemoteSender } from '../../kernel/internal.js'
import { LinkBrokenError, RemoteRequestError } from './errors.js'
import { encodeCredit, encodeData, encodeEnd, encodeOpen } from './frames.js'
import { memoryLogger } from './logger.js'
import { createPeerNode, type PeerNode } from './node.js'
import { generatePsk, writePskFile, type Psk } from './psk.js'
import { CHANNEL_PROTOCOL } from './remote-channel.js'
import type { DialTarget } from './node.js'
import { createReceiverRegistry, type ReceiverRegistry, type StreamFrameReceiver, type StreamProblem } from './remote-receiver.js'
import { openFrameSender, type FrameSenderOptions, type StreamFrameSender } from './remote-sender.js'
import { startTransportPeer, type TransportPeerProcess } from 'lamina/testing'

let dir: string
let psk: Psk
let cleanups: (() => Promise<unknown> | unknown)[] = []

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lamina-channel-'))
  psk = generatePsk()
})
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup()
  cleanups = []
  rmSync(dir, { recursive: true, force: true })
})

let counter = 0
async function node(): Promise<PeerNode> {
  const n = await createPeerNode({ workdir: join(dir, `peer-${counter++}`), psk, logger: memoryLogger() })
  cleanups.push(() => n.stop())
  return n
}

async function registry(n: PeerNode, options: Parameters<typeof createReceiverRegistry>[1] = {}): Promise<ReceiverRegistry> {
  const r = createReceiverRegistry(n, options)
  await r.start()
  cleanups.push(() => r.stop())
  return r
}

async function peerProcess(name: string): Promise<TransportPeerProcess> {
  const pskFile = join(dir, 'swarm.key')
  await writePskFile(pskFile, psk)
  const peer = await startTransportPeer(dir, name, pskFile)
  cleanups.push(() => peer.kill())
  return peer
}

/** The receiving half of a channel: the registry's frame receiver under the kernel's adapter. */
function receiving(
  registry: ReceiverRegistry,
  spec: { info: ChannelInfo; capacity: number; codec: AnyCodec; deadLetter: (where: Where, error: LaminaError, value: unknown) => void },
): RemoteReceiver & { frames: StreamFrameReceiver } {
  const frames = registry.receive({ info: spec.info })
  return Object.assign(remoteReceiver(frames, spec), { frames })
}

/** The sending half of a channel: a frame sender over a libp2p stream under the kernel's adapter. */
function sending(n: PeerNode, target: DialTarget, info: ChannelInfo, options?: FrameSenderOptions): RemoteSender & { frames: StreamFrameSender } {
  const frames = openFrameSender(n, target, info, options)
  return Object.assign(remoteSender(frames, { info, deadLetter: () => expect.unreachable() }), { frames })
}

function channelInfo(job = 'job', from = 0, to = 0): ChannelInfo {
  const link: Link = { from: { operator: 'source', port: 'out' }, to: { operator: 'sink', port: 'in' }, partitioning: undefined, capacity: undefined, id: 'source.out -> sink.in' }
  return { job, link, from: { operator: 'source', port: 'out', instance: from }, to: { operator: 'sink', port: 'in', instance: to } }
}

/** Takes every batch until END (or the link's error), as a consuming atom would on `onReadable`. */
function collect(receiver: RemoteReceiver): Promise<unknown[]> {
  const values: unknown[] = []
  return new Promise((resolve, reject) => {
    const drain = (): void => {
      try {
        for (;;) {
          const batch = receiver.take()
          if (batch === undefined) return
          if (batch === 'end') return resolve(values)
          for (const value of batch.values) values.push(value)
        }
      } catch (error) {
        reject(error)
      }
    }
    receiver.onReadable(drain)
    drain()
  })
}

/** Sends every batch, waiting for credit like a producing atom. */
async function produce(sender: RemoteSender, batches: Iterable<Batch>, end = true): Promise<void> {
  for (const batch of batches) {
    if (!sender.ready()) await sender.whenReady()
    sender.send(batch)
  }
  if (end) sender.end()
}

function* numbers(count: number, batch: number): Generator<Batch> {
  for (let i = 0; i < count; i += batch) yield { values: Array.from({ length: Math.min(batch, count - i) }, (_, k) => i + k) }
}

/** Resolves with the error `promise` rejects with. */
async function rejection(promise: Promise<unknown>): Promise<LaminaError> {
  try {
    await promise
  } catch (error) {
    return error as LaminaError
  }
  throw new Error('expected a rejection')
}

describe('remote channels', () => {
  it('deliver 100,000 records in order, then END, within the credit', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const receivers = await registry(b)
    const info = channelInfo()
    const receiver = receiving(receivers, { info, capacity: 4096, codec: t.number, deadLetter: () => expect.unreachable() })
    const sender = sending(a, b.multiaddrs()[0]!, info)
    const received = collect(receiver)
    await produce(sender, numbers(100_000, 1000))
    const values = await received
    expect(values).toHaveLength(100_000)
    expect(values.every((v, i) => v === i)).toBe(true)
    await Promise.all([sender.done, receiver.done])
    expect(sender.peer).toBe(b.peerId)
    expect(receiver.peer).toBe(a.peerId)
    expect(sender.frames.stats().maxInFlight).toBeLessThanOrEqual(4096)
    expect(receiver.stats().maxQueued).toBeLessThanOrEqual(4096)
    expect(receiver.take()).toBe('end')
    expect(receivers.active).toBe(0)
  })

  it('carry strings, JSON values and header fields; END on an empty channel', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const receivers = await registry(b)
    const values = ['plain', 'ünïcödé 🎉', { word: 'x', n: 1 }, [1, 2], null, 42]
    const receiver = receiving(receivers, { info: channelInfo('j1'), capacity: 16, codec: t.unknown, deadLetter: () => expect.unreachable() })
    const batches: Batch[] = []
    receiver.onReadable(() => {
      for (let b = receiver.take(); typeof b === 'object'; b = receiver.take()) batches.push(b)
    })
    // Dialing by peer id needs its addresses: a connection (or the peer store) provides them.
    await a.dial(b.multiaddrs()[0]!)
    const sender = sending(a, b.peerId, channelInfo('j1'))
    await produce(sender, [{ values, headers: values.map((_, i) => (i % 2 === 0 ? { fields: { trace: { id: i } } } : undefined)) }])
    await receiver.done
    expect(batches.flatMap((b) => b.values)).toEqual(values)
    expect(batches[0]!.headers?.map((h) => h?.fields)).toEqual([{ trace: { id: 0 } }, undefined, { trace: { id: 2 } }, undefined, { trace: { id: 4 } }, undefined])

    const empty = receiving(receivers, { info: channelInfo('j2'), capacity: 16, codec: t.string, deadLetter: () => undefined })
    const emptySender = sending(a, b.multiaddrs()[0]!, channelInfo('j2'))
    emptySender.end()
    expect(await collect(empty)).toEqual([])
    await emptySender.done
  })

  it('turn values failing the port codec into dead letters naming the sending peer, and deliver the rest', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const receivers = await registry(b)
    const dead: { where: Where; error: LaminaError; value: unknown }[] = []
    const info = channelInfo('dl', 2, 3)
    const receiver = receiving(receivers, { info, capacity: 8, codec: t.number, deadLetter: (where, error, value) => dead.push({ where, error, value }) })
    const sender = sending(a, b.multiaddrs()[0]!, info)
    const received = collect(receiver)
    await produce(sender, [{ values: [1, 'two', 3, { four: 4 }, 5] }, { values: ['six', 'seven'] }, ...numbers(100, 7)])
    const values = await received
    expect(values.slice(0, 3)).toEqual([1, 3, 5])
    expect(values.slice(3)).toEqual(Array.from({ length: 100 }, (_, i) => i))
    expect(dead.map((d) => d.value)).toEqual(['two', { four: 4 }, 'six', 'seven'])
    for (const d of dead) {
      expect(d.where).toEqual({ operator: 'sink', port: 'in', instance: 3, peer: a.peerId })
      expect(d.error.code).toBe('ERR_DECODE')
    }
    expect(dead[0]!.error.message).toBe('sink.in: expected number, got "two"')
    expect(receiver.stats().deadLetters).toBe(4)
    // (Codecs that throw, paths inside values and the credit of dead letters: kernel/remote/remote.test.ts.)
  })

  it('carry requests across peers: replies and failures come back in REPLY frames, in any order', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const receivers = await registry(b)
    const info = channelInfo('rq')
    const dead: unknown[] = []
    const receiver = receiving(receivers, { info, capacity: 16, codec: t.number, deadLetter: (_where, _error, value) => dead.push(value) })
    const sender = sending(a, b.multiaddrs()[0]!, info)
    const outcomes = new Map<number, Parameters<ReplyTo>[0]>()
    const answered = new Promise<void>((resolve) => {
      const expect = 4
      const reply =
        (n: number): ReplyTo =>
        (outcome) => {
          outcomes.set(n, outcome)
          if (outcomes.size === expect) resolve()
        }
      sender.send({
        values: [1, 2, 'three', 4, 5],
        headers: [{ reply: reply(1) }, undefined, { reply: reply(3) }, { reply: reply(4), fields: { trace: 'x' } }, { reply: reply(5) }],
      })
    })
    // The consumer answers 5 before 1 and fails 4; 'three' fails the port's codec over there.
    const batch = await new Promise<Batch>((resolve) => {
      const poll = (): void => {
        const taken = receiver.take()
        if (taken !== undefined && taken !== 'end') resolve(taken)
      }
      receiver.onReadable(poll)
      poll()
    })
    expect(batch.values).toEqual([1, 2, 4, 5])
    expect(batch.headers?.[1]).toBeUndefined()
    expect(batch.headers?.[2]?.fields).toEqual({ trace: 'x' })
    batch.headers![3]!.reply!({ ok: true, value: { doubled: 10 } })
    batch.headers![0]!.reply!({ ok: true, value: 2 })
    batch.headers![2]!.reply!({ ok: false, error: new RangeError('4 is out of range') })
    await answered
    expect(outcomes.get(1)).toEqual({ ok: true, value: 2 })
    expect(outcomes.get(5)).toEqual({ ok: true, value: { doubled: 10 } })
    const failed = outcomes.get(4) as { ok: false; error: RemoteRequestError }
    expect(failed.error).toBeInstanceOf(RemoteRequestError)
    expect(failed.error).toMatchObject({ code: 'ERR_REMOTE_REQUEST', peer: b.peerId, remoteCode: 'ERR_HANDLER', remoteMessage: '4 is out of range' })
    const refused = outcomes.get(3) as { ok: false; error: RemoteRequestError }
    expect(refused.error).toMatchObject({ code: 'ERR_REMOTE_REQUEST', remoteCode: 'ERR_DECODE', remoteMessage: 'sink.in: expected number, got "three"' })
    expect(dead).toEqual(['three'])
    sender.end()
    await Promise.all([sender.done, receiver.done])
  })

  it('a request still owed at END keeps the link open until its reply; a broken link fails the requests waiting', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const receivers = await registry(b)
    const receiver = receiving(receivers, { info: channelInfo('owed'), capacity: 4, codec: t.number, deadLetter: () => undefined })
    const sender = sending(a, b.multiaddrs()[0]!, channelInfo('owed'))
    let settle!: (outcome: Parameters<ReplyTo>[0]) => void
    const replied = new Promise<Parameters<ReplyTo>[0]>((resolve) => (settle = resolve))
    sender.send({ values: [7], headers: [{ reply: (outcome) => settle(outcome) }] })
    sender.end()
    const ended = new Promise<Batch>((resolve) => {
      let first: Batch | undefined
      const poll = (): void => {
        for (;;) {
          const taken = receiver.take()
          if (taken === undefined) return
          if (taken === 'end') return resolve(first!)
          first ??= taken
        }
      }
      receiver.onReadable(poll)
      poll()
    })
    const batch = await ended
    // END arrived here, and the reply still reaches the producer: this side stayed open for it.
    batch.headers![0]!.reply!({ ok: true, value: 49 })
    expect(await replied).toEqual({ ok: true, value: 49 })
    await Promise.all([sender.done, receiver.done])

    const broken = receiving(receivers, { info: channelInfo('gone'), capacity: 4, codec: t.number, deadLetter: () => undefined })
    const second = sending(a, b.multiaddrs()[0]!, channelInfo('gone'))
    const failure = new Promise<Parameters<ReplyTo>[0]>((resolve) => second.send({ values: [1], headers: [{ reply: resolve }] }))
    await new Promise<void>((resolve) => broken.onReadable(() => resolve()))
    broken.abort('consumer gave up')
    const outcome = await failure
    expect(outcome.ok).toBe(false)
    expect((outcome as { error: unknown }).error).toBeInstanceOf(LinkBrokenError)
  })

  it('bound the bytes in flight besides the records: 64 KiB records stop at the byte window, not at the record credit', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const receivers = await registry(b)
    const info = channelInfo('big')
    const receiver = receiving(receivers, { info, capacity: 4096, codec: t.string, deadLetter: () => undefined })
    const window = 1024 * 1024
    const sender = sending(a, b.multiaddrs()[0]!, info, { maxBytesInFlight: window })
    await sender.frames.opened
    const records = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(6, '0')}${'x'.repeat(64 * 1024 - 6)}`)
    sender.send({ values: records })
    // The consumer takes nothing yet: the sender stalls once the window is full, far below 4096 records.
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (receiver.stats().received === sender.frames.stats().sent && sender.stats().pending > 0) resolve()
      }
      receiver.onReadable(check)
      check()
    })
    const frame = 1024 * 1024 + 64 * 1024
    expect(sender.frames.stats().bytesInFlight).toBeLessThanOrEqual(window + frame)
    expect(receiver.stats().queued).toBeLessThan(40)
    expect(sender.ready()).toBe(false)
    sender.end()
    const values = await collect(receiver)
    expect(values).toEqual(records)
    await Promise.all([sender.done, receiver.done])
    expect(sender.frames.stats().maxBytesInFlight).toBeLessThanOrEqual(window + frame)
    expect(sender.frames.stats().bytesInFlight).toBe(0)
  })

  it('wait for a receiver registered after the stream arrived, and refuse unknown channels after the match timeout', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const problems: StreamProblem[] = []
    const receivers = await registry(b, { matchTimeoutMs: 300, onStreamProblem: (problem) => problems.push(problem) })
    const late = sending(a, b.multiaddrs()[0]!, channelInfo('late'))
    const lateDone = produce(late, numbers(10, 5))
    // Register once b has seen the stream (the sender's OPEN is parked until then).
    await new Promise<void>((resolve) => b.libp2p.addEventListener('connection:open', () => resolve(), { once: true }))
    const receiver = receiving(receivers, { info: channelInfo('late'), capacity: 4, codec: t.number, deadLetter: () => undefined })
    expect(await collect(receiver)).toEqual(Array.from({ length: 10 }, (_, i) => i))
    await lateDone

    const unknown = sending(a, b.multiaddrs()[0]!, channelInfo('nobody'))
    const error = await rejection(unknown.whenReady())
    expect(error).toBeInstanceOf(LinkBrokenError)
    expect(error.message).toContain('ERR_CHANNEL_UNKNOWN')
    expect(error.message).toContain('nobody/source.out -> sink.in#0->0')
    expect(problems.map((p) => p.code)).toEqual(['ERR_CHANNEL_UNKNOWN'])
    expect(() => receiving(receivers, { info: channelInfo('dup'), capacity: 1, codec: t.number, deadLetter: () => undefined })).not.toThrow()
    expect(() => receiving(receivers, { info: channelInfo('dup'), capacity: 1, codec: t.number, deadLetter: () => undefined })).toThrow(
      expect.objectContaining({ code: 'ERR_CHANNEL_DUPLICATE' }),
    )
  })

  it('abort on either side breaks both halves; whenReady honours its signal', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const receivers = await registry(b)
    const receiver = receiving(receivers, { info: channelInfo('ab'), capacity: 2, codec: t.number, deadLetter: () => undefined })
    const arrived = new Promise<void>((resolve) => receiver.onReadable(() => resolve()))
    const sender = sending(a, b.multiaddrs()[0]!, channelInfo('ab'))
    await sender.frames.opened
    sender.send({ values: [1, 2] })
    await arrived
    const controller = new AbortController()
    const waiting = sender.whenReady(controller.signal)
    controller.abort('stop waiting')
    expect(await rejection(waiting)).toMatchObject({ code: 'ERR_JOB_ABORTED' })
    const blocked = sender.whenReady()
    receiver.abort('consumer gave up')
    const error = await rejection(blocked)
    expect(error).toMatchObject({ code: 'ERR_LINK_BROKEN', link: 'ab/source.out -> sink.in#0->0', peer: b.peerId })
    expect(error.message).toContain('consumer gave up')
    expect(() => sender.send({ values: [3] })).toThrow(LinkBrokenError)
    // What arrived before the abort is still delivered, then the error.
    expect(receiver.take()).toEqual({ values: [1, 2] })
    expect(() => receiver.take()).toThrow(LinkBrokenError)
  })

  it('reset a sender that sends past its credit, and refuse sends after end', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const problems: StreamProblem[] = []
    const receivers = await registry(b, { onStreamProblem: (problem) => problems.push(problem) })
    const info = channelInfo('greedy')
    const receiver = receiving(receivers, { info, capacity: 3, codec: t.number, deadLetter: () => undefined })
    const failed = collect(receiver).catch((error: unknown) => error)
    // A hand-written producer that ignores the credit it is given.
    const stream = await a.dialProtocol(b.multiaddrs()[0]!, CHANNEL_PROTOCOL)
    const credit = new Promise<Uint8Array>((resolve) => stream.addEventListener('message', (e) => resolve(e.data.subarray()), { once: true }))
    stream.send(encodeOpen({ job: 'greedy', link: info.link.id, from: 0, to: 0 }))
    expect(Buffer.from(await credit).equals(Buffer.from(encodeCredit(3)))).toBe(true)
    stream.send(encodeData(encodeRecords([1, 2, 3, 4]), 4))
    const error = (await failed) as LaminaError
    expect(error).toBeInstanceOf(LinkBrokenError)
    expect(error.message).toContain('4 records arrived with 3 credit left')
    expect(problems.map((p) => p.code)).toEqual(['ERR_LINK_PROTOCOL'])

    const other = receiving(receivers, { info: channelInfo('ended'), capacity: 3, codec: t.number, deadLetter: () => undefined })
    const sender = sending(a, b.multiaddrs()[0]!, channelInfo('ended'))
    sender.end()
    expect(() => sender.send({ values: [1] })).toThrow(expect.objectContaining({ code: 'ERR_CHANNEL_ENDED' }))
    expect(await collect(other)).toEqual([])
    await sender.done
    await expect(sender.whenReady()).resolves.toBeUndefined()
  })

  it('a slow consumer in another process blocks the producer at the credit, and memory stays bounded on both sides', async () => {
    const a = await node()
    const consumer = await peerProcess('consumer')
    const capacity = 1000
    const info = channelInfo('slow')
    consumer.send({ cmd: 'receive', id: 'slow', info, capacity, codec: 'string', paused: true })
    const sender = sending(a, consumer.address, info)
    const record = (i: number): string => String(i).padStart(12, '0') + 'x'.repeat(1000 - 12)
    const total = 100_000 // 100 MB of records
    let produced = 0
    let heapPeak = 0
    const heapBase = process.memoryUsage().heapUsed
    let taken = 0
    const check = (): void => {
      const stats = sender.frames.stats()
      // The invariant of credit-based flow control: never more in flight than the consumer granted.
      expect(stats.inFlight).toBeLessThanOrEqual(capacity)
      expect(stats.sent).toBeLessThanOrEqual(taken + capacity)
    }
    const producing = (async () => {
      while (produced < total) {
        if (!sender.ready()) await sender.whenReady()
        check()
        const values: string[] = []
        for (let k = 0; k < 100; k++) values.push(record(produced++))
        sender.send({ values })
        heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed)
      }
      sender.end()
    })()
    // Paused consumer: once its peer holds `capacity` records, the producer can send nothing more.
    await sender.frames.opened
    let stats = await statsOf(consumer, 'slow')
    while ((stats.stats as { received: number }).received < capacity) stats = await statsOf(consumer, 'slow')
    expect(stats.stats).toMatchObject({ received: capacity, queued: capacity, granted: capacity })
    expect(sender.ready()).toBe(false)
    expect(sender.frames.stats()).toMatchObject({ sent: capacity, credit: 0 })
    expect(sender.stats().pending).toBeLessThanOrEqual(100)
    // Let it take a few batches at a time: the producer follows, never ahead by more than the credit
    // (which comes back in chunks of a quarter of the capacity).
    for (let step = 0; step < 5; step++) {
      consumer.send({ cmd: 'consume', id: 'slow', batches: 5 })
      taken += 500
      while (sender.frames.stats().sent < taken + capacity - capacity / 4) await new Promise<void>((resolve) => setImmediate(resolve))
      check()
      stats = await statsOf(consumer, 'slow')
      expect((stats.stats as { received: number }).received).toBeLessThanOrEqual(taken + capacity)
    }
    // Then at full speed: 100 MB flows through a 1 MB window.
    taken = Infinity
    consumer.send({ cmd: 'consume', id: 'slow' })
    const report = await consumer.next('received', 'slow', 60_000)
    await producing
    await sender.done
    expect(report).toMatchObject({ count: total, ordered: true })
    expect(sender.frames.stats().maxInFlight).toBeLessThanOrEqual(capacity)
    expect(report.heapPeakMb).toBeLessThan(96)
    expect((heapPeak - heapBase) / 2 ** 20).toBeLessThan(64)
  }, 60_000)

  it('killing the consumer process breaks the producer: pending whenReady rejects with LinkBrokenError naming link and peer', async () => {
    const a = await node()
    const consumer = await peerProcess('consumer')
    const info = channelInfo('kill-consumer')
    consumer.send({ cmd: 'receive', id: 'k', info, capacity: 10, codec: 'string', paused: true })
    const sender = sending(a, consumer.address, info)
    await sender.frames.opened
    sender.send({ values: Array.from({ length: 10 }, (_, i) => String(i)) })
    const blocked = rejection(sender.whenReady())
    await consumer.kill()
    const error = await blocked
    expect(error).toBeInstanceOf(LinkBrokenError)
    expect(error).toMatchObject({ code: 'ERR_LINK_BROKEN', link: 'kill-consumer/source.out -> sink.in#0->0', peer: consumer.peerId })
    expect(error.message).toContain(consumer.peerId)
    expect(() => sender.send({ values: ['more'] })).toThrow(LinkBrokenError)
    expect(await rejection(sender.done)).toBe(error)
  })

  it('killing the producer process breaks the consumer: take() throws LinkBrokenError naming link and peer', async () => {
    const b = await node()
    const receivers = await registry(b)
    const producer = await peerProcess('producer')
    const info = channelInfo('kill-producer')
    const receiver = receiving(receivers, { info, capacity: 1000, codec: t.string, deadLetter: () => undefined })
    let received = 0
    const broken = new Promise<unknown>((resolve) => {
      receiver.onReadable(() => {
        try {
          for (let batch = receiver.take(); batch !== undefined; batch = receiver.take()) {
            if (batch === 'end') return resolve('end')
            received += batch.values.length
            // Kill the producer once data flows (it would send 10 million records).
            if (received >= 5000 && producer.child.exitCode === null) producer.child.kill('SIGKILL')
          }
        } catch (error) {
          resolve(error)
        }
      })
    })
    producer.send({ cmd: 'send', id: 'p', target: b.multiaddrs()[0]!, info, count: 10_000_000, recordBytes: 100, batch: 500 })
    const error = (await broken) as LaminaError
    expect(error).toBeInstanceOf(LinkBrokenError)
    expect(error).toMatchObject({ code: 'ERR_LINK_BROKEN', link: 'kill-producer/source.out -> sink.in#0->0', peer: producer.peerId })
    expect(() => receiver.take()).toThrow(LinkBrokenError)
    expect(await rejection(receiver.done)).toBe(error)
    expect(await producer.exited).toBe('SIGKILL')
  })

  it('survive 10,000 random, truncated and protocol-breaking streams, each reset and recorded, then serve a correct channel', async () => {
    const [a, b] = await Promise.all([node(), node()])
    const problems: StreamProblem[] = []
    const receivers = await registry(b, { matchTimeoutMs: 50, onStreamProblem: (problem) => problems.push(problem) })
    const open = encodeOpen({ job: 'fuzz', link: 'x', from: 0, to: 0 })
    const valid = [open, encodeData(encodeRecords([1, 2, 3]), 3), encodeData(encodeRecords(['a']), 1), encodeCredit(5), encodeEnd()]
    const garbage = fc.oneof(
      // random bytes
      fc.uint8Array({ minLength: 1, maxLength: 80 }),
      // a valid frame sequence, truncated
      fc.tuple(fc.array(fc.constantFrom(...valid), { minLength: 1, maxLength: 4 }), fc.nat()).map(([frames, cut]) => {
        const bytes = Buffer.concat(frames)
        return bytes.subarray(0, 1 + (cut % (bytes.byteLength - 1)))
      }),
      // OPEN, then random bytes
      fc.uint8Array({ minLength: 1, maxLength: 60 }).map((tail) => Buffer.concat([open, tail])),
      // well-formed frames that break the protocol (DATA before credit, CREDIT from a producer, no OPEN)
      fc.constantFrom(Buffer.concat([open, encodeData(encodeRecords([1]), 1)]), Buffer.concat([open, encodeCredit(1)]), encodeData(encodeRecords(['no open']), 1), encodeEnd()),
    )
    const samples = fc.sample(garbage, { numRuns: 10_000, seed: 42 })
    const connection = await a.dial(b.multiaddrs()[0]!)
    const sendGarbage = async (bytes: Uint8Array): Promise<void> => {
      const stream = await connection.newStream(CHANNEL_PROTOCOL)
      const closed = new Promise<void>((resolve) => stream.addEventListener('close', () => resolve(), { once: true }))
      stream.send(bytes)
      await stream.close().catch(() => undefined)
      await closed
    }
    let next = 0
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < samples.length) await sendGarbage(samples[next++]!)
      }),
    )
    expect(next).toBe(10_000)
    // Every garbage stream was refused (reset with a reason); none became a channel.
    expect(problems.length).toBe(10_000)
    const codes = new Set(problems.map((p) => p.code))
    expect([...codes].every((code) => ['ERR_FRAME', 'ERR_LINK_PROTOCOL', 'ERR_CHANNEL_UNKNOWN', 'ERR_CHANNEL_DUPLICATE'].includes(code))).toBe(true)
    expect(codes.has('ERR_FRAME') && codes.has('ERR_LINK_PROTOCOL')).toBe(true)
    expect(receivers.active).toBe(0)
    // The node, and the same connection, still serve a real channel.
    const info = channelInfo('after-fuzz')
    const receiver = receiving(receivers, { info, capacity: 64, codec: t.number, deadLetter: () => expect.unreachable() })
    const sender = sending(a, b.peerId, info)
    const received = collect(receiver)
    await produce(sender, numbers(5000, 50))
    expect(await received).toEqual(Array.from({ length: 5000 }, (_, i) => i))
    expect(a.libp2p.getConnections(b.libp2p.peerId)).toContain(connection)
  }, 120_000)
})

async function statsOf(peer: TransportPeerProcess, id: string) {
  peer.send({ cmd: 'stats', id })
  return peer.next('stats', id)
}
