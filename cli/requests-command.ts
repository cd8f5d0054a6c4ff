// `lamina requests ls|show|cancel|retry`: durable requests (lamina/durable) of a running cluster,
// from the shell: the scheduler's journal, inspected and changed by hand.

import { parseArgs } from 'node:util'
import { durable, type RequestRecord } from '../services/durable/index.js'
import { CONNECTION_OPTIONS, connectionOf } from './cluster-commands.js'
import { UsageError } from './errors.js'
import { connectKv } from './kv-command.js'

/** Usage of `lamina requests`. */
export const REQUESTS_USAGE = `usage: lamina requests ls [--name NAME] [--state STATE] [--json] | show NAME ID | cancel NAME ID | retry NAME ID  [connection…]
  The durable requests journaled in the cluster's KV store (durable(kv).call / serve).
  ls             one line per request: name/id, state, attempts, age, last error (--limit N, default 100)
  show NAME ID   the request's record as JSON: input, state, result or error, every attempt
  cancel NAME ID cancels a request that has not ended (a running attempt's outcome is dropped)
  retry NAME ID  queues a dead or cancelled request again, its attempts reset
connection: as for lamina kv (--cluster ADDR…, --psk FILE, --workdir DIR, --config FILE, --timeout MS)`

const ARITY: Readonly<Record<string, number>> = { ls: 0, show: 2, cancel: 2, retry: 2 }
const STATES = ['queued', 'running', 'succeeded', 'dead', 'cancelled']

/** Runs `lamina requests …`; returns the exit status. */
export async function requestsCommand(argv: readonly string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (error) {
    throw new UsageError(`lamina requests: ${error instanceof Error ? error.message : String(error)}`, REQUESTS_USAGE)
  }
  const { verb, args, values, connection } = parsed
  const { node, client } = await connectKv(connection, {})
  try {
    const d = durable(client)
    const print = (line: string): void => void process.stdout.write(`${line}\n`)
    if (verb === 'ls') {
      const records = await d.list({
        ...(values.name === undefined ? {} : { name: values.name }),
        ...(values.state === undefined ? {} : { state: values.state as RequestRecord['state'] }),
        limit: values.limit === undefined ? 100 : Number(values.limit),
      })
      for (const r of records) {
        if (values.json === true) print(JSON.stringify(r))
        else
          print(
            `${r.name}/${r.id}  ${r.state}  attempts ${r.attempts}/${r.retry.attempts}  ${Math.round((Date.now() - r.createdAt) / 1000)} s ago${r.error === null ? '' : `  [${r.error.code}] ${r.error.message}`}`,
          )
      }
      return 0
    }
    const [name, id] = args as [string, string]
    const record = verb === 'show' ? await d.show(name, id) : verb === 'cancel' ? await d.cancel(name, id) : await d.retry(name, id)
    print(JSON.stringify(record, null, 2))
    return 0
  } catch (error) {
    process.stderr.write(`lamina requests: ${error instanceof Error ? error.message : String(error)}\n`)
    return 1
  } finally {
    client.close()
    await node.stop()
  }
}

function parse(argv: readonly string[]) {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: { ...CONNECTION_OPTIONS, name: { type: 'string' }, state: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  })
  const [verb, ...args] = positionals
  if (verb === undefined) throw new Error('a verb is missing: ls, show, cancel or retry')
  const arity = ARITY[verb]
  if (arity === undefined) throw new Error(`unknown verb "${verb}": ls, show, cancel or retry`)
  if (args.length !== arity) throw new Error(`${verb} takes ${arity === 0 ? 'no arguments' : 'NAME ID'}, got ${args.length} argument(s)`)
  if (values.state !== undefined && !STATES.includes(values.state)) throw new Error(`--state must be one of ${STATES.join(', ')}, got ${JSON.stringify(values.state)}`)
  if (values.limit !== undefined && !(Number.isInteger(Number(values.limit)) && Number(values.limit) > 0))
    throw new Error(`--limit must be a whole number > 0, got ${JSON.stringify(values.limit)}`)
  return { verb, args, values, connection: connectionOf(values) }
}
