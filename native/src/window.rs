//! Keyed event-time windows, tumbling (slide = size) or sliding, emitted when the watermark passes.
//!
//! Window `k` covers event times `[k·slide, k·slide + size)`. An event at time `t` belongs to every
//! window whose start is `k·slide` for `k = floor(t / slide), floor(t / slide) - 1, …` while the
//! window still contains `t` (computed in f64 exactly as the TypeScript reference does). A window is
//! emitted by `advance(w)` once its end is `<= w`, and by `finish()` at end of input; windows come
//! out in start order, keys in first-seen order within a window. Watermarks only move forward. An
//! event with `t` below the current watermark is late: it is counted in `late` and not aggregated.

use std::borrow::Cow;
use std::collections::VecDeque;

use crate::agg::{check_key_kind, KeyedAgg};
use crate::batch::{Col, ColKind};
use crate::error::{NResult, NativeError};
use crate::state::Rows;

/// Largest number of windows one event may fall into (size / slide).
pub const MAX_WINDOWS_PER_EVENT: f64 = 10_000.0;
/// Event times and time / slide must stay within the integers f64 represents exactly.
pub const MAX_TIME: f64 = 9007199254740992.0;

/// `x.floor()` without a call into libm (x86-64 without SSE4.1 has no rounding instruction, and
/// `floor` was 2% of a window push). Exact for |x| < 2^63; callers keep |x| <= [`MAX_TIME`].
#[inline(always)]
fn floor(x: f64) -> f64 {
    let truncated = x as i64 as f64;
    if truncated > x {
        truncated - 1.0
    } else {
        truncated
    }
}

/// `x` as an integer in the order of the doubles (-0 just below +0): consecutive integers are
/// consecutive doubles, so a binary search over them visits every double in a range.
fn ordered(x: f64) -> i64 {
    let i = x.to_bits() as i64;
    if i < 0 {
        i ^ i64::MAX
    } else {
        i
    }
}

/// The inverse of [`ordered`].
fn unordered(i: i64) -> f64 {
    f64::from_bits((if i < 0 { i ^ i64::MAX } else { i }) as u64)
}

/// How many open windows, from the newest back, a row's time is checked against before the
/// window is computed. Rows arrive nearly in time order, so a late row's window is almost always
/// one of the last few.
const SCAN: usize = 4;

struct Win {
    start: f64,
    /// Windows with `size <= slide` only: every time in `[lo, hi]` falls into this window and no
    /// other, so a row in that range needs no division. Computed when the window opens (see
    /// [`Windows::exact_range`]) and widened by times seen to fall into it alone. This is exact, not
    /// an approximation: `floor(t / slide)` is monotone in `t` (division rounds monotonically), so
    /// every time between two times of one window maps to it too.
    lo: f64,
    hi: f64,
    agg: KeyedAgg,
}

impl Win {
    #[inline(always)]
    fn knows(&self, t: f64) -> bool {
        self.lo <= t && t <= self.hi
    }
}

/// Window state of one keyed window aggregate.
pub struct Windows {
    size: f64,
    slide: f64,
    max_per_event: usize,
    with_values: bool,
    kind: Option<ColKind>,
    watermark: f64,
    /// Rows that arrived below the watermark and were not aggregated.
    pub late: f64,
    /// Open windows in start order. Rows arrive nearly in time order, so the window a row falls
    /// into is almost always the newest or one of the few before it: a sorted deque searched from
    /// the window the last row used beats a tree lookup per row, and closing pops the front.
    open: VecDeque<Win>,
    /// Index into `open` of the window the last row went to.
    hint: usize,
}

