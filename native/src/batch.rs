//! Columnar batches: the layout that crosses the JS/Rust boundary, its validation, and gathering.
//!
//! A batch is a plain object of equally long columns. A numeric column is a `Float64Array`; a
//! string column is `{ data: Uint8Array, offsets: Uint32Array }` where row `i` is the UTF-8 text
//! `data[offsets[i] .. offsets[i + 1]]` (so `offsets` has one more entry than there are rows).
//! Input columns are borrowed from JavaScript memory; derived columns are owned.

use std::borrow::Cow;

use crate::error::{NResult, NativeError};
use crate::js::{self, Env, Kind, Out, Raw};
use napi::sys::TypedarrayType;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColKind {
    F64,
    Utf8,
}

impl ColKind {
    pub fn describe(self) -> &'static str {
        match self {
            ColKind::F64 => "a Float64Array column",
            ColKind::Utf8 => "a UTF-8 string column",
        }
    }
}

/// A validated UTF-8 string column. Invariant: `offsets` is non-empty, non-decreasing, within
/// `data`, on character boundaries, and `data` between the first and last offset is valid UTF-8.
#[derive(Debug, Clone)]
pub struct Strs<'a> {
    data: Cow<'a, [u8]>,
    offsets: Cow<'a, [u32]>,
}

impl<'a> Strs<'a> {
    /// Checks the invariant; `column` names the column in errors.
    pub fn validate(column: &str, data: Cow<'a, [u8]>, offsets: Cow<'a, [u32]>) -> NResult<Self> {
        let offsets_name = format!("{column}.offsets");
        if offsets.is_empty() {
            return Err(NativeError::batch(&offsets_name, "offsets must have one more entry than there are rows"));
        }
        let n = data.len();
        let mut prev = 0u32;
        for (i, &o) in offsets.iter().enumerate() {
            if o as usize > n {
                return Err(NativeError::batch_at(&offsets_name, i, format!("offset {o} is past the end of data ({n} bytes)")));
            }
            if i > 0 && o < prev {
                return Err(NativeError::batch_at(&offsets_name, i, format!("offsets must not decrease ({prev} then {o})")));
            }
            prev = o;
        }
        let first = offsets[0] as usize;
        let last = offsets[offsets.len() - 1] as usize;
        if let Err(e) = crate::utf8::validate(&data[first..last]) {
            return Err(NativeError::batch_at(&format!("{column}.data"), first + e.valid_up_to(), "invalid UTF-8"));
        }
        for (i, &o) in offsets.iter().enumerate() {
            let o = o as usize;
            if o < n && (data[o] & 0xC0) == 0x80 {
                return Err(NativeError::batch_at(&offsets_name, i, "offset splits a UTF-8 character"));
            }
        }
        Ok(Strs { data, offsets })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Row `i` as text.
    #[inline]
    pub fn get(&self, i: usize) -> &str {
        let a = self.offsets[i] as usize;
        let b = self.offsets[i + 1] as usize;
        // SAFETY: the invariant (checked in `validate`, upheld by `StrBuilder`) makes every row valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.data[a..b]) }
    }

    /// The text of every row, back to back (rows are contiguous: row `i` is
    /// `text()[offsets()[i] - offsets()[0] ..]`).
    #[inline]
    pub fn text(&self) -> &str {
        let a = self.offsets[0] as usize;
        let b = self.offsets[self.offsets.len() - 1] as usize;
        // SAFETY: the invariant makes the data between the first and last offset valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.data[a..b]) }
    }

    /// The offsets: one more than there are rows.
    #[inline]
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Row `i` as bytes.
    #[inline]
    pub fn bytes(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The rows at `idx`, copied into a new column.
    pub fn gather(&self, idx: &[u32]) -> NResult<Strs<'static>> {
        let mut b = StrBuilder::with_capacity(idx.len(), 0);
        for &i in idx {
            b.push(self.get(i as usize));
        }
        b.finish("gathered")
    }

    /// An owned copy (rows rebased to start at offset 0).
    pub fn into_owned(self) -> Strs<'static> {
        match (self.data, self.offsets) {
            (Cow::Owned(d), Cow::Owned(o)) => Strs { data: Cow::Owned(d), offsets: Cow::Owned(o) },
            (d, o) => {
                let base = o[0];
                let end = o[o.len() - 1] as usize;
                let data = d[base as usize..end].to_vec();
                let offsets = o.iter().map(|x| x - base).collect();
                Strs { data: Cow::Owned(data), offsets: Cow::Owned(offsets) }
            }
        }
    }

