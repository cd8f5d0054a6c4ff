//! Fused chains: a list of step specs compiled once into a plan that runs a whole batch through
//! every step in one native call, keeping aggregate and window state between calls.
//!
//! Steps, in order: any number of `tokenize`, `filter`, `map`; then optionally one sink, which
//! must be last: `partition`, `count`, `aggregate` or `window`. Outputs of every call are a list
//! of batches: a chain without a sink gives one batch per `push`; `partition` gives `n` per
//! `push`; `count`/`aggregate` give their result on `finish`; `window` gives fired windows on
//! `advance(watermark)`, the rest on `finish`, and on `push` the windows that rows within the
//! allowed lateness fired again. The late rows of the last `push` of a window chain, as they
//! reached the window step, are kept for `take_late`.

use std::borrow::Cow;

use crate::agg::{check_key_kind, KeyedAgg};
use crate::batch::{Batch, Col, ColKind, StrBuilder};
use crate::error::{NResult, NativeError};
use crate::expr::{self, Ast, Typed};
use crate::js::{JsVal, Out};
use crate::partition::{partition, MAX_PARTITIONS};
use crate::state::Rows;
use crate::tokenize::tokenize_column;
use crate::window::{Sessions, Windows};

enum Stage {
    Tokenize { input: String, output: String },
    Filter { ast: Ast },
    Map { ast: Ast, name: Option<String> },
}

enum Sink {
    Pass,
    Partition { key: String, n: u32 },
    Agg { key: String, value: Option<String>, state: Option<KeyedAgg> },
    Window { key: String, value: Option<String>, time: String, state: WindowState },
}

/// The state of a window step: fixed windows (`size`, `slide`) or session windows (`gap`).
enum WindowState {
    Fixed(Windows),
    Session(Sessions),
}

/// Calls the same method on either kind of window state.
macro_rules! each_window {
    ($state:expr, $w:ident => $call:expr) => {
        match $state {
            WindowState::Fixed($w) => $call,
            WindowState::Session($w) => $call,
        }
    };
}

/// A compiled chain with its state.
pub struct Plan {
    stages: Vec<Stage>,
    sink: Sink,
    finished: bool,
    /// The late rows of the last `push` (window chains), until `take_late` takes them.
    late_rows: Option<Batch<'static>>,
    /// Set when a panic interrupted a call: state may be half-updated, so the plan refuses work.
    pub poisoned: bool,
}

/// Reads one step's fields, rejecting unknown ones.
struct Fields<'a> {
    step: usize,
    op: String,
    fields: &'a [(String, JsVal)],
}

impl<'a> Fields<'a> {
    fn bad(&self, message: String) -> NativeError {
        NativeError::BadPlan(format!("step {} ({}): {message}", self.step, self.op))
    }

    fn allow(&self, names: &[&str]) -> NResult<()> {
        for (name, value) in self.fields {
            if name != "op" && !names.contains(&name.as_str()) && *value != JsVal::Undefined {
                return Err(self.bad(format!("unknown field {name:?}")));
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&JsVal> {
        self.fields.iter().find(|(n, v)| n == name && *v != JsVal::Undefined).map(|(_, v)| v)
    }

    fn string(&self, name: &str) -> NResult<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(JsVal::Str(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.bad(format!("field {name:?} must be a string, got {}", other.describe()))),
        }
    }

    fn required_string(&self, name: &str) -> NResult<String> {
        self.string(name)?.ok_or_else(|| self.bad(format!("missing field {name:?}")))
    }

    fn number(&self, name: &str) -> NResult<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(JsVal::Num(x)) => Ok(Some(*x)),
            Some(other) => Err(self.bad(format!("field {name:?} must be a number, got {}", other.describe()))),
        }
    }
}

