//! Distributed runs on PostgreSQL: `sluice run --distributed` creates the
//! run and its partitions (and exits, or with `--work` also works on it
//! until it ends); `sluice worker --store postgres://...`, any number of
//! them on any machines, claims partitions, runs the ordinary engine over
//! each with commits fenced by the claim, and goes on to the next. Secrets
//! come from each worker's environment; the pipeline from the run's saved
//! settings. See docs/distributed.md and the store's `distributed` module.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_connectors::registry::StoreConfig;
use sluice_connectors::store::PostgresStore;
use sluice_connectors::store::postgres::distributed::{
    Claim, LEASE_LOST, PartitionRow, PartitionStore, PhasePlan, SharedPacer, WorkerId, WorkerRow,
};
use sluice_connectors::{PipelineFile, build_pipeline};
use sluice_core::distributed::OnePartition;
use sluice_core::store::RunId;
use sluice_core::{NewRun, Pacer, Pipeline, RunStatus, STORED_PARTITION, Start, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{RunArgs, StoreArgs, WorkerArgs};
use crate::commands::output::print_json;
use crate::env::{apply_env, env_var, store_config};
use crate::error::{CliError, code};
use crate::signals::Signals;

/// How often an idle worker looks for a partition to claim.
const POLL: Duration = Duration::from_millis(250);
/// The lease of a worker started by `sluice run --distributed --work`.
const RUN_LEASE_SECS: f64 = 30.0;

/// Opens the PostgreSQL store a distributed command names, refusing any other.
fn postgres(config: StoreConfig, lease_secs: f64, what: &str) -> Result<PostgresStore, CliError> {
    match config {
        StoreConfig::Postgres(pg) => {
            // Below the lease: a worker frozen inside a transaction must not hold its partition's row.
            let idle = format!("{}ms", (lease_secs * 500.0).max(500.0) as u64);
            Ok(PostgresStore::connect_lazy_with(&pg.url, &[("idle_in_transaction_session_timeout", &idle)])?)
        }
        StoreConfig::Sqlite(_) => Err(CliError::usage(format!(
            "{what}: distributed runs need the PostgreSQL store (--db postgres://...); \
             a SQLite store stays single-process"
        ))),
    }
}

/// `sluice worker`: claims partitions until a signal (or, with `--exit-when-idle`, until no run is open).
pub async fn worker(args: WorkerArgs) -> Result<u8, CliError> {
    let url =
        args.store.clone().or_else(|| env_var("DATABASE_URL")).ok_or_else(|| {
            CliError::usage("sluice worker needs --store postgres://... (or DATABASE_URL)".to_string())
        })?;
    let store = postgres(StoreConfig::from_url(&url)?, args.lease_secs, "sluice worker")?;
    let stop = stop_on_signals();
    let until = if args.exit_when_idle { Until::Idle } else { Until::Signal };
    work(store, args.slots as usize, args.lease_secs, until, stop).await
}

/// When a worker leaves (besides a signal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    Signal,
    /// No distributed run is open any more.
    Idle,
    /// This run is no longer running or stopping; exit with its status.
    RunEnds(RunId),
}

/// A first SIGINT/SIGTERM/SIGHUP: commit the batches in flight, release the leases, leave.
fn stop_on_signals() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    match Signals::new() {
        Ok(mut signals) => {
            tokio::spawn(async move {
                signals.next().await;
                errln!("stopping: committing the batches in flight and releasing the leases");
                token.cancel();
            });
        }
        Err(e) => tracing::warn!(error = %e, "signals not handled: a signal ends the worker at once"),
    }
    stop
}

/// How a partition's turn on this worker ended.
enum PartitionEnd {
    /// Done, stopped, lost to another worker, or failed: nothing more for this worker to do.
    Over,
    /// This worker cannot build the run's pipeline (a feature missing): leave the run to others.
    Refused(RunId),
}

