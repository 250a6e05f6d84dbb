//! Starting a run (new or resumed) and running it: the first phase, then
//! each later one, then the final status.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::commit::{COMMIT_QUEUE, commit_with_retries};
use super::handle::{RunHandle, RunSummary};
use super::panics::catch_panic;
use super::state::Shared;
use super::{Mode, Pipeline, Start, legacy, streaming, write_ahead};
use crate::checkpoint::Checkpoint;
use crate::context::{Context, UsageMeter};
use crate::error::{EngineError, StoreError};
use crate::event::{Event, EventKind, EventSink};
use crate::memo::WriteAhead;
use crate::phase::{PhaseInput, PhaseSpec, PhaseTask, STORED_PARTITION};
use crate::record::Document;
use crate::retry::{Verdict, with_retries};
use crate::store::{ActiveRunGuard, CommitBatch, NewRun, RunStatus};

impl Pipeline {
    /// The most batches that can be between the batcher and the store at
    /// once, so a crash costs at most this many batches of work: one held by
    /// the batcher, per stage its input channel, its workers and the one it
    /// is handing on, the committer's queue, and the group being committed.
    pub fn max_batches_in_flight(&self) -> usize {
        let stages: usize = self.stages.iter().map(|s| s.workers.max(1) + 2).sum();
        1 + stages + COMMIT_QUEUE + (COMMIT_QUEUE + 1)
    }

    /// Starts a new run or resumes one, in the background. Fails at once if
    /// another run is active on the store or the run cannot be resumed.
    pub async fn start(&self, start: Start) -> Result<RunHandle, EngineError> {
        let guard = self.store.acquire_active().await?;
        let (run_id, checkpoint, resumed) = match start {
            Start::New => {
                let run = self
                    .store
                    .create_run(&NewRun {
                        pipeline: self.settings.name.clone(),
                        phase: self.settings.phase.clone(),
                        config: self.settings.config.clone(),
                        window: self.settings.labels.window.clone(),
                    })
                    .await?;
                (run.id, Checkpoint::new(&self.settings.phase), false)
            }
            Start::Resume(id) => {
                let run =
                    self.store.get_run(id).await?.ok_or_else(|| EngineError::Invalid(format!("run {id} not found")))?;
                if !run.status.is_resumable() {
                    return Err(EngineError::Invalid(format!(
                        "run {id} is {}; only stopped, failed or stopping runs can be resumed",
                        run.status
                    )));
                }
                let checkpoint = run.checkpoint.filter(|c| !c.is_empty()).ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "run {id} has an empty checkpoint: nothing to resume, start a new run"
                    ))
                })?;
                self.store.set_status(id, RunStatus::Running, None).await?;
                (id, checkpoint, true)
            }
        };

        let (tx, rx) = mpsc::channel(self.settings.event_buffer.max(16));
        let stop = CancellationToken::new();
        let usage = Arc::new(UsageMeter::new(checkpoint.cost));
        let write_ahead = if self.settings.write_ahead {
            write_ahead::start(self.store.clone(), run_id, usage.clone())
        } else {
            WriteAhead::default()
        };
        let ctx = Context {
            events: EventSink::new(run_id, self.settings.per_document_events, tx),
            stop: stop.clone(),
            abort: CancellationToken::new(),
            usage,
            write_ahead,
            pacer: self.pacer.clone(),
        };
        let shared = Shared::new(run_id, self, ctx, checkpoint.counts);
        let holds = match self.store.holds_documents().await {
            Ok(holds) => holds,
            Err(error) => {
                tracing::warn!(%error, "could not tell whether the store holds documents; looking up unchanged ones");
                true
            }
        };
        shared.look_up_unchanged.store(holds, Ordering::Relaxed);
        let shared = Arc::new(shared);
        let in_flight = shared.in_flight.clone();
        let task = tokio::spawn(execute(shared, self.phases.clone(), checkpoint, resumed, guard));
        Ok(RunHandle::new(run_id, resumed, rx, stop, in_flight, task))
    }

    /// Starts the run and returns its events. The primary API.
    pub async fn stream_events(
        &self,
        start: Start,
    ) -> Result<impl Stream<Item = Event> + Send + 'static + use<>, EngineError> {
        Ok(self.start(start).await?.into_stream())
    }

    /// Starts the run and returns each document as it is committed.
    pub async fn iter_results(
        &self,
        start: Start,
    ) -> Result<impl Stream<Item = Document> + Send + 'static + use<>, EngineError> {
        use futures::StreamExt;
        let mut pipeline = self.clone();
        pipeline.settings.per_document_events = true;
        pipeline.settings.include_documents = true;
        let events = pipeline.stream_events(start).await?;
        Ok(events.filter_map(|event| async move {
            match event.kind {
                EventKind::DocumentCompleted { document, .. } => document.map(|d| *d),
                _ => None,
            }
        }))
    }

    /// Runs to the end and returns the summary.
    pub async fn run(&self, start: Start) -> Result<RunSummary, EngineError> {
        Ok(self.start(start).await?.wait().await)
    }
}

