// Tests of the remote-channel adapter over the in-memory frame-channel pair: order and END, dead letters with their path, requests and replies, markers, failures, credit and backpressure.
import * as t from 'io-ts'
import { describe, expect, it } from 'vitest'
import { memoryFrameChannel, type MemoryFrameChannel, type MemoryFrameChannelOptions } from 'lamina/testing'
import type { Batch, ChannelInfo, Link, ReplyTo } from '../contracts.js'
import type { FrameSenderHandler } from '../contracts/frames.js'
import type { LaminaError, Where } from '../errors.js'
import { LinkBrokenError, PayloadError, RemoteRequestError, UnencodableValueError } from './errors.js'
import { encodeRecords } from './payload.js'
import { remoteReceiver, type RemoteReceiver, type RemoteReceiverOptions } from './receiver.js'
import { linkName, remoteSender, type RemoteSender, type RemoteSenderOptions } from './sender.js'

function channelInfo(job = 'job', from = 0, to = 0): ChannelInfo {
  const link: Link = { from: { operator: 'source', port: 'out' }, to: { operator: 'sink', port: 'in' }, partitioning: undefined, capacity: undefined, id: 'source.out -> sink.in' }
  return { job, link, from: { operator: 'source', port: 'out', instance: from }, to: { operator: 'sink', port: 'in', instance: to } }
}

interface DeadLetter {
  readonly where: Where
  readonly error: LaminaError
  readonly value: unknown
}

/** A remote link over an in-memory frame channel: the adapter's two halves, and what each dead-lettered. */
function remoteLink(
  options: {
    info?: ChannelInfo
    capacity?: number
    codec?: t.Mixed
    wire?: MemoryFrameChannelOptions
    sender?: Partial<RemoteSenderOptions>
    receiver?: Partial<RemoteReceiverOptions>
  } = {},
): { wire: MemoryFrameChannel; sender: RemoteSender; receiver: RemoteReceiver; senderDead: DeadLetter[]; receiverDead: DeadLetter[] } {
  const info = options.info ?? channelInfo()
  const wire = memoryFrameChannel({ link: linkName(info), producer: 'peer-A', consumer: 'peer-B', ...options.wire })
  const senderDead: DeadLetter[] = []
  const receiverDead: DeadLetter[] = []
  const sender = remoteSender(wire.sender, { info, deadLetter: (where, error, value) => senderDead.push({ where, error, value }), ...options.sender })
  const receiver = remoteReceiver(wire.receiver, {
    info,
    capacity: options.capacity ?? 16,
    codec: options.codec ?? t.unknown,
    deadLetter: (where, error, value) => receiverDead.push({ where, error, value }),
    ...options.receiver,
  })
  return { wire, sender, receiver, senderDead, receiverDead }
}

/** Takes every batch until END (or the link's error), as a consuming atom would on `onReadable`. */
function collect(receiver: RemoteReceiver): Promise<Batch[]> {
  const batches: Batch[] = []
  return new Promise((resolve, reject) => {
    const drain = (): void => {
      try {
        for (;;) {
          const batch = receiver.take()
          if (batch === undefined) return
          if (batch === 'end') return resolve(batches)
          batches.push(batch)
        }
      } catch (error) {
        reject(error)
      }
    }
    receiver.onReadable(drain)
    drain()
  })
}

const valuesOf = (batches: readonly Batch[]): unknown[] => batches.flatMap((b) => b.values)

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

/** Resolves at the first `onReadable` call. */
function readable(receiver: RemoteReceiver): Promise<void> {
  return new Promise<void>((resolve) => receiver.onReadable(resolve))
}

