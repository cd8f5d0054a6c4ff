// Program modules: the TypeScript file `lamina run` deploys. The submitter imports it where it is;
// every other peer imports the bundle of it that travelled with the job (code.ts) and builds the
// same program from the same arguments.

import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Layer, Program } from '../../kernel/index.js'
import { ProgramModuleError } from './errors.js'

/** What a program module's factory learns about where it runs. */
export interface ProgramEnvironment {
  /** True in the process that submitted the job (where sinks run and results arrive). */
  readonly submitter: boolean
  /** This peer's id. */
  readonly peer: string
}

/**
 * A program module's default export: builds the program from command-line arguments.
 *
 * ```ts
 * export default (args: readonly string[]) => wordcount({ lines: args[0] ? fileLines(args[0]) : generatedText(), out: print })
 * ```
 */
export type ProgramFactory = (args: readonly string[], environment: ProgramEnvironment) => Program | Promise<Program>

/** What a program module gives: its program, the layers it runs under, and an optional hook. */
export interface LoadedProgram {
  readonly program: Program
  /** The module's `export const layers: Layer[]` (or `export function layers(args)`): every peer stacks them over its kernel. @default [] */
  readonly layers: readonly Layer[]
  /** The module's `export function planned(program)`: called on the submitter with the planned program (e.g. to print a placement explanation). */
  readonly planned: ((program: Program) => void) | undefined
}

/**
 * Imports a program module and builds its program. Throws ProgramModuleError naming the module
 * (`name`, when the URL is a cache file's) and what is wrong.
 */
export async function loadProgram(module: string, args: readonly string[], environment: ProgramEnvironment, name = module): Promise<LoadedProgram> {
  const url = module.startsWith('file:') ? module : pathToFileURL(isAbsolute(module) ? module : resolve(module)).href
  let imported: { default?: unknown; layers?: unknown; planned?: unknown }
  try {
    imported = (await import(url)) as { default?: unknown; layers?: unknown; planned?: unknown }
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    // tsx loads a .ts file outside a package of "type": "module" as CommonJS, which cannot hold an ES module.
    const hint =
      /\.ts$/.test(url) && /require\(\) ES Module|ERR_REQUIRE/.test(`${message} ${(error as { code?: unknown }).code ?? ''}`)
        ? ' (a .ts file outside a package with "type": "module" loads as CommonJS: add {"type": "module"} to the package.json of its directory, or name it .mts)'
        : ''
    throw new ProgramModuleError(name, `cannot be imported: ${message}${hint}`, error)
  }
  if (typeof imported.default !== 'function') throw new ProgramModuleError(name, 'has no default export that builds a program: export default (args) => program(...)')
  const built: unknown = await (imported.default as ProgramFactory)(args, environment)
  if (typeof built !== 'object' || built === null || !Array.isArray((built as Program).operators) || !Array.isArray((built as Program).links)) {
    throw new ProgramModuleError(name, 'its default export did not return a program (use program(name, { operators, links }))')
  }
  // `layers` is an array, or a function of the program's arguments that returns one.
  const layers: unknown =
    typeof imported.layers === 'function'
      ? await (imported.layers as (args: readonly string[], environment: ProgramEnvironment) => unknown)(args, environment)
      : (imported.layers ?? [])
  if (!Array.isArray(layers) || !layers.every((l: unknown) => typeof (l as Layer | undefined)?.name === 'string')) {
    throw new ProgramModuleError(name, 'exports `layers` that is not an array of layers')
  }
  if (imported.planned !== undefined && typeof imported.planned !== 'function') throw new ProgramModuleError(name, 'exports `planned` that is not a function')
  return { program: built as Program, layers: layers as Layer[], planned: imported.planned as ((program: Program) => void) | undefined }
}