impl Windows {
    /// Checks `size` and `slide` (already known to be numbers) and creates empty state.
    pub fn new(size: f64, slide: f64, with_values: bool) -> NResult<Self> {
        if !(size.is_finite() && size > 0.0) {
            return Err(NativeError::BadPlan(format!("window size must be a finite number > 0, got {size}")));
        }
        if !(slide.is_finite() && slide > 0.0) {
            return Err(NativeError::BadPlan(format!("window slide must be a finite number > 0, got {slide}")));
        }
        let per_event = (size / slide).ceil();
        if per_event > MAX_WINDOWS_PER_EVENT {
            return Err(NativeError::BadPlan(format!(
                "window size / slide must be at most {MAX_WINDOWS_PER_EVENT}, got {}",
                size / slide
            )));
        }
        Ok(Windows {
            size,
            slide,
            max_per_event: per_event as usize,
            with_values,
            kind: None,
            watermark: f64::NEG_INFINITY,
            late: 0.0,
            open: VecDeque::new(),
            hint: 0,
        })
    }

    /// Validates a batch's event times before anything is aggregated.
    #[allow(clippy::eq_op, reason = "`t - t` is the finiteness test")]
    pub fn check_times(&self, column: &str, times: &[f64]) -> NResult<()> {
        // One pass for the common case, one division for the whole batch: `|t| / slide` grows
        // with `|t|`, so only the largest `|t|` can be out of range. `t - t` is 0 for a finite `t`
        // and NaN otherwise, and NaN sticks in a sum. Eight independent lanes (the compiler makes
        // them vector registers) instead of one chain of dependent `max`es; a NaN or infinity
        // falls through to the row-by-row pass, which names the first bad row.
        const LANES: usize = 8;
        let (mut top, mut finite) = ([0.0_f64; LANES], [0.0_f64; LANES]);
        let chunks = times.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for j in 0..LANES {
                let a = c[j].abs();
                top[j] = if a > top[j] { a } else { top[j] };
                finite[j] += c[j] - c[j];
            }
        }
        for (j, &t) in rest.iter().enumerate() {
            let a = t.abs();
            top[j] = if a > top[j] { a } else { top[j] };
            finite[j] += t - t;
        }
        let largest = top.iter().fold(0.0_f64, |m, &a| m.max(a));
        let in_range = finite.iter().sum::<f64>() == 0.0 && largest <= MAX_TIME;
        if in_range && largest / self.slide <= MAX_TIME {
            return Ok(());
        }
        for (i, &t) in times.iter().enumerate() {
            if !t.is_finite() {
                return Err(NativeError::batch_at(column, i, format!("event time must be finite, got {t}")));
            }
            if t.abs() > MAX_TIME || (t / self.slide).abs() > MAX_TIME {
                return Err(NativeError::batch_at(column, i, format!("event time {t} is out of range for slide {}", self.slide)));
            }
        }
        Ok(())
    }

    /// Adds a batch. Columns must already be checked (kinds, lengths, [`Self::check_times`]).
    pub fn push(&mut self, key_name: &str, keys: &Col<'_>, values: Option<&[f64]>, times: &[f64]) -> NResult<()> {
        check_key_kind(self.kind, key_name, keys)?;
        let kind = keys.kind();
        self.kind = Some(kind);
        // One loop per key kind, so the row loop does not match on the column for every row.
        match keys {
            Col::F64(k) => self.push_rows(
                kind,
                values,
                times,
                #[inline(always)]
                |agg, row, value| {
                    let slot = agg.slot_num(k[row]);
                    agg.add(slot, value)
                },
            ),
            Col::Utf8(s) => self.push_rows(
                kind,
                values,
                times,
                #[inline(always)]
                |agg, row, value| {
                    let slot = agg.slot_str(s.get(row));
                    agg.add(slot, value)
                },
            ),
        }
        Ok(())
    }

    #[inline(always)]
    fn push_rows(
        &mut self,
        kind: ColKind,
        values: Option<&[f64]>,
        times: &[f64],
        mut add: impl FnMut(&mut KeyedAgg, usize, f64),
    ) {
        let value = |row: usize| values.map_or(0.0, |v| v[row]);
        let ranges = self.max_per_event == 1;
        let mut row = 0;
        'rows: while row < times.len() {
            let t = times[row];
            if t < self.watermark {
                self.late += 1.0;
                row += 1;
                continue;
            }
            if ranges {
                // The window of the last row, then the newest few: a run of rows in one window's
                // known range (nearly every row of in-order input) is added without looking the
                // window up again.
                let newest = self.open.len().saturating_sub(SCAN);
                let found = if self.open.get(self.hint).is_some_and(|w| w.knows(t)) {
                    Some(self.hint)
                } else {
                    (newest..self.open.len()).rev().find(|&at| self.open[at].knows(t))
                };
                if let Some(at) = found {
                    self.hint = at;
                    let watermark = self.watermark;
                    let w = &mut self.open[at];
                    // Rows below the watermark are late even inside the range (it may have risen
                    // since the range was seen).
                    let (lo, hi) = (w.lo.max(watermark), w.hi);
                    add(&mut w.agg, row, value(row));
                    row += 1;
                    while row < times.len() {
                        let t = times[row];
                        if !(lo <= t && t <= hi) {
                            continue 'rows;
                        }
                        add(&mut w.agg, row, value(row));
                        row += 1;
                    }
                    continue;
                }
            }
            let kmax = floor(t / self.slide);
            let mut windows = 0;
            for i in 0..=self.max_per_event {
                let k = kmax - i as f64;
                let start = k * self.slide + 0.0;
                if start + self.size <= t {
                    break;
                }
                if start > t {
                    continue;
                }
                let at = self.window_at(start, kind);
                windows += 1;
                add(&mut self.open[at].agg, row, value(row));
            }
            // Remember that `t` falls into this one window. With `size <= slide` that is nearly
            // always so, but rounding can make neighbouring windows of a fractional size overlap.
            if ranges && windows == 1 {
                let w = &mut self.open[self.hint];
                w.lo = w.lo.min(t);
                w.hi = w.hi.max(t);
            }
            row += 1;
        }
    }

    /// The index in `open` of the window starting at `start`, created in order if new.
    #[inline(always)]
    fn window_at(&mut self, start: f64, kind: ColKind) -> usize {
        if let Some(w) = self.open.get(self.hint) {
            if w.start == start {
                return self.hint;
            }
        }
        let at = match self.open.back() {
            Some(last) if last.start == start => self.open.len() - 1,
            Some(last) if last.start < start => {
                let w = self.new_window(start, kind);
                self.open.push_back(w);
                self.open.len() - 1
            }
            None => {
                let w = self.new_window(start, kind);
                self.open.push_back(w);
                0
            }
            Some(_) => match self.open.binary_search_by(|w| w.start.total_cmp(&start)) {
                Ok(at) => at,
                Err(at) => {
                    let w = self.new_window(start, kind);
                    self.open.insert(at, w);
                    at
                }
            },
        };
        self.hint = at;
        at
    }

    /// An empty window starting at `start`, with its exact range when `size <= slide`.
    fn new_window(&self, start: f64, kind: ColKind) -> Win {
        let (lo, hi) = if self.max_per_event == 1 { self.exact_range(start) } else { (f64::INFINITY, f64::NEG_INFINITY) };
        Win { start, lo, hi, agg: KeyedAgg::new(kind, self.with_values) }
    }

    /// With `size <= slide`: the times `[lo, hi]` that the row loop of `push_rows` puts into the
    /// window starting at `start` and into no other, found by applying its own tests at the
    /// boundaries. Each test is a threshold in `t` (`floor(t / slide)` is monotone, the others are
    /// comparisons), so the set is an interval: from the first time whose window number is `k`,
    /// that is at or after `start` and after the previous window's end, up to the last time before
    /// the next window number and before `start + size`. In-order input then adds row after row
    /// to one window without a division. Empty (`lo > hi`) when a boundary cannot be found.
    fn exact_range(&self, start: f64) -> (f64, f64) {
        let k = (start / self.slide).round();
        let (first, next) = (self.first_time_of(k), self.first_time_of(k + 1.0));
        let previous_end = (k - 1.0) * self.slide + 0.0 + self.size;
        let lo = first.max(start).max(previous_end);
        let end = next.min(start + self.size);
        if first.is_nan() || next.is_nan() || lo >= end || lo.is_nan() {
            return (f64::INFINITY, f64::NEG_INFINITY);
        }
        (lo, end.next_down())
    }

    /// The smallest time `t` with `floor(t / slide) >= k`: a binary search, over the representable
    /// times in their order, of a small interval around `k * slide` (rounding puts the boundary
    /// within a few units in the last place of it, or among the subnormals near 0, where `t / slide`
    /// underflows). NaN if the boundary is not in that interval.
    fn first_time_of(&self, k: f64) -> f64 {
        let at = |t: f64| floor(t / self.slide) >= k;
        let guess = k * self.slide;
        let spread = guess.abs() * f64::EPSILON * 64.0 + 1e-300;
        let (lo, hi) = (guess - spread, guess + spread);
        if at(lo) || !at(hi) {
            return f64::NAN;
        }
        let (mut below, mut above) = (ordered(lo), ordered(hi));
        while above - below > 1 {
            let mid = below + (above - below) / 2;
            if at(unordered(mid)) {
                above = mid;
            } else {
                below = mid;
            }
        }
        unordered(above)
    }

    /// Moves the watermark to `w` (if later) and returns the windows that closed, or `None` when
    /// none did (most watermarks close nothing, and an empty batch costs eight typed arrays).
    pub fn advance(&mut self, w: f64) -> NResult<Option<Vec<(String, Col<'static>)>>> {
        if w > self.watermark {
            self.watermark = w;
        }
        let mut closed = Vec::new();
        while self.open.front().is_some_and(|w| w.start + self.size <= self.watermark) {
            closed.extend(self.open.pop_front());
        }
        if closed.is_empty() {
            return Ok(None);
        }
        self.hint = 0;
        self.emit(closed).map(Some)
    }

    /// Emits every open window (end of input).
    pub fn finish(&mut self) -> NResult<Vec<(String, Col<'static>)>> {
        let all = std::mem::take(&mut self.open).into();
        self.hint = 0;
        self.emit(all)
    }

    /// The kind of key column seen so far, if any input came.
    pub fn key_kind(&self) -> Option<ColKind> {
        self.kind
    }

    /// The open windows as state rows (`key, start, count` and `sum, min, max` with values), in
    /// start order and first-seen key order within a window; the state is unchanged. The
    /// watermark and the late count are not kept: a restored chain starts below every watermark.
    pub fn snapshot(&self) -> NResult<Vec<(String, Col<'static>)>> {
        let mut start = Vec::new();
        let mut parts = Vec::with_capacity(self.open.len());
        for w in &self.open {
            start.extend(std::iter::repeat_n(w.start, w.agg.len()));
            parts.push(w.agg.snapshot()?);
        }
        let names: &[&str] = if self.with_values { &["key", "count", "sum", "min", "max"] } else { &["key", "count"] };
        let mut cols = concat_columns(parts, self.kind.unwrap_or(ColKind::Utf8), names)?;
        cols.insert(1, ("start".to_string(), Col::F64(Cow::Owned(start))));
        Ok(cols)
    }

    /// Adds checked state rows (see [`crate::state`]) to the open windows. Every row is checked
    /// before the state changes: a key column of the other kind than earlier input, or a start
    /// that is not one of this window's starts, fails the call with the state unchanged.
    pub fn restore(&mut self, rows: &Rows<'_>) -> NResult<()> {
        check_key_kind(self.kind, "key", rows.keys)?;
        let starts = rows.start.ok_or_else(|| NativeError::batch("start", "missing column"))?;
        for (i, &s) in starts.iter().enumerate() {
            // Window starts are `k·slide + 0` for a whole `k` (see `push_rows`), computed the same way.
            if (s / self.slide).round() * self.slide + 0.0 != s {
                return Err(NativeError::batch_at(
                    "start",
                    i,
                    format!("{s} is not the start of a window of slide {}", self.slide),
                ));
            }
        }
        let kind = rows.keys.kind();
        self.kind = Some(kind);
        for (row, &s) in starts.iter().enumerate() {
            let at = self.window_at(s, kind);
            self.open[at].agg.merge(rows, row);
        }
        Ok(())
    }

    fn emit(&self, wins: Vec<Win>) -> NResult<Vec<(String, Col<'static>)>> {
        let mut start = Vec::new();
        let mut end = Vec::new();
        let mut parts: Vec<Vec<(String, Col<'static>)>> = Vec::new();
        for w in wins {
            let n = w.agg.len();
            start.extend(std::iter::repeat_n(w.start, n));
            end.extend(std::iter::repeat_n(w.start + self.size, n));
            parts.push(w.agg.finish()?);
        }
        let names: &[&str] = if self.with_values { &["key", "count", "sum", "min", "max", "mean"] } else { &["key", "count"] };
        let mut cols = concat_columns(parts, self.kind.unwrap_or(ColKind::Utf8), names)?;
        cols.insert(1, ("start".to_string(), Col::F64(Cow::Owned(start))));
        cols.insert(2, ("end".to_string(), Col::F64(Cow::Owned(end))));
        Ok(cols)
    }
}

