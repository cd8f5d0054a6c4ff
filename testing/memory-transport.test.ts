// Tests of the in-memory frame-channel pair against the frame-channel contract: order, credit, END and close, replies, abort and a lost connection.
import { describe, expect, it } from 'vitest'
import type { FrameReceiverHandler, FrameSenderHandler, LaminaError } from '../kernel/index.js'
import { memoryFrameChannel } from './memory-transport.js'

type Event = readonly [string, ...unknown[]]

/** Handlers that record what each side heard, in order. */
function recorders(): { producer: Event[]; consumer: Event[]; sender: FrameSenderHandler; receiver: FrameReceiverHandler } {
  const producer: Event[] = []
  const consumer: Event[] = []
  const text = (payload: Uint8Array): string => Buffer.from(payload).toString()
  return {
    producer,
    consumer,
    sender: {
      writable: () => producer.push(['writable']),
      reply: (payload) => producer.push(['reply', text(payload)]),
      closed: (error) => producer.push(['closed', error?.code, error?.message]),
    },
    receiver: {
      data: (payload, records) => consumer.push(['data', text(payload), records]),
      marker: (payload) => consumer.push(['marker', text(payload)]),
      end: () => consumer.push(['end']),
      closed: (error: LaminaError) => consumer.push(['closed', error.code, error.message]),
    },
  }
}

const bytes = (text: string): Uint8Array => Buffer.from(text)

describe('memory frame channel', () => {
  it('delivers frames in order in a later microtask, within the credit, and ends cleanly once the consumer closes', async () => {
    const wire = memoryFrameChannel({ link: 'l', producer: 'A', consumer: 'B' })
    const seen = recorders()
    wire.sender.listen(seen.sender)
    expect(wire.sender.credit).toBe(0)
    expect(() => wire.sender.data(bytes('x'), 1)).toThrow(RangeError)
    // Grants made before the consumer listens still reach the producer; frames wait for `listen`.
    wire.receiver.grant(3)
    await wire.settled()
    expect(seen.producer).toEqual([['writable']])
    expect(wire.sender.credit).toBe(3)
    const payload = bytes('ab')
    wire.sender.data(payload, 2)
    payload[0] = 0x7a
    wire.sender.marker(bytes('m1'))
    wire.sender.data(bytes('c'), 1)
    expect(wire.sender.credit).toBe(0)
    expect(() => wire.sender.data(bytes('d'), 1)).toThrow(RangeError)
    wire.sender.end()
    await wire.settled()
    expect(seen.consumer).toEqual([])
    wire.receiver.listen(seen.receiver)
    expect(seen.consumer).toEqual([])
    await wire.settled()
    // The payload was copied when sent: the producer's later change does not show.
    expect(seen.consumer).toEqual([['data', 'ab', 2], ['marker', 'm1'], ['data', 'c', 1], ['end']])
    expect(wire.receiver.peer).toBe('A')
    expect(wire.sender.peer).toBe('B')
    // After END the channel stays open for replies, then the consumer closes it.
    expect(wire.receiver.reply(bytes('r1'))).toBe(true)
    wire.receiver.close()
    expect(wire.receiver.reply(bytes('late'))).toBe(false)
    await wire.settled()
    expect(seen.producer).toEqual([['writable'], ['reply', 'r1'], ['closed', undefined, undefined]])
    expect(wire.sender.stats()).toEqual({ sent: 3, granted: 3, frames: 2, bytes: 3 })
    expect(wire.receiver.stats()).toEqual({ received: 3, granted: 3, replies: 1 })
  })

  it('abort on either side fails both with LinkBrokenError carrying the code and message', async () => {
    const first = memoryFrameChannel({ link: 'l' })
    const one = recorders()
    first.sender.listen(one.sender)
    first.receiver.listen(one.receiver)
    first.sender.abort('ERR_JOB_ABORTED', 'aborted on this peer: stop')
    first.sender.abort('ERR_X', 'twice')
    await first.settled()
    expect(one.producer).toEqual([['closed', 'ERR_LINK_BROKEN', 'link l with peer consumer is broken: aborted on this peer: stop']])
    expect(one.consumer).toEqual([['closed', 'ERR_LINK_BROKEN', "link l with peer producer is broken: the producer's peer reported ERR_JOB_ABORTED: aborted on this peer: stop"]])

    const second = memoryFrameChannel({ link: 'l' })
    const two = recorders()
    second.sender.listen(two.sender)
    second.receiver.listen(two.receiver)
    second.receiver.abort('ERR_PAYLOAD', 'bad bytes')
    await second.settled()
    expect(two.producer).toEqual([['closed', 'ERR_LINK_BROKEN', "link l with peer consumer is broken: the consumer's peer reported ERR_PAYLOAD: bad bytes"]])
    expect(two.consumer).toEqual([['closed', 'ERR_LINK_BROKEN', 'link l with peer producer is broken: bad bytes']])
    expect(second.receiver.reply(bytes('r'))).toBe(false)
    expect(second.sender.credit).toBe(0)
  })

  it('a lost connection drops what was in flight and fails both sides; after END the consumer hears nothing of it', async () => {
    const wire = memoryFrameChannel({ link: 'l' })
    const seen = recorders()
    wire.sender.listen(seen.sender)
    wire.receiver.listen(seen.receiver)
    wire.receiver.grant(1)
    await wire.settled()
    wire.sender.data(bytes('lost'), 1)
    wire.sever('the peer was killed')
    await wire.settled()
    expect(seen.consumer).toEqual([['closed', 'ERR_LINK_BROKEN', 'link l with peer producer is broken: the peer was killed']])
    expect(seen.producer).toEqual([['writable'], ['closed', 'ERR_LINK_BROKEN', 'link l with peer consumer is broken: the peer was killed']])

    const ended = memoryFrameChannel()
    const after = recorders()
    ended.sender.listen(after.sender)
    ended.receiver.listen(after.receiver)
    ended.sender.end()
    await ended.settled()
    ended.sever()
    await ended.settled()
    expect(after.consumer).toEqual([['end']])
    expect(after.producer.map((e) => e[0])).toEqual(['closed'])
  })

  it('a consumer closing before END breaks the producer', async () => {
    const wire = memoryFrameChannel({ link: 'l' })
    const seen = recorders()
    wire.sender.listen(seen.sender)
    wire.receiver.listen(seen.receiver)
    wire.receiver.close()
    await wire.settled()
    expect(seen.producer).toEqual([['closed', 'ERR_LINK_BROKEN', "link l with peer consumer is broken: the consumer's peer closed the stream before the end"]])
    expect(() => wire.sender.listen(seen.sender)).toThrow(RangeError)
  })
})
