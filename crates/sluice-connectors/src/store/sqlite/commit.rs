//! Writing a commit's rows: a batch encoded into owned rows (so it can move
//! to the blocking pool), then documents upserted and their chunks replaced
//! in multi-row statements, failures, memos, later phases' updates and run
//! results, all inside the caller's transaction.

use std::sync::LazyLock;

use rusqlite::{Connection, params};
use sluice_core::store::{CommitBatch, Failure, MemoEntry, RunId};
use sluice_core::{Document, StoreError};

use super::errors::{json, to_i64};
use crate::store::embedding_to_bytes;
use crate::store::memo_vectors::split_vectors;

/// A document as bound to the upsert.
pub(super) struct DocRow {
    source: String,
    id: String,
    text: String,
    fields: String,
    updated_at: Option<i64>,
    content_hash: String,
    category: Option<String>,
    classification: Option<String>,
    embedding: Option<Vec<u8>>,
    chunks: Vec<ChunkRow>,
}

impl DocRow {
    pub(super) fn source(&self) -> &str {
        &self.source
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

pub(super) struct ChunkRow {
    idx: i64,
    offset: i64,
    text: String,
    embedding: Option<Vec<u8>>,
}

/// Documents a commit hands the writer at once: encoding the next piece
/// overlaps writing this one, and a piece fills one multi-row upsert.
pub(super) const DOCUMENTS_PER_PIECE: usize = MAX_ROWS_PER_STATEMENT;

/// Encoded pieces that may wait for the writer: a group commit of five
/// batches of 50 fits whole, and what is encoded ahead stays bounded
/// (256 documents) however large the group.
pub(super) const PIECES_AHEAD: usize = 8;

/// Encodes documents into owned rows (so they can move to the blocking pool).
pub(super) fn encode_documents(documents: &[Document]) -> Result<Vec<DocRow>, StoreError> {
    let mut rows = Vec::with_capacity(documents.len());
    for doc in documents {
        let record = &doc.record;
        let mut chunks = Vec::with_capacity(doc.chunks.len());
        for c in &doc.chunks {
            chunks.push(ChunkRow {
                idx: i64::from(c.index),
                offset: to_i64(c.offset as u64, "chunk offset")?,
                text: c.text.clone(),
                embedding: c.embedding.as_deref().map(embedding_to_bytes),
            });
        }
        rows.push(DocRow {
            source: record.source.clone(),
            id: record.id.clone(),
            text: record.text.clone(),
            fields: json(&record.fields, "document fields")?,
            updated_at: record.updated_at,
            content_hash: doc.content_hash.clone(),
            category: doc.classification.as_ref().map(|c| c.category.clone()),
            classification: doc.classification.as_ref().map(|c| json(c, "a classification")).transpose()?,
            embedding: doc.embedding.as_deref().map(embedding_to_bytes),
            chunks,
        });
    }
    Ok(rows)
}

/// (source, id, embedding, annotations as JSON)
pub(super) type UpdateRow = (String, String, Option<Vec<u8>>, String);

pub(super) fn encode_updates(batch: &CommitBatch) -> Result<Vec<UpdateRow>, StoreError> {
    batch
        .updates
        .iter()
        .map(|u| {
            Ok((
                u.source.clone(),
                u.id.clone(),
                u.embedding.as_deref().map(embedding_to_bytes),
                json(&u.annotations, "document annotations")?,
            ))
        })
        .collect()
}

/// Writes what a later phase added; the record, its hash and write count stay as they are.
pub(super) fn apply_updates(conn: &Connection, updates: &[UpdateRow]) -> rusqlite::Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "UPDATE documents SET annotations = ?3, embedding = COALESCE(?4, embedding) WHERE source = ?1 AND id = ?2",
    )?;
    for (source, id, embedding, annotations) in updates {
        stmt.execute(params![source, id, annotations, embedding])?;
    }
    Ok(())
}

pub(super) fn upsert_results(
    conn: &Connection,
    run: RunId,
    results: &[(String, String, String)],
    now: &str,
) -> rusqlite::Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO run_results (run_id, kind, key, value, stored_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (run_id, kind, key) DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at",
    )?;
    for (kind, key, value) in results {
        stmt.execute(params![run, kind, key, value, now])?;
    }
    Ok(())
}

/// (source, id, stage, fingerprint, content_hash, value as JSON, its vectors as a blob)
pub(super) type MemoRow = (String, String, String, String, String, String, Option<Vec<u8>>);

