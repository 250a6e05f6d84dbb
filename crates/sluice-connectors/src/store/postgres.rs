//! The PostgreSQL store: the schema and guarantees of the SQLite store on a
//! server several sluice processes can share.
//!
//! - **Atomic batches.** A commit is one transaction: the run's checkpoint
//!   and counts, the documents (one `INSERT ... SELECT FROM UNNEST(arrays)
//!   ... ON CONFLICT (source, id) DO UPDATE`, so a batch of any size is one
//!   statement with one cached plan), their chunks (deleted, then inserted
//!   the same way), the failures, the stage results (memos), and what later
//!   phases write: document updates (annotations, and the embedding when one
//!   is given, in one `UPDATE ... FROM UNNEST`; the record and its
//!   `write_count` stay as they are) and run results (upserted by
//!   `(run_id, kind, key)`). Repeated updates of a document, or results of
//!   one key, in a commit keep the last.
//! - **A document twice in one commit** (a cursor fallback re-fetched it, or
//!   a group commit holds two batches with it) is written once with its last
//!   version, and its `write_count` grows by the number of occurrences, which
//!   is what writing it once per occurrence (as SQLite does) leaves behind.
//!   PostgreSQL refuses to touch a row twice in one `ON CONFLICT` statement.
//! - **One active run per database** (per schema): a session-level advisory
//!   lock held on a connection of its own (never a pooled one) for the life
//!   of the guard. Dropping the guard unlocks and closes that connection; a
//!   process that dies loses its connection and the server frees the lock.
//!   Taking the lock marks runs left `running`/`stopping` as failed
//!   (resumable). If the lock connection is lost while the run goes on (a
//!   server restart), it reconnects and takes the lock again; a commit checks
//!   in its transaction that the run is still active, so if another process
//!   took over in between, this run ends `failed` instead of writing beside it.
//! - **Connection failures** (refused, reset, server shutting down or
//!   starting, pool timeout) are [`StoreError::Unavailable`]: the engine
//!   retries the commit with backoff and the pool reconnects. A commit whose
//!   COMMIT was sent but not answered may have landed; the next attempt of
//!   the same commit checks whether the run's checkpoint already is the one
//!   it carries and, if so, does not write the batch a second time. This
//!   looks at the checkpoint only, so it holds for commits of later phases
//!   too (updates and results, no documents): each of their commits carries
//!   a checkpoint of its own (batch number, position, phase counts).
//! - **Embeddings.** When `CREATE EXTENSION IF NOT EXISTS vector` succeeds at
//!   open, the `embedding` columns of documents and chunks become pgvector
//!   `vector` columns; an HNSW index needs a fixed dimension, so the first
//!   commit carrying embeddings fixes each column to `vector(N)` with that
//!   batch's dimension and builds an HNSW index (`vector_cosine_ops`) on it.
//!   Without the extension they stay `real[]`. Either way they are sent as
//!   one flat `real[]` with offsets (binary, exact) and read back as `real[]`.
//!   Which one is used is logged at open. A zero-length embedding cannot be a
//!   `vector`: it is stored as NULL there (and an update with one leaves
//!   the stored embedding as it is).
//! - **Later phases** read a source's documents back in pages, in id order
//!   (byte order, `COLLATE "C"`, as SQLite; with an index of its own), with
//!   their classification, embedding and annotations but not their chunks.
//! - PostgreSQL `text` and `jsonb` cannot hold a NUL character: a document
//!   with one is refused with its name; NULs in failure payloads (raw input
//!   kept for diagnosis) are replaced by U+FFFD.
//!
//! Opening is lazy-capable: [`PostgresStore::connect_lazy`] only parses the
//! URL (for the synchronous registry), and the schema is set up by the first
//! call; [`PostgresStore::open`] does it at once. Passwords never appear in
//! errors or logs: the store names itself by its redacted URL.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::store::{
    ActiveRunGuard, CommitBatch, Failure, FailureRow, MemoKey, NewRun, PhaseResult, RunId, RunInfo, RunStatus, Store,
};
use sluice_core::{Checkpoint, Chunk, Document, Record, StoreError};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, Row};
use tokio::sync::{Notify, OnceCell, oneshot};

use super::sqlite::ORPHANED_RUN_ERROR;
use super::{RowFacts, StoredDocument};
use crate::registry::redact_url;

/// The numbered migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_stage_results.sql")),
    (3, include_str!("../../migrations/postgres/0003_phases.sql")),
];

/// First key of the advisory lock that is the run slot ("sluc"); the second
/// is a hash of the schema, so two sluice schemas in one database do not
/// share a slot.
const RUN_LOCK_CLASS: i32 = 0x736c_7563;
/// First key of the transaction-level advisory lock serializing schema changes ("slum").
const SCHEMA_LOCK_CLASS: i32 = 0x736c_756d;
/// Takes the schema lock for the rest of the transaction.
const SCHEMA_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))";

/// How long taking a pooled connection may wait (including connecting)
/// before the call fails as unavailable and the engine's backoff takes over.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 5;
/// How often the run-slot connection is checked, so a lost lock is taken back.
const LOCK_KEEPALIVE: Duration = Duration::from_secs(2);
/// A lock released by a connection that is closing is free a moment later:
/// `acquire_active` tries this many times, this far apart, before answering Busy.
const BUSY_TRIES: u32 = 5;
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// A timestamptz column as RFC 3339 UTC with milliseconds, the format of the SQLite store.
macro_rules! ts {
    ($col:literal) => {
        concat!("to_char(", $col, " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
    };
}

macro_rules! run_columns {
    () => {
        concat!(
            "id, pipeline, status, phase, checkpoint, config, date_from, date_to, ",
            ts!("started_at"),
            ", ",
            ts!("updated_at"),
            ", ",
            ts!("finished_at"),
            ", error"
        )
    };
}

/// An embedding slice of the flat `real[]` bound as `$flat`: NULL when its length is NULL.
macro_rules! embedding_expr {
    ($flat:literal, $off:literal, $len:literal, $cast:literal) => {
        concat!(
            "CASE WHEN ",
            $len,
            " IS NULL THEN NULL ELSE (",
            $flat,
            "::real[])[",
            $off,
            " + 1 : ",
            $off,
            " + ",
            $len,
            "]",
            $cast,
            " END"
        )
    };
}

macro_rules! upsert_documents {
    ($cast:literal) => {
        concat!(
            "INSERT INTO documents AS d (source, id, text, fields, updated_at, content_hash, category, classification,
                                         embedding, run_id, write_count, stored_at)
             SELECT u.source, u.id, u.text, u.fields::jsonb, u.updated_at, u.content_hash, u.category,
                    u.classification::jsonb, ",
            embedding_expr!("$11", "u.eoff", "u.elen", $cast),
            ", $12, u.writes, now()
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[],
                         $8::text[], $9::int4[], $10::int4[], $13::int8[])
                  AS u(source, id, text, fields, updated_at, content_hash, category, classification, eoff, elen,
                       writes)
             ON CONFLICT (source, id) DO UPDATE SET
                 text = EXCLUDED.text, fields = EXCLUDED.fields, updated_at = EXCLUDED.updated_at,
                 content_hash = EXCLUDED.content_hash, category = EXCLUDED.category,
                 classification = EXCLUDED.classification, embedding = EXCLUDED.embedding,
                 run_id = EXCLUDED.run_id, write_count = d.write_count + EXCLUDED.write_count,
                 stored_at = EXCLUDED.stored_at"
        )
    };
}

macro_rules! insert_chunks {
    ($cast:literal) => {
        concat!(
            "INSERT INTO chunks (source, doc_id, idx, byte_offset, text, embedding)
             SELECT u.source, u.doc_id, u.idx, u.byte_offset, u.text, ",
            embedding_expr!("$8", "u.eoff", "u.elen", $cast),
            " FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int4[], $7::int4[])
                  AS u(source, doc_id, idx, byte_offset, text, eoff, elen)"
        )
    };
}

/// What a later phase adds to stored documents: annotations replaced, the
/// embedding replaced only when one is given; the record, `write_count`,
/// `run_id` and `stored_at` stay as they are.
macro_rules! update_documents {
    ($cast:literal) => {
        concat!(
            "UPDATE documents AS d SET annotations = u.annotations::jsonb, embedding = COALESCE(",
            embedding_expr!("$6", "u.eoff", "u.elen", $cast),
            ", d.embedding)
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::int4[])
                  AS u(source, id, annotations, eoff, elen)
             WHERE d.source = u.source AND d.id = u.id"
        )
    };
}

