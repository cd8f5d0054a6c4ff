// Tests of the pre-shared key file format and of peer identities kept in the store.
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openStore } from '../store/index.js'
import { loadOrCreateIdentity, PEER_DB } from './identity.js'
import { generatePsk, parsePsk, readOrCreatePskFile, readPskFile, writePskFile } from './psk.js'

let dir: string
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'lamina-psk-'))
})
afterEach(() => {
  rmSync(dir, { recursive: true, force: true })
})

describe('pre-shared keys', () => {
  it('are written in the /key/swarm/psk/1.0.0/ base16 format, owner-only, and read back', async () => {
    const psk = generatePsk()
    const path = join(dir, 'keys', 'swarm.key')
    await writePskFile(path, psk)
    const text = readFileSync(path, 'utf8')
    expect(text).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(Buffer.from(await readPskFile(path)).equals(Buffer.from(psk))).toBe(true)
    // Windows line ends, upper-case hex and a trailing blank line are accepted and normalized.
    writeFileSync(path, text.replace(/\n/g, '\r\n').toUpperCase().replace('/KEY/SWARM/PSK/1.0.0/', '/key/swarm/psk/1.0.0/').replace('/BASE16/', '/base16/') + '\r\n')
    expect(Buffer.from(await readPskFile(path)).equals(Buffer.from(psk))).toBe(true)
  })

  it('reads an existing key file or creates one', async () => {
    const path = join(dir, 'swarm.key')
    const created = await readOrCreatePskFile(path)
    const again = await readOrCreatePskFile(path)
    expect(Buffer.from(again).equals(Buffer.from(created))).toBe(true)
  })

  it('refuse malformed keys with PskFormatError naming the file and the line', async () => {
    const cases: [string, RegExp][] = [
      ['/key/swarm/psk/1.0.0/\n/base16/', /expected 3 lines, found 2/],
      ['/key/swarm/psk/2.0.0/\n/base16/\n' + 'a'.repeat(64), /line 1 is/],
      ['/key/swarm/psk/1.0.0/\n/base64/\n' + 'a'.repeat(64), /line 2 is "\/base64\/"/],
      ['/key/swarm/psk/1.0.0/\n/base16/\n' + 'g'.repeat(64), /line 3 must be 64 hex digits/],
      ['/key/swarm/psk/1.0.0/\n/base16/\n' + 'a'.repeat(62), /line 3 must be 64 hex digits, got 62/],
    ]
    for (const [text, reason] of cases) {
      const path = join(dir, 'bad.key')
      writeFileSync(path, text)
      await expect(readPskFile(path)).rejects.toMatchObject({ code: 'ERR_PSK_FORMAT', message: expect.stringMatching(reason) })
      await expect(readPskFile(path)).rejects.toMatchObject({ message: expect.stringContaining(path) })
    }
    await expect(readPskFile(join(dir, 'missing.key'))).rejects.toMatchObject({ code: 'ERR_PSK_FORMAT', message: expect.stringContaining('cannot read') })
    expect(() => parsePsk(new Uint8Array(0))).toThrow(expect.objectContaining({ code: 'ERR_PSK_FORMAT' }))
  })
})

describe('peer identities', () => {
  it('are created once per work directory, even by concurrent starts', async () => {
    const workdir = join(dir, 'peer')
    const all = await Promise.all([loadOrCreateIdentity(workdir), loadOrCreateIdentity(workdir), loadOrCreateIdentity(workdir)])
    expect(new Set(all.map((i) => i.peerId)).size).toBe(1)
    expect(all.filter((i) => i.created)).toHaveLength(1)
    const later = await loadOrCreateIdentity(workdir)
    expect(later).toMatchObject({ peerId: all[0]!.peerId, created: false })
    expect(later.privateKey.type).toBe('Ed25519')
  })

  it('keep the private key readable by its owner only (0600), tightening an older world-readable store', async () => {
    const workdir = join(dir, 'private')
    await loadOrCreateIdentity(workdir)
    const modes = (): number[] =>
      readdirSync(workdir)
        .filter((name) => name.startsWith(PEER_DB))
        .map((name) => statSync(join(workdir, name)).mode & 0o777)
    expect(modes().length).toBeGreaterThan(0)
    expect(modes().every((mode) => mode === 0o600)).toBe(true)
    // A store made by an older version, readable by everyone, is tightened on the next start.
    const older = join(dir, 'older')
    openStore(join(older, PEER_DB)).close()
    chmodSync(join(older, PEER_DB), 0o644)
    await loadOrCreateIdentity(older)
    expect(statSync(join(older, PEER_DB)).mode & 0o777).toBe(0o600)
  })

  it('refuse a store holding something else than a key', async () => {
    const workdir = join(dir, 'broken')
    const store = openStore(join(workdir, PEER_DB))
    store.put('peer', 'private-key', new Uint8Array([1, 2, 3]))
    store.close()
    await expect(loadOrCreateIdentity(workdir)).rejects.toMatchObject({ code: 'ERR_IDENTITY', message: expect.stringContaining(workdir) })
  })
})
