//! How rusqlite errors become [`StoreError`]s: busy, locked and I/O errors
//! are passing faults the engine retries; the rest are not. Opening errors
//! get a hint at the likely cause.

use std::fmt;

use rusqlite::ErrorCode;
use serde::Serialize;
use sluice_core::StoreError;

use crate::store::{contract_error, database_error};

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
pub(super) fn classify(e: rusqlite::Error, message: String) -> StoreError {
    if is_passing(&e) { StoreError::Unavailable(message) } else { database_error(message, e) }
}

/// Like [`classify`], for errors opening or setting up the database.
pub(super) fn classify_setup(e: rusqlite::Error, message: String) -> StoreError {
    if is_passing(&e) {
        StoreError::Unavailable(message)
    } else {
        StoreError::Schema { message, source: Some(std::sync::Arc::new(e)) }
    }
}

fn is_passing(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure)
    )
}

/// Maps a SQLite error met while doing `what`.
pub(super) fn sql(what: impl fmt::Display) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| {
        let message = format!("{what}: {e}");
        classify(e, message)
    }
}

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| contract_error(format!("{what} {value} is too large to store")))
}

pub(super) fn json(value: &impl Serialize, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| contract_error(format!("cannot encode {what} as JSON: {e}")))
}