async fn execute(
    shared: Arc<Shared>,
    phases: Vec<PhaseSpec>,
    checkpoint: Checkpoint,
    resumed: bool,
    guard: ActiveRunGuard,
) -> RunSummary {
    let started = Instant::now();
    let settings = &shared.settings;
    let events = shared.ctx.events.clone();
    events
        .emit(EventKind::RunStarted {
            pipeline: settings.name.clone(),
            mode: settings.mode,
            resumed,
            batch_size: settings.batch_size,
            phase: checkpoint.phase.clone(),
            counts: checkpoint.counts,
            cost: checkpoint.cost,
        })
        .await;
    match settings.mode {
        Mode::Streaming => tracing::info!(
            run_id = shared.run_id,
            "Starting streaming batch pipeline (batch size {})",
            settings.batch_size
        ),
        Mode::Batch => {
            tracing::info!(run_id = shared.run_id, "Starting batch pipeline (legacy: fetch all, then each stage)")
        }
    }
    if resumed {
        tracing::info!(
            run_id = shared.run_id,
            fetched = checkpoint.counts.fetched,
            stored = checkpoint.counts.stored,
            "Resuming from checkpoint"
        );
    }
    // A run past its first phase reads only the store: not one request to the source.
    if !checkpoint.in_later_phase() {
        shared.progress.set_estimated_total(shared.source.estimated_total().await);
    }

    let stopping = tokio::spawn(mark_stopping(shared.clone()));
    // Tasks catch their own panics; this is the last resort, so the run still ends `failed`
    // (the store keeps the last committed checkpoint, the summary shows the one it started from).
    let started_from = checkpoint.clone();
    let (checkpoint, reached_end) = match catch_panic(run_phases(&shared, &phases, checkpoint, resumed)).await {
        Ok(ended) => ended,
        Err(message) => {
            shared.fail(EngineError::Panicked { task: "the run".into(), message });
            (started_from, false)
        }
    };
    stopping.abort();
    // What was paid for is stored before the run says it ended.
    shared.ctx.write_ahead.flush().await;

    let error = shared.take_error().map(|e| e.to_string());
    let status = if error.is_some() {
        RunStatus::Failed
    } else if shared.ctx.stop.is_cancelled() && !reached_end {
        tracing::info!("Stop signal at batch boundary");
        RunStatus::Stopped
    } else {
        RunStatus::Completed
    };
    finish_status(&shared, status, error.as_deref()).await;
    drop(guard);
    let duration_seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        run_id = shared.run_id,
        status = status.as_str(),
        fetched = checkpoint.counts.fetched,
        stored = checkpoint.counts.stored,
        failed = checkpoint.counts.failed,
        "run finished in {duration_seconds:.1}s"
    );
    events
        .emit(EventKind::RunFinished { status, counts: checkpoint.counts, duration_seconds, error: error.clone() })
        .await;
    RunSummary { run_id: shared.run_id, status, counts: checkpoint.counts, checkpoint, error, duration_seconds }
}

