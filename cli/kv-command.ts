// `lamina kv get|put|del|scan|watch`: the KV store of a running cluster, from the shell. Connects
// as a client (its own identity, admitted like `lamina jobs`), learns the service's layout from
// the first member that answers, and talks to the shards' replicas.

import { parseArgs } from 'node:util'
import { createPeerNode, type PeerNode, readPskFile } from '../kmods/transport/index.js'
import { campaign, KvClient, type Leadership } from '../services/kv/index.js'
import { CONNECTION_OPTIONS, connectionOf } from './cluster-commands.js'
import { UsageError } from './errors.js'

/** Usage of `lamina kv`. */
export const KV_USAGE = `usage: lamina kv get KEY | put KEY VALUE | del KEY | scan PREFIX | watch PREFIX | elect ROLE NAME  [options] [connection…]
  The KV store a program started with startKv(cluster, …), from any member of the cluster.
  get KEY            prints the value (exit 1 when the key does not exist); --json prints the entry with its revisions
  put KEY VALUE      sets the value; prints the shard's revision after the write
  del KEY            deletes the key; prints the revision (exit 1 when it did not exist)
  scan PREFIX        prints KEY=VALUE lines in key order; --limit N (default 1000)
  watch PREFIX       prints every change under PREFIX until Ctrl-C; --from-revision N replays from there
  elect ROLE NAME    campaigns for ROLE as NAME; once held prints "ROLE NAME TOKEN" (the fencing token)
                     and holds it until Ctrl-C or SIGTERM (then resigns; exit 0) or until it is lost
                     (exit 1); --ttl MS (default 3000): how long the role outlives this process
  --name NAME        the service (default kv)
  --serializable     reads from any replica (may be behind) instead of linearizable reads
  --json             one JSON object per line
connection (flags, or a JSON config file with the same keys: {"cluster": [ADDR…], "psk": FILE, "workdir": DIR}):
  --cluster ADDR   a member's multiaddr, ending in /p2p/<peer id>; repeatable (the first that answers is used)
  --psk FILE       the cluster's swarm key file
  --workdir DIR    this client's identity (default ~/.lamina/client)
  --config FILE    read the above from FILE (default: $LAMINA_CONFIG, if set); flags take precedence
  --timeout MS     how long a call keeps trying (default 10000)`

const ARITY: Readonly<Record<string, number>> = { get: 1, put: 2, del: 1, scan: 1, watch: 1, elect: 2 }

/**
 * A client peer node (no listening address) and a KvClient of service `name`, from the first member
 * of `connection.cluster` that answers. Throws naming every member that did not.
 */
