//! The engine's contracts, tested with an in-memory store and a scripted
//! source: resume skips what was committed, limits survive resume, stops end
//! at a batch boundary, failures are recorded and retried, a refused cursor
//! restarts the partition, both modes store the same, and a slow store holds
//! the fetcher back.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use sluice_core::testing::{MemStore, VecSource};
use sluice_core::*;
use tokio::sync::Semaphore;

// ---------- stages ----------

/// Fails the whole run on the batch that holds `fail_on` while `armed`.
struct Tripwire {
    fail_on: String,
    armed: AtomicBool,
    seen: AtomicU64,
}

#[async_trait]
impl Stage for Tripwire {
    fn name(&self) -> &str {
        "tripwire"
    }
    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        if self.armed.load(Ordering::SeqCst) && docs.iter().any(|d| d.id() == self.fail_on) {
            return Err(StageError::permanent("boom", "tripwire"));
        }
        self.seen.fetch_add(docs.len() as u64, Ordering::SeqCst);
        Ok(docs.into_iter().map(Outcome::Kept).collect())
    }
}

/// Filters ids ending in 3, fails ids ending in 7 (retryable the first two
/// times for ids ending in 77), labels the rest.
struct Picky {
    attempts: Mutex<BTreeMap<String, u32>>,
}

#[async_trait]
impl Stage for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn counter(&self) -> Option<StageCounter> {
        Some(StageCounter::Classified)
    }
    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        let mut attempts = self.attempts.lock().unwrap();
        Ok(docs
            .into_iter()
            .map(|mut doc| {
                let n = attempts.entry(doc.id().to_string()).or_default();
                *n += 1;
                if doc.id().ends_with("77") && *n <= 2 {
                    Outcome::Failed { doc, error: StageError::retryable("http_503", "try later") }
                } else if doc.id().ends_with('3') {
                    Outcome::Filtered { doc, reason: "ends in 3".into() }
                } else if doc.id().ends_with('7') && !doc.id().ends_with("77") {
                    Outcome::Failed { doc, error: StageError::permanent("parse", "bad answer") }
                } else {
                    doc.classification = Some(Classification {
                        category: "x".into(),
                        confidence: 1.0,
                        reason: None,
                        classifier: "t".into(),
                    });
                    Outcome::Kept(doc)
                }
            })
            .collect())
    }
}

fn settings(mode: Mode) -> Settings {
    Settings {
        name: "test".into(),
        mode,
        batch_size: 10,
        retry: RetryPolicy {
            max_retries: 3,
            min_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(5),
        },
        ..Settings::default()
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("r{i:05}")).collect()
}

#[tokio::test]
async fn streaming_run_stores_every_record_once_and_completes() {
    let store = Arc::new(MemStore::default());
    let source = Arc::new(VecSource::new(237, 3, 20));
    let pipeline = Pipeline::new(source, store.clone()).settings(settings(Mode::Streaming));
    let summary = pipeline.run(Start::New).await.unwrap();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    assert_eq!(store.doc_ids(), ids(237));
    assert_eq!(store.max_write_count(), 1);
    assert_eq!(summary.counts.fetched, 237);
    assert_eq!(summary.counts.stored, 237);
    assert!(summary.checkpoint.partitions.values().all(|p| p.done));
    assert_eq!(summary.checkpoint.partitions.len(), 3);
}

#[tokio::test]
async fn resume_after_a_failed_batch_processes_only_what_was_not_committed() {
    for mode in [Mode::Streaming, Mode::Batch] {
        let store = Arc::new(MemStore::default());
        let source = Arc::new(VecSource::new(500, 1, 30));
        let tripwire =
            Arc::new(Tripwire { fail_on: "r00342".into(), armed: AtomicBool::new(true), seen: AtomicU64::new(0) });
        let pipeline = Pipeline::new(source.clone(), store.clone())
            .settings(settings(mode))
            .stage(StageSpec::new(tripwire.clone()).workers(2));
        let first = pipeline.run(Start::New).await.unwrap();
        assert_eq!(first.status, RunStatus::Failed);
        assert!(first.error.as_deref().unwrap().contains("tripwire"));
        let committed = store.doc_ids().len() as u64;
        let run = store.get_run(first.run_id).await.unwrap().unwrap();
        let checkpoint = run.checkpoint.clone().unwrap_or_default();
        assert_eq!(checkpoint.counts.stored, committed, "{mode:?}: checkpoint counts match the store");
        if mode == Mode::Streaming {
            // Batches of 10 commit in order: everything before r00340's batch is in.
            assert_eq!(committed, 340);
        } else {
            assert_eq!(committed, 0, "batch mode stores nothing until every stage ran over everything");
        }

        tripwire.armed.store(false, Ordering::SeqCst);
        tripwire.seen.store(0, Ordering::SeqCst);
        let pages_before = source.pages_fetched.load(Ordering::SeqCst);
        if committed == 0 {
            let err = pipeline.run(Start::Resume(first.run_id)).await.expect_err("empty checkpoint cannot be resumed");
            assert!(err.to_string().contains("empty checkpoint"), "{err}");
            continue;
        }
        let second = pipeline.run(Start::Resume(first.run_id)).await.unwrap();
        assert_eq!(second.run_id, first.run_id, "resume continues the original run");
        assert_eq!(second.status, RunStatus::Completed);
        assert_eq!(store.doc_ids(), ids(500));
        assert_eq!(store.max_write_count(), 1, "nothing committed was written again");
        assert_eq!(
            tripwire.seen.load(Ordering::SeqCst),
            500 - committed,
            "re-processed exactly the uncommitted records"
        );
        // 340 = 11 pages of 30 + 10: the resume re-fetches page 12 and goes on to page 17.
        assert_eq!(source.pages_fetched.load(Ordering::SeqCst) - pages_before, 17 - 11);
        assert_eq!(second.counts.fetched, 500, "counts are cumulative across the resume");
        assert_eq!(second.counts.stored, 500);
    }
}

