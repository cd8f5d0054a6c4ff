//! Tokenizer: words are maximal runs of `[\p{L}\p{N}]`, lowercased as by `toLowerCase`.
//!
//! The scan classifies 64 bytes at a time into bit masks (word bytes, non-ASCII bytes; SSE2 on
//! x86-64) and finds word boundaries with bit arithmetic, so the branch per byte that a byte loop
//! would mispredict at every word edge is gone (the technique of simdjson's structural indexing).
//! Only non-ASCII characters are decoded one by one, to look them up in the Unicode tables. Words
//! come out as byte spans of the input; [`lower_word`] lowercases one.

use crate::batch::{StrBuilder, Strs};
use crate::error::NResult;
use crate::unicode::{is_word, lower_into};

/// Word bytes (`[0-9A-Za-z]`) and non-ASCII bytes of the 64 bytes at `block`, as bit masks
/// (bit i = byte i).
#[cfg(target_arch = "x86_64")]
#[inline]
fn classify(block: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of x86-64; the loads read 4 × 16 bytes inside `block`.
    unsafe {
        let bias = _mm_set1_epi8(0x80u8 as i8);
        let case = _mm_set1_epi8(0x20);
        let a = _mm_set1_epi8(b'a' as i8);
        let zero = _mm_set1_epi8(b'0' as i8);
        // x - lo < n as unsigned bytes, compared as signed after flipping the top bit.
        let letters = _mm_set1_epi8((26u8 ^ 0x80) as i8);
        let digits = _mm_set1_epi8((10u8 ^ 0x80) as i8);
        let mut word = 0u64;
        let mut high = 0u64;
        for k in 0..4 {
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k) as *const __m128i);
            let alpha = _mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(_mm_or_si128(v, case), a), bias), letters);
            let digit = _mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(v, zero), bias), digits);
            word |= (_mm_movemask_epi8(_mm_or_si128(alpha, digit)) as u16 as u64) << (16 * k);
            high |= (_mm_movemask_epi8(v) as u16 as u64) << (16 * k);
        }
        (word, high)
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn classify(block: &[u8; 64]) -> (u64, u64) {
    let mut word = 0u64;
    let mut high = 0u64;
    for (i, &b) in block.iter().enumerate() {
        word |= (b.is_ascii_alphanumeric() as u64) << i;
        high |= ((b >= 0x80) as u64) << i;
    }
    (word, high)
}

/// Calls `f(start, end)` with the byte span of every word of `text`, in order. A word also ends
/// where a row starts: `row_starts[k] - origin` are byte positions in `text`, ascending (a string
/// column's offsets, with `origin` its first offset), so a column's rows can be scanned as one text.
#[inline]
pub fn for_each_word_span(text: &str, row_starts: &[u32], origin: u32, mut f: impl FnMut(usize, usize)) {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let mut next_row = 0;
    // A word that began in an earlier block: its start.
    let mut open: Option<usize> = None;
    // Word bits that spill into the next block (the tail of a multi-byte word character).
    let mut spill = 0u64;
    let mut base = 0;
    while base < n {
        let (mut word, high) = if base + 64 <= n {
            classify(bytes[base..base + 64].try_into().unwrap_or(&[0; 64]))
        } else {
            let mut tail = [0u8; 64];
            tail[..n - base].copy_from_slice(&bytes[base..]);
            classify(&tail)
        };
        word |= spill;
        spill = 0;
        if high != 0 {
            // Decode each character that starts in this block; a word character marks all its bytes.
            let mut leads = high;
            while leads != 0 {
                let i = leads.trailing_zeros() as usize;
                leads &= leads - 1;
                let p = base + i;
                if (bytes[p] & 0xC0) == 0x80 {
                    continue; // a continuation byte
                }
                let c = text[p..].chars().next().unwrap_or('\u{FFFD}');
                let width = c.len_utf8();
                if is_word(c) {
                    let bits = (1u128 << width) - 1;
                    let shifted = bits << i;
                    word |= shifted as u64;
                    spill |= (shifted >> 64) as u64;
                }
            }
        }
        // Row starts inside this block break words.
        let mut breaks = 0u64;
        while next_row < row_starts.len() && ((row_starts[next_row] - origin) as usize) < base + 64 {
            let at = (row_starts[next_row] - origin) as usize;
            if at >= base {
                breaks |= 1 << (at - base);
            }
            next_row += 1;
        }
        let before = (word << 1) | open.is_some() as u64;
        let ends = before & (!word | breaks);
        let starts = word & (!before | breaks);
        if let Some(start) = open {
            if ends != 0 {
                f(start, base + ends.trailing_zeros() as usize);
                open = None;
            }
        }
        let mut s = starts;
        while s != 0 {
            let i = s.trailing_zeros();
            s &= s - 1;
            let after = ends & ((u64::MAX << i) << 1);
            if after != 0 {
                f(base + i as usize, base + after.trailing_zeros() as usize);
            } else {
                open = Some(base + i as usize);
            }
        }
        base += 64;
    }
    if let Some(start) = open {
        f(start, n);
    }
}

