// Program code that travels with a job, named by its hash.
//
// The submitter bundles its program module and the local files it imports into one ES module with
// esbuild (`packProgram`) and names the bundle by the SHA-256 of its bytes. What lies outside the
// program stays outside the bundle: Node's built-in modules, lamina itself (its public entries and,
// for programs inside lamina's own tree, its library files) and npm packages; their versions travel
// in the manifest. A peer runs only code whose hash the submission names (`CodeCache`): it takes the
// bundle from its cache in `<workdir>/code`, or has the submitter send it over the job stream,
// checks the hash and the versions, links the bundle's outside imports to its own installation and
// imports the result. No path a remote peer names is ever imported.

import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { isBuiltin } from 'node:module'
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { build, type BuildFailure, type Message, type Plugin } from 'esbuild'
import { CodeHashError, DependencyMismatchError, type DependencyProblem, ProgramPackError } from './errors.js'

/** What a submission says about the code it runs: the bundle's hash, and what the bundle imports from outside. */
export interface CodeManifest {
  /** SHA-256 of the bundle's bytes, 64 lowercase hex digits. */
  readonly hash: string
  /** The program module's file name (for messages only; nothing is looked up by it). */
  readonly name: string
  /** The bundle's size in bytes. */
  readonly size: number
  /** Packages the bundle imports, with the version the submitter has: `lamina` and npm packages. */
  readonly dependencies: { readonly [name: string]: string }
}

/** A program packed for shipping: its manifest and the bundle itself. */
export interface PackedProgram {
  readonly manifest: CodeManifest
  readonly bundle: Uint8Array
}

/** The largest bundle a submission ships (it travels in one job-protocol message, base64-encoded). */
export const MAX_BUNDLE_BYTES = 32 * 1024 * 1024

/** How the bundle names a library file of lamina (programs inside lamina's own tree import them by relative path). */
const SELF = 'lamina-self:'
/** Folders of lamina's tree whose files are lamina's (not a program's); `fixtures` folders in them are programs'. */
const LIBRARY_FOLDERS = new Set(['kernel', 'kmods', 'layers', 'services', 'testing', 'cli', 'native', 'dist'])
const HASH = /^[0-9a-f]{64}$/
/** How packing and linking run esbuild: one ES module for Node 20, in memory, names kept for stack traces and errors. */
const ESBUILD = { bundle: true, write: false, format: 'esm', platform: 'node', target: 'node20', keepNames: true, legalComments: 'none', logLevel: 'silent' } as const

/** SHA-256 of bytes, as lowercase hex. */
export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/**
 * Bundles a program module with esbuild: the module and every local file it imports, in one ES
 * module named by its hash. Built-in modules, lamina and npm packages stay imports, and the
 * manifest records the version of each package the submitter has.
 *
 * @throws ProgramPackError naming the module and esbuild's messages (file:line) when it cannot be bundled.
 */
export async function packProgram(module: string): Promise<PackedProgram> {
  const entry = module.startsWith('file:') ? fileURLToPath(module) : resolve(module)
  const dependencies: Record<string, string> = {}
  const problems: string[] = []
  const record = (name: string, version: string): void => {
    const known = dependencies[name]
    if (known !== undefined && known !== version) problems.push(`${name} is imported at two versions (${known} and ${version})`)
    dependencies[name] = version
  }
  const pack: Plugin = {
    name: 'lamina-pack',
    setup(builder) {
      builder.onResolve({ filter: /.*/ }, async (args) => {
        if (args.kind === 'entry-point' || (args.pluginData as { own?: boolean } | undefined)?.own === true) return undefined
        if (isBuiltin(args.path)) return { path: args.path, external: true }
        const name = packageName(args.path)
        if (name === 'lamina') {
          record('lamina', laminaVersion())
          return { path: args.path, external: true }
        }
        const found = await builder.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: { own: true } })
        if (found.errors.length > 0) return { errors: found.errors }
        if (name !== undefined) {
          const version = packageVersion(found.path, name)
          if (version === undefined) return { errors: [{ text: `found ${name} at ${found.path} but no package.json naming it above that file` }] }
          record(name, version)
          return { path: args.path, external: true }
        }
        const own = laminaFile(found.path)
        if (own !== undefined) {
          record('lamina', laminaVersion())
          return { path: `${SELF}${own}`, external: true }
        }
        return { path: found.path }
      })
    },
  }
  let output: Uint8Array
  try {
    const result = await build({
      ...ESBUILD,
      entryPoints: [entry],
      // Paths in the bundle's comments are relative to the module, so the hash does not depend on where it lives.
      absWorkingDir: dirname(entry),
      plugins: [pack],
    })
    output = result.outputFiles[0]!.contents
  } catch (error) {
    throw new ProgramPackError(module, renderBuildFailure(error), error)
  }
  if (problems.length > 0) throw new ProgramPackError(module, problems.join('; '))
  if (output.byteLength > MAX_BUNDLE_BYTES) throw new ProgramPackError(module, `its bundle has ${output.byteLength} bytes, more than the ${MAX_BUNDLE_BYTES} a job can ship`)
  const bundle = new Uint8Array(output)
  return { manifest: { hash: sha256(bundle), name: basename(entry), size: bundle.byteLength, dependencies }, bundle }
}