/// A page of a source's documents (`$1`, at most `$2`) in byte order of their ids.
macro_rules! scan_documents {
    ($after:literal) => {
        concat!(
            "SELECT id, text, fields, updated_at, content_hash, classification, embedding::real[], annotations
             FROM documents WHERE source = $1",
            $after,
            " ORDER BY source, id COLLATE \"C\" LIMIT $2"
        )
    };
}

const UPSERT_DOCUMENTS_REAL: &str = upsert_documents!("");
const UPSERT_DOCUMENTS_VECTOR: &str = upsert_documents!("::vector");
const INSERT_CHUNKS_REAL: &str = insert_chunks!("");
const INSERT_CHUNKS_VECTOR: &str = insert_chunks!("::vector");
const UPDATE_DOCUMENTS_REAL: &str = update_documents!("");
const UPDATE_DOCUMENTS_VECTOR: &str = update_documents!("::vector");
const SCAN_DOCUMENTS_FIRST: &str = scan_documents!("");
const SCAN_DOCUMENTS_AFTER: &str = scan_documents!(" AND id COLLATE \"C\" > $3");

/// Configuration of the PostgreSQL store, as written in a pipeline file.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (libpq-style options in the query string).
    pub url: String,
}

impl PostgresConfig {
    pub async fn open(&self) -> Result<PostgresStore, StoreError> {
        PostgresStore::open(&self.url).await
    }
}

/// How embeddings are stored, decided at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingStorage {
    /// pgvector `vector` columns (fixed to `vector(N)` with an HNSW index once N is known).
    Vector,
    /// Plain `real[]` columns (the `vector` extension is not available).
    RealArray,
}

impl EmbeddingStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingStorage::Vector => "vector",
            EmbeddingStorage::RealArray => "real[]",
        }
    }
}

/// A [`Store`] in a PostgreSQL database. Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL with its password hidden.
    describe: String,
    options: PgConnectOptions,
    /// Made on first use (it needs the async runtime); connects lazily.
    pool: OnceLock<PgPool>,
    setup: OnceCell<Setup>,
    /// A commit whose COMMIT got no answer: (run, checkpoint). The next
    /// attempt of the same commit checks whether it landed.
    uncertain: Mutex<Option<(RunId, Value)>>,
    releasing: Arc<Releasing>,
}

/// What opening found out.
struct Setup {
    storage: EmbeddingStorage,
    /// Per table (documents, chunks), the state of its vector column's dimension.
    dims: Mutex<[Dimension; 2]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dimension {
    /// `vector` without a dimension: no HNSW index yet.
    Open,
    /// `vector(N)` with its HNSW index.
    Fixed(i32),
    /// Fixing it failed (rows of several dimensions already there): left unindexed.
    Unfixable,
}

const VECTOR_TABLES: [&str; 2] = ["documents", "chunks"];

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.inner.describe).finish_non_exhaustive()
    }
}

/// The run slot while it is held. Dropping it unlocks and closes the
/// connection that holds the advisory lock (a moment later, on the runtime;
/// the same store's `acquire_active` and `active_run` wait for that).
pub struct PostgresRunLock {
    release: Option<oneshot::Sender<()>>,
    releasing: Arc<Releasing>,
    pub store: String,
}

impl Drop for PostgresRunLock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            self.releasing.pending.fetch_add(1, Ordering::SeqCst);
            if release.send(()).is_err() {
                // The task holding the lock is gone (its runtime ended): so is its connection.
                self.releasing.finished();
            }
        }
    }
}

/// Run-slot releases under way in this store.
#[derive(Default)]
struct Releasing {
    pending: AtomicUsize,
    done: Notify,
}

impl Releasing {
    fn finished(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.done.notify_waiters();
    }

    /// Waits (a second at most) until the guards this store dropped have released the lock.
    async fn wait(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            let notified = self.done.notified();
            if self.pending.load(Ordering::SeqCst) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
        }
    }
}