    /// The JS form `{ data, offsets }`.
    pub fn into_out(self) -> Out {
        let owned = self.into_owned();
        Out::Obj(vec![
            ("data".to_string(), Out::U8(owned.data.into_owned())),
            ("offsets".to_string(), Out::U32(owned.offsets.into_owned())),
        ])
    }
}

/// Appends rows to a new string column.
#[derive(Clone)]
pub struct StrBuilder {
    data: Vec<u8>,
    offsets: Vec<u32>,
    overflow: bool,
}

impl StrBuilder {
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StrBuilder { data: Vec::with_capacity(bytes), offsets, overflow: false }
    }

    /// Appends one row.
    #[inline]
    pub fn push(&mut self, s: &str) {
        self.push_bytes(s.as_bytes());
    }

    /// Appends one row of bytes, which must be valid UTF-8 (callers hold them as text).
    #[inline]
    pub(crate) fn push_bytes(&mut self, b: &[u8]) {
        self.data.extend_from_slice(b);
        self.end_row();
    }

    /// Appends one row of bytes from an iterator; they must be valid UTF-8.
    #[inline]
    pub(crate) fn push_with(&mut self, bytes: impl Iterator<Item = u8>) {
        self.data.extend(bytes);
        self.end_row();
    }

    /// The bytes of row `i` (already closed).
    #[inline]
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Closes the row whose bytes were appended since the last one. The bytes must be valid UTF-8.
    #[inline]
    fn end_row(&mut self) {
        let end = self.data.len();
        if end > u32::MAX as usize {
            self.overflow = true;
        }
        self.offsets.push(end as u32);
    }

    /// The finished column; fails if it grew past what `Uint32Array` offsets can address.
    pub fn finish(self, column: &str) -> NResult<Strs<'static>> {
        if self.overflow {
            return Err(NativeError::batch(column, "output column exceeds 4 GiB of UTF-8 data"));
        }
        Ok(Strs { data: Cow::Owned(self.data), offsets: Cow::Owned(self.offsets) })
    }
}

/// One column of a batch.
#[derive(Debug, Clone)]
pub enum Col<'a> {
    F64(Cow<'a, [f64]>),
    Utf8(Strs<'a>),
}

impl<'a> Col<'a> {
    pub fn kind(&self) -> ColKind {
        match self {
            Col::F64(_) => ColKind::F64,
            Col::Utf8(_) => ColKind::Utf8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Col::F64(v) => v.len(),
            Col::Utf8(s) => s.len(),
        }
    }

    pub fn gather(&self, idx: &[u32]) -> NResult<Col<'static>> {
        Ok(match self {
            Col::F64(v) => Col::F64(Cow::Owned(idx.iter().map(|&i| v[i as usize]).collect())),
            Col::Utf8(s) => Col::Utf8(s.gather(idx)?),
        })
    }

    pub fn into_out(self) -> Out {
        match self {
            Col::F64(v) => Out::F64(v.into_owned()),
            Col::Utf8(s) => s.into_out(),
        }
    }
}

/// A batch: named columns of equal length, in the order JavaScript enumerates them.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    pub cols: Vec<(String, Col<'a>)>,
    pub rows: usize,
}

impl<'a> Batch<'a> {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.cols.iter().position(|(n, _)| n == name)
    }

    pub fn get(&self, name: &str) -> Option<&Col<'a>> {
        self.cols.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// The column `name`, or a batch error saying it is missing or of the wrong kind.
    pub fn require(&self, name: &str, kind: ColKind) -> NResult<&Col<'a>> {
        match self.get(name) {
            None => Err(NativeError::batch(name, "missing column")),
            Some(c) if c.kind() != kind => {
                Err(NativeError::batch(name, format!("expected {}, got {}", kind.describe(), c.kind().describe())))
            }
            Some(c) => Ok(c),
        }
    }

    /// Sets column `name`, replacing a column of that name or appending.
    pub fn set(&mut self, name: &str, col: Col<'a>) {
        match self.index_of(name) {
            Some(i) => self.cols[i].1 = col,
            None => self.cols.push((name.to_string(), col)),
        }
    }

    /// The rows at `idx` of every column.
    pub fn gather(&self, idx: &[u32]) -> NResult<Batch<'static>> {
        let mut cols = Vec::with_capacity(self.cols.len());
        for (name, c) in &self.cols {
            cols.push((name.clone(), c.gather(idx)?));
        }
        Ok(Batch { cols, rows: idx.len() })
    }

    pub fn into_out(self) -> Out {
        Out::Obj(self.cols.into_iter().map(|(n, c)| (n, c.into_out())).collect())
    }
}

fn wrong_type(column: &str, expected: &str, got: Kind) -> NativeError {
    NativeError::batch(column, format!("expected {expected}, got {}", got.describe()))
}