pub(super) fn encode_memos(memos: &[MemoEntry]) -> Result<Vec<MemoRow>, StoreError> {
    memos
        .iter()
        .map(|m| {
            let (value, vectors) = split_vectors(&m.value);
            Ok((
                m.source.clone(),
                m.id.clone(),
                m.stage.clone(),
                m.fingerprint.clone(),
                m.content_hash.clone(),
                json(&value, "a stage result")?,
                vectors,
            ))
        })
        .collect()
}

pub(super) fn upsert_memos(conn: &Connection, memos: &[MemoRow], now: &str) -> rusqlite::Result<()> {
    if memos.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO stage_results (source, id, stage, fingerprint, content_hash, value, vectors, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (source, id, stage) DO UPDATE SET
             fingerprint = excluded.fingerprint, content_hash = excluded.content_hash,
             value = excluded.value, vectors = excluded.vectors, stored_at = excluded.stored_at",
    )?;
    for (source, id, stage, fingerprint, content_hash, value, vectors) in memos {
        stmt.execute(params![source, id, stage, fingerprint, content_hash, value, vectors, now])?;
    }
    Ok(())
}

/// The fields of [`sluice_core::CostLedger`].
const COST_FIELDS: [&str; 5] = ["llm_calls", "embedding_calls", "tokens_in", "tokens_out", "embedding_tokens"];

/// `base` (an SQL expression: a checkpoint's JSON) with its `cost` raised,
/// field by field, to at least `other`'s (JSON with a `cost` too): the
/// ledger is two writers' snapshots of one growing count (batch commits and
/// the write-ahead), and whichever lands last must not lower it.
pub(super) fn raised_cost(base: &str, other: &str) -> String {
    let fields: Vec<String> = COST_FIELDS
        .iter()
        .map(|f| {
            format!(
                "'{f}', max(coalesce(json_extract({base}, '$.cost.{f}'), 0), \
                 coalesce(json_extract({other}, '$.cost.{f}'), 0))"
            )
        })
        .collect();
    format!("json_set({base}, '$.cost', json_object({}))", fields.join(", "))
}

pub(super) fn insert_failures(conn: &Connection, run: RunId, failures: &[Failure], now: &str) -> rusqlite::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO failures (run_id, source, record_id, stage, error_type, error, retryable, retry_count,
                               payload, has_record, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for f in failures {
        stmt.execute(params![
            run,
            f.source,
            f.record_id,
            f.stage,
            f.error_type,
            f.error,
            f.retryable,
            f.retry_count,
            f.payload,
            f.has_record,
            now
        ])?;
    }
    Ok(())
}

/// Most rows one INSERT/DELETE statement carries. A batch is written in
/// pieces of 32, 16, 8, 4, 2 and 1 rows: a few cached statements cover every
/// batch size, and a batch of 50 takes 3 statements instead of 50.
const MAX_ROWS_PER_STATEMENT: usize = 32;

/// Splits `total` rows into pieces whose sizes are powers of two, at most
/// [`MAX_ROWS_PER_STATEMENT`]; yields `(start, len)`.
fn pieces(total: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        let left = total - start;
        if left == 0 {
            return None;
        }
        let len = if left >= MAX_ROWS_PER_STATEMENT { MAX_ROWS_PER_STATEMENT } else { 1 << left.ilog2() };
        let piece = (start, len);
        start += len;
        Some(piece)
    })
}

/// Piece sizes there are: 1, 2, 4, ... [`MAX_ROWS_PER_STATEMENT`].
const PIECE_SIZES: usize = MAX_ROWS_PER_STATEMENT.ilog2() as usize + 1;

/// One statement's SQL for each piece size, made once: the statement cache
/// is keyed by the text, which is then not rebuilt for every piece.
struct PieceSql([String; PIECE_SIZES]);

impl PieceSql {
    fn new(head: &str, row: &str, tail: &str) -> Self {
        Self(std::array::from_fn(|i| repeat_sql(head, row, 1 << i, tail)))
    }

    /// The SQL for a piece of `len` rows (a power of two, as [`pieces`] cuts them).
    fn rows(&self, len: usize) -> &str {
        &self.0[len.ilog2() as usize]
    }
}

static UPSERT_SQL: LazyLock<PieceSql> = LazyLock::new(|| PieceSql::new(UPSERT_HEAD, UPSERT_ROW, UPSERT_TAIL));
static CHUNK_SQL: LazyLock<PieceSql> = LazyLock::new(|| PieceSql::new(CHUNK_HEAD, CHUNK_ROW, ""));
static DELETE_CHUNKS_SQL: LazyLock<PieceSql> =
    LazyLock::new(|| PieceSql::new("DELETE FROM chunks WHERE source = ? AND doc_id IN (", "?", ")"));