/// True if the word `w` (bytes of word characters) is ASCII, so that lowercasing it is `| 0x20`
/// on every byte (digits already have that bit).
#[inline]
pub fn is_ascii_word(w: &[u8]) -> bool {
    w.is_ascii()
}

/// Appends the lowercase form of the word `w` (a span given by [`for_each_word_span`]) to `out`.
#[inline]
pub fn lower_word(w: &str, out: &mut Vec<u8>) {
    if is_ascii_word(w.as_bytes()) {
        out.extend(w.bytes().map(|b| b | 0x20));
    } else {
        lower_into(w, out);
    }
}

/// Tokenizes every row of `col`: the words, and for each word the row it came from.
pub fn tokenize_column(col: &Strs<'_>, column: &str) -> NResult<(Strs<'static>, Vec<u32>)> {
    let (text, row_starts) = (col.text(), col.offsets());
    let origin = row_starts[0];
    let mut words = StrBuilder::with_capacity(text.len() / 4, text.len());
    let mut rows = Vec::with_capacity(text.len() / 4);
    let mut row = 0usize;
    let mut scratch = Vec::with_capacity(64);
    for_each_word_span(text, row_starts, origin, |a, b| {
        // Rows are contiguous and words come in order: the word's row is the last starting at or before it.
        while row + 1 < row_starts.len() && (row_starts[row + 1] - origin) as usize <= a {
            row += 1;
        }
        scratch.clear();
        lower_word(&text[a..b], &mut scratch);
        // SAFETY: lower_word writes whole UTF-8 encodings of characters only.
        words.push(unsafe { std::str::from_utf8_unchecked(&scratch) });
        rows.push(row as u32);
    });
    Ok((words.finish(column)?, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unicode::to_lower;

    /// The definition, written the slow and obvious way: runs of word characters, each lowercased.
    fn words_by_definition(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        for c in text.chars() {
            let w = if (c as u32) < 0x80 { c.is_ascii_alphanumeric() } else { is_word(c) };
            if w {
                word.push(c);
            } else if !word.is_empty() {
                out.push(to_lower(&word));
                word.clear();
            }
        }
        if !word.is_empty() {
            out.push(to_lower(&word));
        }
        out
    }

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_word_span(text, &[], 0, |a, b| {
            let mut lower = Vec::new();
            lower_word(&text[a..b], &mut lower);
            out.push(String::from_utf8(lower).unwrap());
        });
        out
    }

    const PIECES: [&str; 26] = [
        "",
        " ",
        "a",
        "Ab",
        "ABC",
        "abc",
        "é",
        "É",
        "ΟΔΟΣ",
        "Σ",
        "ς",
        "İ",
        "東京",
        "😀",
        "—",
        "-",
        "9",
        "x2",
        "ǅ",
        "Ἀθῆναι",
        "\u{301}",
        "ß",
        ".",
        "\n",
        "a\u{301}",
        "@[`{/:",
    ];

    #[test]
    fn matches_the_definition() {
        let mut texts = Vec::new();
        for a in PIECES {
            for b in PIECES {
                for c in PIECES {
                    texts.push(format!("{a}{b}{c}"));
                    texts.push(format!("{a} {b}{c}x"));
                }
            }
        }
        texts.push("The quick brown FOX, naïve café — ΟΔΟΣ über straße 2024 r2d2 😀 İstanbul".to_string());
        for t in &texts {
            assert_eq!(words(t), words_by_definition(t), "{t:?}");
        }
    }

    #[test]
    fn matches_the_definition_across_blocks() {
        // Words and multi-byte characters straddling every 64-byte boundary, long words over several blocks.
        let mut state = 12345u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..300 {
            let mut t = String::new();
            while t.len() < 400 {
                let piece = PIECES[next() as usize % PIECES.len()];
                let repeat = if next() % 20 == 0 { 40 } else { 1 };
                for _ in 0..repeat {
                    t.push_str(piece);
                }
            }
            for skip in 0..4 {
                let start = t.char_indices().nth(skip).map(|(i, _)| i).unwrap_or(0);
                assert_eq!(words(&t[start..]), words_by_definition(&t[start..]), "{t:?}");
            }
        }
    }

    #[test]
    fn row_starts_break_words() {
        let rows = [
            "abc",
            "def",
            "",
            "É",
            "ΣΣ",
            "x y",
            "😀z",
            "toolongwordtoolongwordtoolongwordtoolongwordtoolongwordtoolongwordtoolongword",
            "q",
        ];
        let text: String = rows.concat();
        let mut starts = Vec::new();
        let mut at = 0u32;
        for r in rows {
            starts.push(at);
            at += r.len() as u32;
        }
        let mut got = Vec::new();
        for_each_word_span(&text, &starts, 0, |a, b| got.push(to_lower(&text[a..b])));
        let want: Vec<String> = rows.iter().flat_map(|r| words_by_definition(r)).collect();
        assert_eq!(got, want);
    }
}
