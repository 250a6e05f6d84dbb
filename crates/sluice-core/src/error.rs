//! Typed errors of the three roles. The engine decides what to do from the
//! type: retry, restart a partition, record a failure, or end the run.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

/// An error fetching a page.
#[derive(Debug, Clone, Error)]
pub enum SourceError {
    /// Worth trying again, after `retry_after` when the server said so.
    #[error("{message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// The cursor is no longer accepted (e.g. expired). The engine restarts
    /// the partition from its beginning.
    #[error("cursor invalid: {message}")]
    CursorInvalid { message: String },
    /// Trying again will not help (bad credentials, missing file, bad config).
    #[error("{message}")]
    Fatal { message: String },
}

impl SourceError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable { message: message.into(), retry_after: None }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal { message: message.into() }
    }
}

/// An error a stage met, for one record or for a whole batch.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct StageError {
    /// A short machine-readable kind, e.g. `parse`, `http_429`, `timeout`.
    pub error_type: String,
    pub message: String,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

impl StageError {
    pub fn permanent(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error_type: error_type.into(), message: message.into(), retryable: false, retry_after: None }
    }

    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error_type: error_type.into(), message: message.into(), retryable: true, retry_after: None }
    }
}

/// The error underneath a [`StoreError`] (a driver's, an I/O or JSON error),
/// shared so that store errors stay `Clone`.
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync>;

/// An error of the store. Only `Unavailable` is worth retrying.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// A passing fault (connection lost, database busy); the engine retries the commit.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Another run holds the store's run lock.
    #[error("run {active_run_id} is already active on this store")]
    Busy { active_run_id: i64 },
    #[error("not found: {0}")]
    NotFound(String),
    /// A stored value cannot be read back (not JSON, a ragged embedding, an
    /// unknown status); `what` names the value and why.
    #[error("{what}")]
    Decode {
        what: String,
        #[source]
        source: Option<ErrorSource>,
    },
    /// The database cannot be opened or set up: a bad path or URL, a schema
    /// newer than this build knows, a migration that fails.
    #[error("{message}")]
    Schema {
        message: String,
        #[source]
        source: Option<ErrorSource>,
    },
    /// The request is one the store cannot honour: data it cannot hold (a NUL
    /// character, a number too large), a run that is no longer the active one,
    /// inconsistent input, or an operation this store does not have.
    #[error("{message}")]
    Contract { message: String },
    /// The database refused or failed a statement for a reason retrying will
    /// not mend (a constraint or trigger, a full disk, a lock file it cannot open).
    #[error("{message}")]
    Database {
        message: String,
        #[source]
        source: Option<ErrorSource>,
    },
}

/// Why a run could not start or ended as `failed`.
#[derive(Debug, Clone, Error)]
pub enum EngineError {
    #[error("source: {0}")]
    Source(#[from] SourceError),
    #[error("stage {stage}: {error}")]
    Stage { stage: String, error: StageError },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The request to start or resume is not acceptable (no such run, wrong state...).
    #[error("{0}")]
    Invalid(String),
    /// The run was aborted by a fatal error elsewhere while this waited.
    #[error("aborted")]
    Aborted,
    /// One of the run's tasks panicked (a bug, in the engine or in a connector).
    #[error("{task} panicked: {message}")]
    Panicked { task: String, message: String },
}
