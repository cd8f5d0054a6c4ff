// The typed entry to Lamina's native core: loads the Rust addon built from native/ and wraps its errors.
//
// There is no JavaScript fallback: if the addon is missing or unusable every call throws
// NativeCoreUnavailableError, and the caller decides what to do. The same operators in plain
// TypeScript live in reference.ts (for tests and for callers that choose them explicitly).

import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import * as ops from './batch.js'
import {
  NativeArgError,
  NativeBatchError,
  NativeCoreError,
  NativeCoreUnavailableError,
  NativeExprError,
  NativeInternalError,
  NativePanicError,
  NativePlanError,
  NativeStateError,
} from './errors.js'
import type { Batch, BatchEngine, Chain, Joined, JoinOptions, StepSpec, Tokenized, Utf8Column, WordCounts } from './types.js'
// The declarations the build generates from the Rust crate (native/build.mjs): type-only, so the
// type check fails when the crate stops exporting a name the kernel relies on.
import type * as Generated from '../binding.js'

export * from './errors.js'
export type * from './types.js'
export { isUtf8Column, rowCount, utf8Column, utf8Strings } from './batch.js'

/** The raw binding exported by the addon (its generated declarations are native/binding.d.ts). */
export interface NativeBinding {
  unicodeVersion(): string
  hashKey(key: string | number): number
  numberToString(x: number): string
  tokenize(column: Utf8Column): Tokenized
  hashPartition(batch: Batch, key: string | undefined, n: number): Batch[]
  hashJoin(left: Batch, right: Batch, leftKey?: string, rightKey?: string, rightPrefix?: string): Joined
  wordcount(text: Uint8Array, minLength?: number): WordCounts
  debugPanic(message: string): never
  NativePlan: new (steps: readonly StepSpec[]) => Chain
}

/**
 * The names the binding must export: checked at load time against the addon, and at type-check
 * time against the generated native/binding.d.ts (`satisfies` below).
 */
export const BINDING_EXPORTS = [
  'unicodeVersion',
  'hashKey',
  'numberToString',
  'tokenize',
  'hashPartition',
  'hashJoin',
  'wordcount',
  'debugPanic',
  'NativePlan',
] as const satisfies ReadonlyArray<keyof NativeBinding & keyof typeof Generated>

const ADDON_FILE = 'lamina-native.node'

/**
 * Where the addon is loaded from: `$LAMINA_NATIVE_ADDON` if set, else `native/lamina-native.node`
 * under the package root (the nearest folder above this file with a package.json, so the same
 * code works from native/ts/*.ts and from dist/native/ts/*.js).
 */
export function nativeAddonPath(): string {
  const override = process.env['LAMINA_NATIVE_ADDON']
  if (override !== undefined && override !== '') return override
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return join(dir, 'native', ADDON_FILE)
    const parent = dirname(dir)
    if (parent === dir) return join(dirname(fileURLToPath(import.meta.url)), '..', ADDON_FILE)
    dir = parent
  }
}

/**
 * Loads the addon at `path` and checks that it fits this Node. Throws {@link NativeCoreUnavailableError}.
 * Most code wants {@link loadNativeCore}, which finds the addon and loads it once.
 */