impl Plan {
    /// Compiles a chain spec (an array of step objects).
    pub fn compile(spec: &JsVal) -> NResult<Plan> {
        let JsVal::Arr(steps) = spec else {
            return Err(NativeError::BadPlan(format!("a chain spec must be an array of steps, got {}", spec.describe())));
        };
        let mut stages = Vec::new();
        let mut sink = Sink::Pass;
        for (i, step) in steps.iter().enumerate() {
            let JsVal::Obj(fields) = step else {
                return Err(NativeError::BadPlan(format!("step {i} must be an object, got {}", step.describe())));
            };
            let op = match fields.iter().find(|(n, _)| n == "op") {
                Some((_, JsVal::Str(op))) => op.clone(),
                _ => return Err(NativeError::BadPlan(format!("step {i} needs a string field \"op\""))),
            };
            let f = Fields { step: i, op: op.clone(), fields };
            if !matches!(sink, Sink::Pass) {
                return Err(f.bad("no step may follow a partition, count, aggregate or window step".to_string()));
            }
            match op.as_str() {
                "tokenize" => {
                    f.allow(&["input", "output"])?;
                    let input = f.string("input")?.unwrap_or_else(|| "s".to_string());
                    let output = f.string("output")?.unwrap_or_else(|| input.clone());
                    stages.push(Stage::Tokenize { input, output });
                }
                "filter" => {
                    f.allow(&["expr"])?;
                    stages.push(Stage::Filter { ast: expr::parse(&f.required_string("expr")?)? });
                }
                "map" => {
                    f.allow(&["expr", "as"])?;
                    let ast = expr::parse(&f.required_string("expr")?)?;
                    stages.push(Stage::Map { ast, name: f.string("as")? });
                }
                "partition" => {
                    f.allow(&["key", "n"])?;
                    let n = f.number("n")?.ok_or_else(|| f.bad("missing field \"n\"".to_string()))?;
                    if !(n.fract() == 0.0 && (1.0..=MAX_PARTITIONS).contains(&n)) {
                        return Err(f.bad(format!("\"n\" must be an integer from 1 to {MAX_PARTITIONS}, got {n}")));
                    }
                    sink = Sink::Partition { key: f.string("key")?.unwrap_or_else(|| "s".to_string()), n: n as u32 };
                }
                "count" => {
                    f.allow(&["key"])?;
                    sink = Sink::Agg { key: f.string("key")?.unwrap_or_else(|| "s".to_string()), value: None, state: None };
                }
                "aggregate" => {
                    f.allow(&["key", "value"])?;
                    sink = Sink::Agg {
                        key: f.string("key")?.unwrap_or_else(|| "s".to_string()),
                        value: Some(f.string("value")?.unwrap_or_else(|| "x".to_string())),
                        state: None,
                    };
                }
                "window" => {
                    f.allow(&["key", "value", "time", "size", "slide", "gap", "allowedLatenessMs"])?;
                    let gap = f.number("gap")?;
                    let size = f.number("size")?;
                    let slide = f.number("slide")?;
                    let lateness = f.number("allowedLatenessMs")?.unwrap_or(0.0);
                    let value = f.string("value")?;
                    let bad = |e| match e {
                        NativeError::BadPlan(m) => f.bad(m),
                        other => other,
                    };
                    let state = match (gap, size) {
                        (Some(_), _) if size.is_some() || slide.is_some() => {
                            return Err(
                                f.bad("\"gap\" (session windows) cannot be combined with \"size\" or \"slide\"".to_string())
                            )
                        }
                        (Some(gap), _) => WindowState::Session(Sessions::new(gap, lateness, value.is_some()).map_err(bad)?),
                        (None, None) => return Err(f.bad("missing field \"size\" (or \"gap\" for session windows)".to_string())),
                        (None, Some(size)) => {
                            WindowState::Fixed(Windows::new(size, slide.unwrap_or(size), lateness, value.is_some()).map_err(bad)?)
                        }
                    };
                    sink = Sink::Window {
                        key: f.string("key")?.unwrap_or_else(|| "s".to_string()),
                        value,
                        time: f.string("time")?.unwrap_or_else(|| "t".to_string()),
                        state,
                    };
                }
                other => return Err(f.bad(format!("unknown op {other:?}"))),
            }
        }
        Ok(Plan { stages, sink, finished: false, late_rows: None, poisoned: false })
    }

    /// Fails if the plan is finished or poisoned; every call checks this before reading its arguments.
    pub fn check_usable(&self, call: &str) -> NResult<()> {
        if self.poisoned {
            return Err(NativeError::BadState(format!("{call}: an earlier call panicked, so this plan's state is unreliable")));
        }
        if self.finished {
            return Err(NativeError::BadState(format!("{call} after finish")));
        }
        Ok(())
    }

