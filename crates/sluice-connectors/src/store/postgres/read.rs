//! Reading stored documents back: one document with its bookkeeping, its
//! chunks, the counts, memoised stage results, the later phases' scan in id
//! order, run results and failures.

use serde_json::Value;
use sluice_core::store::{Failure, FailureRow, MemoKey, PhaseResult, RunId};
use sluice_core::{Chunk, Document, Record, StoreError};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::pool::Db;
use super::sql::{FAILURES, GET_DOCUMENT, SCAN_DOCUMENTS_AFTER, SCAN_DOCUMENTS_FIRST};
use crate::store::memo_vectors::join_vectors;
use crate::store::{RowFacts, StoredDocument};

pub(super) async fn count(db: &Db, sql: &'static str, what: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(db.pool()).await.map_err(db.sql(what))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The stored document `(source, id)`, if there is one.
pub(super) async fn get_document(db: &Db, source: &str, id: &str) -> Result<Option<StoredDocument>, StoreError> {
    let what = format!("reading document ({source}, {id})");
    let row = sqlx::query(GET_DOCUMENT).bind(source).bind(id).fetch_optional(db.pool()).await.map_err(db.sql(&what))?;
    let Some(row) = row else { return Ok(None) };
    let get = |e: sqlx::Error| db.decode(format!("{what}: {e}"), Some(e));
    let facts = RowFacts {
        category: row.try_get(8).map_err(get)?,
        run_id: row.try_get(9).map_err(get)?,
        write_count: row.try_get(10).map_err(get)?,
        stored_at: row.try_get(11).map_err(get)?,
        chunks: row.try_get(12).map_err(get)?,
    };
    Ok(Some(StoredDocument::from_row(document_of(db, &row, source, &what)?, facts)))
}

/// Decodes a document's own columns, in this order: `id, text, fields,
/// updated_at, content_hash, classification, embedding::real[],
/// annotations` (as `get_document` and later phases' scans select them).
pub(super) fn document_of(db: &Db, row: &PgRow, source: &str, what: &str) -> Result<Document, StoreError> {
    let get = |e: sqlx::Error| db.decode(format!("{what}: {e}"), Some(e));
    let id: String = row.try_get(0).map_err(get)?;
    let bad = |e: String| db.decode(format!("{what}: document ({source}, {id}): {e}"), None);
    let fields: Value = row.try_get(2).map_err(get)?;
    let classification: Option<Value> = row.try_get(5).map_err(get)?;
    let annotations: Value = row.try_get(7).map_err(get)?;
    let record = Record {
        source: source.to_owned(),
        id: id.clone(),
        text: row.try_get(1).map_err(get)?,
        fields: match fields {
            Value::Object(map) => map,
            other => return Err(bad(format!("its fields are not a JSON object: {other}"))),
        },
        updated_at: row.try_get(3).map_err(get)?,
    };
    Ok(Document {
        record,
        content_hash: row.try_get(4).map_err(get)?,
        classification: classification
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| bad(format!("its classification cannot be read: {e}")))?,
        chunks: Vec::new(),
        embedding: row.try_get(6).map_err(get)?,
        annotations: match annotations {
            Value::Object(map) => map,
            other => return Err(bad(format!("its annotations are not a JSON object: {other}"))),
        },
    })
}

/// The stored chunks of document `(source, doc_id)`, in order.
pub(super) async fn get_chunks(db: &Db, source: &str, doc_id: &str) -> Result<Vec<Chunk>, StoreError> {
    let what = format!("reading the chunks of document ({source}, {doc_id})");
    let rows = sqlx::query(
        "SELECT idx, byte_offset, text, embedding::real[] FROM chunks
         WHERE source = $1 AND doc_id = $2 ORDER BY idx",
    )
    .bind(source)
    .bind(doc_id)
    .fetch_all(db.pool())
    .await
    .map_err(db.sql(&what))?;
    rows.iter()
        .map(|row| {
            let get = |e: sqlx::Error| db.decode(format!("{what}: {e}"), Some(e));
            let index: i64 = row.try_get(0).map_err(get)?;
            let offset: i64 = row.try_get(1).map_err(get)?;
            let bad = |e: String| db.decode(format!("{what}: chunk {index}: {e}"), None);
            Ok(Chunk {
                index: u32::try_from(index).map_err(|_| bad(format!("index {index} is out of range")))?,
                offset: usize::try_from(offset).map_err(|_| bad(format!("negative offset {offset}")))?,
                text: row.try_get(2).map_err(get)?,
                embedding: row.try_get(3).map_err(get)?,
            })
        })
        .collect()
}

pub(super) async fn memo_lookup(
    db: &Db,
    stage: &str,
    fingerprint: &str,
    keys: &[MemoKey],
) -> Result<Vec<Option<Value>>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<&str> = keys.iter().map(|k| k.source.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let hashes: Vec<&str> = keys.iter().map(|k| k.content_hash.as_str()).collect();
    let rows: Vec<(Option<Value>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT r.value, r.vectors
     FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(source, id, content_hash, ord)
     LEFT JOIN stage_results r
            ON r.source = k.source AND r.id = k.id AND r.stage = $4
           AND r.fingerprint = $5 AND r.content_hash = k.content_hash
     ORDER BY k.ord",
    )
    .bind(&sources)
    .bind(&ids)
    .bind(&hashes)
    .bind(stage)
    .bind(fingerprint)
    .fetch_all(db.pool())
    .await
    .map_err(db.sql("reading stored stage results"))?;
    // A value whose vectors do not fit its blob is a miss: the stage simply runs again.
    Ok(rows.into_iter().map(|(value, vectors)| join_vectors(value?, vectors.as_deref())).collect())
}

