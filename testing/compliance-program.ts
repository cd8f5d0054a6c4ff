// The program the layer compliance suite runs: a source, a stateless relay and a keyed tally at parallelism 2, two sinks.
// Each operator is built by an export of this module, so a layer that rebuilds operators elsewhere (isolation) can import them.

import { atom, link, program, roundRobin, sink, source, t, type Operator, type Program } from '../kernel/index.js'

/** This module, for layers that rebuild an operator from its module (`{ module: COMPLIANCE_MODULE, export: 'relay' }`). */
export const COMPLIANCE_MODULE = import.meta.url

/** Keys of the tally: a number's key is `n % KEYS`. */
export const KEYS = 5

const Tagged = t.tuple([t.number, t.number])
const Seen = t.tuple([t.number, t.number, t.number])
const Totals = t.tuple([t.number, t.number, t.number])
const Tally = t.type({ count: t.number, sum: t.number })

/** `[relay instance, n]`: a number and the relay instance it went through. */
export type TaggedNumber = t.TypeOf<typeof Tagged>
/** `[relay instance, tally instance, n]`: what the `seen` sink receives. */
export type SeenNumber = t.TypeOf<typeof Seen>
/** `[key, count, sum]`: what the `totals` sink receives at the end. */
export type KeyTotals = t.TypeOf<typeof Totals>

/** Passes every number on, tagged with the relay instance that handled it. Stateless. */
export function relay(): Operator<{ in: t.NumberC }, { out: typeof Tagged }> {
  return atom({ name: 'relay', inputs: { in: t.number }, outputs: { out: Tagged }, on: { in: (n, ctx) => ctx.emit('out', [ctx.info.instance, n]) } })
}

/** Counts and sums numbers by key (`n % KEYS`), passing each on as it comes; emits the totals of every key at the end. */
export function tally(): Operator<{ in: typeof Tagged }, { out: typeof Seen; totals: typeof Totals }> {
  return atom({
    name: 'tally',
    inputs: { in: Tagged },
    outputs: { out: Seen, totals: Totals },
    key: ([, n]) => n % KEYS,
    state: { codec: Tally, init: () => ({ count: 0, sum: 0 }) },
    on: {
      in: ([r, n], ctx) => {
        ctx.state.update((s) => ({ count: s.count + 1, sum: s.sum + n }))
        ctx.emit('out', [r, ctx.info.instance, n])
      },
    },
    end: (ctx) => {
      for (const [key, s] of ctx.state.entries()) ctx.emit('totals', [Number(key), s.count, s.sum])
    },
  })
}

/** What a run of the compliance program delivered. */
export interface ComplianceOutput {
  readonly seen: SeenNumber[]
  readonly totals: KeyTotals[]
}

/** Operators of the program a suite may rewrite (annotate) before it runs: the relay and the tally. */
export type ComplianceOperator = 'relay' | 'tally'

/**
 * The compliance program over `count` numbers: numbers → relay ×2 (round robin) → tally ×2 (by
 * key) → seen, and tally → totals. `prepare` may replace the relay and the tally (same name and
 * ports), e.g. to annotate them for the layer under test.
 */
export function complianceProgram(count: number, output: ComplianceOutput, prepare: (operator: Operator, name: ComplianceOperator) => Operator = (o) => o): Program {
  const numbers = source(
    'numbers',
    t.number,
    Array.from({ length: count }, (_, i) => i),
  )
  const relays = prepare(relay().annotate({ parallelism: 2 }) as Operator, 'relay') as ReturnType<typeof relay>
  const tallies = prepare(tally().annotate({ parallelism: 2 }) as Operator, 'tally') as ReturnType<typeof tally>
  const seen = sink('seen', Seen, output.seen)
  const totals = sink('totals', Totals, output.totals)
  return program('compliance', {
    operators: [numbers, relays, tallies, seen, totals],
    links: [
      link(numbers.outputs.out, relays.inputs.in, { partitioning: roundRobin() }),
      link(relays.outputs.out, tallies.inputs.in),
      link(tallies.outputs.out, seen.inputs.in),
      link(tallies.outputs.totals, totals.inputs.in),
    ],
  })
}

/** The totals the compliance program must deliver for `count` numbers, sorted by key. */
export function expectedTotals(count: number): KeyTotals[] {
  const totals = Array.from({ length: KEYS }, (_, key): KeyTotals => [key, 0, 0])
  for (let n = 0; n < count; n++) {
    const row = totals[n % KEYS]!
    row[1]++
    row[2] += n
  }
  return totals.filter((row) => row[1] > 0)
}