    /// Runs one batch through the chain. A failing call leaves the plan's state unchanged.
    pub fn push(&mut self, batch: Batch<'_>) -> NResult<Vec<Out>> {
        self.check_usable("push")?;
        let mut cur = batch;
        let fused = self.counts_tokens();
        let run = if fused { self.stages.len() - 1 } else { self.stages.len() };
        for stage in &self.stages[..run] {
            cur = apply(stage, cur)?;
        }
        if fused {
            // `[…, tokenize, count]` counting the tokenizer's output: count each word as it is
            // found instead of building the words column and then counting it. Same counts, same
            // first-seen order; everything that can fail is checked before the state changes.
            let (Some(Stage::Tokenize { input, .. }), Sink::Agg { state, .. }) = (self.stages.last(), &mut self.sink) else {
                unreachable!("counts_tokens checked the shape")
            };
            let Col::Utf8(text) = cur.require(input, ColKind::Utf8)? else {
                return Err(NativeError::batch(input, "expected a string column"));
            };
            // The key column is the tokenizer's output, so the state (made here or by an earlier
            // push) always has string keys.
            state.get_or_insert_with(|| KeyedAgg::new(ColKind::Utf8, false)).count_words(text);
            return Ok(vec![]);
        }
        match &mut self.sink {
            Sink::Pass => Ok(vec![cur.into_out()]),
            Sink::Partition { key, n } => Ok(partition(&cur, key, *n)?.into_iter().map(Batch::into_out).collect()),
            Sink::Agg { key, value, state } => {
                let keys = cur.get(key).ok_or_else(|| NativeError::batch(key, "missing column"))?;
                let values = match value {
                    Some(v) => Some(f64_column(&cur, v)?),
                    None => None,
                };
                check_key_kind(state.as_ref().map(KeyedAgg::key_kind), key, keys)?;
                let st = state.get_or_insert_with(|| KeyedAgg::new(keys.kind(), value.is_some()));
                st.push(keys, values);
                Ok(vec![])
            }
            Sink::Window { key, value, time, state } => {
                let keys = cur.get(key).ok_or_else(|| NativeError::batch(key, "missing column"))?;
                let values = match value {
                    Some(v) => Some(f64_column(&cur, v)?),
                    None => None,
                };
                let times = f64_column(&cur, time)?;
                each_window!(&*state, w => w.check_times(time, times))?;
                let refired = each_window!(state, w => w.push(key, keys, values, times))?;
                let late = each_window!(state, w => w.take_late_rows());
                self.late_rows = if late.is_empty() { None } else { Some(cur.gather(&late)?) };
                Ok(refired.map(batch_out).into_iter().collect())
            }
        }
    }

    /// True when the chain ends `tokenize` then `count` keyed by the tokenizer's output.
    fn counts_tokens(&self) -> bool {
        matches!(
            (self.stages.last(), &self.sink),
            (Some(Stage::Tokenize { output, .. }), Sink::Agg { key, value: None, .. }) if key == output
        )
    }

    /// Moves the event-time watermark; returns the windows it closed (window chains only), as one
    /// batch, or no batch when none closed.
    pub fn advance(&mut self, watermark: f64) -> NResult<Vec<Out>> {
        self.check_usable("advance")?;
        if watermark.is_nan() {
            return Err(NativeError::BadArg("the watermark must be a number, got NaN".to_string()));
        }
        match &mut self.sink {
            Sink::Window { state, .. } => {
                Ok(each_window!(state, w => w.advance(watermark))?.map(batch_out).into_iter().collect())
            }
            _ => Ok(vec![]),
        }
    }

    /// Ends the input: emits aggregates and open windows. The plan accepts no more calls.
    pub fn finish(&mut self) -> NResult<Vec<Out>> {
        self.check_usable("finish")?;
        let out = match &mut self.sink {
            Sink::Agg { value, state, .. } => {
                let st = state.take().unwrap_or_else(|| KeyedAgg::new(ColKind::Utf8, value.is_some()));
                vec![batch_out(st.finish()?)]
            }
            Sink::Window { state, .. } => vec![batch_out(each_window!(state, w => w.finish())?)],
            _ => vec![],
        };
        self.finished = true;
        Ok(out)
    }