impl fmt::Debug for PostgresRunLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRunLock").field("store", &self.store).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Parses `url` and prepares a pool without connecting: the first call
    /// connects and sets the schema up. For callers that cannot wait here.
    pub fn connect_lazy(url: &str) -> Result<PostgresStore, StoreError> {
        let describe = format!("postgres:{}", redact_url(url.trim()));
        let options = PgConnectOptions::from_str(url.trim()).map_err(|e| {
            StoreError::Other(format!("{describe}: not a valid PostgreSQL URL: {}", redact_error(&e.to_string(), url)))
        })?;
        let options = options.application_name("sluice");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                describe,
                options,
                pool: OnceLock::new(),
                setup: OnceCell::new(),
                uncertain: Mutex::new(None),
                releasing: Arc::default(),
            }),
        })
    }

    /// Connects to `url`, applies the migrations the database lacks and
    /// finds out how embeddings are stored.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let store = Self::connect_lazy(url)?;
        store.ready().await?;
        Ok(store)
    }

    /// How this store keeps embeddings.
    pub async fn embedding_storage(&self) -> Result<EmbeddingStorage, StoreError> {
        Ok(self.ready().await?.storage)
    }

    /// Closes the pool (open connections end; the store cannot be used after).
    pub async fn close(&self) {
        if let Some(pool) = self.inner.pool.get() {
            pool.close().await;
        }
    }

    pub async fn document_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM documents", "counting documents").await
    }

    pub async fn chunk_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM chunks", "counting chunks").await
    }

    async fn count(&self, sql: &'static str, what: &str) -> Result<u64, StoreError> {
        self.ready().await?;
        let n: i64 = sqlx::query_scalar(sql).fetch_one(self.pool()).await.map_err(self.sql(what))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The stored document `(source, id)`, if there is one.
    pub async fn get_document(&self, source: &str, id: &str) -> Result<Option<StoredDocument>, StoreError> {
        self.ready().await?;
        let what = format!("reading document ({source}, {id})");
        let row = sqlx::query(concat!(
            "SELECT id, text, fields, updated_at, content_hash, classification, embedding::real[], annotations,
                    category, run_id, write_count, ",
            ts!("stored_at"),
            ", (SELECT count(*) FROM chunks c WHERE c.source = d.source AND c.doc_id = d.id)
             FROM documents d WHERE source = $1 AND id = $2"
        ))
        .bind(source)
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .map_err(self.sql(&what))?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: sqlx::Error| self.other(format!("{what}: {e}"));
        let facts = RowFacts {
            category: row.try_get(8).map_err(get)?,
            run_id: row.try_get(9).map_err(get)?,
            write_count: row.try_get(10).map_err(get)?,
            stored_at: row.try_get(11).map_err(get)?,
            chunks: row.try_get(12).map_err(get)?,
        };
        Ok(Some(StoredDocument::from_row(self.document_of(&row, source, &what)?, facts)))
    }

    /// Decodes a document's own columns, in this order: `id, text, fields,
    /// updated_at, content_hash, classification, embedding::real[],
    /// annotations` (as `get_document` and later phases' scans select them).
    fn document_of(&self, row: &PgRow, source: &str, what: &str) -> Result<Document, StoreError> {
        let get = |e: sqlx::Error| self.other(format!("{what}: {e}"));
        let id: String = row.try_get(0).map_err(get)?;
        let bad = |e: String| self.other(format!("{what}: document ({source}, {id}): {e}"));
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
    pub async fn get_chunks(&self, source: &str, doc_id: &str) -> Result<Vec<Chunk>, StoreError> {
        self.ready().await?;
        let what = format!("reading the chunks of document ({source}, {doc_id})");
        let rows = sqlx::query(
            "SELECT idx, byte_offset, text, embedding::real[] FROM chunks
             WHERE source = $1 AND doc_id = $2 ORDER BY idx",
        )
        .bind(source)
        .bind(doc_id)
        .fetch_all(self.pool())
        .await
        .map_err(self.sql(&what))?;
        rows.iter()
            .map(|row| {
                let get = |e: sqlx::Error| self.other(format!("{what}: {e}"));
                let index: i64 = row.try_get(0).map_err(get)?;
                let offset: i64 = row.try_get(1).map_err(get)?;
                let bad = |e: String| self.other(format!("{what}: chunk {index}: {e}"));
                Ok(Chunk {
                    index: u32::try_from(index).map_err(|_| bad(format!("index {index} is out of range")))?,
                    offset: usize::try_from(offset).map_err(|_| bad(format!("negative offset {offset}")))?,
                    text: row.try_get(2).map_err(get)?,
                    embedding: row.try_get(3).map_err(get)?,
                })
            })
            .collect()
    }

    /// The run that holds the store's run slot right now: the newest
    /// `running`/`stopping` run, but only while some session holds the
    /// advisory lock, so a run left `running` by a dead process is not
    /// reported as active.
    pub async fn active_run(&self) -> Result<Option<RunInfo>, StoreError> {
        self.ready().await?;
        self.inner.releasing.wait().await;
        // One statement, so the shared lock taken to probe is released in
        // the same breath and never stays on a pooled connection.
        let held: bool = sqlx::query_scalar(
            "SELECT CASE WHEN pg_try_advisory_lock_shared($1, hashtext(coalesce(current_schema(), '')))
                         THEN NOT pg_advisory_unlock_shared($1, hashtext(coalesce(current_schema(), '')))
                         ELSE true END",
        )
        .bind(RUN_LOCK_CLASS)
        .fetch_one(self.pool())
        .await
        .map_err(self.sql("checking the run lock"))?;
        if !held {
            return Ok(None);
        }
        match self.active_run_id().await? {
            0 => Ok(None),
            id => self.get_run(id).await,
        }
    }

    /// The newest run that holds (or held) the run slot, 0 if none.
    async fn active_run_id(&self) -> Result<RunId, StoreError> {
        let id: Option<RunId> = sqlx::query_scalar(
            "SELECT id FROM pipeline_runs WHERE status IN ('running', 'stopping') ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(self.pool())
        .await
        .map_err(self.sql("looking up the active run"))?;
        Ok(id.unwrap_or_default())
    }

    /// The connection pool. Only called from async code, inside the runtime.
    fn pool(&self) -> &PgPool {
        self.inner.pool.get_or_init(|| {
            PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .min_connections(0)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .idle_timeout(Duration::from_secs(60))
                .test_before_acquire(true)
                .connect_lazy_with(self.inner.options.clone())
        })
    }

    async fn ready(&self) -> Result<&Setup, StoreError> {
        self.inner.setup.get_or_try_init(|| self.set_up()).await
    }

    /// Applies the migrations and settles the embedding columns, in one
    /// transaction under an advisory lock.
    async fn set_up(&self) -> Result<Setup, StoreError> {
        let what = "setting up the schema";
        let mut tx = self.pool().begin().await.map_err(self.sql(what))?;
        sqlx::query(SCHEMA_LOCK_SQL).bind(SCHEMA_LOCK_CLASS).execute(&mut *tx).await.map_err(self.sql(what))?;
        // No "already exists, skipping" notices in the logs at every open.
        sqlx::raw_sql("SET LOCAL client_min_messages = warning").execute(&mut *tx).await.map_err(self.sql(what))?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    bigint PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .execute(&mut *tx)
        .await
        .map_err(self.sql(what))?;
        let current: i64 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(self.sql(what))?;
        let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
        if current > known {
            return Err(self.other(format!(
                "the database is at schema version {current}, newer than this sluice knows ({known}); use a newer sluice"
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(self.sql(format!("applying migration {version:04}")))?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(self.sql(what))?;
            tracing::debug!(version, "applied PostgreSQL migration");
        }

        // pgvector, when the server has it and we may create it.
        sqlx::raw_sql("SAVEPOINT vector_extension").execute(&mut *tx).await.map_err(self.sql(what))?;
        let extension = sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS vector").execute(&mut *tx).await;
        let unavailable_because = match extension {
            Ok(_) => None,
            Err(e) if is_transient(&e) => return Err(self.sql(what)(e)),
            Err(e) => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT vector_extension")
                    .execute(&mut *tx)
                    .await
                    .map_err(self.sql(what))?;
                Some(e.to_string())
            }
        };
        let unavailable_because = match unavailable_because {
            Some(reason) => Some(reason),
            None => self.vector_columns(&mut tx).await?,
        };
        let mut dims = [Dimension::Open; 2];
        let mut storage = EmbeddingStorage::RealArray;
        for (i, table) in VECTOR_TABLES.iter().enumerate() {
            let (kind, typmod) = column_type_mod(&mut tx, table).await.map_err(self.sql(what))?;
            if kind.starts_with("vector") {
                storage = EmbeddingStorage::Vector;
                dims[i] = if typmod > 0 { Dimension::Fixed(typmod) } else { Dimension::Open };
            }
        }
        tx.commit().await.map_err(self.sql(what))?;

        match (storage, unavailable_because) {
            (EmbeddingStorage::Vector, _) => tracing::info!(
                store = %self.inner.describe,
                "PostgreSQL store: embeddings in pgvector vector columns (HNSW index once their dimension is known)"
            ),
            (EmbeddingStorage::RealArray, reason) => tracing::info!(
                store = %self.inner.describe,
                reason = reason.as_deref().unwrap_or("unknown"),
                "PostgreSQL store: embeddings in real[] columns (the vector extension is not available)"
            ),
        }
        Ok(Setup { storage, dims: Mutex::new(dims) })
    }

    /// Turns `real[]` embedding columns (from before the extension was
    /// there) into `vector` columns, keeping their values; both or neither.
    /// Answers why not when existing values cannot be vectors (empty ones).
    async fn vector_columns(&self, tx: &mut PgConnection) -> Result<Option<String>, StoreError> {
        let what = "turning the embedding columns into vector columns";
        sqlx::raw_sql("SAVEPOINT vector_columns").execute(&mut *tx).await.map_err(self.sql(what))?;
        for table in VECTOR_TABLES {
            let kind = column_type(tx, table).await.map_err(self.sql(what))?;
            if kind != "real[]" {
                continue;
            }
            let altered = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} ALTER COLUMN embedding TYPE vector USING embedding::vector"
            )))
            .execute(&mut *tx)
            .await;
            match altered {
                Ok(_) => {}
                Err(e) if is_transient(&e) => return Err(self.sql(what)(e)),
                Err(e) => {
                    sqlx::raw_sql("ROLLBACK TO SAVEPOINT vector_columns")
                        .execute(&mut *tx)
                        .await
                        .map_err(self.sql(what))?;
                    let reason = format!("the stored embeddings of {table} cannot become vectors: {}", error_text(&e));
                    tracing::warn!(store = %self.inner.describe, "{reason}; keeping real[] columns");
                    return Ok(Some(reason));
                }
            }
        }
        Ok(None)
    }

    /// In vector mode, fixes the dimension of a table's embedding column and
    /// indexes it, the first time a commit carries embeddings for it. Runs
    /// before (not in) the commit's transaction; a failure other than a lost
    /// connection leaves the column unindexed with a warning.
    async fn fix_dimensions(&self, setup: &Setup, wanted: [Option<usize>; 2]) -> Result<(), StoreError> {
        if setup.storage != EmbeddingStorage::Vector {
            return Ok(());
        }
        for (i, table) in VECTOR_TABLES.iter().enumerate() {
            let Some(dim) = wanted[i] else { continue };
            let state = setup.dims.lock().unwrap_or_else(PoisonError::into_inner)[i];
            if state != Dimension::Open || dim == 0 {
                continue;
            }
            let Ok(dim) = i32::try_from(dim) else { continue };
            let result = self.fix_dimension(table, dim).await;
            let next = match result {
                Ok(found) => found,
                Err(e) if is_transient(&e) => return Err(self.sql(format!("indexing {table}.embedding"))(e)),
                Err(e) => {
                    tracing::warn!(
                        store = %self.inner.describe,
                        "cannot give {table}.embedding the dimension {dim} and an HNSW index ({e}); \
                         embeddings are stored without an index"
                    );
                    Dimension::Unfixable
                }
            };
            setup.dims.lock().unwrap_or_else(PoisonError::into_inner)[i] = next;
        }
        Ok(())
    }

    async fn fix_dimension(&self, table: &str, dim: i32) -> Result<Dimension, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(SCHEMA_LOCK_SQL).bind(SCHEMA_LOCK_CLASS).execute(&mut *tx).await?;
        let (_, typmod) = column_type_mod(&mut tx, table).await?;
        if typmod > 0 {
            // Another process fixed it meanwhile.
            tx.commit().await?;
            return Ok(Dimension::Fixed(typmod));
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({dim});
             CREATE INDEX IF NOT EXISTS {table}_embedding_hnsw ON {table} USING hnsw (embedding vector_cosine_ops);"
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(store = %self.inner.describe, "{table}.embedding is vector({dim}) with an HNSW index");
        Ok(Dimension::Fixed(dim))
    }

    fn other(&self, message: String) -> StoreError {
        StoreError::Other(format!("{}: {message}", self.inner.describe))
    }

    /// Maps a sqlx error met while doing `what`: connection trouble is
    /// `Unavailable` (retried), the rest `Other`; messages name the store.
    fn sql(&self, what: impl fmt::Display) -> impl FnOnce(sqlx::Error) -> StoreError {
        let describe = self.inner.describe.clone();
        move |e| {
            let message = format!("{describe}: {what}: {}", error_text(&e));
            if is_transient(&e) { StoreError::Unavailable(message) } else { StoreError::Other(message) }
        }
    }

    async fn read_run(&self, id: RunId) -> Result<Option<RunInfo>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM pipeline_runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(self.sql(format!("reading run {id}")))?;
        row.map(|r| self.parse_run(&r)).transpose()
    }

    fn parse_run(&self, row: &PgRow) -> Result<RunInfo, StoreError> {
        let id: RunId = row.try_get(0).map_err(|e| self.other(format!("reading a run: {e}")))?;
        let bad = |what: String| self.other(format!("run {id} cannot be read: {what}"));
        let get = |e: sqlx::Error| bad(e.to_string());
        let status: String = row.try_get(2).map_err(get)?;
        let status = RunStatus::parse(&status).ok_or_else(|| bad(format!("unknown status {status:?}")))?;
        let checkpoint: Option<Value> = row.try_get(4).map_err(get)?;
        let checkpoint = match checkpoint {
            None => None,
            Some(value) => Some(serde_json::from_value::<Checkpoint>(value.clone()).map_err(|e| {
                bad(format!("its checkpoint is not a valid checkpoint ({e}): {}", clip(&value.to_string())))
            })?),
        };
        Ok(RunInfo {
            id,
            pipeline: row.try_get(1).map_err(get)?,
            status,
            phase: row.try_get(3).map_err(get)?,
            checkpoint,
            config: row.try_get(5).map_err(get)?,
            date_from: row.try_get(6).map_err(get)?,
            date_to: row.try_get(7).map_err(get)?,
            started_at: row.try_get(8).map_err(get)?,
            updated_at: row.try_get(9).map_err(get)?,
            finished_at: row.try_get(10).map_err(get)?,
            error: row.try_get(11).map_err(get)?,
        })
    }

    /// Whether the run's stored checkpoint is `checkpoint` (the commit that carried it landed).
    async fn checkpoint_is(&self, run: RunId, checkpoint: &Value) -> Result<bool, StoreError> {
        let same: Option<bool> =
            sqlx::query_scalar("SELECT checkpoint IS NOT NULL AND checkpoint = $2 FROM pipeline_runs WHERE id = $1")
                .bind(run)
                .bind(Json(checkpoint))
                .fetch_optional(self.pool())
                .await
                .map_err(self.sql(format!("checking whether the last commit of run {run} landed")))?;
        Ok(same.unwrap_or(false))
    }

    async fn write_commit(
        &self,
        setup: &Setup,
        run: RunId,
        rows: &EncodedBatch,
        checkpoint: &CheckpointJson<'_>,
        what: &str,
    ) -> Result<(), CommitError> {
        let stage = |e: sqlx::Error| CommitError::Before(self.sql(what)(e));
        let mut tx = self.pool().begin().await.map_err(stage)?;
        let status: Option<String> = sqlx::query_scalar(
            "UPDATE pipeline_runs AS r SET checkpoint = $2, counts = $3, phase = $4, updated_at = now()
             FROM (SELECT id, status FROM pipeline_runs WHERE id = $1 FOR UPDATE) AS old
             WHERE r.id = old.id
             RETURNING old.status",
        )
        .bind(run)
        .bind(Json(checkpoint.value))
        .bind(Json(checkpoint.counts))
        .bind(checkpoint.phase)
        .fetch_optional(&mut *tx)
        .await
        .map_err(stage)?;
        match status.as_deref() {
            None => {
                return Err(CommitError::Before(StoreError::NotFound(format!(
                    "run {run} (cannot commit a batch to it)"
                ))));
            }
            Some("running" | "stopping") => {}
            Some(other) => {
                return Err(CommitError::Before(self.other(format!(
                    "{what}: run {run} is {other}, not running: another process took the store over \
                     (the run slot was lost, e.g. across a server restart); nothing of this batch was written"
                ))));
            }
        }
        let vector = setup.storage == EmbeddingStorage::Vector;
        let docs = &rows.docs;
        if !docs.source.is_empty() {
            sqlx::query(
                "DELETE FROM chunks c USING UNNEST($1::text[], $2::text[]) AS u(source, id)
                 WHERE c.source = u.source AND c.doc_id = u.id",
            )
            .bind(&docs.source)
            .bind(&docs.id)
            .execute(&mut *tx)
            .await
            .map_err(stage)?;
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
                .execute(&mut *tx)
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
                .execute(&mut *tx)
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
            .execute(&mut *tx)
            .await
            .map_err(stage)?;
        }
        let m = &rows.memos;
        if !m.source.is_empty() {
            sqlx::query(
                "INSERT INTO stage_results (source, id, stage, fingerprint, content_hash, value, stored_at)
                 SELECT u.source, u.id, u.stage, u.fingerprint, u.content_hash, u.value::jsonb, now()
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                      AS u(source, id, stage, fingerprint, content_hash, value)
                 ON CONFLICT (source, id, stage) DO UPDATE SET
                     fingerprint = EXCLUDED.fingerprint, content_hash = EXCLUDED.content_hash,
                     value = EXCLUDED.value, stored_at = EXCLUDED.stored_at",
            )
            .bind(&m.source)
            .bind(&m.id)
            .bind(&m.stage)
            .bind(&m.fingerprint)
            .bind(&m.content_hash)
            .bind(&m.value)
            .execute(&mut *tx)
            .await
            .map_err(stage)?;
        }
        let u = &rows.updates;
        if !u.source.is_empty() {
            sqlx::query(if vector { UPDATE_DOCUMENTS_VECTOR } else { UPDATE_DOCUMENTS_REAL })
                .bind(&u.source)
                .bind(&u.id)
                .bind(&u.annotations)
                .bind(&u.embedding.offset)
                .bind(&u.embedding.len)
                .bind(&u.embedding.flat)
                .execute(&mut *tx)
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
            .execute(&mut *tx)
            .await
            .map_err(stage)?;
        }
        tx.commit().await.map_err(|e| {
            if is_transient(&e) {
                CommitError::Uncertain(self.sql(what)(e))
            } else {
                CommitError::Before(self.sql(what)(e))
            }
        })
    }
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

