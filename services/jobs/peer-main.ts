// The entry point of one peer process: `lamina peer`, and the children `startCluster` spawns.

import '../../kmods/transport/polyfill.js'
import { readFileSync, statSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { join } from 'node:path'
import { openStore } from '../../kmods/store/index.js'
import { readOrCreatePskFile, readPskFile } from '../../kmods/transport/psk.js'
import { startKvHost } from '../kv/index.js'
import { Peer } from './peer.js'
import { reportReady, watchParent } from '../../kmods/nursery/nursery.js'

/** Options of one peer process, from its command line. */
export interface PeerCommand {
  readonly workdir: string
  readonly listen: readonly string[]
  readonly bootstrap: readonly string[]
  /** Path of the swarm key file; created when `createPsk`. */
  readonly psk: string
  readonly createPsk: boolean
  /** Path of a file of admitted peer ids, one per line, or undefined for every key holder. */
  readonly allow: string | undefined
  /** Path of a file of the peer ids that may submit jobs, one per line, or undefined for every admitted peer. */
  readonly submitters: string | undefined
  readonly tags: Readonly<Record<string, string>>
  /** Milliseconds to keep trying the bootstrap addresses before exiting with the reason. */
  readonly joinTimeoutMs: number
}

/** Parses `--workdir DIR --psk FILE [--listen ADDR]… [--bootstrap ADDR]… [--allow FILE] [--submitters FILE] [--tag k=v]… [--create-psk]`. */
export function parsePeerCommand(argv: readonly string[]): PeerCommand {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      workdir: { type: 'string' },
      listen: { type: 'string', multiple: true },
      bootstrap: { type: 'string', multiple: true },
      psk: { type: 'string' },
      'create-psk': { type: 'boolean' },
      allow: { type: 'string' },
      submitters: { type: 'string' },
      'join-timeout': { type: 'string' },
      tag: { type: 'string', multiple: true },
    },
    strict: true,
  })
  if (values.workdir === undefined) throw new Error('--workdir DIR is required (the peer keeps its identity there)')
  if (values.psk === undefined) throw new Error('--psk FILE is required (the private network key; --create-psk makes one)')
  const tags: Record<string, string> = {}
  for (const tag of values.tag ?? []) {
    const at = tag.indexOf('=')
    if (at <= 0) throw new Error(`--tag ${tag}: expected key=value`)
    tags[tag.slice(0, at)] = tag.slice(at + 1)
  }
  const joinTimeoutMs = Number(values['join-timeout'] ?? 60_000)
  if (!Number.isInteger(joinTimeoutMs) || joinTimeoutMs < 0) throw new Error(`--join-timeout ${values['join-timeout']}: expected milliseconds, a whole number >= 0`)
  return {
    joinTimeoutMs,
    workdir: values.workdir,
    listen: values.listen ?? ['/ip4/127.0.0.1/tcp/0'],
    bootstrap: values.bootstrap ?? [],
    psk: values.psk,
    createPsk: values['create-psk'] ?? false,
    allow: values.allow,
    submitters: values.submitters,
    tags,
  }
}

/** Runs one peer until SIGINT/SIGTERM (or its parent goes away); returns the running peer. */
export async function runPeer(command: PeerCommand): Promise<Peer> {
  const psk = command.createPsk ? await readOrCreatePskFile(command.psk) : await readPskFile(command.psk)
  const log = (line: string): void => void process.stderr.write(`lamina peer: ${line}\n`)
  const allowed = command.allow === undefined ? undefined : await idFile(command.allow, '--allow', log)
  const submitters = command.submitters === undefined ? undefined : await idFile(command.submitters, '--submitters', log)
  const peer = await Peer.start({
    workdir: command.workdir,
    listen: command.listen,
    psk,
    tags: command.tags,
    bootstrap: command.bootstrap,
    membership: { joinTimeoutMs: command.joinTimeoutMs },
    ...(allowed === undefined ? {} : { allowlist: allowed }),
    ...(submitters === undefined ? {} : { submitters }),
  })
  // The services every peer hosts: the KV store's replicas (they come back from the store on restart).
  const kvStore = openStore(join(command.workdir, 'kv.db'))
  peer.attach({ stop: () => kvStore.close() })
  peer.attach(await startKvHost({ node: peer.node, store: kvStore }))
  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => (stopping ??= peer.stop())
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void stop().finally(() => process.exit(0)))
  // A launcher retiring this peer asks it to leave gracefully: its work moves off first.
  process.on('message', (message: unknown) => {
    if ((message as { type?: unknown } | undefined)?.type === 'leave') void (stopping ??= peer.leave()).finally(() => process.exit(0))
  })
  watchParent(stop)
  return peer
}

/** The peer ids listed in a file's text, separated by white space. */
function peerIds(text: string): Set<string> {
  return new Set(text.split(/\s+/).filter((id) => id.length > 0))
}

/**
 * The peer ids of an --allow or --submitters file, read again whenever the file changes (its
 * modification time or size; one `stat` per question), so adding a peer to a running cluster
 * needs no restart. A file that cannot be read later keeps the last list, and says so once.
 */
async function idFile(path: string, flag: string, log: (line: string) => void): Promise<() => ReadonlySet<string>> {
  let ids = peerIds(await readFile(path, 'utf8'))
  let seen = statSync(path)
  let failing = false
  return () => {
    try {
      const now = statSync(path)
      if (now.mtimeMs !== seen.mtimeMs || now.size !== seen.size) {
        ids = peerIds(readFileSync(path, 'utf8'))
        seen = now
        log(`${flag} ${path} changed: ${ids.size} peer ids`)
      }
      failing = false
    } catch (error) {
      if (!failing) log(`${flag} ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)}): keeping its last ${ids.size} peer ids`)
      failing = true
    }
    return ids
  }
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/').split('/').pop()!)
if (isMain && process.send !== undefined) {
  // Started by a launcher: report ready with our id and addresses.
  runPeer(parsePeerCommand(process.argv.slice(2))).then(
    (peer) => reportReady({ peerId: peer.id, multiaddrs: peer.multiaddrs() }),
    (error: unknown) => {
      process.stderr.write(`lamina peer: ${error instanceof Error ? error.message : String(error)}\n`)
      process.exit(1)
    },
  )
}
