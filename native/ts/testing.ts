// Helpers for comparing batches and outcomes in tests: canonical, plain-data forms of both.

import { isUtf8Column, utf8Strings } from './batch.js'
import { NativeBatchError, NativeCoreError, NativeExprError } from './errors.js'
import type { Batch } from './types.js'

/** Characters that have tripped up tokenizers and case mappers; tests mix them into random text. */
export const TRICKY_CHARS: readonly string[] = [
  'Σ',
  'σ',
  'ς',
  'İ',
  'I',
  'ı',
  'i',
  'ß',
  'ẞ',
  'ǅ',
  'ǈ',
  'A',
  'z',
  '0',
  '9',
  '٣',
  '७',
  '০',
  '０',
  '𝟘',
  '𝟗',
  '⑴',
  '½',
  'Ⅻ',
  'ⅻ',
  'ⓐ',
  'Ⓐ',
  '𐐀',
  '𐐨',
  '𝐀',
  '𝒜',
  '𞤀',
  '𖹀',
  'Ᏸ',
  'ꭰ',
  'ʰ',
  'ᴬ',
  'ª',
  'º',
  'µ',
  '\u0345',
  '\u0301',
  '\u0308',
  '\u200d',
  '\u00ad',
  '\ufeff',
  "'",
  '.',
  ':',
  '·',
  '’',
  ' ',
  '\n',
  '\t',
  '-',
  '_',
  ',',
  '😀',
  '👩\u200d💻',
  '中',
  '한',
  'ー',
  'ـ',
]

/** A number as text that tells -0 from 0 and keeps NaN comparable. */
export function numberKey(x: number): string {
  return Object.is(x, -0) ? '-0' : String(x)
}

/**
 * A batch as plain data: each column becomes `['f64', ...numbers as text]` or `['utf8', ...strings]`,
 * so that `toEqual` compares kinds, NaN, -0 and strings exactly.
 */
export function canonical(batch: Batch): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (const [name, column] of Object.entries(batch)) {
    out[name] = isUtf8Column(column) ? ['utf8', ...utf8Strings(column)] : ['f64', ...Array.from(column, numberKey)]
  }
  return out
}

/** What a call did: its result in plain data, or the `code` (and location) of the typed error it threw. */
export type Outcome = { readonly ok: unknown } | { readonly error: { readonly code: string; readonly column?: string; readonly index?: number; readonly position?: number } }

/** Runs `f` and describes its outcome; errors that are not native-core errors are rethrown. */
export function outcome<T>(f: () => T, show: (value: T) => unknown = (v) => v): Outcome {
  let value: T
  try {
    value = f()
  } catch (error) {
    if (!(error instanceof NativeCoreError)) throw error
    if (error instanceof NativeBatchError) {
      return { error: error.index === undefined ? { code: error.code, column: error.column } : { code: error.code, column: error.column, index: error.index } }
    }
    if (error instanceof NativeExprError) return { error: { code: error.code, position: error.position } }
    return { error: { code: error.code } }
  }
  return { ok: show(value) }
}

/** Canonical forms of a list of batches. */
export function canonicalAll(batches: readonly Batch[]): Array<Record<string, string[]>> {
  return batches.map(canonical)
}