/** Where a peer keeps the code of jobs it ran, by hash, and turns a manifest into a module it can import. */
export class CodeCache {
  /**
   * @param workdir the peer's work directory: bundles live in `<workdir>/code`, and npm packages a
   *   program needs are looked up in `<workdir>/node_modules` before lamina's own.
   * @param peer this peer's id (errors name it)
   */
  constructor(
    private readonly workdir: string,
    private readonly peer: string,
    private readonly warn: (message: string) => void = () => undefined,
  ) {}

  private get dir(): string {
    return join(this.workdir, 'code')
  }

  /** Whether the bundle `hash` is cached here (it may still turn out corrupt when loaded). */
  has(hash: string): boolean {
    return HASH.test(hash) && existsSync(join(this.dir, `${hash}.bundle.js`))
  }

  /** The code of `manifest` as cached here (checked against its hash), to ship to other peers; undefined when not cached. */
  async packed(manifest: CodeManifest): Promise<PackedProgram | undefined> {
    if (!HASH.test(manifest.hash)) return undefined
    const bundle = await readFile(join(this.dir, `${manifest.hash}.bundle.js`)).catch(() => undefined)
    if (bundle === undefined || sha256(bundle) !== manifest.hash) return undefined
    return { manifest, bundle: new Uint8Array(bundle) }
  }

  /**
   * The file URL of the program of `manifest`, linked to this peer's installation: from the cache,
   * or from `fetch` (the submitter) when it is not cached or the cached copy does not match its hash.
   *
   * @throws CodeHashError when the hash is malformed or the bytes fetched do not have it.
   * @throws DependencyMismatchError when a package the program imports is missing here or has another version.
   */
  async load(manifest: CodeManifest, fetch: () => Promise<Uint8Array>): Promise<string> {
    if (!HASH.test(manifest.hash)) throw new CodeHashError(this.peer, manifest.hash, 'is not a SHA-256 in hex (64 lowercase hex digits)')
    const path = join(this.dir, `${manifest.hash}.bundle.js`)
    let bundle: Uint8Array | undefined
    try {
      bundle = await readFile(path)
    } catch {
      bundle = undefined
    }
    if (bundle !== undefined && sha256(bundle) !== manifest.hash) {
      this.warn(`cached code ${manifest.hash} (${manifest.name}) does not match its hash: fetching it again`)
      await rm(path, { force: true })
      bundle = undefined
    }
    if (bundle === undefined) {
      bundle = await fetch()
      const actual = sha256(bundle)
      if (actual !== manifest.hash) throw new CodeHashError(this.peer, manifest.hash, `does not match the ${bundle.byteLength} bytes received (their hash is ${actual})`)
      await mkdir(this.dir, { recursive: true })
      await writeAtomically(path, bundle)
    }
    const linked = await this.link(bundle, manifest)
    const target = join(this.dir, `${manifest.hash}.mjs`)
    const current = await readFile(target, 'utf8').catch(() => undefined)
    if (current !== linked) await writeAtomically(target, Buffer.from(linked))
    return pathToFileURL(target).href
  }

  /** Rewrites the bundle's outside imports to this peer's files, checking every package's version. */
  private async link(bundle: Uint8Array, manifest: CodeManifest): Promise<string> {
    const problems: DependencyProblem[] = []
    const want = manifest.dependencies
    if (want.lamina !== undefined && want.lamina !== laminaVersion()) problems.push({ name: 'lamina', wanted: want.lamina, found: laminaVersion() })
    const checked = new Set<string>()
    const workdir = this.workdir
    const linker: Plugin = {
      name: 'lamina-link',
      setup(builder) {
        builder.onResolve({ filter: /.*/ }, async (args) => {
          if ((args.pluginData as { own?: boolean } | undefined)?.own === true) return undefined
          if (isBuiltin(args.path)) return { path: args.path, external: true }
          if (args.path.startsWith(SELF)) {
            const file = ownLibraryFile(args.path.slice(SELF.length))
            if (file === undefined) return { errors: [{ text: `the program imports lamina's ${args.path.slice(SELF.length)}, which this peer's lamina does not have` }] }
            return { path: pathToFileURL(file).href, external: true }
          }
          const name = packageName(args.path)
          if (name === 'lamina') {
            const file = ownEntryFile(args.path)
            if (file === undefined) return { errors: [{ text: `lamina has no entry point ${args.path}` }] }
            return { path: pathToFileURL(file).href, external: true }
          }
          if (name === undefined) return { errors: [{ text: `the bundle imports ${args.path}, which is neither a package nor built in` }] }
          for (const dir of [workdir, laminaRoot()]) {
            const found = await builder.resolve(args.path, { kind: args.kind, resolveDir: dir, pluginData: { own: true } })
            if (found.errors.length > 0) continue
            if (!checked.has(name)) {
              checked.add(name)
              const version = packageVersion(found.path, name)
              if (version !== want[name]) problems.push({ name, wanted: want[name] ?? 'no version (not in the manifest)', found: version })
            }
            return { path: pathToFileURL(found.path).href, external: true }
          }
          if (!checked.has(name)) {
            checked.add(name)
            problems.push({ name, wanted: want[name] ?? 'no version (not in the manifest)', found: undefined })
          }
          return { path: args.path, external: true }
        })
      },
    }
    let linked: string
    try {
      const result = await build({
        ...ESBUILD,
        stdin: { contents: Buffer.from(bundle).toString('utf8'), loader: 'js', resolveDir: this.dir, sourcefile: manifest.name },
        plugins: [linker],
      })
      linked = result.outputFiles[0]!.text
    } catch (error) {
      throw new ProgramPackError(`${manifest.name} (${manifest.hash.slice(0, 12)})`, `cannot be linked on peer ${this.peer}: ${renderBuildFailure(error)}`, error)
    }
    if (problems.length > 0) throw new DependencyMismatchError(this.peer, manifest.name, problems)
    return linked
  }
}

