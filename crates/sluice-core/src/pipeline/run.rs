//! Starting a run (new or resumed), the state its tasks share, and the handle
//! a caller holds: the event stream, a stop switch and the final summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::commit::{COMMIT_QUEUE, commit_with_retries};
use super::fetch::FetchBudget;
use super::{Mode, Pipeline, Settings, StageSpec, Start, batch, streaming};
use crate::checkpoint::{Checkpoint, Counts};
use crate::context::{Context, UsageMeter};
use crate::error::{EngineError, StoreError};
use crate::event::{Event, EventKind, EventSink};
use crate::phase::{PhaseInput, PhaseSpec, PhaseTask, StoredDocuments};
use crate::record::Document;
use crate::source::Source;
use crate::store::{ActiveRunGuard, CommitBatch, NewRun, RunId, RunStatus, Store};

/// What a finished run reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub status: RunStatus,
    pub counts: Counts,
    pub checkpoint: Checkpoint,
    pub error: Option<String>,
    pub duration_seconds: f64,
}

/// A run going on in the background.
pub struct RunHandle {
    pub run_id: RunId,
    pub resumed: bool,
    events: mpsc::Receiver<Event>,
    stop: CancellationToken,
    task: JoinHandle<RunSummary>,
}

impl RunHandle {
    /// A token that asks the run to stop at the next batch boundary when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The next event, or `None` once the run has finished and all were read.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Waits for the end of the run, discarding events not read yet.
    pub async fn wait(mut self) -> RunSummary {
        while self.events.recv().await.is_some() {}
        match self.task.await {
            Ok(summary) => summary,
            // A bug, not a state of the run: report it as failed; the store keeps the last checkpoint.
            Err(e) => RunSummary {
                run_id: self.run_id,
                status: RunStatus::Failed,
                counts: Counts::default(),
                checkpoint: Checkpoint::default(),
                error: Some(format!("internal error: the run task ended abnormally: {e}")),
                duration_seconds: 0.0,
            },
        }
    }

    /// The events as a stream. Dropping the stream asks the run to stop.
    pub fn into_stream(self) -> impl Stream<Item = Event> + Send + 'static + use<> {
        let guard = self.stop.clone().drop_guard();
        futures::stream::unfold((self.events, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|event| (event, (rx, guard)))
        })
    }
}

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
        let ctx = Context {
            events: EventSink::new(run_id, self.settings.per_document_events, tx),
            stop: stop.clone(),
            usage: Arc::new(UsageMeter::new(checkpoint.cost)),
        };
        let shared = Arc::new(Shared {
            run_id,
            source: self.source.clone(),
            stages: self.stages.clone(),
            store: self.store.clone(),
            settings: self.settings.clone(),
            ctx,
            abort: CancellationToken::new(),
            error: Mutex::new(None),
            budget: FetchBudget::new(checkpoint.counts.fetched, self.settings.max_records),
            progress: Progress::new(checkpoint.counts),
            later_phase: false,
        });
        let task = tokio::spawn(execute(shared, self.phases.clone(), checkpoint, resumed, guard));
        Ok(RunHandle { run_id, resumed, events: rx, stop, task })
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

/// State shared by the tasks of one run.
pub(crate) struct Shared {
    pub run_id: RunId,
    pub source: Arc<dyn Source>,
    pub stages: Vec<StageSpec>,
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub ctx: Context,
    /// Cancelled on a fatal error: every task ends without committing more.
    pub abort: CancellationToken,
    error: Mutex<Option<EngineError>>,
    pub budget: FetchBudget,
    pub progress: Progress,
    /// A phase after the first: documents come from the store and only what
    /// the stages add to them is written back.
    pub later_phase: bool,
}

impl Shared {
    /// Records the first fatal error and aborts the run.
    pub fn fail(&self, error: EngineError) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!(%error, "run failed");
            *slot = Some(error);
        }
        self.abort.cancel();
    }

    fn take_error(&self) -> Option<EngineError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The same run working on a later phase: reading the store's documents
    /// through `stages`, counting apart, with no record limit. A fatal error
    /// in it aborts the whole run.
    fn for_phase(self: &Arc<Self>, stages: Vec<StageSpec>, counts: Counts) -> Arc<Shared> {
        let source = Arc::new(StoredDocuments::new(
            self.store.clone(),
            self.source.name().to_string(),
            self.settings.batch_size,
        ));
        let mut settings = self.settings.clone();
        settings.max_records = None;
        settings.labels.noun = "documents".into();
        Arc::new(Shared {
            run_id: self.run_id,
            source,
            stages,
            store: self.store.clone(),
            settings,
            ctx: self.ctx.clone(),
            abort: self.abort.clone(),
            error: Mutex::new(None),
            budget: FetchBudget::new(0, None),
            progress: Progress::new(counts),
            later_phase: true,
        })
    }
}

