//! Distributed runs over HTTP (PostgreSQL store only): `POST
//! /api/pipeline/run {"distributed": true}` creates the run and its
//! partitions for `sluice worker` processes to claim (this server does not
//! work on it); the status of a distributed run shows its partitions and
//! the workers; `/metrics` shows the same as gauges.

use axum::http::StatusCode;
use sluice_core::{RunId, RunInfo};

use super::error::ApiError;
use super::state::{AppState, RunRequest, RunResponse};
use crate::commands::worker::{settle_stopping, submit};
use crate::error::{CliError, code};
use crate::status::RunStatusDoc;

/// What a CLI error from the submission means over HTTP: the request's or the file's fault, or the server's.
fn api_error(e: CliError) -> ApiError {
    let status = if e.code == code::USAGE { StatusCode::BAD_REQUEST } else { StatusCode::INTERNAL_SERVER_ERROR };
    ApiError::new(status, e.message)
}

impl AppState {
    /// `{"distributed": true}`: creates (or, with `resume_run_id`, resumes) a distributed run.
    pub async fn start_distributed(
        &self,
        request: &RunRequest,
        range: Option<(String, String)>,
    ) -> Result<RunResponse, ApiError> {
        let Some(pg) = &self.distributed else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "distributed runs need the PostgreSQL store; this server's store ({}) is SQLite, which stays \
                     single-process: start the run without \"distributed\", or serve a postgres:// store",
                    self.store.describe()
                ),
            ));
        };
        for (given, key, why) in [
            (request.max_conversations.is_some(), "max_conversations", "it counts in one process"),
            (request.incremental == Some(true), "incremental", "a distributed run reads its date range"),
        ] {
            if given {
                return Err(ApiError::bad_request(format!("{key} is not supported with distributed=true: {why}")));
            }
        }
        if request.resume == Some(true) {
            let Some(id) = request.resume_run_id else {
                return Err(ApiError::bad_request(
                    "resume a distributed run by its id: resume_run_id with resume=true",
                ));
            };
            if request.dry_run == Some(true) {
                return Ok(dry_run(Some(id), "the resume request is valid; nothing was resumed".into()));
            }
            if !pg.resume_distributed(id).await? {
                let why = match self.store.get_run(id).await? {
                    None => "not found".to_string(),
                    Some(_) if !pg.is_distributed(id).await? => "not a distributed run".to_string(),
                    Some(run) => format!("{}; only stopped or failed runs can be resumed", run.status),
                };
                return Err(ApiError::bad_request(format!("run {id} is {why}")));
            }
            self.remember_distributed(id);
            return Ok(RunResponse {
                run_id: Some(id),
                status: "resumed".into(),
                message: format!(
                    "distributed run {id} is claimable again; its workers go on from each partition's last commit; \
                     monitor /api/pipeline/status/{id}"
                ),
                partitions: None,
            });
        }
        let mut file = self.file.clone();
        if request.auto_create_stories.is_some() {
            file.auto_create_stories = request.auto_create_stories;
        }
        if let Some((from, to)) = &range
            && let Some(dated) = file.source.kind_mut().dated()
        {
            dated.set_range(from, to)?;
        }
        if request.dry_run == Some(true) {
            sluice_connectors::build_pipeline(&file, self.store.clone())?;
            return Ok(dry_run(None, "the request and pipeline are valid; no distributed run was created".into()));
        }
        let (run_id, partitions) = submit(pg, &file).await.map_err(api_error)?;
        tracing::info!(run_id, partitions, "distributed run created over HTTP");
        self.remember_distributed(run_id);
        Ok(RunResponse {
            run_id: Some(run_id),
            status: "started".into(),
            message: format!(
                "distributed run {run_id} created with {partitions} partitions; start workers (any number, any \
                 machine): sluice worker --store postgres://...; monitor /api/pipeline/status/{run_id}"
            ),
            partitions: Some(partitions),
        })
    }

    fn remember_distributed(&self, run: RunId) {
        let mut runs = self.distributed_runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.retain(|r| *r != run);
        runs.push(run);
    }

    /// `POST /api/pipeline/stop` without a run of this process: stops the
    /// newest distributed run this server created or resumed that is still
    /// running, as `sluice stop --run-id` does (its workers commit their
    /// batches in flight and release their leases; a task settles it to
    /// `stopped` meanwhile). `None` when there is no such run.
    pub async fn stop_distributed(&self) -> Result<Option<RunId>, ApiError> {
        let Some(pg) = &self.distributed else { return Ok(None) };
        let ours = self.distributed_runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for run in ours.into_iter().rev() {
            if !pg.stop_distributed(run).await? {
                continue;
            }
            tracing::info!(run_id = run, "distributed run stopping on request over HTTP");
            let pg = pg.clone();
            // Workers settle it too; this covers a run whose workers are all gone.
            tokio::spawn(async move {
                match settle_stopping(&pg, run).await {
                    Ok(status) => tracing::info!(run_id = run, %status, "distributed run settled after the stop"),
                    Err(e) => tracing::warn!(run_id = run, error = %e, "cannot settle the stopped distributed run"),
                }
            });
            return Ok(Some(run));
        }
        Ok(None)
    }

    /// The status document of `run`: with its partitions and workers when it is distributed.
    pub async fn status_doc(&self, run: &RunInfo) -> RunStatusDoc {
        let doc = RunStatusDoc::read(self.store.as_ref(), run).await;
        let Some(pg) = &self.distributed else { return doc };
        match distributed_details(pg, run.id).await {
            Ok(Some((partitions, workers))) => doc.with_distributed(&partitions, &workers),
            Ok(None) => doc,
            Err(e) => {
                tracing::warn!(run_id = run.id, error = %e, "cannot read the partitions and workers of the run");
                doc
            }
        }
    }

    /// Sets the gauges of the open distributed runs, before `/metrics` renders.
    pub async fn distributed_gauges(&self) {
        let Some(pg) = &self.distributed else { return };
        if let Err(e) = set_gauges(pg).await {
            tracing::warn!(error = %e, "cannot read the distributed runs for /metrics");
        }
    }
}

