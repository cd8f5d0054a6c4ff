// Builds Lamina's native core from source: Unicode tables from this Node, then the Rust crate in release mode.
//
// Run by `npm run build:native` (and so by `npm install` through `prepare`). Outputs, all generated and
// git-ignored: native/generated/unicode_tables.rs, native/lamina-native.node, native/binding.d.ts.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { writeUnicodeTables } from './unicode-tables.mjs'

const nativeDir = dirname(fileURLToPath(import.meta.url))
const addonPath = join(nativeDir, 'lamina-native.node')
const started = Date.now()

function log(message) {
  console.log(`[native] ${message}`)
}

function fail(message) {
  console.error(`[native] error: ${message}`)
  process.exit(1)
}

function seconds() {
  return ((Date.now() - started) / 1000).toFixed(1) + 's'
}

function run(command, args) {
  log(`$ ${[command, ...args].join(' ')}`)
  const result = spawnSync(command, args, { cwd: nativeDir, stdio: 'inherit', env: process.env })
  if (result.error) fail(`could not run ${command}: ${result.error.message}`)
  if (result.status !== 0) fail(`${command} exited with ${result.status ?? result.signal}; the native core was not built`)
}

// 1. The toolchain. Cargo is the one tool the project cannot install for itself.
const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' })
if (cargo.error || cargo.status !== 0) {
  fail(
    'cargo was not found on PATH. The native core is built from source and needs a Rust toolchain ' +
      '(https://rustup.rs, or your distribution\'s cargo package). Install it, then run `npm run build:native`.',
  )
}
log(`using ${cargo.stdout.trim()}`)

// 2. Unicode tables from this Node (see unicode-tables.mjs for why).
const tables = join(nativeDir, 'generated', 'unicode_tables.rs')
const wrote = writeUnicodeTables(tables)
log(`${wrote ? 'wrote' : 'kept'} generated/unicode_tables.rs (Unicode ${process.versions.unicode})`)

// 3. The crate, through the napi-rs CLI when it is installed (it also writes binding.d.ts), else cargo alone.
const require = createRequire(import.meta.url)
let cliPath = null
try {
  const pkgPath = require.resolve('@napi-rs/cli/package.json')
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'))
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin?.napi
  if (bin) cliPath = join(dirname(pkgPath), bin)
} catch {
  cliPath = null
}

if (cliPath && existsSync(cliPath)) {
  log('building with @napi-rs/cli (release)')
  run(process.execPath, [
    cliPath,
    'build',
    '--release',
    '--manifest-path',
    'Cargo.toml',
    '--config-path',
    'napi.json',
    '--package-json-path',
    join('..', 'package.json'),
    '--target-dir',
    'target',
    '--output-dir',
    '.',
    '--dts',
    'binding.d.ts',
  ])
} else {
  log('@napi-rs/cli is not installed: building with cargo directly (binding.d.ts is not regenerated)')
  run('cargo', ['build', '--release', '--manifest-path', 'Cargo.toml', '--target-dir', 'target'])
  const names = { linux: 'liblamina_native.so', darwin: 'liblamina_native.dylib', win32: 'lamina_native.dll' }
  const built = join(nativeDir, 'target', 'release', names[process.platform] ?? names.linux)
  if (!existsSync(built)) fail(`cargo finished but ${built} is missing`)
  copyFileSync(built, addonPath)
}

// 4. Prove the result loads in this Node before declaring success.
if (!existsSync(addonPath)) fail(`the build finished but ${addonPath} is missing`)
try {
  const addon = require(addonPath)
  const version = addon.unicodeVersion()
  if (version !== process.versions.unicode) {
    fail(`the addon reports Unicode ${version} but this Node has ${process.versions.unicode}`)
  }
} catch (error) {
  fail(`the built addon does not load: ${error instanceof Error ? error.message : String(error)}`)
}
log(`built native/lamina-native.node in ${seconds()}`)
