// Order revenue: per customer and 10-second window of event time, how many orders and how much
// revenue, printed as `<window start> <customer> <count> <revenue>` lines.
//
//   node --import tsx examples/orders.ts                in one process (10,000 generated orders)
//   lamina run examples/orders.ts --peers 3             on three local peer processes
//   lamina run examples/orders.ts --peers 3 -- 50000    with 50,000 orders
//
// The orders are generated: order i is a function of i alone (a seeded hash), so every peer
// builds the same stream and the source can replay it from any offset after a restore. An order's
// time is its place in the stream (one every 100 ms from 2024-01-01T00:00:00Z) less up to 3 s of
// jitter: orders arrive out of order, within a bound the source declares (`outOfOrderMs`). Its
// watermark trails the largest time seen by that bound, so no order is late and each window fires
// once, when the watermark passes its end (docs/guide-dataflow.md walks through it).

import { pathToFileURL } from 'node:url'
import { filter, kernel, link, map, program, seededRandom, sink, source, t, tumbling, window, type Layer, type Program, type SourcePart, type WindowResult } from 'lamina'
import { checkpoints, colocate, explain, placement, planOf, requireTags, spread } from 'lamina/layers'

/** An order: `amount` in cents (integers add up exactly; 0 is a cancelled order), `time` in ms since the epoch. */
export const Order = t.type({ id: t.number, customer: t.string, region: t.string, amount: t.number, time: t.number })
export type Order = t.TypeOf<typeof Order>

/** What the windows need of a paid order: less to send between peers. */
export const Sale = t.type({ customer: t.string, cents: t.number, time: t.number })
export type Sale = t.TypeOf<typeof Sale>

/** One window's value: orders and revenue (cents). */
export const Revenue = t.type({ count: t.number, cents: t.number })
export type Revenue = t.TypeOf<typeof Revenue>

/** When the generated orders begin: 2024-01-01T00:00:00Z. */
export const START_MS = Date.UTC(2024, 0, 1)
/** Event time between two consecutive orders. */
export const SPACING_MS = 100
/** How far an order's time may lag behind an earlier order's: the source's bound on disorder. */
export const OUT_OF_ORDER_MS = 3000
/** The windows' length. */
export const WINDOW_MS = 10_000

const CUSTOMERS = ['ada', 'alan', 'barbara', 'edsger', 'grace', 'john', 'ken', 'margaret']
const REGIONS = ['eu', 'us', 'apac']

/** Order `i` of the generated stream: the same on every peer, every run and every replay. */
export function orderAt(i: number): Order {
  const random = seededRandom(Math.imul(i, 0x9e3779b1) ^ 0x5eed)
  const c = Math.floor(random() * CUSTOMERS.length)
  // One order in twenty is cancelled (amount 0); the others cost 1.00 to 200.00.
  const amount = random() < 0.05 ? 0 : 100 + Math.floor(random() * 19_901)
  // Never before the start, so the first window begins there.
  const time = START_MS + i * SPACING_MS - Math.min(Math.floor(random() * OUT_OF_ORDER_MS), i * SPACING_MS)
  return { id: i, customer: CUSTOMERS[c]!, region: REGIONS[c % REGIONS.length]!, amount, time }
}

/** The orders one source instance reads: its stride of the first `count`, from `part.offset` on after a restore. */
function* generated(part: SourcePart, count: number): Generator<Order> {
  for (let n = part.offset; ; n++) {
    const i = part.instance + n * part.parallelism
    if (i >= count) return
    yield orderAt(i)
  }
}

/** A window's line: `2024-01-01T00:00:10.000Z grace 14 1234.56`. */
export function formatRevenue(row: WindowResult<Revenue>): string {
  return `${new Date(row.start).toISOString()} ${row.key} ${row.value.count} ${(row.value.cents / 100).toFixed(2)}`
}

/** Options of the orders program. */
export interface OrdersOptions {
  /** Where each fired window goes (on the peer that runs the sink: the submitter). */
  readonly out: (row: WindowResult<Revenue>) => unknown
  /** How many orders the source generates. @default 10000 */
  readonly count?: number
}

