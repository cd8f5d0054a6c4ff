//! Tokenizer: words are maximal runs of `[\p{L}\p{N}]`, lowercased as by `toLowerCase`.

use crate::batch::{StrBuilder, Strs};
use crate::error::NResult;
use crate::unicode::{is_word, lower_into};

/// Calls `f` with every word of `text` (not lowercased), in order.
#[inline]
pub fn for_each_word<'t>(text: &'t str, mut f: impl FnMut(&'t str)) {
    let bytes = text.as_bytes();
    let n = bytes.len();
    let mut i = 0;
    let mut start = usize::MAX;
    while i < n {
        let b = bytes[i];
        let (word, width) = if b < 0x80 {
            (b.is_ascii_alphanumeric(), 1)
        } else {
            // `i` is always on a character boundary here.
            let c = text[i..].chars().next().unwrap_or('\u{FFFD}');
            (is_word(c), c.len_utf8())
        };
        if word {
            if start == usize::MAX {
                start = i;
            }
        } else if start != usize::MAX {
            f(&text[start..i]);
            start = usize::MAX;
        }
        i += width;
    }
    if start != usize::MAX {
        f(&text[start..]);
    }
}

/// Appends the lowercase words of `text` to `out`, one row each; returns how many.
pub fn tokenize_into(text: &str, out: &mut StrBuilder) -> usize {
    let mut count = 0;
    for_each_word(text, |w| {
        lower_into(w, out.buffer());
        out.end_row();
        count += 1;
    });
    count
}

/// Tokenizes every row of `col`: the words, and for each word the row it came from.
pub fn tokenize_column(col: &Strs<'_>, column: &str) -> NResult<(Strs<'static>, Vec<u32>)> {
    let mut words = StrBuilder::with_capacity(col.len() * 4, 0);
    let mut rows = Vec::new();
    for r in 0..col.len() {
        let k = tokenize_into(col.get(r), &mut words);
        rows.extend(std::iter::repeat_n(r as u32, k));
    }
    Ok((words.finish(column)?, rows))
}