async fn work(
    store: PostgresStore,
    slots: usize,
    lease: f64,
    until: Until,
    stop: CancellationToken,
) -> Result<u8, CliError> {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "localhost".to_string() } else { host };
    let pid = std::process::id();
    let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let me = WorkerId { id: format!("{host}:{pid}:{:x}", nonce & 0xff_ffff), host, pid };
    store.register_worker(&me, lease).await?;
    tracing::info!(worker = %me.id, store = %store.describe(), slots, lease_secs = lease, "worker joined");
    let beat = Duration::from_secs_f64(lease / 3.0);
    let mut tasks: JoinSet<PartitionEnd> = JoinSet::new();
    let mut refused: Vec<RunId> = Vec::new();
    // One pacer per run, shared by this worker's partitions of it (and, through the store, by every worker).
    let mut pacers: HashMap<RunId, Arc<dyn Pacer>> = HashMap::new();
    let mut last_beat: Option<tokio::time::Instant> = None;
    let mut exit = code::OK;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if last_beat.is_none_or(|at| at.elapsed() >= beat) {
            last_beat = Some(tokio::time::Instant::now());
            if let Err(e) = store.worker_heartbeat(&me, false).await {
                tracing::warn!(error = %e, "worker heartbeat failed");
            }
            settle_open_runs(&store).await;
        }
        while tasks.len() < slots && !stop.is_cancelled() {
            match store.claim_partition(&me.id, lease, &refused).await {
                Ok(Some(claim)) => {
                    let pacer = pacers
                        .entry(claim.fence.run)
                        .or_insert_with(|| Arc::new(SharedPacer::new(store.clone(), claim.fence.run)))
                        .clone();
                    tasks.spawn(run_partition(store.clone(), claim, pacer, lease, stop.child_token()));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "could not claim a partition");
                    break;
                }
            }
        }
        if tasks.is_empty() {
            match until {
                Until::Signal => {}
                Until::Idle => {
                    let open = store.open_distributed_runs().await?;
                    if open.iter().all(|run| refused.contains(run)) {
                        break;
                    }
                }
                Until::RunEnds(run) => match store.get_run(run).await? {
                    Some(info) if info.status.is_active() => {}
                    Some(info) => {
                        exit = match info.status {
                            RunStatus::Completed => code::OK,
                            RunStatus::Stopped => code::STOPPED,
                            _ => code::FAILED,
                        };
                        break;
                    }
                    None => break,
                },
            }
        }
        tokio::select! {
            Some(ended) = tasks.join_next() => {
                if let Ok(PartitionEnd::Refused(run)) = ended {
                    refused.push(run);
                }
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
    if let Err(e) = store.worker_heartbeat(&me, true).await {
        tracing::warn!(error = %e, "could not record that the worker left");
    }
    settle_open_runs(&store).await;
    tracing::info!(worker = %me.id, "worker left");
    Ok(exit)
}

/// Completes open runs whose partitions are all done (a worker may have died
/// between its last partition and the run's completion) and turns stopping
/// runs without leases into stopped ones.
async fn settle_open_runs(store: &PostgresStore) {
    match store.open_distributed_runs().await {
        Ok(runs) => {
            for run in runs {
                if let Err(e) = store.settle_run(run).await {
                    tracing::warn!(run_id = run, error = %e, "could not settle the run");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not list the open distributed runs"),
    }
}

/// The engine for a claimed partition: the run's saved pipeline, for a
/// source partition without its later phases and reading only that
/// partition, for an id range only its phase over the range (resumed from
/// the row's checkpoint, whose cursor is the range's start), for the
/// whole-corpus task as it is (the phases before it are done in its
/// checkpoint); committing through the fence.
fn partition_pipeline(
    store: &PostgresStore,
    claim: &Claim,
    config: &Value,
    pacer: Arc<dyn Pacer>,
) -> Result<Pipeline, CliError> {
    let mut file = PipelineFile::from_saved(config)?;
    // Nobody follows a worker's events one by one.
    file.per_document_events = Some(false);
    let fenced: Arc<dyn Store> = Arc::new(PartitionStore::new(store.clone(), claim));
    let pipeline = build_pipeline(&file, fenced)?.with_pacer(pacer);
    if let Some(range) = &claim.range {
        return Ok(pipeline.only_phase(&range.phase, range.last.clone()));
    }
    if claim.later {
        return Ok(pipeline);
    }
    let source = Arc::new(OnePartition::new(pipeline.source().clone(), &claim.fence.partition));
    Ok(pipeline.without_phases().with_source(source))
}

async fn run_partition(
    store: PostgresStore,
    claim: Claim,
    pacer: Arc<dyn Pacer>,
    lease: f64,
    stop: CancellationToken,
) -> PartitionEnd {
    let fence = claim.fence.clone();
    let (run, partition) = (fence.run, fence.partition.clone());
    let release = |why: &'static str| {
        let (store, fence) = (store.clone(), fence.clone());
        async move {
            if let Err(e) = store.release_partition(&fence).await {
                tracing::warn!(error = %e, "could not release {} ({why}); its lease will expire", fence.describe());
            }
        }
    };
    let config = match store.get_run(run).await {
        Ok(Some(info)) => info.config,
        Ok(None) => return PartitionEnd::Over,
        Err(e) => {
            tracing::warn!(run_id = run, error = %e, "cannot read the run to work on");
            release("the run could not be read").await;
            return PartitionEnd::Over;
        }
    };
    let pipeline = match partition_pipeline(&store, &claim, &config, pacer) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            errln!("error: this worker cannot run run {run}: {e}; leaving it to workers that can");
            release("this worker cannot build its pipeline").await;
            return PartitionEnd::Refused(run);
        }
    };
    let start = if claim.checkpoint.is_empty() { Start::New } else { Start::Resume(run) };
    let mut handle = match pipeline.start(start).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(run_id = run, partition = %partition, error = %e, "cannot start the partition");
            release("it could not start").await;
            return PartitionEnd::Over;
        }
    };
    tracing::info!(run_id = run, partition = %partition, epoch = fence.epoch, commits = claim.commit_seq, "claimed");
    let mut beat = tokio::time::interval(Duration::from_secs_f64(lease / 3.0));
    beat.tick().await;
    let mut lost = false;
    let engine_stop = handle.stop_token();
    loop {
        tokio::select! {
            event = handle.next_event() => if event.is_none() { break },
            _ = beat.tick() => match store.heartbeat_partition(&fence, lease).await {
                Ok(None) => {
                    if !lost {
                        tracing::warn!(run_id = run, partition = %partition, "lease lost; stopping this partition");
                    }
                    lost = true;
                    engine_stop.cancel();
                }
                Ok(Some(RunStatus::Running)) => {}
                Ok(Some(status)) => {
                    if !engine_stop.is_cancelled() {
                        tracing::info!(run_id = run, partition = %partition, %status, "the run is {status}: stopping");
                    }
                    engine_stop.cancel();
                }
                Err(e) => tracing::warn!(run_id = run, error = %e, "heartbeat failed; the lease runs out unless one lands"),
            },
            _ = stop.cancelled(), if !engine_stop.is_cancelled() => engine_stop.cancel(),
        }
    }
    let summary = handle.wait().await;
    let error = summary.error.clone().unwrap_or_default();
    let refused = error.contains(LEASE_LOST);
    match summary.status {
        RunStatus::Completed => match store.finish_partition(&fence).await {
            Ok(true) => {
                tracing::info!(run_id = run, partition = %partition, stored = summary.counts.stored, "partition done");
                if let Err(e) = store.settle_run(run).await {
                    tracing::warn!(run_id = run, error = %e, "could not settle the run");
                }
            }
            Ok(false) => {
                tracing::warn!(run_id = run, partition = %partition, "lease lost before the partition was marked done")
            }
            Err(e) => {
                tracing::warn!(run_id = run, error = %e, "could not mark the partition done; another worker will")
            }
        },
        RunStatus::Failed if refused || lost => {
            tracing::warn!(run_id = run, partition = %partition, epoch = fence.epoch, "partition given up: another worker owns it now");
        }
        RunStatus::Failed if error.starts_with("store:") => {
            // The store, not the data: another worker (or this one, later) takes it from its last commit.
            tracing::warn!(run_id = run, partition = %partition, %error, "partition released after a store error");
            release("a store error").await;
        }
        RunStatus::Failed => {
            tracing::error!(run_id = run, partition = %partition, %error, "partition failed: the run fails");
            if let Err(e) = store.fail_distributed(run, &format!("partition {partition}: {error}")).await {
                tracing::warn!(error = %e, "could not mark the run failed");
            }
            release("the run failed").await;
        }
        _ => {
            release("stopped").await;
            if let Err(e) = store.settle_run(run).await {
                tracing::warn!(run_id = run, error = %e, "could not settle the run");
            }
        }
    }
    PartitionEnd::Over
}

