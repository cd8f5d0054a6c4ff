//! Lamina's native core: columnar batch operators (tokenize, filter, map, hash partition, keyed and
//! windowed aggregates, hash join) and fused chains of them, bound to Node with napi-rs.
//!
//! Every exported entry runs inside [`error::guard`], so a Rust panic becomes a JavaScript error
//! with code `ERR_NATIVE_PANIC` instead of crossing into Node; malformed input becomes a typed
//! error (`ERR_NATIVE_BAD_BATCH`, …) naming the column and index. The typed TypeScript entry is
//! `native/ts/native.ts`; use that rather than this raw binding.

mod agg;
mod batch;
mod error;
mod expr;
mod hash;
mod join;
mod js;
mod partition;
mod plan;
mod state;
mod strindex;
mod tokenize;
mod unicode;
mod utf8;
mod window;
mod wordcount;

use napi::bindgen_prelude::{Env, JsValue, Unknown};
use napi_derive::napi;

use crate::batch::{decode_batch, decode_utf8_column, read_batch, Batch, Col};
use crate::error::{guard, NResult, NativeError};
use crate::js::{JsRaw, Kind, Out};

/// Runs an entry: guarded against panics, errors thrown as typed JavaScript errors.
fn entry(env: &Env, f: impl FnOnce(js::Env) -> NResult<Out>) -> napi::Result<JsRaw> {
    let raw = env.raw();
    match guard(|| {
        let out = f(raw)?;
        js::to_js(raw, out)
    }) {
        Ok(v) => Ok(JsRaw(v)),
        Err(e) => Err(js::throw(raw, e)),
    }
}

fn arg_string(env: js::Env, v: &Unknown, what: &str) -> NResult<Option<String>> {
    match js::kind(env, v.raw())? {
        Kind::Undefined => Ok(None),
        Kind::String => Ok(Some(js::get_string(env, v.raw())?)),
        other => Err(NativeError::BadArg(format!("{what} must be a string, got {}", other.describe()))),
    }
}

fn arg_number(env: js::Env, v: &Unknown, what: &str) -> NResult<f64> {
    match js::kind(env, v.raw())? {
        Kind::Number => js::get_f64(env, v.raw()),
        other => Err(NativeError::BadArg(format!("{what} must be a number, got {}", other.describe()))),
    }
}

fn cols_out(cols: Vec<(String, Col<'static>)>) -> Out {
    let rows = cols.first().map(|(_, c)| c.len()).unwrap_or(0);
    Batch { cols, rows }.into_out()
}

/// The Unicode version the tokenizer's tables were generated for (`process.versions.unicode` of
/// the Node that built the addon).
#[napi]
pub fn unicode_version(env: Env) -> napi::Result<String> {
    let raw = env.raw();
    guard(|| Ok(unicode::UNICODE_VERSION.to_string())).map_err(|e| js::throw(raw, e))
}

/// FNV-1a (32-bit) over the UTF-16 code units of `String(key)`: the partitioning hash.
#[napi(ts_args_type = "key: string | number", ts_return_type = "number")]
pub fn hash_key(env: Env, key: Unknown) -> napi::Result<JsRaw> {
    entry(&env, |e| {
        let h = match js::kind(e, key.raw())? {
            Kind::String => hash::fnv1a_utf16(&js::get_string(e, key.raw())?),
            Kind::Number => hash::hash_f64(js::get_f64(e, key.raw())?),
            other => return Err(NativeError::BadArg(format!("key must be a string or a number, got {}", other.describe()))),
        };
        Ok(Out::Num(h as f64))
    })
}

/// JavaScript's `String(x)` for a number, as computed by the native core (used to hash numeric keys).
#[napi(ts_args_type = "x: number", ts_return_type = "string")]
pub fn number_to_string(env: Env, x: Unknown) -> napi::Result<String> {
    let raw = env.raw();
    guard(|| Ok(hash::js_number_to_string(arg_number(raw, &x, "x")?))).map_err(|e| js::throw(raw, e))
}

/// Splits every row of a string column into lowercase words. Returns `{ words, rows }` where
/// `rows[i]` is the input row of word `i`.
#[napi(
    ts_args_type = "column: { data: Uint8Array; offsets: Uint32Array }",
    ts_return_type = "{ words: { data: Uint8Array; offsets: Uint32Array }; rows: Uint32Array }"
)]
pub fn tokenize(env: Env, column: Unknown) -> napi::Result<JsRaw> {
    entry(&env, |e| {
        let col = unsafe { decode_utf8_column(e, column.raw(), "column")? };
        let (words, rows) = tokenize::tokenize_column(&col, "words")?;
        Ok(Out::Obj(vec![("words".to_string(), words.into_out()), ("rows".to_string(), Out::U32(rows))]))
    })
}