#[tokio::test]
async fn max_records_counts_across_resumes() {
    let store = Arc::new(MemStore::default());
    let source = Arc::new(VecSource::new(300, 2, 25));
    let mut s = settings(Mode::Streaming);
    s.max_records = Some(120);
    let pipeline = Pipeline::new(source, store.clone()).settings(s);
    let first = pipeline.run(Start::New).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed);
    assert_eq!(first.counts.fetched, 120);
    assert_eq!(store.doc_ids().len(), 120);

    // Same limit: resuming the completed-by-limit run is refused (completed), a
    // stopped one would fetch nothing more. Raise the limit and resume a copy.
    let mut run = store.get_run(first.run_id).await.unwrap().unwrap();
    run.status = RunStatus::Stopped;
    store.state.lock().unwrap().runs[0] = run;
    let mut s = settings(Mode::Streaming);
    s.max_records = Some(200);
    let pipeline = Pipeline::new(Arc::new(VecSource::new(300, 2, 25)), store.clone()).settings(s);
    let second = pipeline.run(Start::Resume(first.run_id)).await.unwrap();
    assert_eq!(second.counts.fetched, 200, "the limit is cumulative, not per session");
    assert_eq!(store.doc_ids().len(), 200);
    assert_eq!(store.max_write_count(), 1);
}

#[tokio::test]
async fn failures_are_recorded_retryable_ones_retried_and_counts_add_up() {
    let store = Arc::new(MemStore::default());
    let source = Arc::new(VecSource::new(200, 1, 50));
    let pipeline = Pipeline::new(source, store.clone())
        .settings(settings(Mode::Streaming))
        .stage(StageSpec::new(Arc::new(Picky { attempts: Mutex::new(BTreeMap::new()) })));
    let mut events = Vec::new();
    let mut stream = Box::pin(pipeline.stream_events(Start::New).await.unwrap());
    while let Some(e) = stream.next().await {
        events.push(e);
    }
    let finished = events.iter().find_map(|e| match &e.kind {
        EventKind::RunFinished { counts, status, .. } => Some((*counts, *status)),
        _ => None,
    });
    let (counts, status) = finished.expect("RunFinished is the last event");
    assert_eq!(status, RunStatus::Completed);
    // ids r00000..r00199: 20 end in 3 (filtered), 18 end in 7 but not 77 (failed), r00077/r00177 succeed on retry.
    assert_eq!(counts.filtered, 20);
    assert_eq!(counts.failed, 18);
    assert_eq!(counts.stored, 200 - 20 - 18);
    assert_eq!(counts.classified, counts.stored);
    assert_eq!(store.failures(1).await.unwrap().len(), 18);
    assert!(store.doc_ids().contains(&"r00077".to_string()));
    let failed_events = events.iter().filter(|e| e.kind.name() == "DocumentFailed").count();
    assert_eq!(failed_events, 18);
    assert_eq!(events.first().unwrap().kind.name(), "RunStarted");
    assert_eq!(events.last().unwrap().kind.name(), "RunFinished");
    assert_eq!(events.iter().filter(|e| e.kind.name() == "DocumentCompleted").count(), 162);
}

