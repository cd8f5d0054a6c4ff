//! Keyed event-time windows, emitted when the watermark passes: fixed windows (tumbling, slide =
//! size, or sliding) in [`Windows`], session windows in [`Sessions`]. Both follow the kernel's
//! TypeScript window operator (kernel/operators/window.ts), which is the specification.
//!
//! Window `k` of a fixed assigner covers event times `[k·slide, k·slide + size)`. An event at time
//! `t` belongs to every window whose start is `k·slide` for `k = floor(t / slide)`, then `k - 1`,
//! … while the window still contains `t` (computed in f64 exactly as the TypeScript reference
//! does). A session window of an event is `[t, t + gap)`, merged with every window of its key it
//! overlaps.
//!
//! When the watermark `W` rises (`advance(w)`; watermarks only move forward), every window with
//! `end <= W` fires once, its rows marked `late = 0`; a window is kept until `W >= end +
//! allowedLatenessMs`. An event with `t < W - allowedLatenessMs` is late: it is counted in `late`,
//! its row is listed in `late_rows` (the chain hands those rows back, see `NativePlan.takeLate`),
//! and no window takes it. An event within the allowed lateness whose (key's) window has fired
//! updates it and fires it again at once: `push` returns those rows, marked `late = 1`. `finish()`
//! fires every window not fired yet. Fixed windows come out in start order, keys in first-seen
//! order within a window; session windows key by key (first-seen order of the keys that have
//! windows), each key's windows in start order.
//!
//! Output columns: `key, start, end, count`, with values `sum, min, max, mean`, then `late`.

use std::borrow::Cow;
use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::agg::{check_key_kind, norm_key, KeyRef, KeyedAgg};
use crate::batch::{Col, ColKind, StrBuilder};
use crate::error::{NResult, NativeError};
use crate::expr::{js_max, js_min};
use crate::state::Rows;

/// Columns of a batch of windows (fired or as state).
type Cols = Vec<(String, Col<'static>)>;

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
    /// The window has fired, for every key: one that comes later (within the allowed lateness)
    /// fires it again at once, as window.ts's panes do.
    pane_fired: bool,
    /// After a restore only, in a window that has not fired as a whole: the keys (slots of `agg`)
    /// whose window fired (slot `s` did when `fired[s]`; slots past the end did not).
    fired: Vec<bool>,
}

impl Win {
    #[inline(always)]
    fn knows(&self, t: f64) -> bool {
        self.lo <= t && t <= self.hi
    }

    fn has_fired(&self, slot: usize) -> bool {
        self.pane_fired || self.fired.get(slot).copied().unwrap_or(false)
    }

    /// Sets whether `slot` has fired.
    fn set_fired(&mut self, slot: usize, fired: bool) {
        if fired && self.fired.len() <= slot {
            self.fired.resize(slot + 1, false);
        }
        if let Some(f) = self.fired.get_mut(slot) {
            *f = fired;
        }
    }
}

/// Window state of one keyed fixed-window (tumbling or sliding) aggregate.
pub struct Windows {
    size: f64,
    slide: f64,
    lateness: f64,
    max_per_event: usize,
    with_values: bool,
    kind: Option<ColKind>,
    watermark: f64,
    /// Rows that arrived later than the allowed lateness and were not aggregated.
    pub late: f64,
    /// The rows of the pushes since the last [`Self::take_late_rows`] that were late.
    late_rows: Vec<u32>,
    /// Windows in start order, open or fired and kept for the allowed lateness. Rows arrive nearly
    /// in time order, so the window a row falls into is almost always the newest or one of the few
    /// before it: a sorted deque searched from the window the last row used beats a tree lookup
    /// per row, and closing pops the front.
    open: VecDeque<Win>,
    /// Index into `open` of the window the last row went to.
    hint: usize,
}

/// Checks the allowed lateness of a window step.
fn check_lateness(lateness: f64) -> NResult<()> {
    if !(lateness.is_finite() && lateness >= 0.0) {
        return Err(NativeError::BadPlan(format!("window allowedLatenessMs must be a finite number >= 0, got {lateness}")));
    }
    Ok(())
}