/// Concatenates same-shaped aggregate results whose columns are `names` (or builds the empty
/// shape when there are none).
fn concat_columns(
    parts: Vec<Vec<(String, Col<'static>)>>,
    kind: ColKind,
    names: &[&str],
) -> NResult<Vec<(String, Col<'static>)>> {
    let mut out = Vec::with_capacity(names.len());
    for (ci, name) in names.iter().enumerate() {
        let col = if ci == 0 && kind == ColKind::Utf8 {
            let mut b = crate::batch::StrBuilder::with_capacity(0, 0);
            for p in &parts {
                if let Col::Utf8(s) = &p[ci].1 {
                    for i in 0..s.len() {
                        b.push(s.get(i));
                    }
                }
            }
            Col::Utf8(b.finish(name)?)
        } else {
            let mut v = Vec::new();
            for p in &parts {
                if let Col::F64(x) = &p[ci].1 {
                    v.extend_from_slice(x);
                }
            }
            Col::F64(Cow::Owned(v))
        };
        out.push((name.to_string(), col));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows the row loop's formula puts `t` into (the starts), as `push_rows` computes them.
    fn formula(w: &Windows, t: f64) -> Vec<f64> {
        let kmax = floor(t / w.slide);
        let mut starts = Vec::new();
        for i in 0..=w.max_per_event {
            let start = (kmax - i as f64) * w.slide + 0.0;
            if start + w.size <= t {
                break;
            }
            if start > t {
                continue;
            }
            starts.push(start);
        }
        starts
    }

    #[test]
    fn a_window_range_holds_exactly_the_times_the_formula_gives_it_alone() {
        for (size, slide) in [(1000.0, 1000.0), (0.7, 0.7), (0.1, 0.3), (2.5, 2.5), (0.3, 0.3), (1e-3, 7e-3), (3.0, 3.0)] {
            let w = Windows::new(size, slide, false).unwrap();
            for k in [-1e6, -3.0, -1.0, 0.0, 1.0, 2.0, 7.0, 123_456.0, 9e9] {
                let start = k * slide + 0.0;
                let (lo, hi) = w.exact_range(start);
                assert!(lo <= hi, "size {size} slide {slide} k {k}: empty range");
                // Every time at and near both ends: inside, the formula gives this window alone.
                let mut probes = vec![lo, hi, (lo + hi) / 2.0];
                let (mut a, mut b) = (lo, hi);
                for _ in 0..4 {
                    a = a.next_down();
                    b = b.next_up();
                    probes.extend([a, b]);
                }
                for t in probes {
                    let inside = lo <= t && t <= hi;
                    let alone = formula(&w, t) == vec![start];
                    assert!(
                        !inside || alone,
                        "size {size} slide {slide} k {k} t {t}: in [{lo}, {hi}] but formula gives {:?}",
                        formula(&w, t)
                    );
                }
                // Nearly the whole window (the fast path's reach): rounding takes off a few units
                // in the last place at most.
                assert!(hi - lo >= 0.999 * size, "size {size} slide {slide} k {k}: [{lo}, {hi}] is narrow");
            }
        }
    }
}
