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

mod commit;
mod deleted;
pub mod distributed;
mod encode;
mod errors;
mod high_water;
mod lock;
mod pool;
mod read;
mod runs;
mod schema;
mod sql;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::store::{
    ActiveRunGuard, CommitBatch, FailureRow, MemoEntry, MemoKey, NewRun, PhaseResult, RunId, RunInfo, RunStatus, Store,
};
use sluice_core::{Checkpoint, Chunk, CostLedger, Document, HighWaterMark, StoreError};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::OnceCell;

use self::commit::Uncertain;
use self::errors::{describe, redact_error, serialize_redacted};
use self::lock::Releasing;
use self::pool::Db;
use self::schema::Setup;
use super::{InspectStore, StoreKind, StoredDocument};
use crate::ConfigError;

pub use self::lock::PostgresRunLock;
pub use self::schema::EmbeddingStorage;
#[cfg(any(test, feature = "testing"))]
pub use self::testing::{create_scratch_database, drop_database, url_with_database};

/// Configuration of the PostgreSQL store, as written in a pipeline file.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (libpq-style options in
    /// the query string). Saved with a run's settings with its password hidden.
    #[serde(serialize_with = "serialize_redacted")]
    pub url: String,
}

#[async_trait]
impl StoreKind for PostgresConfig {
    fn open(&self) -> Result<Arc<dyn InspectStore>, ConfigError> {
        let store = PostgresStore::connect_lazy(&self.url).map_err(|e| ConfigError(e.to_string()))?;
        Ok(Arc::new(store))
    }

    async fn check(&self) -> Result<Arc<dyn InspectStore>, ConfigError> {
        let store = PostgresStore::open(&self.url).await.map_err(|e| ConfigError(e.to_string()))?;
        Ok(Arc::new(store))
    }
}

/// A [`Store`] in a PostgreSQL database. Cloning shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    setup: OnceCell<Setup>,
    uncertain: Uncertain,
    releasing: Arc<Releasing>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").field("url", &self.inner.db.describe).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Parses `url` and prepares a pool without connecting: the first call
    /// connects and sets the schema up. For callers that cannot wait here.
    pub fn connect_lazy(url: &str) -> Result<PostgresStore, StoreError> {
        Self::connect_lazy_with(url, &[])
    }

    /// [`Self::connect_lazy`] with session settings for every connection
    /// (a distributed worker's `idle_in_transaction_session_timeout`).
    pub fn connect_lazy_with(url: &str, settings: &[(&str, &str)]) -> Result<PostgresStore, StoreError> {
        let describe = describe(url.trim());
        let options = PgConnectOptions::from_str(url.trim()).map_err(|e| {
            let message = format!("{describe}: not a valid PostgreSQL URL: {}", redact_error(&e.to_string(), url));
            StoreError::Schema { message, source: None }
        })?;
        let options = options.application_name("sluice").options(settings.iter().copied());
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                db: Db::new(describe, options),
                setup: OnceCell::new(),
                uncertain: Uncertain::default(),
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
        self.inner.db.close().await;
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The schema, set up by the first call.
    async fn ready(&self) -> Result<&Setup, StoreError> {
        self.inner.setup.get_or_try_init(|| schema::set_up(&self.inner.db)).await
    }
}

#[async_trait]
impl InspectStore for PostgresStore {
    async fn document_count(&self) -> Result<u64, StoreError> {
        self.ready().await?;
        read::count(
            self.db(),
            "SELECT count(*) FROM documents d
             WHERE NOT EXISTS (SELECT 1 FROM deleted_documents t WHERE t.source = d.source AND t.id = d.id)",
            "counting documents",
        )
        .await
    }

    async fn chunk_count(&self) -> Result<u64, StoreError> {
        self.ready().await?;
        read::count(self.db(), "SELECT count(*) FROM chunks", "counting chunks").await
    }

    /// The stored document `(source, id)`, if there is one.
    async fn get_document(&self, source: &str, id: &str) -> Result<Option<StoredDocument>, StoreError> {
        self.ready().await?;
        read::get_document(self.db(), source, id).await
    }

    /// The stored chunks of document `(source, doc_id)`, in order.
    async fn get_chunks(&self, source: &str, doc_id: &str) -> Result<Vec<Chunk>, StoreError> {
        self.ready().await?;
        read::get_chunks(self.db(), source, doc_id).await
    }

