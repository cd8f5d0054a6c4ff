//! The state of a chain's keyed sink as rows, for checkpoints: `snapshot()` gives it, `restore()`
//! takes it back, on a fresh chain after a recovery or split by key over several chains after a
//! rescale (rows of one key restored into one chain merge: counts and sums add, min and max
//! combine).
//!
//! Columns: `key` (strings or numbers, the sink's key column), `start` (window chains only: the
//! window's start), `count`, with values `sum`, `min`, `max`, and for window chains `end` (the
//! window's end: derived for fixed windows, kept for session windows) and `fired` (1 when the
//! key's window has fired and is kept for the allowed lateness, else 0). Window snapshots always
//! have `end` and `fired`; rows without them (an older snapshot of fixed windows) restore as
//! windows that have not fired. A mean is derived, so it is not kept.

use crate::batch::{Batch, Col, ColKind};
use crate::error::{NResult, NativeError};

/// A snapshot's rows, checked: every column present with its kind and length, counts whole and
/// positive, starts and ends finite, fired 0 or 1.
pub struct Rows<'a> {
    pub keys: &'a Col<'a>,
    pub start: Option<&'a [f64]>,
    pub count: &'a [f64],
    pub values: Option<[&'a [f64]; 3]>,
    pub end: Option<&'a [f64]>,
    pub fired: Option<&'a [f64]>,
}

