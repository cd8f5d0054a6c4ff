// The frame-channel compliance suite: what every transport's FrameSender and FrameReceiver must keep true (kernel/contracts/frames.ts), as vitest tests a transport author runs in one line.
// (As js-libp2p's interface-compliance-tests do for transports: one suite per contract, every implementation runs it.)

import { describe, expect, it } from 'vitest'
import { seededRandom, type FrameReceiver, type FrameSender, type LaminaError } from '../kernel/index.js'
import { WaitEndedError, WaitTimeoutError } from './errors.js'

/** What a frame-channel factory is given for one case of the suite. */
export interface FrameChannelContext {
  /** Names this case's channel: unique within the process, for a transport that matches the two sides by name. */
  readonly id: string
}

/** Both sides of one connected frame channel, fresh for one case, that nobody listens to yet. */
export interface FrameChannelPair {
  /** The producing side. The suite calls its `listen` first, before anything else. */
  readonly sender: FrameSender
  /** The consuming side, registered to receive this channel. */
  readonly receiver: FrameReceiver
  /** The producing peer's id: when given, `receiver.peer` must name it once frames arrived. */
  readonly producerPeer?: string
  /** The consuming peer's id: when given, `sender.peer` must name it once credit arrived. */
  readonly consumerPeer?: string
  /**
   * Resolves once every frame sent so far, in both directions, has been delivered. Optional: a
   * transport that can tell (as the in-memory pair can) lets the suite also check that nothing
   * more arrives after a call that must be a no-op.
   */
  readonly settled?: () => Promise<void>
  /** Releases what the pair holds; called after each case, passed or failed (after the suite aborted a channel left open). */
  readonly cleanup?: () => void | Promise<void>
}

/**
 * Opens a connected frame channel for one case: the sender to a receiver that is registered (so
 * the first frames are matched to it), with no handler set on either side. Return it as soon as
 * the sender is opened; the sender may still be connecting.
 */
export type FrameChannelFactory = (context: FrameChannelContext) => FrameChannelPair | Promise<FrameChannelPair>

/** Options of `describeFrameChannelCompliance`. All optional. */
export interface FrameChannelComplianceOptions {
  /** Milliseconds any one awaited event may take. @default 10000 */
  readonly timeoutMs?: number
  /** Payload bytes the pumping case moves through a small credit window. @default 8 MiB */
  readonly pumpBytes?: number
}

/** The codes of the suite's aborts: what the other side must hear. */
const PRODUCER_ABORT = 'ERR_COMPLIANCE_PRODUCER_ABORT'
const CONSUMER_ABORT = 'ERR_COMPLIANCE_CONSUMER_ABORT'
const SECOND_ABORT = 'ERR_COMPLIANCE_SECOND_ABORT'
/** The suite's abort of a channel a failed case left open. */
const CLEANUP_ABORT = 'ERR_COMPLIANCE_CLEANUP'

let channels = 0

/**
 * Declares the frame-channel compliance suite for a transport (vitest `describe` and `it` inside).
 * Every case opens a fresh pair with `factory` and checks one promise of the frame-channel contract
 * (kernel/contracts/frames.ts), waiting on the handlers' events with a deadline:
 * - frames arrive in the order sent: DATA and MARKER interleaved, then END, and frames that arrive
 *   before the consumer listens wait for it;
 * - credit comes from the consumer only: none before a grant (a DATA frame past the credit is
 *   refused or breaks the channel, never delivered), grants add up, a grant made before the producer
 *   connected is kept for it, each grant shows in `credit` with a `writable` event, DATA takes its
 *   records from `credit` at once, and MARKER takes none;
 * - payloads arrive unchanged: DATA's after its first `headroom` bytes (which belong to the transport),
 *   MARKER's and REPLY's whole (empty ones too), and the consumer may keep a DATA payload's view;
 * - a DATA payload of `maxPayloadBytes` (headroom included) passes;
 * - a producer sending only when `credit` allows and not `draining`, woken by `writable` alone, moves
 *   many frames through a small window without stalling, and never past the credit;
 * - END then `close`: the producer gets `closed(undefined)` once, only after the consumer closed;
 *   REPLY frames still go after END until then, `reply` returns false after it, and the consumer's
 *   `closed` is never called after END;
 * - `abort(code, message)` on either side, before or after the channel opened: the other side gets
 *   `closed` with a LinkBrokenError naming the code and message, this side gets `closed` with the
 *   failure, each once; a second abort changes nothing, an abort after the end is a no-op, and a
 *   consumer aborting after END (before `close`) fails the producer, not itself.
 * Each DATA payload the suite sends carries at least one byte per record past the headroom, as the
 * kernel's encoding of records does.
 *
 * ```ts
 * describeFrameChannelCompliance('my-transport', ({ id }) => {
 *   const receiver = myTransport.receive(id)
 *   const sender = myTransport.open(id)
 *   return { sender, receiver, cleanup: () => myTransport.forget(id) }
 * })
 * ```
 */
