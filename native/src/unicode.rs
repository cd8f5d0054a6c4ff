//! Word characters and lowercasing exactly as the JavaScript engine of the building Node does them.
//!
//! Tables come from `native/unicode-tables.mjs` (run by `build.mjs`), which asks Node's own regex
//! engine for `[\p{L}\p{N}]`, `\p{Cased}` and `\p{Case_Ignorable}`, and `toLowerCase` for the case
//! mapping. Final sigma follows ICU (which V8 uses): scanning away from the sigma, a character that
//! is case-ignorable is skipped even when it is also cased (Unicode's prose would count it as cased).

mod tables {
    include!("../generated/unicode_tables.rs");
}

pub use tables::UNICODE_VERSION;

#[inline]
fn in_ranges(table: &[(u32, u32)], c: u32) -> bool {
    // Binary search for the last range starting at or before c.
    let idx = table.partition_point(|&(lo, _)| lo <= c);
    idx > 0 && c <= table[idx - 1].1
}

/// True for characters of the JS regex class `[\p{L}\p{N}]`.
#[inline]
pub fn is_word(c: char) -> bool {
    let c = c as u32;
    if c < 0x80 {
        return (c as u8).is_ascii_alphanumeric();
    }
    in_ranges(tables::WORD, c)
}

/// True for `\p{Cased}`.
pub fn is_cased(c: char) -> bool {
    in_ranges(tables::CASED, c as u32)
}

/// True for `\p{Case_Ignorable}`.
pub fn is_case_ignorable(c: char) -> bool {
    in_ranges(tables::CASE_IGNORABLE, c as u32)
}

const CAPITAL_SIGMA: char = '\u{03A3}';

/// Appends the lowercase form of one character (context-free part of the mapping).
#[inline]
fn push_lower(c: char, out: &mut Vec<u8>) {
    let cp = c as u32;
    if cp < 0x80 {
        out.push((cp as u8).to_ascii_lowercase());
        return;
    }
    let mapped = match tables::LOWER_SINGLE.binary_search_by_key(&cp, |&(k, _)| k) {
        Ok(i) => tables::LOWER_SINGLE[i].1,
        Err(_) => match tables::LOWER_MULTI.iter().find(|(k, _)| *k == cp) {
            Some((_, cps)) => {
                for &m in cps.iter() {
                    push_char(m, out);
                }
                return;
            }
            None => cp,
        },
    };
    push_char(mapped, out);
}

#[inline]
fn push_char(cp: u32, out: &mut Vec<u8>) {
    // Table entries come from valid code points, so this never falls back.
    let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// ICU's test: is there a cased letter in `chars`, skipping case-ignorable characters first?
fn cased_beyond(mut chars: impl Iterator<Item = char>) -> bool {
    for c in chars.by_ref() {
        if is_case_ignorable(c) {
            continue;
        }
        return is_cased(c);
    }
    false
}

/// Appends `String.prototype.toLowerCase` of `s` to `out`.
pub fn lower_into(s: &str, out: &mut Vec<u8>) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| b.to_ascii_lowercase()));
        return;
    }
    for (i, c) in s.char_indices() {
        if c == CAPITAL_SIGMA {
            let before = cased_beyond(s[..i].chars().rev());
            let after = cased_beyond(s[i + c.len_utf8()..].chars());
            if before && !after {
                out.extend_from_slice("\u{03C2}".as_bytes());
            } else {
                out.extend_from_slice("\u{03C3}".as_bytes());
            }
        } else {
            push_lower(c, out);
        }
    }
}

/// `String.prototype.toLowerCase` of `s`.
pub fn to_lower(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    lower_into(s, &mut out);
    // SAFETY: only whole UTF-8 encodings of chars were appended.
    unsafe { String::from_utf8_unchecked(out) }
}

/// The JS `length` of `s`: its number of UTF-16 code units.
#[inline]
pub fn utf16_len(s: &str) -> usize {
    let b = s.as_bytes();
    // Every non-continuation byte starts one code point; 4-byte sequences need two units.
    b.iter().filter(|&&x| (x & 0xC0) != 0x80).count() + b.iter().filter(|&&x| x >= 0xF0).count()
}
