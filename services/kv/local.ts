// What this process has of the KV service: the node its client atoms dial from, and the KV host
// running here, if any. A client calls the host of its own peer in-process (libp2p cannot dial
// itself), and atom instances find their node here.

import type { PeerNode } from '../../kmods/transport/index.js'
import type { KvAnswer } from './protocol.js'

/** A KV host's calls, in-process: the same requests and answer frames as on the wire. */
export interface LocalKvHost {
  readonly peerId: string
  /** Answers one call (not a watch). */
  call(request: Readonly<Record<string, unknown>>): Promise<Extract<KvAnswer, { ok: boolean }>>
  /** Starts a watch: `onFrame` gets its event frames, and its error frame if it ends; returns its cancel. */
  watch(request: Readonly<Record<string, unknown>>, onFrame: (frame: KvAnswer) => void): () => void
}

/**
 * The process's registry, on `globalThis`: a program's code may reach this module through another
 * path than the peer's (a shipped bundle linked to lamina's dist/ in a process that runs lamina
 * from its sources, as tests do), and both copies must see the same node and host.
 */
const registry = ((globalThis as { [key: symbol]: unknown })[Symbol.for('lamina.kv.local')] ??= {}) as { node?: PeerNode; host?: LocalKvHost | undefined }

/** Registers the node this process's KV client atoms dial from (the KV host and `startKv` do). */
export function setLocalKvNode(given: PeerNode): void {
  if (registry.node === undefined || registry.node.stopped) registry.node = given
}

/** The node registered by `setLocalKvNode`, unless it stopped. */
export function localKvNode(): PeerNode | undefined {
  return registry.node?.stopped === false ? registry.node : undefined
}

/** Registers (or, with undefined, removes) the KV host running in this process. */
export function setLocalKvHost(given: LocalKvHost | undefined): void {
  registry.host = given
}

/** The KV host of peer `peerId`, if it runs in this process. */
export function localKvHost(peerId: string): LocalKvHost | undefined {
  return registry.host?.peerId === peerId ? registry.host : undefined
}