impl Windows {
    /// Checks `size`, `slide` and `lateness` (already known to be numbers) and creates empty state.
    pub fn new(size: f64, slide: f64, lateness: f64, with_values: bool) -> NResult<Self> {
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
        check_lateness(lateness)?;
        Ok(Windows {
            size,
            slide,
            lateness,
            max_per_event: per_event as usize,
            with_values,
            kind: None,
            watermark: f64::NEG_INFINITY,
            late: 0.0,
            late_rows: Vec::new(),
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
    /// Returns the windows that rows within the allowed lateness fired again, if any.
    pub fn push(&mut self, key_name: &str, keys: &Col<'_>, values: Option<&[f64]>, times: &[f64]) -> NResult<Option<Cols>> {
        check_key_kind(self.kind, key_name, keys)?;
        let kind = keys.kind();
        self.kind = Some(kind);
        // One loop per key kind, so the row loop does not match on the column for every row.
        let refired = match keys {
            Col::F64(k) => self.push_rows(
                kind,
                values,
                times,
                #[inline(always)]
                |agg, row, value| {
                    let slot = agg.slot_num(k[row]);
                    agg.add(slot, value);
                    slot
                },
            ),
            Col::Utf8(s) => self.push_rows(
                kind,
                values,
                times,
                #[inline(always)]
                |agg, row, value| {
                    let slot = agg.slot_str(s.get(row));
                    agg.add(slot, value);
                    slot
                },
            ),
        };
        refired.map(OutRows::finish).transpose()
    }

    /// The late rows of the pushes since the last call (indices into each push's batch).
    pub fn take_late_rows(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.late_rows)
    }

    #[inline(always)]
    fn push_rows(
        &mut self,
        kind: ColKind,
        values: Option<&[f64]>,
        times: &[f64],
        mut add: impl FnMut(&mut KeyedAgg, usize, f64) -> usize,
    ) -> Option<OutRows> {
        let value = |row: usize| values.map_or(0.0, |v| v[row]);
        let ranges = self.max_per_event == 1;
        let late_below = self.watermark - self.lateness;
        let mut refired = None;
        let mut row = 0;
        'rows: while row < times.len() {
            let t = times[row];
            if t < self.watermark {
                // Behind the watermark: late, or within the allowed lateness (the slow path, off
                // the loop's usual way).
                if t < late_below {
                    self.late += 1.0;
                    self.late_rows.push(row as u32);
                } else {
                    self.add_behind(kind, row, t, value(row), &mut add, &mut refired);
                }
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
                    // Rows below the watermark are not for this loop even inside the range (it may
                    // have risen since the range was seen). Rows at or above it never fall into a
                    // window that fired: its end is at most the watermark.
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
        refired
    }

    /// Adds a row behind the watermark but within the allowed lateness to every window containing
    /// it (newest first, as the row loop does); a window that had fired (for this key, or as a whole)
    /// fires again for the key.
    #[inline(never)]
    fn add_behind(
        &mut self,
        kind: ColKind,
        row: usize,
        t: f64,
        value: f64,
        add: &mut impl FnMut(&mut KeyedAgg, usize, f64) -> usize,
        refired: &mut Option<OutRows>,
    ) {
        let kmax = floor(t / self.slide);
        for i in 0..=self.max_per_event {
            let start = (kmax - i as f64) * self.slide + 0.0;
            if start + self.size <= t {
                break;
            }
            if start > t {
                continue;
            }
            let at = self.window_at(start, kind);
            let with_values = self.with_values;
            let end = start + self.size;
            let w = &mut self.open[at];
            let slot = add(&mut w.agg, row, value);
            if w.has_fired(slot) {
                refired.get_or_insert_with(|| OutRows::new(kind, with_values)).push_slot(&w.agg, slot, start, end, true);
            }
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
        Win { start, lo, hi, agg: KeyedAgg::new(kind, self.with_values), pane_fired: false, fired: Vec::new() }
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

    /// Moves the watermark to `w` (if later), fires every window with `end <= w` (the keys of it
    /// that have not fired) and drops those past the allowed lateness. Returns the rows fired, or
    /// `None` when none did (most watermarks close nothing, and an empty batch costs nine typed
    /// arrays).
    pub fn advance(&mut self, w: f64) -> NResult<Option<Cols>> {
        if w > self.watermark {
            self.watermark = w;
        }
        let watermark = self.watermark;
        let firing = self.open.iter().take_while(|w| w.start + self.size <= watermark).count();
        if firing == 0 {
            return Ok(None);
        }
        let gone = self.open.iter().take(firing).take_while(|w| w.start + self.size + self.lateness <= watermark).count();
        if gone == firing && self.open.iter().take(firing).all(|w| !w.pane_fired && w.fired.is_empty()) {
            // The usual case: the windows fire once and go (no allowed lateness).
            let closed: Vec<Win> = self.open.drain(..firing).collect();
            self.hint = 0;
            return self.emit(closed).map(Some);
        }
        let mut out = OutRows::new(self.kind.unwrap_or(ColKind::Utf8), self.with_values);
        for w in self.open.iter_mut().take(firing).filter(|w| !w.pane_fired) {
            out.push_unfired(w, self.size);
            w.pane_fired = true;
            w.fired = Vec::new();
        }
        if gone > 0 {
            self.open.drain(..gone);
            self.hint = 0;
        }
        if out.len() == 0 {
            return Ok(None);
        }
        out.finish().map(Some)
    }

    /// Fires every window not fired yet (end of input).
    pub fn finish(&mut self) -> NResult<Cols> {
        let all: Vec<Win> = std::mem::take(&mut self.open).into();
        self.hint = 0;
        if all.iter().all(|w| !w.pane_fired && w.fired.is_empty()) {
            return self.emit(all);
        }
        let mut out = OutRows::new(self.kind.unwrap_or(ColKind::Utf8), self.with_values);
        for w in &all {
            out.push_unfired(w, self.size);
        }
        out.finish()
    }

    /// The kind of key column seen so far, if any input came.
    pub fn key_kind(&self) -> Option<ColKind> {
        self.kind
    }

    /// The windows as state rows (`key, start, count`, `sum, min, max` with values, then `end`
    /// and `fired` 0 or 1), in start order and first-seen key order within a window; the state is
    /// unchanged. The watermark and the late count are not kept: a restored chain starts below
    /// every watermark.
    pub fn snapshot(&self) -> NResult<Cols> {
        let mut start = Vec::new();
        let mut fired = Vec::new();
        let mut parts = Vec::with_capacity(self.open.len());
        for w in &self.open {
            start.extend(std::iter::repeat_n(w.start, w.agg.len()));
            fired.extend((0..w.agg.len()).map(|slot| if w.has_fired(slot) { 1.0 } else { 0.0 }));
            parts.push(w.agg.snapshot()?);
        }
        let names: &[&str] = if self.with_values { &["key", "count", "sum", "min", "max"] } else { &["key", "count"] };
        let mut cols = concat_columns(parts, self.kind.unwrap_or(ColKind::Utf8), names)?;
        let end = start.iter().map(|s| s + self.size).collect();
        cols.insert(1, ("start".to_string(), Col::F64(Cow::Owned(start))));
        cols.push(("end".to_string(), Col::F64(Cow::Owned(end))));
        cols.push(("fired".to_string(), Col::F64(Cow::Owned(fired))));
        Ok(cols)
    }

    /// Adds checked state rows (see [`crate::state`]) to the windows. Every row is checked before
    /// the state changes: a key column of the other kind than earlier input, a start that is not
    /// one of this window's starts, or an end other than start + size, fails the call with the
    /// state unchanged. Without `end` and `fired` (rows of an older snapshot) a window's end is
    /// derived and its rows have not fired. A key's window fired only if both what it had and the
    /// row say so (so nothing restored goes unfired); a window fired as a whole when all its keys
    /// did (as window.ts's `loadState` decides for a pane).
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
            if let Some(end) = rows.end {
                if end[i] != s + self.size {
                    return Err(NativeError::batch_at(
                        "end",
                        i,
                        format!("{} is not the end of a window of size {} starting at {s}", end[i], self.size),
                    ));
                }
            }
        }
        let kind = rows.keys.kind();
        self.kind = Some(kind);
        for (row, &s) in starts.iter().enumerate() {
            let at = self.window_at(s, kind);
            let w = &mut self.open[at];
            if w.pane_fired {
                w.pane_fired = false;
                w.fired = vec![true; w.agg.len()];
            }
            let before = w.agg.len();
            let slot = w.agg.merge(rows, row);
            let fired = rows.fired.is_some_and(|f| f[row] == 1.0);
            w.set_fired(slot, fired && (slot >= before || w.has_fired(slot)));
        }
        for w in self.open.iter_mut() {
            if !w.fired.is_empty() && w.fired.len() == w.agg.len() && w.fired.iter().all(|&f| f) {
                w.pane_fired = true;
                w.fired = Vec::new();
            }
        }
        Ok(())
    }

    /// The rows of windows firing for the first time, consumed (the fast path: no key has fired).
    fn emit(&self, wins: Vec<Win>) -> NResult<Cols> {
        let mut start = Vec::new();
        let mut end = Vec::new();
        let mut parts: Vec<Cols> = Vec::new();
        for w in wins {
            let n = w.agg.len();
            start.extend(std::iter::repeat_n(w.start, n));
            end.extend(std::iter::repeat_n(w.start + self.size, n));
            parts.push(w.agg.finish()?);
        }
        let names: &[&str] = if self.with_values { &["key", "count", "sum", "min", "max", "mean"] } else { &["key", "count"] };
        let mut cols = concat_columns(parts, self.kind.unwrap_or(ColKind::Utf8), names)?;
        let late = vec![0.0; start.len()];
        cols.insert(1, ("start".to_string(), Col::F64(Cow::Owned(start))));
        cols.insert(2, ("end".to_string(), Col::F64(Cow::Owned(end))));
        cols.push(("late".to_string(), Col::F64(Cow::Owned(late))));
        Ok(cols)
    }
}

/// Fired windows built row by row (late firings, windows kept for the allowed lateness, session
/// windows), in the columns of [`Windows::advance`]'s batches.
struct OutRows {
    keys: KeyCol,
    with_values: bool,
    start: Vec<f64>,
    end: Vec<f64>,
    count: Vec<f64>,
    sum: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    late: Vec<f64>,
}

/// A key column being built.
enum KeyCol {
    Num(Vec<f64>),
    Str(StrBuilder),
}

impl KeyCol {
    fn new(kind: ColKind) -> Self {
        match kind {
            ColKind::F64 => KeyCol::Num(Vec::new()),
            ColKind::Utf8 => KeyCol::Str(StrBuilder::with_capacity(0, 0)),
        }
    }

    fn push(&mut self, key: KeyRef<'_>) {
        match (self, key) {
            (KeyCol::Num(v), KeyRef::Num(x)) => v.push(x),
            (KeyCol::Str(b), KeyRef::Str(s)) => b.push_bytes(s),
            _ => unreachable!("a key of the other kind (callers check the key kind)"),
        }
    }

    fn finish(self) -> NResult<Col<'static>> {
        Ok(match self {
            KeyCol::Num(v) => Col::F64(Cow::Owned(v)),
            KeyCol::Str(b) => Col::Utf8(b.finish("key")?),
        })
    }
}

impl OutRows {
    fn new(kind: ColKind, with_values: bool) -> Self {
        OutRows {
            keys: KeyCol::new(kind),
            with_values,
            start: Vec::new(),
            end: Vec::new(),
            count: Vec::new(),
            sum: Vec::new(),
            min: Vec::new(),
            max: Vec::new(),
            late: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.start.len()
    }

    fn push(&mut self, key: KeyRef<'_>, start: f64, end: f64, count: f64, [sum, min, max]: [f64; 3], late: bool) {
        self.keys.push(key);
        self.start.push(start);
        self.end.push(end);
        self.count.push(count);
        if self.with_values {
            self.sum.push(sum);
            self.min.push(min);
            self.max.push(max);
        }
        self.late.push(if late { 1.0 } else { 0.0 });
    }

    /// A row of key `slot` of a fixed window.
    fn push_slot(&mut self, agg: &KeyedAgg, slot: usize, start: f64, end: f64, late: bool) {
        let (count, vals) = agg.stats(slot);
        self.push(agg.key_at(slot), start, end, count, vals, late);
    }

    /// The keys of a fixed window that have not fired, in slot order.
    fn push_unfired(&mut self, w: &Win, size: f64) {
        for slot in (0..w.agg.len()).filter(|&slot| !w.has_fired(slot)) {
            self.push_slot(&w.agg, slot, w.start, w.start + size, false);
        }
    }

    fn finish(self) -> NResult<Cols> {
        let f = |v: Vec<f64>| Col::F64(Cow::Owned(v));
        let mut cols = vec![
            ("key".to_string(), self.keys.finish()?),
            ("start".to_string(), f(self.start)),
            ("end".to_string(), f(self.end)),
        ];
        if self.with_values {
            let mean = self.sum.iter().zip(&self.count).map(|(s, c)| s / c).collect();
            cols.push(("count".to_string(), f(self.count)));
            cols.push(("sum".to_string(), f(self.sum)));
            cols.push(("min".to_string(), f(self.min)));
            cols.push(("max".to_string(), f(self.max)));
            cols.push(("mean".to_string(), f(mean)));
        } else {
            cols.push(("count".to_string(), f(self.count)));
        }
        cols.push(("late".to_string(), f(self.late)));
        Ok(cols)
    }
}

/// One session window of a key: `[start, end)`, its count and `sum, min, max`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Session {
    start: f64,
    end: f64,
    count: f64,
    vals: [f64; 3],
    fired: bool,
}

impl Session {
    /// The window two overlapping windows merge into: the union of their times, counts and sums
    /// added (`self`'s first), min and max combined; fired as the caller decides.
    fn merged(&self, other: &Session) -> Session {
        Session {
            start: js_min(self.start, other.start),
            end: js_max(self.end, other.end),
            count: self.count + other.count,
            vals: [self.vals[0] + other.vals[0], js_min(self.vals[1], other.vals[1]), js_max(self.vals[2], other.vals[2])],
            fired: false,
        }
    }

    fn overlaps(&self, other: &Session) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// A key of session state, owned.
enum OwnedKey {
    Num(f64),
    Str(Box<str>),
}

impl OwnedKey {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            OwnedKey::Num(x) => KeyRef::Num(*x),
            OwnedKey::Str(s) => KeyRef::Str(s.as_bytes()),
        }
    }
}

/// The session windows of one key, sorted by start and pairwise disjoint.
struct KeySessions {
    key: OwnedKey,
    windows: Vec<Session>,
}

/// Window state of one keyed session-window aggregate. Keys are kept in the order they got their
/// first window, as a JavaScript `Map` keeps them: a key whose last window goes is deleted, and
/// one that comes back goes last (as window.ts's keyed state does).
pub struct Sessions {
    gap: f64,
    lateness: f64,
    with_values: bool,
    kind: Option<ColKind>,
    watermark: f64,
    /// Rows that arrived later than the allowed lateness and were not aggregated.
    pub late: f64,
    late_rows: Vec<u32>,
    /// The earliest end of a window not fired yet, or lower: a watermark below it has nothing to
    /// fire. Starts at -∞ (and after a restore), so the first watermark scans every window.
    next_end: f64,
    /// Keys in order, `None` for a key deleted since the last compaction.
    keys: Vec<Option<KeySessions>>,
    live: usize,
    num_index: FxHashMap<u64, usize>,
    str_index: FxHashMap<Box<str>, usize>,
}

impl Sessions {
    /// Checks `gap` and `lateness` (already known to be numbers) and creates empty state.
    pub fn new(gap: f64, lateness: f64, with_values: bool) -> NResult<Self> {
        if !(gap.is_finite() && gap > 0.0) {
            return Err(NativeError::BadPlan(format!("window gap must be a finite number > 0, got {gap}")));
        }
        check_lateness(lateness)?;
        Ok(Sessions {
            gap,
            lateness,
            with_values,
            kind: None,
            watermark: f64::NEG_INFINITY,
            late: 0.0,
            late_rows: Vec::new(),
            next_end: f64::NEG_INFINITY,
            keys: Vec::new(),
            live: 0,
            num_index: FxHashMap::default(),
            str_index: FxHashMap::default(),
        })
    }

