// Admission: who may connect. A private-network key checked by a handshake, and an allowlist of peer ids checked right after the encrypted handshake.

import './polyfill.js'
import type { ConnectionEncrypter, ConnectionGater, ConnectionProtector, MessageStream, MultiaddrConnection, PeerId, SecureConnectionOptions, SecuredConnection } from '@libp2p/interface'
import { preSharedKey } from '@libp2p/pnet'
import { byteStream } from '@libp2p/utils'
import { AdmissionError } from './errors.js'
import type { Logger } from './logger.js'
import type { Psk } from './psk.js'

/** Who may connect: every peer that has the pre-shared key (`'open'`), or only the ids in the set. */
export type Allowlist = () => ReadonlySet<string> | 'open'

/** The message a wrong pre-shared key most likely means, given on both sides of the refused connection. */
export const PSK_MISMATCH = 'pre-shared key mismatch or not a Lamina peer'

/**
 * Bytes both sides send first through the private-network stream. With another key they decrypt
 * to noise, so a mismatch is found at once on both sides (pnet alone gives no such signal: the
 * next protocol times out or reads garbage).
 */
const CHECK = new TextEncoder().encode('/lamina/admit/1\n')
const ADMITTED = 0x01
/** The largest write handed to the private-network cipher (see `protect`). */
const PNET_MAX_WRITE = 64 * 1024
const REFUSED = 0x00

/**
 * The admission failures of recent connection attempts, by remote address and peer id, so that a
 * failed dial can be reported with our error even where libp2p rewraps it.
 */
export class AdmissionLog {
  private readonly byAddress = new Map<string, { error: AdmissionError; time: number }>()
  private readonly byPeer = new Map<string, { error: AdmissionError; time: number }>()