    /// The keyed state of a `count`, `aggregate` or `window` sink as one batch of rows (see
    /// [`crate::state`]), leaving it unchanged. The batch may have no rows (its key column still
    /// says the key kind seen); there is no batch before the sink has seen any input, and none
    /// from chains without such a sink, which keep no state between calls.
    pub fn snapshot(&self) -> NResult<Vec<Out>> {
        self.check_usable("snapshot")?;
        let cols = match &self.sink {
            Sink::Agg { state: Some(state), .. } => state.snapshot()?,
            Sink::Window { state, .. } if each_window!(state, w => w.key_kind()).is_some() => {
                each_window!(state, w => w.snapshot())?
            }
            _ => return Ok(vec![]),
        };
        Ok(vec![batch_out(cols)])
    }

    /// Adds a snapshot's rows to the sink's state (see [`crate::state`]); rows of a key the state
    /// has already combine with it. A failing call leaves the state unchanged.
    pub fn restore(&mut self, batch: Batch<'_>) -> NResult<()> {
        self.check_usable("restore")?;
        match &mut self.sink {
            Sink::Agg { value, state, .. } => {
                let rows = Rows::read(&batch, value.is_some(), false)?;
                check_key_kind(state.as_ref().map(KeyedAgg::key_kind), "key", rows.keys)?;
                let st = state.get_or_insert_with(|| KeyedAgg::new(rows.keys.kind(), value.is_some()));
                for row in 0..rows.len() {
                    st.merge(&rows, row);
                }
                Ok(())
            }
            Sink::Window { value, state, .. } => {
                let rows = Rows::read(&batch, value.is_some(), true)?;
                each_window!(state, w => w.restore(&rows))
            }
            _ => Err(NativeError::BadArg(
                "restore: this chain keeps no state (it has no count, aggregate or window step)".to_string(),
            )),
        }
    }

    /// Rows that arrived later than the allowed lateness (window chains only).
    pub fn late(&self) -> f64 {
        match &self.sink {
            Sink::Window { state, .. } => each_window!(state, w => w.late),
            _ => 0.0,
        }
    }

    /// The late rows of the last `push` of a window chain, in the columns that reached the window
    /// step, as one batch (none when no row of it was late); they are not kept afterwards.
    pub fn take_late(&mut self) -> Vec<Out> {
        self.late_rows.take().map(Batch::into_out).into_iter().collect()
    }

    pub fn finished(&self) -> bool {
        self.finished
    }
}

fn f64_column<'b>(batch: &'b Batch<'_>, name: &str) -> NResult<&'b [f64]> {
    match batch.require(name, ColKind::F64)? {
        Col::F64(v) => Ok(v),
        Col::Utf8(_) => Err(NativeError::batch(name, "expected a Float64Array column")),
    }
}

fn batch_out(cols: Vec<(String, Col<'static>)>) -> Out {
    let rows = cols.first().map(|(_, c)| c.len()).unwrap_or(0);
    Batch { cols, rows }.into_out()
}

fn schema<'b>(batch: &'b Batch<'_>) -> Vec<(&'b str, ColKind)> {
    batch.cols.iter().map(|(n, c)| (n.as_str(), c.kind())).collect()
}

