// The private-network pre-shared key: create, parse, read and write it in the `/key/swarm/psk/1.0.0/` base16 file format.

import { randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { PskFormatError } from './errors.js'

const HEADER = '/key/swarm/psk/1.0.0/'
const CODEC = '/base16/'
const KEY_BYTES = 32

/** Bytes of a pre-shared key in file form (what @libp2p/pnet's `preSharedKey({ psk })` takes). */
export type Psk = Uint8Array

/** A new random pre-shared key, in file form. */
export function generatePsk(): Psk {
  return formatPsk(randomBytes(KEY_BYTES))
}

/** The file form of 32 raw key bytes. */
export function formatPsk(key: Uint8Array): Psk {
  if (key.byteLength !== KEY_BYTES) throw new PskFormatError('bytes', `a key has ${KEY_BYTES} bytes, got ${key.byteLength}`)
  return new TextEncoder().encode(`${HEADER}\n${CODEC}\n${Buffer.from(key).toString('hex')}`)
}

/**
 * Checks a key in file form and returns it normalized (`\n` line ends, lower-case hex, no
 * trailing newline). `source` names where it came from in errors (a file path).
 *
 * @throws PskFormatError naming the line that is wrong.
 */
export function parsePsk(bytes: Uint8Array, source = 'bytes'): Psk {
  const text = new TextDecoder('utf-8', { fatal: false }).decode(bytes)
  const lines = text.split(/\r\n|\r|\n/)
  while (lines.length > 3 && lines[lines.length - 1]!.trim() === '') lines.pop()
  if (lines.length !== 3) throw new PskFormatError(source, `expected 3 lines, found ${lines.length}`)
  const [header, codec, hex] = lines.map((line) => line.trim()) as [string, string, string]
  if (header !== HEADER) throw new PskFormatError(source, `line 1 is ${JSON.stringify(header.slice(0, 40))}, not ${HEADER}`)
  if (codec !== CODEC) throw new PskFormatError(source, `line 2 is ${JSON.stringify(codec.slice(0, 40))}, not ${CODEC} (only base16 keys are supported)`)
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new PskFormatError(source, `line 3 must be 64 hex digits, got ${hex.length} characters`)
  return formatPsk(Buffer.from(hex, 'hex'))
}

/** Reads and checks a key file. @throws PskFormatError when missing or malformed. */
export async function readPskFile(path: string, options: { signal?: AbortSignal } = {}): Promise<Psk> {
  let bytes: Uint8Array
  try {
    bytes = await readFile(path, { signal: options.signal })
  } catch (error) {
    if (options.signal?.aborted === true) throw options.signal.reason
    throw new PskFormatError(path, `cannot read the file: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  }
  return parsePsk(bytes, path)
}

/**
 * Writes a key file readable only by its owner (mode 0600), creating parent directories. The
 * file is replaced atomically (written beside it, then renamed).
 */
export async function writePskFile(path: string, psk: Psk, options: { signal?: AbortSignal } = {}): Promise<void> {
  const normalized = parsePsk(psk)
  await mkdir(dirname(path), { recursive: true })
  const temporary = `${path}.${process.pid}.tmp`
  await writeFile(temporary, Buffer.concat([normalized, Buffer.from('\n')]), { mode: 0o600, signal: options.signal })
  await rename(temporary, path)
}

/** Reads the key file at `path`, or creates it with a new key when it does not exist. */
export async function readOrCreatePskFile(path: string, options: { signal?: AbortSignal } = {}): Promise<Psk> {
  try {
    return parsePsk(await readFile(path, { signal: options.signal }), path)
  } catch (error) {
    if ((error as { code?: unknown }).code !== 'ENOENT') throw error
  }
  const psk = generatePsk()
  await writePskFile(path, psk, options)
  return psk
}