/// Splits a batch into `n` batches by the hash of column `key` (see `hashKey`).
#[napi(
    ts_args_type = "batch: Record<string, unknown>, key: string | undefined, n: number",
    ts_return_type = "Array<Record<string, unknown>>"
)]
pub fn hash_partition(env: Env, batch: Unknown, key: Unknown, n: Unknown) -> napi::Result<JsRaw> {
    entry(&env, |e| {
        let key = arg_string(e, &key, "key")?.unwrap_or_else(|| "s".to_string());
        let n = arg_number(e, &n, "n")?;
        if !(n.fract() == 0.0 && (1.0..=partition::MAX_PARTITIONS).contains(&n)) {
            return Err(NativeError::BadArg(format!("n must be an integer from 1 to {}, got {n}", partition::MAX_PARTITIONS)));
        }
        let b = unsafe { decode_batch(e, batch.raw(), "batch")? };
        let parts = partition::partition(&b, &key, n as u32)?;
        Ok(Out::Arr(parts.into_iter().map(Batch::into_out).collect()))
    })
}

/// Inner hash join of `left` and `right` on `leftKey == rightKey`. Returns `{ batch, left, right }`:
/// the joined batch and the source row of each output row on either side.
#[napi(
    ts_args_type = "left: Record<string, unknown>, right: Record<string, unknown>, leftKey: string, rightKey: string, rightPrefix?: string",
    ts_return_type = "{ batch: Record<string, unknown>; left: Uint32Array; right: Uint32Array }"
)]
pub fn hash_join(
    env: Env,
    left: Unknown,
    right: Unknown,
    left_key: Unknown,
    right_key: Unknown,
    right_prefix: Unknown,
) -> napi::Result<JsRaw> {
    entry(&env, |e| {
        let lk = arg_string(e, &left_key, "leftKey")?.unwrap_or_else(|| "key".to_string());
        let rk = arg_string(e, &right_key, "rightKey")?.unwrap_or_else(|| lk.clone());
        let prefix = arg_string(e, &right_prefix, "rightPrefix")?.unwrap_or_default();
        // Every getter of both batches runs before either is borrowed, so none can detach borrowed memory.
        let pending_left = read_batch(e, left.raw(), "left")?;
        let pending_right = read_batch(e, right.raw(), "right")?;
        let l = unsafe { pending_left.borrow(e)? };
        let r = unsafe { pending_right.borrow(e)? };
        let joined = join::hash_join(&l, &r, &lk, &rk, &prefix)?;
        Ok(Out::Obj(vec![
            ("batch".to_string(), joined.batch.into_out()),
            ("left".to_string(), Out::U32(joined.left_rows)),
            ("right".to_string(), Out::U32(joined.right_rows)),
        ]))
    })
}

/// Counts the lowercase words of a whole UTF-8 buffer in one call. Returns `{ key, count }` in
/// first-seen order, keeping words whose UTF-16 length is at least `minLength` (default 0).
#[napi(
    ts_args_type = "text: Uint8Array, minLength?: number",
    ts_return_type = "{ key: { data: Uint8Array; offsets: Uint32Array }; count: Float64Array }"
)]
pub fn wordcount(env: Env, text: Unknown, min_length: Unknown) -> napi::Result<JsRaw> {
    entry(&env, |e| {
        let min = match js::kind(e, min_length.raw())? {
            Kind::Undefined => 0.0,
            _ => arg_number(e, &min_length, "minLength")?,
        };
        if !(min >= 0.0 && min.fract() == 0.0) {
            return Err(NativeError::BadArg(format!("minLength must be a non-negative integer, got {min}")));
        }
        let k = js::kind(e, text.raw())?;
        if k != Kind::TypedArray(napi::sys::TypedarrayType::uint8_array) {
            return Err(NativeError::batch("text", format!("expected a Uint8Array, got {}", k.describe())));
        }
        let bytes = unsafe { js::typed_slice::<u8>(e, text.raw())? };
        Ok(cols_out(wordcount::wordcount(&bytes, min.min(usize::MAX as f64) as usize)?))
    })
}

/// Panics on purpose inside the guard (tests use it to prove panics become `ERR_NATIVE_PANIC`).
#[napi(ts_return_type = "never")]
pub fn debug_panic(env: Env, message: String) -> napi::Result<JsRaw> {
    entry(&env, |_| panic!("{}", message))
}

/// A fused chain compiled once; `push` runs a batch through every step in one native call.
#[napi]
pub struct NativePlan {
    plan: plan::Plan,
}