  /** Records a refusal. */
  record(error: AdmissionError): void {
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

/** Options of the admission protector. */
export interface ProtectorInit {
  readonly psk: Psk
  readonly logger: Logger
  readonly log: AdmissionLog
  /** Milliseconds the private-network handshake may take. @default 5000 */
  readonly timeoutMs?: number
}

/**
 * A connection protector: @libp2p/pnet's XSalsa20 private network, then a check that both sides
 * hold the same key. A mismatch throws AdmissionError (reason `psk`) on both sides before any
 * other byte is read, and each side logs one line.
 */
export function admissionProtector(init: ProtectorInit): () => ConnectionProtector {
  const timeoutMs = init.timeoutMs ?? 5000
  const pnet = preSharedKey({ psk: init.psk, timeout: timeoutMs })()
  return () => ({
    async protect(connection: MessageStream, options?: { signal?: AbortSignal }): Promise<MessageStream> {
      const address = remoteAddress(connection)
      const direction = connection.direction
      const signal = withTimeout(options?.signal, timeoutMs)
      const refuse = (why: string, cause?: unknown): AdmissionError => {
        const error = new AdmissionError(
          'psk',
          { address, direction },
          `${direction === 'outbound' ? `dial to ${address}` : `inbound connection from ${address}`} refused: ${PSK_MISMATCH} (${why})`,
          { cause },
        )
        init.logger.warn(error.message)
        init.log.record(error)
        connection.abort(error)
        return error
      }
      let boxed: MessageStream
      try {
        boxed = await pnet.protect(connection, { signal })
      } catch (error) {
        throw refuse(`no private-network handshake: ${describe(error)}`, error)
      }
      // pnet hands each write to xsalsa20 1.2.0 whole, flattened into its WebAssembly memory. A write
      // past its initial 640 KiB grows that memory, and a bug in its realloc (a stale view after
      // another instance grew it) then grows it again on every later write, until
      // "WebAssembly.Memory.grow(): Maximum memory size exceeded" kills the connection. Writes of at
      // most 64 KiB never grow it. (Seen with 8 MiB frames: yamux frames grow with its window.)
      ;(boxed as MessageStream & { maxMessageSize?: number }).maxMessageSize = PNET_MAX_WRITE
      const bytes = byteStream(boxed)
      let theirs: Uint8Array
      try {
        const [read] = await Promise.all([bytes.read({ bytes: CHECK.length, signal }), bytes.write(CHECK, { signal })])
        theirs = read.subarray()
      } catch (error) {
        throw refuse(`the other side closed or went silent during the key check: ${describe(error)}`, error)
      }
      if (!equal(theirs, CHECK)) throw refuse('the key check did not decrypt')
      return bytes.unwrap()
    },
  })
}

/** Options of the admission encrypter. */
export interface EncrypterInit {
  /** This node's peer id. */
  readonly self: string
  readonly allowlist: Allowlist
  readonly logger: Logger
  readonly log: AdmissionLog
  /** Milliseconds the verdict exchange may take. @default 5000 */
  readonly timeoutMs?: number
}

/**
 * Wraps a connection encrypter (noise): once the encrypted handshake has proven the remote's peer
 * id, each side sends the other its verdict (admitted or refused by its allowlist) and reads the
 * other's. A refusal throws AdmissionError on both sides before any protocol stream is opened,
 * and each side logs one line naming the peer: `not-allowed` on the refusing side,
 * `refused-by-remote` on the refused one.
 */
export function admissionEncrypter<C, E>(inner: (components: C) => ConnectionEncrypter<E>, init: EncrypterInit): (components: C) => ConnectionEncrypter<E> {
  const timeoutMs = init.timeoutMs ?? 5000
  const allowed = allowedBy(init.self, init.allowlist)
  return (components) => {
    const encrypter = inner(components)
    const verdict = async (secured: SecuredConnection<E>, raw: MessageStream, options: SecureConnectionOptions | undefined): Promise<SecuredConnection<E>> => {
      const peer = secured.remotePeer.toString()
      const address = remoteAddress(raw)
      const direction = raw.direction
      const ours = allowed(peer)
      const bytes = byteStream(secured.connection)
      const signal = withTimeout(options?.signal, timeoutMs)
      let theirs: number
      try {
        const [read] = await Promise.all([bytes.read({ bytes: 1, signal }), bytes.write(Uint8Array.of(ours ? ADMITTED : REFUSED), { signal })])
        theirs = read.get(0)
      } catch (error) {
        if (!ours) theirs = ADMITTED // the remote hung up on our refusal: report ours
        else {
          const failure = new AdmissionError(
            'refused-by-remote',
            { peer, address, direction },
            `peer ${peer} at ${address} closed the connection during admission, most likely because this peer (${init.self}) is not on its allowlist: ${describe(error)}`,
            { cause: error },
          )
          init.logger.warn(failure.message)
          init.log.record(failure)
          raw.abort(failure)
          throw failure
        }
      }
      if (!ours) {
        const refusal = new AdmissionError('not-allowed', { peer, address, direction }, `refused ${direction} connection ${direction === 'inbound' ? 'from' : 'to'} peer ${peer} at ${address}: not on this node's allowlist`)
        init.logger.warn(refusal.message)
        init.log.record(refusal)
        await closeSoon(secured.connection, raw, refusal)
        throw refusal
      }
      if (theirs !== ADMITTED) {
        const refused = new AdmissionError(
          'refused-by-remote',
          { peer, address, direction },
          `peer ${peer} at ${address} refused the connection: this peer (${init.self}) is not on its allowlist`,
        )
        init.logger.warn(refused.message)
        init.log.record(refused)
        await closeSoon(secured.connection, raw, refused)
        throw refused
      }
      return { ...secured, connection: bytes.unwrap() }
    }
    return {
      protocol: encrypter.protocol,
      async secureInbound(connection, options) {
        return verdict(await encrypter.secureInbound(connection, options), connection, options)
      },
      async secureOutbound(connection, options) {
        return verdict(await encrypter.secureOutbound(connection, options), connection, options)
      },
    }
  }
}

/**
 * A connection gater: this node does not dial a peer id that is not on its allowlist (the
 * encrypter refuses the rest, in both directions, once ids are proven), and checks again after
 * the encrypted handshake in case the list changed meanwhile.
 */
export function allowlistGater(self: string, allowlist: Allowlist, logger: Logger, log: AdmissionLog): ConnectionGater {
  const allowed = allowedBy(self, allowlist)
  const deny = (direction: 'inbound' | 'outbound', peerId: PeerId, connection: MultiaddrConnection | undefined): boolean => {
    const peer = peerId.toString()
    if (allowed(peer)) return false
    const address = connection?.remoteAddr.toString()
    const refusal = new AdmissionError(
      'not-allowed',
      { peer, address, direction },
      connection === undefined ? `refused to dial peer ${peer}: not on this node's allowlist` : `refused ${direction} connection ${direction === 'inbound' ? 'from' : 'to'} peer ${peer} at ${address}: not on this node's allowlist`,
    )
    logger.warn(refusal.message)
    log.record(refusal)
    return true
  }
  return {
    denyDialPeer: (peerId) => deny('outbound', peerId, undefined),
    denyInboundEncryptedConnection: (peerId, connection) => deny('inbound', peerId, connection),
    denyOutboundEncryptedConnection: (peerId, connection) => deny('outbound', peerId, connection),
  }
}

/** A multiaddr's text without its `/p2p/<id>` part. */
export function withoutPeer(address: string): string {
  const at = address.indexOf('/p2p/')
  return at === -1 ? address : address.slice(0, at)
}

function allowedBy(self: string, allowlist: Allowlist): (peer: string) => boolean {
  return (peer) => {
    if (peer === self) return true
    const list = allowlist()
    return list === 'open' || list.has(peer)
  }
}

/** Lets the verdict byte reach the other side, then aborts the connection. */
async function closeSoon(secured: MessageStream, raw: MessageStream, reason: Error): Promise<void> {
  try {
    await secured.close({ signal: AbortSignal.timeout(1000) })
  } catch {
    // closing is best effort: the abort below ends it either way
  }
  raw.abort(reason)
}

function remember<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key)
  map.set(key, value)
  if (map.size > 1024) map.delete(map.keys().next().value!)
}

function withTimeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
  return signal === undefined ? AbortSignal.timeout(ms) : AbortSignal.any([signal, AbortSignal.timeout(ms)])
}

function remoteAddress(connection: MessageStream): string {
  const address = (connection as Partial<MultiaddrConnection>).remoteAddr
  return address === undefined ? 'an unknown address' : address.toString()
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message === '' ? error.name : `${error.name}: ${error.message}`
  return String(error)
}