export function describeFrameChannelCompliance(name: string, factory: FrameChannelFactory, options: FrameChannelComplianceOptions = {}): void {
  const timeoutMs = options.timeoutMs ?? 10_000
  const pumpBytes = options.pumpBytes ?? 8 * 1024 * 1024
  // Every case awaits a few events in a row, each with `timeoutMs`: vitest's own deadline is longer.
  const caseMs = timeoutMs * 4

  /** Runs one case on a fresh pair; aborts what the case left open, then cleans up. */
  const withPair = async (body: (h: Harness) => Promise<void>): Promise<void> => {
    const pair = await factory({ id: `frame-compliance-${++channels}` })
    const h = new Harness(pair, timeoutMs)
    try {
      await body(h)
      h.expectNoViolations()
    } finally {
      h.abortIfOpen()
      await pair.cleanup?.()
    }
  }

  describe(`frame-channel compliance: ${name}`, () => {
    it(
      'delivers frames in the order sent: DATA and MARKER interleaved, then END',
      () =>
        withPair(async (h) => {
          h.listen()
          h.grant(8)
          await h.untilCredit(8, 'the first grant of 8 records')
          h.data(text('d1'), 1)
          h.sender.marker(text('m1'))
          h.data(text('d2-three'), 3)
          h.sender.marker(text('m2'))
          h.sender.marker(text('m3'))
          h.data(text('d3'), 2)
          h.data(text('d4'), 1)
          h.sender.end()
          await h.received.when((e) => e.kind === 'end', 'END at the consumer')
          expect(h.received.summary()).toEqual(['data d1 ×1', 'marker m1', 'data d2-three ×3', 'marker m2', 'marker m3', 'data d3 ×2', 'data d4 ×1', 'end'])
          h.receiver.close()
          expect((await h.sent.when(isClosed, 'closed at the producer')).error).toBeUndefined()
        }),
      caseMs,
    )

    it(
      'gives credit only when the consumer grants it: none before, grants add up, writable fires, DATA past the credit is never delivered',
      () =>
        withPair(async (h) => {
          h.listen()
          expect(h.sender.credit, 'credit before any grant').toBe(0)
          // With no credit, a DATA frame is refused (it throws) or breaks the channel; it never arrives.
          if (!(await h.expectRefused(1, 'before any grant'))) return
          h.grant(2)
          h.grant(3)
          await h.untilCredit(5, 'two grants (2 + 3 records)')
          expect(h.sender.credit, 'credit after grants of 2 and 3').toBe(5)
          expect(h.sent.count('writable'), 'writable events').toBeGreaterThan(0)
          h.data(text('five!'), 5)
          expect(h.sender.credit, 'credit right after a DATA frame of 5 records').toBe(0)
          // A marker takes no credit: it goes with none left.
          h.sender.marker(text('no credit needed'))
          await h.untilMarker('no credit needed')
          if (!(await h.expectRefused(1, 'once the credit was used'))) return
          const writable = h.sent.count('writable')
          h.grant(1)
          await h.untilCredit(1, 'a grant giving back 1 record')
          expect(h.sent.count('writable'), 'writable events after the last grant').toBeGreaterThan(writable)
          h.data(text('1'), 1)
          h.sender.end()
          await h.received.when((e) => e.kind === 'end', 'END at the consumer')
          expect(h.received.summary()).toEqual([
            'marker probe (before any grant)',
            'data five! ×5',
            'marker no credit needed',
            'marker probe (once the credit was used)',
            'data 1 ×1',
            'end',
          ])
          h.receiver.close()
          await h.sent.when(isClosed, 'closed at the producer')
        }),
      caseMs,
    )

    it(
      'keeps a grant made before the producer connected, and frames that arrive before the consumer listens',
      () =>
        withPair(async (h) => {
          h.listenSender()
          // The producer may still be connecting: the grant waits for it.
          h.grant(4)
          await h.untilCredit(4, 'a grant made before the producer connected')
          if (h.pair.consumerPeer !== undefined) expect(h.sender.peer, 'sender.peer once connected').toBe(h.pair.consumerPeer)
          h.data(text('early'), 2)
          h.sender.marker(text('m'))
          h.data(text('late'), 2)
          h.sender.end()
          // The consumer listens only now: what arrived before waits for it, in order.
          h.listenReceiver()
          await h.received.when((e) => e.kind === 'end', 'END at the consumer')
          expect(h.received.summary()).toEqual(['data early ×2', 'marker m', 'data late ×2', 'end'])
          if (h.pair.producerPeer !== undefined) expect(h.receiver.peer, 'receiver.peer once frames arrived').toBe(h.pair.producerPeer)
          h.receiver.close()
          await h.sent.when(isClosed, 'closed at the producer')
        }),
      caseMs,
    )

    it(
      "passes payloads through unchanged: DATA's past the headroom, MARKER's and REPLY's whole; the consumer may keep DATA's views",
      () =>
        withPair(async (h) => {
          h.listen()
          const random = seededRandom(7)
          const every = Uint8Array.from({ length: 256 }, (_, i) => i)
          const bodies = [Uint8Array.of(0), every, text('ünïcödé 🎉'), randomBytes(random, 1000), randomBytes(random, 64 * 1024 + 3), Uint8Array.of(0xff, 0, 0xff)]
          const records = [1, 7, 3, 100, 1000, 3]
          const markers = [new Uint8Array(0), every, randomBytes(random, 10_000)]
          const replies = [new Uint8Array(0), every, randomBytes(random, 10_000), text('after END')]
          h.grant(records.reduce((a, b) => a + b, 0))
          await h.untilCredit(
            records.reduce((a, b) => a + b, 0),
            'the grant of every record',
          )
          for (let i = 0; i < bodies.length; i++) {
            h.data(bodies[i]!, records[i]!)
            if (i < markers.length) h.sender.marker(new Uint8Array(markers[i]!))
          }
          h.sender.end()
          await h.received.when((e) => e.kind === 'end', 'END at the consumer')
          // The views were kept through every later frame: compare them only now.
          const data = h.received.events.filter((e) => e.kind === 'data')
          expect(
            data.map((e) => e.records),
            'records of each DATA frame',
          ).toEqual(records)
          data.forEach((e, i) => expect(sameBytes(e.payload, bodies[i]!), `DATA payload ${i} (${bodies[i]!.byteLength} bytes)`).toBe(true))
          const got = h.received.events.filter((e) => e.kind === 'marker')
          expect(got.length, 'MARKER frames').toBe(markers.length)
          got.forEach((e, i) => expect(sameBytes(e.payload, markers[i]!), `MARKER payload ${i} (${markers[i]!.byteLength} bytes)`).toBe(true))
          // REPLY frames go after END too, until `close`.
          for (const reply of replies) expect(h.receiver.reply(new Uint8Array(reply)), 'reply() while the channel is open').toBe(true)
          await h.sent.when(() => h.sent.count('reply') === replies.length, `${replies.length} replies at the producer`)
          const answered = h.sent.events.filter((e) => e.kind === 'reply').map((e) => hex(e.payload))
          expect(answered.sort()).toEqual(replies.map(hex).sort())
          h.receiver.close()
          await h.sent.when(isClosed, 'closed at the producer')
        }),
      caseMs,
    )

    it(
      'passes a DATA payload of maxPayloadBytes, headroom included',
      () =>
        withPair(async (h) => {
          h.listen()
          const max = h.sender.maxPayloadBytes
          expect(max, 'maxPayloadBytes').toBeGreaterThan(h.sender.headroom)
          const body = new Uint8Array(max - h.sender.headroom)
          for (let i = 0; i < body.byteLength; i++) body[i] = (i * 31 + (i >>> 16)) & 0xff
          h.grant(2)
          await h.untilCredit(1, 'the first grant')
          h.data(body, 1)
          h.sender.marker(text('after the largest'))
          await h.untilMarker('after the largest')
          const [largest] = h.received.events.filter((e) => e.kind === 'data')
          expect(largest?.payload.byteLength, 'bytes of the largest payload past the headroom').toBe(body.byteLength)
          expect(sameBytes(largest!.payload, body), 'the largest payload arrives unchanged').toBe(true)
          h.sender.end()
          await h.received.when((e) => e.kind === 'end', 'END at the consumer')
          h.receiver.close()
          await h.sent.when(isClosed, 'closed at the producer')
        }),
      caseMs * 2,
    )

    it(
      'moves many frames through a small credit window, woken by writable alone, never past the credit',
      () =>
        withPair(async (h) => {
          const random = seededRandom(11)
          const bodies: Uint8Array[] = []
          const records: number[] = []
          for (let bytes = 0; bytes < pumpBytes; ) {
            const body = randomBytes(random, 1 + Math.floor(random() * 64 * 1024))
            bodies.push(body)
            records.push(1 + Math.floor(random() * 4))
            bytes += body.byteLength
          }
          const capacity = 16
          // The consumer gives credit back as it consumes, a quarter of the window at a time.
          let consumed = 0
          h.received.on((e) => {
            if (e.kind !== 'data') return
            consumed += e.records
            if (consumed >= capacity / 4) {
              h.grant(consumed)
              consumed = 0
            }
          })
          let next = 0
          let ended = false
          let pumping = false
          const pump = (): void => {
            if (pumping || ended) return
            pumping = true
            try {
              while (next < bodies.length && !h.sender.draining && h.sender.credit >= records[next]!) {
                h.data(bodies[next]!, records[next]!)
                next++
              }
              if (next === bodies.length && !h.sender.draining) {
                ended = true
                h.sender.end()
              }
            } finally {
              pumping = false
            }
          }
          h.sent.on((e) => {
            if (e.kind === 'writable') pump()
          })
          h.listen()
          h.grant(capacity)
          pump()
          await h.received.when((e) => e.kind === 'end', `END after ${bodies.length} frames`, timeoutMs * 3)
          const data = h.received.events.filter((e) => e.kind === 'data')
          expect(data.length, 'DATA frames delivered').toBe(bodies.length)
          expect(
            data.map((e) => e.records),
            'records of each DATA frame, in order',
          ).toEqual(records)
          const changed = data.findIndex((e, i) => !sameBytes(e.payload, bodies[i]!))
          expect(changed, 'the first DATA payload that changed (kept views, compared at the end)').toBe(-1)
          h.receiver.close()
          await h.sent.when(isClosed, 'closed at the producer')
        }),
      caseMs * 4,
    )

    it(
      'ends cleanly: closed(undefined) once, only after the consumer closed; replies go after END until close; no consumer closed after END',
      () =>
        withPair(async (h) => {
          h.listen()
          h.grant(2)
          await h.untilCredit(2, 'the first grant')
          h.data(text('last'), 2)
          h.sender.end()
          await h.received.when((e) => e.kind === 'end', 'END at the consumer')
          // The channel stays open for replies after END: the producer hears them before its end.
          expect(h.receiver.reply(text('owed')), 'reply() after END, before close').toBe(true)
          await h.sent.when((e) => e.kind === 'reply', 'the reply sent after END')
          expect(h.sent.count('closed'), 'closed at the producer before the consumer closed').toBe(0)
          h.receiver.close()
          const closed = await h.sent.when(isClosed, 'closed at the producer')
          expect(closed.error, 'the error of a clean end').toBeUndefined()
          expect(h.receiver.reply(text('too late')), 'reply() after close').toBe(false)
          // Once the channel is over, aborting either side is a no-op.
          h.sender.abort(PRODUCER_ABORT, 'an abort after the end')
          h.receiver.abort(CONSUMER_ABORT, 'an abort after the end')
          await h.settled()
          expect(h.sent.summary(), 'what the producer heard').toEqual(['reply owed', 'closed'])
          expect(h.received.summary(), 'what the consumer heard').toEqual(['data last ×2', 'end'])
        }),
      caseMs,
    )

    it(
      "an abort by the producer reaches the consumer with its code and message; both sides' closed get the failure once",
      () =>
        withPair(async (h) => {
          h.listen()
          h.grant(4)
          await h.untilCredit(4, 'the first grant')
          h.data(text('before'), 1)
          await h.received.when((e) => e.kind === 'data', 'the DATA frame before the abort')
          h.sender.abort(PRODUCER_ABORT, 'the producer gave up')
          h.sender.abort(SECOND_ABORT, 'a second abort')
          await h.expectAborted('producer', PRODUCER_ABORT, 'the producer gave up')
          // The consumer's own abort, once the channel broke, changes nothing.
          h.receiver.abort(CONSUMER_ABORT, 'an abort after the failure')
          expect(h.receiver.reply(text('r')), 'reply() after the channel broke').toBe(false)
          await h.settled()
        }),
      caseMs,
    )

    it(
      "an abort by the consumer reaches the producer with its code and message; both sides' closed get the failure once",
      () =>
        withPair(async (h) => {
          h.listen()
          h.grant(4)
          await h.untilCredit(4, 'the first grant')
          h.data(text('before'), 1)
          await h.received.when((e) => e.kind === 'data', 'the DATA frame before the abort')
          h.receiver.abort(CONSUMER_ABORT, 'the consumer gave up')
          h.receiver.abort(SECOND_ABORT, 'a second abort')
          expect(h.receiver.reply(text('r')), 'reply() after abort').toBe(false)
          await h.expectAborted('consumer', CONSUMER_ABORT, 'the consumer gave up')
          h.sender.abort(PRODUCER_ABORT, 'an abort after the failure')
          await h.settled()
        }),
      caseMs,
    )

    it(
      'an abort by the producer before it connected still reaches the consumer',
      () =>
        withPair(async (h) => {
          h.listen()
          h.sender.abort(PRODUCER_ABORT, 'the producer gave up at once')
          await h.expectAborted('producer', PRODUCER_ABORT, 'the producer gave up at once')
          await h.settled()
        }),
      caseMs,
    )

    it(
      'an abort by the consumer before the producer connected still reaches the producer',
      () =>
        withPair(async (h) => {
          h.listen()
          h.receiver.abort(CONSUMER_ABORT, 'the consumer gave up at once')
          await h.expectAborted('consumer', CONSUMER_ABORT, 'the consumer gave up at once')
          await h.settled()
        }),
      caseMs,
    )

    it(
      'a consumer aborting after END, before close, fails the producer and not itself',
      () =>
        withPair(async (h) => {
          h.listen()
          h.grant(1)
          await h.untilCredit(1, 'the first grant')
          h.data(text('x'), 1)
          h.sender.end()
          await h.received.when((e) => e.kind === 'end', 'END at the consumer')
          h.receiver.abort(CONSUMER_ABORT, 'the replies owed cannot go')
          const closed = await h.sent.when(isClosed, 'closed at the producer')
          expectFailure(closed.error, 'the producer', [CONSUMER_ABORT, 'the replies owed cannot go'])
          await h.settled()
          expect(h.received.summary(), 'what the consumer heard (no closed after END)').toEqual(['data x ×1', 'end'])
        }),
      caseMs,
    )
  })
}