#[tokio::test]
async fn invalid_cursor_restarts_the_partition_without_duplicates() {
    let store = Arc::new(MemStore::default());
    let source = Arc::new(VecSource::new(100, 1, 10));
    source.refuse_cursors.store(1, Ordering::SeqCst);
    source.transient_errors.store(2, Ordering::SeqCst);
    // A stage that tells its configuration, so that the run may skip unchanged documents.
    let stage = Arc::new(Told(Paid { model: "m".into(), calls: AtomicU64::new(0) }));
    let pipeline =
        Pipeline::new(source.clone(), store.clone()).settings(settings(Mode::Streaming)).stage(StageSpec::new(stage));
    let mut handle = pipeline.start(Start::New).await.unwrap();
    let mut fallbacks = 0;
    let mut backoffs = 0;
    while let Some(e) = handle.next_event().await {
        match e.kind {
            EventKind::CursorFallback { .. } => fallbacks += 1,
            EventKind::AdapterStateChange { new_state, .. } if new_state == "backing_off" => backoffs += 1,
            _ => {}
        }
    }
    let summary = handle.wait().await;
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(fallbacks, 1);
    assert_eq!(backoffs, 2);
    assert_eq!(store.doc_ids(), ids(100));
    // The run started on an empty store, so it looked nothing up until the
    // partition was read again: then the pages it had stored could come back.
    assert!(store.state.lock().unwrap().unchanged_lookups > 0, "the re-read pages are looked up");
}

#[tokio::test]
async fn both_modes_store_identical_documents() {
    let mut results = Vec::new();
    for mode in [Mode::Streaming, Mode::Batch] {
        let store = Arc::new(MemStore::default());
        let pipeline = Pipeline::new(Arc::new(VecSource::new(333, 2, 40)), store.clone())
            .settings(settings(mode))
            .stage(StageSpec::new(Arc::new(Picky { attempts: Mutex::new(BTreeMap::new()) })).workers(3));
        let summary = pipeline.run(Start::New).await.unwrap();
        assert_eq!(summary.status, RunStatus::Completed);
        results.push((store.docs(), summary.counts));
    }
    assert_eq!(results[0].0.len(), 333 - 33 - 30);
    assert_eq!(results[0], results[1]);
}

#[tokio::test]
async fn a_stop_ends_at_a_batch_boundary_and_the_run_resumes() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(MemStore { gate: Some(gate.clone()), ..MemStore::default() });
    let pipeline =
        Pipeline::new(Arc::new(VecSource::new(1000, 1, 10)), store.clone()).settings(settings(Mode::Streaming));
    let mut handle = pipeline.start(Start::New).await.unwrap();
    gate.add_permits(3);
    // Wait for the third commit, then stop and let everything in flight commit.
    let mut committed = 0;
    while let Some(e) = handle.next_event().await {
        if e.kind.name() == "BatchCommitted" {
            committed += 1;
            if committed == 3 {
                break;
            }
        }
    }
    handle.stop_token().cancel();
    gate.add_permits(1000);
    let summary = handle.wait().await;
    assert_eq!(summary.status, RunStatus::Stopped);
    let stored = store.doc_ids().len();
    assert!((30..1000).contains(&stored), "stopped early with whole batches: {stored}");
    assert_eq!(stored % 10, 0, "only whole batches are committed");
    assert_eq!(summary.counts.stored as usize, stored);

    let resumed = pipeline.run(Start::Resume(summary.run_id)).await.unwrap();
    assert_eq!(resumed.status, RunStatus::Completed);
    assert_eq!(store.doc_ids(), ids(1000));
    assert_eq!(store.max_write_count(), 1);
}

#[tokio::test]
async fn a_slow_store_holds_the_fetcher_back() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(MemStore { gate: Some(gate.clone()), ..MemStore::default() });
    let source = Arc::new(VecSource::new(10_000, 1, 10));
    let pipeline = Pipeline::new(source.clone(), store.clone())
        .settings(settings(Mode::Streaming))
        .stage(StageSpec::new(Arc::new(Picky { attempts: Mutex::new(BTreeMap::new()) })).workers(2));
    let bound = pipeline.max_batches_in_flight();
    let handle = pipeline.start(Start::New).await.unwrap();
    // No commit can finish: let the pipeline fill up, then look at how far the fetcher got.
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let pages = source.pages_fetched.load(Ordering::SeqCst) as usize;
    // Each batch is one page here. Besides the batches in flight, one page is
    // being cut by the batcher, one waits in its channel, one in the fetcher.
    assert!(pages <= bound + 3, "fetched {pages} pages with a blocked store (bound {bound})");
    assert!(pages >= 2, "the pipeline should have filled up: {pages}");
    handle.stop_token().cancel();
    gate.add_permits(100_000);
    let summary = handle.wait().await;
    assert_eq!(summary.status, RunStatus::Stopped);
}

#[tokio::test]
async fn store_outage_is_retried_and_nothing_is_lost() {
    let store = Arc::new(MemStore { unavailable: AtomicU32::new(3), ..MemStore::default() });
    let pipeline =
        Pipeline::new(Arc::new(VecSource::new(95, 1, 10)), store.clone()).settings(settings(Mode::Streaming));
    let summary = pipeline.run(Start::New).await.unwrap();
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(store.doc_ids(), ids(95));
    // 10 batches, each once despite the retries, and the final checkpoint naming the phase done (#11.8).
    assert_eq!(store.state.lock().unwrap().commits, 10 + 1);
}

