// Code shipping: bundles named by hash, the peer's cache, and the version checks of what a bundle imports.
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CodeCache, packProgram, sha256 } from './code.js'
import { CodeHashError, DependencyMismatchError, ProgramPackError } from './errors.js'

const root = join(import.meta.dirname, '..', '..')

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lamina-code-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** A program project: `main.ts` importing `./helper.js`, lamina installed, and a package `left-pad-ish` at `version`. */
async function project(version = '1.2.3', helper = 'export const factor = 3'): Promise<string> {
  const home = join(dir, 'project')
  await mkdir(join(home, 'node_modules', 'left-pad-ish'), { recursive: true })
  await symlink(root, join(home, 'node_modules', 'lamina'))
  await writeFile(join(home, 'node_modules', 'left-pad-ish', 'package.json'), JSON.stringify({ name: 'left-pad-ish', version, type: 'module', exports: './index.js' }))
  await writeFile(join(home, 'node_modules', 'left-pad-ish', 'index.js'), 'export const pad = (s) => "  " + s\n')
  await writeFile(join(home, 'helper.ts'), `${helper}\n`)
  await writeFile(
    join(home, 'main.ts'),
    [
      "import { readFileSync } from 'node:fs'",
      "import { map, program, sink, source, t, link } from 'lamina'",
      "import { pad } from 'left-pad-ish'",
      "import { factor } from './helper.js'",
      'export default () => {',
      "  const s = source('s', t.number, [1, 2])",
      "  const m = map('m', t.number, t.string, (n) => pad(String(n * factor)) + String(typeof readFileSync))",
      "  const o = sink('o', t.string, [])",
      "  return program('p', { operators: [s, m, o], links: [link(s.outputs.out, m.inputs.in), link(m.outputs.out, o.inputs.in)] })",
      '}',
    ].join('\n'),
  )
  return join(home, 'main.ts')
}

describe('packProgram', () => {
  it('bundles the module and its local imports, and leaves built-ins, lamina and packages as imports with their versions', async () => {
    const packed = await packProgram(await project())
    const text = new TextDecoder().decode(packed.bundle)
    expect(text).toContain('factor = 3')
    expect(text).toMatch(/from "lamina"/)
    expect(text).toMatch(/from "left-pad-ish"/)
    expect(text).toMatch(/from "node:fs"/)
    expect(packed.manifest).toEqual({ hash: sha256(packed.bundle), name: 'main.ts', size: packed.bundle.byteLength, dependencies: { lamina: '0.1.0', 'left-pad-ish': '1.2.3' } })
  })

  it('names the same code by the same hash, and other code by another', async () => {
    const entry = await project()
    const first = await packProgram(entry)
    expect((await packProgram(entry)).manifest.hash).toBe(first.manifest.hash)
    await writeFile(join(dir, 'project', 'helper.ts'), 'export const factor = 4\n')
    expect((await packProgram(entry)).manifest.hash).not.toBe(first.manifest.hash)
  })

  it('names lamina files a program inside lamina imports by relative path as lamina, not as the program', async () => {
    const packed = await packProgram(join(import.meta.dirname, 'fixtures', 'plan-once-program.ts'))
    const text = new TextDecoder().decode(packed.bundle)
    expect(text).toContain('"lamina-self:kernel/index"')
    expect(text).toContain('count-program.ts') // the fixture's own import is bundled
    expect(packed.manifest.dependencies).toEqual({ lamina: '0.1.0' })
  })

  it('refuses a module esbuild cannot bundle, naming the file and line', async () => {
    const entry = await project()
    await writeFile(join(dir, 'project', 'helper.ts'), 'export const factor = (\n')
    const error = await packProgram(entry).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ProgramPackError)
    expect((error as ProgramPackError).code).toBe('ERR_PROGRAM_PACK')
    expect((error as Error).message).toMatch(/helper\.ts:\d+:\d+/)
  })
})