/// Live progress numbers for `BatchProgress`.
pub(crate) struct Progress {
    started: Instant,
    seeded_finished: u64,
    fetched: AtomicU64,
    finished: AtomicU64,
    estimated_total: Mutex<Option<u64>>,
}

impl Progress {
    fn new(seed: Counts) -> Self {
        Self {
            started: Instant::now(),
            seeded_finished: seed.finished(),
            fetched: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            estimated_total: Mutex::new(None),
        }
    }

    pub fn fetched(&self, n: u64) {
        self.fetched.fetch_add(n, Ordering::Relaxed);
    }

    pub fn finished(&self, delta: &Counts) {
        self.finished.fetch_add(delta.finished(), Ordering::Relaxed);
    }

    pub fn event(&self, counts: &Counts) -> EventKind {
        let finished = self.finished.load(Ordering::Relaxed);
        let in_flight = self.fetched.load(Ordering::Relaxed).saturating_sub(finished);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = finished as f64 / elapsed;
        let estimated_total = *self.estimated_total.lock().unwrap_or_else(|e| e.into_inner());
        let eta_seconds = estimated_total
            .filter(|_| rate > 0.0)
            .map(|total| total.saturating_sub(self.seeded_finished + finished) as f64 / rate);
        EventKind::BatchProgress {
            completed: counts.stored,
            failed: counts.failed,
            in_flight,
            estimated_total,
            eta_seconds,
            rate,
        }
    }
}

/// Turns a receiver into a stream.
pub(crate) fn receiver_stream<T: Send + 'static>(rx: mpsc::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
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
            mode: settings.mode.as_str().into(),
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
    *shared.progress.estimated_total.lock().unwrap_or_else(|e| e.into_inner()) = shared.source.estimated_total().await;

    let stopping = tokio::spawn(mark_stopping(shared.clone()));
    let (checkpoint, reached_end) = run_phases(&shared, &phases, checkpoint, resumed).await;
    stopping.abort();

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
        if !reached_end || phases.is_empty() || shared.abort.is_cancelled() {
            return (cp, reached_end);
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
        events.emit(EventKind::PhaseStarted { phase: spec.name().to_string(), resumed: resuming }).await;
        let (cp, reached_end) = match spec {
            PhaseSpec::Documents { stages, .. } => {
                let phase_shared = shared.for_phase(stages.clone(), checkpoint.current_counts());
                let (cp, reached_end) = run_pass(&phase_shared, checkpoint, vec![MAIN_PARTITION.to_string()]).await;
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
    (checkpoint, true)
}

/// The partition of a phase that reads the store.
const MAIN_PARTITION: &str = "main";

/// The first phase: the source's partitions through the stages.
async fn run_first_phase(shared: &Arc<Shared>, checkpoint: Checkpoint) -> (Checkpoint, bool) {
    match shared.source.partitions().await {
        Ok(partitions) => {
            let (cp, reached_end) = run_pass(shared, checkpoint, partitions).await;
            let limit_reached = shared.settings.max_records.is_some_and(|max| cp.counts.fetched >= max);
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
        Mode::Batch => batch::run(shared.clone(), checkpoint, partitions.clone()).await,
    };
    let reached_end = partitions.iter().all(|p| cp.position(p).done);
    (cp, reached_end)
}

/// Runs a task phase and commits its output with the phase's counts in one transaction.
async fn run_task(shared: &Arc<Shared>, task: &dyn PhaseTask, mut checkpoint: Checkpoint) -> (Checkpoint, bool) {
    if shared.ctx.stop.is_cancelled() {
        return (checkpoint, false);
    }
    let input = PhaseInput { store: &shared.store, run_id: shared.run_id, source: shared.source.name() };
    let output = match task.run(&shared.ctx, input).await {
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

/// The final status must land even if the store hiccups; the checkpoint is already safe.
async fn finish_status(shared: &Shared, status: RunStatus, error: Option<&str>) {
    for attempt in 0..10u32 {
        match shared.store.set_status(shared.run_id, status, error).await {
            Ok(()) => return,
            Err(StoreError::Unavailable(message)) => {
                tracing::warn!(attempt, %message, "could not write final status; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write final status");
                return;
            }
        }
    }
}
