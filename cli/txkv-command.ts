// `lamina txkv OP…`: one transaction against the transactional KV store of a running cluster, from
// the shell: reads, compares and writes over any keys of any shards, all applied or none.

import { parseArgs } from 'node:util'
import { TxKv, type TxOp } from '../services/txkv/index.js'
import { CONNECTION_OPTIONS, connectionOf } from './cluster-commands.js'
import { UsageError } from './errors.js'
import { connectKv } from './kv-command.js'

/** Usage of `lamina txkv`. */
export const TXKV_USAGE = `usage: lamina txkv OP… [options] [connection…]
  One transaction on the store a program started with startTxKv(cluster, …): every OP, all or none.
  get KEY            reads KEY; printed as KEY=VALUE (or KEY absent) after the commit
  put KEY=VALUE      writes VALUE to KEY
  del KEY            deletes KEY
  if KEY=VALUE       commits only if KEY's value is VALUE (else nothing is written; exit 1)
  if-absent KEY      commits only if KEY does not exist (else nothing is written; exit 1)
  --name NAME        the service (default txkv)
  --json             prints {"committed", "reads", "failed"?} as one JSON object
  e.g. lamina txkv get acct/a get acct/b put acct/a=90 put acct/b=110 if acct/a=100 --cluster …
connection: as for \`lamina kv\` (--cluster ADDR, --psk FILE, --workdir DIR, --config FILE, --timeout MS)`

type Op = { readonly verb: 'get' | 'del' | 'if-absent'; readonly key: string } | { readonly verb: 'put' | 'if'; readonly key: string; readonly value: string }

/** Reads `get KEY put KEY=VALUE …` into operations; throws naming the first that does not parse. */
function operations(words: readonly string[]): Op[] {
  const ops: Op[] = []
  for (let i = 0; i < words.length; i += 2) {
    const verb = words[i]!
    const arg = words[i + 1]
    if (arg === undefined) throw new Error(`${verb} needs an argument`)
    if (verb === 'get' || verb === 'del' || verb === 'if-absent') ops.push({ verb, key: arg })
    else if (verb === 'put' || verb === 'if') {
      const at = arg.indexOf('=')
      if (at <= 0) throw new Error(`${verb} takes KEY=VALUE, got ${JSON.stringify(arg)}`)
      ops.push({ verb, key: arg.slice(0, at), value: arg.slice(at + 1) })
    } else throw new Error(`unknown operation "${verb}": get, put, del, if or if-absent`)
  }
  if (ops.length === 0) throw new Error('no operation: give at least one of get, put, del, if, if-absent')
  return ops
}

/** Runs `lamina txkv …`; returns the exit status (1 when a compare failed). */
export async function txkvCommand(argv: readonly string[]): Promise<number> {
  let parsed: { ops: Op[]; json: boolean; name: string | undefined; connection: ReturnType<typeof connectionOf> }
  try {
    const { values, positionals } = parseArgs({ args: [...argv], options: { ...CONNECTION_OPTIONS, name: { type: 'string' } }, allowPositionals: true, strict: true })
    parsed = { ops: operations(positionals), json: values.json === true, name: values.name, connection: connectionOf(values) }
  } catch (error) {
    throw new UsageError(`lamina txkv: ${error instanceof Error ? error.message : String(error)}`, TXKV_USAGE)
  }
  const { ops, json, connection } = parsed
  const { node, client } = await connectKv(connection, { name: parsed.name ?? 'txkv' })
  try {
    const db = new TxKv(client)
    const run = await db.run(
      ops.map((op): TxOp => {
        if (op.verb === 'put' || op.verb === 'if') return { op: op.verb, key: op.key, value: op.value }
        return op.verb === 'get' ? { op: 'get', key: op.key } : op.verb === 'del' ? { op: 'delete', key: op.key } : { op: 'if', key: op.key, value: undefined }
      }),
    )
    const shown = (v: string | undefined): string => (v === undefined ? 'absent' : JSON.stringify(v))
    const failed = run.failed === undefined ? undefined : `${run.failed.key} is ${shown(run.failed.actual)}, not ${shown(run.failed.expected)}`
    const outcome = { committed: run.committed, reads: run.reads, ...(failed === undefined ? {} : { failed }) }
    if (json) process.stdout.write(`${JSON.stringify(outcome)}\n`)
    else {
      for (const [key, value] of Object.entries(outcome.reads)) process.stdout.write(value === null ? `${key} absent\n` : `${key}=${value}\n`)
      if (failed !== undefined) process.stderr.write(`lamina txkv: not committed: ${failed}\n`)
    }
    // The committed transaction's other shards are told before the connection goes.
    await db.settled()
    return outcome.committed ? 0 : 1
  } finally {
    client.close()
    await node.stop()
  }
}
