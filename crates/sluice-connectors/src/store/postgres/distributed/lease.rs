//! Leases: workers joining, claiming a partition, extending the lease,
//! releasing it, marking a partition done, and completing a run whose
//! partitions are all done.

use serde_json::Value;
use sluice_core::store::RunId;
use sluice_core::{Checkpoint, RunStatus, StoreError};
use sqlx::types::Json;
use sqlx::{PgTransaction, Row};

use super::super::PostgresStore;
use super::aggregate::{Part, aggregate};
use super::fence::Fence;
use super::phases::open_next_step;

/// Who a worker is: `host:pid:nonce`, unique across restarts of a pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerId {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

/// A partition a worker claimed: what to run and the fence to commit it under.
#[derive(Clone, Debug)]
pub struct Claim {
    pub fence: Fence,
    /// The later-phases task or an id range rather than a source partition.
    pub later: bool,
    /// An id range of a per-document later phase (`None`: a source partition or the whole-corpus task).
    pub range: Option<IdRange>,
    /// Where the partition stands (its last committed checkpoint).
    pub checkpoint: Checkpoint,
    /// Commits made so far (by any owner).
    pub commit_seq: i64,
}

/// The id range of a per-document later phase a partition row covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub phase: String,
    /// The range's last stored document id, inclusive (`None`: to the end).
    /// Its start is the cursor of the row's first checkpoint.
    pub last: Option<String>,
}

