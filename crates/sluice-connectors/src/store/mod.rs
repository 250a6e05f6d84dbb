//! Stores: implementations of [`sluice_core::Store`], and what they share
//! (the stored-document view, the embedding encoding, timestamps).
//! [`sqlite`] and [`postgres`] are behind the cargo features of their names;
//! the helpers the backends share are unused in a build without both.

// The items sink lived here; the old path still names it.
pub use crate::sink::items as items_sink;
pub mod memo_vectors;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_core::store::{RunId, RunInfo};
use sluice_core::{Chunk, Classification, Document, Store, StoreError};

use crate::ConfigError;

pub use items_sink::{ItemsSink, ItemsSinkConfig};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresConfig, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteConfig, SqliteStore};

/// What the CLI and tests read from a store besides the [`Store`] trait,
/// whatever the backend: counts, stored documents and chunks, the active run.
/// Every store implements it, so an `Arc<dyn InspectStore>` serves both
/// (upcast to `Arc<dyn Store>` where only the trait is needed).
#[async_trait]
pub trait InspectStore: Store {
    async fn document_count(&self) -> Result<u64, StoreError>;
    async fn chunk_count(&self) -> Result<u64, StoreError>;
    /// The stored document `(source, id)`, if there is one.
    async fn get_document(&self, source: &str, id: &str) -> Result<Option<StoredDocument>, StoreError>;
    /// The stored chunks of document `(source, doc_id)`, in order.
    async fn get_chunks(&self, source: &str, doc_id: &str) -> Result<Vec<Chunk>, StoreError>;
    /// The run holding the store's run slot right now (not one left `running` by a dead process).
    async fn active_run(&self) -> Result<Option<RunInfo>, StoreError>;
}

/// A store's configuration (`[store] kind = ...`): it opens its store.
/// Opening is lazy where the backend allows it; [`StoreKind::check`] finds
/// a server that is down or a bad schema now (a health check at start).
#[async_trait]
pub trait StoreKind: Send + Sync {
    /// Opens the store. A SQLite file is opened and migrated at once; a
    /// PostgreSQL store only parses its URL and connects on first use.
    fn open(&self) -> Result<Arc<dyn InspectStore>, ConfigError>;

    /// Opens the store and sets it up now: connects, applies the
    /// migrations, and says how it keeps embeddings.
    async fn check(&self) -> Result<Arc<dyn InspectStore>, ConfigError> {
        self.open()
    }
}

/// The error written on runs found `running`/`stopping` when the run slot is
/// taken: the process running them ended without finishing.
pub const ORPHANED_RUN_ERROR: &str =
    "the process running it ended without finishing (crash or kill); resume it from its checkpoint";

/// The same, for a run that had committed nothing: there is no checkpoint to resume from.
pub const ORPHANED_EMPTY_RUN_ERROR: &str =
    "the process running it ended without finishing (crash or kill) before its first commit; start a new run";

/// A stored value that cannot be read back.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn decode_error(what: impl Into<String>) -> StoreError {
    StoreError::Decode { what: what.into(), source: None }
}

/// A request the store cannot honour.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn contract_error(message: impl Into<String>) -> StoreError {
    StoreError::Contract { message: message.into() }
}

/// A database that cannot be opened or set up.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn schema_error(message: impl Into<String>) -> StoreError {
    StoreError::Schema { message: message.into(), source: None }
}

/// A statement the database refused, with the driver's error underneath.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn database_error(
    message: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Database { message: message.into(), source: Some(Arc::new(source)) }
}

/// `error` with `name` (the store's) before its message, for the errors
/// whose message the store wrote itself.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn named(name: &str, error: StoreError) -> StoreError {
    match error {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{name}: {m}")),
        StoreError::Decode { what, source } => StoreError::Decode { what: format!("{name}: {what}"), source },
        StoreError::Schema { message, source } => StoreError::Schema { message: format!("{name}: {message}"), source },
        StoreError::Contract { message } => StoreError::Contract { message: format!("{name}: {message}") },
        StoreError::Database { message, source } => {
            StoreError::Database { message: format!("{name}: {message}"), source }
        }
        other => other,
    }
}

