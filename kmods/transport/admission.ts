// Admission: who may connect, with libp2p's own mechanisms only (the private-network protector for the key, a connection gater for the allowlist) and one clear log line on each side of a refusal.

import './polyfill.js'
import type { ConnectionEncrypter, ConnectionGater, ConnectionProtector, MessageStream, MultiaddrConnection, PeerId, SecureConnectionOptions } from '@libp2p/interface'
import { preSharedKey } from '@libp2p/pnet'
import { AdmissionError } from './errors.js'
import type { Logger } from './logger.js'
import type { Psk } from './psk.js'

/** Who may connect: every peer that has the pre-shared key (`'open'`), or only the ids in the set. */
export type Allowlist = () => ReadonlySet<string> | 'open'

/**
 * What a refusal before the encrypted handshake most likely means, given on both sides. A
 * private network (pnet) exchanges nonces and then enciphers everything with the key, but never
 * checks that both sides hold the same key: with another key, the next protocol (multistream-select)
 * reads noise and fails or waits until a timeout. So no side can say more than "most likely".
 */
export const PSK_MISMATCH = 'pre-shared key mismatch (most likely another swarm key), or not a peer of this private network'

/** The largest write handed to the private-network cipher (see `protector`). */
const PNET_MAX_WRITE = 64 * 1024

/** Options of `createAdmission`. */
export interface AdmissionInit {
  /** This node's peer id (always admitted: libp2p refuses dials to self on its own). */
  readonly self: string
  readonly psk: Psk
  /** Read at every connection, so it may change. */
  readonly allowlist: Allowlist
  readonly logger: Logger
  /**
   * Handshakes (connections not yet admitted) one remote host may have pending at once; more are
   * refused before any byte is read, so that idle or slow connections from one address cannot
   * take the slots of others. @default 32
   */
  readonly maxPendingPerHost?: number
  /** Milliseconds a pre-authentication line about one host is not repeated (the refusals are counted meanwhile). @default 10000 */
  readonly logEveryMs?: number
}

/** Defaults of the pre-authentication limits (see `AdmissionInit`, and node.ts for libp2p's). */
export const PRE_AUTH_DEFAULTS = { maxPendingPerHost: 32, logEveryMs: 10_000 } as const

/**
 * The parts of a libp2p node that admit peers, and what they learned. Nothing here adds a byte
 * to libp2p's handshake: `protector` is @libp2p/pnet, `gater` a libp2p connection gater, and
 * `encrypter` the given encrypter (noise) as is. Protector and encrypter only watch how far each
 * connection got, so that a refusal can be reported with its most likely reason.
 */
export interface Admission {
  /** libp2p's `connectionProtector`: @libp2p/pnet's private network with the key. */
  readonly protector: () => ConnectionProtector
  /**
   * libp2p's `connectionGater`: refuses a peer id off the allowlist, in both directions, right after
   * the encrypted handshake proved it (and before dialing, when the id is known), so that no
   * protocol stream is ever read from it. Logs one line per refusal.
   */
  readonly gater: ConnectionGater
  /**
   * Wraps a connection encrypter (noise) to note when its handshake starts (the multistream-select
   * exchange under the private-network cipher worked, so both sides hold the same key). It also
   * negotiates the stream muxer with multistream-select rather than inside the noise handshake
   * (both are standard; see the inlined-muxer-negotiation spec): that way a dialer refused by the
   * other side's gater sees its dial fail, instead of a connection that opens and closes at once.
   */
  encrypter<C, E>(inner: (components: C) => ConnectionEncrypter<E>): (components: C) => ConnectionEncrypter<E>
  /** Outbound refusals seen recently, to report a failed dial with its reason. */
  readonly log: AdmissionLog
  /** Stops reporting refusals (connections closed by a stopping node are not refusals). Idempotent. */
  close(): void
}

/** How far an upgrading connection got. */
type Stage =
  /** Private-network nonces, then multistream-select of the encrypter under the cipher. */
  | 'pnet'
  /** The encrypted handshake (noise) began: both sides hold the same key. */
  | 'secure'
  /** The encrypted handshake proved the remote's id and this node admitted it. */
  | 'admitted'
  /** This node refused it (its gater logged why). */
  | 'refused'
  /** A usable connection: its later close is no refusal. */
  | 'upgraded'