export async function connectKv(
  connection: ReturnType<typeof connectionOf>,
  options: { readonly name?: string | undefined; readonly serializable?: boolean },
): Promise<{ node: PeerNode; client: KvClient }> {
  const node = await createPeerNode({
    workdir: connection.workdir,
    psk: await readPskFile(connection.psk),
    listen: [],
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
  })
  const failures: string[] = []
  for (const contact of connection.cluster) {
    try {
      const client = await KvClient.connect({
        node,
        contact,
        timeoutMs: connection.timeoutMs,
        ...(options.name === undefined ? {} : { name: options.name }),
        ...(options.serializable === true ? { consistency: 'serializable' as const } : {}),
      })
      return { node, client }
    } catch (error) {
      failures.push(`${contact}: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  await node.stop()
  throw new Error(`no member answered:\n  ${failures.join('\n  ')}`)
}

/** Runs `lamina kv …`; returns the exit status. */
export async function kvCommand(argv: readonly string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>
  try {
    parsed = parse(argv)
  } catch (error) {
    throw new UsageError(`lamina kv: ${error instanceof Error ? error.message : String(error)}`, KV_USAGE)
  }
  const { verb, args, values, connection } = parsed
  const { node, client } = await connectKv(connection, { name: values.name, serializable: values.serializable === true })
  try {
    const json = values.json === true
    const print = (line: string): void => void process.stdout.write(`${line}\n`)
    switch (verb) {
      case 'get': {
        const entry = await client.get(args[0]!)
        if (entry === undefined) {
          if (json) print('null')
          else process.stderr.write(`lamina kv: ${args[0]} does not exist\n`)
          return 1
        }
        print(json ? JSON.stringify(entry) : entry.value)
        return 0
      }
      case 'put': {
        const result = await client.put(args[0]!, args[1]!)
        print(json ? JSON.stringify({ shard: client.shardOf(args[0]!), revision: result.revision }) : `${client.shardOf(args[0]!)} revision ${result.revision}`)
        return 0
      }
      case 'del': {
        const result = await client.delete(args[0]!)
        print(
          json
            ? JSON.stringify({ shard: client.shardOf(args[0]!), revision: result.revision, existed: result.prev !== undefined })
            : `${client.shardOf(args[0]!)} revision ${result.revision}`,
        )
        return result.prev === undefined ? 1 : 0
      }
      case 'scan': {
        const limit = values.limit === undefined ? 1000 : Number(values.limit)
        if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`lamina kv: --limit must be a whole number >= 1, got ${values.limit}`, KV_USAGE)
        for (const entry of await client.scan({ prefix: args[0]!, limit })) print(json ? JSON.stringify(entry) : `${entry.key}=${entry.value}`)
        return 0
      }
      case 'elect': {
        const ttl = values.ttl === undefined ? 3000 : Number(values.ttl)
        if (!Number.isInteger(ttl) || ttl < 1000) throw new UsageError(`lamina kv: --ttl must be a whole number of milliseconds >= 1000, got ${values.ttl}`, KV_USAGE)
        const stop = new AbortController()
        const quit = (): void => stop.abort(new Error('interrupted'))
        process.once('SIGINT', quit)
        process.once('SIGTERM', quit)
        let role: Leadership
        try {
          role = await campaign(client, args[0]!, args[1]!, { ttlMs: ttl, signal: stop.signal })
        } catch (error) {
          if (stop.signal.aborted) return 0
          throw error
        }
        print(json ? JSON.stringify({ role: role.role, holder: role.holder, token: role.token }) : `${role.role} ${role.holder} ${role.token}`)
        const ended = await Promise.race([
          role.lost.then((error) => ({ lost: error })),
          new Promise<{ lost?: undefined }>((resolve) => stop.signal.addEventListener('abort', () => resolve({}), { once: true })),
        ])
        if (ended.lost !== undefined) {
          process.stderr.write(`lamina kv: lost ${role.role}: ${ended.lost.message}\n`)
          return 1
        }
        await role.resign()
        return 0
      }
      default: {
        const from = values['from-revision'] === undefined ? undefined : Number(values['from-revision'])
        if (from !== undefined && (!Number.isInteger(from) || from < 1))
          throw new UsageError(`lamina kv: --from-revision must be a whole number >= 1, got ${values['from-revision']}`, KV_USAGE)
        const watching = client
        await new Promise<void>((resolve, reject) => {
          const subscription = watching.watch(args[0]!, from === undefined ? {} : { fromRevision: from }).subscribe({
            next: (e) => print(json ? JSON.stringify(e) : `${e.shard}@${e.revision} ${e.type} ${e.key}${e.value === undefined ? '' : `=${e.value}`}`),
            error: reject,
          })
          process.once('SIGINT', () => {
            subscription.unsubscribe()
            resolve()
          })
        })
        return 0
      }
    }
  } finally {
    client.close()
    await node.stop()
  }
}

function parse(argv: readonly string[]) {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      ...CONNECTION_OPTIONS,
      name: { type: 'string' },
      serializable: { type: 'boolean' },
      limit: { type: 'string' },
      'from-revision': { type: 'string' },
      ttl: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  })
  const [verb, ...args] = positionals
  if (verb === undefined) throw new Error('a verb is missing: get, put, del, scan, watch or elect')
  const arity = ARITY[verb]
  if (arity === undefined) throw new Error(`unknown verb "${verb}": get, put, del, scan, watch or elect`)
  if (args.length !== arity) throw new Error(`${verb} takes ${arity === 1 ? 'one argument' : 'two arguments'}, got ${args.length}`)
  return { verb, args, values, connection: connectionOf(values) }
}