/// `sluice run -c FILE --distributed`: creates the run and its partitions
/// (or, with `--resume-run-id`, makes a stopped or failed one claimable
/// again); with `--work` this process then works on it until it ends.
pub async fn run_distributed(args: &RunArgs) -> Result<u8, CliError> {
    if args.watch {
        return Err(CliError::usage("--distributed: a watching run never ends; it stays single-process"));
    }
    if args.max_records.is_some() {
        return Err(CliError::usage("--distributed: --max-records counts in one process; it is not supported"));
    }
    if args.resume {
        return Err(CliError::usage("--distributed: resume a distributed run by its id (--resume-run-id N)"));
    }
    let file = if args.resume_run_id.is_some() && !args.config.exists() {
        None
    } else {
        let mut file = PipelineFile::load(&args.config)?;
        apply_env(&mut file, &env_var)?;
        Some(file)
    };
    let config = match args.db.as_deref() {
        Some(url) => StoreConfig::from_url(url)?,
        None => store_config(file.as_ref(), &env_var)?.0,
    };
    let store = postgres(config, RUN_LEASE_SECS, "--distributed")?;
    let run_id = match args.resume_run_id {
        Some(id) => {
            if !store.resume_distributed(id).await? {
                let why = match store.get_run(id).await? {
                    None => "not found".to_string(),
                    Some(_) if !store.is_distributed(id).await? => {
                        "not a distributed run (resume it without --distributed)".to_string()
                    }
                    Some(run) => format!("{}; only stopped or failed runs can be resumed", run.status),
                };
                return Err(CliError::usage(format!("--distributed: run {id} is {why}")));
            }
            report_submitted(args, &store, id, "resumed", None)?;
            id
        }
        None => {
            let file = file.ok_or_else(|| CliError::usage("a pipeline file is needed to start a run"))?;
            let (run, partitions) = submit(&store, &file)
                .await
                .map_err(|e| CliError { message: format!("{e} (in {})", args.config.display()), ..e })?;
            report_submitted(args, &store, run, "created", Some(partitions))?;
            run
        }
    };
    if !args.work {
        return Ok(code::OK);
    }
    work(store, 2, RUN_LEASE_SECS, Until::RunEnds(run_id), stop_on_signals()).await
}

