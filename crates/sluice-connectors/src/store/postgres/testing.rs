//! Test support: a scratch database of its own for each test or benchmark,
//! on a server whose user may create databases. Compiled for this crate's
//! tests and with the `testing` feature, never in a plain build.

use std::str::FromStr;

use sluice_core::StoreError;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::errors::{describe, error_text, store_error};
use crate::store::{contract_error, database_error, schema_error};

/// `url` with its database replaced by `database` (the path of the URL).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Creates a new, empty database named `prefix` plus a unique suffix on the
/// server of `admin_url` (whose user may create databases), owned by `owner`
/// when given; returns its name and URL. For tests and benchmarks, which
/// each take a database of their own.
pub async fn create_scratch_database(
    admin_url: &str,
    prefix: &str,
    owner: Option<&str>,
) -> Result<(String, String), StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let name = format!("{prefix}_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') || name.len() > 63 {
        return Err(contract_error(format!("{name:?} is not a usable database name (a-z, 0-9, _; 63 at most)")));
    }
    let describe = describe(admin_url);
    let fail = |e: sqlx::Error| store_error(&describe, format!("creating database {name}"), e);
    let options = PgConnectOptions::from_str(admin_url)
        .map_err(|e| schema_error(format!("{describe}: not a valid PostgreSQL URL: {e}")))?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(fail)?;
    let owner_clause = match owner {
        Some(owner) if owner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => format!(" OWNER {owner}"),
        Some(owner) => return Err(contract_error(format!("{owner:?} is not a usable role name"))),
        None => String::new(),
    };
    let created =
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}{owner_clause}"))).execute(&mut conn).await;
    let _ = conn.close().await;
    created.map_err(fail)?;
    Ok((name.clone(), url_with_database(admin_url, &name)))
}

/// Drops a database made by [`create_scratch_database`], closing its connections.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(contract_error(format!("{name:?} is not a database this would drop")));
    }
    let describe = describe(admin_url);
    let fail = |e: sqlx::Error| database_error(format!("{describe}: dropping database {name}: {}", error_text(&e)), e);
    let options = PgConnectOptions::from_str(admin_url)
        .map_err(|e| schema_error(format!("{describe}: not a valid PostgreSQL URL: {e}")))?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(fail)?;
    let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    dropped.map(|_| ()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(url_with_database("postgres://u:p@h:5/postgres", "t1"), "postgres://u:p@h:5/t1");
        assert_eq!(url_with_database("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(url_with_database("postgresql://h/db?sslmode=disable", "t1"), "postgresql://h/t1?sslmode=disable");
    }
}
