//! A commit: one transaction writing the run's checkpoint and counts, the
//! documents and their chunks, the failures, the memos, and what later
//! phases add (document updates, run results). A commit whose COMMIT got no
//! answer is checked by its next attempt, so it is never written twice.

use std::sync::{Mutex, PoisonError};

use serde_json::Value;
use sluice_core::store::{CommitBatch, MemoEntry, RunId};
use sluice_core::{Checkpoint, CostLedger, StoreError};
use sqlx::postgres::PgConnection;
use sqlx::types::Json;

use super::deleted::{delete_by_key, write_deletions};
use super::distributed::fence::Fence;
use super::encode::{EncodedBatch, MemoColumns, encode_batch};
use super::errors::is_transient;
use super::pool::Db;
use super::schema::{EmbeddingStorage, Setup, fix_dimensions};
use super::sql::{
    INSERT_CHUNKS_REAL, INSERT_CHUNKS_VECTOR, UPDATE_DOCUMENTS_REAL, UPDATE_DOCUMENTS_VECTOR, UPSERT_DOCUMENTS_REAL,
    UPSERT_DOCUMENTS_VECTOR,
};

/// A commit whose COMMIT got no answer: (run, checkpoint). The next attempt
/// of the same commit checks whether it landed.
#[derive(Default)]
pub(super) struct Uncertain(Mutex<Option<(RunId, Value)>>);

impl Uncertain {
    fn set(&self, value: Option<(RunId, Value)>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = value;
    }

    fn is(&self, run: RunId, checkpoint: &Value) -> bool {
        let uncertain = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        uncertain.as_ref().is_some_and(|(r, cp)| *r == run && cp == checkpoint)
    }
}

/// Commits `batch` and `checkpoint` to `run` in one transaction.
pub(super) async fn commit(
    db: &Db,
    setup: &Setup,
    uncertain: &Uncertain,
    run: RunId,
    batch: &CommitBatch,
    checkpoint: &Checkpoint,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let (n_docs, n_failures) = (batch.documents.len(), batch.failures.len());
    let mut what = format!("commit of run {run} ({n_docs} documents, {n_failures} failures");
    if !batch.updates.is_empty() || !batch.results.is_empty() {
        what.push_str(&format!(", {} document updates, {} results", batch.updates.len(), batch.results.len()));
    }
    what.push(')');
    let vector = setup.storage == EmbeddingStorage::Vector;
    let rows = encode_batch(batch, vector).map_err(|e| db.contract(format!("{what}: {e}")))?;
    let checkpoint_value = serde_json::to_value(checkpoint)
        .map_err(|e| db.contract(format!("{what}: cannot encode the checkpoint as JSON: {e}")))?;
    let counts = serde_json::to_value(checkpoint.counts)
        .map_err(|e| db.contract(format!("{what}: cannot encode the checkpoint counts as JSON: {e}")))?;

    // The previous attempt of this very commit lost its connection at COMMIT: did it land?
    if uncertain.is(run, &checkpoint_value) {
        let landed = match fence {
            Some(fence) => fence_landed(db, fence, &checkpoint_value).await?,
            None => checkpoint_is(db, run, &checkpoint_value).await?,
        };
        uncertain.set(None);
        if landed {
            tracing::info!(
                run_id = run,
                batches = checkpoint.batches,
                "the commit interrupted by the lost connection had landed; not writing it again"
            );
            return Ok(());
        }
    }

    let doc_dimension = rows.docs.embedding.first_dimension().or(rows.updates.embedding.first_dimension());
    fix_dimensions(db, setup, [doc_dimension, rows.chunks.embedding.first_dimension()]).await?;
    match write_commit(
        db,
        setup,
        run,
        &rows,
        &CheckpointJson { value: &checkpoint_value, counts: &counts, phase: &checkpoint.phase },
        fence,
        &what,
    )
    .await
    {
        Ok(()) => {
            uncertain.set(None);
            Ok(())
        }
        Err(CommitError::Before(e)) => Err(e),
        Err(CommitError::Uncertain(e)) => {
            uncertain.set(Some((run, checkpoint_value)));
            Err(e)
        }
    }
}