export function openNativeCore(path: string): NativeBinding {
  if (!existsSync(path)) throw new NativeCoreUnavailableError(path, 'the addon file does not exist')
  let binding: NativeBinding
  try {
    binding = createRequire(import.meta.url)(path) as NativeBinding
  } catch (cause) {
    throw new NativeCoreUnavailableError(path, `the addon does not load: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
  }
  for (const name of BINDING_EXPORTS) {
    if (typeof binding[name] !== 'function') throw new NativeCoreUnavailableError(path, `the addon does not export ${name}; it is stale`)
  }
  const built = binding.unicodeVersion()
  if (built !== process.versions.unicode) {
    throw new NativeCoreUnavailableError(
      path,
      `the addon was built for Unicode ${built} but this Node has Unicode ${process.versions.unicode ?? 'unknown'}; rebuild it for this Node`,
    )
  }
  return binding
}

let loaded: NativeBinding | undefined

/** The native binding, loaded on first use. Throws {@link NativeCoreUnavailableError}. */
export function loadNativeCore(): NativeBinding {
  loaded ??= openNativeCore(nativeAddonPath())
  return loaded
}

interface RawNativeError extends Error {
  readonly code: string
  readonly column?: string
  readonly index?: number
  readonly position?: number
}

/** Turns an error thrown by the addon into the matching class of errors.ts, keeping its message. */
function wrap(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof NativeCoreError) return error
  const e = error as RawNativeError
  const options = { cause: error }
  let typed: NativeCoreError
  switch (e.code) {
    case 'ERR_NATIVE_BAD_BATCH':
      typed = new NativeBatchError(e.column ?? '', e.index, e.message, options)
      break
    case 'ERR_NATIVE_BAD_PLAN':
      typed = new NativePlanError(e.message, options)
      break
    case 'ERR_NATIVE_BAD_EXPR':
      typed = new NativeExprError(e.position ?? 0, e.message, options)
      break
    case 'ERR_NATIVE_BAD_ARG':
      typed = new NativeArgError(e.message, options)
      break
    case 'ERR_NATIVE_BAD_STATE':
      typed = new NativeStateError(e.message, options)
      break
    case 'ERR_NATIVE_PANIC':
      typed = new NativePanicError(e.message, options)
      break
    case 'ERR_NATIVE_INTERNAL':
      typed = new NativeInternalError(e.message, options)
      break
    default:
      return error
  }
  typed.message = e.message
  return typed
}

function call<T>(f: (binding: NativeBinding) => T): T {
  const binding = loadNativeCore()
  try {
    return f(binding)
  } catch (error) {
    throw wrap(error)
  }
}

/** The Unicode version the addon's tokenizer tables were generated for. */
export function unicodeVersion(): string {
  return call((b) => b.unicodeVersion())
}

/**
 * The partitioning hash, computed natively: FNV-1a (32-bit) over the UTF-16 code units of `String(key)`.
 *
 * @example
 * hashKey('a') // 3826002220, the same as the kernel's and reference.ts's hashKey
 */
export function hashKey(key: string | number): number {
  return call((b) => b.hashKey(key))
}

/** The lowercase words (`[\p{L}\p{N}]+`, lowercased as by `toLowerCase`) of every row, and each word's row. */
export function tokenize(column: Utf8Column): Tokenized {
  return call((b) => b.tokenize(column))
}

/** Splits `batch` into `n` batches by `hashKey(String(batch[key][i])) % n` (key default `s`). */
export function hashPartition(batch: Batch, n: number, key?: string): Batch[] {
  return call((b) => b.hashPartition(batch, key, n))
}

/** Inner hash join on `left[leftKey] == right[rightKey]` (see {@link JoinOptions}). */
export function hashJoin(left: Batch, right: Batch, options: JoinOptions = {}): Joined {
  return call((b) => b.hashJoin(left, right, options.leftKey, options.rightKey, options.rightPrefix))
}

/**
 * Word count of a whole UTF-8 buffer in one native call: the upper bound for the fused chain
 * `[{ op: 'tokenize' }, { op: 'filter', expr: 'len(s) >= minLength' }, { op: 'count' }]`.
 */
export function wordcount(text: Uint8Array, minLength?: number): WordCounts {
  return call((b) => b.wordcount(text, minLength))
}

/**
 * A fused chain compiled once into a native plan; each `push` runs one batch through every step in
 * a single native call, and aggregate or window state stays inside the native object.
 *
 * @example
 * const chain = new NativeChain([{ op: 'tokenize' }, { op: 'filter', expr: 'len(s) > 2' }, { op: 'count' }])
 * chain.push({ s: utf8Column(['the cat sat on the mat']) })
 * const [counts] = chain.finish() // { key: the, cat, sat, mat; count: 2, 1, 1, 1 }
 */
export class NativeChain implements Chain {
  private readonly plan: Chain

  constructor(steps: readonly StepSpec[]) {
    this.plan = call((b) => new b.NativePlan(steps))
  }

  push(batch: Batch): Batch[] {
    return call(() => this.plan.push(batch))
  }

  advance(watermark: number): Batch[] {
    return call(() => this.plan.advance(watermark))
  }

  finish(): Batch[] {
    return call(() => this.plan.finish())
  }

  snapshot(): Batch[] {
    return call(() => this.plan.snapshot())
  }

  restore(batch: Batch): void {
    call(() => this.plan.restore(batch))
  }

  takeLate(): Batch[] {
    return call(() => this.plan.takeLate())
  }

  get late(): number {
    return call(() => this.plan.late)
  }

  get finished(): boolean {
    return call(() => this.plan.finished)
  }
}

/** The native engine: every operator of {@link BatchEngine}, run by the Rust addon. */
export const nativeEngine: BatchEngine = {
  name: 'native',
  hashKey,
  tokenize,
  compile: (steps) => new NativeChain(steps),
  hashPartition,
  hashJoin,
  wordcount,
}

/** The rows of `batch` where a boolean expression holds, e.g. `filter(batch, 'x > 3 && x < 10')`. */
export function filter(batch: Batch, expr: string): Batch {
  return ops.filter(nativeEngine, batch, expr)
}

/** `batch` with column `as` (default `x` for numbers, `s` for strings) set to an expression, e.g. `map(batch, 'x * 2 + 1')`. */
export function map(batch: Batch, expr: string, as?: string): Batch {
  return ops.map(nativeEngine, batch, expr, as)
}

/** `{ key, count }` per distinct value of column `key` (default `s`), in first-seen order. */
export function countByKey(batch: Batch, key?: string): Batch {
  return ops.countByKey(nativeEngine, batch, key)
}

/** `{ key, count, sum, min, max, mean }` of column `value` (default `x`) per key (default `s`). */
export function aggregateByKey(batch: Batch, options?: { key?: string; value?: string }): Batch {
  return ops.aggregateByKey(nativeEngine, batch, options)
}

/** Pushes every batch through a fresh native chain and finishes it; returns every output batch. */
export function runChain(steps: readonly StepSpec[], batches: Iterable<Batch>): Batch[] {
  return ops.runChain(nativeEngine, steps, batches)
}
