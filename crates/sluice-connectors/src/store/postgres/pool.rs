//! The store's connection pool, made on first use, and the name the store
//! gives itself in every error it returns.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sluice_core::StoreError;
use sluice_core::error::ErrorSource;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::errors::store_error;

/// How long taking a pooled connection may wait (including connecting)
/// before the call fails as unavailable and the engine's backoff takes over.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 5;

/// Where the store's queries go: the server's options and the pool.
pub(super) struct Db {
    /// The URL with its password hidden.
    pub(super) describe: String,
    pub(super) options: PgConnectOptions,
    /// Made on first use (it needs the async runtime); connects lazily.
    pool: OnceLock<PgPool>,
}

impl Db {
    pub(super) fn new(describe: String, options: PgConnectOptions) -> Self {
        Self { describe, options, pool: OnceLock::new() }
    }

    /// The connection pool. Only called from async code, inside the runtime.
    pub(super) fn pool(&self) -> &PgPool {
        self.pool.get_or_init(|| {
            PgPoolOptions::new()
                .max_connections(MAX_CONNECTIONS)
                .min_connections(0)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .idle_timeout(Duration::from_secs(60))
                .test_before_acquire(true)
                .connect_lazy_with(self.options.clone())
        })
    }

    /// Closes the pool, if it was made.
    pub(super) async fn close(&self) {
        if let Some(pool) = self.pool.get() {
            pool.close().await;
        }
    }

    /// A stored value that cannot be read back, named by the store.
    pub(super) fn decode(&self, what: impl fmt::Display, source: Option<sqlx::Error>) -> StoreError {
        StoreError::Decode {
            what: format!("{}: {what}", self.describe),
            source: source.map(|e| Arc::new(e) as ErrorSource),
        }
    }

    /// A request the store cannot honour, named by the store.
    pub(super) fn contract(&self, message: impl fmt::Display) -> StoreError {
        StoreError::Contract { message: format!("{}: {message}", self.describe) }
    }

    /// A database that cannot be set up, named by the store.
    pub(super) fn schema(&self, message: impl fmt::Display) -> StoreError {
        StoreError::Schema { message: format!("{}: {message}", self.describe), source: None }
    }

    /// Maps a sqlx error met while doing `what`: connection trouble is
    /// `Unavailable` (retried), the rest `Database`; messages name the store.
    pub(super) fn sql(&self, what: impl fmt::Display) -> impl FnOnce(sqlx::Error) -> StoreError {
        let describe = self.describe.clone();
        move |e| store_error(&describe, what, e)
    }
}