/// Runs the first phase (unless the checkpoint is past it), then each later
/// phase not done yet, while none stops or fails. Returns the last committed
/// checkpoint and whether the run reached its end.
async fn run_phases(
    shared: &Arc<Shared>,
    phases: &[PhaseSpec],
    mut checkpoint: Checkpoint,
    resumed: bool,
) -> (Checkpoint, bool) {
    let events = &shared.ctx.events;
    if !checkpoint.in_later_phase() {
        let (cp, reached_end) = run_first_phase(shared, checkpoint).await;
        if !reached_end || shared.abort.is_cancelled() {
            return (cp, reached_end);
        }
        if phases.is_empty() {
            return finish_last_phase(shared, cp).await;
        }
        checkpoint = cp;
        events.emit(EventKind::PhaseFinished { phase: checkpoint.phase.clone(), counts: checkpoint.counts }).await;
    } else if !phases.iter().any(|p| p.name() == checkpoint.phase) {
        shared.fail(EngineError::Invalid(format!(
            "run {} is in phase {} which this pipeline does not have (phases: {})",
            shared.run_id,
            checkpoint.phase,
            phases.iter().map(PhaseSpec::name).collect::<Vec<_>>().join(", ")
        )));
        return (checkpoint, false);
    }

    for spec in phases {
        if checkpoint.phase_done(spec.name()) {
            continue;
        }
        let resuming = resumed && checkpoint.phase == spec.name();
        if !resuming {
            checkpoint.advance_to(spec.name());
            // Committed at once, so a crash from here on resumes in this phase.
            match commit_with_retries(shared, &CommitBatch::default(), &checkpoint).await {
                Ok(()) => {}
                Err(error) => {
                    shared.fail(error);
                    return (checkpoint, false);
                }
            }
        }
        tracing::info!(run_id = shared.run_id, phase = spec.name(), resumed = resuming, "Phase started");
        let documents = count_documents(shared).await;
        let counts = checkpoint.current_counts();
        events
            .emit(EventKind::PhaseStarted { phase: spec.name().to_string(), resumed: resuming, counts, documents })
            .await;
        let (cp, reached_end) = match spec {
            PhaseSpec::Documents { stages, .. } => {
                let phase_shared = shared.for_phase(stages.clone(), counts);
                phase_shared.progress.set_estimated_total(documents);
                let (cp, reached_end) = run_pass(&phase_shared, checkpoint, vec![STORED_PARTITION.to_string()]).await;
                if let Some(error) = phase_shared.take_error() {
                    shared.fail(error);
                }
                (cp, reached_end)
            }
            PhaseSpec::Task(task) => run_task(shared, task.as_ref(), checkpoint).await,
        };
        checkpoint = cp;
        if !reached_end || shared.abort.is_cancelled() {
            return (checkpoint, false);
        }
        let counts = checkpoint.current_counts();
        tracing::info!(
            run_id = shared.run_id,
            phase = spec.name(),
            stored = counts.stored,
            failed = counts.failed,
            "Phase finished"
        );
        events.emit(EventKind::PhaseFinished { phase: spec.name().to_string(), counts }).await;
    }
    finish_last_phase(shared, checkpoint).await
}

/// How long counting the stored documents may hold a phase's start: the count
/// only gives the progress view its total.
const COUNT_TIMEOUT: Duration = Duration::from_secs(5);

/// The stored documents of the source a later phase reads, for its total;
/// `None` (no total shown) when the store cannot say or does not answer in time.
async fn count_documents(shared: &Shared) -> Option<u64> {
    match tokio::time::timeout(COUNT_TIMEOUT, shared.store.count_documents(shared.source.name())).await {
        Ok(Ok(count)) => count,
        Ok(Err(error)) => {
            tracing::warn!(%error, "the stored documents could not be counted: the phase shows no total");
            None
        }
        Err(_) => {
            tracing::warn!("counting the stored documents took too long: the phase shows no total");
            None
        }
    }
}

/// Commits the last phase as done, so a completed run's `phases_done` names every phase it ran.
async fn finish_last_phase(shared: &Arc<Shared>, mut checkpoint: Checkpoint) -> (Checkpoint, bool) {
    if checkpoint.phase_done(&checkpoint.phase) {
        return (checkpoint, true);
    }
    checkpoint.finish_phase();
    match commit_with_retries(shared, &CommitBatch::default(), &checkpoint).await {
        Ok(()) => (checkpoint, true),
        Err(error) => {
            shared.fail(error);
            (checkpoint, false)
        }
    }
}

/// The first phase: the source's partitions through the stages.
async fn run_first_phase(shared: &Arc<Shared>, checkpoint: Checkpoint) -> (Checkpoint, bool) {
    if let Err(error) = shared.source.prepare(shared.store.as_ref()).await {
        shared.fail(EngineError::Source(error));
        return (checkpoint, false);
    }
    match shared.source.partitions().await {
        Ok(partitions) => {
            let (cp, reached_end) = run_pass(shared, checkpoint, partitions).await;
            let limit_reached = shared.settings.max_records.is_some_and(|max| cp.counts.seen() >= max);
            (cp, reached_end || limit_reached)
        }
        Err(error) => {
            shared.fail(EngineError::Source(error));
            (checkpoint, false)
        }
    }
}