/** The package a bare import specifier names (`rxjs`, `@scope/pkg`), or undefined for a path. */
function packageName(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('#') || /^[a-z]+:/i.test(specifier)) return undefined
  const parts = specifier.split('/')
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]
}

/** The version in the package.json of `name` that holds `file`, looking up from the file. */
function packageVersion(file: string, name: string): string | undefined {
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json')
    if (existsSync(manifest)) {
      const parsed = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown; version?: unknown }
      if (parsed.name === name && typeof parsed.version === 'string') return parsed.version
    }
    if (dirname(dir) === dir) return undefined
  }
}

let root: { dir: string; version: string; exports: Record<string, { source?: string; default?: string }> } | undefined

/** Lamina's own package: its folder, version and entry points. */
function lamina(): NonNullable<typeof root> {
  if (root !== undefined) return root
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json')
    if (existsSync(manifest)) {
      const parsed = JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown; version?: unknown; exports?: unknown }
      if (parsed.name === 'lamina' && typeof parsed.version === 'string') {
        root = { dir, version: parsed.version, exports: (parsed.exports ?? {}) as Record<string, { source?: string; default?: string }> }
        return root
      }
    }
    if (dirname(dir) === dir) throw new Error(`lamina's package.json is not above ${fileURLToPath(import.meta.url)}`)
  }
}

function laminaRoot(): string {
  return lamina().dir
}

function laminaVersion(): string {
  return lamina().version
}

/** Whether this process runs lamina from its TypeScript sources (tests, tsx) rather than from dist/. */
const fromSources = import.meta.url.endsWith('.ts')

/** A library file of lamina's tree, as the bundle names it (`kernel/index`), or undefined for a program's file. */
function laminaFile(path: string): string | undefined {
  const rel = relative(laminaRoot(), path)
  if (rel.startsWith('..') || isAbsolute(rel)) return undefined
  const parts = rel.split(sep)
  if (!LIBRARY_FOLDERS.has(parts[0]!) || parts.includes('fixtures') || parts.includes('node_modules')) return undefined
  return (parts[0] === 'dist' ? parts.slice(1) : parts).join('/').replace(/\.(d\.)?(ts|js|mts|mjs)$/, '')
}

/** This peer's file for a library file of lamina named by a bundle. */
function ownLibraryFile(name: string): string | undefined {
  if (name.split('/').includes('..')) return undefined
  const file = fromSources ? join(laminaRoot(), `${name}.ts`) : join(laminaRoot(), 'dist', `${name}.js`)
  return existsSync(file) ? file : undefined
}

/** This peer's file for a public entry of lamina (`lamina`, `lamina/layers`), by its package.json's exports. */
function ownEntryFile(specifier: string): string | undefined {
  const entry = lamina().exports[specifier === 'lamina' ? '.' : `.${specifier.slice('lamina'.length)}`]
  const target = fromSources ? entry?.source : entry?.default
  return target === undefined ? undefined : join(laminaRoot(), target)
}

/** Writes a file whole or not at all (a temporary file renamed over it). */
async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  await writeFile(temporary, bytes)
  await rename(temporary, path)
}

/** esbuild's messages as `file:line:column: text`, or the error's message. */
function renderBuildFailure(error: unknown): string {
  const messages = (error as Partial<BuildFailure>).errors
  if (!Array.isArray(messages) || messages.length === 0) return error instanceof Error ? error.message : String(error)
  return messages
    .slice(0, 5)
    .map((m: Message) => (m.location === null ? m.text : `${m.location.file}:${m.location.line}:${m.location.column}: ${m.text}`))
    .join('; ')
}