impl<'a> Rows<'a> {
    /// Reads `batch` as the rows of a sink with (`with_values`) or without sum, min and max, and
    /// with window starts (and optionally ends and fired flags) when `windowed`.
    pub fn read(batch: &'a Batch<'a>, with_values: bool, windowed: bool) -> NResult<Rows<'a>> {
        let mut expected = vec!["key"];
        if windowed {
            expected.push("start");
        }
        expected.push("count");
        if with_values {
            expected.extend(["sum", "min", "max"]);
        }
        if windowed {
            expected.extend(["end", "fired"]);
        }
        if let Some((name, _)) = batch.cols.iter().find(|(name, _)| !expected.contains(&name.as_str())) {
            return Err(NativeError::batch(
                name,
                format!("is not a column of this chain's state (its columns: {})", expected.join(", ")),
            ));
        }
        let keys = batch.get("key").ok_or_else(|| NativeError::batch("key", "missing column"))?;
        let f64s = |name: &str| -> NResult<&'a [f64]> {
            match batch.require(name, ColKind::F64)? {
                Col::F64(v) => Ok(v),
                Col::Utf8(_) => Err(NativeError::batch(name, "expected a Float64Array column")),
            }
        };
        let start = if windowed { Some(f64s("start")?) } else { None };
        let count = f64s("count")?;
        let values = if with_values { Some([f64s("sum")?, f64s("min")?, f64s("max")?]) } else { None };
        for (i, &c) in count.iter().enumerate() {
            if !(c >= 1.0 && c.fract() == 0.0 && c <= crate::window::MAX_TIME) {
                return Err(NativeError::batch_at("count", i, format!("must be a whole number of rows >= 1, got {c}")));
            }
        }
        if let Some(start) = start {
            if let Some(i) = start.iter().position(|s| !s.is_finite() || s.abs() > crate::window::MAX_TIME) {
                return Err(NativeError::batch_at("start", i, format!("must be a finite event time, got {}", start[i])));
            }
        }
        let optional = |name: &str| if windowed && batch.get(name).is_some() { f64s(name).map(Some) } else { Ok(None) };
        let end = optional("end")?;
        if let Some(i) = end.and_then(|end| end.iter().position(|e| !e.is_finite())) {
            return Err(NativeError::batch_at(
                "end",
                i,
                format!("must be a finite event time, got {}", end.unwrap_or_default()[i]),
            ));
        }
        let fired = optional("fired")?;
        if let Some(i) = fired.and_then(|fired| fired.iter().position(|&f| f != 0.0 && f != 1.0)) {
            return Err(NativeError::batch_at("fired", i, format!("must be 0 or 1, got {}", fired.unwrap_or_default()[i])));
        }
        Ok(Rows { keys, start, count, values, end, fired })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.count.len()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::window::Windows;

    fn f64s(v: Vec<f64>) -> Col<'static> {
        Col::F64(Cow::Owned(v))
    }

    /// Rows 0..n with keys `i % 7`, times `i * 3 % 100 + i / 4` (out of order), values `i`.
    fn input(from: usize, to: usize) -> (Col<'static>, Vec<f64>, Vec<f64>) {
        let keys = (from..to).map(|i| (i % 7) as f64).collect();
        let times = (from..to).map(|i| ((i * 3) % 100 + i / 4) as f64).collect();
        let values = (from..to).map(|i| i as f64).collect();
        (f64s(keys), values, times)
    }

    fn push(w: &mut Windows, from: usize, to: usize) {
        let (keys, values, times) = input(from, to);
        w.check_times("t", &times).unwrap();
        w.push("k", &keys, Some(&values), &times).unwrap();
    }

    fn as_batch(cols: Vec<(String, Col<'static>)>) -> Batch<'static> {
        let rows = cols[0].1.len();
        Batch { cols, rows }
    }

    #[test]
    fn windows_restored_from_a_snapshot_finish_as_if_never_stopped() {
        for (size, slide) in [(10.0, 10.0), (25.0, 5.0), (0.7, 0.3)] {
            let mut whole = Windows::new(size, slide, 0.0, true).unwrap();
            push(&mut whole, 0, 500);
            whole.advance(60.0).unwrap();
            push(&mut whole, 500, 1000);
            let expected = whole.finish().unwrap();
            assert!(expected[0].1.len() > 50, "the test closes few windows");

            let mut before = Windows::new(size, slide, 0.0, true).unwrap();
            push(&mut before, 0, 500);
            before.advance(60.0).unwrap();
            let snapshot = as_batch(before.snapshot().unwrap());
            // Split by key over two restores, as a rescale would: rows of one key merge.
            let mut after = Windows::new(size, slide, 0.0, true).unwrap();
            let Col::F64(keys) = snapshot.get("key").unwrap() else { panic!("numeric keys") };
            for part in [0.0, 1.0] {
                let rows: Vec<u32> = (0..keys.len() as u32).filter(|&i| (keys[i as usize] < 3.0) == (part == 0.0)).collect();
                let half = snapshot.gather(&rows).unwrap();
                after.restore(&Rows::read(&half, true, true).unwrap()).unwrap();
            }
            // Restored twice, each window's counts and sums double: rows of a key merge.
            let mut twice = Windows::new(size, slide, 0.0, true).unwrap();
            for _ in 0..2 {
                twice.restore(&Rows::read(&snapshot, true, true).unwrap()).unwrap();
            }
            let (once, doubled) = (as_batch(before.finish().unwrap()), as_batch(twice.finish().unwrap()));
            for name in ["count", "sum"] {
                let (Some(Col::F64(a)), Some(Col::F64(b))) = (once.get(name), doubled.get(name)) else { panic!("{name}") };
                assert_eq!(a.iter().map(|x| x * 2.0).collect::<Vec<_>>(), b.to_vec(), "{name}");
            }
            after.advance(60.0).unwrap();
            push(&mut after, 500, 1000);
            // Key order within a window may differ after a split: compare the sorted rows.
            assert_eq!(sorted_rows(after.finish().unwrap()), sorted_rows(expected.clone()), "size {size}, slide {slide}");
        }
    }

    /// Every row of numeric columns as its values' bits, sorted.
    fn sorted_rows(cols: Vec<(String, Col<'static>)>) -> Vec<Vec<u64>> {
        let n = cols[0].1.len();
        let mut rows: Vec<Vec<u64>> = (0..n)
            .map(|i| {
                cols.iter().map(|(_, c)| if let Col::F64(v) = c { v[i].to_bits() } else { panic!("numeric columns") }).collect()
            })
            .collect();
        rows.sort_unstable();
        rows
    }

    #[test]
    fn bad_rows_are_refused_naming_the_column_and_row() {
        let cols = vec![
            ("key".to_string(), f64s(vec![1.0, 2.0])),
            ("start".to_string(), f64s(vec![0.0, 3.0])),
            ("count".to_string(), f64s(vec![1.0, 0.5])),
        ];
        let batch = as_batch(cols);
        let err = Rows::read(&batch, false, true).err().unwrap();
        assert!(format!("{err:?}").contains("count") && format!("{err:?}").contains("0.5"), "{err:?}");

        let cols = vec![
            ("key".to_string(), f64s(vec![1.0, 2.0])),
            ("start".to_string(), f64s(vec![0.0, 3.0])),
            ("count".to_string(), f64s(vec![1.0, 2.0])),
        ];
        let batch = as_batch(cols);
        let mut w = Windows::new(10.0, 10.0, 0.0, false).unwrap();
        let err = w.restore(&Rows::read(&batch, false, true).unwrap()).err().unwrap();
        assert!(format!("{err:?}").contains("not the start of a window"), "{err:?}");
        assert_eq!(format!("{:?}", w.finish().unwrap()[3]), format!("{:?}", ("count".to_string(), f64s(vec![]))));

        let batch = as_batch(vec![
            ("key".to_string(), f64s(vec![1.0])),
            ("count".to_string(), f64s(vec![1.0])),
            ("extra".to_string(), f64s(vec![1.0])),
        ]);
        assert!(format!("{:?}", Rows::read(&batch, false, false).err().unwrap()).contains("extra"));
    }
}
