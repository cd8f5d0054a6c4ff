// The KV store from a dataflow program: client atoms that write records to the store and look
// keys up, with backpressure (an instance takes its next batch once the store has answered for
// this one), on whichever peer the instance runs.
//
// Each peer process hosts the KV service (host.ts), which registers its libp2p node here; an atom
// instance makes its client on that node, from the layout the program was given (`kv.layout`,
// as JSON among the program's arguments: see `kvLayoutArg`). A record the store refuses (a key
// over the limit, no answer in time) is not dropped: it goes to the job's dead letters with the
// reason, and the other records go on.

import * as t from 'io-ts'
import { type Annotations, type AnyCodec, atom, type Operator } from '../../kernel/index.js'
import { KvClient, type KvShardLayout } from './client.js'
import { KvCommandError } from './errors.js'
import { localKvNode } from './local.js'
import type { KvConsistency } from './replica.js'
import type { KvEntry } from './state.js'

const clients = new Map<string, KvClient>()

/** The client of `layout` on this process's node, shared by the atom instances here (and by services/txkv's sink). */
export function clientFor(layout: readonly KvShardLayout[], operator: string): KvClient {
  const id = JSON.stringify(layout)
  let client = clients.get(id)
  const node = localKvNode()
  if (client === undefined || client.node !== node) {
    if (node === undefined) throw new KvCommandError('node', `operator ${operator} runs where no KV host runs (start the peer with lamina peer, or call startKv in this process)`)
    client?.close()
    client = new KvClient({ node, shards: layout })
    clients.set(id, client)
  }
  return client
}

/** The layout of a running KV service as one program argument (`cluster.submit(module, { args: [kvLayoutArg(kv)] })`). */
export function kvLayoutArg(kv: { readonly layout: readonly KvShardLayout[] }): string {
  return JSON.stringify(kv.layout)
}

const Layout = t.readonlyArray(t.type({ shard: t.string, members: t.record(t.string, t.string) }))

/** Reads a layout from a program argument made by `kvLayoutArg`; throws KvCommandError naming what is wrong. */
export function parseKvLayout(arg: string | undefined): readonly KvShardLayout[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(arg ?? '')
  } catch {
    throw new KvCommandError('layout', `is not JSON (got ${JSON.stringify(arg?.slice(0, 60))}): pass kvLayoutArg(kv)`)
  }
  const decoded = Layout.decode(parsed)
  if (decoded._tag === 'Left' || decoded.right.length === 0) throw new KvCommandError('layout', 'is not a KV layout (a non-empty list of { shard, members }): pass kvLayoutArg(kv)')
  return decoded.right
}

/** Options of `kvWrite`. */
export interface KvWriteOptions<I extends AnyCodec> {
  readonly layout: readonly KvShardLayout[]
  readonly input: I
  readonly key: (value: t.TypeOf<I>) => string
  readonly value: (value: t.TypeOf<I>) => string
  readonly annotations?: Annotations
}

const Written = t.type({ key: t.string, revision: t.number })

/**
 * Writes every record of `in` to the store (`put(key(v), value(v))`) and emits `{ key, revision }`
 * on `out` once the write is acknowledged: durable on a majority of its shard's replicas.
 */
export function kvWrite<I extends AnyCodec>(name: string, options: KvWriteOptions<I>): Operator<{ in: I }, { out: typeof Written }> {
  return atom<{ in: I }, { out: typeof Written }>({
    name,
    inputs: { in: options.input } as { in: I },
    outputs: { out: Written },
    onBatch: {
      in: async (values, ctx) => {
        const client = clientFor(options.layout, name)
        const answers = await Promise.allSettled(values.map((v) => client.put(options.key(v), options.value(v))))
        answers.forEach((answer, i) => {
          const key = options.key(values[i])
          if (answer.status === 'fulfilled') ctx.emit('out', { key, revision: answer.value.revision })
          else ctx.reject(values[i], `kv put ${JSON.stringify(key)}: ${answer.reason instanceof Error ? answer.reason.message : String(answer.reason)}`)
        })
      },
    },
    ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
  })
}

/** Options of `kvLookup`. */
export interface KvLookupOptions<I extends AnyCodec> {
  readonly layout: readonly KvShardLayout[]
  readonly input: I
  readonly key: (value: t.TypeOf<I>) => string
  /** @default 'linearizable' */
  readonly consistency?: KvConsistency
  readonly annotations?: Annotations
}

const Entry = t.union([t.null, t.type({ key: t.string, value: t.string, createRevision: t.number, modRevision: t.number, version: t.number })])

/** Looks up `key(v)` for every record of `in` and emits `{ record, entry }` (`entry` null when the key does not exist). */
export function kvLookup<I extends AnyCodec>(name: string, options: KvLookupOptions<I>): Operator<{ in: I }, { out: t.TypeC<{ record: I; entry: typeof Entry }> }> {
  const output = t.type({ record: options.input, entry: Entry })
  return atom<{ in: I }, { out: typeof output }>({
    name,
    inputs: { in: options.input } as { in: I },
    outputs: { out: output },
    onBatch: {
      in: async (values, ctx) => {
        const client = clientFor(options.layout, name)
        const consistency = options.consistency ?? 'linearizable'
        const answers = await Promise.allSettled(values.map((v) => client.get(options.key(v), { consistency })))
        answers.forEach((answer, i) => {
          if (answer.status === 'fulfilled') ctx.emit('out', { record: values[i], entry: answer.value === undefined ? null : plain(answer.value) })
          else ctx.reject(values[i], `kv get ${JSON.stringify(options.key(values[i]))}: ${answer.reason instanceof Error ? answer.reason.message : String(answer.reason)}`)
        })
      },
    },
    ...(options.annotations === undefined ? {} : { annotations: options.annotations }),
  })
}

/** An entry without its lease (what the output codec carries). */
function plain(entry: KvEntry): t.TypeOf<typeof Entry> {
  return { key: entry.key, value: entry.value, createRevision: entry.createRevision, modRevision: entry.modRevision, version: entry.version }
}
