//! The committer: takes batches in order and commits each with its checkpoint.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::batcher::Batch;
use super::state::Shared;
use crate::checkpoint::{Checkpoint, Counts};
use crate::error::{EngineError, StoreError};
use crate::event::EventKind;
use crate::retry::{Verdict, with_retries};
use crate::store::{CommitBatch, DocumentUpdate};

/// Batches that may wait for the committer; the ones waiting when it is free
/// are committed together in one transaction (group commit), which pays the
/// fixed cost of a transaction once for all of them.
pub(crate) const COMMIT_QUEUE: usize = 4;

/// Commits batches as they arrive until the channel closes or the run aborts.
/// Returns the last committed checkpoint.
pub(crate) async fn commit_task(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Batch>,
    mut checkpoint: Checkpoint,
) -> Checkpoint {
    while let Some(first) = rx.recv().await {
        if shared.abort.is_cancelled() {
            break;
        }
        let mut group = vec![first];
        while group.len() <= COMMIT_QUEUE {
            match rx.try_recv() {
                Ok(batch) => group.push(batch),
                Err(_) => break,
            }
        }
        match commit_batches(&shared, group, &checkpoint).await {
            Ok(next) => checkpoint = next,
            Err(error) => {
                shared.fail(error);
                break;
            }
        }
    }
    checkpoint
}

/// Commits batches, in order, in one transaction on top of `previous`, and
/// reports each. The store is retried while it is unavailable; the
/// checkpoint only moves once the commit is done.
pub(crate) async fn commit_batches(
    shared: &Shared,
    batches: Vec<Batch>,
    previous: &Checkpoint,
) -> Result<Checkpoint, EngineError> {
    let mut commit = CommitBatch::default();
    let mut documents = Vec::new();
    let mut reports = Vec::with_capacity(batches.len());
    let mut next = previous.clone();
    for batch in batches {
        next.partitions.extend(batch.positions);
        next.batches = batch.seq;
        let mut delta = batch.delta;
        delta.stored = batch.docs.len() as u64;
        delta.chunks = batch.docs.iter().map(|d| d.chunks.len() as u64).sum();
        next.current_counts_mut().add(&delta);
        next.cost = shared.ctx.usage.snapshot();
        let first_doc = documents.len();
        documents.extend(batch.docs);
        commit.failures.extend(batch.failures);
        commit.memos.extend(batch.memos);
        reports.push(Report {
            seq: batch.seq,
            delta,
            docs: first_doc..documents.len(),
            checkpoint: next.clone(),
            formed_at: batch.formed_at,
        });
    }
    // A later phase writes what it added to each document, not the document again.
    let documents = if shared.later_phase {
        commit.updates = documents.iter().map(DocumentUpdate::of).collect();
        documents
    } else {
        commit.documents = documents;
        Vec::new()
    };
    let committed = if shared.later_phase { &documents } else { &commit.documents };

    let started = Instant::now();
    commit_with_retries(shared, &commit, &next).await?;
    let commit_ms = started.elapsed().as_secs_f64() * 1000.0;

    let events = &shared.ctx.events;
    for report in reports {
        shared.progress.finished(&report.delta);
        tracing::info!(
            "Batch {} complete: classified={}, stored={}",
            report.seq,
            report.delta.classified,
            report.delta.stored
        );
        if events.wants_per_document() {
            let duration_ms = report.formed_at.elapsed().as_secs_f64() * 1000.0;
            for doc in &committed[report.docs] {
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
        let counts = report.checkpoint.current_counts();
        events
            .emit(EventKind::BatchCommitted {
                batch: report.seq,
                records: report.delta.fetched,
                commit_ms,
                checkpoint: report.checkpoint,
            })
            .await;
        events.emit(shared.progress.event(&counts)).await;
    }
    Ok(next)
}

/// Commits `batch` with `checkpoint`, retrying while the store is unavailable.
pub(crate) async fn commit_with_retries(
    shared: &Shared,
    batch: &CommitBatch,
    checkpoint: &Checkpoint,
) -> Result<(), EngineError> {
    let store = shared.store.clone();
    let describe = store.describe();
    with_retries(
        &shared.settings.retry,
        &shared.ctx,
        &describe,
        &shared.abort,
        || store.commit(shared.run_id, batch, checkpoint),
        |error: &StoreError| match error {
            StoreError::Unavailable(_) => Verdict::Retry(None),
            _ => Verdict::Fatal,
        },
    )
    .await
    .map_err(EngineError::Store)
}

/// What is reported of one batch once its group is committed.
struct Report {
    seq: u64,
    delta: Counts,
    docs: std::ops::Range<usize>,
    checkpoint: Checkpoint,
    formed_at: Instant,
}
