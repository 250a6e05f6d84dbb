//! What status shows of a distributed run: its partitions and the workers.

use serde::Serialize;
use serde_json::Value;
use sluice_core::store::RunId;
use sluice_core::{Checkpoint, StoreError};
use sqlx::Row;

use super::super::PostgresStore;

/// A partition of a distributed run, as status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionRow {
    pub name: String,
    /// Its step: 0 for a source partition, then the later steps in phase order.
    pub step: i32,
    /// The later phase an id range runs (`None`: a source partition or the whole-corpus task).
    pub phase: Option<String>,
    /// An id range's start (exclusive; `None`: the first document) ...
    pub range_after: Option<String>,
    /// ... and its end (inclusive; `None`: the last document).
    pub range_last: Option<String>,
    pub done: bool,
    /// The worker holding the lease (or that held it last).
    pub owner: Option<String>,
    /// Seconds the lease still runs (none or negative: free).
    pub lease_left_secs: Option<f64>,
    pub epoch: i64,
    pub commit_seq: i64,
    pub checkpoint: Value,
}

impl PartitionRow {
    /// The owner while the lease is valid.
    pub fn leased_by(&self) -> Option<&str> {
        match self.lease_left_secs {
            Some(left) if left > 0.0 && !self.done => self.owner.as_deref(),
            _ => None,
        }
    }

    /// The partition's checkpoint, when it reads as one.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        serde_json::from_value(self.checkpoint.clone()).ok()
    }

    /// An id range of a later phase, as `(after, last]`.
    pub fn range_text(&self) -> Option<String> {
        let end = |id: &Option<String>, open: &str| id.as_deref().map_or(open.to_string(), |id| format!("{id:?}"));
        self.phase.as_ref().map(|_| format!("({}, {}]", end(&self.range_after, "start"), end(&self.range_last, "end")))
    }
}

/// A worker, as status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub host: String,
    pub pid: i64,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// It heartbeat within its lease and did not leave.
    pub alive: bool,
    pub refused_commits: i64,
}

impl PostgresStore {
    pub async fn run_partitions(&self, run: RunId) -> Result<Vec<PartitionRow>, StoreError> {
        self.ready().await?;
        let db = self.db();
        let what = format!("reading the partitions of run {run}");
        let rows = sqlx::query(
            "SELECT name, done, owner, extract(epoch FROM lease_until - now())::float8, epoch, commit_seq, checkpoint,
                    ordinal, phase, lag(range_last) OVER (PARTITION BY ordinal ORDER BY name), range_last
             FROM run_partitions WHERE run_id = $1 ORDER BY ordinal, name",
        )
        .bind(run)
        .fetch_all(db.pool())
        .await
        .map_err(db.sql(&what))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| db.decode(format!("{what}: {e}"), None);
                Ok(PartitionRow {
                    name: r.try_get(0).map_err(get)?,
                    step: r.try_get(7).map_err(get)?,
                    phase: r.try_get(8).map_err(get)?,
                    range_after: r.try_get(9).map_err(get)?,
                    range_last: r.try_get(10).map_err(get)?,
                    done: r.try_get(1).map_err(get)?,
                    owner: r.try_get(2).map_err(get)?,
                    lease_left_secs: r.try_get(3).map_err(get)?,
                    epoch: r.try_get(4).map_err(get)?,
                    commit_seq: r.try_get(5).map_err(get)?,
                    checkpoint: r.try_get(6).map_err(get)?,
                })
            })
            .collect()
    }

    /// The workers that joined, newest heartbeat first.
    pub async fn workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        self.ready().await?;
        let db = self.db();
        let what = "reading the workers";
        let rows = sqlx::query(
            "SELECT id, host, pid, extract(epoch FROM now() - last_heartbeat)::float8,
                    stopped_at IS NULL AND last_heartbeat > now() - make_interval(secs => lease_secs),
                    refused_commits
             FROM workers ORDER BY last_heartbeat DESC, id",
        )
        .fetch_all(db.pool())
        .await
        .map_err(db.sql(what))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| db.decode(format!("{what}: {e}"), None);
                Ok(WorkerRow {
                    id: r.try_get(0).map_err(get)?,
                    host: r.try_get(1).map_err(get)?,
                    pid: r.try_get(2).map_err(get)?,
                    heartbeat_age_secs: r.try_get(3).map_err(get)?,
                    alive: r.try_get(4).map_err(get)?,
                    refused_commits: r.try_get(5).map_err(get)?,
                })
            })
            .collect()
    }
}
