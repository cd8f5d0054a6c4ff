//! Hash partitioning: row `i` goes to output `fnv1a_utf16(String(key[i])) % n`.

use crate::batch::{Batch, Col};
use crate::error::{NResult, NativeError};
use crate::hash::{fnv1a_utf16, hash_f64};

/// Most outputs one partition step may have.
pub const MAX_PARTITIONS: f64 = 65_536.0;

/// The partition of every row of `keys`.
pub fn partition_ids(keys: &Col<'_>, n: u32) -> Vec<u32> {
    match keys {
        Col::Utf8(s) => (0..s.len()).map(|i| fnv1a_utf16(s.get(i)) % n).collect(),
        Col::F64(v) => v.iter().map(|&x| hash_f64(x) % n).collect(),
    }
}

/// Splits `batch` into `n` batches by the hash of column `key`.
pub fn partition(batch: &Batch<'_>, key: &str, n: u32) -> NResult<Vec<Batch<'static>>> {
    let keys = batch.get(key).ok_or_else(|| NativeError::batch(key, "missing column"))?;
    let ids = partition_ids(keys, n);
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
    for (row, &p) in ids.iter().enumerate() {
        buckets[p as usize].push(row as u32);
    }
    buckets.iter().map(|rows| batch.gather(rows)).collect()
}
