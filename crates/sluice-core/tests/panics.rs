//! A panic in a library user's own stage fails the run with the panic's
//! message, keeps the checkpoint of what was committed, and never hangs it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::testing::{MemStore, VecSource};
use sluice_core::*;

/// Panics on the batch that holds `panic_on`.
struct Panicky {
    panic_on: String,
}

#[async_trait]
impl Stage for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        if docs.iter().any(|d| d.id() == self.panic_on) {
            panic!("boom at {}", self.panic_on);
        }
        Ok(docs.into_iter().map(Outcome::Kept).collect())
    }
}

fn settings(mode: Mode) -> Settings {
    Settings { name: "test".into(), mode, batch_size: 10, ..Settings::default() }
}

#[tokio::test]
async fn a_panicking_stage_fails_the_run_and_keeps_its_checkpoint() {
    for mode in [Mode::Streaming, Mode::Batch] {
        for workers in [1, 2] {
            let store = Arc::new(MemStore::default());
            let source = Arc::new(VecSource::new(500, 1, 30));
            let pipeline = Pipeline::new(source, store.clone())
                .settings(settings(mode))
                .stage(StageSpec::new(Arc::new(Panicky { panic_on: "r00342".into() })).workers(workers));
            // A guard against a hang, not a timing assertion: the run takes milliseconds.
            let summary = tokio::time::timeout(Duration::from_secs(120), pipeline.run(Start::New))
                .await
                .unwrap_or_else(|_| panic!("{mode:?}/{workers}: the run hung after a stage panicked"))
                .unwrap();
            assert_eq!(summary.status, RunStatus::Failed, "{mode:?}/{workers}");
            let error = summary.error.as_deref().unwrap_or_default();
            assert!(error.contains("stage panicky panicked: boom at r00342"), "{mode:?}/{workers}: {error}");

            let run = store.get_run(summary.run_id).await.unwrap().unwrap();
            assert_eq!(run.status, RunStatus::Failed, "{mode:?}/{workers}: the store says failed");
            let stored = store.doc_ids().len() as u64;
            let checkpoint = run.checkpoint.clone().unwrap_or_default();
            assert_eq!(checkpoint.counts.stored, stored, "{mode:?}/{workers}: checkpoint matches the store");
            assert_eq!(summary.counts.stored, stored, "{mode:?}/{workers}: summary matches the store");
            if mode == Mode::Streaming {
                // Batches of 10 commit in order, none from r00340's batch on.
                assert!(stored <= 340 && stored.is_multiple_of(10), "{mode:?}/{workers}: {stored}");
            } else {
                assert_eq!(stored, 0, "{mode:?}/{workers}: batch mode stores after every stage ran");
            }
        }
    }
}
