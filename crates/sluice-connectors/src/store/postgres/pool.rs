//! The store's connection pool, made on first use, and the name the store
//! gives itself in every error it returns.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use sluice_core::StoreError;
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

    pub(super) fn other(&self, message: String) -> StoreError {
        StoreError::Other(format!("{}: {message}", self.describe))
    }

    /// Maps a sqlx error met while doing `what`: connection trouble is
    /// `Unavailable` (retried), the rest `Other`; messages name the store.
    pub(super) fn sql(&self, what: impl fmt::Display) -> impl FnOnce(sqlx::Error) -> StoreError {
        let describe = self.describe.clone();
        move |e| store_error(&describe, what, &e)
    }
}
