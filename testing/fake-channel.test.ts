// The fake channel: what a producer sent is recorded, the consumer takes what the test fed, credit is the test's.
import { describe, expect, it } from 'vitest'
import { wrapChannel } from 'lamina'
import { FakeChannel, channelInfo } from 'lamina/testing'

describe('FakeChannel', () => {
  it('records sends, markers and the end in order', () => {
    const fake = new FakeChannel()
    fake.send({ values: [1, 2] })
    fake.send({ values: [], marker: { kind: 'checkpoint', id: 1 } })
    fake.send({ values: [3] })
    fake.end()
    fake.end()
    expect(fake.sentValues()).toEqual([1, 2, 3])
    expect(fake.sentMarkers()).toEqual([{ kind: 'checkpoint', id: 1 }])
    expect(fake.sent.map((item) => ('end' in item ? 'end' : item.batch.marker !== undefined ? 'marker' : item.batch.values.length))).toEqual([2, 'marker', 1, 'end'])
    expect(fake.ended).toBe(true)
    expect(() => fake.send({ values: [4] })).toThrow(expect.objectContaining({ code: 'ERR_FAKE_CHANNEL' }))
  })

  it('holds the producer until the test grants credit; markers take none', async () => {
    const fake = new FakeChannel({ credit: 2 })
    fake.send({ values: [1, 2] })
    expect(fake.ready()).toBe(false)
    fake.send({ values: [], marker: { kind: 'm', id: 1 } })
    let woke = false
    const waiting = fake.whenReady().then(() => (woke = true))
    await Promise.resolve()
    expect(woke).toBe(false)
    fake.grant(1)
    await waiting
    expect(fake.ready()).toBe(true)
  })

  it('rejects a waiting producer when its signal aborts', async () => {
    const fake = new FakeChannel({ credit: 0, info: channelInfo({ job: 'j' }) })
    const abort = new AbortController()
    const waiting = fake.whenReady(abort.signal)
    abort.abort('stop')
    await expect(waiting).rejects.toMatchObject({ code: 'ERR_JOB_ABORTED' })
  })

  it('gives the consumer what was fed, in order, then end; wakes its listener', () => {
    const fake = new FakeChannel()
    let wakes = 0
    fake.onReadable(() => wakes++)
    fake
      .feed([1, 2])
      .feedMarker({ kind: 'm', id: 7 })
      .feed([3], [{ fields: { trace: 1 } }])
      .feed([])
      .feedEnd()
    expect(fake.queued).toBe(3)
    expect(wakes).toBe(4)
    expect(fake.take()).toEqual({ values: [1, 2] })
    expect(fake.take()).toEqual({ values: [], marker: { kind: 'm', id: 7 } })
    expect(fake.take()).toEqual({ values: [3], headers: [{ fields: { trace: 1 } }] })
    expect(fake.take()).toBe('end')
    expect(() => fake.feed([4])).toThrow(expect.objectContaining({ code: 'ERR_FAKE_CHANNEL' }))
  })

  it('with loopback, a wrapper under test sends into its own take side', () => {
    const fake = new FakeChannel({ loopback: true })
    let counted = 0
    const wrapped = wrapChannel(fake, { send: (batch) => ((counted += batch.values.length), fake.send(batch)) })
    expect(wrapped.take()).toBeUndefined()
    wrapped.send({ values: ['a', 'b'] })
    wrapped.end()
    expect(wrapped.take()).toEqual({ values: ['a', 'b'] })
    expect(wrapped.take()).toBe('end')
    expect(counted).toBe(2)
  })

  it('names its link in channelInfo', () => {
    expect(channelInfo({ from: 'a', to: 'b', toInstance: 2 })).toMatchObject({ job: 'test', link: { id: 'a.out -> b.in' }, to: { operator: 'b', port: 'in', instance: 2 } })
  })
})
