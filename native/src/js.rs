//! The thin unsafe layer between JavaScript values and the crate's plain Rust data.
//!
//! Reading: JS values are classified and typed arrays are borrowed in place (no copy). Writing:
//! results are built as an [`Out`] tree of owned Rust data and only then turned into JS values,
//! with numeric vectors handed over as external array buffers (no copy). Keeping the two phases
//! apart means no borrowed input is alive while JavaScript code (getters, setters) can run.

use std::borrow::Cow;
use std::ffi::c_void;
use std::ptr;

use napi::bindgen_prelude::{Float64Array, ToNapiValue, Uint32Array, Uint8Array};
use napi::sys;

use crate::error::{NResult, NativeError};

pub type Env = sys::napi_env;
pub type Raw = sys::napi_value;

/// Fails with [`NativeError::Pending`] when a napi call failed because JavaScript threw.
fn check(env: Env, status: sys::napi_status, what: &str) -> NResult<()> {
    if status == sys::Status::napi_ok {
        return Ok(());
    }
    let mut pending = false;
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if pending {
        Err(NativeError::Pending)
    } else {
        Err(NativeError::Internal(format!("{what} failed with napi status {status}")))
    }
}

/// The JavaScript type of a value, as this crate distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Undefined,
    Null,
    Boolean,
    Number,
    String,
    Symbol,
    BigInt,
    Function,
    Array,
    TypedArray(i32),
    Object,
    Other,
}

impl Kind {
    /// How error messages name this kind.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Undefined => "undefined",
            Kind::Null => "null",
            Kind::Boolean => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Symbol => "a symbol",
            Kind::BigInt => "a bigint",
            Kind::Function => "a function",
            Kind::Array => "an array",
            Kind::TypedArray(t) => match t {
                sys::TypedarrayType::int8_array => "an Int8Array",
                sys::TypedarrayType::uint8_array => "a Uint8Array",
                sys::TypedarrayType::uint8_clamped_array => "a Uint8ClampedArray",
                sys::TypedarrayType::int16_array => "an Int16Array",
                sys::TypedarrayType::uint16_array => "a Uint16Array",
                sys::TypedarrayType::int32_array => "an Int32Array",
                sys::TypedarrayType::uint32_array => "a Uint32Array",
                sys::TypedarrayType::float32_array => "a Float32Array",
                sys::TypedarrayType::float64_array => "a Float64Array",
                sys::TypedarrayType::bigint64_array => "a BigInt64Array",
                sys::TypedarrayType::biguint64_array => "a BigUint64Array",
                _ => "a typed array",
            },
            Kind::Object => "an object",
            Kind::Other => "an unsupported value",
        }
    }
}

/// Classifies `v` without running any JavaScript.
pub fn kind(env: Env, v: Raw) -> NResult<Kind> {
    let mut t = 0;
    check(env, unsafe { sys::napi_typeof(env, v, &mut t) }, "napi_typeof")?;
    Ok(match t {
        sys::ValueType::napi_undefined => Kind::Undefined,
        sys::ValueType::napi_null => Kind::Null,
        sys::ValueType::napi_boolean => Kind::Boolean,
        sys::ValueType::napi_number => Kind::Number,
        sys::ValueType::napi_string => Kind::String,
        sys::ValueType::napi_symbol => Kind::Symbol,
        sys::ValueType::napi_bigint => Kind::BigInt,
        sys::ValueType::napi_function => Kind::Function,
        sys::ValueType::napi_object => {
            let mut is = false;
            check(env, unsafe { sys::napi_is_typedarray(env, v, &mut is) }, "napi_is_typedarray")?;
            if is {
                let mut ty = 0;
                check(
                    env,
                    unsafe {
                        sys::napi_get_typedarray_info(
                            env,
                            v,
                            &mut ty,
                            ptr::null_mut(),
                            ptr::null_mut(),
                            ptr::null_mut(),
                            ptr::null_mut(),
                        )
                    },
                    "napi_get_typedarray_info",
                )?;
                return Ok(Kind::TypedArray(ty));
            }
            check(env, unsafe { sys::napi_is_array(env, v, &mut is) }, "napi_is_array")?;
            if is {
                Kind::Array
            } else {
                Kind::Object
            }
        }
        _ => Kind::Other,
    })
}