    /// Validates a batch's event times before anything is aggregated.
    pub fn check_times(&self, column: &str, times: &[f64]) -> NResult<()> {
        for (i, &t) in times.iter().enumerate() {
            if !t.is_finite() {
                return Err(NativeError::batch_at(column, i, format!("event time must be finite, got {t}")));
            }
            if t.abs() > MAX_TIME {
                return Err(NativeError::batch_at(
                    column,
                    i,
                    format!("event time {t} is out of range (at most 2^53 in magnitude)"),
                ));
            }
        }
        Ok(())
    }

    /// The kind of key column seen so far, if any input came.
    pub fn key_kind(&self) -> Option<ColKind> {
        self.kind
    }

    /// The late rows of the pushes since the last call (indices into each push's batch).
    pub fn take_late_rows(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.late_rows)
    }

    /// The index in `keys` of a key, added last if new (or deleted).
    fn slot(&mut self, key: KeyRef<'_>) -> usize {
        let at = self.keys.len();
        let found = match key {
            KeyRef::Num(x) => {
                let x = norm_key(x);
                *self.num_index.entry(x.to_bits()).or_insert(at)
            }
            KeyRef::Str(s) => {
                let s = std::str::from_utf8(s).unwrap_or_default();
                match self.str_index.get(s) {
                    Some(&i) => i,
                    None => {
                        self.str_index.insert(s.into(), at);
                        at
                    }
                }
            }
        };
        if found == at {
            let key = match key {
                KeyRef::Num(x) => OwnedKey::Num(norm_key(x)),
                KeyRef::Str(s) => OwnedKey::Str(std::str::from_utf8(s).unwrap_or_default().into()),
            };
            self.keys.push(Some(KeySessions { key, windows: Vec::new() }));
            self.live += 1;
        }
        found
    }

