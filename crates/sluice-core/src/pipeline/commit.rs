//! The committer: takes batches in order and commits each with its checkpoint.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::fetch::Batch;
use super::retry::{Verdict, with_retries};
use super::run::Shared;
use crate::checkpoint::Checkpoint;
use crate::error::{EngineError, StoreError};
use crate::event::EventKind;
use crate::store::CommitBatch;

/// Commits batches as they arrive until the channel closes or the run aborts.
/// Returns the last committed checkpoint.
pub(crate) async fn commit_task(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Batch>,
    mut checkpoint: Checkpoint,
) -> Checkpoint {
    while let Some(batch) = rx.recv().await {
        if shared.abort.is_cancelled() {
            break;
        }
        match commit_batch(&shared, batch, &checkpoint).await {
            Ok(next) => checkpoint = next,
            Err(error) => {
                shared.fail(error);
                break;
            }
        }
    }
    checkpoint
}

/// Commits one batch on top of `previous` and reports it. The store is retried
/// while it is unavailable; the checkpoint only moves once the commit is done.
pub(crate) async fn commit_batch(
    shared: &Shared,
    batch: Batch,
    previous: &Checkpoint,
) -> Result<Checkpoint, EngineError> {
    let mut next = previous.clone();
    next.partitions.extend(batch.positions);
    next.batches = batch.seq;
    let mut delta = batch.delta;
    delta.stored = batch.docs.len() as u64;
    delta.chunks = batch.docs.iter().map(|d| d.chunks.len() as u64).sum();
    next.counts.add(&delta);

    let commit = CommitBatch { documents: batch.docs, failures: batch.failures };
    let started = Instant::now();
    let store = shared.store.clone();
    let describe = store.describe();
    with_retries(
        &shared.settings.retry,
        &shared.ctx,
        &describe,
        &shared.abort,
        || store.commit(shared.run_id, &commit, &next),
        |error: &StoreError| match error {
            StoreError::Unavailable(_) => Verdict::Retry(None),
            _ => Verdict::Fatal,
        },
    )
    .await?;
    let commit_ms = started.elapsed().as_secs_f64() * 1000.0;
    shared.progress.finished(&delta);

    tracing::info!("Batch {} complete: classified={}, stored={}", batch.seq, delta.classified, delta.stored);
    let events = &shared.ctx.events;
    if events.wants_per_document() {
        let duration_ms = batch.formed_at.elapsed().as_secs_f64() * 1000.0;
        for doc in &commit.documents {
            let document = shared.settings.include_documents.then(|| Box::new(doc.clone()));
            events
                .emit(EventKind::DocumentCompleted {
                    doc_id: doc.id().to_string(),
                    source: doc.source().to_string(),
                    duration_ms,
                    document,
                })
                .await;
        }
    }
    events
        .emit(EventKind::BatchCommitted {
            batch: batch.seq,
            records: delta.fetched,
            commit_ms,
            checkpoint: next.clone(),
        })
        .await;
    events.emit(shared.progress.event(&next.counts)).await;
    Ok(next)
}