/// The type of `table.embedding` as PostgreSQL names it (`real[]`, `vector`, `vector(384)`).
async fn column_type(tx: &mut PgConnection, table: &str) -> Result<String, sqlx::Error> {
    Ok(column_type_mod(tx, table).await?.0)
}

/// The type name and type modifier (a vector's dimension, -1 if none) of `table.embedding`.
async fn column_type_mod(tx: &mut PgConnection, table: &str) -> Result<(String, i32), sqlx::Error> {
    sqlx::query_as(
        "SELECT format_type(atttypid, atttypmod), atttypmod FROM pg_attribute
         WHERE attrelid = to_regclass($1) AND attname = 'embedding' AND NOT attisdropped",
    )
    .bind(table)
    .fetch_one(tx)
    .await
}

/// Connection trouble worth retrying: the server went away, is restarting or
/// starting, refused or reset the connection, or the pool could not get one
/// in time; also serialization failures and deadlocks.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") // connection exception
                || matches!(
                    code.as_ref(),
                    "57P01" // admin_shutdown
                        | "57P02" // crash_shutdown
                        | "57P03" // cannot_connect_now (starting up, shutting down)
                        | "53300" // too_many_connections
                        | "40001" // serialization_failure
                        | "40P01" // deadlock_detected
                )
        }),
        _ => false,
    }
}