    /// Deletes the keys left without windows, then renumbers the keys when most slots are empty.
    fn drop_empty_keys(&mut self) {
        for entry in self.keys.iter_mut() {
            if entry.as_ref().is_some_and(|k| k.windows.is_empty()) {
                let k = entry.take().expect("checked above");
                match k.key {
                    OwnedKey::Num(x) => self.num_index.remove(&x.to_bits()),
                    OwnedKey::Str(s) => self.str_index.remove(&s),
                };
                self.live -= 1;
            }
        }
        if self.keys.len() > 64 && self.keys.len() > 2 * self.live {
            self.keys.retain(Option::is_some);
            for (i, k) in self.keys.iter().enumerate() {
                match &k.as_ref().expect("retained").key {
                    OwnedKey::Num(x) => self.num_index.insert(x.to_bits(), i),
                    OwnedKey::Str(s) => self.str_index.insert(s.clone(), i),
                };
            }
        }
    }

    /// Adds a batch. Columns must already be checked (kinds, lengths, [`Self::check_times`]).
    /// Returns the windows that rows within the allowed lateness fired again, if any.
    pub fn push(&mut self, key_name: &str, keys: &Col<'_>, values: Option<&[f64]>, times: &[f64]) -> NResult<Option<Cols>> {
        check_key_kind(self.kind, key_name, keys)?;
        let kind = keys.kind();
        self.kind = Some(kind);
        let late_below = self.watermark - self.lateness;
        let mut refired: Option<OutRows> = None;
        for (row, &t) in times.iter().enumerate() {
            if t < late_below {
                self.late += 1.0;
                self.late_rows.push(row as u32);
                continue;
            }
            let v = values.map_or(0.0, |v| v[row]);
            let slot = match keys {
                Col::F64(k) => self.slot(KeyRef::Num(k[row])),
                Col::Utf8(s) => self.slot(KeyRef::Str(s.get(row).as_bytes())),
            };
            let one = Session {
                start: t,
                end: t + self.gap,
                count: 1.0,
                vals: [0.0 + v, js_min(f64::INFINITY, v), js_max(f64::NEG_INFINITY, v)],
                fired: false,
            };
            let merged = self.add(slot, one, true);
            if merged.fired {
                let k = self.keys[slot].as_ref().expect("a live key");
                refired.get_or_insert_with(|| OutRows::new(kind, self.with_values)).push(
                    k.key.as_ref(),
                    merged.start,
                    merged.end,
                    merged.count,
                    merged.vals,
                    true,
                );
            } else if merged.end < self.next_end {
                self.next_end = merged.end;
            }
        }
        refired.map(OutRows::finish).transpose()
    }

