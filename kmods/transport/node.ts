// A Lamina peer's libp2p node: TCP, noise, yamux, identify, ping, a private network and an allowlist, with typed, logged admission failures.

import './polyfill.js'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { createAdmission, type Admission, type Allowlist } from './admission.js'
import { DialError, NodeStartError } from './errors.js'
import { loadOrCreateIdentity } from './identity.js'
import { stderrLogger, type Logger } from './logger.js'
import { parsePsk, type Psk } from './psk.js'

/** Options of `createPeerNode`. */
export interface PeerNodeOptions {
  /** The peer's work directory: its identity lives in `<workdir>/peer.db`. */
  readonly workdir: string
  /** Multiaddrs to listen on. @default ['/ip4/127.0.0.1/tcp/0'] */
  readonly listen?: readonly string[]
  /** The private network's pre-shared key, in file form (see psk.ts). */
  readonly psk: Psk
  /** Peer ids admitted, read at every connection (so it may change), or 'open'. @default () => 'open' */
  readonly allowlist?: Allowlist
  /** Free-form labels of this peer (membership gossips them). @default {} */
  readonly tags?: Readonly<Record<string, string>>
  /** Where the node writes its log lines. @default stderr, prefixed with the peer's short id */
  readonly logger?: Logger
  /** Aborts the start; aborting after the start stops the node. */
  readonly signal?: AbortSignal
}

/** Something to dial: a multiaddr (text or value, with or without `/p2p/<id>`) or a peer id (text or value). */
export type DialTarget = string | Multiaddr | PeerId

/** Options of a dial. */
export interface DialOptions {
  readonly signal?: AbortSignal
}

/** A started Lamina peer node. */
export interface PeerNode {
  /** The libp2p node underneath (for `handle` and events). */
  readonly libp2p: Libp2p
  /** This peer's id, as text. */
  readonly peerId: string
  readonly workdir: string
  readonly tags: Readonly<Record<string, string>>
  readonly logger: Logger
  /**
   * The addresses this node listens on, each ending in `/p2p/<peer id>`, those other hosts can
   * reach first: a node listening on `0.0.0.0` lists its interfaces' addresses before loopback, so
   * the first one (what membership gossips and peers dial) is not 127.0.0.1.
   */
  multiaddrs(): string[]
  /**
   * Connects to a peer. Admission failures reject with AdmissionError (reason `psk`,
   * `not-allowed` or `refused-by-remote`), other failures with DialError.
   */
  dial(target: DialTarget, options?: DialOptions): Promise<Connection>
  /** Opens a stream for `protocol` on a peer, connecting first when needed; errors as `dial`. */
  dialProtocol(target: DialTarget, protocol: string, options?: DialOptions & { readonly maxOutboundStreams?: number }): Promise<Stream>
  /** True once `stop()` was called. */
  readonly stopped: boolean
  /** Stops the node: closes every connection and listener. Idempotent. */
  stop(): Promise<void>
}

/**
 * Creates and starts a peer node. Its Ed25519 identity is created in `workdir` on first start and
 * reused afterwards. Only peers holding `psk` and on the allowlist can connect, in both directions.
 *
 * ```ts
 * const node = await createPeerNode({ workdir: '.lamina/peer-1', psk: await readPskFile('swarm.key') })
 * const stream = await node.dialProtocol(otherAddress, '/lamina/channel/1.0.0')
 * await node.stop()
 * ```
 *
 * @throws NodeStartError when it cannot listen; IdentityError when the stored identity is unreadable;
 *   PskFormatError when the key is malformed.
 */
