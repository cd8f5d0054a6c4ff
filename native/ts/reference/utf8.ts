// UTF-8 validation of the reference, with the native core's error positions; mirrors native/src/utf8.rs.

/** Decodes text already validated (a BOM is kept, as the native core keeps it). */
export const decoder = new TextDecoder('utf-8', { ignoreBOM: true })

/** Index of the first byte of the first invalid UTF-8 sequence in `bytes[start..end)`, or `end`. */
export function utf8ValidUpTo(bytes: Uint8Array, start: number, end: number): number {
  let i = start
  while (i < end) {
    const b = bytes[i] as number
    if (b < 0x80) {
      i++
      continue
    }
    let need: number
    let lo = 0x80
    let hi = 0xbf
    if (b >= 0xc2 && b <= 0xdf) need = 1
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2
      if (b === 0xe0) lo = 0xa0
      if (b === 0xed) hi = 0x9f
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3
      if (b === 0xf0) lo = 0x90
      if (b === 0xf4) hi = 0x8f
    } else return i
    for (let j = 1; j <= need; j++) {
      if (i + j >= end) return i // the sequence is cut short
      const c = bytes[i + j] as number
      const [l, h] = j === 1 ? [lo, hi] : [0x80, 0xbf]
      if (c < l || c > h) return i
    }
    i += need + 1
  }
  return end
}
