import { describe, it, expect } from 'vitest'
import fc from 'fast-check'

import * as native from './native.js'
import * as reference from './reference.js'
import { utf8Column, utf8Strings } from './batch.js'
import { TRICKY_CHARS } from './testing.js'

const unit = fc.oneof(
  { arbitrary: fc.constantFrom(...TRICKY_CHARS), weight: 5 },
  { arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }), weight: 3 },
)
/** Random text rich in letters, digits, marks and case-sensitive characters from every plane. */
const unicodeText = fc.string({ unit, maxLength: 40 })

function each(from: number, to: number): string[] {
  const out: string[] = []
  for (let c = from; c <= to; c++) if (c < 0xd800 || c > 0xdfff) out.push(String.fromCodePoint(c))
  return out
}

describe('tokenize', () => {
  it('agrees with [\\p{L}\\p{N}]+ and toLowerCase for every code point', () => {
    const chars = each(0, 0x10ffff)
    const { words, rows } = native.tokenize(utf8Column(chars))
    const got = utf8Strings(words)
    const wordRe = /^[\p{L}\p{N}]$/u
    const mismatches: string[] = []
    let w = 0
    for (let r = 0; r < chars.length && mismatches.length < 20; r++) {
      const c = chars[r] as string
      if (!wordRe.test(c)) continue
      if (rows[w] !== r || got[w] !== c.toLowerCase()) {
        mismatches.push(`U+${(c.codePointAt(0) as number).toString(16)}: got ${JSON.stringify(got[w])} at row ${rows[w]}`)
      }
      w++
    }
    expect(mismatches).toEqual([])
    expect(got.length).toBe(w)
  })

  it('lowercases final sigma exactly as toLowerCase in every context of cased and case-ignorable characters', () => {
    const contextual = each(0, 0x10ffff).filter((c) => /\p{Cased}|\p{Case_Ignorable}/u.test(c))
    const rows: string[] = []
    for (const c of contextual) rows.push(`${c}Σ`, `Σ${c}`, `A${c}Σ`, `AΣ${c}`, `AΣ${c}b`, `${c}ΣΣ${c}`)
    const n = native.tokenize(utf8Column(rows))
    const r = reference.tokenize(utf8Column(rows))
    expect(utf8Strings(n.words)).toEqual(utf8Strings(r.words))
    expect(Array.from(n.rows)).toEqual(Array.from(r.rows))
  })

  it('matches the reference on random unicode text', () => {
    fc.assert(
      fc.property(fc.array(unicodeText, { maxLength: 12 }), (texts) => {
        const column = utf8Column(texts)
        const n = native.tokenize(column)
        const r = reference.tokenize(column)
        expect(utf8Strings(n.words)).toEqual(utf8Strings(r.words))
        expect(Array.from(n.rows)).toEqual(Array.from(r.rows))
      }),
      { numRuns: 500 },
    )
  })

  it('handles empty columns, empty rows and very long words', () => {
    expect(utf8Strings(native.tokenize(utf8Column([])).words)).toEqual([])
    expect(utf8Strings(native.tokenize(utf8Column(['', '', ''])).words)).toEqual([])
    const long = 'Σ'.repeat(50_000) + 'ab'.repeat(100_000)
    expect(utf8Strings(native.tokenize(utf8Column([long, long])).words)).toEqual([long.toLowerCase(), long.toLowerCase()])
  })

  it('reads offsets that do not start at zero (a column sliced from a larger buffer)', () => {
    const base = utf8Column(['skip me', 'Hello World', 'and me'])
    const column = { data: base.data, offsets: base.offsets.subarray(1, 3) }
    expect(utf8Strings(native.tokenize(column).words)).toEqual(['hello', 'world'])
    expect(utf8Strings(reference.tokenize(column).words)).toEqual(['hello', 'world'])
  })

  it('keeps a leading byte order mark as text (not a word character)', () => {
    expect(utf8Strings(native.tokenize(utf8Column(['\ufeffWord'])).words)).toEqual(['word'])
  })
})

describe('lower(s) in expressions', () => {
  it('matches toLowerCase on whole random strings', () => {
    fc.assert(
      fc.property(fc.array(unicodeText, { maxLength: 10 }), (texts) => {
        const batch = { s: utf8Column(texts) }
        const n = native.map(batch, 'lower(s)', 'l')
        expect(utf8Strings(n['l'] as native.Utf8Column)).toEqual(texts.map((t) => utf8Strings(utf8Column([t]))[0]?.toLowerCase()))
      }),
      { numRuns: 300 },
    )
  })
})
