// Word count of the reference over one whole UTF-8 buffer; mirrors native/src/wordcount.rs.

import { utf8Column } from '../batch.js'
import { NativeBatchError } from '../errors.js'
import type { WordCounts } from '../types.js'
import { words } from './tokenize.js'
import { decoder, utf8ValidUpTo } from './utf8.js'

/** Counts the lowercase words of `text` at least `min` UTF-16 code units long, in first-seen order. */
export function countWords(text: Uint8Array, min: number): WordCounts {
  const valid = utf8ValidUpTo(text, 0, text.length)
  if (valid !== text.length) throw new NativeBatchError('text', valid, 'invalid UTF-8')
  const counts = new Map<string, number>()
  for (const w of words(decoder.decode(text))) {
    if (w.length < min) continue
    counts.set(w, (counts.get(w) ?? 0) + 1)
  }
  return { key: utf8Column([...counts.keys()]), count: Float64Array.from(counts.values()) }
}