// ---------------------------------------------------------------------------------------------
// What each side heard

type SenderEvent =
  | { readonly kind: 'writable'; readonly credit: number }
  | { readonly kind: 'reply'; readonly payload: Uint8Array }
  | { readonly kind: 'closed'; readonly error: LaminaError | undefined }

type ReceiverEvent =
  | { readonly kind: 'data'; readonly payload: Uint8Array; readonly records: number }
  | { readonly kind: 'marker'; readonly payload: Uint8Array }
  | { readonly kind: 'end' }
  | { readonly kind: 'closed'; readonly error: LaminaError }

type Closed = { readonly kind: 'closed'; readonly error: LaminaError | undefined }

function isClosed<E extends { readonly kind: string }>(event: E): event is Extract<E, { readonly kind: 'closed' }> {
  return event.kind === 'closed'
}

interface Waiter<E> {
  readonly predicate: (event: E) => boolean
  readonly what: string
  resolve(event: E): void
  reject(error: Error): void
}

/** The events one side's handler got, in order, with waits on them. */
class EventLog<E extends { readonly kind: string }> {
  readonly events: E[] = []
  private readonly waiters = new Set<Waiter<E>>()
  private readonly listeners: ((event: E) => void)[] = []

  constructor(
    private readonly side: string,
    private readonly timeoutMs: number,
  ) {}