/// Creates a distributed run of `file`, its source partitions and the plan
/// of its later phases (each per-document one before the first whole-corpus
/// one cut into `phase_ranges` id ranges, by default as many as the source
/// has partitions; the rest one task): the run id and how many partitions it starts with.
pub async fn submit(store: &PostgresStore, file: &PipelineFile) -> Result<(RunId, usize), CliError> {
    let pipeline = build_pipeline(file, Arc::new(store.clone())).map_err(|e| CliError::usage(e.to_string()))?;
    let partitions = pipeline
        .source()
        .partitions()
        .await
        .map_err(|e| CliError::runtime(format!("cannot list the source's partitions: {e}")))?;
    let settings = pipeline.settings_ref();
    let ranges = file.phase_ranges.unwrap_or(partitions.len());
    let plan = PhasePlan::new(&settings.phase, &pipeline.phase_kinds(), pipeline.source().name(), ranges);
    let new = NewRun {
        pipeline: settings.name.clone(),
        phase: settings.phase.clone(),
        config: settings.config.clone(),
        window: settings.labels.window.clone(),
    };
    let run = store.submit_distributed(&new, &partitions, &plan).await?;
    let created = store.run_partitions(run.id).await?.len();
    Ok((run.id, created))
}

/// The store `sluice serve` makes distributed runs in (`None`: its store is not PostgreSQL).
pub fn serve_store(config: StoreConfig) -> Result<Option<PostgresStore>, CliError> {
    match config {
        StoreConfig::Postgres(_) => postgres(config, RUN_LEASE_SECS, "sluice serve").map(Some),
        StoreConfig::Sqlite(_) => Ok(None),
    }
}

fn report_submitted(
    args: &RunArgs,
    store: &PostgresStore,
    run_id: RunId,
    what: &str,
    partitions: Option<usize>,
) -> Result<(), CliError> {
    if args.json {
        print_json(&json!({ "run_id": run_id, "distributed": true, "status": what, "partitions": partitions }))?;
    }
    let parts = partitions.map(|n| format!(" with {n} partitions")).unwrap_or_default();
    errln!("distributed run {run_id} {what}{parts} in {}", store.describe());
    if !args.work {
        errln!(
            "start workers (any number, on any machine, with the pipeline's secrets in their environment):\n  \
             sluice worker --store postgres://USER@HOST:PORT/DATABASE\n\
             follow it with `sluice status {run_id} --db ...`; stop it with `sluice stop --db ... --run-id {run_id}`"
        );
    }
    Ok(())
}