    /// Adds window `one` to key `slot`, merging every window it overlaps, in start order (the
    /// merged window growing as it goes, exactly as window.ts's `addToSession`). With `records`,
    /// the merged window has fired (and is to fire again now) when a window it took had fired and
    /// it still ends at or below the watermark; restored rows (`records` false) have fired when
    /// every window they merge with and they themselves had. Returns the merged window.
    fn add(&mut self, slot: usize, one: Session, records: bool) -> Session {
        let watermark = self.watermark;
        let windows = &mut self.keys[slot].as_mut().expect("a live key").windows;
        let mut merged = one;
        let (mut any, mut all) = (false, one.fired);
        let mut kept = 0;
        for i in 0..windows.len() {
            let w = windows[i];
            if w.overlaps(&merged) {
                merged = w.merged(&merged);
                any |= w.fired;
                all &= w.fired;
            } else {
                windows[kept] = w;
                kept += 1;
            }
        }
        merged.fired = if records { any && merged.end <= watermark } else { all };
        windows.truncate(kept);
        let at = windows.partition_point(|w| w.start < merged.start);
        windows.insert(at, merged);
        merged
    }

    /// Moves the watermark to `w` (if later) and fires every window with `end <= w`; returns the
    /// rows fired, or `None` when none did.
    pub fn advance(&mut self, w: f64) -> NResult<Option<Cols>> {
        if w > self.watermark {
            self.watermark = w;
        }
        if self.watermark < self.next_end {
            return Ok(None);
        }
        let out = self.fire(self.watermark);
        if out.len() == 0 {
            return Ok(None);
        }
        out.finish().map(Some)
    }

