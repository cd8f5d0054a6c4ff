//! Keyed aggregates (count, sum, min, max, mean), kept across batches in first-seen key order.
//!
//! Semantics are those of a JavaScript `Map` updated row by row: numeric keys are compared with
//! SameValueZero (NaN equals NaN, -0 equals +0, and the key is reported as +0); sums add in row
//! order; min and max follow `Math.min`/`Math.max` (NaN wins); mean is sum / count.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::batch::{Col, ColKind, Strs};
use crate::error::{NResult, NativeError};
use crate::expr::{js_max, js_min};
use crate::state::Rows;
use crate::strindex::StrIndex;

/// The index key of a numeric key: its bits with the bytes swapped, a bijection (so keys stay
/// exact) that moves what varies between small integers (the exponent and the top of the
/// mantissa, all in the high bytes of an f64) into the low bytes. FxHash multiplies by an odd
/// constant, which spreads low bits upward but never high bits downward, and the table picks a
/// bucket from the low bits of the hash: with the bits as they are, keys 0..1000 shared a handful
/// of buckets.
#[inline]
fn num_id(x: f64) -> u64 {
    x.to_bits().swap_bytes()
}

/// [`js_min`] with the common case (distinct, neither NaN) as a select the compiler can make
/// branch-free: the comparison of a running minimum with random values mispredicts often.
#[inline(always)]
fn min_of(acc: f64, v: f64) -> f64 {
    let (lt, gt) = (v < acc, v > acc);
    if lt | gt {
        if lt {
            v
        } else {
            acc
        }
    } else {
        js_min(acc, v)
    }
}

/// [`js_max`] the same way as [`min_of`].
#[inline(always)]
fn max_of(acc: f64, v: f64) -> f64 {
    let (lt, gt) = (v < acc, v > acc);
    if lt | gt {
        if gt {
            v
        } else {
            acc
        }
    } else {
        js_max(acc, v)
    }
}

/// Normalizes a numeric key to its SameValueZero class: -0 becomes +0, every NaN the same NaN.
#[inline]
pub fn norm_key(x: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if x.is_nan() {
        f64::NAN
    } else {
        x
    }
}

/// Smallest direct-index table for small integer keys, and how sparse it may get: the table covers
/// keys `0..len` with `len` at most `max(DENSE_MIN, DENSE_SPREAD × distinct keys)` rounded up to a
/// power of two, so its memory stays proportional to the number of keys however they are spread.
const DENSE_MIN: usize = 1024;
const DENSE_SPREAD: usize = 4;

/// Numeric keys: a direct-index table for the non-negative integers below its length (the common
/// case of ids, looked up without hashing, as in DuckDB's "perfect hash" aggregate over small
/// integer ranges) and a hash table for every other key. A key lives in exactly one of the two.
struct NumKeys {
    /// `dense[k]` is the slot of integer key `k` plus one, or 0 when `k` has not been seen.
    dense: Vec<u32>,
    index: FxHashMap<u64, u32>,
    /// Keys by slot, in first-seen order.
    keys: Vec<f64>,
}

impl NumKeys {
    /// `x` as an index into a table of length `len`, when it is an integer in `0..len` (`-0`
    /// included: SameValueZero makes it key 0; NaN and negatives cast to 0 and fail the check).
    #[inline(always)]
    fn dense_at(x: f64, len: usize) -> Option<usize> {
        // Through i64, one instruction on x86-64 (a cast to usize takes a dozen); a negative `i`
        // wraps to a huge u64 and fails the length check.
        let i = x as i64;
        ((i as u64) < len as u64 && i as f64 == x).then_some(i as usize)
    }

    /// Grows the direct-index table to cover `i` if that keeps it within its bound, moving the
    /// keys it now covers out of the hash table. Returns whether `i` is covered.
    fn grow_dense(&mut self, i: usize) -> bool {
        let bound = DENSE_MIN.max(DENSE_SPREAD * (self.keys.len() + 1));
        if i >= bound {
            return false;
        }
        let len = (i + 1).next_power_of_two().clamp(64, bound.next_power_of_two());
        let old = self.dense.len();
        self.dense.resize(len, 0);
        if !self.index.is_empty() {
            let dense = &mut self.dense;
            self.index.retain(|&id, &mut slot| match Self::dense_at(f64::from_bits(id.swap_bytes()), len) {
                Some(k) if k >= old => {
                    dense[k] = slot + 1;
                    false
                }
                _ => true,
            });
        }
        true
    }
}

enum Keys {
    Str(StrIndex),
    Num(NumKeys),
}

/// Per-key aggregate state.
pub struct KeyedAgg {
    keys: Keys,
    with_values: bool,
    count: Vec<f64>,
    /// `[sum, min, max]` of each slot side by side, so adding a row touches one cache line
    /// besides its count (empty without values).
    vals: Vec<[f64; 3]>,
}

impl KeyedAgg {
    /// State for keys of `kind`; `with_values` adds sum, min, max and mean to the count.
    pub fn new(kind: ColKind, with_values: bool) -> Self {
        let keys = match kind {
            ColKind::Utf8 => Keys::Str(StrIndex::new()),
            ColKind::F64 => Keys::Num(NumKeys { dense: Vec::new(), index: FxHashMap::default(), keys: Vec::new() }),
        };
        KeyedAgg { keys, with_values, count: Vec::new(), vals: Vec::new() }
    }

