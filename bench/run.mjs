// Runs one benchmark of dist/bench/ in a child Node process: `node bench/run.mjs <name> [args]`.
//
//   npm run bench -- pipeline --batch 4096
//
// The child gets `--expose-gc` (benchmarks collect garbage between timed runs) and a larger heap
// (their inputs are pre-generated in memory). Extra Node flags go through NODE_OPTIONS, e.g.
// `NODE_OPTIONS=--cpu-prof npm run bench -- pipeline`. Files of dist/bench/ whose name starts with
// `_` are helpers, not benchmarks. The exit code is the child's.

import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const built = join(root, 'dist', 'bench')
const NODE_FLAGS = ['--expose-gc', '--max-old-space-size=8192']

function fail(message, code) {
  process.stderr.write(`bench: ${message}\n`)
  process.exit(code)
}

if (!existsSync(built)) fail(`${relative(process.cwd(), built) || built} not found: run \`npm run build\` (or \`npm run build:ts\`) first`, 1)

const available = readdirSync(built)
  .filter((file) => file.endsWith('.js') && !file.startsWith('_'))
  .map((file) => file.slice(0, -'.js'.length))
  .sort()
const list = available.length === 0 ? '  (none: run `npm run build:ts`)' : available.map((name) => `  ${name}`).join('\n')

const [name, ...args] = process.argv.slice(2)
if (name === undefined || name === '--help' || name === '-h') fail(`usage: npm run bench -- <name> [args]\navailable benchmarks:\n${list}`, 2)
if (!available.includes(name)) fail(`unknown benchmark "${name}"\navailable benchmarks:\n${list}`, 2)

const script = join(built, `${name}.js`)
const sourceFile = join(root, 'bench', `${name}.ts`)
if (existsSync(sourceFile) && statSync(sourceFile).mtimeMs > statSync(script).mtimeMs) {
  process.stderr.write(`bench: warning: bench/${name}.ts is newer than its build; run \`npm run build:ts\`\n`)
}

const child = spawn(process.execPath, [...NODE_FLAGS, script, ...args], { stdio: 'inherit' })
// A terminal's Ctrl-C reaches the child directly (same process group); signals sent to this
// process alone are passed on, so the child always decides how the run ends.
const forward = (signal) => child.kill(signal)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, forward)
child.on('error', (error) => fail(`cannot start ${process.execPath}: ${error.message}`, 1))
child.on('exit', (code, signal) => {
  if (signal !== null) {
    // Die of the same signal, so the caller sees what happened to the benchmark.
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.off(s, forward)
    process.kill(process.pid, signal)
    setTimeout(() => process.exit(128 + (constants.signals[signal] ?? 0)), 100)
    return
  }
  process.exit(code ?? 1)
})