#[tokio::test]
async fn a_second_run_on_a_busy_store_is_refused() {
    let gate = Arc::new(Semaphore::new(0));
    let store = Arc::new(MemStore { gate: Some(gate.clone()), ..MemStore::default() });
    let pipeline =
        Pipeline::new(Arc::new(VecSource::new(100, 1, 10)), store.clone()).settings(settings(Mode::Streaming));
    let handle = pipeline.start(Start::New).await.unwrap();
    let err = pipeline.start(Start::New).await.err().unwrap();
    assert!(matches!(err, EngineError::Store(StoreError::Busy { active_run_id: 1 })), "{err:?}");
    gate.add_permits(1000);
    assert_eq!(handle.wait().await.status, RunStatus::Completed);
    assert!(pipeline.start(Start::New).await.is_ok(), "the slot is free once the run ended");
}

#[tokio::test]
async fn byte_bound_closes_batches_early() {
    let store = Arc::new(MemStore::default());
    let mut s = settings(Mode::Streaming);
    s.batch_size = 500;
    s.max_batch_bytes = 1024; // each record is ~100 bytes: about 10 a batch
    let pipeline = Pipeline::new(Arc::new(VecSource::new(200, 1, 100)), store.clone()).settings(s);
    let summary = pipeline.run(Start::New).await.unwrap();
    assert_eq!(store.doc_ids().len(), 200);
    assert!(summary.checkpoint.batches >= 15, "batches: {}", summary.checkpoint.batches);
}

#[tokio::test]
async fn iter_results_yields_each_committed_document() {
    let store = Arc::new(MemStore::default());
    let pipeline =
        Pipeline::new(Arc::new(VecSource::new(57, 1, 10)), store.clone()).settings(settings(Mode::Streaming));
    let docs: Vec<Document> = pipeline.iter_results(Start::New).await.unwrap().collect().await;
    let got: Vec<String> = docs.iter().map(|d| d.id().to_string()).collect();
    assert_eq!(got, ids(57));
}

/// A paid-per-call labeller: remembers its results under its model name.
struct Paid {
    model: String,
    calls: AtomicU64,
}

#[async_trait]
impl Stage for Paid {
    fn name(&self) -> &str {
        "classify"
    }
    fn counter(&self) -> Option<StageCounter> {
        Some(StageCounter::Classified)
    }
    fn memo(&self) -> Option<&dyn Memo> {
        Some(self)
    }
    async fn process(&self, ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        self.calls.fetch_add(docs.len() as u64, Ordering::SeqCst);
        for _ in &docs {
            ctx.usage.llm_call(10, 2);
        }
        Ok(docs
            .into_iter()
            .map(|mut doc| {
                let category = format!("{}:{}", self.model, doc.id().len());
                doc.classification =
                    Some(Classification { category, confidence: 0.5, reason: None, classifier: self.model.clone() });
                Outcome::Kept(doc)
            })
            .collect())
    }
}

impl Memo for Paid {
    fn fingerprint(&self) -> String {
        self.model.clone()
    }
    fn value(&self, doc: &Document) -> Option<serde_json::Value> {
        serde_json::to_value(doc.classification.as_ref()?).ok()
    }
    fn apply(&self, doc: &mut Document, value: &serde_json::Value) -> bool {
        doc.classification = serde_json::from_value(value.clone()).ok();
        doc.classification.is_some()
    }
}

/// [`Paid`] that also tells what shapes its rows, so a pipeline of it can
/// skip a stored, unchanged document whole.
struct Told(Paid);

#[async_trait]
impl Stage for Told {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn counter(&self) -> Option<StageCounter> {
        self.0.counter()
    }
    fn memo(&self) -> Option<&dyn Memo> {
        Some(&self.0)
    }
    fn fingerprint(&self) -> Option<String> {
        Some(self.0.model.clone())
    }
    async fn process(&self, ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        self.0.process(ctx, docs).await
    }
}

