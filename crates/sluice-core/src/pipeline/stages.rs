//! Running one stage over one batch: per-record outcomes, retries of
//! retryable record failures, and the events and counts they produce.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::batcher::Batch;
use super::panics::join_message;
use super::state::{Shared, receiver_stream};
use super::unchanged::skip_unchanged;
use crate::error::{EngineError, StageError};
use crate::event::EventKind;
use crate::record::Document;
use crate::stage::{Memo, Outcome, Stage, StageCounter, StageSpec};
use crate::store::{Failure, MemoEntry, MemoKey};

/// Runs `spec` over the batch. Documents it keeps stay in `batch.docs`;
/// filtered and failed ones leave it and are counted.
pub(crate) async fn process_batch(
    shared: &Shared,
    spec: &StageSpec,
    first: bool,
    mut batch: Batch,
) -> Result<Batch, EngineError> {
    let stage = &spec.stage;
    let events = &shared.ctx.events;
    if first {
        skip_unchanged(shared, &mut batch).await;
    }
    if first && events.wants_per_document() {
        for doc in &batch.docs {
            events
                .emit(EventKind::DocumentStarted { doc_id: doc.id().to_string(), source: doc.source().to_string() })
                .await;
        }
    }
    let mut docs = std::mem::take(&mut batch.docs);
    if docs.is_empty() {
        // Only failures or deletions: nothing for the stage.
        return Ok(batch);
    }
    batch.docs.reserve(docs.len());
    let memo = stage.memo().map(|memo| (memo, memo.fingerprint()));
    if let Some((memo, fingerprint)) = &memo {
        docs = reuse_remembered(shared, stage.as_ref(), *memo, fingerprint, &mut batch, docs).await;
        if docs.is_empty() {
            return Ok(batch);
        }
    }
    let mut attempt = 0u32;
    let mut delays = shared.settings.retry.delays();
    loop {
        let sent = docs.len();
        let outcomes = stage
            .process(&shared.ctx, docs)
            .await
            .map_err(|error| EngineError::Stage { stage: stage.name().to_string(), error })?;
        if outcomes.len() != sent {
            return Err(EngineError::Stage {
                stage: stage.name().to_string(),
                error: StageError::permanent(
                    "contract",
                    format!("returned {} outcomes for {sent} documents", outcomes.len()),
                ),
            });
        }
        let mut retry = Vec::new();
        let mut wait: Option<Duration> = None;
        for outcome in outcomes {
            match outcome {
                Outcome::Failed { doc, error } if error.retryable && attempt < spec.max_retries => {
                    wait = wait.max(error.retry_after);
                    retry.push(doc);
                }
                // Nearly every outcome: settled in place, not moved through settle's future.
                Outcome::Kept(doc) => {
                    if let Some((memo, fingerprint)) = &memo
                        && let Some(value) = memo.value(&doc)
                    {
                        batch.memos.push(MemoEntry {
                            source: doc.source().to_string(),
                            id: doc.id().to_string(),
                            stage: stage.name().to_string(),
                            fingerprint: fingerprint.clone(),
                            content_hash: doc.content_hash.clone(),
                            value,
                        });
                    }
                    keep(stage.as_ref(), &mut batch, doc);
                }
                outcome => settle(shared, stage.as_ref(), &mut batch, outcome, attempt).await,
            }
        }
        if retry.is_empty() {
            return Ok(batch);
        }
        // Retried documents rejoin the batch after the others.
        attempt += 1;
        let backoff = delays.next().unwrap_or(shared.settings.retry.max_delay);
        tokio::select! {
            _ = tokio::time::sleep(wait.map_or(backoff, |w| w.max(backoff))) => {}
            _ = shared.abort.cancelled() => return Err(EngineError::Aborted),
        }
        docs = retry;
    }
}

