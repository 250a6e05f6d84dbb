//! The state the tasks of one run share: the run's parts and settings, its
//! abort switch and first error, the record budget and the live progress.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fingerprint::pipeline_fingerprint;
use super::handle::InFlight;
use super::{Pipeline, Settings};
use crate::checkpoint::Counts;
use crate::context::Context;
use crate::error::EngineError;
use crate::event::EventKind;
use crate::phase::StoredDocuments;
use crate::sink::Sink;
use crate::source::Source;
use crate::stage::StageSpec;
use crate::store::{RunId, Store};

/// State shared by the tasks of one run.
pub(crate) struct Shared {
    pub run_id: RunId,
    pub source: Arc<dyn Source>,
    pub stages: Vec<StageSpec>,
    pub store: Arc<dyn Store>,
    pub settings: Settings,
    pub ctx: Context,
    /// Cancelled on a fatal error: every task ends without committing more.
    /// The same token as `ctx.abort`, which connectors see.
    pub abort: CancellationToken,
    error: Mutex<Option<EngineError>>,
    pub budget: FetchBudget,
    pub progress: Progress,
    /// Batches formed and not committed yet, for the whole run.
    pub in_flight: InFlight,
    /// What a commit writes of the documents that come through.
    pub writes: CommitKind,
    /// Written before each commit, inside the same retry.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// The fingerprint of the stages, stored with each document; `None`
    /// (a stage that cannot tell, or a later phase) skips nothing.
    pub fingerprint: Option<String>,
    /// Whether to look for unchanged documents before the stages: not when
    /// the run started on a store without any document (a first backfill),
    /// until a partition is read again from its start (a cursor fallback),
    /// which brings back records this run may have stored.
    pub look_up_unchanged: AtomicBool,
    /// [`Pipeline::only_phase`]: the last id a later phase reads (`None`: to the end).
    pub phase_last: Option<String>,
}

/// What the committer writes of each kept document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CommitKind {
    /// The first phase: the documents themselves, upserted.
    Documents,
    /// A later phase: the documents come from the store, and only what the
    /// stages added to them is written back.
    Updates,
}

impl Shared {
    /// The state of a run of `pipeline` whose counts start at `seed`.
    pub fn new(run_id: RunId, pipeline: &Pipeline, ctx: Context, seed: Counts) -> Self {
        Self {
            run_id,
            source: pipeline.source.clone(),
            stages: pipeline.stages.clone(),
            store: pipeline.store.clone(),
            settings: pipeline.settings.clone(),
            abort: ctx.abort.clone(),
            ctx,
            error: Mutex::new(None),
            budget: FetchBudget::new(seed.seen(), pipeline.settings.max_records),
            progress: Progress::new(seed),
            in_flight: InFlight::default(),
            writes: CommitKind::Documents,
            sinks: pipeline.sinks.clone(),
            // A sink (files, S3) is owed every record of a run, so a pipeline
            // with one never skips: nothing unchanged goes missing from it.
            fingerprint: if pipeline.sinks.is_empty() { pipeline_fingerprint(&pipeline.stages) } else { None },
            look_up_unchanged: AtomicBool::new(true),
            phase_last: pipeline.phase_last.clone(),
        }
    }

    /// Records the first fatal error and aborts the run.
    pub fn fail(&self, error: EngineError) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!(%error, "run failed");
            *slot = Some(error);
        }
        self.abort.cancel();
    }

    pub fn take_error(&self) -> Option<EngineError> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The same run working on a later phase: reading the store's documents
    /// through `stages`, counting apart, with no record limit. A fatal error
    /// in it aborts the whole run.
    pub fn for_phase(self: &Arc<Self>, stages: Vec<StageSpec>, counts: Counts) -> Arc<Shared> {
        let source = Arc::new(
            StoredDocuments::new(self.store.clone(), self.source.name().to_string(), self.settings.batch_size)
                .up_to(self.phase_last.clone()),
        );
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
            in_flight: self.in_flight.clone(),
            writes: CommitKind::Updates,
            sinks: self.sinks.clone(),
            fingerprint: None,
            look_up_unchanged: AtomicBool::new(false),
            phase_last: self.phase_last.clone(),
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

    /// What the source expects to yield in all, for the ETA.
    pub fn set_estimated_total(&self, total: Option<u64>) {
        *self.estimated_total.lock().unwrap_or_else(|e| e.into_inner()) = total;
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

/// Hands out the records `max_records` still allows, shared by all partitions.
pub(crate) struct FetchBudget {
    fetched: AtomicU64,
    limit: Option<u64>,
}

impl FetchBudget {
    pub fn new(already_fetched: u64, limit: Option<u64>) -> Self {
        Self { fetched: AtomicU64::new(already_fetched), limit }
    }

    /// Reserves up to `wanted` records; returns how many were granted.
    pub fn reserve(&self, wanted: usize) -> usize {
        let Some(limit) = self.limit else {
            self.fetched.fetch_add(wanted as u64, Ordering::Relaxed);
            return wanted;
        };
        let mut current = self.fetched.load(Ordering::Relaxed);
        loop {
            let granted = limit.saturating_sub(current).min(wanted as u64);
            match self.fetched.compare_exchange(current, current + granted, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return granted as usize,
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts `n` records as fetched, whatever the limit (records the source
    /// dropped, which cannot be left unread).
    pub fn charge(&self, n: u64) {
        self.fetched.fetch_add(n, Ordering::Relaxed);
    }

    pub fn exhausted(&self) -> bool {
        self.limit.is_some_and(|limit| self.fetched.load(Ordering::Relaxed) >= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_grants_only_what_the_limit_allows_across_calls() {
        let budget = FetchBudget::new(90, Some(100));
        assert_eq!(budget.reserve(7), 7);
        assert_eq!(budget.reserve(7), 3);
        assert!(budget.exhausted());
        assert_eq!(budget.reserve(1), 0);
        assert_eq!(FetchBudget::new(0, None).reserve(5), 5);
    }
}
