//! How rusqlite errors become [`StoreError`]s: busy, locked and I/O errors
//! are passing faults the engine retries; the rest are not. Opening errors
//! get a hint at the likely cause.

use std::fmt;

use rusqlite::ErrorCode;
use serde::Serialize;
use sluice_core::StoreError;

pub(super) fn open_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::CannotOpen) => " (is the directory there and writable?)",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => " (are the file and its directory writable?)",
        Some(ErrorCode::NotADatabase) => " (the file is not a SQLite database)",
        Some(ErrorCode::DatabaseCorrupt) => " (the database file is damaged)",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => " (another process holds it locked)",
        _ => "",
    }
}

/// Busy, locked and I/O errors pass: the engine retries them. The rest do not.
pub(super) fn classify(e: &rusqlite::Error, message: String) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable(message)
        }
        _ => StoreError::Other(message),
    }
}

/// Maps a SQLite error met while doing `what`.
pub(super) fn sql(what: impl fmt::Display) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| classify(&e, format!("{what}: {e}"))
}

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Other(format!("{what} {value} is too large to store")))
}

pub(super) fn json(value: &impl Serialize, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("cannot encode {what} as JSON: {e}")))
}