type Details = (
    Vec<sluice_connectors::store::postgres::distributed::PartitionRow>,
    Vec<sluice_connectors::store::postgres::distributed::WorkerRow>,
);

async fn distributed_details(
    pg: &sluice_connectors::store::PostgresStore,
    run: RunId,
) -> Result<Option<Details>, sluice_core::StoreError> {
    if !pg.is_distributed(run).await? {
        return Ok(None);
    }
    Ok(Some((pg.run_partitions(run).await?, pg.workers().await?)))
}

/// Partitions by state and run, each partition's commits, stored records
/// and lease holder, and each worker's liveness and heartbeat age.
async fn set_gauges(pg: &sluice_connectors::store::PostgresStore) -> Result<(), sluice_core::StoreError> {
    for run in pg.open_distributed_runs().await? {
        let id = run.to_string();
        let partitions = pg.run_partitions(run).await?;
        let mut by_state = [("done", 0u64), ("leased", 0), ("waiting", 0)];
        for p in &partitions {
            let state = if p.done {
                0
            } else if p.leased_by().is_some() {
                1
            } else {
                2
            };
            by_state[state].1 += 1;
            let phase = p.phase.clone().unwrap_or_default();
            let labels = [("run_id", id.clone()), ("partition", p.name.clone()), ("phase", phase)];
            metrics::gauge!("sluice_distributed_partition_commits", &labels).set(p.commit_seq as f64);
            // Of its current phase: a source partition's records, an id range's documents.
            let stored = p.checkpoint().map_or(0, |c| c.current_counts().stored);
            metrics::gauge!("sluice_distributed_partition_stored", &labels).set(stored as f64);
            metrics::gauge!("sluice_distributed_partition_done", &labels).set(if p.done { 1.0 } else { 0.0 });
            let owner = p.leased_by().unwrap_or("").to_string();
            let leased = [("run_id", id.clone()), ("partition", p.name.clone()), ("worker", owner)];
            metrics::gauge!("sluice_distributed_partition_leased", &leased).set(if p.leased_by().is_some() {
                1.0
            } else {
                0.0
            });
        }
        for (state, n) in by_state {
            metrics::gauge!("sluice_distributed_partitions", "run_id" => id.clone(), "state" => state).set(n as f64);
        }
    }
    let workers = pg.workers().await?;
    let alive = workers.iter().filter(|w| w.alive).count();
    metrics::gauge!("sluice_distributed_workers", "state" => "alive").set(alive as f64);
    metrics::gauge!("sluice_distributed_workers", "state" => "gone").set((workers.len() - alive) as f64);
    for w in &workers {
        metrics::gauge!("sluice_worker_alive", "worker" => w.id.clone()).set(if w.alive { 1.0 } else { 0.0 });
        metrics::gauge!("sluice_worker_heartbeat_age_seconds", "worker" => w.id.clone()).set(w.heartbeat_age_secs);
    }
    Ok(())
}

fn dry_run(run_id: Option<RunId>, message: String) -> RunResponse {
    RunResponse { run_id, status: "dry_run".into(), message, partitions: None }
}
