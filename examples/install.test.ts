// Lamina installed into a user's own project from its packed tarball: `npm pack` here, `npm install
// <tarball>` in an empty project (from the registry, through npm's cache), then a program that runs
// native operators through the public `lamina` entry and the installed `lamina` command on two peer
// processes, each checked against a plain computation.
//
// The tarball is packed from this checkout's dist/ with `--ignore-scripts`: packing would otherwise
// run `prepare` (tsc), rewriting dist/ while other test files start peer processes from it. So
// dist/ must be built first (`npm test` builds it just before vitest; alone: `npm run build:ts`).
// The install compiles the native core and better-sqlite3 from source: about two minutes here.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

const repo = join(import.meta.dirname, '..')
const started = Date.now()

/** A progress line on stderr: the install is slow, and a reader should see where it is. */
function progress(message: string): void {
  process.stderr.write(`[install.test ${((Date.now() - started) / 1000).toFixed(0)}s] ${message}\n`)
}

/** How a command ended, with everything it wrote. */
interface Ran {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  readonly ms: number
}

/**
 * The environment of the user's shell: this one without what npm, vitest and Lamina set for the
 * test run (an outer `npm test` exports npm_config_* values, such as its local prefix, that a
 * nested npm would take as its own configuration).
 */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (!/^(npm_|vitest|lamina_|init_cwd$|node_options$|node_env$)/i.test(name)) env[name] = value
  }
  return { ...env, ...extra }
}

/**
 * Runs a command to its end in its own process group, which is killed at `ms` (npm's children,
 * cargo and the compilers, go with it), and resolves with its output either way.
 */
function run(command: string, args: readonly string[], options: { cwd: string; ms: number; env?: Record<string, string> }): Promise<Ran> {
  const began = Date.now()
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: userEnv(options.env), stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk
    })
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk
    })
    const timer = setTimeout(() => {
      stderr += `\n[install.test] killed after ${options.ms} ms\n`
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
    }, options.ms)
    child.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - began })
    })
  })
}

/** A failed command's story, for an assertion's message. */
function story(what: string, ran: Ran): string {
  const tail = (text: string): string => text.split('\n').slice(-40).join('\n')
  return `${what} exited with ${ran.code ?? ran.signal}\n--- stdout (tail)\n${tail(ran.stdout)}\n--- stderr (tail)\n${tail(ran.stderr)}`
}

/** A deterministic text: mixed case, punctuation, accents, digits, CJK and an emoji (not a word). */
function text(lines = 3000): string {
  const vocabulary = 'The cat AND the hat of a Café naïve über 東京 données 2024 r2d2 Straße on it 😀 mañana ÉTÉ to by façade'.split(' ')
  let state = 7
  const out: string[] = []
  for (let i = 0; i < lines; i++) {
    const words: string[] = []
    for (let j = 0; j < 10; j++) {
      state = (state * 1103515245 + 12345) % 2147483648
      words.push(vocabulary[state % vocabulary.length]!)
    }
    out.push(words.join(i % 3 === 0 ? ', ' : ' '))
  }
  return `${out.join('\n')}\n`
}