  push(event: E): void {
    this.events.push(event)
    for (const listener of this.listeners) listener(event)
    for (const waiter of [...this.waiters]) {
      if (waiter.predicate(event)) waiter.resolve(event)
      // Nothing comes after `closed`: a wait for anything else fails now, saying why.
      else if (event.kind === 'closed') waiter.reject(new WaitEndedError(`${waiter.what} (the ${this.side} closed first: ${describeClosed(event)})`))
    }
  }

  /** Calls `listener` with every event from now on, before the waits see it. */
  on(listener: (event: E) => void): void {
    this.listeners.push(listener)
  }

  count(kind: E['kind']): number {
    return this.events.filter((e) => e.kind === kind).length
  }

  /** The first event, already heard or to come, that satisfies `predicate`; rejects with WaitTimeoutError naming `what`. */
  when<T extends E>(predicate: (event: E) => event is T, what: string, ms?: number): Promise<T>
  when(predicate: (event: E) => boolean, what: string, ms?: number): Promise<E>
  when(predicate: (event: E) => boolean, what: string, ms = this.timeoutMs): Promise<E> {
    return this.wait(predicate, what, ms, 0)
  }

  /** The first event to come (none already heard) that satisfies `predicate`; rejects with WaitTimeoutError naming `what`. */
  next(predicate: (event: E) => boolean, what: string, ms = this.timeoutMs): Promise<E> {
    return this.wait(predicate, what, ms, this.events.length)
  }