/// Whether the run's stored checkpoint is `checkpoint` (the commit that carried it landed).
async fn checkpoint_is(db: &Db, run: RunId, checkpoint: &Value) -> Result<bool, StoreError> {
    let same: Option<bool> =
        // The cost may have been raised since by the write-ahead: the rest tells the commit.
        sqlx::query_scalar(
            "SELECT checkpoint IS NOT NULL AND checkpoint - 'cost' = $2::jsonb - 'cost' FROM pipeline_runs WHERE id = $1",
        )
            .bind(run)
            .bind(Json(checkpoint))
            .fetch_optional(db.pool())
            .await
            .map_err(db.sql(format!("checking whether the last commit of run {run} landed")))?;
    Ok(same.unwrap_or(false))
}

/// Writes only the memos (paid stage results) of a batch whose fenced
/// commit was refused, so the partition's new owner reuses them instead of
/// paying again. Memos are keyed by content and fingerprint: harmless from
/// any writer, so this needs no fence.
pub(super) async fn salvage_memos(db: &Db, setup: &Setup, batch: &CommitBatch) -> Result<usize, StoreError> {
    if batch.memos.is_empty() {
        return Ok(0);
    }
    let what = format!("salvaging {} paid results of a refused commit", batch.memos.len());
    let memos = CommitBatch { memos: batch.memos.clone(), ..CommitBatch::default() };
    let rows = encode_batch(&memos, setup.storage == EmbeddingStorage::Vector)
        .map_err(|e| db.contract(format!("{what}: {e}")))?;
    let mut tx = db.pool().begin().await.map_err(db.sql(&what))?;
    let written = write_rows(db, setup, &mut tx, 0, &rows, &what).await;
    match written {
        Ok(()) => tx.commit().await.map_err(db.sql(&what))?,
        Err(CommitError::Before(e) | CommitError::Uncertain(e)) => return Err(e),
    }
    Ok(batch.memos.len())
}

/// After a fenced COMMIT that got no answer: whether it landed (the
/// partition row still has this epoch and carries this very checkpoint).
async fn fence_landed(db: &Db, fence: &Fence, checkpoint: &Value) -> Result<bool, StoreError> {
    let same: Option<bool> =
        sqlx::query_scalar("SELECT epoch = $3 AND checkpoint = $4 FROM run_partitions WHERE run_id = $1 AND name = $2")
            .bind(fence.run)
            .bind(&fence.partition)
            .bind(fence.epoch)
            .bind(Json(checkpoint))
            .fetch_optional(db.pool())
            .await
            .map_err(db.sql(format!("checking whether the last commit of {} landed", fence.describe())))?;
    Ok(same.unwrap_or(false))
}

async fn write_commit(
    db: &Db,
    setup: &Setup,
    run: RunId,
    rows: &EncodedBatch,
    checkpoint: &CheckpointJson<'_>,
    fence: Option<&Fence>,
    what: &str,
) -> Result<(), CommitError> {
    let stage = |e: sqlx::Error| CommitError::Before(db.sql(what)(e));
    let mut tx = db.pool().begin().await.map_err(stage)?;
    if let Some(fence) = fence {
        // Distributed: the partition row, not the run row, and first, so a stale epoch writes nothing.
        if !fence.pass(&mut tx, checkpoint.value).await.map_err(stage)? {
            return Err(CommitError::Before(StoreError::Contract { message: fence.refusal() }));
        }
    } else {
        run_row(db, &mut tx, run, checkpoint, what).await?;
    }
    write_rows(db, setup, &mut tx, run, rows, what).await?;
    tx.commit().await.map_err(|e| {
        if is_transient(&e) { CommitError::Uncertain(db.sql(what)(e)) } else { CommitError::Before(db.sql(what)(e)) }
    })
}

/// The single-process commit's first statement: the run's checkpoint, under its row lock.
async fn run_row(
    db: &Db,
    tx: &mut sqlx::PgTransaction<'_>,
    run: RunId,
    checkpoint: &CheckpointJson<'_>,
    what: &str,
) -> Result<(), CommitError> {
    let stage = |e: sqlx::Error| CommitError::Before(db.sql(what)(e));
    let status: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE pipeline_runs AS r SET checkpoint = {}, counts = $3, phase = $4, updated_at = now()
             FROM (SELECT id, status, checkpoint FROM pipeline_runs WHERE id = $1 FOR UPDATE) AS old
             WHERE r.id = old.id
             RETURNING old.status",
        raised_cost("$2::jsonb", "old.checkpoint")
    )))
    .bind(run)
    .bind(Json(checkpoint.value))
    .bind(Json(checkpoint.counts))
    .bind(checkpoint.phase)
    .fetch_optional(&mut **tx)
    .await
    .map_err(stage)?;
    match status.as_deref() {
        None => {
            return Err(CommitError::Before(StoreError::NotFound(format!("run {run} (cannot commit a batch to it)"))));
        }
        Some("running" | "stopping") => {}
        Some(other) => {
            return Err(CommitError::Before(db.contract(format!(
                "{what}: run {run} is {other}, not running: another process took the store over \
                 (the run slot was lost, e.g. across a server restart); nothing of this batch was written"
            ))));
        }
    }
    Ok(())
}