/// `head` followed by `rows` copies of `row` separated by commas, then `tail`.
fn repeat_sql(head: &str, row: &str, rows: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + (row.len() + 1) * rows + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(row);
    }
    sql.push_str(tail);
    sql
}

const UPSERT_HEAD: &str = "INSERT INTO documents (source, id, text, fields, updated_at, content_hash, category, \
                           classification, embedding, run_id, write_count, stored_at, pipeline_fingerprint) \
                           VALUES ";
const UPSERT_ROW: &str = "(?,?,?,?,?,?,?,?,?,?,1,?,?)";
const UPSERT_TAIL: &str = " ON CONFLICT (source, id) DO UPDATE SET text = excluded.text, fields = excluded.fields, \
                           updated_at = excluded.updated_at, content_hash = excluded.content_hash, \
                           category = excluded.category, classification = excluded.classification, \
                           embedding = excluded.embedding, run_id = excluded.run_id, \
                           write_count = documents.write_count + 1, stored_at = excluded.stored_at, \
                           pipeline_fingerprint = excluded.pipeline_fingerprint";
const CHUNK_HEAD: &str = "INSERT INTO chunks (source, doc_id, idx, byte_offset, text, embedding) VALUES ";
const CHUNK_ROW: &str = "(?,?,?,?,?,?)";

/// The part of a commit every document row of it shares.
pub(super) struct Written<'a> {
    pub now: &'a str,
    pub run: RunId,
    /// The pipeline fingerprint the documents were made under.
    pub fingerprint: Option<&'a str>,
}

/// Upserts the documents, replacing their chunks, in the order given.
pub(super) fn write_batch(conn: &Connection, docs: &[DocRow], written: &Written<'_>) -> rusqlite::Result<()> {
    // Each segment is written as a whole (old chunks deleted, documents
    // upserted, new chunks inserted), which is only the same as writing its
    // documents one by one if no document appears twice in it.
    let mut seen = std::collections::HashSet::with_capacity(docs.len());
    let mut segment_start = 0;
    for (i, d) in docs.iter().enumerate() {
        if !seen.insert((d.source.as_str(), d.id.as_str())) {
            write_segment(conn, &docs[segment_start..i], written)?;
            seen.clear();
            seen.insert((d.source.as_str(), d.id.as_str()));
            segment_start = i;
        }
    }
    write_segment(conn, &docs[segment_start..], written)
}

/// Writes documents with distinct `(source, id)`.
fn write_segment(conn: &Connection, docs: &[DocRow], written: &Written<'_>) -> rusqlite::Result<()> {
    // Delete the chunks of these documents (new ones have none), by source.
    let mut sources: Vec<&str> = docs.iter().map(|d| d.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        let ids: Vec<&str> = docs.iter().filter(|d| d.source == source).map(|d| d.id.as_str()).collect();
        for (start, len) in pieces(ids.len()) {
            let mut stmt = conn.prepare_cached(DELETE_CHUNKS_SQL.rows(len))?;
            stmt.raw_bind_parameter(1, source)?;
            for (k, id) in ids[start..start + len].iter().enumerate() {
                stmt.raw_bind_parameter(k + 2, id)?;
            }
            stmt.raw_execute()?;
        }
    }

    for (start, len) in pieces(docs.len()) {
        let mut stmt = conn.prepare_cached(UPSERT_SQL.rows(len))?;
        let mut n = 0;
        let mut bind = |value: &dyn rusqlite::ToSql| {
            n += 1;
            stmt.raw_bind_parameter(n, value)
        };
        for d in &docs[start..start + len] {
            bind(&d.source)?;
            bind(&d.id)?;
            bind(&d.text)?;
            bind(&d.fields)?;
            bind(&d.updated_at)?;
            bind(&d.content_hash)?;
            bind(&d.category)?;
            bind(&d.classification)?;
            bind(&d.embedding)?;
            bind(&written.run)?;
            bind(&written.now)?;
            bind(&written.fingerprint)?;
        }
        stmt.raw_execute()?;
    }

    let chunks: Vec<(&DocRow, &ChunkRow)> = docs.iter().flat_map(|d| d.chunks.iter().map(move |c| (d, c))).collect();
    for (start, len) in pieces(chunks.len()) {
        let mut stmt = conn.prepare_cached(CHUNK_SQL.rows(len))?;
        let mut n = 0;
        let mut bind = |value: &dyn rusqlite::ToSql| {
            n += 1;
            stmt.raw_bind_parameter(n, value)
        };
        for (d, c) in &chunks[start..start + len] {
            bind(&d.source)?;
            bind(&d.id)?;
            bind(&c.idx)?;
            bind(&c.offset)?;
            bind(&c.text)?;
            bind(&c.embedding)?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}