/// The error's text, with the server's detail and hint when it gave them.
fn error_text(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let mut text = db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    text.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = pg.hint() {
                    text.push_str(&format!(" (hint: {hint})"));
                }
            }
            match db.code() {
                Some(code) => format!("{text} [SQLSTATE {code}]"),
                None => text,
            }
        }
        other => other.to_string(),
    }
}

/// Hides the password of `url` if an error message repeats it.
fn redact_error(message: &str, url: &str) -> String {
    match PgConnectOptions::from_str(url).ok().and_then(|_| password_of(url)) {
        Some(password) if !password.is_empty() => message.replace(&password, "***"),
        _ => message.to_string(),
    }
}

fn password_of(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    Some(userinfo.split_once(':')?.1.to_string())
}

/// At most 200 characters of `text`, for error messages.
fn clip(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

fn json_text(value: &impl Serialize, what: &str) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| format!("cannot encode {what} as JSON: {e}"))
}

/// Refuses text PostgreSQL cannot store (a NUL character), naming where it is.
fn no_nul(text: &str, what: impl FnOnce() -> String) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!("{} contains a NUL character, which PostgreSQL cannot store", what()));
    }
    Ok(())
}

/// Embeddings of a column, as one flat array with an offset and a length per row.
#[derive(Default)]
struct Embeddings {
    offset: Vec<Option<i32>>,
    len: Vec<Option<i32>>,
    flat: Vec<f32>,
}

impl Embeddings {
    fn push(&mut self, embedding: Option<&[f32]>, vector: bool) -> Result<(), String> {
        match embedding {
            Some(e) if !(vector && e.is_empty()) => {
                let offset = i32::try_from(self.flat.len()).map_err(|_| "too many embedding values in one batch")?;
                let len = i32::try_from(e.len()).map_err(|_| "an embedding is too long")?;
                self.offset.push(Some(offset));
                self.len.push(Some(len));
                self.flat.extend_from_slice(e);
            }
            _ => {
                self.offset.push(None);
                self.len.push(None);
            }
        }
        Ok(())
    }

    /// The dimension of the first embedding, if any.
    fn first_dimension(&self) -> Option<usize> {
        self.len.iter().flatten().next().map(|&l| l as usize)
    }
}

#[derive(Default)]
struct DocColumns {
    source: Vec<String>,
    id: Vec<String>,
    text: Vec<String>,
    fields: Vec<String>,
    updated_at: Vec<Option<i64>>,
    content_hash: Vec<String>,
    category: Vec<Option<String>>,
    classification: Vec<Option<String>>,
    embedding: Embeddings,
    writes: Vec<i64>,
}

#[derive(Default)]
struct ChunkColumns {
    source: Vec<String>,
    doc_id: Vec<String>,
    idx: Vec<i64>,
    offset: Vec<i64>,
    text: Vec<String>,
    embedding: Embeddings,
}

#[derive(Default)]
struct FailureColumns {
    source: Vec<String>,
    record_id: Vec<String>,
    stage: Vec<String>,
    error_type: Vec<String>,
    error: Vec<String>,
    retryable: Vec<bool>,
    retry_count: Vec<i64>,
    payload: Vec<String>,
    has_record: Vec<bool>,
}

#[derive(Default)]
struct MemoColumns {
    source: Vec<String>,
    id: Vec<String>,
    stage: Vec<String>,
    fingerprint: Vec<String>,
    content_hash: Vec<String>,
    value: Vec<String>,
}

#[derive(Default)]
struct UpdateColumns {
    source: Vec<String>,
    id: Vec<String>,
    annotations: Vec<String>,
    embedding: Embeddings,
}

#[derive(Default)]
struct ResultColumns {
    kind: Vec<String>,
    key: Vec<String>,
    value: Vec<String>,
}

/// A commit's rows as column arrays for `UNNEST`.
#[derive(Default)]
struct EncodedBatch {
    docs: DocColumns,
    chunks: ChunkColumns,
    failures: FailureColumns,
    memos: MemoColumns,
    updates: UpdateColumns,
    results: ResultColumns,
}

/// Replaces NUL characters (which PostgreSQL text cannot hold) in diagnostic text.
fn scrub(text: &str) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text.to_owned() }
}

/// Encodes a commit: documents deduplicated by `(source, id)` (the last
/// occurrence wins, `writes` counts the occurrences), their chunks, the
/// failures, and the memos deduplicated by `(source, id, stage)`.
fn encode_batch(batch: &CommitBatch, vector: bool) -> Result<EncodedBatch, String> {
    let mut out = EncodedBatch::default();

    let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.documents.len());
    let mut order: Vec<(&str, &str)> = Vec::with_capacity(batch.documents.len());
    let mut writes: HashMap<(&str, &str), i64> = HashMap::with_capacity(batch.documents.len());
    for (i, doc) in batch.documents.iter().enumerate() {
        let key = (doc.source(), doc.id());
        if last.insert(key, i).is_none() {
            order.push(key);
        }
        *writes.entry(key).or_insert(0) += 1;
    }
    for key in order {
        let (Some(&i), Some(&n)) = (last.get(&key), writes.get(&key)) else { continue };
        let doc = &batch.documents[i];
        encode_document(&mut out, doc, n, vector)?;
    }

    let f = &mut out.failures;
    for failure in &batch.failures {
        let Failure { source, record_id, stage, error_type, error, retryable, retry_count, payload, has_record } =
            failure;
        f.source.push(scrub(source));
        f.record_id.push(scrub(record_id));
        f.stage.push(scrub(stage));
        f.error_type.push(scrub(error_type));
        f.error.push(scrub(error));
        f.retryable.push(*retryable);
        f.retry_count.push(i64::from(*retry_count));
        f.payload.push(scrub(payload));
        f.has_record.push(*has_record);
    }

    let mut memo_last: HashMap<(&str, &str, &str), usize> = HashMap::with_capacity(batch.memos.len());
    let mut memo_order = Vec::with_capacity(batch.memos.len());
    for (i, memo) in batch.memos.iter().enumerate() {
        let key = (memo.source.as_str(), memo.id.as_str(), memo.stage.as_str());
        if memo_last.insert(key, i).is_none() {
            memo_order.push(key);
        }
    }
    let m = &mut out.memos;
    for key in memo_order {
        let Some(&i) = memo_last.get(&key) else { continue };
        let memo = &batch.memos[i];
        let value = json_text(&memo.value, "a stage result")?;
        let name = || format!("the {} result of document ({}, {})", memo.stage, memo.source, memo.id);
        no_nul(&value.replace("\\u0000", "\0"), name)?;
        for text in [&memo.source, &memo.id, &memo.stage, &memo.fingerprint, &memo.content_hash] {
            no_nul(text, name)?;
        }
        m.source.push(memo.source.clone());
        m.id.push(memo.id.clone());
        m.stage.push(memo.stage.clone());
        m.fingerprint.push(memo.fingerprint.clone());
        m.content_hash.push(memo.content_hash.clone());
        m.value.push(value);
    }

    // One UPDATE touches a row once (with one of its matches): keep the last update of a document.
    let mut update_last: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.updates.len());
    let mut update_order = Vec::with_capacity(batch.updates.len());
    for (i, update) in batch.updates.iter().enumerate() {
        let key = (update.source.as_str(), update.id.as_str());
        if update_last.insert(key, i).is_none() {
            update_order.push(key);
        }
    }
    let u = &mut out.updates;
    for key in update_order {
        let Some(&i) = update_last.get(&key) else { continue };
        let update = &batch.updates[i];
        let name = || format!("the update of document ({}, {})", update.source, update.id);
        no_nul(&update.source, name)?;
        no_nul(&update.id, name)?;
        let annotations = json_text(&update.annotations, "document annotations")?;
        if annotations.contains("\\u0000") {
            return Err(format!(
                "{} has a NUL character in its annotations, which PostgreSQL jsonb cannot store",
                name()
            ));
        }
        u.source.push(update.source.clone());
        u.id.push(update.id.clone());
        u.annotations.push(annotations);
        u.embedding.push(update.embedding.as_deref(), vector).map_err(|e| format!("{}: {e}", name()))?;
    }

    // ON CONFLICT cannot touch a row twice in one statement: keep the last result of a key.
    let mut result_last: HashMap<(&str, &str), usize> = HashMap::with_capacity(batch.results.len());
    let mut result_order = Vec::with_capacity(batch.results.len());
    for (i, result) in batch.results.iter().enumerate() {
        let key = (result.kind.as_str(), result.key.as_str());
        if result_last.insert(key, i).is_none() {
            result_order.push(key);
        }
    }
    let r = &mut out.results;
    for key in result_order {
        let Some(&i) = result_last.get(&key) else { continue };
        let result = &batch.results[i];
        let name = || format!("the {} result {}", result.kind, result.key);
        no_nul(&result.kind, name)?;
        no_nul(&result.key, name)?;
        let value = json_text(&result.value, "a phase result")?;
        if value.contains("\\u0000") {
            return Err(format!("{} has a NUL character, which PostgreSQL jsonb cannot store", name()));
        }
        r.kind.push(result.kind.clone());
        r.key.push(result.key.clone());
        r.value.push(value);
    }
    Ok(out)
}