    /// Fires every window not fired yet (end of input).
    pub fn finish(&mut self) -> NResult<Cols> {
        self.fire(f64::INFINITY).finish()
    }

    /// Fires the windows not fired yet that end at or below `up_to`, and drops fired windows
    /// past the allowed lateness (`end + allowedLatenessMs <= up_to`).
    fn fire(&mut self, up_to: f64) -> OutRows {
        let mut out = OutRows::new(self.kind.unwrap_or(ColKind::Utf8), self.with_values);
        let mut earliest = f64::INFINITY;
        for k in self.keys.iter_mut().flatten() {
            let mut kept = 0;
            for i in 0..k.windows.len() {
                let mut w = k.windows[i];
                if !w.fired && w.end <= up_to {
                    out.push(k.key.as_ref(), w.start, w.end, w.count, w.vals, false);
                    w.fired = true;
                }
                if w.fired && w.end + self.lateness <= up_to {
                    continue;
                }
                if !w.fired && w.end < earliest {
                    earliest = w.end;
                }
                k.windows[kept] = w;
                kept += 1;
            }
            k.windows.truncate(kept);
        }
        self.next_end = earliest;
        self.drop_empty_keys();
        out
    }

    /// The windows as state rows (`key, start, count`, `sum, min, max` with values, `end`, `fired`
    /// 0 or 1), key by key, each key's windows in start order; the state is unchanged.
    pub fn snapshot(&self) -> NResult<Cols> {
        let mut out = OutRows::new(self.kind.unwrap_or(ColKind::Utf8), self.with_values);
        for k in self.keys.iter().flatten() {
            for w in &k.windows {
                out.push(k.key.as_ref(), w.start, w.end, w.count, w.vals, w.fired);
            }
        }
        let f = |v: Vec<f64>| Col::F64(Cow::Owned(v));
        let mut cols = vec![
            ("key".to_string(), out.keys.finish()?),
            ("start".to_string(), f(out.start)),
            ("count".to_string(), f(out.count)),
        ];
        if self.with_values {
            cols.push(("sum".to_string(), f(out.sum)));
            cols.push(("min".to_string(), f(out.min)));
            cols.push(("max".to_string(), f(out.max)));
        }
        cols.push(("end".to_string(), f(out.end)));
        cols.push(("fired".to_string(), f(out.late)));
        Ok(cols)
    }