/**
 * Builds the orders program: orders (event time) -> paid (drops cancelled orders) -> sale (keeps
 * what the windows need) -> revenue (per customer, 10 s tumbling windows) -> print.
 *
 * Placement annotations, read when the placement layer is stacked (this module's `layers`):
 * `paid` runs 3 instances spread over the peers, `sale` beside it (instance i with instance i, so
 * that link stays in memory), and the windows, which hold state, on the peer tagged `name=peer-0`
 * (`lamina run` tags peer i `name=peer-<i>`). Without the layer they are data nobody reads.
 */
export function orders(options: OrdersOptions): Program {
  const count = options.count ?? 10_000
  const input = source('orders', Order, (part) => generated(part, count), {
    // Each batch the source emits is followed by a watermark: the largest time so far less the bound.
    eventTime: { timestamp: (order) => order.time, outOfOrderMs: OUT_OF_ORDER_MS },
    // The generator starts at the offset it is given, so a restored source reads on from there.
    replay: 'seek',
  })
  const paid = spread(filter('paid', Order, (order) => order.amount > 0, { parallelism: 3 }))
  const sale = colocate(
    map('sale', Order, Sale, (order) => ({ customer: order.customer, cents: order.amount, time: order.time }), { parallelism: 3 }),
    paid,
  )
  const revenue = requireTags(
    window('revenue', {
      input: Sale,
      key: (s) => s.customer,
      timestamp: (s) => s.time,
      window: tumbling(WINDOW_MS),
      aggregate: { codec: Revenue, init: () => ({ count: 0, cents: 0 }), add: (r, s) => ({ count: r.count + 1, cents: r.cents + s.cents }) },
      parallelism: 2,
    }),
    'name=peer-0',
  )
  const print = sink('print', revenue.outputs.out.codec, options.out)
  return program('orders', {
    operators: [input, paid, sale, revenue, print],
    links: [
      link(input.outputs.out, paid.inputs.in),
      link(paid.outputs.out, sale.inputs.in),
      // Keyed: the link hashes by customer, so each customer's windows live in one instance.
      link(sale.outputs.out, revenue.inputs.in),
      link(revenue.outputs.out, print.inputs.in),
    ],
  })
}

/**
 * The layers `lamina run` stacks for this program on every peer: placement reads the annotations;
 * checkpoints snapshot the windows and the source's offset every second, so a job that loses a
 * peer resumes from the last checkpoint (and the sink writes each window once).
 */
export const layers: Layer[] = [placement(), checkpoints({ intervalMs: 1000 })]

/** Called by `lamina run` once the program is planned: the placement explanation, on stderr (stdout is the result). */
export function planned(program: Program): void {
  const plan = planOf(program)
  if (plan !== undefined) process.stderr.write(`placement:\n${explain(plan).text}\n`)
}

/** The program module `lamina run examples/orders.ts [-- COUNT]` deploys; the sink prints on the submitting peer. */
export default function build(args: readonly string[]): Program {
  const count = args[0] === undefined ? undefined : Number(args[0])
  return orders({ ...(count === undefined ? {} : { count }), out: (row) => void process.stdout.write(`${formatRevenue(row)}\n`) })
}

async function main(argv: readonly string[]): Promise<void> {
  const count = argv[0] === undefined ? 10_000 : Number(argv[0])
  if (!Number.isInteger(count) || count < 0) throw new Error(`COUNT must be a whole number of orders, got ${argv[0]}`)
  // In one process, with no layers: every instance runs here and the annotations are not read.
  const report = await kernel.run(orders({ count, out: (row) => void process.stdout.write(`${formatRevenue(row)}\n`) })).done
  if (report.deadLetters.length > 0) {
    process.stderr.write(`${report.deadLetters.length} dead letters; first: ${report.deadLetters[0]!.message}\n`)
    process.exitCode = 1
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  // A reader that stops early (`| head`) is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error
  })
  main(process.argv.slice(2)).catch((error: unknown) => {
    process.stderr.write(`orders: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exitCode = 1
  })
}