  private wait(predicate: (event: E) => boolean, what: string, ms: number, from: number): Promise<E> {
    const heard = this.events.slice(from).find(predicate)
    if (heard !== undefined) return Promise.resolve(heard)
    const closed = this.events.find((e) => e.kind === 'closed')
    if (closed !== undefined) return Promise.reject(new WaitEndedError(`${what} (the ${this.side} closed first: ${describeClosed(closed)})`))
    return new Promise<E>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new WaitTimeoutError(`${what} (the ${this.side} heard: ${this.summary().join(', ') || 'nothing'})`, ms))
      }, ms)
      const waiter: Waiter<E> = {
        predicate,
        what,
        resolve: (event) => {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          resolve(event)
        },
        reject: (error) => {
          clearTimeout(timer)
          this.waiters.delete(waiter)
          reject(error)
        },
      }
      this.waiters.add(waiter)
    })
  }

  /** One line per event: `data <text> ×records`, `marker <text>`, `reply <text>`, `end`, `closed` (writable left out). */
  summary(): string[] {
    return this.events.flatMap((e) => {
      if (e.kind === 'writable') return []
      if (e.kind === 'data' || e.kind === 'marker' || e.kind === 'reply') {
        const event = e as unknown as { payload: Uint8Array; records?: number }
        return [`${e.kind} ${printable(event.payload)}${event.records === undefined ? '' : ` ×${event.records}`}`]
      }
      return [e.kind]
    })
  }
}