fn encode_document(out: &mut EncodedBatch, doc: &Document, writes: i64, vector: bool) -> Result<(), String> {
    let record = &doc.record;
    let name = || format!("document ({}, {})", record.source, record.id);
    let fields = json_text(&record.fields, "document fields")?;
    let classification = doc.classification.as_ref().map(|c| json_text(c, "a classification")).transpose()?;
    for text in [&record.source, &record.id, &record.text, &doc.content_hash] {
        no_nul(text, name)?;
    }
    // JSON spells a NUL "\u0000", which jsonb refuses.
    for json in std::iter::once(&fields).chain(classification.as_ref()) {
        if json.contains("\\u0000") {
            return Err(format!("{} has a NUL character in its fields, which PostgreSQL jsonb cannot store", name()));
        }
    }
    if let Some(category) = doc.classification.as_ref().map(|c| &c.category) {
        no_nul(category, name)?;
    }
    let d = &mut out.docs;
    d.source.push(record.source.clone());
    d.id.push(record.id.clone());
    d.text.push(record.text.clone());
    d.fields.push(fields);
    d.updated_at.push(record.updated_at);
    d.content_hash.push(doc.content_hash.clone());
    d.category.push(doc.classification.as_ref().map(|c| c.category.clone()));
    d.classification.push(classification);
    d.embedding.push(doc.embedding.as_deref(), vector).map_err(|e| format!("{}: {e}", name()))?;
    d.writes.push(writes);

    let c = &mut out.chunks;
    for chunk in &doc.chunks {
        no_nul(&chunk.text, || format!("chunk {} of {}", chunk.index, name()))?;
        c.source.push(record.source.clone());
        c.doc_id.push(record.id.clone());
        c.idx.push(i64::from(chunk.index));
        c.offset.push(
            i64::try_from(chunk.offset)
                .map_err(|_| format!("chunk {} of {}: offset is too large", chunk.index, name()))?,
        );
        c.text.push(chunk.text.clone());
        c.embedding.push(chunk.embedding.as_deref(), vector).map_err(|e| format!("{}: {e}", name()))?;
    }
    Ok(())
}

/// Holds the advisory lock on its own connection until the guard is
/// dropped, then unlocks and closes it. If the connection is lost, the lock
/// is gone with it: reconnects and takes it again.
async fn keep_lock(store: PostgresStore, mut conn: PgConnection, mut release: oneshot::Receiver<()>) {
    let describe = store.inner.describe.clone();
    let mut lost = false;
    let mut taken_over = false;
    let signalled = loop {
        tokio::select! {
            signal = &mut release => break signal.is_ok(),
            _ = tokio::time::sleep(LOCK_KEEPALIVE) => {}
        }
        if !lost {
            // Bounded: a connection cut without a FIN must not hold up the release.
            let ping = tokio::time::timeout(LOCK_KEEPALIVE * 2, sqlx::query("SELECT 1").execute(&mut conn)).await;
            if matches!(ping, Ok(Ok(_))) {
                continue;
            }
            lost = true;
            tracing::warn!(store = %describe, "lost the connection holding the run slot; taking it again");
        }
        match PgConnection::connect_with(&store.inner.options).await {
            Ok(mut fresh) => match try_lock(&mut fresh).await {
                Ok(true) => {
                    tracing::info!(store = %describe, "run slot taken again after reconnecting");
                    conn = fresh;
                    lost = false;
                }
                Ok(false) => {
                    if !taken_over {
                        taken_over = true;
                        tracing::error!(
                            store = %describe,
                            "another process took the run slot while the connection was lost; \
                             this run's next commit will fail"
                        );
                    }
                    let _ = fresh.close().await;
                }
                Err(e) => tracing::debug!(store = %describe, error = %e, "cannot take the run slot yet"),
            },
            Err(e) => tracing::debug!(store = %describe, error = %e, "cannot reconnect yet"),
        }
    };
    if !lost {
        // Unlock first (answered: the lock is free when this returns), then close.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext(coalesce(current_schema(), '')))")
            .bind(RUN_LOCK_CLASS)
            .execute(&mut conn)
            .await;
    }
    let _ = conn.close().await;
    if signalled {
        store.inner.releasing.finished();
    }
}