fn plan_call(
    env: &Env,
    plan: &mut plan::Plan,
    f: impl FnOnce(js::Env, &mut plan::Plan) -> NResult<Vec<Out>>,
) -> napi::Result<JsRaw> {
    let raw = env.raw();
    let result = guard(|| {
        let outs = f(raw, plan)?;
        js::to_js(raw, Out::Arr(outs))
    });
    match result {
        Ok(v) => Ok(JsRaw(v)),
        Err(e) => {
            if matches!(e, NativeError::Panic(_)) {
                plan.poisoned = true;
            }
            Err(js::throw(raw, e))
        }
    }
}

#[napi]
impl NativePlan {
    /// Compiles `steps` (see native/README.md for the step kinds).
    #[napi(constructor, ts_args_type = "steps: ReadonlyArray<Record<string, unknown>>")]
    pub fn new(env: Env, steps: Unknown) -> napi::Result<Self> {
        let raw = env.raw();
        guard(|| {
            let spec = js::read_jsval(raw, steps.raw(), 4)?;
            Ok(NativePlan { plan: plan::Plan::compile(&spec)? })
        })
        .map_err(|e| js::throw(raw, e))
    }

    /// Runs one batch through the chain; returns the output batches of this call.
    #[napi(ts_args_type = "batch: Record<string, unknown>", ts_return_type = "Array<Record<string, unknown>>")]
    pub fn push(&mut self, env: Env, batch: Unknown) -> napi::Result<JsRaw> {
        plan_call(&env, &mut self.plan, |e, p| {
            p.check_usable("push")?;
            let b = unsafe { decode_batch(e, batch.raw(), "batch")? };
            p.push(b)
        })
    }

    /// Moves the event-time watermark; returns the windows it closed.
    #[napi(ts_args_type = "watermark: number", ts_return_type = "Array<Record<string, unknown>>")]
    pub fn advance(&mut self, env: Env, watermark: Unknown) -> napi::Result<JsRaw> {
        plan_call(&env, &mut self.plan, |e, p| {
            p.check_usable("advance")?;
            let w = arg_number(e, &watermark, "watermark")?;
            p.advance(w)
        })
    }

    /// Ends the input; returns aggregates and open windows. No call is accepted afterwards.
    #[napi(ts_return_type = "Array<Record<string, unknown>>")]
    pub fn finish(&mut self, env: Env) -> napi::Result<JsRaw> {
        plan_call(&env, &mut self.plan, |_, p| p.finish())
    }

    /// The keyed state of a count, aggregate or window chain as at most one batch of rows
    /// (`key`, `start` for windows, `count`, `sum`, `min`, `max` with values, and `end`, `fired`
    /// for windows); the state is unchanged. For checkpoints: `restore` takes it back.
    #[napi(ts_return_type = "Array<Record<string, unknown>>")]
    pub fn snapshot(&mut self, env: Env) -> napi::Result<JsRaw> {
        plan_call(&env, &mut self.plan, |_, p| p.snapshot())
    }

    /// Adds a snapshot's rows (from `snapshot`, possibly split by key) to the chain's state.
    #[napi(ts_args_type = "batch: Record<string, unknown>", ts_return_type = "Array<Record<string, unknown>>")]
    pub fn restore(&mut self, env: Env, batch: Unknown) -> napi::Result<JsRaw> {
        plan_call(&env, &mut self.plan, |e, p| {
            p.check_usable("restore")?;
            let b = unsafe { decode_batch(e, batch.raw(), "state")? };
            p.restore(b)?;
            Ok(vec![])
        })
    }

    /// The late rows of the last `push` of a window chain (rows later than the allowed lateness,
    /// not aggregated), with the columns that reached the window step, as at most one batch. A
    /// push replaces them; taking them clears them.
    #[napi(ts_return_type = "Array<Record<string, unknown>>")]
    pub fn take_late(&mut self, env: Env) -> napi::Result<JsRaw> {
        plan_call(&env, &mut self.plan, |_, p| Ok(p.take_late()))
    }

    /// Rows of a window chain that arrived later than the allowed lateness and were not aggregated.
    #[napi(getter)]
    pub fn late(&self, env: Env) -> napi::Result<f64> {
        let raw = env.raw();
        guard(|| Ok(self.plan.late())).map_err(|e| js::throw(raw, e))
    }

    /// True once `finish` has run.
    #[napi(getter)]
    pub fn finished(&self, env: Env) -> napi::Result<bool> {
        let raw = env.raw();
        guard(|| Ok(self.plan.finished())).map_err(|e| js::throw(raw, e))
    }
}