/** One case's pair, the handlers recording both sides, and the contract's checks on what they hear. */
class Harness {
  readonly sender: FrameSender
  readonly receiver: FrameReceiver
  readonly sent: EventLog<SenderEvent>
  readonly received: EventLog<ReceiverEvent>
  /** What the handlers heard that the contract rules out. */
  readonly violations: string[] = []
  private granted = 0
  private receivedRecords = 0

  constructor(
    readonly pair: FrameChannelPair,
    timeoutMs: number,
  ) {
    this.sender = pair.sender
    this.receiver = pair.receiver
    this.sent = new EventLog('producer', timeoutMs)
    this.received = new EventLog('consumer', timeoutMs)
  }

  listen(): void {
    this.listenSender()
    this.listenReceiver()
  }

  listenSender(): void {
    const closedBefore = (what: string): void => {
      if (this.sent.count('closed') > 0) this.violations.push(`the producer heard ${what} after closed`)
    }
    this.sender.listen({
      writable: () => {
        closedBefore('writable')
        this.sent.push({ kind: 'writable', credit: this.sender.credit })
      },
      reply: (payload) => {
        closedBefore('a reply')
        // The contract does not say the handler may keep this view: copy it.
        this.sent.push({ kind: 'reply', payload: new Uint8Array(payload) })
      },
      closed: (error) => {
        closedBefore('closed')
        this.sent.push({ kind: 'closed', error })
      },
    })
  }

