//! The SQLite store: one database file holding runs, documents, chunks and
//! failures, with every batch and its checkpoint committed in one transaction.
//!
//! One connection behind a mutex; every call runs on tokio's blocking pool.
//! WAL with `synchronous=NORMAL`: a commit that returned is durable against a
//! crash of the process, and an interrupted one leaves nothing of its batch.
//! The single run slot is an OS file lock on `<db path>.lock`, so the kernel
//! frees it when the holding process dies, however it dies.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::store::{
    ActiveRunGuard, CommitBatch, Failure, FailureRow, MemoKey, NewRun, RunId, RunInfo, RunStatus, Store,
};
use sluice_core::{Checkpoint, Chunk, Document, PhaseResult, Record, StoreError};

use super::{RowFacts, StoredDocument, embedding_from_bytes, embedding_to_bytes, now_rfc3339};

/// The numbered migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_stage_results.sql")),
    (3, include_str!("../../migrations/sqlite/0003_phases.sql")),
];

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache, in KiB (a negative `cache_size` is KiB).
const CACHE_KIB: i64 = 16 * 1024;

/// The error written on runs found `running`/`stopping` when the run slot is taken.
pub const ORPHANED_RUN_ERROR: &str =
    "the process running it ended without finishing (crash or kill); resume it from its checkpoint";

/// Configuration of the SQLite store, as written in a pipeline file.
#[derive(Deserialize, Serialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file. It is created if missing; its directory must exist.
    pub path: PathBuf,
}

impl SqliteConfig {
    pub fn open(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.path)
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
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// The run slot while it is held: the locked `<db>.lock` file. Dropping it
/// (or the death of the process) releases the lock.
#[derive(Debug)]
pub struct SqliteRunLock {
    _file: File,
    pub path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating the file if needed) the database at `path`, sets it up
    /// (WAL, `synchronous=NORMAL`, busy timeout) and applies the migrations it
    /// lacks. The directory must exist and be writable; it is never created.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let fail = |what: String| StoreError::Other(format!("cannot open SQLite store at {}: {what}", path.display()));
        if path.as_os_str().is_empty() {
            return Err(StoreError::Other("cannot open SQLite store: the path is empty".into()));
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
            classify(&e, message)
        };
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
        configure(&conn).map_err(open_error)?;
        migrate(&mut conn).map_err(|e| {
            let message = format!("cannot set up SQLite store at {}: {e}{}", path.display(), open_hint(&e));
            classify(&e, message)
        })?;

        let mut lock = path.as_os_str().to_owned();
        lock.push(".lock");
        Ok(SqliteStore {
            inner: Arc::new(Inner { path: path.to_path_buf(), lock_path: PathBuf::from(lock), conn: Mutex::new(conn) }),
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

    pub async fn document_count(&self) -> Result<u64, StoreError> {
        self.call(|conn| count(conn, "SELECT count(*) FROM documents").map_err(sql("counting documents"))).await
    }

    pub async fn chunk_count(&self) -> Result<u64, StoreError> {
        self.call(|conn| count(conn, "SELECT count(*) FROM chunks").map_err(sql("counting chunks"))).await
    }

    /// The stored document `(source, id)`, if there is one.
    pub async fn get_document(&self, source: &str, id: &str) -> Result<Option<StoredDocument>, StoreError> {
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
    pub async fn get_chunks(&self, source: &str, doc_id: &str) -> Result<Vec<Chunk>, StoreError> {
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
                    let bad = |e: String| StoreError::Other(format!("{}: chunk {index}: {e}", what()));
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
    /// The check takes a shared lock for an instant; an `acquire_active`
    /// racing with it in that instant answers `Busy`.
    pub async fn active_run(&self) -> Result<Option<RunInfo>, StoreError> {
        let lock_path = self.inner.lock_path.clone();
        self.call(move |conn| {
            let held = match open_lock_file(&lock_path)?.try_lock_shared() {
                Ok(()) => false,
                Err(TryLockError::WouldBlock) => true,
                Err(TryLockError::Error(e)) => {
                    return Err(StoreError::Other(format!("cannot check the run lock {}: {e}", lock_path.display())));
                }
            };
            if !held {
                return Ok(None);
            }
            match active_run_id(conn)? {
                0 => Ok(None),
                id => read_run(conn, id),
            }
        })
        .await
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            if !conn.is_autocommit() {
                // Only after a panic in the middle of a transaction: never build on its leftovers.
                conn.execute_batch("ROLLBACK").map_err(sql("rolling back an abandoned transaction"))?;
            }
            f(&mut conn)
        })
        .await;
        match joined {
            Ok(result) => result.map_err(|e| self.with_path(e)),
            Err(e) => Err(StoreError::Other(format!("{}: the database task ended abnormally: {e}", self.describe()))),
        }
    }

    fn with_path(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Unavailable(m) => StoreError::Unavailable(format!("{}: {m}", self.describe())),
            StoreError::Other(m) => StoreError::Other(format!("{}: {m}", self.describe())),
            other => other,
        }
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::Other(format!("cannot open the run lock file {}: {e}", path.display())))
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "SQLite did not switch to WAL; commits will be slower");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Applies the migrations the database lacks, all in one transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TEXT NOT NULL
         )",
    )?;
    let current: i64 = tx.query_row("SELECT coalesce(max(version), 0) FROM schema_migrations", [], |r| r.get(0))?;
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!(
                "the database is at schema version {current}, newer than this sluice knows ({known}); \
                 use a newer sluice"
            )),
        ));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(code, msg) => rusqlite::Error::SqliteFailure(
                code,
                Some(format!("migration {version:04}: {}", msg.unwrap_or_else(|| code.to_string()))),
            ),
            other => other,
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, now_rfc3339()],
        )?;
        tracing::debug!(version, "applied SQLite migration");
    }
    tx.commit()
}

