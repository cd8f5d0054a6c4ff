//! Typed errors of the native core and the panic guard every exported entry runs inside.
//!
//! Each error becomes a JavaScript `Error` with a stable `code` (and, where it applies, `column`,
//! `index` or `position` properties) so callers branch on data, never on message text.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// Something the native core refuses to do, with enough detail to say where.
#[derive(Debug, Clone, PartialEq)]
pub enum NativeError {
    /// A malformed batch: wrong type, length mismatch, bad offsets, invalid UTF-8, bad event time.
    BadBatch { column: String, index: Option<usize>, message: String },
    /// An invalid chain spec or operator options.
    BadPlan(String),
    /// An expression that does not parse or does not type check; `position` counts UTF-16 units.
    BadExpr { position: usize, message: String },
    /// A bad scalar argument (partition count, watermark, minimum length).
    BadArg(String),
    /// A call that is not valid in the object's current state (push after finish).
    BadState(String),
    /// A Rust panic, caught before it could cross into Node.
    Panic(String),
    /// A failed napi call that is not the caller's fault.
    Internal(String),
    /// JavaScript code (a getter) threw while the core read its input; that exception propagates.
    Pending,
}

impl NativeError {
    /// The stable `code` property of the JavaScript error.
    pub fn code(&self) -> &'static str {
        match self {
            NativeError::BadBatch { .. } => "ERR_NATIVE_BAD_BATCH",
            NativeError::BadPlan(_) => "ERR_NATIVE_BAD_PLAN",
            NativeError::BadExpr { .. } => "ERR_NATIVE_BAD_EXPR",
            NativeError::BadArg(_) => "ERR_NATIVE_BAD_ARG",
            NativeError::BadState(_) => "ERR_NATIVE_BAD_STATE",
            NativeError::Panic(_) => "ERR_NATIVE_PANIC",
            NativeError::Internal(_) => "ERR_NATIVE_INTERNAL",
            NativeError::Pending => "ERR_NATIVE_JS_EXCEPTION",
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> String {
        match self {
            NativeError::BadBatch { column, index: Some(i), message } => {
                format!("bad batch: column {column:?} at index {i}: {message}")
            }
            NativeError::BadBatch { column, index: None, message } => {
                format!("bad batch: column {column:?}: {message}")
            }
            NativeError::BadPlan(m) => format!("bad plan: {m}"),
            NativeError::BadExpr { position, message } => {
                format!("bad expression at position {position}: {message}")
            }
            NativeError::BadArg(m) => format!("bad argument: {m}"),
            NativeError::BadState(m) => format!("bad state: {m}"),
            NativeError::Panic(m) => format!("native core panicked: {m}"),
            NativeError::Internal(m) => format!("internal error: {m}"),
            NativeError::Pending => "a JavaScript exception is pending".to_string(),
        }
    }

    /// Shorthand for a batch error at a row or byte index.
    pub fn batch_at(column: &str, index: usize, message: impl Into<String>) -> Self {
        NativeError::BadBatch { column: column.to_string(), index: Some(index), message: message.into() }
    }

    /// Shorthand for a batch error about a whole column.
    pub fn batch(column: &str, message: impl Into<String>) -> Self {
        NativeError::BadBatch { column: column.to_string(), index: None, message: message.into() }
    }
}

/// Result type of everything inside the crate.
pub type NResult<T> = Result<T, NativeError>;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static QUIET_HOOK: Once = Once::new();

/// Replaces the default panic hook (which prints to stderr) with one that records the message and
/// location for the guard to report. Installed once; it only affects this addon's copy of std.
fn install_hook() {
    QUIET_HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let text = payload_text(info.payload());
            LAST_PANIC.with(|slot| *slot.borrow_mut() = Some(format!("{text}{location}")));
        }));
    });
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning a panic into [`NativeError::Panic`] so that no unwind ever reaches Node.
pub fn guard<T>(f: impl FnOnce() -> NResult<T>) -> NResult<T> {
    install_hook();
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let recorded = LAST_PANIC.with(|slot| slot.borrow_mut().take());
            Err(NativeError::Panic(recorded.unwrap_or_else(|| payload_text(payload.as_ref()))))
        }
    }
}
