//! The committer: takes batches in order and commits each with its checkpoint.

use std::time::Instant;

use tokio::sync::mpsc;

use super::batcher::Batch;
use super::panics::catch_panic;
use super::state::{CommitKind, Shared};
use crate::checkpoint::{Checkpoint, Counts};
use crate::error::{EngineError, StoreError};
use crate::event::EventKind;
use crate::record::Document;
use crate::retry::{Verdict, with_retries};
use crate::store::{CommitBatch, DocumentUpdate};

/// Batches that may wait for the committer; the ones waiting when it is free
/// are committed together in one transaction (group commit), which pays the
/// fixed cost of a transaction once for all of them.
pub(crate) const COMMIT_QUEUE: usize = 4;

/// Where the committer's batches come from, a group at a time.
pub(crate) enum Groups {
    /// Streaming: batches as the stages hand them on; the ones waiting when
    /// the committer is free go together. Ends when the channel closes.
    Arriving(mpsc::Receiver<Batch>),
    /// Legacy: every batch at hand, in groups of the same size. Ends at a stop.
    AtHand(std::vec::IntoIter<Batch>),
}

impl Groups {
    async fn next(&mut self, shared: &Shared) -> Option<Vec<Batch>> {
        match self {
            Groups::Arriving(rx) => {
                let mut group = vec![rx.recv().await?];
                while group.len() <= COMMIT_QUEUE {
                    match rx.try_recv() {
                        Ok(batch) => group.push(batch),
                        Err(_) => break,
                    }
                }
                Some(group)
            }
            Groups::AtHand(batches) => {
                if shared.ctx.stop.is_cancelled() {
                    return None;
                }
                let group: Vec<Batch> = batches.by_ref().take(COMMIT_QUEUE + 1).collect();
                (!group.is_empty()).then_some(group)
            }
        }
    }
}

/// Commits each group, in order, until there are none left, the run aborts
/// or a commit fails (which fails the run). Returns the last committed
/// checkpoint. Both executors commit through this loop.
pub(crate) async fn commit_groups(shared: &Shared, mut groups: Groups, mut checkpoint: Checkpoint) -> Checkpoint {
    while let Some(group) = groups.next(shared).await {
        if shared.abort.is_cancelled() {
            break;
        }
        match catch_panic(commit_batches(shared, group, &checkpoint)).await {
            Ok(Ok(next)) => checkpoint = next,
            Ok(Err(error)) => {
                shared.fail(error);
                break;
            }
            Err(message) => {
                shared.fail(EngineError::Panicked { task: "the committer".into(), message });
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
    let mut documents: Vec<Document> = Vec::new();
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
        commit.deletions.extend(batch.deletions);
        commit.memos.extend(shared.ctx.write_ahead.not_stored(batch.memos));
        reports.push(Report {
            seq: batch.seq,
            delta,
            docs: first_doc..documents.len(),
            checkpoint: next.clone(),
            formed_at: batch.formed_at,
        });
    }
    // A later phase writes what it added to each document, not the document again.
    match shared.writes {
        CommitKind::Documents => {
            commit.documents = std::mem::take(&mut documents);
            commit.fingerprint = shared.fingerprint.clone();
        }
        CommitKind::Updates => commit.updates = documents.iter().map(DocumentUpdate::of).collect(),
    }
    let committed = match shared.writes {
        CommitKind::Documents => &commit.documents,
        CommitKind::Updates => &documents,
    };

    let started = Instant::now();
    commit_with_retries(shared, &commit, &next).await?;
    let commit_ms = started.elapsed().as_secs_f64() * 1000.0;

    shared.in_flight.committed(reports.len() as u64);
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

/// Writes `batch` to every sink, then commits it with `checkpoint`, and
/// retries both while the store or a sink is unavailable: the checkpoint
/// only moves once every sink has the batch (sinks must be idempotent).
pub(crate) async fn commit_with_retries(
    shared: &Shared,
    batch: &CommitBatch,
    checkpoint: &Checkpoint,
) -> Result<(), EngineError> {
    let store = shared.store.clone();
    let describe = store.describe();
    let attempt = || async {
        for sink in &shared.sinks {
            sink.write(shared.run_id, batch).await?;
        }
        store.commit(shared.run_id, batch, checkpoint).await
    };
    with_retries(&shared.settings.retry, &shared.ctx, &describe, &shared.abort, attempt, |error: &StoreError| {
        match error {
            StoreError::Unavailable(_) => Verdict::Retry(None),
            _ => Verdict::Fatal,
        }
    })
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