/// Which of `keys` are stored with their content hash under `fingerprint`, in order, in one statement.
pub(super) async fn unchanged(db: &Db, fingerprint: &str, keys: &[MemoKey]) -> Result<Vec<bool>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sources: Vec<&str> = keys.iter().map(|k| k.source.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let hashes: Vec<&str> = keys.iter().map(|k| k.content_hash.as_str()).collect();
    let rows: Vec<(bool,)> = sqlx::query_as(
        "SELECT d.id IS NOT NULL
     FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(source, id, content_hash, ord)
     LEFT JOIN documents d
            ON d.source = k.source AND d.id = k.id AND d.content_hash = k.content_hash
           AND d.pipeline_fingerprint = $4
           -- a marked document is not unchanged: stored again, its tombstone is lifted
           AND NOT EXISTS (SELECT 1 FROM deleted_documents t WHERE t.source = d.source AND t.id = d.id)
     ORDER BY k.ord",
    )
    .bind(&sources)
    .bind(&ids)
    .bind(&hashes)
    .bind(fingerprint)
    .fetch_all(db.pool())
    .await
    .map_err(db.sql("looking up unchanged documents"))?;
    Ok(rows.into_iter().map(|(same,)| same).collect())
}

pub(super) async fn scan_documents(
    db: &Db,
    source: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Document>, StoreError> {
    let what = format!("reading the stored documents of {source}");
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Byte order, as SQLite's, a range of the documents_scan index (two
    // texts: with `$2 IS NULL OR`, a generic plan could not use the range).
    let query = match after {
        Some(after) => sqlx::query(SCAN_DOCUMENTS_AFTER).bind(source).bind(limit).bind(after),
        None => sqlx::query(SCAN_DOCUMENTS_FIRST).bind(source).bind(limit),
    };
    let rows = query.fetch_all(db.pool()).await.map_err(db.sql(&what))?;
    rows.iter().map(|row| document_of(db, row, source, &what)).collect()
}

/// Whether any document is stored, marked deleted or not.
pub(super) async fn holds_documents(db: &Db) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM documents)")
        .fetch_one(db.pool())
        .await
        .map_err(db.sql("asking whether any document is stored"))
}

/// The stored documents of `source` (a range of the documents_scan index).
pub(super) async fn count_documents(db: &Db, source: &str) -> Result<u64, StoreError> {
    let what = format!("counting the stored documents of {source}");
    let n: i64 = sqlx::query_scalar(
        // Marked-deleted documents are left out, as the phases' scan leaves them out.
        "SELECT count(*) FROM documents d WHERE d.source = $1
           AND NOT EXISTS (SELECT 1 FROM deleted_documents t WHERE t.source = d.source AND t.id = d.id)",
    )
    .bind(source)
    .fetch_one(db.pool())
    .await
    .map_err(db.sql(&what))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(super) async fn phase_results(db: &Db, run: RunId, kind: &str) -> Result<Vec<PhaseResult>, StoreError> {
    let what = format!("reading the {kind} results of run {run}");
    let rows: Vec<(String, Value)> =
        sqlx::query_as("SELECT key, value FROM run_results WHERE run_id = $1 AND kind = $2 ORDER BY key COLLATE \"C\"")
            .bind(run)
            .bind(kind)
            .fetch_all(db.pool())
            .await
            .map_err(db.sql(&what))?;
    Ok(rows.into_iter().map(|(key, value)| PhaseResult { kind: kind.to_owned(), key, value }).collect())
}

pub(super) async fn failures(db: &Db, run: RunId) -> Result<Vec<FailureRow>, StoreError> {
    let what = format!("reading the failures of run {run}");
    let rows = sqlx::query(FAILURES).bind(run).fetch_all(db.pool()).await.map_err(db.sql(&what))?;
    rows.iter()
        .map(|r| {
            let get = |e: sqlx::Error| db.decode(format!("{what}: {e}"), Some(e));
            let retry_count: i64 = r.try_get(8).map_err(get)?;
            Ok(FailureRow {
                id: r.try_get(0).map_err(get)?,
                run_id: r.try_get(1).map_err(get)?,
                failure: Failure {
                    source: r.try_get(2).map_err(get)?,
                    record_id: r.try_get(3).map_err(get)?,
                    stage: r.try_get(4).map_err(get)?,
                    error_type: r.try_get(5).map_err(get)?,
                    error: r.try_get(6).map_err(get)?,
                    retryable: r.try_get(7).map_err(get)?,
                    retry_count: u32::try_from(retry_count).unwrap_or(u32::MAX),
                    payload: r.try_get(9).map_err(get)?,
                    has_record: r.try_get(10).map_err(get)?,
                },
                created_at: r.try_get(11).map_err(get)?,
                resolved_by: r.try_get(12).map_err(get)?,
            })
        })
        .collect()
}
