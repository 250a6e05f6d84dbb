//! The run ledger's rows: reading a run (its JSON columns parsed, an
//! unreadable one an error naming the run) and finding the active one.

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::Value;
use sluice_core::store::{RunId, RunInfo, RunStatus};
use sluice_core::{Checkpoint, StoreError};

use super::errors::sql;
use crate::store::{clip, decode_error};

pub(super) const RUN_COLUMNS: &str = "id, pipeline, status, phase, checkpoint, config, date_from, date_to, \
                           started_at, updated_at, finished_at, error";

/// A `pipeline_runs` row before its JSON columns are parsed.
pub(super) struct RawRun {
    id: RunId,
    pipeline: String,
    status: String,
    phase: String,
    checkpoint: Option<String>,
    config: String,
    date_from: Option<String>,
    date_to: Option<String>,
    started_at: String,
    updated_at: String,
    finished_at: Option<String>,
    error: Option<String>,
}

impl RawRun {
    pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            pipeline: row.get(1)?,
            status: row.get(2)?,
            phase: row.get(3)?,
            checkpoint: row.get(4)?,
            config: row.get(5)?,
            date_from: row.get(6)?,
            date_to: row.get(7)?,
            started_at: row.get(8)?,
            updated_at: row.get(9)?,
            finished_at: row.get(10)?,
            error: row.get(11)?,
        })
    }

    pub(super) fn parse(self) -> Result<RunInfo, StoreError> {
        let id = self.id;
        let bad = |what: String| decode_error(format!("run {id} cannot be read: {what}"));
        let status = RunStatus::parse(&self.status).ok_or_else(|| bad(format!("unknown status {:?}", self.status)))?;
        let checkpoint = match self.checkpoint.as_deref() {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Checkpoint>(text)
                    .map_err(|e| bad(format!("its checkpoint is not a valid checkpoint ({e}): {}", clip(text))))?,
            ),
        };
        let config = serde_json::from_str::<Value>(&self.config)
            .map_err(|e| bad(format!("its config is not JSON ({e}): {}", clip(&self.config))))?;
        Ok(RunInfo {
            id,
            pipeline: self.pipeline,
            status,
            phase: self.phase,
            checkpoint,
            config,
            date_from: self.date_from,
            date_to: self.date_to,
            started_at: self.started_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            error: self.error,
        })
    }
}

pub(super) fn read_run(conn: &Connection, id: RunId) -> Result<Option<RunInfo>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], RawRun::from_row).optional())
        .map_err(sql(format!("reading run {id}")))?;
    raw.map(RawRun::parse).transpose()
}

/// The newest run that holds (or held) the run slot, 0 if none.
pub(super) fn active_run_id(conn: &Connection) -> Result<RunId, StoreError> {
    conn.prepare_cached("SELECT id FROM pipeline_runs WHERE status IN ('running', 'stopping') ORDER BY id DESC LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(sql("looking up the active run"))
}