#[tokio::test]
async fn a_rerun_skips_unchanged_documents_whole_until_their_content_or_the_config_changes() {
    let store = Arc::new(MemStore::default());
    let run_with = |model: &str, edit: Option<usize>| {
        let stage = Arc::new(Told(Paid { model: model.into(), calls: AtomicU64::new(0) }));
        let mut source = VecSource::new(120, 2, 25);
        if let Some(i) = edit
            && let SourceItem::Record(record) = &mut source.partitions[0][i]
        {
            record.text.push_str(" (edited)");
        }
        let pipeline = Pipeline::new(Arc::new(source), store.clone())
            .settings(settings(Mode::Streaming))
            .stage(StageSpec::new(stage.clone()));
        (pipeline, stage)
    };
    let (first, stage) = run_with("model-a", None);
    let summary = first.run(Start::New).await.unwrap();
    assert_eq!((stage.0.calls.load(Ordering::SeqCst), summary.counts.stored), (120, 120));
    let lookups = || store.state.lock().unwrap().unchanged_lookups;
    assert_eq!(lookups(), 0, "a run that starts on an empty store looks nothing up: there is nothing to find");

    let (again, stage) = run_with("model-a", None);
    let summary = again.run(Start::New).await.unwrap();
    assert!(lookups() > 0, "a run on a store with documents looks its batches up");
    assert_eq!(summary.status, RunStatus::Completed);
    assert_eq!(stage.0.calls.load(Ordering::SeqCst), 0, "nothing paid");
    let c = summary.counts;
    assert_eq!((c.fetched, c.stored, c.classified, c.unchanged), (0, 0, 0, 120), "{c:?}");
    assert_eq!(c.skipped_unchanged, 120, "one paid stage skipped per document");
    assert_eq!(store.max_write_count(), 1, "nothing rewritten");
    assert!(summary.checkpoint.partitions.values().all(|p| p.done), "the checkpoint moved past them");

    // One edited record: that one alone goes through the stage, and is paid for.
    let (edited, stage) = run_with("model-a", Some(3));
    let summary = edited.run(Start::New).await.unwrap();
    assert_eq!(stage.0.calls.load(Ordering::SeqCst), 1);
    assert_eq!((summary.counts.stored, summary.counts.unchanged), (1, 119));
    let writes: Vec<u32> = store.state.lock().unwrap().docs.values().map(|(_, n)| *n).collect();
    assert_eq!((writes.iter().filter(|n| **n == 2).count(), writes.iter().filter(|n| **n == 1).count()), (1, 119));

    // Another configuration makes other rows: every document again.
    let (changed, stage) = run_with("model-b", Some(3));
    let summary = changed.run(Start::New).await.unwrap();
    assert_eq!(stage.0.calls.load(Ordering::SeqCst), 120);
    assert_eq!((summary.counts.stored, summary.counts.unchanged), (120, 0));
}

#[tokio::test]
async fn a_stage_that_cannot_tell_its_configuration_turns_the_skip_off() {
    let store = Arc::new(MemStore::default());
    for _ in 0..2 {
        let pipeline = Pipeline::new(Arc::new(VecSource::new(30, 1, 10)), store.clone())
            .settings(settings(Mode::Streaming))
            .stage(StageSpec::new(Arc::new(Paid { model: "m".into(), calls: AtomicU64::new(0) })));
        let summary = pipeline.run(Start::New).await.unwrap();
        assert_eq!((summary.counts.stored, summary.counts.unchanged), (30, 0));
    }
    assert_eq!(store.max_write_count(), 2, "rewritten: the pipeline has no fingerprint");
}

#[tokio::test]
async fn unchanged_content_is_not_paid_for_twice_until_the_fingerprint_changes() {
    let store = Arc::new(MemStore::default());
    let run_with = |model: &str| {
        let stage = Arc::new(Paid { model: model.into(), calls: AtomicU64::new(0) });
        let pipeline = Pipeline::new(Arc::new(VecSource::new(120, 2, 25)), store.clone())
            .settings(settings(Mode::Streaming))
            .stage(StageSpec::new(stage.clone()));
        (pipeline, stage)
    };
    let (first, stage) = run_with("model-a");
    let summary = first.run(Start::New).await.unwrap();
    assert_eq!(stage.calls.load(Ordering::SeqCst), 120);
    assert_eq!(summary.counts.skipped_unchanged, 0);
    assert_eq!(
        summary.checkpoint.cost,
        CostLedger { llm_calls: 120, embedding_calls: 0, tokens_in: 1200, tokens_out: 240, ..CostLedger::default() }
    );

    let (again, stage) = run_with("model-a");
    let summary = again.run(Start::New).await.unwrap();
    assert_eq!(stage.calls.load(Ordering::SeqCst), 0, "a re-run over unchanged content makes no calls");
    assert_eq!(summary.counts.skipped_unchanged, 120);
    assert_eq!(summary.counts.classified, 120, "reused results still count as classified");
    assert_eq!(summary.checkpoint.cost.llm_calls, 0, "the ledger shows nothing paid");
    assert!(store.docs().iter().all(|d| d.classification.as_ref().unwrap().category.starts_with("model-a:")));

    let (changed, stage) = run_with("model-b");
    changed.run(Start::New).await.unwrap();
    assert_eq!(stage.calls.load(Ordering::SeqCst), 120, "a new model re-classifies");
    assert!(store.docs().iter().all(|d| d.classification.as_ref().unwrap().category.starts_with("model-b:")));
}

/// Filters what a quality check drops: ids ending in 3.
struct DropThrees;

fn ends_in_3(record: &Record) -> bool {
    record.id.ends_with('3')
}

#[async_trait]
impl Stage for DropThrees {
    fn name(&self) -> &str {
        "quality"
    }
    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        Ok(docs
            .into_iter()
            .map(|doc| match ends_in_3(&doc.record) {
                true => Outcome::Filtered { doc, reason: "too short".into() },
                false => Outcome::Kept(doc),
            })
            .collect())
    }
}

