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

enum Keys {
    Str(StrIndex),
    Num { index: FxHashMap<u64, u32>, keys: Vec<f64> },
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
            ColKind::F64 => Keys::Num { index: FxHashMap::default(), keys: Vec::new() },
        };
        KeyedAgg { keys, with_values, count: Vec::new(), vals: Vec::new() }
    }

    /// The kind of key column this state was created for.
    pub fn key_kind(&self) -> ColKind {
        match self.keys {
            Keys::Str(_) => ColKind::Utf8,
            Keys::Num { .. } => ColKind::F64,
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
        let x = norm_key(x);
        let id = num_id(x);
        if let Keys::Num { index, .. } = &self.keys {
            if let Some(&i) = index.get(&id) {
                return i as usize;
            }
        }
        let slot = self.new_slot();
        if let Keys::Num { index, keys } = &mut self.keys {
            index.insert(id, slot as u32);
            keys.push(x);
        }
        slot
    }

    /// Adds one row to `slot`.
    #[inline(always)]
    pub fn add(&mut self, slot: usize, value: f64) {
        self.count[slot] += 1.0;
        if self.with_values {
            let v = &mut self.vals[slot];
            v[0] += value;
            v[1] = js_min(v[1], value);
            v[2] = js_max(v[2], value);
        }
    }

    /// Adds row `row` of `keys` (of this state's kind) with `value`.
    #[inline(always)]
    pub fn add_row(&mut self, keys: &Col<'_>, row: usize, value: f64) {
        let slot = match keys {
            Col::Utf8(s) => self.slot_str(s.get(row)),
            Col::F64(v) => self.slot_num(v[row]),
        };
        self.add(slot, value);
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
    pub fn finish(self) -> NResult<Vec<(String, Col<'static>)>> {
        let key = match self.keys {
            Keys::Str(index) => Col::Utf8(index.finish("key")?),
            Keys::Num { keys, .. } => Col::F64(Cow::Owned(keys)),
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