    /// Adds checked state rows (see [`crate::state`]) to the windows: each row is a window of its
    /// key, merged with the key's windows it overlaps. Every row is checked before the state
    /// changes (`end` is required, finite and after `start`).
    pub fn restore(&mut self, rows: &Rows<'_>) -> NResult<()> {
        check_key_kind(self.kind, "key", rows.keys)?;
        let starts = rows.start.ok_or_else(|| NativeError::batch("start", "missing column"))?;
        let ends = rows.end.ok_or_else(|| NativeError::batch("end", "missing column (session windows keep their end)"))?;
        for (i, (&s, &e)) in starts.iter().zip(ends).enumerate() {
            if !(e.is_finite() && e > s) {
                return Err(NativeError::batch_at("end", i, format!("must be a finite time after the start {s}, got {e}")));
            }
        }
        self.kind = Some(rows.keys.kind());
        for row in 0..rows.len() {
            let slot = match rows.keys {
                Col::F64(k) => self.slot(KeyRef::Num(k[row])),
                Col::Utf8(s) => self.slot(KeyRef::Str(s.get(row).as_bytes())),
            };
            let vals = match rows.values {
                Some([sum, min, max]) if self.with_values => [sum[row], min[row], max[row]],
                _ => [0.0, f64::INFINITY, f64::NEG_INFINITY],
            };
            let fired = rows.fired.is_some_and(|f| f[row] == 1.0);
            let one = Session { start: starts[row], end: ends[row], count: rows.count[row], vals, fired };
            self.add(slot, one, false);
        }
        self.next_end = f64::NEG_INFINITY;
        Ok(())
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
            let w = Windows::new(size, slide, 0.0, false).unwrap();
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

    fn f64s(v: &[f64]) -> Col<'static> {
        Col::F64(Cow::Owned(v.to_vec()))
    }

    /// Column `name` of `cols` as numbers.
    fn column(cols: &Cols, name: &str) -> Vec<f64> {
        match cols.iter().find(|(n, _)| n == name) {
            Some((_, Col::F64(v))) => v.to_vec(),
            _ => panic!("no numeric column {name}"),
        }
    }

    #[test]
    fn session_windows_merge_every_window_a_row_overlaps() {
        let mut s = Sessions::new(5.0, 0.0, true).unwrap();
        // Key 1: [0, 5), [8, 13), then 4 bridges both into [0, 13); key 2: [3, 8).
        let times = [0.0, 8.0, 3.0, 4.0];
        s.check_times("t", &times).unwrap();
        assert!(s.push("k", &f64s(&[1.0, 1.0, 2.0, 1.0]), Some(&[1.0, 2.0, 3.0, 4.0]), &times).unwrap().is_none());
        assert!(
            s.advance(10.0).unwrap().unwrap().iter().any(|(n, c)| n == "key" && c.len() == 1),
            "only key 2's window ends by 10"
        );
        let rest = s.finish().unwrap();
        assert_eq!(column(&rest, "key"), [1.0]);
        assert_eq!((column(&rest, "start"), column(&rest, "end")), (vec![0.0], vec![13.0]));
        assert_eq!((column(&rest, "count"), column(&rest, "sum")), (vec![3.0], vec![7.0]));
        assert_eq!(column(&rest, "late"), [0.0]);
    }