/// At most 200 characters of `text`, for error messages.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// A row of the documents table as a store holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredDocument {
    pub source: String,
    pub id: String,
    pub text: String,
    pub fields: Map<String, Value>,
    /// The record's own time (seconds since the Unix epoch), when the source gave one.
    pub updated_at: Option<i64>,
    pub content_hash: String,
    pub category: Option<String>,
    pub classification: Option<Classification>,
    /// Whole-document embedding.
    pub embedding: Option<Vec<f32>>,
    /// The run that wrote the row last.
    pub run_id: RunId,
    /// 1 when the row was written once; +1 for every later upsert.
    pub write_count: u64,
    /// When the row was last written (RFC 3339 UTC).
    pub stored_at: String,
    /// Number of chunks stored for the document.
    pub chunks: u64,
    /// What later phases found about it (facets, theme).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

/// What the documents table keeps about a row besides the document itself.
#[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct RowFacts {
    pub category: Option<String>,
    pub run_id: RunId,
    pub write_count: i64,
    pub stored_at: String,
    pub chunks: i64,
}

impl StoredDocument {
    /// The row of `doc` (as a store decoded it, without chunks) with its bookkeeping.
    #[cfg_attr(not(all(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn from_row(doc: Document, facts: RowFacts) -> Self {
        let Document { record, content_hash, classification, embedding, annotations, .. } = doc;
        Self {
            source: record.source,
            id: record.id,
            text: record.text,
            fields: record.fields,
            updated_at: record.updated_at,
            content_hash,
            category: facts.category,
            classification,
            embedding,
            run_id: facts.run_id,
            write_count: u64::try_from(facts.write_count).unwrap_or(0),
            stored_at: facts.stored_at,
            chunks: u64::try_from(facts.chunks).unwrap_or(0),
            annotations,
        }
    }
}

/// Encodes an embedding as little-endian `f32`s, the BLOB layout of the stores.
pub fn embedding_to_bytes(embedding: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(embedding.len() * 4);
    for value in embedding {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

/// Decodes a BLOB written by [`embedding_to_bytes`]. Fails (without
/// panicking) when the length is not a whole number of `f32`s.
pub fn embedding_from_bytes(bytes: &[u8]) -> Result<Vec<f32>, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err(format!("an embedding blob of {} bytes is not a whole number of 4-byte f32 values", bytes.len()));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| match *c {
            [a, b, c, d] => f32::from_le_bytes([a, b, c, d]),
            _ => 0.0, // unreachable: chunks_exact yields 4 bytes
        })
        .collect())
}

/// The current time as RFC 3339 UTC with milliseconds, e.g.
/// `2025-01-31T12:00:00.123Z`: the format of SQLite's
/// `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`, and of every timestamp the stores write.
pub fn now_rfc3339() -> String {
    rfc3339_millis(SystemTime::now())
}

/// Formats a time as RFC 3339 UTC with milliseconds (times before 1970 are clamped to the epoch).
pub fn rfc3339_millis(time: SystemTime) -> String {
    DateTime::<Utc>::from(time.max(UNIX_EPOCH)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn embedding_bytes_round_trip_and_reject_ragged_blobs() {
        let v = vec![0.0f32, -1.5, f32::MAX, 3.25e-7];
        let bytes = embedding_to_bytes(&v);
        assert_eq!(bytes.len(), 16);
        assert_eq!(&bytes[4..8], &(-1.5f32).to_le_bytes());
        assert_eq!(embedding_from_bytes(&bytes).unwrap(), v);
        assert!(embedding_from_bytes(&bytes[..7]).unwrap_err().contains("7 bytes"));
        assert_eq!(embedding_from_bytes(&[]).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, millis: u64| rfc3339_millis(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_738_324_800, 123), "2025-01-31T12:00:00.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }
}
