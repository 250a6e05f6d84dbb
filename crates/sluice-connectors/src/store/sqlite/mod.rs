//! The SQLite store: one database file holding runs, documents, chunks and
//! failures, with every batch and its checkpoint committed in one transaction.
//!
//! One connection behind a mutex; every call runs on tokio's blocking pool.
//! WAL with `synchronous=NORMAL`: a commit that returned is durable against a
//! crash of the process, and an interrupted one leaves nothing of its batch.
//! The single run slot is an OS file lock on `<db path>.lock`, so the kernel
//! frees it when the holding process dies, however it dies.

mod commit;
mod deleted;
mod errors;
mod high_water;
mod lock;
mod read;
mod runs;
mod schema;

use std::fmt;
use std::fs::TryLockError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::store::{
    ActiveRunGuard, CommitBatch, Failure, FailureRow, MemoEntry, MemoKey, NewRun, RunId, RunInfo, RunStatus, Store,
};
use sluice_core::{Checkpoint, Chunk, CostLedger, Document, HighWaterMark, PhaseResult, StoreError};

use self::commit::{
    DOCUMENTS_PER_PIECE, DocRow, PIECES_AHEAD, Written, apply_updates, encode_documents, encode_memos, encode_updates,
    insert_failures, raised_cost, upsert_memos, upsert_results, write_batch,
};
use self::deleted::{NOT_DELETED, apply_deletions, deleted_ids, lift_tombstones};
use self::errors::{classify_setup, json, open_hint, sql};
use self::lock::open_lock_file;
use self::read::{ScannedRow, count};
use self::runs::{RUN_COLUMNS, RawRun, active_run_id, read_run};
use self::schema::{configure, configure_reader, migrate};
use super::{
    InspectStore, ORPHANED_EMPTY_RUN_ERROR, ORPHANED_RUN_ERROR, RowFacts, StoreKind, StoredDocument, contract_error,
    database_error, decode_error, embedding_from_bytes, named, now_rfc3339, schema_error,
};
use crate::ConfigError;
use crate::store::memo_vectors::join_vectors;

pub use self::lock::SqliteRunLock;

/// Configuration of the SQLite store, as written in a pipeline file.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file. It is created if missing; its directory must exist.
    pub path: PathBuf,
}

#[async_trait]
impl StoreKind for SqliteConfig {
    fn open(&self) -> Result<Arc<dyn InspectStore>, ConfigError> {
        let store = SqliteStore::open(&self.path).map_err(|e| ConfigError(e.to_string()))?;
        Ok(Arc::new(store))
    }
}

/// A [`Store`] in one SQLite file. Cloning shares the connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    lock_path: PathBuf,
    conn: Mutex<Connection>,
    /// A second, read-only connection for the lookups a batch makes before
    /// its stages (unchanged documents, memos): in WAL mode it reads while the
    /// writer commits the batch before, instead of queueing behind it.
    reader: Mutex<Connection>,
}