/// Everything of a commit after its first statement: documents, chunks, failures, memos, updates, results.
async fn write_rows(
    db: &Db,
    setup: &Setup,
    tx: &mut sqlx::PgTransaction<'_>,
    run: RunId,
    rows: &EncodedBatch,
    what: &str,
) -> Result<(), CommitError> {
    let stage = |e: sqlx::Error| CommitError::Before(db.sql(what)(e));
    let vector = setup.storage == EmbeddingStorage::Vector;
    let docs = &rows.docs;
    if !docs.source.is_empty() {
        delete_by_key(tx, "chunks", "doc_id", &docs.source, &docs.id).await.map_err(stage)?;
        sqlx::query(if vector { UPSERT_DOCUMENTS_VECTOR } else { UPSERT_DOCUMENTS_REAL })
            .bind(&docs.source)
            .bind(&docs.id)
            .bind(&docs.text)
            .bind(&docs.fields)
            .bind(&docs.updated_at)
            .bind(&docs.content_hash)
            .bind(&docs.category)
            .bind(&docs.classification)
            .bind(&docs.embedding.offset)
            .bind(&docs.embedding.len)
            .bind(&docs.embedding.flat)
            .bind(run)
            .bind(&docs.writes)
            .bind(&rows.fingerprint)
            .execute(&mut **tx)
            .await
            .map_err(stage)?;
    }
    let chunks = &rows.chunks;
    if !chunks.source.is_empty() {
        sqlx::query(if vector { INSERT_CHUNKS_VECTOR } else { INSERT_CHUNKS_REAL })
            .bind(&chunks.source)
            .bind(&chunks.doc_id)
            .bind(&chunks.idx)
            .bind(&chunks.offset)
            .bind(&chunks.text)
            .bind(&chunks.embedding.offset)
            .bind(&chunks.embedding.len)
            .bind(&chunks.embedding.flat)
            .execute(&mut **tx)
            .await
            .map_err(stage)?;
    }
    let f = &rows.failures;
    if !f.source.is_empty() {
        sqlx::query(
            "INSERT INTO failures (run_id, source, record_id, stage, error_type, error, retryable, retry_count,
                                   payload, has_record, created_at)
             SELECT $1, u.source, u.record_id, u.stage, u.error_type, u.error, u.retryable, u.retry_count,
                    u.payload, u.has_record, now()
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::int8[],
                         $9::text[], $10::bool[]) WITH ORDINALITY
                  AS u(source, record_id, stage, error_type, error, retryable, retry_count, payload, has_record,
                       ord)
             ORDER BY u.ord",
        )
        .bind(run)
        .bind(&f.source)
        .bind(&f.record_id)
        .bind(&f.stage)
        .bind(&f.error_type)
        .bind(&f.error)
        .bind(&f.retryable)
        .bind(&f.retry_count)
        .bind(&f.payload)
        .bind(&f.has_record)
        .execute(&mut **tx)
        .await
        .map_err(stage)?;
    }
    write_deletions(tx, run, &rows.docs, &rows.deletions).await.map_err(stage)?;
    insert_memos(tx, &rows.memos).await.map_err(stage)?;
    let u = &rows.updates;
    if !u.source.is_empty() {
        sqlx::query(if vector { UPDATE_DOCUMENTS_VECTOR } else { UPDATE_DOCUMENTS_REAL })
            .bind(&u.source)
            .bind(&u.id)
            .bind(&u.annotations)
            .bind(&u.embedding.offset)
            .bind(&u.embedding.len)
            .bind(&u.embedding.flat)
            .execute(&mut **tx)
            .await
            .map_err(stage)?;
    }
    let r = &rows.results;
    if !r.kind.is_empty() {
        sqlx::query(
            "INSERT INTO run_results (run_id, kind, key, value, stored_at)
             SELECT $1, u.kind, u.key, u.value::jsonb, now()
             FROM UNNEST($2::text[], $3::text[], $4::text[]) AS u(kind, key, value)
             ON CONFLICT (run_id, kind, key) DO UPDATE SET value = EXCLUDED.value, stored_at = EXCLUDED.stored_at",
        )
        .bind(run)
        .bind(&r.kind)
        .bind(&r.key)
        .bind(&r.value)
        .execute(&mut **tx)
        .await
        .map_err(stage)?;
    }
    Ok(())
}