    /// The kind of key column this state was created for.
    pub fn key_kind(&self) -> ColKind {
        match self.keys {
            Keys::Str(_) => ColKind::Utf8,
            Keys::Num(_) => ColKind::F64,
        }
    }

    /// Number of distinct keys so far.
    pub fn len(&self) -> usize {
        self.count.len()
    }

    fn new_slot(&mut self) -> usize {
        self.count.push(0.0);
        if self.with_values {
            self.vals.push([0.0, f64::INFINITY, f64::NEG_INFINITY]);
        }
        self.count.len() - 1
    }

    /// The slot of string key `k`, created on first sight.
    #[inline]
    pub fn slot_str(&mut self, k: &str) -> usize {
        let Keys::Str(index) = &mut self.keys else {
            unreachable!("a string key in numeric-key state (callers check the key kind)")
        };
        match index.slot(k) {
            (slot, false) => slot,
            (_, true) => self.new_slot(),
        }
    }

    /// Counts every word of every row of `text` as a key (tokenize and count fused: the words
    /// are never materialized). State must have string keys and no values.
    pub fn count_words(&mut self, text: &Strs<'_>) {
        let Keys::Str(index) = &mut self.keys else {
            unreachable!("counting words in numeric-key state (callers check the key kind)")
        };
        debug_assert!(!self.with_values, "count_words keeps counts only");
        let offsets = text.offsets();
        index.count_words(&mut self.count, text.text(), offsets, offsets[0]);
    }

    /// The slot of numeric key `x`, created on first sight.
    #[inline]
    pub fn slot_num(&mut self, x: f64) -> usize {
        let Keys::Num(num) = &mut self.keys else {
            unreachable!("a numeric key in string-key state (callers check the key kind)")
        };
        if let Some(i) = NumKeys::dense_at(x, num.dense.len()) {
            let s = num.dense[i];
            if s != 0 {
                return s as usize - 1;
            }
        }
        self.new_num_slot(x)
    }

    /// Looks `x` up in the hash table, or gives it a new slot (out of line: most rows hit).
    #[inline(never)]
    fn new_num_slot(&mut self, x: f64) -> usize {
        let x = norm_key(x);
        let Keys::Num(num) = &mut self.keys else {
            unreachable!("a numeric key in string-key state (callers check the key kind)")
        };
        let small = NumKeys::dense_at(x, usize::MAX).filter(|&i| i < num.dense.len() || num.grow_dense(i));
        let id = num_id(x);
        // A key seen before may have just moved from the hash table into a grown dense table.
        let seen = match small {
            Some(i) => num.dense[i].checked_sub(1),
            None => num.index.get(&id).copied(),
        };
        if let Some(slot) = seen {
            return slot as usize;
        }
        let slot = self.count.len() as u32;
        match small {
            Some(i) => num.dense[i] = slot + 1,
            None => {
                num.index.insert(id, slot);
            }
        }
        num.keys.push(x);
        self.new_slot()
    }

    /// Adds one row to `slot`.
    #[inline(always)]
    pub fn add(&mut self, slot: usize, value: f64) {
        self.count[slot] += 1.0;
        if self.with_values {
            let v = &mut self.vals[slot];
            v[0] += value;
            v[1] = min_of(v[1], value);
            v[2] = max_of(v[2], value);
        }
    }

    /// Adds every row of a batch. `keys` must be of this state's kind and `values` as long.
    pub fn push(&mut self, keys: &Col<'_>, values: Option<&[f64]>) {
        let value = |i: usize| values.map(|v| v[i]).unwrap_or(0.0);
        match keys {
            Col::Utf8(s) => {
                for i in 0..s.len() {
                    let slot = self.slot_str(s.get(i));
                    self.add(slot, value(i));
                }
            }
            Col::F64(v) => {
                for (i, &x) in v.iter().enumerate() {
                    let slot = self.slot_num(x);
                    self.add(slot, value(i));
                }
            }
        }
    }

    /// The result columns: `key`, `count`, and with values `sum`, `min`, `max`, `mean`.
    /// The state as columns `key, count` (and `sum, min, max` with values), keys in slot order,
    /// leaving it unchanged: what a checkpoint keeps (see [`crate::state::Rows`]).
    pub fn snapshot(&self) -> NResult<Vec<(String, Col<'static>)>> {
        let key = match &self.keys {
            Keys::Str(index) => Col::Utf8(index.keys("key")?),
            Keys::Num(num) => Col::F64(Cow::Owned(num.keys.clone())),
        };
        let mut cols = vec![("key".to_string(), key), ("count".to_string(), Col::F64(Cow::Owned(self.count.clone())))];
        if self.with_values {
            for (i, name) in ["sum", "min", "max"].into_iter().enumerate() {
                cols.push((name.to_string(), Col::F64(Cow::Owned(self.vals.iter().map(|v| v[i]).collect()))));
            }
        }
        Ok(cols)
    }