/// What a commit hands its writer: documents, then the end of them.
enum Piece {
    Documents(Vec<DocRow>),
    End,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating the file if needed) the database at `path`, sets it up
    /// (WAL, `synchronous=NORMAL`, busy timeout) and applies the migrations it
    /// lacks. The directory must exist and be writable; it is never created.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |what: String| schema_error(format!("cannot open SQLite store at {}: {what}", path.display()));
        if path.as_os_str().is_empty() {
            return Err(schema_error("cannot open SQLite store: the path is empty"));
        }
        if path.as_os_str() == ":memory:" {
            return Err(fail(
                "an in-memory database would lose every run and checkpoint at exit; give a file path".into(),
            ));
        }
        if path.is_dir() {
            return Err(fail("it is a directory; give the path of a database file inside it".into()));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(fail(format!("{} is not a directory", dir.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(fail(format!("the directory {} does not exist (create it first)", dir.display())));
            }
            Err(e) => return Err(fail(format!("cannot access the directory {}: {e}", dir.display()))),
        }

        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open_error = |e: rusqlite::Error| {
            // rusqlite ends "unable to open database file" with the path: it is already named once.
            let text = e.to_string();
            let text = text.strip_suffix(&format!(": {}", path.display())).unwrap_or(&text);
            let message = format!("cannot open SQLite store at {}: {text}{}", path.display(), open_hint(&e));
            classify_setup(e, message)
        };
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        configure(&conn).map_err(open_error)?;
        migrate(&mut conn).map_err(|e| {
            let message = format!("cannot set up SQLite store at {}: {e}{}", path.display(), open_hint(&e));
            classify_setup(e, message)
        })?;

        let read_only = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let reader = Connection::open_with_flags(path, read_only).map_err(open_error)?;
        configure_reader(&reader).map_err(open_error)?;

        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                lock_path: PathBuf::from(lock),
                conn: Mutex::new(conn),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The file whose OS lock is the run slot (`<db path>.lock`).
    pub fn lock_path(&self) -> &Path {
        &self.inner.lock_path
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.call_on(|inner| &inner.conn, f).await
    }

    /// Runs `f` with the read-only connection on the blocking pool: for reads
    /// that must not wait for a commit in progress.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.call_on(|inner| &inner.reader, f).await
    }

    async fn call_on<T, F>(&self, which: fn(&Inner) -> &Mutex<Connection>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = which(&inner).lock().unwrap_or_else(PoisonError::into_inner);
            if !conn.is_autocommit() {
                // Only after a panic in the middle of a transaction: never build on its leftovers.
                conn.execute_batch("ROLLBACK").map_err(sql("rolling back an abandoned transaction"))?;
            }
            f(&mut conn)
        })
        .await;
        match joined {
            Ok(result) => result.map_err(|e| self.with_path(e)),
            Err(e) => Err(database_error(format!("{}: the database task ended abnormally: {e}", self.describe()), e)),
        }
    }

    fn with_path(&self, error: StoreError) -> StoreError {
        named(&self.describe(), error)
    }

    /// Resolves `run`'s open failures (with or without a record) whose record `retry_run` stored and did not fail again.
    async fn resolve_stored(
        &self,
        run: RunId,
        retry_run: RunId,
        has_record: bool,
        what: String,
    ) -> Result<u64, StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE failures SET resolved_by = ?2
                 WHERE run_id = ?1 AND has_record = ?3 AND resolved_by IS NULL
                   AND EXISTS (SELECT 1 FROM documents d
                               WHERE d.source = failures.source AND d.id = failures.record_id AND d.run_id = ?2)
                   AND NOT EXISTS (SELECT 1 FROM failures again
                                   WHERE again.run_id = ?2 AND again.source = failures.source
                                     AND again.record_id = failures.record_id)",
            )
            .and_then(|mut stmt| stmt.execute(params![run, retry_run, has_record]))
            .map(|n| n as u64)
            .map_err(sql(what))
        })
        .await
    }
}

#[async_trait]
impl InspectStore for SqliteStore {
    async fn document_count(&self) -> Result<u64, StoreError> {
        self.call(|conn| {
            count(conn, &format!("SELECT count(*) FROM documents d WHERE {NOT_DELETED}"))
                .map_err(sql("counting documents"))
        })
        .await
    }

    async fn chunk_count(&self) -> Result<u64, StoreError> {
        self.call(|conn| count(conn, "SELECT count(*) FROM chunks").map_err(sql("counting chunks"))).await
    }