const COLUMN_SHAPE: &str = "a Float64Array or a { data: Uint8Array, offsets: Uint32Array } string column";

enum Pending {
    F64(Raw),
    Utf8 { data: Raw, offsets: Raw },
}

/// Reads a string column `{ data, offsets }` from JavaScript, borrowing its arrays.
///
/// # Safety
/// The returned column borrows JavaScript memory: it must be dropped before any JavaScript runs.
pub unsafe fn decode_utf8_column<'a>(env: Env, v: Raw, column: &str) -> NResult<Strs<'a>> {
    let k = js::kind(env, v)?;
    if k != Kind::Object {
        return Err(wrong_type(column, "a { data: Uint8Array, offsets: Uint32Array } string column", k));
    }
    let data = js::get_named(env, v, "data")?;
    let offsets = js::get_named(env, v, "offsets")?;
    let (data, offsets) = unsafe { borrow_utf8_parts(env, column, data, offsets)? };
    Strs::validate(column, data, offsets)
}

/// The bytes and offsets of a string column, borrowed from JavaScript's memory where possible.
type Utf8Parts<'a> = (Cow<'a, [u8]>, Cow<'a, [u32]>);

unsafe fn borrow_utf8_parts<'a>(env: Env, column: &str, data: Raw, offsets: Raw) -> NResult<Utf8Parts<'a>> {
    let dk = js::kind(env, data)?;
    if dk != Kind::TypedArray(TypedarrayType::uint8_array) {
        return Err(wrong_type(&format!("{column}.data"), "a Uint8Array", dk));
    }
    let ok = js::kind(env, offsets)?;
    if ok != Kind::TypedArray(TypedarrayType::uint32_array) {
        return Err(wrong_type(&format!("{column}.offsets"), "a Uint32Array", ok));
    }
    unsafe { Ok((js::typed_slice::<u8>(env, data)?, js::typed_slice::<u32>(env, offsets)?)) }
}

/// A batch whose properties have been read (getters have run) but whose memory is not borrowed yet.
pub struct PendingBatch {
    columns: Vec<(String, Pending)>,
}

/// Phase one of reading a batch: every property read (which may run a getter) happens here.
pub fn read_batch(env: Env, v: Raw, what: &str) -> NResult<PendingBatch> {
    let k = js::kind(env, v)?;
    if k != Kind::Object {
        return Err(wrong_type(what, "a batch (a plain object of columns)", k));
    }
    let mut columns = Vec::new();
    for name in js::own_keys(env, v)? {
        let value = js::get_named(env, v, &name)?;
        match js::kind(env, value)? {
            Kind::TypedArray(TypedarrayType::float64_array) => columns.push((name, Pending::F64(value))),
            Kind::Object => {
                let data = js::get_named(env, value, "data")?;
                let offsets = js::get_named(env, value, "offsets")?;
                columns.push((name, Pending::Utf8 { data, offsets }));
            }
            other => return Err(wrong_type(&name, COLUMN_SHAPE, other)),
        }
    }
    Ok(PendingBatch { columns })
}

impl PendingBatch {
    /// Phase two: borrows every column in place and validates the batch. No JavaScript runs here.
    ///
    /// # Safety
    /// The returned batch borrows JavaScript memory: it must be dropped before any JavaScript runs.
    pub unsafe fn borrow<'a>(self, env: Env) -> NResult<Batch<'a>> {
        let mut cols = Vec::with_capacity(self.columns.len());
        let mut rows: Option<(usize, String)> = None;
        for (name, p) in self.columns {
            let col = match p {
                Pending::F64(raw) => Col::F64(unsafe { js::typed_slice::<f64>(env, raw)? }),
                Pending::Utf8 { data, offsets } => {
                    let (d, o) = unsafe { borrow_utf8_parts(env, &name, data, offsets)? };
                    Col::Utf8(Strs::validate(&name, d, o)?)
                }
            };
            match &rows {
                None => rows = Some((col.len(), name.clone())),
                Some((n, first)) if *n != col.len() => {
                    return Err(NativeError::batch(&name, format!("has {} rows but column {first:?} has {n}", col.len())));
                }
                _ => {}
            }
            cols.push((name, col));
        }
        Ok(Batch { cols, rows: rows.map(|(n, _)| n).unwrap_or(0) })
    }
}

/// Reads a batch from JavaScript (both phases), borrowing every column in place, and validates it.
///
/// # Safety
/// The returned batch borrows JavaScript memory: it must be dropped before any JavaScript runs.
pub unsafe fn decode_batch<'a>(env: Env, v: Raw, what: &str) -> NResult<Batch<'a>> {
    unsafe { read_batch(env, v, what)?.borrow(env) }
}
