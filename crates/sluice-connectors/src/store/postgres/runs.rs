//! The run ledger: creating, reading and listing runs, moving a run through
//! its statuses, and marking the failures a retry run resolved.

use serde_json::Value;
use sluice_core::store::{NewRun, RunId, RunInfo, RunStatus};
use sluice_core::{Checkpoint, StoreError};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use super::encode::scrub;
use super::pool::Db;
use super::sql::{CREATE_RUN, LIST_RUNS, SELECT_RUN};
use crate::store::clip;

/// The newest run that holds (or held) the run slot, 0 if none.
pub(super) async fn active_run_id(db: &Db) -> Result<RunId, StoreError> {
    let id: Option<RunId> = sqlx::query_scalar(
        "SELECT id FROM pipeline_runs WHERE status IN ('running', 'stopping') ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await
    .map_err(db.sql("looking up the active run"))?;
    Ok(id.unwrap_or_default())
}

pub(super) async fn read_run(db: &Db, id: RunId) -> Result<Option<RunInfo>, StoreError> {
    let row = sqlx::query(SELECT_RUN)
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .map_err(db.sql(format!("reading run {id}")))?;
    row.map(|r| parse_run(db, &r)).transpose()
}

pub(super) fn parse_run(db: &Db, row: &PgRow) -> Result<RunInfo, StoreError> {
    let id: RunId = row.try_get(0).map_err(|e| db.decode(format!("reading a run: {e}"), Some(e)))?;
    let bad = |what: String| db.decode(format!("run {id} cannot be read: {what}"), None);
    let get = |e: sqlx::Error| bad(e.to_string());
    let status: String = row.try_get(2).map_err(get)?;
    let status = RunStatus::parse(&status).ok_or_else(|| bad(format!("unknown status {status:?}")))?;
    let checkpoint: Option<Value> = row.try_get(4).map_err(get)?;
    let checkpoint = match checkpoint {
        None => None,
        Some(value) => Some(serde_json::from_value::<Checkpoint>(value.clone()).map_err(|e| {
            bad(format!("its checkpoint is not a valid checkpoint ({e}): {}", clip(&value.to_string())))
        })?),
    };
    Ok(RunInfo {
        id,
        pipeline: row.try_get(1).map_err(get)?,
        status,
        phase: row.try_get(3).map_err(get)?,
        checkpoint,
        config: row.try_get(5).map_err(get)?,
        date_from: row.try_get(6).map_err(get)?,
        date_to: row.try_get(7).map_err(get)?,
        started_at: row.try_get(8).map_err(get)?,
        updated_at: row.try_get(9).map_err(get)?,
        finished_at: row.try_get(10).map_err(get)?,
        error: row.try_get(11).map_err(get)?,
    })
}

pub(super) async fn create_run(db: &Db, new: &NewRun) -> Result<RunInfo, StoreError> {
    let row = sqlx::query(CREATE_RUN)
        .bind(&new.pipeline)
        .bind(&new.phase)
        .bind(Json(&new.config))
        .bind(new.window.as_ref().map(|w| &w.from))
        .bind(new.window.as_ref().map(|w| &w.to))
        .fetch_one(db.pool())
        .await
        .map_err(db.sql(format!("creating a run of pipeline {:?}", new.pipeline)))?;
    parse_run(db, &row)
}

pub(super) async fn list_runs(db: &Db, limit: usize) -> Result<Vec<RunInfo>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = sqlx::query(LIST_RUNS).bind(limit).fetch_all(db.pool()).await.map_err(db.sql("listing runs"))?;
    rows.iter().map(|r| parse_run(db, r)).collect()
}

pub(super) async fn set_status(db: &Db, id: RunId, status: RunStatus, error: Option<&str>) -> Result<(), StoreError> {
    let what = format!("setting run {id} to {status}");
    let error = error.map(scrub);
    let result = match status {
        // Back to running (resume): the previous end and its error no longer apply.
        RunStatus::Running => {
            sqlx::query(
                "UPDATE pipeline_runs SET status = 'running', error = NULL, finished_at = NULL, updated_at = now()
             WHERE id = $1",
            )
            .bind(id)
            .execute(db.pool())
            .await
        }
        // Stopping only applies to an active run: a late request must not reopen a finished one.
        RunStatus::Stopping => {
            sqlx::query(
                "UPDATE pipeline_runs SET status = 'stopping', error = $2, updated_at = now()
             WHERE id = $1 AND status IN ('running', 'stopping')",
            )
            .bind(id)
            .bind(&error)
            .execute(db.pool())
            .await
        }
        RunStatus::Stopped | RunStatus::Failed | RunStatus::Completed => {
            sqlx::query(
                "UPDATE pipeline_runs SET status = $2, error = $3, finished_at = now(), updated_at = now()
             WHERE id = $1",
            )
            .bind(id)
            .bind(status.as_str())
            .bind(&error)
            .execute(db.pool())
            .await
        }
    };
    let changed = result.map_err(db.sql(&what))?.rows_affected();
    if changed == 0 {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pipeline_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await
            .map_err(db.sql(&what))?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("run {id}")));
        }
        tracing::debug!(run_id = id, "run {id} is no longer active; not marking it stopping");
    }
    Ok(())
}

/// Marks the failures of `run` that the retry run `retry_run` stored without failing again as resolved by it.
pub(super) async fn resolve_failures(db: &Db, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
    resolve_stored(db, run, retry_run, true, format!("resolving the failures of run {run} stored by run {retry_run}"))
        .await
}

/// Marks the failures of `run` without a record (pages not fetched) that `retry_run` fetched and stored as resolved by it.
pub(super) async fn resolve_refetched(db: &Db, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
    let what = format!("resolving the failed pages of run {run} fetched by run {retry_run}");
    resolve_stored(db, run, retry_run, false, what).await
}

/// Resolves `run`'s open failures (with or without a record) whose record `retry_run` stored and did not fail again.
async fn resolve_stored(
    db: &Db,
    run: RunId,
    retry_run: RunId,
    has_record: bool,
    what: String,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE failures SET resolved_by = $2
         WHERE run_id = $1 AND has_record = $3 AND resolved_by IS NULL
           AND EXISTS (SELECT 1 FROM documents d
                       WHERE d.source = failures.source AND d.id = failures.record_id AND d.run_id = $2)
           AND NOT EXISTS (SELECT 1 FROM failures again
                           WHERE again.run_id = $2 AND again.source = failures.source
                             AND again.record_id = failures.record_id)",
    )
    .bind(run)
    .bind(retry_run)
    .bind(has_record)
    .execute(db.pool())
    .await
    .map_err(db.sql(what))?;
    Ok(done.rows_affected())
}