    /// The run that holds the store's run slot right now: the newest
    /// `running`/`stopping` run, but only while some session holds the
    /// advisory lock, so a run left `running` by a dead process is not
    /// reported as active.
    async fn active_run(&self) -> Result<Option<RunInfo>, StoreError> {
        self.ready().await?;
        if !lock::held(self.db(), &self.inner.releasing).await? {
            return Ok(None);
        }
        match runs::active_run_id(self.db()).await? {
            0 => Ok(None),
            id => runs::read_run(self.db(), id).await,
        }
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.inner.db.describe.clone()
    }

    async fn acquire_active(&self) -> Result<ActiveRunGuard, StoreError> {
        self.ready().await?;
        lock::acquire(self.db(), &self.inner.releasing).await
    }

    async fn run_slot_held(&self) -> Result<Option<bool>, StoreError> {
        self.ready().await?;
        lock::held(self.db(), &self.inner.releasing).await.map(Some)
    }

    async fn create_run(&self, new: &NewRun) -> Result<RunInfo, StoreError> {
        self.ready().await?;
        runs::create_run(self.db(), new).await
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunInfo>, StoreError> {
        self.ready().await?;
        runs::read_run(self.db(), id).await
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunInfo>, StoreError> {
        self.ready().await?;
        runs::list_runs(self.db(), limit).await
    }

    async fn set_status(&self, id: RunId, status: RunStatus, error: Option<&str>) -> Result<(), StoreError> {
        self.ready().await?;
        runs::set_status(self.db(), id, status, error).await
    }

    async fn commit(&self, run: RunId, batch: &CommitBatch, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let setup = self.ready().await?;
        commit::commit(self.db(), setup, &self.inner.uncertain, run, batch, checkpoint, None).await
    }

    async fn write_ahead(&self, run: RunId, memos: &[MemoEntry], cost: &CostLedger) -> Result<(), StoreError> {
        self.ready().await?;
        commit::write_ahead(self.db(), run, memos, cost, None).await
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
        read::memo_lookup(self.db(), stage, fingerprint, keys).await
    }

    async fn unchanged(&self, fingerprint: &str, keys: &[MemoKey]) -> Result<Vec<bool>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.ready().await?;
        read::unchanged(self.db(), fingerprint, keys).await
    }

    async fn holds_documents(&self) -> Result<bool, StoreError> {
        self.ready().await?;
        read::holds_documents(self.db()).await
    }

    async fn scan_documents(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        self.ready().await?;
        read::scan_documents(self.db(), source, after, limit).await
    }

    async fn count_documents(&self, source: &str) -> Result<Option<u64>, StoreError> {
        self.ready().await?;
        read::count_documents(self.db(), source).await.map(Some)
    }

    async fn deleted_ids(&self, source: &str) -> Result<Vec<String>, StoreError> {
        self.ready().await?;
        sqlx::query_scalar("SELECT id FROM deleted_documents WHERE source = $1 ORDER BY id COLLATE \"C\"")
            .bind(source)
            .fetch_all(self.db().pool())
            .await
            .map_err(self.db().sql(format!("reading the deleted documents of {source}")))
    }

    async fn phase_results(&self, run: RunId, kind: &str) -> Result<Vec<PhaseResult>, StoreError> {
        self.ready().await?;
        read::phase_results(self.db(), run, kind).await
    }

    async fn high_water_mark(&self, pipeline: &str, source: &str) -> Result<Option<HighWaterMark>, StoreError> {
        self.ready().await?;
        high_water::high_water_mark(self.db(), pipeline, source).await
    }

    async fn failures(&self, run: RunId) -> Result<Vec<FailureRow>, StoreError> {
        self.ready().await?;
        read::failures(self.db(), run).await
    }

    async fn resolve_failures(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
        self.ready().await?;
        runs::resolve_failures(self.db(), run, retry_run).await
    }

    async fn resolve_refetched(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
        self.ready().await?;
        runs::resolve_refetched(self.db(), run, retry_run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let err = PostgresStore::connect_lazy("postgres://u:hunter2@h:notaport/db").unwrap_err().to_string();
        assert!(!err.contains("hunter2") && err.contains("u:***@h"), "{err}");
    }
}