  listenReceiver(): void {
    const after = (what: string): void => {
      if (this.received.count('closed') > 0) this.violations.push(`the consumer heard ${what} after closed`)
      if (this.received.count('end') > 0) this.violations.push(`the consumer heard ${what} after END`)
    }
    this.receiver.listen({
      data: (payload, records) => {
        after('DATA')
        this.receivedRecords += records
        if (this.receivedRecords > this.granted) this.violations.push(`${this.receivedRecords} records arrived with ${this.granted} granted`)
        // A view the handler may keep: kept as it is, compared when the case ends.
        this.received.push({ kind: 'data', payload, records })
      },
      marker: (payload) => {
        after('MARKER')
        this.received.push({ kind: 'marker', payload: new Uint8Array(payload) })
      },
      end: () => {
        after('END')
        this.received.push({ kind: 'end' })
      },
      closed: (error) => {
        after('closed')
        this.received.push({ kind: 'closed', error })
      },
    })
  }

  grant(records: number): void {
    this.granted += records
    this.receiver.grant(records)
  }

  /** Sends a DATA frame whose payload is `body` after `headroom` bytes that the transport may overwrite. */
  data(body: Uint8Array, records: number): void {
    const payload = new Uint8Array(this.sender.headroom + body.byteLength)
    payload.fill(0xa5, 0, this.sender.headroom)
    payload.set(body, this.sender.headroom)
    this.sender.data(payload, records)
  }

  /** Resolves once `credit` is at least `records`, now or with a `writable` event. */
  async untilCredit(records: number, what: string): Promise<void> {
    if (this.sender.credit >= records) return
    await this.sent.next((e) => e.kind === 'writable' && e.credit >= records, `credit of ${records} records after ${what}`)
  }

  /** Resolves once the consumer heard the MARKER frame whose payload is `payload` (as UTF-8). */
  async untilMarker(payload: string): Promise<void> {
    await this.received.when((e) => e.kind === 'marker' && printable(e.payload) === payload, `the marker "${payload}" at the consumer`)
  }

  /**
   * Sends one DATA frame of `records` records past the credit: the transport must refuse it (throw)
   * or break the channel, and never deliver it. Returns whether the channel lives on (it threw): then
   * a marker sent after it arrives with no DATA before it.
   */
  async expectRefused(records: number, when: string): Promise<boolean> {
    const refused = `past the credit (${when})`
    const delivered = (): number => this.received.events.filter((e) => e.kind === 'data' && printable(e.payload) === refused).length
    let threw = false
    try {
      this.data(text(refused), records)
    } catch {
      threw = true
    }
    if (!threw) {
      await this.received.when(isClosed, `the channel to break after a DATA frame ${refused}`)
      expect(delivered(), `DATA frames delivered ${refused}`).toBe(0)
      return false
    }
    // A marker sent after it arrives after where the refused frame would have.
    this.sender.marker(text(`probe (${when})`))
    await this.untilMarker(`probe (${when})`)
    expect(delivered(), `DATA frames delivered ${refused}`).toBe(0)
    return true
  }