/// Borrows the elements of a typed array of element type `T` in place, or copies them when the
/// array lives in a `SharedArrayBuffer` (another thread could change shared memory while Rust reads
/// it, so shared data is snapshotted first and then validated).
///
/// # Safety
/// `v` must be a typed array whose element type is `T` (checked by the caller through [`kind`]),
/// and the returned slice must not be used after JavaScript code has had a chance to run (it could
/// detach or resize the buffer).
pub unsafe fn typed_slice<'a, T: Copy>(env: Env, v: Raw) -> NResult<Cow<'a, [T]>> {
    let mut ty = 0;
    let mut len = 0usize;
    let mut data: *mut c_void = ptr::null_mut();
    let mut buffer = ptr::null_mut();
    check(
        env,
        unsafe { sys::napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut buffer, ptr::null_mut()) },
        "napi_get_typedarray_info",
    )?;
    if len == 0 || data.is_null() {
        return Ok(Cow::Borrowed(&[]));
    }
    let mut plain = false;
    check(env, unsafe { sys::napi_is_arraybuffer(env, buffer, &mut plain) }, "napi_is_arraybuffer")?;
    // Typed arrays are always aligned to their element size (JS checks byteOffset on construction).
    let elements = data as *const T;
    if plain {
        Ok(Cow::Borrowed(unsafe { std::slice::from_raw_parts(elements, len) }))
    } else {
        let mut copy = Vec::with_capacity(len);
        unsafe {
            ptr::copy_nonoverlapping(elements, copy.as_mut_ptr(), len);
            copy.set_len(len);
        }
        Ok(Cow::Owned(copy))
    }
}

/// Reads `obj[name]` (this may run a getter).
pub fn get_named(env: Env, obj: Raw, name: &str) -> NResult<Raw> {
    let key = create_string(env, name)?;
    let mut out = ptr::null_mut();
    check(env, unsafe { sys::napi_get_property(env, obj, key, &mut out) }, "napi_get_property")?;
    Ok(out)
}

/// The own enumerable string keys of `obj`, in JavaScript's property order.
pub fn own_keys(env: Env, obj: Raw) -> NResult<Vec<String>> {
    let mut arr = ptr::null_mut();
    check(
        env,
        unsafe {
            sys::napi_get_all_property_names(
                env,
                obj,
                sys::KeyCollectionMode::own_only,
                sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
                sys::KeyConversion::numbers_to_strings,
                &mut arr,
            )
        },
        "napi_get_all_property_names",
    )?;
    let mut len = 0u32;
    check(env, unsafe { sys::napi_get_array_length(env, arr, &mut len) }, "napi_get_array_length")?;
    let mut keys = Vec::with_capacity(len as usize);
    for i in 0..len {
        let mut k = ptr::null_mut();
        check(env, unsafe { sys::napi_get_element(env, arr, i, &mut k) }, "napi_get_element")?;
        keys.push(get_string(env, k)?);
    }
    Ok(keys)
}

/// The elements of a JavaScript array.
pub fn array_elements(env: Env, arr: Raw) -> NResult<Vec<Raw>> {
    let mut len = 0u32;
    check(env, unsafe { sys::napi_get_array_length(env, arr, &mut len) }, "napi_get_array_length")?;
    let mut out = Vec::with_capacity(len.min(1 << 16) as usize);
    for i in 0..len {
        let mut e = ptr::null_mut();
        check(env, unsafe { sys::napi_get_element(env, arr, i, &mut e) }, "napi_get_element")?;
        out.push(e);
    }
    Ok(out)
}

/// The UTF-8 text of a JavaScript string (lone surrogates become U+FFFD).
pub fn get_string(env: Env, v: Raw) -> NResult<String> {
    let mut len = 0usize;
    check(env, unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) }, "napi_get_value_string_utf8")?;
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    check(
        env,
        unsafe { sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), len + 1, &mut written) },
        "napi_get_value_string_utf8",
    )?;
    buf.truncate(written);
    String::from_utf8(buf).map_err(|e| NativeError::Internal(format!("napi returned invalid UTF-8: {e}")))
}

/// The value of a JavaScript number.
pub fn get_f64(env: Env, v: Raw) -> NResult<f64> {
    let mut x = 0.0;
    check(env, unsafe { sys::napi_get_value_double(env, v, &mut x) }, "napi_get_value_double")?;
    Ok(x)
}

/// The value of a JavaScript boolean.
pub fn get_bool(env: Env, v: Raw) -> NResult<bool> {
    let mut b = false;
    check(env, unsafe { sys::napi_get_value_bool(env, v, &mut b) }, "napi_get_value_bool")?;
    Ok(b)
}

fn create_string(env: Env, s: &str) -> NResult<Raw> {
    let mut out = ptr::null_mut();
    check(
        env,
        unsafe { sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut out) },
        "napi_create_string_utf8",
    )?;
    Ok(out)
}

/// A plain JavaScript value read for configuration (chain specs, options), never for batch data.
#[derive(Debug, Clone, PartialEq)]
pub enum JsVal {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<JsVal>),
    Obj(Vec<(String, JsVal)>),
    Other(&'static str),
}

impl JsVal {
    /// How error messages name this value's type.
    pub fn describe(&self) -> &'static str {
        match self {
            JsVal::Undefined => "undefined",
            JsVal::Null => "null",
            JsVal::Bool(_) => "a boolean",
            JsVal::Num(_) => "a number",
            JsVal::Str(_) => "a string",
            JsVal::Arr(_) => "an array",
            JsVal::Obj(_) => "an object",
            JsVal::Other(d) => d,
        }
    }
}