/// Upserts the memos (stage results) of a commit or a write-ahead.
async fn insert_memos(tx: &mut PgConnection, m: &MemoColumns) -> Result<(), sqlx::Error> {
    if m.source.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO stage_results (source, id, stage, fingerprint, content_hash, value, vectors, stored_at)
         SELECT u.source, u.id, u.stage, u.fingerprint, u.content_hash, u.value::jsonb, u.vectors, now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[])
              AS u(source, id, stage, fingerprint, content_hash, value, vectors)
         ON CONFLICT (source, id, stage) DO UPDATE SET
             fingerprint = EXCLUDED.fingerprint, content_hash = EXCLUDED.content_hash,
             value = EXCLUDED.value, vectors = EXCLUDED.vectors, stored_at = EXCLUDED.stored_at",
    )
    .bind(&m.source)
    .bind(&m.id)
    .bind(&m.stage)
    .bind(&m.fingerprint)
    .bind(&m.content_hash)
    .bind(&m.value)
    .bind(&m.vectors)
    .execute(&mut *tx)
    .await
    .map(|_| ())
}

/// Stores results ahead of their batch, with the run's ledger, in one short transaction.
/// `fence`: a distributed partition's, whose own checkpoint keeps the ledger
/// (raised only while the claim is still this worker's); the memos, keyed by
/// content, are written either way, so whoever takes the partition over reuses them.
pub(super) async fn write_ahead(
    db: &Db,
    run: RunId,
    memos: &[MemoEntry],
    cost: &CostLedger,
    fence: Option<&Fence>,
) -> Result<(), StoreError> {
    let what = format!("storing {} results of run {run} ahead of their batch", memos.len());
    let batch = CommitBatch { memos: memos.to_vec(), ..CommitBatch::default() };
    let rows = encode_batch(&batch, false).map_err(|e| db.contract(format!("{what}: {e}")))?;
    let cost = serde_json::json!({ "cost": cost });
    let mut tx = db.pool().begin().await.map_err(db.sql(&what))?;
    insert_memos(&mut tx, &rows.memos).await.map_err(db.sql(&what))?;
    // A run with no batch committed yet gets an empty checkpoint (still
    // "nothing to resume") that holds the ledger, so a kill before its first
    // commit does not lose what was paid; a worker raises its partition's.
    match fence {
        None => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE pipeline_runs SET checkpoint = {} WHERE id = $1",
            raised_cost("COALESCE(checkpoint, jsonb_build_object('phase', phase))", "$2::jsonb")
        )))
        .bind(run)
        .bind(Json(&cost)),
        Some(fence) => sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE run_partitions SET checkpoint = {}
             WHERE run_id = $1 AND name = $3 AND epoch = $4 AND NOT done",
            raised_cost("checkpoint", "$2::jsonb")
        )))
        .bind(run)
        .bind(Json(&cost))
        .bind(&fence.partition)
        .bind(fence.epoch),
    }
    .execute(&mut *tx)
    .await
    .map_err(db.sql(&what))?;
    tx.commit().await.map_err(db.sql(&what))
}

/// The fields of [`CostLedger`].
const COST_FIELDS: [&str; 5] = ["llm_calls", "embedding_calls", "tokens_in", "tokens_out", "embedding_tokens"];

/// `base` (an SQL expression: a checkpoint's JSON) with its `cost` raised,
/// field by field, to at least `other`'s (JSON with a `cost` too): the
/// ledger is two writers' snapshots of one growing count (batch commits and
/// the write-ahead), and whichever lands last must not lower it.
fn raised_cost(base: &str, other: &str) -> String {
    let fields: Vec<String> = COST_FIELDS
        .iter()
        .map(|f| {
            format!(
                "'{f}', greatest(coalesce(({base}->'cost'->>'{f}')::int8, 0), \
                 coalesce(({other}->'cost'->>'{f}')::int8, 0))"
            )
        })
        .collect();
    format!("jsonb_set({base}, '{{cost}}', jsonb_build_object({}))", fields.join(", "))
}

/// A checkpoint as the commit writes it.
struct CheckpointJson<'a> {
    value: &'a Value,
    counts: &'a Value,
    phase: &'a str,
}

/// Why a commit did not return Ok: before COMMIT (nothing landed) or at it (it may have).
enum CommitError {
    Before(StoreError),
    Uncertain(StoreError),
}