#[tokio::test]
async fn batch_mode_counts_what_the_source_drops_as_fetched_and_filtered() {
    let run = async |mode: Mode, source_drops: bool| {
        let store = Arc::new(MemStore::default());
        let mut source = VecSource::new(200, 2, 15);
        let mut pipeline = Pipeline::new(Arc::new(VecSource::new(0, 1, 1)), store.clone()).settings(settings(mode));
        if source_drops {
            source.drop_if = Some(ends_in_3);
        } else {
            // What batch mode did before sources dropped in every mode: a stage filtered them.
            pipeline = pipeline.stage(StageSpec::new(Arc::new(DropThrees)));
        }
        let summary = pipeline.with_source(Arc::new(source)).run(Start::New).await.unwrap();
        assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
        (summary.counts, store.docs())
    };
    let (batch, batch_docs) = run(Mode::Batch, true).await;
    assert_eq!(batch.fetched, 200, "batch: fetched is the raw count");
    assert_eq!(batch.filtered, 20, "batch: filtered is what the source dropped");
    assert_eq!(batch.stored, 180);
    assert_eq!(run(Mode::Batch, false).await, (batch, batch_docs.clone()), "the same counters as a filtering stage");

    let (streaming, streaming_docs) = run(Mode::Streaming, true).await;
    assert_eq!(
        (streaming.fetched, streaming.filtered, streaming.stored),
        (180, 0, 180),
        "streaming: dropped is not counted"
    );
    assert_eq!(streaming_docs, batch_docs, "both modes store the same documents");
}

// ---------- later phases ----------

/// Annotates each document with the length of its text; stops the run once
/// it has seen `stop_after` documents (when set), as a user's stop would.
struct Annotate {
    seen: AtomicU64,
    stop_after: AtomicU64,
}

impl Annotate {
    fn new(stop_after: u64) -> Self {
        Self { seen: AtomicU64::new(0), stop_after: AtomicU64::new(stop_after) }
    }
}

#[async_trait]
impl Stage for Annotate {
    fn name(&self) -> &str {
        "annotate"
    }
    async fn process(&self, ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        let seen = self.seen.fetch_add(docs.len() as u64, Ordering::SeqCst) + docs.len() as u64;
        let stop_after = self.stop_after.load(Ordering::SeqCst);
        if stop_after > 0 && seen >= stop_after {
            ctx.stop.cancel();
        }
        Ok(docs
            .into_iter()
            .map(|mut doc| {
                assert!(doc.classification.is_some(), "a later phase sees what the first phase stored");
                doc.annotations.insert("length".into(), doc.record.text.len().into());
                Outcome::Kept(doc)
            })
            .collect())
    }
}

/// Counts the annotated documents into one result.
struct Tally {
    runs: AtomicU64,
}

#[async_trait]
impl PhaseTask for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    async fn run(&self, _ctx: &Context, input: PhaseInput<'_>) -> Result<PhaseOutput, EngineError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let docs = input.store.scan_documents(input.source, None, usize::MAX).await?;
        let annotated = docs.iter().filter(|d| d.annotations.contains_key("length")).count();
        Ok(PhaseOutput {
            results: vec![PhaseResult { kind: "tally".into(), key: "all".into(), value: annotated.into() }],
            counts: Counts { stored: 1, ..Counts::default() },
            ..PhaseOutput::default()
        })
    }
}

fn labelled() -> StageSpec {
    StageSpec::new(Arc::new(Picky { attempts: Mutex::new(BTreeMap::new()) }))
}

