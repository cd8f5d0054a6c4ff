// The reference tokenizer: words are runs of [\p{L}\p{N}], lowercased; mirrors native/src/tokenize.rs.

const WORD = /[\p{L}\p{N}]+/gu

/** The lowercase words of `text`: maximal runs of `[\p{L}\p{N}]`, each lowercased by `toLowerCase`. */
export function words(text: string): string[] {
  return (text.match(WORD) ?? []).map((w) => w.toLowerCase())
}

/** The words of every string and the index of the string each came from. */
export function tokenizeStrings(strings: readonly string[]): { words: string[]; rows: number[] } {
  const out: string[] = []
  const rows: number[] = []
  strings.forEach((s, r) => {
    for (const w of words(s)) {
      out.push(w)
      rows.push(r)
    }
  })
  return { words: out, rows }
}
