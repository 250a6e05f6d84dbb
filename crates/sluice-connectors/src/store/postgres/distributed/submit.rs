//! Creating a distributed run with its partitions, and stopping and
//! resuming it as a whole.

use sluice_core::store::{NewRun, RunId, RunInfo};
use sluice_core::{Checkpoint, StoreError};
use sqlx::types::Json;

use super::super::PostgresStore;
use super::super::runs::parse_run;
use super::super::sql::CREATE_RUN;
use super::phases::{NewPartition, PhasePlan, insert_partitions, insert_plan, open_next_step};

impl PostgresStore {
    /// Creates the run, marked distributed, with one partition row per name
    /// (each starting from `Checkpoint::new(new.phase)`) and the plan of its
    /// later phases, whose steps get their rows as the steps before them end
    /// (`phases::open_next_step`). One transaction: workers never see half a run.
    pub async fn submit_distributed(
        &self,
        new: &NewRun,
        partitions: &[String],
        plan: &PhasePlan,
    ) -> Result<RunInfo, StoreError> {
        self.ready().await?;
        let db = self.db();
        let what = format!("creating a distributed run of pipeline {:?}", new.pipeline);
        let mut tx = db.pool().begin().await.map_err(db.sql(&what))?;
        let row = sqlx::query(CREATE_RUN)
            .bind(&new.pipeline)
            .bind(&new.phase)
            .bind(Json(&new.config))
            .bind(new.window.as_ref().map(|w| &w.from))
            .bind(new.window.as_ref().map(|w| &w.to))
            .fetch_one(&mut *tx)
            .await
            .map_err(db.sql(&what))?;
        let run = parse_run(db, &row)?;
        sqlx::query("UPDATE pipeline_runs SET distributed = true WHERE id = $1")
            .bind(run.id)
            .execute(&mut *tx)
            .await
            .map_err(db.sql(&what))?;
        let start = Checkpoint::new(&new.phase);
        let rows: Vec<NewPartition> = partitions.iter().map(|name| NewPartition::source(name, &start)).collect();
        insert_partitions(&mut tx, run.id, &rows).await.map_err(db.sql(&what))?;
        insert_plan(&mut tx, run.id, plan).await.map_err(db.sql(&what))?;
        // A source without partitions: the first later step is open at once.
        open_next_step(&mut tx, run.id).await.map_err(db.sql(&what))?;
        tx.commit().await.map_err(db.sql(&what))?;
        Ok(run)
    }

    /// Whether run `id` is a distributed one (false for an unknown run).
    pub async fn is_distributed(&self, id: RunId) -> Result<bool, StoreError> {
        self.ready().await?;
        let db = self.db();
        let found: Option<bool> = sqlx::query_scalar("SELECT distributed FROM pipeline_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await
            .map_err(db.sql(format!("reading run {id}")))?;
        Ok(found.unwrap_or(false))
    }

    /// Asks every worker of distributed run `id` to stop: the run becomes
    /// `stopping`, workers see it at their next heartbeat, commit their
    /// batches in flight and release their leases; then it is `stopped`.
    /// False when the run is not a running distributed run.
    pub async fn stop_distributed(&self, id: RunId) -> Result<bool, StoreError> {
        self.ready().await?;
        let db = self.db();
        let done = sqlx::query(
            "UPDATE pipeline_runs SET status = 'stopping', updated_at = now()
             WHERE id = $1 AND distributed AND status = 'running'",
        )
        .bind(id)
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("stopping run {id}")))?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes a stopped or failed distributed run claimable again. False
    /// when it is not a distributed run in one of those states.
    pub async fn resume_distributed(&self, id: RunId) -> Result<bool, StoreError> {
        self.ready().await?;
        let db = self.db();
        let done = sqlx::query(
            "UPDATE pipeline_runs SET status = 'running', error = NULL, finished_at = NULL, updated_at = now()
             WHERE id = $1 AND distributed AND status IN ('stopped', 'failed', 'stopping')",
        )
        .bind(id)
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("resuming run {id}")))?;
        Ok(done.rows_affected() == 1)
    }
}
