//! Inner hash join of two batches on one key column each.
//!
//! The right side is built into a hash table, the left side probes it. Output rows come in left
//! row order, and for each left row in right row order. Key equality is a JavaScript `Map`'s
//! (strings by content, numbers by SameValueZero, so NaN joins NaN). The output has every left
//! column, then every right column except its key, each renamed `rightPrefix + name`.

use rustc_hash::FxHashMap;

use crate::agg::norm_key;
use crate::batch::{Batch, Col};
use crate::error::{NResult, NativeError};

/// A join's result: the joined batch and, per output row, the left and right row it came from.
pub struct Joined {
    pub batch: Batch<'static>,
    pub left_rows: Vec<u32>,
    pub right_rows: Vec<u32>,
}

/// Joins `left` and `right` where `left[left_key] == right[right_key]`.
pub fn hash_join(left: &Batch<'_>, right: &Batch<'_>, left_key: &str, right_key: &str, right_prefix: &str) -> NResult<Joined> {
    let lk = left.get(left_key).ok_or_else(|| NativeError::batch(left_key, "missing key column on the left"))?;
    let rk = right.get(right_key).ok_or_else(|| NativeError::batch(right_key, "missing key column on the right"))?;
    if lk.kind() != rk.kind() {
        return Err(NativeError::batch(
            right_key,
            format!("key kinds differ: left has {}, right has {}", lk.kind().describe(), rk.kind().describe()),
        ));
    }
    let mut names: Vec<String> = left.cols.iter().map(|(n, _)| n.clone()).collect();
    for (n, _) in &right.cols {
        if n == right_key {
            continue;
        }
        let renamed = format!("{right_prefix}{n}");
        if names.contains(&renamed) {
            return Err(NativeError::BadPlan(format!(
                "join output would have two columns named {renamed:?}; pass a rightPrefix"
            )));
        }
        names.push(renamed);
    }
    let mut left_rows = Vec::new();
    let mut right_rows = Vec::new();
    match (lk, rk) {
        (Col::Utf8(l), Col::Utf8(r)) => {
            let mut table: FxHashMap<&[u8], Vec<u32>> = FxHashMap::default();
            for i in 0..r.len() {
                table.entry(r.bytes(i)).or_default().push(i as u32);
            }
            for i in 0..l.len() {
                if let Some(m) = table.get(l.bytes(i)) {
                    left_rows.extend(std::iter::repeat_n(i as u32, m.len()));
                    right_rows.extend_from_slice(m);
                }
            }
        }
        (Col::F64(l), Col::F64(r)) => {
            let mut table: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
            for (i, &x) in r.iter().enumerate() {
                table.entry(norm_key(x).to_bits()).or_default().push(i as u32);
            }
            for (i, &x) in l.iter().enumerate() {
                if let Some(m) = table.get(&norm_key(x).to_bits()) {
                    left_rows.extend(std::iter::repeat_n(i as u32, m.len()));
                    right_rows.extend_from_slice(m);
                }
            }
        }
        _ => unreachable!("kinds were checked above"),
    }
    let mut cols = Vec::with_capacity(names.len());
    for (n, c) in &left.cols {
        cols.push((n.clone(), c.gather(&left_rows)?));
    }
    for (n, c) in &right.cols {
        if n != right_key {
            cols.push((format!("{right_prefix}{n}"), c.gather(&right_rows)?));
        }
    }
    Ok(Joined { batch: Batch { cols, rows: left_rows.len() }, left_rows, right_rows })
}
