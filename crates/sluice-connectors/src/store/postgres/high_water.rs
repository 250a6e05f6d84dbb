//! The high-water mark of a pipeline: where its next incremental run starts.

use sluice_core::{HighWaterMark, StoreError};

use super::pool::Db;
use super::runs::parse_run;
use super::sql::LAST_COMPLETED_RUN;

/// The pipeline's last completed run, and the greatest `updated_at` of the
/// documents of `source` that it or an earlier run of the pipeline wrote.
pub(super) async fn high_water_mark(
    db: &Db,
    pipeline: &str,
    source: &str,
) -> Result<Option<HighWaterMark>, StoreError> {
    let what = || format!("reading the high-water mark of pipeline {pipeline:?}");
    let row = sqlx::query(LAST_COMPLETED_RUN).bind(pipeline).fetch_optional(db.pool()).await.map_err(db.sql(what()))?;
    let Some(run) = row.map(|r| parse_run(db, &r)).transpose()? else {
        return Ok(None);
    };
    // Documents a later run rewrote are left out: at worst they are read again.
    let updated_at: Option<i64> = sqlx::query_scalar(
        "SELECT max(updated_at) FROM documents WHERE source = $1 AND run_id IN \
         (SELECT id FROM pipeline_runs WHERE pipeline = $2 AND id <= $3)",
    )
    .bind(source)
    .bind(pipeline)
    .bind(run.id)
    .fetch_one(db.pool())
    .await
    .map_err(db.sql(what()))?;
    Ok(Some(HighWaterMark { run, updated_at }))
}