describe('CodeCache', () => {
  /** A peer's work directory with `left-pad-ish` installed at `version` (or not at all). */
  async function peerWorkdir(name: string, version?: string): Promise<string> {
    const workdir = join(dir, name)
    await mkdir(workdir, { recursive: true })
    if (version !== undefined) {
      await mkdir(join(workdir, 'node_modules', 'left-pad-ish'), { recursive: true })
      await writeFile(join(workdir, 'node_modules', 'left-pad-ish', 'package.json'), JSON.stringify({ name: 'left-pad-ish', version, type: 'module', exports: './index.js' }))
      await writeFile(join(workdir, 'node_modules', 'left-pad-ish', 'index.js'), 'export const pad = (s) => "__" + s\n')
    }
    return workdir
  }

  it('fetches a bundle once, caches it by hash, and imports it linked to this peer', async () => {
    const packed = await packProgram(await project())
    const workdir = await peerWorkdir('peer', '1.2.3')
    const cache = new CodeCache(workdir, 'peer-a')
    let fetches = 0
    const fetch = async (): Promise<Uint8Array> => {
      fetches++
      return packed.bundle
    }
    const url = await cache.load(packed.manifest, fetch)
    expect(await cache.load(packed.manifest, fetch)).toBe(url)
    expect(fetches).toBe(1)
    expect(cache.has(packed.manifest.hash)).toBe(true)
    const linked = await readFile(new URL(url), 'utf8')
    expect(linked).toContain(`file://${join(workdir, 'node_modules', 'left-pad-ish', 'index.js')}`)
    expect(linked).toContain(`file://${join(root, 'kernel', 'index.ts')}`)
    const built = ((await import(url)) as { default: () => { name: string } }).default()
    expect(built.name).toBe('p')
  })

  it('fetches again when the cached copy does not match its hash, and says so', async () => {
    const packed = await packProgram(await project())
    const workdir = await peerWorkdir('peer', '1.2.3')
    const warnings: string[] = []
    const cache = new CodeCache(workdir, 'peer-a', (m) => void warnings.push(m))
    await cache.load(packed.manifest, async () => packed.bundle)
    await writeFile(join(workdir, 'code', `${packed.manifest.hash}.bundle.js`), 'export default () => { throw new Error("tampered") }\n')
    let fetched = false
    await cache.load(packed.manifest, async () => {
      fetched = true
      return packed.bundle
    })
    expect(fetched).toBe(true)
    expect(warnings).toEqual([`cached code ${packed.manifest.hash} (main.ts) does not match its hash: fetching it again`])
    expect(sha256(await readFile(join(workdir, 'code', `${packed.manifest.hash}.bundle.js`)))).toBe(packed.manifest.hash)
  })

  it('refuses bytes that do not have the hash the submission names, and caches nothing', async () => {
    const packed = await packProgram(await project())
    const workdir = await peerWorkdir('peer', '1.2.3')
    const cache = new CodeCache(workdir, 'peer-a')
    const error = await cache.load(packed.manifest, async () => new TextEncoder().encode('export default () => null')).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CodeHashError)
    expect((error as CodeHashError).code).toBe('ERR_CODE_HASH')
    expect(cache.has(packed.manifest.hash)).toBe(false)
  })

  it('never touches a path a malformed hash names', async () => {
    const workdir = await peerWorkdir('peer')
    const cache = new CodeCache(workdir, 'peer-a')
    let fetched = false
    const error = await cache
      .load({ hash: '../../../../etc/passwd', name: 'x.ts', size: 1, dependencies: {} }, async () => {
        fetched = true
        return new Uint8Array()
      })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CodeHashError)
    expect(fetched).toBe(false)
    expect(await readdir(workdir)).toEqual([])
  })

  it('refuses a program whose packages this peer lacks or has at another version, naming each', async () => {
    const packed = await packProgram(await project('1.2.3'))
    for (const [name, version, expected] of [
      ['missing', undefined, 'peer peer-a cannot run main.ts: left-pad-ish 1.2.3 is not installed here'],
      ['other', '2.0.0', 'peer peer-a cannot run main.ts: left-pad-ish is 2.0.0 here, the program was bundled against 1.2.3'],
    ] as const) {
      const cache = new CodeCache(await peerWorkdir(name, version), 'peer-a')
      const error = await cache.load(packed.manifest, async () => packed.bundle).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(DependencyMismatchError)
      expect((error as DependencyMismatchError).code).toBe('ERR_DEPENDENCY_MISMATCH')
      expect((error as Error).message).toBe(expected)
    }
  })

  it('refuses a program bundled against another version of lamina', async () => {
    const packed = await packProgram(await project())
    const cache = new CodeCache(await peerWorkdir('peer', '1.2.3'), 'peer-a')
    const manifest = { ...packed.manifest, dependencies: { ...packed.manifest.dependencies, lamina: '9.9.9' } }
    const error = await cache.load(manifest, async () => packed.bundle).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(DependencyMismatchError)
    expect((error as Error).message).toContain('lamina is 0.1.0 here, the program was bundled against 9.9.9')
  })
})