  /** Both sides closed with a LinkBrokenError once, after `by` aborted with `code` and `message`; the other side's names both. */
  async expectAborted(by: 'producer' | 'consumer', code: string, message: string): Promise<void> {
    const [sent, received] = await Promise.all([this.sent.when(isClosed, 'closed at the producer'), this.received.when(isClosed, 'closed at the consumer')])
    const own = by === 'producer' ? sent.error : received.error
    const other = by === 'producer' ? received.error : sent.error
    expectFailure(own, `the ${by} (which aborted)`, [message])
    expectFailure(other, `the ${by === 'producer' ? 'consumer' : 'producer'}`, [code, message])
    expect(failureText(other), 'the second abort is not heard').not.toContain(SECOND_ABORT)
  }

  /** Waits until the pair says everything sent was delivered, when it can tell; then checks that nothing broke the contract. */
  async settled(): Promise<void> {
    await this.pair.settled?.()
    this.expectNoViolations()
    expect(this.sent.count('closed'), 'closed events at the producer').toBeLessThanOrEqual(1)
    expect(this.received.count('closed'), 'closed events at the consumer').toBeLessThanOrEqual(1)
  }

  expectNoViolations(): void {
    expect(this.violations, 'what the handlers heard against the contract').toEqual([])
  }

  /** Aborts both sides of a channel a case left open (a failed case): abort is idempotent and a no-op once over. */
  abortIfOpen(): void {
    const over = this.sent.count('closed') > 0 && (this.received.count('closed') > 0 || this.received.count('end') > 0)
    if (over) return
    for (const side of [this.sender, this.receiver]) {
      try {
        side.abort(CLEANUP_ABORT, 'the compliance case ended with the channel open')
      } catch {
        // the case failed already; its error is what vitest reports
      }
    }
  }
}

/** Asserts that `error` is a LinkBrokenError whose message (or the messages and codes of its causes) names every one of `names`. */
function expectFailure(error: LaminaError | undefined, side: string, names: readonly string[]): void {
  expect(error, `closed at ${side}: an error`).toBeDefined()
  expect(error?.code, `closed at ${side}: a LinkBrokenError`).toBe('ERR_LINK_BROKEN')
  const text = failureText(error)
  for (const name of names) expect(text, `closed at ${side} names ${name}`).toContain(name)
}

/** The messages and string fields (codes) of an error and its causes, in one string. */
function failureText(error: unknown): string {
  const parts: string[] = []
  for (let at = error, depth = 0; at !== undefined && at !== null && depth < 8; at = (at as { cause?: unknown }).cause, depth++) {
    if (typeof at !== 'object') {
      parts.push(String(at))
      break
    }
    for (const value of Object.values(at)) if (typeof value === 'string') parts.push(value)
    if (at instanceof Error) parts.push(at.message)
  }
  return parts.join(' | ')
}

function describeClosed(event: { readonly kind: string }): string {
  const error = (event as Closed).error
  return error === undefined ? 'a clean end' : `${error.code}: ${error.message}`
}

function text(value: string): Uint8Array {
  return new TextEncoder().encode(value)
}

/** A payload as text when it is short printable UTF-8, else its length. */
function printable(payload: Uint8Array): string {
  if (payload.byteLength <= 64) {
    const decoded = new TextDecoder('utf-8', { fatal: false }).decode(payload)
    if (/^[\x20-\x7e]*$/.test(decoded)) return decoded
  }
  return `<${payload.byteLength} bytes>`
}

function hex(payload: Uint8Array): string {
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('hex')
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

function randomBytes(random: () => number, length: number): Uint8Array {
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) bytes[i] = Math.floor(random() * 256)
  return bytes
}
