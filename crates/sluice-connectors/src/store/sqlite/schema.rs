//! Connection settings (WAL, `synchronous=NORMAL`, busy timeout, cache)
//! and the numbered migrations, applied in one transaction, each once.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};

use crate::store::memo_vectors::split_vectors;
use crate::store::now_rfc3339;

/// The numbered migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../../migrations/sqlite/0002_stage_results.sql")),
    (3, include_str!("../../../migrations/sqlite/0003_phases.sql")),
    (4, include_str!("../../../migrations/sqlite/0004_memo_vectors.sql")),
    (6, include_str!("../../../migrations/sqlite/0006_pipeline_fingerprint.sql")),
    (8, include_str!("../../../migrations/sqlite/0008_deleted_documents.sql")),
];

/// The migration whose code part moves memo vectors out of the JSON.
const MEMO_VECTORS: i64 = 4;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache, in KiB (a negative `cache_size` is KiB).
const CACHE_KIB: i64 = 16 * 1024;

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "SQLite did not switch to WAL; commits will be slower");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Sets up the read-only connection: WAL is the file's, so only the waits and the cache.
pub(super) fn configure_reader(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(())
}

/// Applies the migrations the database lacks, all in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL
         )",
    )?;
    let current: i64 = tx.query_row("SELECT coalesce(max(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "the database is at schema version {current}, newer than this sluice knows ({known}); \
                 use a newer sluice"
            )),
        ));
    }
    let applied: Vec<i64> = {
        let mut versions = tx.prepare("SELECT version FROM schema_migrations")?;
        versions.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?
    };
    // Every migration not recorded yet, not only those past the highest: a
    // store may have a later one from a build that had it before an earlier one.
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        tx.execute_batch(sql).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(code, msg) => rusqlite::Error::SqliteFailure(
                code,
                Some(format!("migration {version:04}: {}", msg.unwrap_or_else(|| code.to_string()))),
            ),
            other => other,
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, now_rfc3339()],
        )?;
        if *version == MEMO_VECTORS {
            move_memo_vectors(&tx)?;
        }
        tracing::debug!(version, "applied SQLite migration");
    }
    tx.commit()
}

/// The code part of migration 0004: the vectors of rows written before it
/// move from their JSON to the `vectors` blob (SQL cannot write f32 bytes).
fn move_memo_vectors(tx: &Connection) -> rusqlite::Result<()> {
    let rows: Vec<(i64, String)> = tx
        .prepare("SELECT rowid, value FROM stage_results WHERE vectors IS NULL AND value LIKE '%\"embedding\":[%'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = tx.prepare("UPDATE stage_results SET value = ?2, vectors = ?3 WHERE rowid = ?1")?;
    let mut moved = 0usize;
    for (rowid, raw) in rows {
        // An unreadable value stays as it is: its lookups miss, as they did before.
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&raw) else { continue };
        let (json, blob) = split_vectors(&value);
        if blob.is_some() {
            update.execute(params![rowid, json.to_string(), blob])?;
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::info!(rows = moved, "SQLite migration 0004: stage result vectors moved to binary");
    }
    Ok(())
}