/** The words longer than two UTF-16 units, lowercased, counted the plainest way: sorted [word, count] pairs. */
function plainCounts(of: string): [string, number][] {
  const counts = new Map<string, number>()
  for (const match of of.match(/[\p{L}\p{N}]+/gu) ?? []) {
    const word = match.toLowerCase()
    if (word.length > 2) counts.set(word, (counts.get(word) ?? 0) + 1)
  }
  return [...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
}

/**
 * A user's program in plain JavaScript (run by `node`, no tsx): two native chains through the
 * public entry, tokenize → filter → count over the text file argv[2], and filter → map over
 * numbers. Prints one JSON line; a failure prints its code and exits 1.
 */
const DIRECT = `import { readFileSync } from 'node:fs'
import { kernel, link, native, program, recordLayout, sink, source, stringLayout, t } from 'lamina'

const Row = t.type({ word: t.string, count: t.number })
const Num = t.type({ x: t.number })
const byWord = ([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)

async function main(file) {
  const lines = source('lines', t.string, readFileSync(file, 'utf8').split('\\n'))
  const words = native({
    name: 'words',
    input: t.string,
    output: Row,
    steps: [{ op: 'tokenize' }, { op: 'filter', expr: 'len(s) > 2' }, { op: 'count' }],
    inputLayout: stringLayout(),
    outputLayout: recordLayout({ word: { column: 'key', type: 'string' }, count: { column: 'count', type: 'number' } }),
    annotations: { parallelism: 2 },
  })
  const counts = new Map()
  const out = sink('out', Row, (row) => void counts.set(row.word, (counts.get(row.word) ?? 0) + row.count))
  const first = await kernel.run(program('words', { operators: [lines, words, out], links: [link(lines.outputs.out, words.inputs.in), link(words.outputs.out, out.inputs.in)] })).done

  const layout = recordLayout({ x: { column: 'x', type: 'number' } })
  const numbers = source('numbers', Num, Array.from({ length: 1000 }, (_, x) => ({ x })))
  const arithmetic = native({ name: 'arithmetic', input: Num, output: Num, steps: [{ op: 'filter', expr: 'x % 3 == 0' }, { op: 'map', expr: 'x * 2 + 1' }], inputLayout: layout, outputLayout: layout })
  const xs = []
  const collect = sink('xs', Num, (row) => void xs.push(row.x))
  const second = await kernel.run(program('arithmetic', { operators: [numbers, arithmetic, collect], links: [link(numbers.outputs.out, arithmetic.inputs.in), link(arithmetic.outputs.out, collect.inputs.in)] })).done

  const deadLetters = first.deadLetters.length + second.deadLetters.length
  process.stdout.write(JSON.stringify({ words: [...counts].sort(byWord), numbers: xs.sort((a, b) => a - b), deadLetters }) + '\\n')
}

main(process.argv[2]).catch((error) => {
  process.stderr.write(\`\${error?.code ?? 'no code'}: \${error?.message ?? error}\\n\`)
  process.exitCode = 1
})
`

/** A program module for `lamina run` in TypeScript: the same word count on the native core, summed per word by a keyed atom. */
const CLI_PROGRAM = `import { readFileSync } from 'node:fs'
import { atom, link, native, program, recordLayout, sink, source, stringLayout, t, type Program } from 'lamina'

const Row = t.type({ word: t.string, count: t.number })
type Row = t.TypeOf<typeof Row>

/** Words longer than two characters of the file args[0], counted on the native core: one \`<word> <count>\` line each. */
export default function build(args: readonly string[]): Program {
  const file = args[0]
  if (file === undefined) throw new Error('usage: lamina run counts.ts -- FILE')
  const lines = source('lines', t.string, () => readFileSync(file, 'utf8').split('\\n'))
  const words = native({
    name: 'words',
    input: t.string,
    output: Row,
    steps: [{ op: 'tokenize' }, { op: 'filter', expr: 'len(s) > 2' }, { op: 'count' }],
    inputLayout: stringLayout(),
    outputLayout: recordLayout<Row>({ word: { column: 'key', type: 'string' }, count: { column: 'count', type: 'number' } }),
    annotations: { parallelism: 2 },
  })
  const total = atom({
    name: 'total',
    inputs: { in: Row },
    outputs: { out: Row },
    key: (row) => row.word,
    state: { codec: t.number, init: () => 0 },
    on: { in: (row, ctx) => void ctx.state.update((n) => n + row.count) },
    end: (ctx) => {
      for (const [word, count] of ctx.state.entries()) ctx.emit('out', { word: String(word), count })
    },
  })
  const print = sink('print', Row, (row) => void process.stdout.write(\`\${row.word} \${row.count}\\n\`))
  return program('counts', {
    operators: [lines, words, total, print],
    links: [link(lines.outputs.out, words.inputs.in), link(words.outputs.out, total.inputs.in), link(total.outputs.out, print.inputs.in)],
  })
}
`

/** What `npm pack --json` says about the tarball. */
interface Packed {
  readonly filename: string
  readonly size: number
  readonly unpackedSize: number
  readonly entryCount: number
  readonly files: readonly { readonly path: string }[]
}

describe('Lamina installed from its tarball into a new project', () => {
  let dir: string
  let project: string
  let packed: Packed
  let install: Ran
  const input = text()

  beforeAll(async () => {
    if (!existsSync(join(repo, 'dist', 'kernel', 'index.js')) || !existsSync(join(repo, 'dist', 'cli', 'lamina.js'))) {
      throw new Error('dist/ is not built: run `npm run build:ts` first (npm test does)')
    }
    dir = await mkdtemp(join(tmpdir(), 'lamina-install-'))
    project = join(dir, 'project')
    await mkdir(join(dir, 'pack'))
    await mkdir(project)

    progress('npm pack')
    const pack = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', join(dir, 'pack')], { cwd: repo, ms: 120_000 })
    if (pack.code !== 0) throw new Error(story('npm pack', pack))
    packed = (JSON.parse(pack.stdout) as Packed[])[0]!
    const tarball = join(dir, 'pack', packed.filename)
    progress(`packed ${packed.filename}: ${packed.size} bytes, ${packed.entryCount} files`)

    // An empty ES-module project. Its allowScripts approves the three install scripts (Lamina's
    // native build, better-sqlite3's and esbuild's), as `npm install-scripts approve` would, and the
    // install is strict about it: nothing runs unreviewed, and nothing approved is skipped.
    const manifest = { name: 'user-project', version: '1.0.0', private: true, type: 'module', allowScripts: { [`file:${tarball}`]: true, 'better-sqlite3': true, esbuild: true } }
    await writeFile(join(project, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`)
    await writeFile(join(project, 'text.txt'), input)
    await writeFile(join(project, 'direct.mjs'), DIRECT)
    await writeFile(join(project, 'counts.ts'), CLI_PROGRAM)

    progress('npm install <tarball> (builds the native core with cargo; a couple of minutes)')
    install = await run('npm', ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline', '--strict-allow-scripts', '--no-update-notifier'], {
      cwd: project,
      ms: 15 * 60_000,
    })
    progress(`npm install exited with ${install.code ?? install.signal} after ${(install.ms / 1000).toFixed(1)} s`)
    if (install.code !== 0) throw new Error(story('npm install', install))
  }, 20 * 60_000)

  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  }, 60_000)

  it('packs dist, the crate sources and the docs, but no tests, benches or build outputs', async () => {
    const files = packed.files.map((f) => f.path)
    for (const required of [
      'package.json',
      'README.md',
      'CHANGELOG.md',
      'LICENSE',
      'dist/kernel/index.js',
      'dist/kernel/index.d.ts',
      'dist/cli/lamina.js',
      'dist/services/jobs/peer-main.js',
      'dist/native/ts/native.js',
      'native/Cargo.toml',
      'native/Cargo.lock',
      'native/build.rs',
      'native/build.mjs',
      'native/unicode-tables.mjs',
      'native/src/lib.rs',
    ]) {
      expect(files, required).toContain(required)
    }
    const unwanted = files.filter((f) =>
      /\.test\.ts$|(^|\/)(fixtures|__snapshots__)\/|^(dist\/)?(bench|examples|test|\.ci)\/|^native\/(target|generated)\/|\.node$|^native\/binding\.d\.ts$/.test(f),
    )
    expect(unwanted).toEqual([])
    const manifestLicense = (JSON.parse(await readFile(join(repo, 'package.json'), 'utf8')) as { license: string }).license
    expect(manifestLicense).toBe('Apache-2.0')
    // Every path package.json's exports name is in the package (the `source` condition's too).
    const manifest = JSON.parse(await readFile(join(repo, 'package.json'), 'utf8')) as { exports: Record<string, Record<string, string>>; bin: Record<string, string> }
    const targets = [...Object.values(manifest.exports).flatMap((conditions) => Object.values(conditions)), ...Object.values(manifest.bin)]
    expect(targets.map((target) => target.replace(/^\.\//, '')).filter((target) => !files.includes(target))).toEqual([])
  })

  it('installs without devDependencies, building the addon and keeping no cargo target', () => {
    const lamina = join(project, 'node_modules', 'lamina')
    expect(existsSync(join(lamina, 'native', 'lamina-native.node'))).toBe(true)
    expect(existsSync(join(lamina, 'native', 'target'))).toBe(false)
    for (const dev of ['typescript', 'vitest', '@biomejs/biome', 'dependency-cruiser', 'fast-check']) expect(existsSync(join(project, 'node_modules', dev)), dev).toBe(false)
    expect(existsSync(join(project, 'node_modules', '.bin', 'lamina'))).toBe(true)
  })

  it('runs native operators through the public entry, equal to a plain computation', async () => {
    const ran = await run('node', ['direct.mjs', 'text.txt'], { cwd: project, ms: 120_000 })
    expect(ran.code, story('node direct.mjs', ran)).toBe(0)
    const result = JSON.parse(ran.stdout) as { words: [string, number][]; numbers: number[]; deadLetters: number }
    expect(result.words).toEqual(plainCounts(input))
    expect(result.numbers).toEqual(
      Array.from({ length: 1000 }, (_, x) => x)
        .filter((x) => x % 3 === 0)
        .map((x) => x * 2 + 1),
    )
    expect(result.deadLetters).toBe(0)
    // The same program without the addon fails: the operators above ran on the native core, with no fallback.
    const without = await run('node', ['direct.mjs', 'text.txt'], { cwd: project, ms: 120_000, env: { LAMINA_NATIVE_ADDON: join(project, 'missing.node') } })
    expect(without.code).toBe(1)
    expect(without.stderr).toContain('ERR_NATIVE_UNAVAILABLE')
  }, 300_000)

  it('type checks a TypeScript program against the installed declarations', async () => {
    const tsconfig = {
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: ['node'],
        typeRoots: [join(repo, 'node_modules', '@types')],
      },
      files: ['counts.ts'],
    }
    await writeFile(join(project, 'tsconfig.json'), `${JSON.stringify(tsconfig, null, 2)}\n`)
    // This checkout's compiler, since the project has none: `lamina` resolves to node_modules/lamina's dist/*.d.ts.
    const ran = await run('node', [join(repo, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: project, ms: 120_000 })
    expect(ran.code, story('tsc', ran)).toBe(0)
  }, 300_000)

  it('runs the installed lamina command on two peer processes', async () => {
    const ran = await run(join(project, 'node_modules', '.bin', 'lamina'), ['run', 'counts.ts', '--peers', '2', '--quiet', '--', join(project, 'text.txt')], {
      cwd: project,
      ms: 180_000,
    })
    expect(ran.code, story('lamina run', ran)).toBe(0)
    const lines = ran.stdout.split('\n').filter((line) => line !== '')
    expect(lines.sort()).toEqual(
      plainCounts(input)
        .map(([word, count]) => `${word} ${count}`)
        .sort(),
    )
  }, 300_000)
})
