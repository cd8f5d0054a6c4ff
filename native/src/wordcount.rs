//! Word count over one whole text buffer in a single call: the upper bound for the fused chain
//! `[tokenize, filter len(s) >= minLength, count]` (same words, same order, same counts).

use rustc_hash::FxHashMap;

use crate::batch::{Col, StrBuilder};
use crate::error::{NResult, NativeError};
use crate::tokenize::for_each_word;
use crate::unicode::{lower_into, utf16_len};

/// Counts the lowercase words of `text` whose UTF-16 length is at least `min_length`.
pub fn wordcount(text: &[u8], min_length: usize) -> NResult<Vec<(String, Col<'static>)>> {
    let text = std::str::from_utf8(text).map_err(|e| NativeError::batch_at("text", e.valid_up_to(), "invalid UTF-8"))?;
    let mut index: FxHashMap<Box<str>, u32> = FxHashMap::default();
    let mut keys = StrBuilder::with_capacity(0, 0);
    let mut counts: Vec<f64> = Vec::new();
    let mut word = Vec::with_capacity(64);
    for_each_word(text, |w| {
        word.clear();
        lower_into(w, &mut word);
        // SAFETY: lower_into writes whole UTF-8 characters only.
        let lw = unsafe { std::str::from_utf8_unchecked(&word) };
        if min_length > 0 && utf16_len(lw) < min_length {
            return;
        }
        match index.get(lw) {
            Some(&i) => counts[i as usize] += 1.0,
            None => {
                index.insert(lw.into(), counts.len() as u32);
                keys.push(lw);
                counts.push(1.0);
            }
        }
    });
    Ok(vec![
        ("key".to_string(), Col::Utf8(keys.finish("key")?)),
        ("count".to_string(), Col::F64(std::borrow::Cow::Owned(counts))),
    ])
}
