//! Word count over one whole text buffer in a single call: the upper bound for the fused chain
//! `[tokenize, filter len(s) >= minLength, count]` (same words, same order, same counts).

use crate::batch::Col;
use crate::error::{NResult, NativeError};
use crate::strindex::StrIndex;
use crate::tokenize::{for_each_word_span, lower_word};
use crate::unicode::utf16_len;

/// Counts the lowercase words of `text` whose UTF-16 length is at least `min_length`.
pub fn wordcount(text: &[u8], min_length: usize) -> NResult<Vec<(String, Col<'static>)>> {
    let text = crate::utf8::validate(text).map_err(|e| NativeError::batch_at("text", e.valid_up_to(), "invalid UTF-8"))?;
    let mut index = StrIndex::new();
    let mut counts: Vec<f64> = Vec::new();
    if min_length == 0 {
        index.count_words(&mut counts, text, &[], 0);
    } else {
        let mut scratch = Vec::with_capacity(64);
        for_each_word_span(text, &[], 0, |a, b| {
            scratch.clear();
            lower_word(&text[a..b], &mut scratch);
            // SAFETY: lower_word writes whole UTF-8 encodings of characters only.
            let word = unsafe { std::str::from_utf8_unchecked(&scratch) };
            if utf16_len(word) >= min_length {
                match index.slot(word) {
                    (_, true) => counts.push(1.0),
                    (i, false) => counts[i] += 1.0,
                }
            }
        });
    }
    Ok(vec![
        ("key".to_string(), Col::Utf8(index.finish("key")?)),
        ("count".to_string(), Col::F64(std::borrow::Cow::Owned(counts))),
    ])
}