fn open_hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::CannotOpen) => " (is the directory there and writable?)",
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => " (are the file and its directory writable?)",
        Some(ErrorCode::NotADatabase) => " (the file is not a SQLite database)",
        Some(ErrorCode::DatabaseCorrupt) => " (the database file is damaged)",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => " (another process holds it locked)",
        _ => "",
    }
}

/// Busy, locked and I/O errors pass: the engine retries them. The rest do not.
fn classify(e: &rusqlite::Error, message: String) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable(message)
        }
        _ => StoreError::Other(message),
    }
}

/// Maps a SQLite error met while doing `what`.
fn sql(what: impl fmt::Display) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| classify(&e, format!("{what}: {e}"))
}

fn count(conn: &Connection, query: &str) -> rusqlite::Result<u64> {
    let n: i64 = conn.prepare_cached(query)?.query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Other(format!("{what} {value} is too large to store")))
}

fn json(value: &impl Serialize, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(format!("cannot encode {what} as JSON: {e}")))
}

const RUN_COLUMNS: &str = "id, pipeline, status, phase, checkpoint, config, date_from, date_to, \
                           started_at, updated_at, finished_at, error";

/// A `pipeline_runs` row before its JSON columns are parsed.
struct RawRun {
    id: RunId,
    pipeline: String,
    status: String,
    phase: String,
    checkpoint: Option<String>,
    config: String,
    date_from: Option<String>,
    date_to: Option<String>,
    started_at: String,
    updated_at: String,
    finished_at: Option<String>,
    error: Option<String>,
}

impl RawRun {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            pipeline: row.get(1)?,
            status: row.get(2)?,
            phase: row.get(3)?,
            checkpoint: row.get(4)?,
            config: row.get(5)?,
            date_from: row.get(6)?,
            date_to: row.get(7)?,
            started_at: row.get(8)?,
            updated_at: row.get(9)?,
            finished_at: row.get(10)?,
            error: row.get(11)?,
        })
    }

    fn parse(self) -> Result<RunInfo, StoreError> {
        let id = self.id;
        let bad = |what: String| StoreError::Other(format!("run {id} cannot be read: {what}"));
        let status = RunStatus::parse(&self.status).ok_or_else(|| bad(format!("unknown status {:?}", self.status)))?;
        let checkpoint = match self.checkpoint.as_deref() {
            None => None,
            Some(text) => Some(
                serde_json::from_str::<Checkpoint>(text)
                    .map_err(|e| bad(format!("its checkpoint is not a valid checkpoint ({e}): {}", clip(text))))?,
            ),
        };
        let config = serde_json::from_str::<Value>(&self.config)
            .map_err(|e| bad(format!("its config is not JSON ({e}): {}", clip(&self.config))))?;
        Ok(RunInfo {
            id,
            pipeline: self.pipeline,
            status,
            phase: self.phase,
            checkpoint,
            config,
            date_from: self.date_from,
            date_to: self.date_to,
            started_at: self.started_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            error: self.error,
        })
    }
}

