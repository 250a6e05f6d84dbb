//! How sqlx errors become [`StoreError`]s: which are passing faults worth
//! retrying, the server's text with its detail and hint, and passwords kept
//! out of every message.

use std::fmt;
use std::str::FromStr;

use sluice_core::StoreError;
use sqlx::postgres::PgConnectOptions;

use crate::store::database_error;
use crate::util::secret::redact_url;

/// What a store on `url` calls itself in messages and logs: its URL with the password hidden.
pub(super) fn describe(url: &str) -> String {
    format!("postgres:{}", redact_url(url))
}

/// Writes a connection URL with its password hidden (a saved run's settings never hold it).
pub(super) fn serialize_redacted<S: serde::Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&redact_url(url))
}

/// Maps a sqlx error the store `describe` met while doing `what`:
/// connection trouble is `Unavailable` (retried), the rest `Database`.
pub(super) fn store_error(describe: &str, what: impl fmt::Display, e: sqlx::Error) -> StoreError {
    let message = format!("{describe}: {what}: {}", error_text(&e));
    if is_transient(&e) { StoreError::Unavailable(message) } else { database_error(message, e) }
}

/// Connection trouble worth retrying: the server went away, is restarting or
/// starting, refused or reset the connection, or the pool could not get one
/// in time; also serialization failures and deadlocks.
pub(super) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") // connection exception
                || matches!(
                    code.as_ref(),
                    "57P01" // admin_shutdown
                        | "57P02" // crash_shutdown
                        | "57P03" // cannot_connect_now (starting up, shutting down)
                        | "53300" // too_many_connections
                        | "40001" // serialization_failure
                        | "40P01" // deadlock_detected
                )
        }),
        _ => false,
    }
}

/// The error's text, with the server's detail and hint when it gave them.
pub(super) fn error_text(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut text = db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    text.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = pg.hint() {
                    text.push_str(&format!(" (hint: {hint})"));
                }
            }
            match db.code() {
                Some(code) => format!("{text} [SQLSTATE {code}]"),
                None => text,
            }
        }
        other => other.to_string(),
    }
}

/// Hides the password of `url` if an error message repeats it.
pub(super) fn redact_error(message: &str, url: &str) -> String {
    match PgConnectOptions::from_str(url).ok().and_then(|_| password_of(url)) {
        Some(password) if !password.is_empty() => message.replace(&password, "***"),
        _ => message.to_string(),
    }
}

fn password_of(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    Some(userinfo.split_once(':')?.1.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_connection_trouble_only() {
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
    }
}