    /// Adds row `row` of a snapshot to the state: its key's count, sum, min and max combine with
    /// what the key has (nothing, on a fresh state; another instance's part, after a rescale).
    /// Returns the key's slot.
    pub fn merge(&mut self, rows: &Rows<'_>, row: usize) -> usize {
        let slot = match rows.keys {
            Col::F64(k) => self.slot_num(k[row]),
            Col::Utf8(s) => self.slot_str(s.get(row)),
        };
        self.count[slot] += rows.count[row];
        if let (true, Some([sum, min, max])) = (self.with_values, rows.values) {
            let v = &mut self.vals[slot];
            v[0] += sum[row];
            v[1] = min_of(v[1], min[row]);
            v[2] = max_of(v[2], max[row]);
        }
        slot
    }

    /// The key of `slot`.
    pub fn key_at(&self, slot: usize) -> KeyRef<'_> {
        match &self.keys {
            Keys::Str(index) => KeyRef::Str(index.key(slot)),
            Keys::Num(num) => KeyRef::Num(num.keys[slot]),
        }
    }

    /// The count of `slot` and its `[sum, min, max]` (zero, +∞, -∞ without values).
    pub fn stats(&self, slot: usize) -> (f64, [f64; 3]) {
        (self.count[slot], self.vals.get(slot).copied().unwrap_or([0.0, f64::INFINITY, f64::NEG_INFINITY]))
    }

    pub fn finish(self) -> NResult<Vec<(String, Col<'static>)>> {
        let key = match self.keys {
            Keys::Str(index) => Col::Utf8(index.finish("key")?),
            Keys::Num(num) => Col::F64(Cow::Owned(num.keys)),
        };
        let mut cols = vec![("key".to_string(), key)];
        if self.with_values {
            let column = |i: usize| -> Vec<f64> { self.vals.iter().map(|v| v[i]).collect() };
            let (sum, min, max) = (column(0), column(1), column(2));
            let mean: Vec<f64> = sum.iter().zip(&self.count).map(|(s, c)| s / c).collect();
            cols.push(("count".to_string(), Col::F64(Cow::Owned(self.count))));
            cols.push(("sum".to_string(), Col::F64(Cow::Owned(sum))));
            cols.push(("min".to_string(), Col::F64(Cow::Owned(min))));
            cols.push(("max".to_string(), Col::F64(Cow::Owned(max))));
            cols.push(("mean".to_string(), Col::F64(Cow::Owned(mean))));
        } else {
            cols.push(("count".to_string(), Col::F64(Cow::Owned(self.count))));
        }
        Ok(cols)
    }
}

/// A key of keyed state, borrowed: a number, or a string's UTF-8 bytes.
#[derive(Clone, Copy)]
pub enum KeyRef<'a> {
    Num(f64),
    Str(&'a [u8]),
}

/// Checks that a key column keeps the kind the state was created with.
pub fn check_key_kind(expected: Option<ColKind>, column: &str, col: &Col<'_>) -> NResult<()> {
    match expected {
        Some(k) if k != col.kind() => Err(NativeError::batch(
            column,
            format!("key column changed kind: earlier batches had {}, this one has {}", k.describe(), col.kind().describe()),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys of every kind the two tables split between, in an order that makes the direct-index
    /// table grow several times past keys already in the hash table.
    fn keys(n: usize) -> Vec<f64> {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        (0..n)
            .map(|i| {
                let r = next();
                match r % 10 {
                    // Spread grows with i, so large integers come first as hashed keys and are
                    // covered by the dense table later.
                    0..=5 => ((r >> 8) % (64 + i as u64 / 2)) as f64,
                    6 => 20_000.0 + (r >> 8) as f64 % 50_000.0,
                    7 => -(((r >> 8) % 100) as f64),
                    8 => ((r >> 8) % 50) as f64 + 0.5,
                    _ => [f64::NAN, -0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 1e300][(r >> 8) as usize % 6],
                }
            })
            .collect()
    }

    #[test]
    fn numeric_keys_count_like_a_js_map() {
        let ks = keys(40_000);
        let mut agg = KeyedAgg::new(ColKind::F64, false);
        for chunk in ks.chunks(1000) {
            agg.push(&Col::F64(Cow::Borrowed(chunk)), None);
        }
        // The reference: first-seen order and counts under SameValueZero, by normalized bits.
        let mut order: Vec<f64> = Vec::new();
        let mut counts: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
        for &k in &ks {
            let k = norm_key(k);
            let c = counts.entry(k.to_bits()).or_insert_with(|| {
                order.push(k);
                0.0
            });
            *c += 1.0;
        }
        let cols = agg.finish().unwrap();
        let (Col::F64(got_keys), Col::F64(got_counts)) = (&cols[0].1, &cols[1].1) else { panic!("numeric columns") };
        assert_eq!(got_keys.len(), order.len());
        for (i, (&g, &want)) in got_keys.iter().zip(&order).enumerate() {
            assert_eq!(g.to_bits(), want.to_bits(), "key {i}");
            assert_eq!(got_counts[i], counts[&want.to_bits()], "count of key {want}");
        }
    }
}