    /// The stored document `(source, id)`, if there is one.
    async fn get_document(&self, source: &str, id: &str) -> Result<Option<StoredDocument>, StoreError> {
        let (source, id) = (source.to_owned(), id.to_owned());
        self.call(move |conn| {
            let what = || format!("reading document ({source}, {id})");
            let row = conn
                .prepare_cached(
                    "SELECT id, text, fields, updated_at, content_hash, classification, embedding, annotations,
                            category, run_id, write_count, stored_at,
                            (SELECT count(*) FROM chunks WHERE chunks.source = documents.source
                                                           AND chunks.doc_id = documents.id)
                     FROM documents WHERE source = ?1 AND id = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![source, id], |row| {
                        let facts = RowFacts {
                            category: row.get(8)?,
                            run_id: row.get(9)?,
                            write_count: row.get(10)?,
                            stored_at: row.get(11)?,
                            chunks: row.get(12)?,
                        };
                        Ok((ScannedRow::read(row)?, facts))
                    })
                    .optional()
                })
                .map_err(sql(what()))?;
            let Some((row, facts)) = row else { return Ok(None) };
            Ok(Some(StoredDocument::from_row(row.into_document(&source)?, facts)))
        })
        .await
    }

    /// The stored chunks of document `(source, doc_id)`, in order.
    async fn get_chunks(&self, source: &str, doc_id: &str) -> Result<Vec<Chunk>, StoreError> {
        let (source, doc_id) = (source.to_owned(), doc_id.to_owned());
        self.call(move |conn| {
            let what = || format!("reading the chunks of document ({source}, {doc_id})");
            let raw: Vec<(u32, i64, String, Option<Vec<u8>>)> = conn
                .prepare_cached(
                    "SELECT idx, byte_offset, text, embedding FROM chunks
                     WHERE source = ?1 AND doc_id = ?2 ORDER BY idx",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![source, doc_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                        .collect()
                })
                .map_err(sql(what()))?;
            raw.into_iter()
                .map(|(index, offset, text, embedding)| {
                    let bad = |e: String| decode_error(format!("{}: chunk {index}: {e}", what()));
                    Ok(Chunk {
                        index,
                        offset: usize::try_from(offset).map_err(|_| bad(format!("negative offset {offset}")))?,
                        text,
                        embedding: embedding.map(|b| embedding_from_bytes(&b)).transpose().map_err(bad)?,
                    })
                })
                .collect()
        })
        .await
    }

    /// The run that holds the store's run slot right now: the newest
    /// `running`/`stopping` run, but only while some process holds the lock,
    /// so a run left `running` by a dead process is not reported as active.
    /// (See [`lock::held`].)
    async fn active_run(&self) -> Result<Option<RunInfo>, StoreError> {
        let lock_path = self.inner.lock_path.clone();
        self.call(move |conn| {
            if !lock::held(&lock_path)? {
                return Ok(None);
            }
            match active_run_id(conn)? {
                0 => Ok(None),
                id => read_run(conn, id),
            }
        })
        .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
    }

    async fn run_slot_held(&self) -> Result<Option<bool>, StoreError> {
        let lock_path = self.inner.lock_path.clone();
        self.call(move |_| lock::held(&lock_path).map(Some)).await
    }

    async fn acquire_active(&self) -> Result<ActiveRunGuard, StoreError> {
        let lock_path = self.inner.lock_path.clone();
        self.call(move |conn| {
            let file = open_lock_file(&lock_path)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(StoreError::Busy { active_run_id: active_run_id(conn)? });
                }
                Err(TryLockError::Error(e)) => {
                    return Err(database_error(
                        format!("cannot lock the run lock file {}: {e}", lock_path.display()),
                        e,
                    ));
                }
            }
            // Nobody held the lock, so a run still marked running/stopping lost its process.
            let now = now_rfc3339();
            let orphans: Vec<RunId> = conn
                .prepare_cached(
                    "UPDATE pipeline_runs
                     SET status = 'failed', finished_at = ?2, updated_at = ?2,
                         error = CASE WHEN checkpoint IS NULL
                                        OR (COALESCE(json_extract(checkpoint, '$.batches'), 0) = 0
                                            AND COALESCE(json_array_length(checkpoint, '$.phases_done'), 0) = 0)
                                      THEN ?3 ELSE ?1 END
                     WHERE status IN ('running', 'stopping')
                     RETURNING id",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![ORPHANED_RUN_ERROR, now, ORPHANED_EMPTY_RUN_ERROR], |r| r.get(0))?.collect()
                })
                .map_err(sql("marking runs left by a dead process as failed"))?;
            for id in orphans {
                tracing::warn!(
                    run_id = id,
                    "run {id} was left running by a process that ended; marked failed (resumable)"
                );
            }
            let guard: ActiveRunGuard = Box::new(SqliteRunLock { _file: file, path: lock_path });
            Ok(guard)
        })
        .await
    }

    async fn create_run(&self, new: &NewRun) -> Result<RunInfo, StoreError> {
        let config = json(&new.config, "the run config")?;
        let new = new.clone();
        self.call(move |conn| {
            let now = now_rfc3339();
            let id: RunId = conn
                .prepare_cached(
                    "INSERT INTO pipeline_runs (pipeline, status, phase, config, date_from, date_to, started_at,
                                                updated_at)
                     VALUES (?1, 'running', ?2, ?3, ?4, ?5, ?6, ?6)
                     RETURNING id",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            new.pipeline,
                            new.phase,
                            config,
                            new.window.as_ref().map(|w| &w.from),
                            new.window.as_ref().map(|w| &w.to),
                            now
                        ],
                        |r| r.get(0),
                    )
                })
                .map_err(sql(format!("creating a run of pipeline {:?}", new.pipeline)))?;
            read_run(conn, id)?.ok_or_else(|| contract_error(format!("run {id} vanished right after its creation")))
        })
        .await
    }

    async fn get_run(&self, id: RunId) -> Result<Option<RunInfo>, StoreError> {
        self.call(move |conn| read_run(conn, id)).await
    }

    async fn list_runs(&self, limit: usize) -> Result<Vec<RunInfo>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let raw: Vec<RawRun> = conn
                .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM pipeline_runs ORDER BY id DESC LIMIT ?1"))
                .and_then(|mut stmt| stmt.query_map([limit], RawRun::from_row)?.collect())
                .map_err(sql("listing runs"))?;
            raw.into_iter().map(RawRun::parse).collect()
        })
        .await
    }

    async fn set_status(&self, id: RunId, status: RunStatus, error: Option<&str>) -> Result<(), StoreError> {
        let error = error.map(str::to_owned);
        self.call(move |conn| {
            let now = now_rfc3339();
            let what = || format!("setting run {id} to {status}");
            let changed = match status {
                // Back to running (resume): the previous end and its error no longer apply.
                RunStatus::Running => conn
                    .prepare_cached(
                        "UPDATE pipeline_runs SET status = 'running', error = NULL, finished_at = NULL,
                                                  updated_at = ?2
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, now])),
                // Stopping only applies to an active run: a late request must not reopen a finished one.
                RunStatus::Stopping => conn
                    .prepare_cached(
                        "UPDATE pipeline_runs SET status = 'stopping', error = ?2, updated_at = ?3
                         WHERE id = ?1 AND status IN ('running', 'stopping')",
                    )
                    .and_then(|mut s| s.execute(params![id, error, now])),
                RunStatus::Stopped | RunStatus::Failed | RunStatus::Completed => conn
                    .prepare_cached(
                        "UPDATE pipeline_runs SET status = ?2, error = ?3, finished_at = ?4, updated_at = ?4
                         WHERE id = ?1",
                    )
                    .and_then(|mut s| s.execute(params![id, status.as_str(), error, now])),
            }
            .map_err(sql(what()))?;
            if changed == 0 {
                let exists = conn
                    .prepare_cached("SELECT 1 FROM pipeline_runs WHERE id = ?1")
                    .and_then(|mut s| s.exists([id]))
                    .map_err(sql(what()))?;
                if !exists {
                    return Err(StoreError::NotFound(format!("run {id}")));
                }
                tracing::debug!(run_id = id, "run {id} is no longer active; not marking it stopping");
            }
            Ok(())
        })
        .await
    }

    async fn commit(&self, run: RunId, batch: &CommitBatch, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let failures = batch.failures.clone();
        let deletions = batch.deletions.clone();
        let memos = encode_memos(&batch.memos)?;
        let updates = encode_updates(batch)?;
        let results = batch
            .results
            .iter()
            .map(|r| Ok((r.kind.clone(), r.key.clone(), json(&r.value, "a phase result")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let checkpoint_json = json(checkpoint, "the checkpoint")?;
        let counts_json = json(&checkpoint.counts, "the checkpoint counts")?;
        let phase = checkpoint.phase.clone();
        let fingerprint = batch.fingerprint.clone();
        let (n_docs, n_failures) = (batch.documents.len(), failures.len());
        // The documents reach the writer in pieces, encoded here while it
        // writes the ones before: the two overlap instead of taking turns.
        // Room for PIECES_AHEAD of them: the encoder, polled on a busy async
        // worker, seldom gets back to a full channel before the writer waits.
        let (pieces, mut arriving) = tokio::sync::mpsc::channel::<Piece>(PIECES_AHEAD);
        let write = self.call(move |conn| {
            let what = || format!("commit of run {run} ({n_docs} documents, {n_failures} failures)");
            let now = now_rfc3339();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(what()))?;
            let updated = tx
                .prepare_cached(&format!(
                    "UPDATE pipeline_runs SET checkpoint = {}, counts = ?3, phase = ?4, updated_at = ?5 WHERE id = ?1",
                    raised_cost("?2", "checkpoint")
                ))
                .and_then(|mut s| s.execute(params![run, checkpoint_json, counts_json, phase, now]))
                .map_err(sql(what()))?;
            if updated == 0 {
                return Err(StoreError::NotFound(format!("run {run} (cannot commit a batch to it)")));
            }
            loop {
                match arriving.blocking_recv() {
                    Some(Piece::Documents(docs)) => {
                        write_batch(&tx, &docs, &Written { now: &now, run, fingerprint: fingerprint.as_deref() })
                            .map_err(sql(what()))?;
                        lift_tombstones(&tx, &docs).map_err(sql(what()))?;
                    }
                    Some(Piece::End) => break,
                    // Encoding failed: the transaction rolls back; the caller reports why.
                    None => return Err(contract_error(format!("{}: the documents were not all encoded", what()))),
                }
            }
            apply_deletions(&tx, run, &deletions, &now).map_err(sql(what()))?;
            insert_failures(&tx, run, &failures, &now).map_err(sql(what()))?;
            upsert_memos(&tx, &memos, &now).map_err(sql(what()))?;
            apply_updates(&tx, &updates).map_err(sql(what()))?;
            upsert_results(&tx, run, &results, &now).map_err(sql(what()))?;
            tx.commit().map_err(sql(what()))
        });
        let encode = async move {
            for docs in batch.documents.chunks(DOCUMENTS_PER_PIECE) {
                let piece = Piece::Documents(encode_documents(docs)?);
                if pieces.send(piece).await.is_err() {
                    return Ok(()); // The writer stopped: its error is the one to report.
                }
            }
            let _ = pieces.send(Piece::End).await;
            Ok::<(), StoreError>(())
        };
        let (written, encoded) = tokio::join!(write, encode);
        encoded?;
        written
    }

    async fn write_ahead(&self, run: RunId, memos: &[MemoEntry], cost: &CostLedger) -> Result<(), StoreError> {
        let memos = encode_memos(memos)?;
        let cost = json(&serde_json::json!({ "cost": cost }), "the cost ledger")?;
        self.call(move |conn| {
            let what = || format!("storing {} results of run {run} ahead of their batch", memos.len());
            let now = now_rfc3339();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(what()))?;
            upsert_memos(&tx, &memos, &now).map_err(sql(what()))?;
            // A run with no batch committed yet gets an empty checkpoint (still
            // "nothing to resume") that holds the ledger, so a kill before its
            // first commit does not lose what was paid.
            tx.prepare_cached(&format!(
                "UPDATE pipeline_runs SET checkpoint = {} WHERE id = ?1",
                raised_cost("COALESCE(checkpoint, json_object('phase', phase))", "?2")
            ))
            .and_then(|mut s| s.execute(params![run, cost]))
            .map_err(sql(what()))?;
            tx.commit().map_err(sql(what()))
        })
        .await
    }

    async fn memo_lookup(
        &self,
        stage: &str,
        fingerprint: &str,
        keys: &[MemoKey],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        let stage = stage.to_string();
        let fingerprint = fingerprint.to_string();
        let keys = keys.to_vec();
        self.read(move |conn| {
            in_one_transaction(conn, "reading stored stage results", |tx| {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT value, vectors FROM stage_results
                         WHERE source = ?1 AND id = ?2 AND stage = ?3 AND fingerprint = ?4 AND content_hash = ?5",
                    )
                    .map_err(sql("reading stored stage results"))?;
                keys.iter()
                    .map(|k| {
                        let raw: Option<(String, Option<Vec<u8>>)> = stmt
                            .query_row(params![k.source, k.id, stage, fingerprint, k.content_hash], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })
                            .optional()
                            .map_err(sql("reading stored stage results"))?;
                        // An unreadable value is a miss: the stage simply runs again.
                        Ok(raw.and_then(|(raw, vectors)| {
                            join_vectors(serde_json::from_str(&raw).ok()?, vectors.as_deref())
                        }))
                    })
                    .collect()
            })
        })
        .await
    }

    async fn holds_documents(&self) -> Result<bool, StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT EXISTS (SELECT 1 FROM documents)", [], |r| r.get(0))
                .map_err(sql("asking whether any document is stored"))
        })
        .await
    }

    async fn unchanged(&self, fingerprint: &str, keys: &[MemoKey]) -> Result<Vec<bool>, StoreError> {
        let fingerprint = fingerprint.to_string();
        let keys = keys.to_vec();
        self.read(move |conn| {
            // By primary key, one cached statement: the whole batch in one trip to the blocking pool.
            // A marked document is not unchanged: stored again, its tombstone is lifted.
            in_one_transaction(conn, "looking up unchanged documents", |tx| {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT 1 FROM documents d
                         WHERE source = ?1 AND id = ?2 AND content_hash = ?3 AND pipeline_fingerprint = ?4
                           AND {NOT_DELETED}"
                    ))
                    .map_err(sql("looking up unchanged documents"))?;
                keys.iter()
                    .map(|k| {
                        stmt.exists(params![k.source, k.id, k.content_hash, fingerprint])
                            .map_err(sql("looking up unchanged documents"))
                    })
                    .collect()
            })
        })
        .await
    }

    async fn scan_documents(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Document>, StoreError> {
        let (source, after) = (source.to_owned(), after.map(str::to_owned));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |conn| {
            let what = || format!("reading the stored documents of {source}");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT id, text, fields, updated_at, content_hash, classification, embedding, annotations
                         FROM documents d WHERE source = ?1 AND (?2 IS NULL OR id > ?2) AND {NOT_DELETED}
                         ORDER BY id LIMIT ?3"
                ))
                .map_err(sql(what()))?;
            let rows = stmt
                .query_map(params![source, after, limit], ScannedRow::read)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql(what()))?;
            rows.into_iter().map(|row| row.into_document(&source)).collect()
        })
        .await
    }

    async fn count_documents(&self, source: &str) -> Result<Option<u64>, StoreError> {
        let source = source.to_owned();
        self.call(move |conn| {
            // Marked-deleted documents are left out, as the phases' scan leaves them out.
            let query = format!("SELECT count(*) FROM documents d WHERE d.source = ?1 AND {}", NOT_DELETED);
            conn.query_row(&query, params![source], |row| row.get::<_, i64>(0))
                .map(|n| Some(u64::try_from(n).unwrap_or(0)))
                .map_err(sql(format!("counting the stored documents of {source}")))
        })
        .await
    }

    async fn deleted_ids(&self, source: &str) -> Result<Vec<String>, StoreError> {
        let source = source.to_owned();
        self.call(move |conn| {
            deleted_ids(conn, &source).map_err(sql(format!("reading the deleted documents of {source}")))
        })
        .await
    }

    async fn phase_results(&self, run: RunId, kind: &str) -> Result<Vec<PhaseResult>, StoreError> {
        let kind = kind.to_owned();
        self.call(move |conn| {
            let what = || format!("reading the {kind} results of run {run}");
            let rows: Vec<(String, String)> = conn
                .prepare_cached("SELECT key, value FROM run_results WHERE run_id = ?1 AND kind = ?2 ORDER BY key")
                .and_then(|mut stmt| stmt.query_map(params![run, kind], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(sql(what()))?;
            rows.into_iter()
                .map(|(key, value)| {
                    let value = serde_json::from_str(&value).map_err(|e| StoreError::Decode {
                        what: format!("{}: result {key} is not JSON: {e}", what()),
                        source: Some(Arc::new(e)),
                    })?;
                    Ok(PhaseResult { kind: kind.clone(), key, value })
                })
                .collect()
        })
        .await
    }

    async fn high_water_mark(&self, pipeline: &str, source: &str) -> Result<Option<HighWaterMark>, StoreError> {
        let (pipeline, source) = (pipeline.to_string(), source.to_string());
        self.call(move |conn| high_water::high_water_mark(conn, &pipeline, &source)).await
    }

    async fn failures(&self, run: RunId) -> Result<Vec<FailureRow>, StoreError> {
        self.call(move |conn| {
            conn.prepare_cached(
                "SELECT id, run_id, source, record_id, stage, error_type, error, retryable, retry_count, payload,
                        has_record, created_at, resolved_by
                 FROM failures WHERE run_id = ?1 ORDER BY id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([run], |r| {
                    Ok(FailureRow {
                        id: r.get(0)?,
                        run_id: r.get(1)?,
                        failure: Failure {
                            source: r.get(2)?,
                            record_id: r.get(3)?,
                            stage: r.get(4)?,
                            error_type: r.get(5)?,
                            error: r.get(6)?,
                            retryable: r.get(7)?,
                            retry_count: r.get(8)?,
                            payload: r.get(9)?,
                            has_record: r.get(10)?,
                        },
                        created_at: r.get(11)?,
                        resolved_by: r.get(12)?,
                    })
                })?
                .collect()
            })
            .map_err(sql(format!("reading the failures of run {run}")))
        })
        .await
    }

    async fn resolve_failures(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
        self.resolve_stored(
            run,
            retry_run,
            true,
            format!("resolving the failures of run {run} stored by run {retry_run}"),
        )
        .await
    }

    async fn resolve_refetched(&self, run: RunId, retry_run: RunId) -> Result<u64, StoreError> {
        let what = format!("resolving the failed pages of run {run} fetched by run {retry_run}");
        self.resolve_stored(run, retry_run, false, what).await
    }
}

/// Runs the lookups of `read` in one read transaction: outside one, each
/// statement is a transaction of its own, and in WAL mode each takes and
/// releases the WAL index's locks (fcntl calls); a batch of 50 lookups cost
/// more than the engine's whole work on the batch (BENCHMARKS.md).
fn in_one_transaction<T>(
    conn: &mut Connection,
    what: &'static str,
    read: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn.transaction().map_err(sql(what))?;
    let out = read(&tx)?;
    tx.commit().map_err(sql(what))?;
    Ok(out)
}