impl PostgresStore {
    /// Adds (or revives) the worker's row.
    pub async fn register_worker(&self, worker: &WorkerId, lease_secs: f64) -> Result<(), StoreError> {
        self.ready().await?;
        let db = self.db();
        sqlx::query(
            "INSERT INTO workers (id, host, pid, lease_secs) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET last_heartbeat = now(), stopped_at = NULL",
        )
        .bind(&worker.id)
        .bind(&worker.host)
        .bind(i64::from(worker.pid))
        .bind(lease_secs)
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("registering worker {}", worker.id)))?;
        Ok(())
    }

    /// The worker's own heartbeat (status shows it alive); `left`: it stopped cleanly.
    pub async fn worker_heartbeat(&self, worker: &WorkerId, left: bool) -> Result<(), StoreError> {
        self.ready().await?;
        let db = self.db();
        sqlx::query(
            "UPDATE workers SET last_heartbeat = now(), stopped_at = CASE WHEN $2 THEN now() END WHERE id = $1",
        )
        .bind(&worker.id)
        .bind(left)
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("heartbeat of worker {}", worker.id)))?;
        Ok(())
    }

    /// Counts a commit of this worker that the fence refused.
    pub async fn note_refused_commit(&self, worker: &str) -> Result<(), StoreError> {
        self.ready().await?;
        let db = self.db();
        sqlx::query("UPDATE workers SET refused_commits = refused_commits + 1 WHERE id = $1")
            .bind(worker)
            .execute(db.pool())
            .await
            .map_err(db.sql(format!("counting a refused commit of worker {worker}")))?;
        Ok(())
    }

    /// Claims one partition of a running distributed run whose lease is free
    /// or expired (skipping rows another transaction holds), for `lease_secs`,
    /// bumping its epoch. Runs in `skip` are left alone (this worker cannot
    /// build their pipeline). A row of a later step is claimable only when
    /// every row of the steps before it is done (rows of a step are created
    /// only then anyway; this also holds for runs submitted before 0010).
    pub async fn claim_partition(
        &self,
        worker: &str,
        lease_secs: f64,
        skip: &[RunId],
    ) -> Result<Option<Claim>, StoreError> {
        self.ready().await?;
        let db = self.db();
        let row = sqlx::query(
            "UPDATE run_partitions p
             SET epoch = p.epoch + 1, owner = $1, lease_until = now() + make_interval(secs => $2),
                 updated_at = now()
             FROM (SELECT r.run_id, r.name FROM run_partitions r
                   JOIN pipeline_runs pr ON pr.id = r.run_id
                   WHERE pr.distributed AND pr.status = 'running' AND NOT r.done
                     AND (r.lease_until IS NULL OR r.lease_until < now())
                     AND r.run_id <> ALL($3)
                     AND NOT EXISTS (SELECT 1 FROM run_partitions o
                                     WHERE o.run_id = r.run_id AND o.ordinal < r.ordinal AND NOT o.done)
                   ORDER BY r.run_id, r.ordinal, r.name
                   LIMIT 1
                   FOR UPDATE OF r SKIP LOCKED) AS c
             WHERE p.run_id = c.run_id AND p.name = c.name
             RETURNING p.run_id, p.name, p.later, p.epoch, p.checkpoint, p.commit_seq, p.phase, p.range_last",
        )
        .bind(worker)
        .bind(lease_secs)
        .bind(skip)
        .fetch_optional(db.pool())
        .await
        .map_err(db.sql("claiming a partition"))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: sqlx::Error| db.decode(format!("reading a claimed partition: {e}"), None);
        let run: RunId = row.try_get(0).map_err(get)?;
        let partition: String = row.try_get(1).map_err(get)?;
        let checkpoint: Value = row.try_get(4).map_err(get)?;
        let checkpoint: Checkpoint = serde_json::from_value(checkpoint).map_err(|e| {
            db.decode(format!("partition {partition:?} of run {run} has no valid checkpoint: {e}"), None)
        })?;
        Ok(Some(Claim {
            fence: Fence { run, partition, epoch: row.try_get(3).map_err(get)?, owner: worker.to_string() },
            later: row.try_get(2).map_err(get)?,
            range: row
                .try_get::<Option<String>, _>(6)
                .map_err(get)?
                .map(|phase| Ok(IdRange { phase, last: row.try_get(7)? }))
                .transpose()
                .map_err(get)?,
            checkpoint,
            commit_seq: row.try_get(5).map_err(get)?,
        }))
    }

    /// Extends the lease of a claimed partition, in its own transaction.
    /// `None`: the lease moved (or the partition is done); else the run's status.
    pub async fn heartbeat_partition(&self, fence: &Fence, lease_secs: f64) -> Result<Option<RunStatus>, StoreError> {
        self.ready().await?;
        let db = self.db();
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE run_partitions p SET lease_until = now() + make_interval(secs => $4)
             WHERE run_id = $1 AND name = $2 AND epoch = $3 AND NOT done
             RETURNING (SELECT status FROM pipeline_runs WHERE id = p.run_id)",
        )
        .bind(fence.run)
        .bind(&fence.partition)
        .bind(fence.epoch)
        .bind(lease_secs)
        .fetch_optional(db.pool())
        .await
        .map_err(db.sql(format!("heartbeat of {}", fence.describe())))?;
        Ok(status.as_deref().and_then(RunStatus::parse))
    }

    /// Gives a partition's lease up at once (a stop, a refused run), so another worker may claim it.
    pub async fn release_partition(&self, fence: &Fence) -> Result<(), StoreError> {
        self.ready().await?;
        let db = self.db();
        sqlx::query(
            "UPDATE run_partitions SET lease_until = NULL, updated_at = now()
             WHERE run_id = $1 AND name = $2 AND epoch = $3",
        )
        .bind(fence.run)
        .bind(&fence.partition)
        .bind(fence.epoch)
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("releasing {}", fence.describe())))?;
        Ok(())
    }

    /// Marks a partition done (fenced like a commit); false: the lease had
    /// moved. When it was the last of its step, the next step's rows are
    /// created in the same transaction, under the run row's lock.
    pub async fn finish_partition(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.ready().await?;
        let db = self.db();
        let what = format!("marking {} done", fence.describe());
        let mut tx = db.pool().begin().await.map_err(db.sql(&what))?;
        lock_run(&mut tx, fence.run).await.map_err(db.sql(&what))?;
        let done = sqlx::query(
            "UPDATE run_partitions SET done = true, lease_until = NULL, updated_at = now()
             WHERE run_id = $1 AND name = $2 AND epoch = $3 AND NOT done",
        )
        .bind(fence.run)
        .bind(&fence.partition)
        .bind(fence.epoch)
        .execute(&mut *tx)
        .await
        .map_err(db.sql(&what))?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        open_next_step(&mut tx, fence.run).await.map_err(db.sql(&what))?;
        tx.commit().await.map_err(db.sql(&what))?;
        Ok(true)
    }

    /// Marks a distributed run failed (a partition failed for a reason no other worker would mend).
    pub async fn fail_distributed(&self, run: RunId, error: &str) -> Result<(), StoreError> {
        self.ready().await?;
        let db = self.db();
        sqlx::query(
            "UPDATE pipeline_runs SET status = 'failed', error = $2, finished_at = now(), updated_at = now()
             WHERE id = $1 AND distributed AND status IN ('running', 'stopping')",
        )
        .bind(run)
        .bind(error)
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("marking run {run} failed")))?;
        Ok(())
    }

    /// Refreshes the run's derived checkpoint from its partitions and, when
    /// they are all done, completes it; a `stopping` run none of whose
    /// partitions is leased any more becomes `stopped`. Under the run row's
    /// lock, so two workers finishing the last partitions complete it once.
    /// Returns the run's status afterwards.
    pub async fn settle_run(&self, run: RunId) -> Result<Option<RunStatus>, StoreError> {
        self.ready().await?;
        let db = self.db();
        let what = format!("settling distributed run {run}");
        let mut tx = db.pool().begin().await.map_err(db.sql(&what))?;
        let status = lock_run(&mut tx, run).await.map_err(db.sql(&what))?;
        let Some(status) = status.as_deref().and_then(RunStatus::parse) else { return Ok(None) };
        // A step whose rows are missing though the one before is done (a source without partitions).
        open_next_step(&mut tx, run).await.map_err(db.sql(&what))?;
        let rows = sqlx::query(
            "SELECT name, ordinal, phase, checkpoint, done, (lease_until IS NOT NULL AND lease_until > now())
             FROM run_partitions WHERE run_id = $1 ORDER BY ordinal, name",
        )
        .bind(run)
        .fetch_all(&mut *tx)
        .await
        .map_err(db.sql(&what))?;
        let mut parts = Vec::with_capacity(rows.len());
        let (mut all_done, mut leased) = (true, false);
        for row in &rows {
            let get = |e: sqlx::Error| db.decode(format!("{what}: {e}"), None);
            let name: String = row.try_get(0).map_err(get)?;
            let value: Value = row.try_get(3).map_err(get)?;
            let checkpoint: Checkpoint = serde_json::from_value(value)
                .map_err(|e| db.decode(format!("{what}: partition {name:?} has no valid checkpoint: {e}"), None))?;
            let done = row.try_get::<bool, _>(4).map_err(get)?;
            all_done &= done;
            leased |= row.try_get::<bool, _>(5).map_err(get)?;
            let (ordinal, range_phase) = (row.try_get(1).map_err(get)?, row.try_get(2).map_err(get)?);
            parts.push(Part { name, ordinal, range_phase, done, checkpoint });
        }
        let checkpoint = aggregate(&parts);
        let next = match status {
            RunStatus::Running | RunStatus::Stopping if all_done => RunStatus::Completed,
            RunStatus::Stopping if !leased => RunStatus::Stopped,
            other => other,
        };
        let value = serde_json::to_value(&checkpoint).map_err(|e| db.contract(e))?;
        let counts = serde_json::to_value(checkpoint.counts).map_err(|e| db.contract(e))?;
        sqlx::query(
            "UPDATE pipeline_runs SET checkpoint = $2, counts = $3, phase = $4, status = $5, updated_at = now(),
                 finished_at = CASE WHEN $5 IN ('completed', 'stopped') AND status <> $5 THEN now()
                                    ELSE finished_at END
             WHERE id = $1",
        )
        .bind(run)
        .bind(Json(&value))
        .bind(Json(&counts))
        .bind(&checkpoint.phase)
        .bind(next.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db.sql(&what))?;
        tx.commit().await.map_err(db.sql(&what))?;
        Ok(Some(next))
    }

    /// Distributed runs still `running` or `stopping` (for workers to settle).
    pub async fn open_distributed_runs(&self) -> Result<Vec<RunId>, StoreError> {
        self.ready().await?;
        let db = self.db();
        sqlx::query_scalar("SELECT id FROM pipeline_runs WHERE distributed AND status IN ('running', 'stopping')")
            .fetch_all(db.pool())
            .await
            .map_err(db.sql("listing open distributed runs"))
    }
}

/// Locks the distributed run's row for the rest of `tx`, so marking the
/// last partitions done, opening the next step and completing the run
/// happen once however many workers get there together; its status.
async fn lock_run(tx: &mut PgTransaction<'_>, run: RunId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM pipeline_runs WHERE id = $1 AND distributed FOR UPDATE")
        .bind(run)
        .fetch_optional(&mut **tx)
        .await
}