interface Attempt {
  readonly direction: 'inbound' | 'outbound'
  readonly address: string
  peer: string | undefined
  stage: Stage
}

/**
 * Creates the admission parts of one node: pass `protector`, `gater` and `encrypter(noise())` to
 * `createLibp2p`.
 */
export function createAdmission(init: AdmissionInit): Admission {
  const { self, logger } = init
  const log = new AdmissionLog()
  const attempts = new WeakMap<object, Attempt>()
  let closed = false

  const allowed = (peer: string): boolean => {
    if (peer === self) return true
    const list = init.allowlist()
    return list === 'open' || list.has(peer)
  }

  const report = (error: AdmissionError): void => {
    logger.warn(error.message)
    log.record(error)
  }

  // Pre-authentication load: handshakes pending per remote host, and lines about it said at most
  // once per `logEveryMs` and host (a flood of idle connections must not flood the log too).
  const maxPendingPerHost = init.maxPendingPerHost ?? PRE_AUTH_DEFAULTS.maxPendingPerHost
  const logEveryMs = init.logEveryMs ?? PRE_AUTH_DEFAULTS.logEveryMs
  const pendingByHost = new Map<string, number>()
  const quiet = new Map<string, { until: number; held: number }>()
  const sayOnce = (host: string, line: (held: number) => string): void => {
    const now = Date.now()
    const q = quiet.get(host)
    if (q !== undefined && now < q.until) {
      q.held++
      return
    }
    logger.warn(line(q?.held ?? 0))
    quiet.set(host, { until: now + logEveryMs, held: 0 })
  }
  const since = (held: number): string => (held > 0 ? ` (and ${held} more like it in the last ${logEveryMs / 1000} s)` : '')
  const release = (host: string): void => {
    const n = (pendingByHost.get(host) ?? 1) - 1
    if (n <= 0) pendingByHost.delete(host)
    else pendingByHost.set(host, n)
  }

  /** Starts watching a raw connection: its close before it is usable is a refusal by the other side. */
  const watch = (connection: MessageStream): Attempt => {
    const address = remoteAddress(connection)
    const attempt: Attempt = { direction: connection.direction, address, peer: connection.direction === 'outbound' ? peerIn(address) : undefined, stage: 'pnet' }
    attempts.set(connection, attempt)
    connection.addEventListener(
      'close',
      (event) => {
        if (closed || attempt.stage === 'upgraded' || attempt.stage === 'refused') return
        const cause = (event as Event & { error?: Error }).error
        if (cancelled(cause)) return
        // An inbound connection that sent nothing usable before libp2p's handshake timeout is an
        // idle or slow client (or a scan), not evidence of another key: say so, once in a while.
        if (attempt.direction === 'inbound' && attempt.stage === 'pnet' && cause !== undefined && timedOut(cause)) {
          const host = hostOf(address)
          sayOnce(
            `timeout ${host}`,
            (held) =>
              `inbound connection from ${address} closed: its handshake did not finish within the timeout (an idle or slow client, or a scan; not a key problem)${since(held)}`,
          )
          return
        }
        const refusal = refusedBy(attempt, cause)
        if (refusal !== undefined) report(refusal)
      },
      { once: true },
    )
    return attempt
  }

  const refusedBy = (attempt: Attempt, cause: Error | undefined): AdmissionError | undefined => {
    const { direction, address, peer } = attempt
    const why = cause === undefined ? 'the other side closed it' : timedOut(cause) ? 'no answer before the timeout' : describe(cause)
    switch (attempt.stage) {
      case 'pnet':
        return new AdmissionError(
          'psk',
          { peer, address, direction },
          `${direction === 'outbound' ? `dial to ${address}` : `inbound connection from ${address}`} refused: ${PSK_MISMATCH} (no protocol could be negotiated under the private-network cipher: ${why})`,
          { cause },
        )
      case 'secure':
        // A dialer whose noise handshake failed with the right key has no admission problem (a
        // wrong peer id at the address, say): its dial fails with that. A listener seeing the dialer
        // leave mid-handshake was most likely refused by it.
        if (direction === 'outbound') return undefined
        return new AdmissionError(
          'refused-by-remote',
          { address, direction },
          `inbound connection from ${address} closed during the encrypted handshake: most likely the dialer does not admit this peer (${self}): not on its allowlist, or it expected another peer id at this address (${why})`,
          { cause },
        )
      case 'admitted':
        return new AdmissionError(
          'refused-by-remote',
          { peer, address, direction },
          `peer ${peer} at ${address} refused the connection right after the encrypted handshake: this peer (${self}) is most likely not on its allowlist (${why})`,
          { cause },
        )
      default:
        return undefined
    }
  }

  const gate = (direction: 'inbound' | 'outbound', peerId: PeerId, connection: MultiaddrConnection): boolean => {
    const peer = peerId.toString()
    const attempt = attempts.get(connection)
    if (attempt !== undefined) attempt.peer = peer
    if (allowed(peer)) {
      if (attempt !== undefined) attempt.stage = 'admitted'
      return false
    }
    if (attempt !== undefined) attempt.stage = 'refused'
    const address = connection.remoteAddr.toString()
    report(
      new AdmissionError(
        'not-allowed',
        { peer, address, direction },
        `refused ${direction} connection ${direction === 'inbound' ? 'from' : 'to'} peer ${peer} at ${address}: not on this node's allowlist`,
      ),
    )
    return true
  }

  /** Frees the pending-handshake slot of an inbound connection once it is admitted or closes. */
  const admittedOrClosed = new WeakMap<object, () => void>()

  const upgraded = (connection: MultiaddrConnection): boolean => {
    const attempt = attempts.get(connection)
    if (attempt !== undefined) attempt.stage = 'upgraded'
    admittedOrClosed.get(connection)?.()
    return false
  }

  const pnet = preSharedKey({ psk: init.psk })()

  return {
    log,
    protector: () => ({
      async protect(connection: MessageStream, options?: { signal?: AbortSignal }): Promise<MessageStream> {
        const attempt = watch(connection)
        const boxed = await pnet.protect(connection, options)
        // pnet hands each write to xsalsa20 1.2.0 whole, flattened into its WebAssembly memory. A write
        // past its initial 640 KiB grows that memory, and a bug in its realloc (a stale view after
        // another instance grew it) then grows it again on every later write, until
        // "WebAssembly.Memory.grow(): Maximum memory size exceeded" kills the connection. Writes of at
        // most 64 KiB never grow it, and the bytes on the wire are the same. (Seen with 8 MiB frames:
        // yamux frames grow with its window.)
        ;(boxed as MessageStream & { maxMessageSize?: number }).maxMessageSize = PNET_MAX_WRITE
        attempts.set(boxed, attempt)
        return boxed
      },
    }),
    encrypter: (inner) => (components) => {
      const encrypter = inner(components)
      const started = (connection: MessageStream, options: SecureConnectionOptions | undefined): SecureConnectionOptions => {
        const attempt = attempts.get(connection)
        if (attempt !== undefined) attempt.stage = 'secure'
        return { ...options, skipStreamMuxerNegotiation: true }
      }
      return {
        protocol: encrypter.protocol,
        secureInbound: (connection, options) => encrypter.secureInbound(connection, started(connection, options)),
        secureOutbound: (connection, options) => encrypter.secureOutbound(connection, started(connection, options)),
      }
    },
    gater: {
      // Before any byte of an inbound connection is read: at most `maxPendingPerHost` handshakes
      // per remote host. The slot is freed when the connection is admitted (upgraded) or closes.
      denyInboundConnection: (connection: MultiaddrConnection) => {
        const host = hostOf(connection.remoteAddr.toString())
        const pending = pendingByHost.get(host) ?? 0
        if (pending >= maxPendingPerHost) {
          sayOnce(
            `pending ${host}`,
            (held) =>
              `refused inbound connection from ${connection.remoteAddr.toString()}: ${pending} handshakes from ${host} are pending already (at most ${maxPendingPerHost} per host): pre-authentication load, not a key problem${since(held)}`,
          )
          return true
        }
        pendingByHost.set(host, pending + 1)
        let freed = false
        const free = (): void => {
          if (freed) return
          freed = true
          release(host)
        }
        connection.addEventListener('close', free, { once: true })
        admittedOrClosed.set(connection, free)
        return false
      },
      denyDialPeer: (peerId) => {
        const peer = peerId.toString()
        if (allowed(peer)) return false
        report(new AdmissionError('not-allowed', { peer, direction: 'outbound' }, `refused to dial peer ${peer}: not on this node's allowlist`))
        return true
      },
      denyInboundEncryptedConnection: (peerId, connection) => gate('inbound', peerId, connection),
      denyOutboundEncryptedConnection: (peerId, connection) => gate('outbound', peerId, connection),
      denyInboundUpgradedConnection: (_peerId, connection) => upgraded(connection),
      denyOutboundUpgradedConnection: (_peerId, connection) => upgraded(connection),
    },
    close: () => {
      closed = true
    },
  }
}