/// At most 200 characters of `text`, for error messages.
fn clip(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

fn read_run(conn: &Connection, id: RunId) -> Result<Option<RunInfo>, StoreError> {
    let raw = conn
        .prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id], RawRun::from_row).optional())
        .map_err(sql(format!("reading run {id}")))?;
    raw.map(RawRun::parse).transpose()
}

/// The newest run that holds (or held) the run slot, 0 if none.
fn active_run_id(conn: &Connection) -> Result<RunId, StoreError> {
    conn.prepare_cached("SELECT id FROM pipeline_runs WHERE status IN ('running', 'stopping') ORDER BY id DESC LIMIT 1")
        .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)).optional())
        .map(Option::unwrap_or_default)
        .map_err(sql("looking up the active run"))
}

/// A document as bound to the upsert.
struct DocRow {
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

struct ChunkRow {
    idx: i64,
    offset: i64,
    text: String,
    embedding: Option<Vec<u8>>,
}

/// Encodes a batch into owned rows (so it can move to the blocking pool).
fn encode_batch(batch: &CommitBatch) -> Result<Vec<DocRow>, StoreError> {
    let mut rows = Vec::with_capacity(batch.documents.len());
    for doc in &batch.documents {
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

/// A document's own columns, read back in this order (`id, text, fields,
/// updated_at, content_hash, classification, embedding, annotations`) by
/// `get_document` and by later phases' scans.
struct ScannedRow {
    id: String,
    text: String,
    fields: String,
    updated_at: Option<i64>,
    content_hash: String,
    classification: Option<String>,
    embedding: Option<Vec<u8>>,
    annotations: String,
}

impl ScannedRow {
    fn read(row: &Row) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            text: row.get(1)?,
            fields: row.get(2)?,
            updated_at: row.get(3)?,
            content_hash: row.get(4)?,
            classification: row.get(5)?,
            embedding: row.get(6)?,
            annotations: row.get(7)?,
        })
    }

    fn into_document(self, source: &str) -> Result<Document, StoreError> {
        let id = self.id;
        let bad = |e: String| StoreError::Other(format!("document ({source}, {id}): {e}"));
        let record = Record {
            source: source.to_string(),
            id: id.clone(),
            text: self.text,
            fields: serde_json::from_str(&self.fields)
                .map_err(|e| bad(format!("its fields are not a JSON object: {e}")))?,
            updated_at: self.updated_at,
        };
        Ok(Document {
            record,
            content_hash: self.content_hash,
            classification: self
                .classification
                .map(|c| serde_json::from_str(&c))
                .transpose()
                .map_err(|e| bad(format!("its classification cannot be read: {e}")))?,
            chunks: Vec::new(),
            embedding: self.embedding.map(|b| embedding_from_bytes(&b)).transpose().map_err(bad)?,
            annotations: serde_json::from_str(&self.annotations)
                .map_err(|e| bad(format!("its annotations are not a JSON object: {e}")))?,
        })
    }
}

/// (source, id, embedding, annotations as JSON)
type UpdateRow = (String, String, Option<Vec<u8>>, String);