    #[test]
    fn rows_within_the_allowed_lateness_fire_their_window_again_and_later_ones_are_late() {
        let mut w = Windows::new(10.0, 10.0, 20.0, false).unwrap();
        w.push("k", &f64s(&[1.0]), None, &[1.0]).unwrap();
        assert_eq!(column(&w.advance(15.0).unwrap().unwrap(), "count"), [1.0]);
        // 2 is behind the watermark but within the lateness: [0, 10) fires again with 2 rows.
        let again = w.push("k", &f64s(&[1.0]), None, &[2.0]).unwrap().unwrap();
        assert_eq!((column(&again, "count"), column(&again, "late")), (vec![2.0], vec![1.0]));
        // At 30 the window is gone (10 + 20 <= 30): a row for it is late, listed, not counted.
        assert!(w.advance(30.0).unwrap().is_none());
        assert!(w.push("k", &f64s(&[1.0, 1.0]), None, &[3.0, 35.0]).unwrap().is_none());
        assert_eq!((w.late, w.take_late_rows()), (1.0, vec![0]));
        assert_eq!(column(&w.finish().unwrap(), "start"), [30.0]);
    }

    #[test]
    fn session_windows_refire_when_a_fired_window_merges_below_the_watermark() {
        let mut s = Sessions::new(5.0, 10.0, false).unwrap();
        s.push("k", &f64s(&[1.0]), None, &[0.0]).unwrap();
        assert_eq!(column(&s.advance(9.0).unwrap().unwrap(), "end"), [5.0]);
        // 1 merges into the fired [0, 6), still ending below 9: fired again, late.
        let again = s.push("k", &f64s(&[1.0]), None, &[1.0]).unwrap().unwrap();
        assert_eq!((column(&again, "end"), column(&again, "count"), column(&again, "late")), (vec![6.0], vec![2.0], vec![1.0]));
        // 5 merges it into [0, 10), past the watermark: not fired again now, but at 10.
        assert!(s.push("k", &f64s(&[1.0]), None, &[5.0]).unwrap().is_none());
        let later = s.advance(11.0).unwrap().unwrap();
        assert_eq!((column(&later, "count"), column(&later, "late")), (vec![3.0], vec![0.0]));
        // -2 is below 11 - 10: late.
        assert!(s.push("k", &f64s(&[1.0]), None, &[-2.0]).unwrap().is_none());
        assert_eq!(s.take_late_rows(), [0]);
    }

    #[test]
    fn session_snapshots_keep_end_and_fired_and_restore_to_the_same_state() {
        let mut s = Sessions::new(5.0, 10.0, true).unwrap();
        s.push("k", &f64s(&[1.0, 2.0, 1.0]), Some(&[1.0, 2.0, 3.0]), &[0.0, 0.0, 20.0]).unwrap();
        s.advance(6.0).unwrap();
        let snapshot = s.snapshot().unwrap();
        assert_eq!(column(&snapshot, "end"), [5.0, 25.0, 5.0]);
        assert_eq!(column(&snapshot, "fired"), [1.0, 0.0, 1.0]);
        let batch = crate::batch::Batch { rows: 3, cols: snapshot.clone() };
        let mut restored = Sessions::new(5.0, 10.0, true).unwrap();
        restored.restore(&Rows::read(&batch, true, true).unwrap()).unwrap();
        assert_eq!(format!("{:?}", restored.snapshot().unwrap()), format!("{snapshot:?}"));
        // Restored, a fired window takes a row within the lateness and fires again.
        restored.advance(6.0).unwrap();
        let again = restored.push("k", &f64s(&[2.0]), Some(&[5.0]), &[1.0]).unwrap().unwrap();
        assert_eq!((column(&again, "key"), column(&again, "sum"), column(&again, "late")), (vec![2.0], vec![7.0], vec![1.0]));
    }

    #[test]
    fn bad_session_and_lateness_options_are_plan_errors() {
        for gap in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Sessions::new(gap, 0.0, false).err().map(|e| e.code()), Some("ERR_NATIVE_BAD_PLAN"), "gap {gap}");
        }
        for lateness in [-1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                Sessions::new(5.0, lateness, false).err().map(|e| e.code()),
                Some("ERR_NATIVE_BAD_PLAN"),
                "lateness {lateness}"
            );
            assert_eq!(
                Windows::new(5.0, 5.0, lateness, false).err().map(|e| e.code()),
                Some("ERR_NATIVE_BAD_PLAN"),
                "lateness {lateness}"
            );
        }
    }
}