/** The host part of a multiaddr (`/ip4/10.0.0.1/tcp/4001/...` → `10.0.0.1`), or the address itself. */
function hostOf(address: string): string {
  const parts = address.split('/')
  return parts[1] === 'ip4' || parts[1] === 'ip6' || parts[1] === 'dns4' || parts[1] === 'dns6' || parts[1] === 'dns' ? (parts[2] ?? address) : address
}

/**
 * The outbound refusals of recent connection attempts, by remote address and peer id, so that a
 * failed dial can be reported with our error where libp2p gives its own.
 */
export class AdmissionLog {
  private readonly byAddress = new Map<string, { error: AdmissionError; time: number }>()
  private readonly byPeer = new Map<string, { error: AdmissionError; time: number }>()

  /** Records a refusal; only outbound ones are kept (they explain failed dials). */
  record(error: AdmissionError): void {
    if (error.detail.direction !== 'outbound') return
    const entry = { error, time: Date.now() }
    if (error.detail.address !== undefined) remember(this.byAddress, withoutPeer(error.detail.address), entry)
    if (error.detail.peer !== undefined) remember(this.byPeer, error.detail.peer, entry)
  }

  /** The latest refusal at or after `since` (ms) with the peer or at the address (`/p2p/…` ignored). */
  since(target: { readonly address?: string; readonly peer?: string }, since: number): AdmissionError | undefined {
    const byPeer = target.peer === undefined ? undefined : this.byPeer.get(target.peer)
    const byAddress = target.address === undefined ? undefined : this.byAddress.get(withoutPeer(target.address))
    const found = [byPeer, byAddress].filter((e) => e !== undefined && e.time >= since).sort((a, b) => b!.time - a!.time)[0]
    return found?.error
  }
}

/** A multiaddr's text without its `/p2p/<id>` part. */
export function withoutPeer(address: string): string {
  const at = address.indexOf('/p2p/')
  return at === -1 ? address : address.slice(0, at)
}

function peerIn(address: string): string | undefined {
  const at = address.lastIndexOf('/p2p/')
  return at === -1 ? undefined : address.slice(at + 5).split('/')[0]
}

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > 1024) map.delete(map.keys().next().value!)
}

function remoteAddress(connection: MessageStream): string {
  const address = (connection as Partial<MultiaddrConnection>).remoteAddr
  return address === undefined ? 'an unknown address' : address.toString()
}

/** True when this side gave up on purpose (a cancelled dial): not a refusal. A timeout is one. */
function cancelled(error: Error | undefined): boolean {
  return error?.name === 'AbortError' && !timedOut(error)
}

/** libp2p's upgrade and dial timeouts end a connection with an AbortError caused by a TimeoutError. */
function timedOut(error: Error): boolean {
  return error.name === 'TimeoutError' || (error.name === 'AbortError' && (error.cause as Error | undefined)?.name === 'TimeoutError')
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message === '' ? error.name : `${error.name}: ${error.message}`
  return String(error)
}