export async function createPeerNode(options: PeerNodeOptions): Promise<PeerNode> {
  options.signal?.throwIfAborted()
  const psk = parsePsk(options.psk, 'option psk')
  const identity = await loadOrCreateIdentity(options.workdir, { signal: options.signal })
  const logger = options.logger ?? stderrLogger(identity.peerId)
  const allowlist = options.allowlist ?? (() => 'open')
  const admission = createAdmission({ self: identity.peerId, psk, allowlist, logger })
  const listen = options.listen ?? ['/ip4/127.0.0.1/tcp/0']
  for (const address of listen) {
    try {
      multiaddr(address)
    } catch (error) {
      throw new NodeStartError(options.workdir, `listen address ${JSON.stringify(address)} is not a multiaddr`, { cause: error })
    }
  }
  let libp2p: Libp2p
  try {
    libp2p = await createLibp2p({
      privateKey: identity.privateKey,
      addresses: { listen: [...listen] },
      transports: [tcp()],
      connectionEncrypters: [admission.encrypter(noise())],
      streamMuxers: [yamux()],
      connectionProtector: admission.protector,
      connectionGater: admission.gater,
      // Its pings raced our own streams (LIBP2P-NOTES); membership detects failures instead.
      connectionMonitor: { enabled: false },
      // Pre-authentication load: libp2p's defaults (10 handshakes pending in all, each up to 10 s)
      // let ten idle TCP connections lock every peer out. A handshake now has 5 s, 256 may be
      // pending, and the gater (admission.ts) lets one host hold at most 32 of them.
      connectionManager: { inboundUpgradeTimeout: 5_000, maxIncomingPendingConnections: 256 },
      services: { identify: identify(), ping: ping() },
    })
  } catch (error) {
    throw new NodeStartError(options.workdir, error instanceof Error ? error.message : String(error), { cause: error })
  }
  const node = new LaminaPeerNode(libp2p, identity.peerId, options.workdir, options.tags ?? {}, logger, admission)
  if (options.signal !== undefined) {
    if (options.signal.aborted) {
      await node.stop()
      options.signal.throwIfAborted()
    }
    options.signal.addEventListener('abort', () => void node.stop(), { once: true })
  }
  return node
}

class LaminaPeerNode implements PeerNode {
  private stopping: Promise<void> | undefined

  constructor(
    readonly libp2p: Libp2p,
    readonly peerId: string,
    readonly workdir: string,
    readonly tags: Readonly<Record<string, string>>,
    readonly logger: Logger,
    private readonly admission: Admission,
  ) {}

  get stopped(): boolean {
    return this.stopping !== undefined
  }

  multiaddrs(): string[] {
    return reachableFirst(this.libp2p.getMultiaddrs().map((address) => address.toString()))
  }

  async dial(target: DialTarget, options: DialOptions = {}): Promise<Connection> {
    const resolved = resolveTarget(target)
    const started = Date.now()
    try {
      return await this.libp2p.dial(resolved, { signal: options.signal })
    } catch (error) {
      throw this.dialFailure(target, resolved, started, error, options.signal)
    }
  }

  async dialProtocol(target: DialTarget, protocol: string, options: DialOptions & { readonly maxOutboundStreams?: number } = {}): Promise<Stream> {
    const resolved = resolveTarget(target)
    const started = Date.now()
    try {
      return await this.libp2p.dialProtocol(resolved, protocol, { signal: options.signal, maxOutboundStreams: options.maxOutboundStreams })
    } catch (error) {
      throw this.dialFailure(target, resolved, started, error, options.signal)
    }
  }

  stop(): Promise<void> {
    this.admission.close()
    this.stopping ??= Promise.resolve(this.libp2p.stop())
    return this.stopping
  }

  /** Turns libp2p's dial errors into ours, saying what most likely happened. */
  private dialFailure(target: DialTarget, resolved: Multiaddr | PeerId, started: number, error: unknown, signal: AbortSignal | undefined): unknown {
    if (signal?.aborted === true) return signal.reason
    const text = targetText(target)
    // libp2p reports a refusal with its own errors (a gater's ConnectionInterceptedError, a closed
    // stream): the admission log knows what most likely happened.
    const admission = this.admission.log.since({ peer: peerOf(resolved), address: 'getComponents' in resolved ? resolved.toString() : undefined }, started)
    if (admission !== undefined) return admission
    return new DialError(text, error)
  }
}

/** Loopback addresses (127.0.0.0/8, ::1): reachable from this host only. */
const LOOPBACK = /^\/(ip4\/127\.|ip6\/::1\/)/

/**
 * `addresses` with those other hosts can reach first and loopback ones last, each group in its
 * original order (a node listening on 0.0.0.0 gets one address per interface, loopback first).
 */
export function reachableFirst(addresses: readonly string[]): string[] {
  return [...addresses.filter((a) => !LOOPBACK.test(a)), ...addresses.filter((a) => LOOPBACK.test(a))]
}

function resolveTarget(target: DialTarget): Multiaddr | PeerId {
  if (typeof target !== 'string') return target
  return target.startsWith('/') ? multiaddr(target) : peerIdFromString(target)
}

function targetText(target: DialTarget): string {
  return typeof target === 'string' ? target : target.toString()
}

function peerOf(target: Multiaddr | PeerId): string | undefined {
  if ('getComponents' in target) return target.getComponents().findLast((c) => c.name === 'p2p')?.value
  return target.toString()
}