#[tokio::test]
async fn later_phases_run_in_order_over_the_stored_documents_and_write_what_they_add() {
    for mode in [Mode::Streaming, Mode::Batch] {
        let store = Arc::new(MemStore::default());
        let annotate = Arc::new(Annotate::new(0));
        let tally = Arc::new(Tally { runs: AtomicU64::new(0) });
        let pipeline = Pipeline::new(Arc::new(VecSource::new(150, 2, 20)), store.clone())
            .settings(Settings { phase: "classification".into(), ..settings(mode) })
            .stage(labelled())
            .phase(PhaseSpec::documents("annotation", vec![StageSpec::new(annotate.clone()).workers(2)]))
            .phase(PhaseSpec::Task(tally.clone()));
        let events: Vec<Event> = pipeline.stream_events(Start::New).await.unwrap().collect().await;
        let Some(EventKind::RunFinished { status, counts, .. }) = events.last().map(|e| &e.kind) else {
            panic!("the last event is RunFinished")
        };
        assert_eq!(*status, RunStatus::Completed);
        let stored = counts.stored;
        let phases: Vec<&str> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PhaseStarted { phase, .. } => Some(phase.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(phases, ["annotation", "tally"], "{mode:?}");
        // The later phase updated each stored document once, without writing it again.
        assert_eq!(store.max_write_count(), 1);
        assert_eq!(annotate.seen.load(Ordering::SeqCst), stored);
        assert!(store.docs().iter().all(|d| d.annotations["length"] == d.record.text.len()));
        let run = store.get_run(1).await.unwrap().unwrap();
        let checkpoint = run.checkpoint.unwrap();
        assert_eq!(checkpoint.phase, "tally");
        assert_eq!(checkpoint.phases_done, ["classification", "annotation", "tally"], "the last phase too (#11.8)");
        assert_eq!(checkpoint.phase_counts["annotation"].stored, stored);
        assert_eq!(checkpoint.counts.stored, stored, "the first phase keeps its own counts");
        let tallies = store.phase_results(1, "tally").await.unwrap();
        assert_eq!(tallies[0].value, serde_json::json!(stored));
        assert_eq!(tally.runs.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn a_stop_in_a_later_phase_resumes_in_that_phase_without_reading_the_source_again() {
    let store = Arc::new(MemStore::default());
    let source = Arc::new(VecSource::new(400, 1, 25));
    let annotate = Arc::new(Annotate::new(120));
    let tally = Arc::new(Tally { runs: AtomicU64::new(0) });
    let pipeline = Pipeline::new(source.clone(), store.clone())
        .settings(Settings { phase: "classification".into(), ..settings(Mode::Streaming) })
        .stage(labelled())
        .phase(PhaseSpec::documents("annotation", vec![StageSpec::new(annotate.clone())]))
        .phase(PhaseSpec::Task(tally.clone()));
    let first = pipeline.run(Start::New).await.unwrap();
    assert_eq!(first.status, RunStatus::Stopped);
    assert_eq!(first.checkpoint.phase, "annotation");
    assert_eq!(tally.runs.load(Ordering::SeqCst), 0);
    let committed = first.checkpoint.phase_counts["annotation"].stored;
    assert!(committed > 0 && committed < first.counts.stored, "stopped part-way: {committed}");
    let pages = source.pages_fetched.load(Ordering::SeqCst);

    annotate.stop_after.store(0, Ordering::SeqCst);
    let seen_before = annotate.seen.load(Ordering::SeqCst);
    let second = pipeline.run(Start::Resume(first.run_id)).await.unwrap();
    assert_eq!(second.status, RunStatus::Completed, "{:?}", second.error);
    assert_eq!(source.pages_fetched.load(Ordering::SeqCst), pages, "the first phase is not run again");
    // The resume annotates only what the stop left: nothing committed is processed twice.
    assert_eq!(annotate.seen.load(Ordering::SeqCst) - seen_before, second.counts.stored - committed);
    assert_eq!(second.checkpoint.phase_counts["annotation"].stored, second.counts.stored);
    assert_eq!(tally.runs.load(Ordering::SeqCst), 1);
    assert!(store.docs().iter().all(|d| d.annotations.contains_key("length")));
}

/// A per-document phase split into id ranges (as a distributed run's workers run it): each range is a run of
/// `only_phase` resumed in that phase from the range's start, reading only up to its last id; together they
/// annotate every stored document exactly once, and each range marks the phase done in its own checkpoint.
#[tokio::test]
async fn a_later_phase_split_into_id_ranges_processes_each_document_once() {
    let store = Arc::new(MemStore::default());
    let source = Arc::new(VecSource::new(150, 2, 20));
    let annotate = Arc::new(Annotate::new(0));
    let tally = Arc::new(Tally { runs: AtomicU64::new(0) });
    let pipeline = Pipeline::new(source, store.clone())
        .settings(Settings { phase: "classification".into(), ..settings(Mode::Streaming) })
        .stage(labelled())
        .phase(PhaseSpec::documents("annotation", vec![StageSpec::new(annotate.clone())]))
        .phase(PhaseSpec::Task(tally.clone()));
    let first = pipeline.clone().without_phases().run(Start::New).await.unwrap();
    assert_eq!(first.status, RunStatus::Completed);
    let ids = store.doc_ids();
    assert!(ids.len() > 100, "{} stored", ids.len());
    // Three ranges: (start, ids[39]], (ids[39], ids[99]], (ids[99], end).
    let ranges =
        [(None, Some(ids[39].clone())), (Some(ids[39].clone()), Some(ids[99].clone())), (Some(ids[99].clone()), None)];
    let template = store.get_run(first.run_id).await.unwrap().unwrap();
    for (n, (after, last)) in ranges.into_iter().enumerate() {
        let mut checkpoint = first.checkpoint.clone();
        checkpoint.advance_to("annotation");
        checkpoint.partitions.insert("main".into(), Position { cursor: after, ..Position::default() });
        let id = first.run_id + 1 + n as RunId;
        store.state.lock().unwrap().runs.push(RunInfo {
            id,
            status: RunStatus::Stopped,
            checkpoint: Some(checkpoint),
            ..template.clone()
        });
        let seen = annotate.seen.load(Ordering::SeqCst);
        let part = pipeline.clone().only_phase("annotation", last).run(Start::Resume(id)).await.unwrap();
        assert_eq!(part.status, RunStatus::Completed, "{:?}", part.error);
        let want = [40, 60, ids.len() as u64 - 100][n];
        assert_eq!(annotate.seen.load(Ordering::SeqCst) - seen, want, "range {n} reads only its ids");
        assert_eq!(part.checkpoint.phase_counts["annotation"].stored, want);
        assert!(part.checkpoint.phase_done("annotation"), "range {n} finished the phase");
    }
    assert_eq!(annotate.seen.load(Ordering::SeqCst), ids.len() as u64, "every document annotated once");
    assert!(store.docs().iter().all(|d| d.annotations.contains_key("length")));
    assert_eq!(store.max_write_count(), 1, "the record itself is not written again");
    assert_eq!(tally.runs.load(Ordering::SeqCst), 0, "only the one phase ran");
}

#[tokio::test]
async fn resuming_a_run_in_a_phase_the_pipeline_does_not_have_fails_with_the_reason() {
    let store = Arc::new(MemStore::default());
    let annotate = Arc::new(Annotate::new(30));
    let with_phase = Pipeline::new(Arc::new(VecSource::new(100, 1, 10)), store.clone())
        .settings(settings(Mode::Streaming))
        .stage(labelled())
        .phase(PhaseSpec::documents("annotation", vec![StageSpec::new(annotate)]));
    let first = with_phase.run(Start::New).await.unwrap();
    assert_eq!(first.checkpoint.phase, "annotation");
    let without = Pipeline::new(Arc::new(VecSource::new(100, 1, 10)), store.clone())
        .settings(settings(Mode::Streaming))
        .stage(labelled());
    let second = without.run(Start::Resume(first.run_id)).await.unwrap();
    assert_eq!(second.status, RunStatus::Failed);
    assert!(second.error.unwrap().contains("phase annotation"), "names the phase");
}

/// A task phase whose store read is cut by an outage the first `outages` times.
struct CutRead {
    outages: AtomicU32,
    runs: AtomicU64,
}

#[async_trait]
impl PhaseTask for CutRead {
    fn name(&self) -> &str {
        "cut_read"
    }
    async fn run(&self, _ctx: &Context, input: PhaseInput<'_>) -> Result<PhaseOutput, EngineError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let mut seen = 0u64;
        input.for_each_document(|_| seen += 1).await?;
        if self.outages.load(Ordering::SeqCst) > 0 {
            self.outages.fetch_sub(1, Ordering::SeqCst);
            return Err(EngineError::Store(StoreError::Unavailable("connection reset by peer".into())));
        }
        Ok(PhaseOutput {
            results: vec![PhaseResult { kind: "seen".into(), key: "all".into(), value: seen.into() }],
            counts: Counts { stored: seen, ..Counts::default() },
            ..PhaseOutput::default()
        })
    }
}

#[tokio::test]
async fn a_task_phase_whose_read_is_cut_by_an_outage_reads_again_and_commits_once() {
    let store = Arc::new(MemStore::default());
    let task = Arc::new(CutRead { outages: AtomicU32::new(2), runs: AtomicU64::new(0) });
    let pipeline = Pipeline::new(Arc::new(VecSource::new(40, 1, 10)), store.clone())
        .settings(settings(Mode::Streaming))
        .phase(PhaseSpec::Task(task.clone()));
    let events: Vec<Event> = pipeline.stream_events(Start::New).await.unwrap().collect().await;
    let Some(EventKind::RunFinished { status, .. }) = events.last().map(|e| &e.kind) else {
        panic!("the last event is RunFinished")
    };
    assert_eq!(*status, RunStatus::Completed);
    assert_eq!(task.runs.load(Ordering::SeqCst), 3, "read again after each of the two outages");
    let backoffs = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::AdapterStateChange { adapter, .. } if adapter.contains("cut_read")))
        .count();
    assert!(backoffs >= 2, "each outage backs off, named after the phase: {backoffs}");
    let results = store.phase_results(1, "seen").await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].value, serde_json::json!(40), "the whole store read, once committed");

    // An outage that outlasts the retry budget fails the run with the store's error.
    let store = Arc::new(MemStore::default());
    let task = Arc::new(CutRead { outages: AtomicU32::new(100), runs: AtomicU64::new(0) });
    let mut quick = settings(Mode::Streaming);
    quick.retry = RetryPolicy { max_retries: 2, ..quick.retry };
    let summary = Pipeline::new(Arc::new(VecSource::new(40, 1, 10)), store.clone())
        .settings(quick)
        .phase(PhaseSpec::Task(task.clone()))
        .run(Start::New)
        .await
        .unwrap();
    assert_eq!(summary.status, RunStatus::Failed);
    assert!(summary.error.unwrap_or_default().contains("connection reset"));
    assert_eq!(task.runs.load(Ordering::SeqCst), 3, "the first try and two retries");
    assert!(store.phase_results(1, "seen").await.unwrap().is_empty());
}