fn apply<'a>(stage: &Stage, cur: Batch<'a>) -> NResult<Batch<'a>> {
    match stage {
        Stage::Tokenize { input, output } => {
            let Col::Utf8(text) = cur.require(input, ColKind::Utf8)? else {
                return Err(NativeError::batch(input, "expected a string column"));
            };
            let (words, rows) = tokenize_column(text, output)?;
            let mut cols = Vec::with_capacity(cur.cols.len());
            for (name, c) in &cur.cols {
                if name != input && name != output {
                    cols.push((name.clone(), c.gather(&rows)?));
                }
            }
            cols.push((output.clone(), Col::Utf8(words)));
            Ok(Batch { cols, rows: rows.len() })
        }
        Stage::Filter { ast } => {
            let Typed::Bool(pred) = expr::bind(ast, &schema(&cur))? else {
                return Err(NativeError::BadExpr { position: 0, message: "filter needs a boolean expression".to_string() });
            };
            let keep: Vec<u32> = (0..cur.rows).filter(|&r| pred.eval(&cur.cols, r)).map(|r| r as u32).collect();
            if keep.len() == cur.rows {
                Ok(cur)
            } else {
                Ok(cur.gather(&keep)?)
            }
        }
        Stage::Map { ast, name } => {
            let (default_name, col) = match expr::bind(ast, &schema(&cur))? {
                Typed::Num(e) => ("x", Col::F64(Cow::Owned((0..cur.rows).map(|r| e.eval(&cur.cols, r)).collect()))),
                Typed::Str(e) => {
                    let mut b = StrBuilder::with_capacity(cur.rows, 0);
                    for r in 0..cur.rows {
                        b.push(&e.eval(&cur.cols, r));
                    }
                    ("s", Col::Utf8(b.finish(name.as_deref().unwrap_or("s"))?))
                }
                Typed::Bool(_) => {
                    return Err(NativeError::BadExpr {
                        position: 0,
                        message: "map needs a number or string expression, got a boolean".to_string(),
                    })
                }
            };
            let mut next = cur;
            let target = name.clone().unwrap_or_else(|| default_name.to_string());
            next.set(&target, col);
            Ok(next)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Strs;

    fn spec(steps: &[&[(&str, &str)]]) -> JsVal {
        JsVal::Arr(
            steps
                .iter()
                .map(|fields| JsVal::Obj(fields.iter().map(|(k, v)| (k.to_string(), JsVal::Str(v.to_string()))).collect()))
                .collect(),
        )
    }

    /// A column `s` of `rows`, stored after `pad` bytes of other text, so its first offset is not 0.
    fn batch(rows: &[String], pad: &str) -> Batch<'static> {
        let mut data = pad.as_bytes().to_vec();
        let mut offsets = vec![data.len() as u32];
        for r in rows {
            data.extend_from_slice(r.as_bytes());
            offsets.push(data.len() as u32);
        }
        data.extend_from_slice(b"TRAILING words");
        let s = Strs::validate("s", Cow::Owned(data), Cow::Owned(offsets)).unwrap();
        Batch { cols: vec![("s".to_string(), Col::Utf8(s))], rows: rows.len() }
    }

    #[test]
    fn fused_tokenize_count_equals_the_stepwise_chain() {
        let pieces = [
            "the",
            "The",
            "THE",
            " ",
            "  ",
            ", ",
            "é",
            "ΟΔΟΣ",
            "Σ",
            "İ",
            "東京",
            "😀",
            "x2",
            "2024",
            "toolongawordforeightbytes",
            "ab",
            "-",
            "\n",
            "naïve",
            "ǅ",
        ];
        let mut state = 99u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize
        };
        let mut fused = Plan::compile(&spec(&[&[("op", "tokenize")], &[("op", "count")]])).unwrap();
        let mut stepwise =
            Plan::compile(&spec(&[&[("op", "tokenize")], &[("op", "filter"), ("expr", "len(s) >= 0")], &[("op", "count")]]))
                .unwrap();
        assert!(fused.counts_tokens() && !stepwise.counts_tokens());
        for round in 0..200 {
            let rows: Vec<String> = (0..next() % 12)
                .map(|_| {
                    let mut row = String::new();
                    for _ in 0..next() % 40 {
                        row.push_str(pieces[next() % pieces.len()]);
                    }
                    row
                })
                .collect();
            let pad = if round % 3 == 0 { "" } else { "Xpad" };
            fused.push(batch(&rows, pad)).unwrap();
            stepwise.push(batch(&rows, pad)).unwrap();
        }
        assert_eq!(fused.finish().unwrap(), stepwise.finish().unwrap());
    }

    #[test]
    fn window_steps_refuse_bad_session_and_lateness_options() {
        let step = |fields: &[(&str, JsVal)]| {
            let mut obj = vec![("op".to_string(), JsVal::Str("window".to_string()))];
            obj.extend(fields.iter().map(|(k, v)| (k.to_string(), v.clone())));
            Plan::compile(&JsVal::Arr(vec![JsVal::Obj(obj)])).err().map(|e| e.code())
        };
        let n = JsVal::Num;
        assert_eq!(step(&[("gap", n(5.0))]), None);
        assert_eq!(step(&[("size", n(5.0)), ("allowedLatenessMs", n(3.0))]), None);
        for bad in [
            vec![("gap", n(0.0))],
            vec![("gap", n(-2.0))],
            vec![("gap", n(5.0)), ("size", n(10.0))],
            vec![("gap", n(5.0)), ("slide", n(10.0))],
            vec![("size", n(10.0)), ("allowedLatenessMs", n(-1.0))],
            vec![("gap", n(5.0)), ("allowedLatenessMs", JsVal::Str("1".to_string()))],
            vec![],
        ] {
            assert_eq!(step(&bad), Some("ERR_NATIVE_BAD_PLAN"), "{bad:?}");
        }
    }
}