/// Reads `partitions` of the shared source through its stages into the store.
async fn run_pass(shared: &Arc<Shared>, checkpoint: Checkpoint, partitions: Vec<String>) -> (Checkpoint, bool) {
    let cp = match shared.settings.mode {
        Mode::Streaming => streaming::run(shared.clone(), checkpoint, partitions.clone()).await,
        Mode::Batch => legacy::run(shared.clone(), checkpoint, partitions.clone()).await,
    };
    let reached_end = partitions.iter().all(|p| cp.position(p).done);
    (cp, reached_end)
}

/// Runs a task phase and commits its output with the phase's counts in one transaction.
async fn run_task(shared: &Arc<Shared>, task: &dyn PhaseTask, mut checkpoint: Checkpoint) -> (Checkpoint, bool) {
    if shared.ctx.stop.is_cancelled() {
        return (checkpoint, false);
    }
    // The task reads the store from the beginning on each attempt, so an
    // outage in the middle of its read costs the read, not the run.
    let attempt = || {
        task.run(&shared.ctx, PhaseInput { store: &shared.store, run_id: shared.run_id, source: shared.source.name() })
    };
    let adapter = format!("{} ({})", shared.store.describe(), task.name());
    let retried =
        with_retries(&shared.settings.retry, &shared.ctx, &adapter, &shared.abort, attempt, |error| match error {
            EngineError::Store(StoreError::Unavailable(_)) => Verdict::Retry(None),
            _ => Verdict::Fatal,
        });
    let output = match retried.await {
        Ok(output) => output,
        Err(error) => {
            shared.fail(error);
            return (checkpoint, false);
        }
    };
    let mut next = checkpoint.clone();
    *next.current_counts_mut() = output.counts;
    next.batches += 1;
    next.cost = shared.ctx.usage.snapshot();
    let batch = CommitBatch { updates: output.updates, results: output.results, ..CommitBatch::default() };
    match commit_with_retries(shared, &batch, &next).await {
        Ok(()) => {
            checkpoint = next;
            shared
                .ctx
                .events
                .emit(EventKind::BatchCommitted {
                    batch: checkpoint.batches,
                    records: output.counts.stored,
                    commit_ms: 0.0,
                    checkpoint: checkpoint.clone(),
                })
                .await;
            (checkpoint, true)
        }
        Err(error) => {
            shared.fail(error);
            (checkpoint, false)
        }
    }
}

/// Writes `stopping` as soon as a stop is asked, so status shows it.
async fn mark_stopping(shared: Arc<Shared>) {
    shared.ctx.stop.cancelled().await;
    tracing::info!(run_id = shared.run_id, "Stop requested: finishing the batches in flight");
    if let Err(error) = shared.store.set_status(shared.run_id, RunStatus::Stopping, None).await {
        tracing::warn!(%error, "could not mark the run as stopping");
    }
}

/// Tries at the final status write, each bounded by [`FINAL_STATUS_TIMEOUT`]:
/// a store that stays down costs seconds, not a minute of connection timeouts.
const FINAL_STATUS_TRIES: u32 = 3;
const FINAL_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The final status should land even if the store hiccups; the checkpoint is
/// already safe. If the store stays down, the row stays `running` with its
/// run slot free, which every reader shows as "no live process: resumable".
async fn finish_status(shared: &Shared, status: RunStatus, error: Option<&str>) {
    for attempt in 1..=FINAL_STATUS_TRIES {
        let message =
            match tokio::time::timeout(FINAL_STATUS_TIMEOUT, shared.store.set_status(shared.run_id, status, error))
                .await
            {
                Ok(Ok(())) => return,
                Ok(Err(StoreError::Unavailable(message))) => message,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not write the final status {status}");
                    return;
                }
                Err(_) => format!("no answer within {} s", FINAL_STATUS_TIMEOUT.as_secs()),
            };
        if attempt == FINAL_STATUS_TRIES {
            tracing::error!(
                %message,
                "could not write the final status {status}: the store still says running, \
                 and shows no live process behind it"
            );
            return;
        }
        tracing::warn!(attempt, %message, "could not write the final status {status}; retrying");
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
}
