//! The high-water mark of a pipeline: where its next incremental run starts.

use rusqlite::{Connection, OptionalExtension, params};
use sluice_core::{HighWaterMark, StoreError};

use super::errors::sql;
use super::runs::{RUN_COLUMNS, RawRun};

/// The pipeline's last completed run, and the greatest `updated_at` of the
/// documents of `source` that it or an earlier run of the pipeline wrote.
pub(super) fn high_water_mark(
    conn: &Connection,
    pipeline: &str,
    source: &str,
) -> Result<Option<HighWaterMark>, StoreError> {
    let what = || format!("reading the high-water mark of pipeline {pipeline:?}");
    let run: Option<RawRun> = conn
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE pipeline = ?1 AND status = 'completed' \
             ORDER BY id DESC LIMIT 1"
        ))
        .and_then(|mut stmt| stmt.query_row([pipeline], RawRun::from_row).optional())
        .map_err(sql(what()))?;
    let Some(run) = run.map(RawRun::parse).transpose()? else {
        return Ok(None);
    };
    // Documents a later run rewrote are left out: at worst they are read again.
    let updated_at: Option<i64> = conn
        .prepare_cached(
            "SELECT max(updated_at) FROM documents WHERE source = ?1 AND run_id IN \
             (SELECT id FROM pipeline_runs WHERE pipeline = ?2 AND id <= ?3)",
        )
        .and_then(|mut stmt| stmt.query_row(params![source, pipeline, run.id], |row| row.get(0)))
        .map_err(sql(what()))?;
    Ok(Some(HighWaterMark { run, updated_at }))
}