describe('remote channels over a frame channel', () => {
  it('deliver 20,000 records in order, then END, never past the credit', async () => {
    const { wire, sender, receiver } = remoteLink({ codec: t.number, capacity: 100 })
    let maxInFlight = 0
    const received = collect(receiver)
    for (const batch of numbers(20_000, 64)) {
      if (!sender.ready()) await sender.whenReady()
      sender.send(batch)
      maxInFlight = Math.max(maxInFlight, wire.sender.stats().sent - receiver.stats().received + receiver.stats().queued)
    }
    sender.end()
    const values = valuesOf(await received)
    expect(values).toHaveLength(20_000)
    expect(values.every((v, i) => v === i)).toBe(true)
    await Promise.all([sender.done, receiver.done])
    expect(receiver.stats().maxQueued).toBeLessThanOrEqual(100)
    expect(wire.sender.stats().sent - (wire.sender.stats().granted - 100)).toBe(0)
    expect(receiver.take()).toBe('end')
    expect(sender.peer).toBe('peer-B')
    expect(receiver.peer).toBe('peer-A')
    // A DATA frame per credit-sized piece at most: batches larger than the credit were split, none merged.
    expect(wire.sender.stats().frames).toBeGreaterThanOrEqual(20_000 / 64)
  })

  it('carry strings, JSON values and header fields; END on an empty channel', async () => {
    const { sender, receiver } = remoteLink()
    const values = ['plain', 'ünïcödé 🎉', { word: 'x', n: 1 }, [1, 2], null, 42]
    const received = collect(receiver)
    await produce(sender, [{ values, headers: values.map((_, i) => (i % 2 === 0 ? { fields: { trace: { id: i } } } : undefined)) }])
    const batches = await received
    expect(valuesOf(batches)).toEqual(values)
    expect(batches[0]!.headers?.map((h) => h?.fields)).toEqual([{ trace: { id: 0 } }, undefined, { trace: { id: 2 } }, undefined, { trace: { id: 4 } }, undefined])

    const empty = remoteLink({ codec: t.string })
    empty.sender.end()
    expect(await collect(empty.receiver)).toEqual([])
    await empty.sender.done
  })

  it('turn values failing the port codec into dead letters naming the sending peer and the path, and give their credit back', async () => {
    const codec = t.type({ word: t.string, count: t.number })
    const { sender, receiver, receiverDead } = remoteLink({ info: channelInfo('dl', 2, 3), codec, capacity: 4 })
    const received = collect(receiver)
    const good = (i: number) => ({ word: `w${i}`, count: i })
    // Twelve bad values through a channel of capacity 4: their credit must come back, or this stalls.
    const bad = Array.from({ length: 12 }, (_, i) => ({ word: i, count: 'many' }))
    await produce(sender, [{ values: [good(0), bad[0], good(1)] }, { values: bad.slice(1) }, { values: [good(2), good(3)] }])
    expect(valuesOf(await received)).toEqual([good(0), good(1), good(2), good(3)])
    expect(receiverDead).toHaveLength(12)
    for (const dead of receiverDead) {
      expect(dead.where).toEqual({ operator: 'sink', port: 'in', instance: 3, peer: 'peer-A' })
      expect(dead.error.code).toBe('ERR_DECODE')
    }
    expect(receiverDead[0]!.value).toEqual({ word: 0, count: 'many' })
    expect(receiverDead[0]!.error.message).toBe('sink.in: .word expected string, got 0; .count expected number, got "many"')
    expect(receiver.stats().deadLetters).toBe(12)

    // A codec that throws refuses the value like one that fails; the link goes on.
    const touchy = new t.Type<number, number, unknown>(
      'Touchy',
      (u): u is number => {
        if (u === 13) throw new Error('unlucky')
        return typeof u === 'number'
      },
      (u, c) => {
        if (u === 13) throw new Error('unlucky')
        return typeof u === 'number' ? t.success(u) : t.failure(u, c)
      },
      (n) => n,
    )
    const second = remoteLink({ codec: touchy })
    const received2 = collect(second.receiver)
    await produce(second.sender, [{ values: [12, 13, 14] }])
    expect(valuesOf(await received2)).toEqual([12, 14])
    expect(second.receiverDead.map((d) => d.error.message)).toEqual(['sink.in: the codec threw: unlucky'])
  })

  it('dead-letter values that cannot be encoded at the sender, naming the consumer peer, and send the rest', async () => {
    const { sender, receiver, senderDead } = remoteLink({ wire: { maxPayloadBytes: 1024 } })
    const cyclic: { self?: unknown } = {}
    cyclic.self = cyclic
    const huge = 'x'.repeat(4096)
    const received = collect(receiver)
    await produce(sender, [{ values: [1, 2n, { ok: true }, cyclic, 'after'] }, { values: ['a', huge, 'b'] }])
    expect(valuesOf(await received)).toEqual([1, { ok: true }, 'after', 'a', 'b'])
    expect(senderDead.map((d) => d.error.code)).toEqual(['ERR_UNENCODABLE', 'ERR_UNENCODABLE', 'ERR_UNENCODABLE'])
    expect(senderDead.map((d) => d.value)).toEqual([2n, cyclic, huge])
    expect(senderDead[0]!.where).toEqual({ operator: 'source', port: 'out', instance: 0, peer: 'peer-B' })
    expect(senderDead[2]!.error).toBeInstanceOf(UnencodableValueError)
    expect(senderDead[2]!.error.message).toContain('more than the 1024 a frame may')
    expect(sender.stats().unencodable).toBe(3)
  })

  it('carry requests: replies and failures come back in any order; refused and unencodable requests fail with the reason', async () => {
    const { sender, receiver, receiverDead, senderDead } = remoteLink({ codec: t.number })
    const outcomes = new Map<number, Parameters<ReplyTo>[0]>()
    const answered = new Promise<void>((resolve) => {
      const reply =
        (n: number): ReplyTo =>
        (outcome) => {
          outcomes.set(n, outcome)
          if (outcomes.size === 6) resolve()
        }
      sender.send({
        values: [1, 2, 'three', 4, 5, 6n, 7],
        headers: [{ reply: reply(1) }, undefined, { reply: reply(3) }, { reply: reply(4), fields: { trace: 'x' } }, { reply: reply(5) }, { reply: reply(6) }, { reply: reply(7) }],
      })
    })
    await readable(receiver)
    const batch = receiver.take() as Batch
    expect(batch.values).toEqual([1, 2, 4, 5, 7])
    expect(batch.headers?.[1]).toBeUndefined()
    expect(batch.headers?.[2]?.fields).toEqual({ trace: 'x' })
    // The consumer answers 5 before 1, fails 4, and replies to 7 with something JSON cannot carry.
    batch.headers![3]!.reply!({ ok: true, value: { doubled: 10 } })
    batch.headers![0]!.reply!({ ok: true, value: 2 })
    batch.headers![2]!.reply!({ ok: false, error: new RangeError('4 is out of range') })
    batch.headers![4]!.reply!({ ok: true, value: 1n })
    batch.headers![4]!.reply!({ ok: true, value: 'twice' })
    await answered
    expect(outcomes.get(1)).toEqual({ ok: true, value: 2 })
    expect(outcomes.get(5)).toEqual({ ok: true, value: { doubled: 10 } })
    const failed = outcomes.get(4) as { ok: false; error: RemoteRequestError }
    expect(failed.error).toBeInstanceOf(RemoteRequestError)
    expect(failed.error).toMatchObject({ code: 'ERR_REMOTE_REQUEST', peer: 'peer-B', remoteCode: 'ERR_HANDLER', remoteMessage: '4 is out of range' })
    expect((outcomes.get(3) as { error: RemoteRequestError }).error).toMatchObject({ remoteCode: 'ERR_DECODE', remoteMessage: 'sink.in: expected number, got "three"' })
    expect((outcomes.get(6) as { error: LaminaError }).error.code).toBe('ERR_UNENCODABLE')
    expect((outcomes.get(7) as { error: RemoteRequestError }).error).toMatchObject({ remoteCode: 'ERR_UNENCODABLE' })
    expect(receiverDead.map((d) => d.value)).toEqual(['three'])
    expect(senderDead.map((d) => d.value)).toEqual([6n])
    expect(sender.stats().awaitingReplies).toBe(0)
    sender.end()
    await Promise.all([sender.done, receiver.done])
  })

  it('a request still owed at END keeps the link open until its reply, or until the grace ends; a broken link fails the requests waiting', async () => {
    const owed = remoteLink({ codec: t.number })
    let settle!: (outcome: Parameters<ReplyTo>[0]) => void
    const replied = new Promise<Parameters<ReplyTo>[0]>((resolve) => (settle = resolve))
    owed.sender.send({ values: [7], headers: [{ reply: (outcome) => settle(outcome) }] })
    owed.sender.end()
    const [batch] = await collect(owed.receiver)
    let done = false
    void owed.sender.done.then(() => (done = true))
    await owed.wire.settled()
    // END arrived, the sender's side is still open: the reply is owed.
    expect(done).toBe(false)
    batch!.headers![0]!.reply!({ ok: true, value: 49 })
    expect(await replied).toEqual({ ok: true, value: 49 })
    await Promise.all([owed.sender.done, owed.receiver.done])

    const grace = remoteLink({ codec: t.number, receiver: { replyGraceMs: 20 } })
    const unanswered = new Promise<Parameters<ReplyTo>[0]>((resolve) => grace.sender.send({ values: [1], headers: [{ reply: resolve }] }))
    grace.sender.end()
    await collect(grace.receiver)
    // Nobody answers: after the grace the consumer closes, and the request fails saying so.
    const outcome = await unanswered
    expect(outcome.ok).toBe(false)
    expect((outcome as { error: LaminaError }).error.message).toContain('without answering the request')
    await grace.sender.done

    const broken = remoteLink({ codec: t.number })
    const failure = new Promise<Parameters<ReplyTo>[0]>((resolve) => broken.sender.send({ values: [1], headers: [{ reply: resolve }] }))
    await readable(broken.receiver)
    broken.wire.sever('the connection was lost')
    const lost = await failure
    expect((lost as { error: unknown }).error).toBeInstanceOf(LinkBrokenError)
    expect(() => broken.receiver.take()).not.toThrow()
    expect(() => broken.receiver.take()).toThrow(LinkBrokenError)
  })

  it('move markers in order with the data, without taking credit', async () => {
    const { sender, receiver } = remoteLink({ codec: t.number, capacity: 2 })
    sender.send({ values: [1, 2] })
    // No credit left: a marker still goes, behind the data.
    sender.send({ values: [], marker: { kind: 'checkpoint', id: 1, data: { at: 2 } } })
    sender.send({ values: [3] })
    sender.send({ values: [], marker: { kind: 'checkpoint', id: 2 } })
    sender.end()
    const batches = await collect(receiver)
    expect(batches.map((b) => b.marker ?? b.values)).toEqual([[1, 2], { kind: 'checkpoint', id: 1, data: { at: 2 } }, [3], { kind: 'checkpoint', id: 2 }])
    await sender.done
  })

  it('backpressure: a paused consumer stops the producer at its capacity; credit comes back in quarters', async () => {
    const { wire, sender, receiver } = remoteLink({ codec: t.number, capacity: 40 })
    const producing = produce(sender, numbers(400, 2))
    await wire.settled()
    expect(receiver.stats()).toMatchObject({ received: 40, queued: 40, granted: 40 })
    expect(sender.ready()).toBe(false)
    expect(wire.receiver.stats().granted).toBe(40)
    // Taking fewer than a quarter of the capacity (8 of 40 records) gives nothing back yet.
    for (let i = 0; i < 4; i++) receiver.take()
    await wire.settled()
    expect(wire.receiver.stats().granted).toBe(40)
    expect(sender.ready()).toBe(false)
    receiver.take()
    await wire.settled()
    expect(wire.receiver.stats().granted).toBe(50)
    expect(receiver.stats().received).toBe(50)
    const rest = collect(receiver)
    await producing
    expect(valuesOf(await rest)).toEqual(Array.from({ length: 390 }, (_, i) => i + 10))
    expect(receiver.stats().maxQueued).toBeLessThanOrEqual(40)
  })

  it('refuse sends after end; whenReady honours its signal; after a clean end it resolves', async () => {
    const { sender, receiver } = remoteLink({ codec: t.number, capacity: 1 })
    sender.send({ values: [1] })
    const controller = new AbortController()
    const waiting = sender.whenReady(controller.signal)
    controller.abort('stop waiting')
    expect(await rejection(waiting)).toMatchObject({ code: 'ERR_JOB_ABORTED' })
    sender.end()
    expect(() => sender.send({ values: [2] })).toThrow(expect.objectContaining({ code: 'ERR_CHANNEL_ENDED' }))
    expect(valuesOf(await collect(receiver))).toEqual([1])
    await sender.done
    await expect(sender.whenReady()).resolves.toBeUndefined()
  })

  it('abort on either side breaks both halves with LinkBrokenError; what arrived before is still delivered', async () => {
    const first = remoteLink({ info: channelInfo('ab'), codec: t.number, capacity: 2 })
    first.sender.send({ values: [1, 2] })
    await readable(first.receiver)
    const blocked = first.sender.whenReady()
    first.receiver.abort('consumer gave up')
    const error = await rejection(blocked)
    expect(error).toMatchObject({ code: 'ERR_LINK_BROKEN', link: 'ab/source.out -> sink.in#0->0', peer: 'peer-B' })
    expect(error.message).toContain('ERR_JOB_ABORTED')
    expect(error.message).toContain('consumer gave up')
    expect(() => first.sender.send({ values: [3] })).toThrow(LinkBrokenError)
    expect(await rejection(first.sender.done)).toBe(error)
    expect(first.receiver.take()).toEqual({ values: [1, 2] })
    expect(() => first.receiver.take()).toThrow(LinkBrokenError)

    const second = remoteLink({ codec: t.number })
    const failed = collect(second.receiver).then(
      () => expect.unreachable() as never,
      (e: unknown) => e as LaminaError,
    )
    second.sender.send({ values: [1] })
    second.sender.abort(new Error('producer stopped'))
    const seen = await failed
    expect(seen).toBeInstanceOf(LinkBrokenError)
    expect(seen.message).toContain("the producer's peer reported ERR_JOB_ABORTED: aborted on this peer: producer stopped")
    expect(await rejection(second.receiver.done)).toBe(seen)
  })

  it('a malformed payload breaks the link on both sides, naming the cause', async () => {
    const wire = memoryFrameChannel()
    const receiver = remoteReceiver(wire.receiver, { info: channelInfo(), capacity: 4, codec: t.number, deadLetter: () => expect.unreachable() })
    // A hand-written producer whose payload claims two records but holds one.
    let closed!: (error: LaminaError | undefined) => void
    const producerClosed = new Promise<LaminaError | undefined>((resolve) => (closed = resolve))
    const handler: FrameSenderHandler = { writable: () => undefined, reply: () => undefined, closed: (error: LaminaError | undefined) => closed(error) }
    wire.sender.listen(handler)
    await wire.settled()
    wire.sender.data(encodeRecords([1]), 2)
    const error = (await collect(receiver).catch((e: unknown) => e)) as LinkBrokenError
    expect(error).toBeInstanceOf(LinkBrokenError)
    expect(error.cause).toBeInstanceOf(PayloadError)
    expect(error.message).toContain("records from the producer's peer cannot be decoded")
    const remote = await producerClosed
    expect(remote?.message).toContain('reported ERR_PAYLOAD')
  })
})