/// `sluice stop --db postgres://... --run-id N`: stops a distributed run as a
/// whole; waits (a lease at most) until its workers released their leases.
pub async fn stop(db: &str, run_id: RunId, json: bool) -> Result<u8, CliError> {
    let store = postgres(StoreConfig::from_url(db)?, RUN_LEASE_SECS, "sluice stop --run-id")?;
    if !store.stop_distributed(run_id).await? {
        let status = store.get_run(run_id).await?.map(|r| r.status.to_string());
        return Err(CliError::usage(format!(
            "run {run_id} is {}: only a running distributed run can be stopped this way",
            status.as_deref().unwrap_or("not found")
        )));
    }
    let status = settle_stopping(&store, run_id).await?;
    if json {
        print_json(&json!({ "run_id": run_id, "status": status }))?;
    } else {
        outln!("run {run_id} is {status}");
    }
    Ok(code::OK)
}

/// After [`PostgresStore::stop_distributed`]: settles the run until it is no
/// longer `stopping` (its workers released their leases, or the leases ran
/// out), two run leases at most; returns its status then.
pub async fn settle_stopping(store: &PostgresStore, run_id: RunId) -> Result<RunStatus, sluice_core::StoreError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(RUN_LEASE_SECS * 2.0);
    let mut status = RunStatus::Stopping;
    while tokio::time::Instant::now() < deadline {
        status = store.settle_run(run_id).await?.unwrap_or(RunStatus::Stopping);
        if status != RunStatus::Stopping {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(status)
}

/// What status adds for a distributed run: its partitions and the workers
/// (`None` for a run that is not distributed or a store that is not PostgreSQL).
pub async fn distributed_details(
    args: &StoreArgs,
    run_id: RunId,
) -> Result<Option<(Vec<PartitionRow>, Vec<WorkerRow>)>, CliError> {
    let file = match &args.config {
        Some(path) => Some(PipelineFile::load(path)?),
        None => None,
    };
    let config = match args.db.as_deref() {
        Some(url) => StoreConfig::from_url(url)?,
        None => store_config(file.as_ref(), &env_var)?.0,
    };
    let StoreConfig::Postgres(pg) = config else { return Ok(None) };
    let store = PostgresStore::connect_lazy(&pg.url)?;
    if !store.is_distributed(run_id).await? {
        return Ok(None);
    }
    Ok(Some((store.run_partitions(run_id).await?, store.workers().await?)))
}

/// Prints the partitions (done, leased by whom, position) and workers (alive, last heartbeat).
pub fn print_details(partitions: &[PartitionRow], workers: &[WorkerRow]) {
    let done = partitions.iter().filter(|p| p.done).count();
    outln!("  partitions: {done} of {} done", partitions.len());
    for p in partitions {
        let cp = p.checkpoint();
        let state = if p.done {
            "done".to_string()
        } else if let Some(owner) = p.leased_by() {
            format!("leased by {owner} ({:.0}s left)", p.lease_left_secs.unwrap_or_default())
        } else {
            "waiting".to_string()
        };
        let position = match &cp {
            Some(c) if p.phase.is_some() => {
                let pos = c.position(STORED_PARTITION);
                let range = p.range_text().unwrap_or_default();
                format!("phase={} range={range} cursor={:?} stored={}", c.phase, pos.cursor, c.current_counts().stored)
            }
            Some(c) if p.step > 0 => format!("phase={}", c.phase),
            Some(c) => {
                let pos = c.position(&p.name);
                format!("cursor={:?} skip={} stored={}", pos.cursor, pos.skip, c.counts.stored)
            }
            None => String::new(),
        };
        outln!("    {}: {state}; epoch={} commits={} {position}", p.name, p.epoch, p.commit_seq);
    }
    let alive = workers.iter().filter(|w| w.alive).count();
    outln!("  workers: {alive} alive of {}", workers.len());
    for w in workers {
        let state = if w.alive { "alive" } else { "gone" };
        outln!(
            "    {}: {state}, last heartbeat {:.1}s ago, {} refused commits",
            w.id,
            w.heartbeat_age_secs,
            w.refused_commits
        );
    }
}