/// Reads a configuration value: plain objects, arrays and primitives, at most `depth` levels deep.
pub fn read_jsval(env: Env, v: Raw, depth: usize) -> NResult<JsVal> {
    let k = kind(env, v)?;
    Ok(match k {
        Kind::Undefined => JsVal::Undefined,
        Kind::Null => JsVal::Null,
        Kind::Boolean => JsVal::Bool(get_bool(env, v)?),
        Kind::Number => JsVal::Num(get_f64(env, v)?),
        Kind::String => JsVal::Str(get_string(env, v)?),
        Kind::Array if depth > 0 => {
            let mut items = Vec::new();
            for e in array_elements(env, v)? {
                items.push(read_jsval(env, e, depth - 1)?);
            }
            JsVal::Arr(items)
        }
        Kind::Object if depth > 0 => {
            let mut fields = Vec::new();
            for key in own_keys(env, v)? {
                let value = get_named(env, v, &key)?;
                fields.push((key, read_jsval(env, value, depth - 1)?));
            }
            JsVal::Obj(fields)
        }
        other => JsVal::Other(other.describe()),
    })
}

/// A result built in Rust, turned into JavaScript values only once the computation is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Num(f64),
    F64(Vec<f64>),
    U8(Vec<u8>),
    U32(Vec<u32>),
    Arr(Vec<Out>),
    Obj(Vec<(String, Out)>),
}

/// Builds the JavaScript value of `out`. Typed arrays take ownership of the vectors (no copy).
pub fn to_js(env: Env, out: Out) -> NResult<Raw> {
    let napi_err = |e: napi::Error| NativeError::Internal(format!("creating a typed array failed: {e}"));
    match out {
        Out::Num(x) => {
            let mut v = ptr::null_mut();
            check(env, unsafe { sys::napi_create_double(env, x, &mut v) }, "napi_create_double")?;
            Ok(v)
        }
        Out::F64(data) => unsafe { Float64Array::to_napi_value(env, Float64Array::new(data)) }.map_err(napi_err),
        Out::U8(data) => unsafe { Uint8Array::to_napi_value(env, Uint8Array::new(data)) }.map_err(napi_err),
        Out::U32(data) => unsafe { Uint32Array::to_napi_value(env, Uint32Array::new(data)) }.map_err(napi_err),
        Out::Arr(items) => {
            let mut arr = ptr::null_mut();
            check(
                env,
                unsafe { sys::napi_create_array_with_length(env, items.len(), &mut arr) },
                "napi_create_array_with_length",
            )?;
            for (i, item) in items.into_iter().enumerate() {
                let v = to_js(env, item)?;
                check(env, unsafe { sys::napi_set_element(env, arr, i as u32, v) }, "napi_set_element")?;
            }
            Ok(arr)
        }
        Out::Obj(fields) => {
            let mut obj = ptr::null_mut();
            check(env, unsafe { sys::napi_create_object(env, &mut obj) }, "napi_create_object")?;
            for (name, value) in fields {
                let key = create_string(env, &name)?;
                let v = to_js(env, value)?;
                check(env, unsafe { sys::napi_set_property(env, obj, key, v) }, "napi_set_property")?;
            }
            Ok(obj)
        }
    }
}

/// Throws `err` as a JavaScript `Error` carrying `code` and its location fields, and returns the
/// napi error that tells napi-rs an exception is already pending.
pub fn throw(env: Env, err: NativeError) -> napi::Error {
    let pending_marker = || napi::Error::new(napi::Status::PendingException, String::new());
    let mut pending = false;
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if pending || matches!(err, NativeError::Pending) {
        return pending_marker();
    }
    let code = err.code();
    let message = err.message();
    let build = || -> NResult<Raw> {
        let code_v = create_string(env, code)?;
        let msg_v = create_string(env, &message)?;
        let mut error = ptr::null_mut();
        check(env, unsafe { sys::napi_create_error(env, code_v, msg_v, &mut error) }, "napi_create_error")?;
        let mut fields: Vec<(&str, Raw)> = Vec::new();
        match &err {
            NativeError::BadBatch { column, index, .. } => {
                fields.push(("column", create_string(env, column)?));
                if let Some(i) = index {
                    fields.push(("index", to_js(env, Out::Num(*i as f64))?));
                }
            }
            NativeError::BadExpr { position, .. } => fields.push(("position", to_js(env, Out::Num(*position as f64))?)),
            _ => {}
        }
        for (name, value) in fields {
            let key = create_string(env, name)?;
            check(env, unsafe { sys::napi_set_property(env, error, key, value) }, "napi_set_property")?;
        }
        Ok(error)
    };
    match build() {
        Ok(error) if unsafe { sys::napi_throw(env, error) } == sys::Status::napi_ok => pending_marker(),
        _ => napi::Error::new(napi::Status::GenericFailure, format!("{code}: {message}")),
    }
}

/// A JavaScript value already built, returned as is from an exported function.
pub struct JsRaw(pub Raw);

impl ToNapiValue for JsRaw {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        Ok(val.0)
    }
}