/// Takes the documents whose stored result for this content and fingerprint
/// can be reused out of `docs`, settles them as kept, and returns the rest.
/// A failed lookup only costs the saving: everything goes through the stage.
async fn reuse_remembered(
    shared: &Shared,
    stage: &dyn Stage,
    memo: &dyn Memo,
    fingerprint: &str,
    batch: &mut Batch,
    docs: Vec<Document>,
) -> Vec<Document> {
    let keys: Vec<MemoKey> = docs
        .iter()
        .map(|d| MemoKey {
            source: d.source().to_string(),
            id: d.id().to_string(),
            content_hash: d.content_hash.clone(),
        })
        .collect();
    let found = match shared.store.memo_lookup(stage.name(), fingerprint, &keys).await {
        Ok(found) if found.len() == docs.len() => found,
        Ok(_) | Err(_) => {
            tracing::warn!(stage = stage.name(), "stored results could not be read; processing the batch anew");
            return docs;
        }
    };
    let mut rest = Vec::with_capacity(docs.len());
    for (mut doc, value) in docs.into_iter().zip(found) {
        match value {
            Some(value) if memo.apply(&mut doc, &value) => {
                batch.delta.skipped_unchanged += 1;
                keep(stage, batch, doc);
            }
            _ => rest.push(doc),
        }
    }
    rest
}

/// Keeps a document in the batch and counts what the stage did to it.
fn keep(stage: &dyn Stage, batch: &mut Batch, doc: Document) {
    match stage.counter() {
        Some(StageCounter::Classified) => batch.delta.classified += 1,
        Some(StageCounter::Embedded) => batch.delta.embedded += embeddings_in(&doc),
        None => {}
    }
    batch.docs.push(doc);
}

/// Puts one final outcome where it belongs: kept in the batch, or counted as
/// filtered or failed (with its event and failures row).
async fn settle(shared: &Shared, stage: &dyn Stage, batch: &mut Batch, outcome: Outcome, attempt: u32) {
    let events = &shared.ctx.events;
    match outcome {
        Outcome::Kept(doc) => keep(stage, batch, doc),
        Outcome::Filtered { doc, reason } => {
            batch.delta.filtered += 1;
            events
                .emit(EventKind::DocumentFiltered {
                    doc_id: doc.id().to_string(),
                    source: doc.source().to_string(),
                    stage: stage.name().to_string(),
                    reason,
                })
                .await;
        }
        Outcome::Failed { doc, error } => {
            let retry_count = if error.retryable { attempt } else { 0 };
            tracing::warn!(stage = stage.name(), doc_id = doc.id(), error = %error, "record failed");
            events
                .emit(EventKind::DocumentFailed {
                    doc_id: Some(doc.id().to_string()),
                    source: doc.source().to_string(),
                    stage: stage.name().to_string(),
                    error: error.message.clone(),
                    error_type: error.error_type.clone(),
                    retry_count,
                    is_retryable: error.retryable,
                })
                .await;
            batch.delta.failed += 1;
            batch.failures.push(Failure {
                source: doc.source().to_string(),
                record_id: doc.id().to_string(),
                stage: stage.name().to_string(),
                error_type: error.error_type,
                error: error.message,
                retryable: error.retryable,
                retry_count,
                payload: serde_json::to_string(&doc.record).unwrap_or_default(),
                has_record: true,
            });
        }
    }
}

fn embeddings_in(doc: &Document) -> u64 {
    let chunks = doc.chunks.iter().filter(|c| c.embedding.is_some()).count() as u64;
    chunks + u64::from(doc.embedding.is_some())
}

/// A stage as a task between two channels: up to `workers` batches at once,
/// passed on in the order they came. A single worker runs in the task itself:
/// no task spawned and woken per batch.
pub(crate) async fn stage_task(
    shared: Arc<Shared>,
    index: usize,
    mut rx: mpsc::Receiver<Batch>,
    tx: mpsc::Sender<Batch>,
) {
    let spec = shared.stages[index].clone();
    if spec.workers <= 1 {
        while let Some(batch) = rx.recv().await {
            match process_batch(&shared, &spec, index == 0, batch).await {
                Ok(batch) => {
                    if tx.send(batch).await.is_err() {
                        return;
                    }
                }
                Err(error) => return shared.fail(error),
            }
        }
        return;
    }
    let results = receiver_stream(rx)
        .map(|batch| {
            let shared = shared.clone();
            let spec = spec.clone();
            tokio::spawn(async move { process_batch(&shared, &spec, index == 0, batch).await })
        })
        .buffered(spec.workers);
    let mut results = std::pin::pin!(results);
    while let Some(joined) = results.next().await {
        let batch = match joined {
            Ok(Ok(batch)) => batch,
            Ok(Err(error)) => return shared.fail(error),
            Err(join_error) => {
                return shared.fail(EngineError::Panicked {
                    task: format!("stage {}", spec.stage.name()),
                    message: join_message(join_error),
                });
            }
        };
        if tx.send(batch).await.is_err() {
            return;
        }
    }
}
