import { describe, it, expect } from 'vitest'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import * as native from './native.js'
import { NativeCoreUnavailableError, NativePanicError } from './errors.js'

const here = dirname(fileURLToPath(import.meta.url))

function thrown(f: () => unknown): unknown {
  try {
    f()
  } catch (error) {
    return error
  }
  throw new Error('expected a throw')
}

describe('loading the native core', () => {
  it('loads the addon built for this Node', () => {
    expect(native.unicodeVersion()).toBe(process.versions.unicode)
  })

  it('finds the addon under the package root', () => {
    expect(native.nativeAddonPath()).toBe(resolve(here, '..', 'lamina-native.node'))
  })

  it('honours LAMINA_NATIVE_ADDON', () => {
    const before = process.env['LAMINA_NATIVE_ADDON']
    process.env['LAMINA_NATIVE_ADDON'] = '/somewhere/else.node'
    try {
      expect(native.nativeAddonPath()).toBe('/somewhere/else.node')
    } finally {
      if (before === undefined) delete process.env['LAMINA_NATIVE_ADDON']
      else process.env['LAMINA_NATIVE_ADDON'] = before
    }
  })

  it('throws NativeCoreUnavailableError, saying how to build, when the addon is missing', () => {
    const error = thrown(() => native.openNativeCore('/nonexistent/lamina-native.node'))
    expect(error).toBeInstanceOf(NativeCoreUnavailableError)
    const e = error as NativeCoreUnavailableError
    expect(e.code).toBe('ERR_NATIVE_UNAVAILABLE')
    expect(e.name).toBe('NativeCoreUnavailableError')
    expect(e.message).toContain('npm run build:native')
    expect(e.path).toBe('/nonexistent/lamina-native.node')
  })

  it('throws NativeCoreUnavailableError when the file is not a loadable addon', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'lamina-native-')), 'broken.node')
    writeFileSync(path, 'not a shared object')
    const error = thrown(() => native.openNativeCore(path))
    expect(error).toBeInstanceOf(NativeCoreUnavailableError)
    expect((error as NativeCoreUnavailableError).code).toBe('ERR_NATIVE_UNAVAILABLE')
    expect((error as NativeCoreUnavailableError).cause).toBeInstanceOf(Error)
  })

  it('uses only exports that the generated binding.d.ts declares', () => {
    const dts = readFileSync(resolve(here, '..', 'binding.d.ts'), 'utf8')
    for (const name of native.BINDING_EXPORTS) {
      expect(dts).toMatch(new RegExp(`export declare (function|class) ${name}\\b`))
    }
  })
})

describe('panics', () => {
  it('become ERR_NATIVE_PANIC errors with the message, and the addon keeps working', () => {
    const binding = native.loadNativeCore()
    for (let i = 0; i < 100; i++) {
      const error = thrown(() => binding.debugPanic(`boom ${i}`)) as Error & { code: string }
      expect(error.code).toBe('ERR_NATIVE_PANIC')
      expect(error.message).toContain(`boom ${i}`)
    }
    expect(native.hashKey('still alive')).toBe(native.hashKey('still alive'))
    expect(new NativePanicError('x').code).toBe('ERR_NATIVE_PANIC')
  })
})