fn encode_updates(batch: &CommitBatch) -> Result<Vec<UpdateRow>, StoreError> {
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
fn apply_updates(conn: &Connection, updates: &[UpdateRow]) -> rusqlite::Result<()> {
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

fn upsert_results(
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

/// (source, id, stage, fingerprint, content_hash, value as JSON)
type MemoRow = (String, String, String, String, String, String);

fn upsert_memos(conn: &Connection, memos: &[MemoRow], now: &str) -> rusqlite::Result<()> {
    if memos.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO stage_results (source, id, stage, fingerprint, content_hash, value, stored_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (source, id, stage) DO UPDATE SET
             fingerprint = excluded.fingerprint, content_hash = excluded.content_hash,
             value = excluded.value, stored_at = excluded.stored_at",
    )?;
    for (source, id, stage, fingerprint, content_hash, value) in memos {
        stmt.execute(params![source, id, stage, fingerprint, content_hash, value, now])?;
    }
    Ok(())
}

fn insert_failures(conn: &Connection, run: RunId, failures: &[Failure], now: &str) -> rusqlite::Result<()> {
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
                           classification, embedding, run_id, write_count, stored_at) VALUES ";
const UPSERT_ROW: &str = "(?,?,?,?,?,?,?,?,?,?,1,?)";
const UPSERT_TAIL: &str = " ON CONFLICT (source, id) DO UPDATE SET text = excluded.text, fields = excluded.fields, \
                           updated_at = excluded.updated_at, content_hash = excluded.content_hash, \
                           category = excluded.category, classification = excluded.classification, \
                           embedding = excluded.embedding, run_id = excluded.run_id, \
                           write_count = documents.write_count + 1, stored_at = excluded.stored_at";
const CHUNK_HEAD: &str = "INSERT INTO chunks (source, doc_id, idx, byte_offset, text, embedding) VALUES ";
const CHUNK_ROW: &str = "(?,?,?,?,?,?)";

/// Upserts the documents, replacing their chunks, in the order given.
fn write_batch(conn: &Connection, docs: &[DocRow], now: &str, run: RunId) -> rusqlite::Result<()> {
    // Each segment is written as a whole (old chunks deleted, documents
    // upserted, new chunks inserted), which is only the same as writing its
    // documents one by one if no document appears twice in it.
    let mut seen = std::collections::HashSet::with_capacity(docs.len());
    let mut segment_start = 0;
    for (i, d) in docs.iter().enumerate() {
        if !seen.insert((d.source.as_str(), d.id.as_str())) {
            write_segment(conn, &docs[segment_start..i], now, run)?;
            seen.clear();
            seen.insert((d.source.as_str(), d.id.as_str()));
            segment_start = i;
        }
    }
    write_segment(conn, &docs[segment_start..], now, run)
}

/// Writes documents with distinct `(source, id)`.
fn write_segment(conn: &Connection, docs: &[DocRow], now: &str, run: RunId) -> rusqlite::Result<()> {
    // Delete the chunks of these documents (new ones have none), by source.
    let mut sources: Vec<&str> = docs.iter().map(|d| d.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        let ids: Vec<&str> = docs.iter().filter(|d| d.source == source).map(|d| d.id.as_str()).collect();
        for (start, len) in pieces(ids.len()) {
            let sql = repeat_sql("DELETE FROM chunks WHERE source = ? AND doc_id IN (", "?", len, ")");
            let mut stmt = conn.prepare_cached(&sql)?;
            stmt.raw_bind_parameter(1, source)?;
            for (k, id) in ids[start..start + len].iter().enumerate() {
                stmt.raw_bind_parameter(k + 2, id)?;
            }
            stmt.raw_execute()?;
        }
    }

    for (start, len) in pieces(docs.len()) {
        let mut stmt = conn.prepare_cached(&repeat_sql(UPSERT_HEAD, UPSERT_ROW, len, UPSERT_TAIL))?;
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
            bind(&run)?;
            bind(&now)?;
        }
        stmt.raw_execute()?;
    }

    let chunks: Vec<(&DocRow, &ChunkRow)> = docs.iter().flat_map(|d| d.chunks.iter().map(move |c| (d, c))).collect();
    for (start, len) in pieces(chunks.len()) {
        let mut stmt = conn.prepare_cached(&repeat_sql(CHUNK_HEAD, CHUNK_ROW, len, ""))?;
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

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.inner.path.display())
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
                    return Err(StoreError::Other(format!(
                        "cannot lock the run lock file {}: {e}",
                        lock_path.display()
                    )));
                }
            }
            // Nobody held the lock, so a run still marked running/stopping lost its process.
            let now = now_rfc3339();
            let orphans: Vec<RunId> = conn
                .prepare_cached(
                    "UPDATE pipeline_runs
                     SET status = 'failed', error = ?1, finished_at = ?2, updated_at = ?2
                     WHERE status IN ('running', 'stopping')
                     RETURNING id",
                )
                .and_then(|mut stmt| stmt.query_map(params![ORPHANED_RUN_ERROR, now], |r| r.get(0))?.collect())
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
            read_run(conn, id)?.ok_or_else(|| StoreError::Other(format!("run {id} vanished right after its creation")))
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
        let docs = encode_batch(batch)?;
        let failures = batch.failures.clone();
        let memos = batch
            .memos
            .iter()
            .map(|m| {
                Ok((
                    m.source.clone(),
                    m.id.clone(),
                    m.stage.clone(),
                    m.fingerprint.clone(),
                    m.content_hash.clone(),
                    json(&m.value, "a stage result")?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let updates = encode_updates(batch)?;
        let results = batch
            .results
            .iter()
            .map(|r| Ok((r.kind.clone(), r.key.clone(), json(&r.value, "a phase result")?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let checkpoint_json = json(checkpoint, "the checkpoint")?;
        let counts_json = json(&checkpoint.counts, "the checkpoint counts")?;
        let phase = checkpoint.phase.clone();
        let (n_docs, n_failures) = (docs.len(), failures.len());
        self.call(move |conn| {
            let what = || format!("commit of run {run} ({n_docs} documents, {n_failures} failures)");
            let now = now_rfc3339();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql(what()))?;
            let updated = tx
                .prepare_cached(
                    "UPDATE pipeline_runs SET checkpoint = ?2, counts = ?3, phase = ?4, updated_at = ?5 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![run, checkpoint_json, counts_json, phase, now]))
                .map_err(sql(what()))?;
            if updated == 0 {
                return Err(StoreError::NotFound(format!("run {run} (cannot commit a batch to it)")));
            }
            write_batch(&tx, &docs, &now, run).map_err(sql(what()))?;
            insert_failures(&tx, run, &failures, &now).map_err(sql(what()))?;
            upsert_memos(&tx, &memos, &now).map_err(sql(what()))?;
            apply_updates(&tx, &updates).map_err(sql(what()))?;
            upsert_results(&tx, run, &results, &now).map_err(sql(what()))?;
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
        self.call(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT value FROM stage_results
                     WHERE source = ?1 AND id = ?2 AND stage = ?3 AND fingerprint = ?4 AND content_hash = ?5",
                )
                .map_err(sql("reading stored stage results"))?;
            keys.iter()
                .map(|k| {
                    let raw: Option<String> = stmt
                        .query_row(params![k.source, k.id, stage, fingerprint, k.content_hash], |r| r.get(0))
                        .optional()
                        .map_err(sql("reading stored stage results"))?;
                    // An unreadable value is a miss: the stage simply runs again.
                    Ok(raw.and_then(|raw| serde_json::from_str(&raw).ok()))
                })
                .collect()
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
                .prepare_cached(
                    "SELECT id, text, fields, updated_at, content_hash, classification, embedding, annotations
                     FROM documents WHERE source = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3",
                )
                .map_err(sql(what()))?;
            let rows = stmt
                .query_map(params![source, after, limit], ScannedRow::read)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(sql(what()))?;
            rows.into_iter().map(|row| row.into_document(&source)).collect()
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
                    let value = serde_json::from_str(&value)
                        .map_err(|e| StoreError::Other(format!("{}: result {key} is not JSON: {e}", what())))?;
                    Ok(PhaseResult { kind: kind.clone(), key, value })
                })
                .collect()
        })
        .await
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
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE failures SET resolved_by = ?2
                 WHERE run_id = ?1 AND has_record = 1 AND resolved_by IS NULL
                   AND EXISTS (SELECT 1 FROM documents d
                               WHERE d.source = failures.source AND d.id = failures.record_id AND d.run_id = ?2)
                   AND NOT EXISTS (SELECT 1 FROM failures again
                                   WHERE again.run_id = ?2 AND again.source = failures.source
                                     AND again.record_id = failures.record_id)",
            )
            .and_then(|mut stmt| stmt.execute(params![run, retry_run]))
            .map(|n| n as u64)
            .map_err(sql(format!("resolving the failures of run {run} stored by run {retry_run}")))
        })
        .await
    }
}
