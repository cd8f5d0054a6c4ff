// A peer's identity: an Ed25519 key created on first start and kept in the store in its work directory.

import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { openStore } from '../store/index.js'
import { IdentityError } from './errors.js'

/** The store file, inside a peer's work directory, that holds its identity. */
export const PEER_DB = 'peer.db'
const NAMESPACE = 'peer'
const KEY = 'private-key'

/** A peer's identity as loaded from its work directory. */
export interface PeerIdentity {
  readonly privateKey: PrivateKey
  /** The peer id (base58 text) derived from the key. */
  readonly peerId: string
  /** True when this call created the key (first start in this work directory). */
  readonly created: boolean
}

/**
 * Loads the Ed25519 key kept in `<workdir>/peer.db`, creating and storing a new one on first
 * start. Two processes starting at once in one work directory get the same key.
 *
 * @throws IdentityError when the store cannot be opened or holds something that is not an Ed25519 key.
 */
export async function loadOrCreateIdentity(workdir: string, options: { signal?: AbortSignal } = {}): Promise<PeerIdentity> {
  options.signal?.throwIfAborted()
  const path = join(workdir, PEER_DB)
  let store
  try {
    // The store holds the private key: readable by its owner only.
    store = openStore(path, { mode: 0o600 })
  } catch (error) {
    throw new IdentityError(workdir, `cannot open ${path}: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  }
  try {
    const existing = store.get(NAMESPACE, KEY)
    if (existing !== undefined) return { ...fromStored(workdir, existing), created: false }
    const fresh = await generateKeyPair('Ed25519')
    options.signal?.throwIfAborted()
    // Another process may have stored its key meanwhile: the first one written wins.
    const stored = store.transaction((tx) => {
      const raced = tx.get(NAMESPACE, KEY)
      if (raced !== undefined) return raced
      tx.put(NAMESPACE, KEY, privateKeyToProtobuf(fresh))
      return undefined
    })
    if (stored !== undefined) return { ...fromStored(workdir, stored), created: false }
    return { privateKey: fresh, peerId: peerIdFromPrivateKey(fresh).toString(), created: true }
  } finally {
    store.close()
  }
}

function fromStored(workdir: string, value: Uint8Array | string): { privateKey: PrivateKey; peerId: string } {
  if (typeof value === 'string') throw new IdentityError(workdir, `${PEER_DB} holds text under ${NAMESPACE}/${KEY}, not a key`)
  let privateKey: PrivateKey
  try {
    privateKey = privateKeyFromProtobuf(value)
  } catch (error) {
    throw new IdentityError(workdir, `${PEER_DB} holds an unreadable key: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  }
  if (privateKey.type !== 'Ed25519') throw new IdentityError(workdir, `${PEER_DB} holds a ${privateKey.type} key; peers use Ed25519`)
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString() }
}