async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(coalesce(current_schema(), '')))")
        .bind(RUN_LOCK_CLASS)
        .fetch_one(conn)
        .await
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    async fn acquire_active(&self) -> Result<ActiveRunGuard, StoreError> {
        self.ready().await?;
        self.inner.releasing.wait().await;
        let what = "taking the run slot";
        let mut conn = PgConnection::connect_with(&self.inner.options).await.map_err(self.sql(what))?;
        let mut tries = 0;
        loop {
            if try_lock(&mut conn).await.map_err(self.sql(what))? {
                break;
            }
            tries += 1;
            if tries >= BUSY_TRIES {
                let _ = conn.close().await;
                return Err(StoreError::Busy { active_run_id: self.active_run_id().await? });
            }
            tokio::time::sleep(BUSY_PAUSE).await;
        }
        // Nobody held the lock, so a run still marked running/stopping lost its process.
        let orphans: Result<Vec<RunId>, _> = sqlx::query_scalar(
            "UPDATE pipeline_runs
             SET status = 'failed', error = $1, finished_at = now(), updated_at = now()
             WHERE status IN ('running', 'stopping')
             RETURNING id",
        )
        .bind(ORPHANED_RUN_ERROR)
        .fetch_all(&mut conn)
        .await;
        let orphans = match orphans {
            Ok(ids) => ids,
            Err(e) => {
                let _ = conn.close().await;
                return Err(self.sql("marking runs left by a dead process as failed")(e));
            }
        };
        for id in orphans {
            tracing::warn!(run_id = id, "run {id} was left running by a process that ended; marked failed (resumable)");
        }
        let (tx, rx) = oneshot::channel();
        tokio::spawn(keep_lock(self.clone(), conn, rx));
        let guard: ActiveRunGuard = Box::new(PostgresRunLock {
            release: Some(tx),
            releasing: self.inner.releasing.clone(),
            store: self.inner.describe.clone(),
        });
        Ok(guard)
    }

    async fn create_run(&self, new: &NewRun) -> Result<RunInfo, StoreError> {
        self.ready().await?;
        let row = sqlx::query(concat!(
            "INSERT INTO pipeline_runs (pipeline, status, phase, config, date_from, date_to)
             VALUES ($1, 'running', $2, $3, $4, $5)
             RETURNING ",
            run_columns!()
        ))
        .bind(&new.pipeline)
        .bind(&new.phase)
        .bind(Json(&new.config))
        .bind(new.window.as_ref().map(|w| &w.from))
        .bind(new.window.as_ref().map(|w| &w.to))
        .fetch_one(self.pool())
        .await
        .map_err(self.sql(format!("creating a run of pipeline {:?}", new.pipeline)))?;
        self.parse_run(&row)
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunInfo>, StoreError> {
        self.ready().await?;
        self.read_run(id).await
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunInfo>, StoreError> {
        self.ready().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = sqlx::query(concat!("SELECT ", run_columns!(), " FROM pipeline_runs ORDER BY id DESC LIMIT $1"))
            .bind(limit)
            .fetch_all(self.pool())
            .await
            .map_err(self.sql("listing runs"))?;
        rows.iter().map(|r| self.parse_run(r)).collect()
    }

    async fn set_status(&self, id: RunId, status: RunStatus, error: Option<&str>) -> Result<(), StoreError> {
        self.ready().await?;
        let what = format!("setting run {id} to {status}");
        let error = error.map(scrub);
        let result =
            match status {
                // Back to running (resume): the previous end and its error no longer apply.
                RunStatus::Running => sqlx::query(
                    "UPDATE pipeline_runs SET status = 'running', error = NULL, finished_at = NULL, updated_at = now()
                     WHERE id = $1",
                )
                .bind(id)
                .execute(self.pool())
                .await,
                // Stopping only applies to an active run: a late request must not reopen a finished one.
                RunStatus::Stopping => {
                    sqlx::query(
                        "UPDATE pipeline_runs SET status = 'stopping', error = $2, updated_at = now()
                     WHERE id = $1 AND status IN ('running', 'stopping')",
                    )
                    .bind(id)
                    .bind(&error)
                    .execute(self.pool())
                    .await
                }
                RunStatus::Stopped | RunStatus::Failed | RunStatus::Completed => {
                    sqlx::query(
                        "UPDATE pipeline_runs SET status = $2, error = $3, finished_at = now(), updated_at = now()
                     WHERE id = $1",
                    )
                    .bind(id)
                    .bind(status.as_str())
                    .bind(&error)
                    .execute(self.pool())
                    .await
                }
            };
        let changed = result.map_err(self.sql(&what))?.rows_affected();
        if changed == 0 {
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pipeline_runs WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await
                .map_err(self.sql(&what))?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("run {id}")));
            }
            tracing::debug!(run_id = id, "run {id} is no longer active; not marking it stopping");
        }
        Ok(())
    }

    async fn commit(&self, run: RunId, batch: &CommitBatch, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let setup = self.ready().await?;
        let (n_docs, n_failures) = (batch.documents.len(), batch.failures.len());
        let mut what = format!("commit of run {run} ({n_docs} documents, {n_failures} failures");
        if !batch.updates.is_empty() || !batch.results.is_empty() {
            what.push_str(&format!(", {} document updates, {} results", batch.updates.len(), batch.results.len()));
        }
        what.push(')');
        let vector = setup.storage == EmbeddingStorage::Vector;
        let rows = encode_batch(batch, vector).map_err(|e| self.other(format!("{what}: {e}")))?;
        let checkpoint_value = serde_json::to_value(checkpoint)
            .map_err(|e| self.other(format!("{what}: cannot encode the checkpoint as JSON: {e}")))?;
        let counts = serde_json::to_value(checkpoint.counts)
            .map_err(|e| self.other(format!("{what}: cannot encode the checkpoint counts as JSON: {e}")))?;

        // The previous attempt of this very commit lost its connection at COMMIT: did it land?
        let retrying = {
            let uncertain = self.inner.uncertain.lock().unwrap_or_else(PoisonError::into_inner);
            uncertain.as_ref().is_some_and(|(r, cp)| *r == run && *cp == checkpoint_value)
        };
        if retrying {
            let landed = self.checkpoint_is(run, &checkpoint_value).await?;
            *self.inner.uncertain.lock().unwrap_or_else(PoisonError::into_inner) = None;
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
        self.fix_dimensions(setup, [doc_dimension, rows.chunks.embedding.first_dimension()]).await?;
        match self
            .write_commit(
                setup,
                run,
                &rows,
                &CheckpointJson { value: &checkpoint_value, counts: &counts, phase: &checkpoint.phase },
                &what,
            )
            .await
        {
            Ok(()) => {
                *self.inner.uncertain.lock().unwrap_or_else(PoisonError::into_inner) = None;
                Ok(())
            }
            Err(CommitError::Before(e)) => Err(e),
            Err(CommitError::Uncertain(e)) => {
                *self.inner.uncertain.lock().unwrap_or_else(PoisonError::into_inner) = Some((run, checkpoint_value));
                Err(e)
            }
        }
    }

    async fn memo_lookup(
        &self,
        stage: &str,
        fingerprint: &str,
        keys: &[MemoKey],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.ready().await?;
        let sources: Vec<&str> = keys.iter().map(|k| k.source.as_str()).collect();
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        let hashes: Vec<&str> = keys.iter().map(|k| k.content_hash.as_str()).collect();
        let values: Vec<Option<Value>> = sqlx::query_scalar(
            "SELECT r.value
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
        .fetch_all(self.pool())
        .await
        .map_err(self.sql("reading stored stage results"))?;
        Ok(values)
    }

    async fn scan_documents(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        self.ready().await?;
        let what = format!("reading the stored documents of {source}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Byte order, as SQLite's, a range of the documents_scan index (two
        // texts: with `$2 IS NULL OR`, a generic plan could not use the range).
        let query = match after {
            Some(after) => sqlx::query(SCAN_DOCUMENTS_AFTER).bind(source).bind(limit).bind(after),
            None => sqlx::query(SCAN_DOCUMENTS_FIRST).bind(source).bind(limit),
        };
        let rows = query.fetch_all(self.pool()).await.map_err(self.sql(&what))?;
        rows.iter().map(|row| self.document_of(row, source, &what)).collect()
    }

    async fn phase_results(&self, run: RunId, kind: &str) -> Result<Vec<PhaseResult>, StoreError> {
        self.ready().await?;
        let what = format!("reading the {kind} results of run {run}");
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT key, value FROM run_results WHERE run_id = $1 AND kind = $2 ORDER BY key COLLATE \"C\"",
        )
        .bind(run)
        .bind(kind)
        .fetch_all(self.pool())
        .await
        .map_err(self.sql(&what))?;
        Ok(rows.into_iter().map(|(key, value)| PhaseResult { kind: kind.to_owned(), key, value }).collect())
    }

    async fn failures(&self, run: RunId) -> Result<Vec<FailureRow>, StoreError> {
        self.ready().await?;
        let what = format!("reading the failures of run {run}");
        let rows = sqlx::query(concat!(
            "SELECT id, run_id, source, record_id, stage, error_type, error, retryable, retry_count, payload,
                    has_record, ",
            ts!("created_at"),
            ", resolved_by FROM failures WHERE run_id = $1 ORDER BY id"
        ))
        .bind(run)
        .fetch_all(self.pool())
        .await
        .map_err(self.sql(&what))?;
        rows.iter()
            .map(|r| {
                let get = |e: sqlx::Error| self.other(format!("{what}: {e}"));
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

    async fn resolve_failures(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
        self.ready().await?;
        let done = sqlx::query(
            "UPDATE failures SET resolved_by = $2
             WHERE run_id = $1 AND has_record AND resolved_by IS NULL
               AND EXISTS (SELECT 1 FROM documents d
                           WHERE d.source = failures.source AND d.id = failures.record_id AND d.run_id = $2)
               AND NOT EXISTS (SELECT 1 FROM failures again
                               WHERE again.run_id = $2 AND again.source = failures.source
                                 AND again.record_id = failures.record_id)",
        )
        .bind(run)
        .bind(retry_run)
        .execute(self.pool())
        .await
        .map_err(self.sql(format!("resolving the failures of run {run} stored by run {retry_run}")))?;
        Ok(done.rows_affected())
    }
}

/// `url` with its database replaced by `database` (the path of the URL).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Creates a new, empty database named `prefix` plus a unique suffix on the
/// server of `admin_url` (whose user may create databases), owned by `owner`
/// when given; returns its name and URL. For tests and benchmarks, which
/// each take a database of their own.
pub async fn create_scratch_database(
    admin_url: &str,
    prefix: &str,
    owner: Option<&str>,
) -> Result<(String, String), StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let name = format!("{prefix}_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') || name.len() > 63 {
        return Err(StoreError::Other(format!("{name:?} is not a usable database name (a-z, 0-9, _; 63 at most)")));
    }
    let describe = format!("postgres:{}", redact_url(admin_url));
    let fail = |e: sqlx::Error| {
        let message = format!("{describe}: creating database {name}: {}", error_text(&e));
        if is_transient(&e) { StoreError::Unavailable(message) } else { StoreError::Other(message) }
    };
    let options = PgConnectOptions::from_str(admin_url)
        .map_err(|e| StoreError::Other(format!("{describe}: not a valid PostgreSQL URL: {e}")))?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(fail)?;
    let owner_clause = match owner {
        Some(owner) if owner.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => format!(" OWNER {owner}"),
        Some(owner) => return Err(StoreError::Other(format!("{owner:?} is not a usable role name"))),
        None => String::new(),
    };
    let created =
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}{owner_clause}"))).execute(&mut conn).await;
    let _ = conn.close().await;
    created.map_err(fail)?;
    Ok((name.clone(), url_with_database(admin_url, &name)))
}

/// Drops a database made by [`create_scratch_database`], closing its connections.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(StoreError::Other(format!("{name:?} is not a database this would drop")));
    }
    let describe = format!("postgres:{}", redact_url(admin_url));
    let fail = |e: sqlx::Error| StoreError::Other(format!("{describe}: dropping database {name}: {}", error_text(&e)));
    let options = PgConnectOptions::from_str(admin_url)
        .map_err(|e| StoreError::Other(format!("{describe}: not a valid PostgreSQL URL: {e}")))?;
    let mut conn = PgConnection::connect_with(&options).await.map_err(fail)?;
    let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    dropped.map(|_| ()).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Record;
    use sluice_core::store::{DocumentUpdate, MemoEntry};

    fn doc(id: &str, text: &str) -> Document {
        Document::from_record(Record::new("s", id, text))
    }

    #[test]
    fn repeated_documents_are_written_once_with_their_last_version_and_counted() {
        let mut second = doc("a", "second");
        second.embedding = Some(vec![1.0, 2.0]);
        let batch = CommitBatch {
            documents: vec![doc("a", "first"), doc("b", "b"), second, doc("a", "third")],
            ..CommitBatch::default()
        };
        let rows = encode_batch(&batch, false).unwrap();
        assert_eq!(rows.docs.id, ["a", "b"]);
        assert_eq!(rows.docs.text, ["third", "b"]);
        assert_eq!(rows.docs.writes, [3, 1]);
        assert!(rows.docs.embedding.flat.is_empty(), "the last version has no embedding");
    }

    #[test]
    fn embeddings_are_one_flat_array_with_offsets() {
        let mut a = doc("a", "a");
        a.embedding = Some(vec![1.0, 2.0, 3.0]);
        let mut c = doc("c", "c");
        c.embedding = Some(vec![]);
        let mut d = doc("d", "d");
        d.embedding = Some(vec![4.0, 5.0, 6.0]);
        let batch = CommitBatch { documents: vec![a, doc("b", "b"), c, d], ..CommitBatch::default() };
        let rows = encode_batch(&batch, false).unwrap();
        let e = &rows.docs.embedding;
        assert_eq!(e.flat, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(e.offset, [Some(0), None, Some(3), Some(3)]);
        assert_eq!(e.len, [Some(3), None, Some(0), Some(3)]);
        assert_eq!(e.first_dimension(), Some(3));
        let rows = encode_batch(&batch, true).unwrap();
        assert_eq!(rows.docs.embedding.len, [Some(3), None, None, Some(3)], "no empty vector in vector mode");
    }

    #[test]
    fn nul_characters_are_refused_in_documents_and_scrubbed_in_failures() {
        let batch = CommitBatch { documents: vec![doc("a", "nul\0here")], ..CommitBatch::default() };
        let err = encode_batch(&batch, false).err().unwrap();
        assert!(err.contains("document (s, a)") && err.contains("NUL"), "{err}");
        let bad_fields = Document::from_record(Record::new("s", "b", "ok").with_field("k", "x\0y"));
        let batch = CommitBatch { documents: vec![bad_fields], ..CommitBatch::default() };
        assert!(encode_batch(&batch, false).err().unwrap().contains("jsonb"));
        let failure = Failure {
            source: "s".into(),
            record_id: "r".into(),
            stage: "source".into(),
            error_type: "parse".into(),
            error: "bad".into(),
            retryable: false,
            retry_count: 0,
            payload: "raw\0line".into(),
            has_record: false,
        };
        let batch = CommitBatch { failures: vec![failure], ..CommitBatch::default() };
        assert_eq!(encode_batch(&batch, false).unwrap().failures.payload, ["raw\u{FFFD}line"]);
    }

    #[test]
    fn repeated_memos_keep_the_last() {
        let memo = |value: i64| MemoEntry {
            source: "s".into(),
            id: "a".into(),
            stage: "classify".into(),
            fingerprint: "f".into(),
            content_hash: "h".into(),
            value: serde_json::json!(value),
        };
        let batch = CommitBatch { memos: vec![memo(1), memo(2)], ..CommitBatch::default() };
        assert_eq!(encode_batch(&batch, false).unwrap().memos.value, ["2"]);
    }

    #[test]
    fn repeated_updates_and_results_keep_the_last() {
        let update = |id: &str, embedding: Option<Vec<f32>>, n: i64| DocumentUpdate {
            source: "s".into(),
            id: id.into(),
            embedding,
            annotations: serde_json::json!({ "n": n }).as_object().cloned().unwrap(),
        };
        let result = |key: &str, value: i64| PhaseResult { kind: "theme".into(), key: key.into(), value: value.into() };
        let batch = CommitBatch {
            updates: vec![update("a", Some(vec![1.0, 2.0]), 1), update("b", None, 2), update("a", Some(vec![3.0]), 3)],
            results: vec![result("t1", 1), result("t0", 2), result("t1", 3)],
            ..CommitBatch::default()
        };
        let rows = encode_batch(&batch, true).unwrap();
        let u = &rows.updates;
        assert_eq!(u.id, ["a", "b"]);
        assert_eq!(u.annotations, [r#"{"n":3}"#, r#"{"n":2}"#]);
        assert_eq!(
            (u.embedding.flat.as_slice(), u.embedding.len.as_slice()),
            ([3.0].as_slice(), [Some(1), None].as_slice())
        );
        assert_eq!(rows.results.key, ["t1", "t0"]);
        assert_eq!(rows.results.value, ["3", "2"]);
        let nul = CommitBatch {
            results: vec![PhaseResult { value: "a\0b".into(), ..result("t", 0) }],
            ..CommitBatch::default()
        };
        assert!(encode_batch(&nul, false).err().unwrap().contains("the theme result t"));
    }

    #[test]
    fn transient_errors_are_connection_trouble_only() {
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let err = PostgresStore::connect_lazy("postgres://u:hunter2@h:notaport/db").unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("u:***@h"), "{err}");
    }

    #[test]
    fn database_urls() {
        assert_eq!(url_with_database("postgres://u:p@h:5/postgres", "t1"), "postgres://u:p@h:5/t1");
        assert_eq!(url_with_database("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(url_with_database("postgresql://h/db?sslmode=disable", "t1"), "postgresql://h/t1?sslmode=disable");
    }

    #[test]
    fn sql_texts_are_well_formed() {
        assert!(UPSERT_DOCUMENTS_VECTOR.contains("u.elen]::vector END"), "{UPSERT_DOCUMENTS_VECTOR}");
        assert!(INSERT_CHUNKS_REAL.contains("($8::real[])[u.eoff + 1 : u.eoff + u.elen] END"), "{INSERT_CHUNKS_REAL}");
        assert!(run_columns!().contains("to_char(finished_at AT TIME ZONE 'UTC'"));
        assert!(
            UPDATE_DOCUMENTS_VECTOR.contains("COALESCE(CASE WHEN u.elen IS NULL THEN NULL ELSE ($6::real[])[u.eoff + 1 : u.eoff + u.elen]::vector END, d.embedding)"),
            "{UPDATE_DOCUMENTS_VECTOR}"
        );
        assert!(
            SCAN_DOCUMENTS_AFTER.contains("WHERE source = $1 AND id COLLATE \"C\" > $3 ORDER BY"),
            "{SCAN_DOCUMENTS_AFTER}"
        );
    }
}
