//! Rate limits shared by every worker of a distributed run: one token bucket
//! row per (run, service) in `rate_buckets` (migration 0009), refilled by the
//! server's clock, so N workers together keep one rate instead of N times it,
//! and a 429 one worker meets pauses them all.
//!
//! - **Taking** is one `UPDATE ... RETURNING` under the row's lock: refill by
//!   the time since the last take (up to the burst), then hand out up to a
//!   *chunk* of tokens, or say how long until one is there (or the pause ends).
//! - **Chunks**: a worker takes about 1/20 s of the rate at once and spends it
//!   locally, so 500 requests/s cost ~20 statements/s on the hot row, not 500.
//!   A chunk is spent within [`STASH_TTL`]; what is left then is dropped, so a
//!   pause set by another worker holds this one within that time.
//! - **Pauses**: a 429's `retry-after` (or Intercom's used-up window) sets
//!   `paused_until`; no token is handed out before it, and none saved up for it.
//! - The store failing does not stop the run: the worker falls back to its
//!   own in-memory bucket until the store answers again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_core::store::RunId;
use sluice_core::{LocalPacer, Pacer, RateLimit, StoreError};

use super::super::PostgresStore;

/// The longest a chunk taken from the shared bucket is spent locally.
pub const STASH_TTL: Duration = Duration::from_millis(250);
/// A chunk is this long a share of the rate.
const CHUNK_SECS: f64 = 0.05;

/// Tokens this worker took from the shared bucket and has not spent yet.
#[derive(Debug)]
struct Stash {
    tokens: f64,
    until: Instant,
}

/// The pacer of a worker: buckets in the run's `rate_buckets` rows.
#[derive(Debug)]
pub struct SharedPacer {
    store: PostgresStore,
    run: RunId,
    stash: Mutex<HashMap<String, Stash>>,
    /// Services whose row this worker made sure of (with its rate).
    known: Mutex<HashSet<String>>,
    /// Used while the store does not answer.
    fallback: LocalPacer,
}

impl SharedPacer {
    pub fn new(store: PostgresStore, run: RunId) -> Self {
        Self { store, run, stash: Mutex::default(), known: Mutex::default(), fallback: LocalPacer::default() }
    }

    fn take_stashed(&self, service: &str) -> bool {
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        match stash.get_mut(service) {
            Some(s) if s.tokens >= 1.0 && s.until > Instant::now() => {
                s.tokens -= 1.0;
                true
            }
            _ => false,
        }
    }

    /// Creates the service's bucket row (full) or sets its rate to the configured one.
    async fn ensure(&self, limit: &RateLimit) -> Result<(), StoreError> {
        if self.known.lock().unwrap_or_else(|e| e.into_inner()).contains(&limit.service) {
            return Ok(());
        }
        self.store.ready().await?;
        let db = self.store.db();
        let burst = limit.burst();
        let capacity = if burst.is_finite() { burst } else { 1.0 };
        sqlx::query(
            "INSERT INTO rate_buckets (run_id, service, rate_per_s, capacity, tokens)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (run_id, service) DO UPDATE
             SET rate_per_s = EXCLUDED.rate_per_s, capacity = EXCLUDED.capacity",
        )
        .bind(self.run)
        .bind(&limit.service)
        .bind(limit.per_second())
        .bind(capacity)
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("creating the rate bucket {:?}", limit.service)))?;
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(limit.service.clone());
        Ok(())
    }

    /// Takes up to `want` tokens from the shared bucket: (tokens got, seconds to wait when none).
    async fn take(&self, limit: &RateLimit, want: f64) -> Result<(f64, f64), StoreError> {
        self.ensure(limit).await?;
        let db = self.store.db();
        let row: Option<(f64, f64)> = sqlx::query_as(
            "UPDATE rate_buckets b
             SET tokens = CASE WHEN s.paused THEN b.tokens ELSE s.avail - s.got END,
                 updated_at = CASE WHEN s.paused THEN b.updated_at ELSE GREATEST(b.updated_at, s.t) END,
                 taken = b.taken + CASE WHEN s.rate_per_s IS NULL THEN 0 ELSE s.got::bigint END
             FROM (SELECT x.*,
                          CASE WHEN x.paused THEN 0
                               WHEN x.rate_per_s IS NULL THEN $3
                               ELSE LEAST($3, floor(x.avail)) END AS got
                   FROM (SELECT r.run_id, r.service, r.rate_per_s, r.paused_until, c.t,
                                coalesce(r.paused_until > c.t, false) AS paused,
                                CASE WHEN r.rate_per_s IS NULL THEN 0::float8
                                     ELSE LEAST(r.capacity, r.tokens + GREATEST(0::float8,
                                          extract(epoch FROM c.t - r.updated_at)::float8) * r.rate_per_s) END AS avail
                         FROM rate_buckets r, (SELECT clock_timestamp() AS t) c
                         WHERE r.run_id = $1 AND r.service = $2
                         FOR UPDATE OF r) x) s
             WHERE b.run_id = s.run_id AND b.service = s.service
             RETURNING s.got::float8,
                       CASE WHEN s.paused THEN extract(epoch FROM s.paused_until - s.t)::float8
                            WHEN s.got >= 1 OR s.rate_per_s IS NULL THEN 0::float8
                            ELSE (1 - s.avail) / s.rate_per_s END",
        )
        .bind(self.run)
        .bind(&limit.service)
        .bind(want)
        .fetch_optional(db.pool())
        .await
        .map_err(db.sql(format!("taking from the rate bucket {:?}", limit.service)))?;
        match row {
            Some(row) => Ok(row),
            None => {
                // The row went (the run was deleted): make it again next time.
                self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(&limit.service);
                Ok((want, 0.0))
            }
        }
    }

    /// Sets the shared pause of `service` to end `wait` from now (unless one ends later).
    async fn pause_shared(&self, service: &str, wait: Duration) -> Result<(), StoreError> {
        self.store.ready().await?;
        let db = self.store.db();
        sqlx::query(
            "INSERT INTO rate_buckets (run_id, service, tokens, paused_until, updated_at, pauses)
             VALUES ($1, $2, 0, clock_timestamp() + make_interval(secs => $3),
                     clock_timestamp() + make_interval(secs => $3), 1)
             ON CONFLICT (run_id, service) DO UPDATE
             SET paused_until = GREATEST(coalesce(rate_buckets.paused_until, '-infinity'), EXCLUDED.paused_until),
                 tokens = LEAST(rate_buckets.tokens, 0),
                 updated_at = GREATEST(rate_buckets.updated_at, EXCLUDED.paused_until),
                 pauses = rate_buckets.pauses + 1",
        )
        .bind(self.run)
        .bind(service)
        .bind(wait.as_secs_f64())
        .execute(db.pool())
        .await
        .map_err(db.sql(format!("pausing the rate bucket {service:?}")))?;
        Ok(())
    }
}

#[async_trait]
impl Pacer for SharedPacer {
    async fn reserve(&self, limit: &RateLimit) -> Duration {
        if self.take_stashed(&limit.service) {
            return Duration::ZERO;
        }
        // Without a rate only pauses matter: one statement per STASH_TTL lets every request through.
        let want = limit.per_second().map_or(1e9, |rate| (rate * CHUNK_SECS).floor().max(1.0));
        match self.take(limit, want).await {
            Ok((got, _)) if got >= 1.0 => {
                let until = Instant::now() + STASH_TTL;
                let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
                stash.insert(limit.service.clone(), Stash { tokens: got - 1.0, until });
                Duration::ZERO
            }
            Ok((_, wait)) => Duration::from_secs_f64(wait.clamp(0.001, 3600.0)),
            Err(e) => {
                tracing::warn!(service = %limit.service, error = %e, "shared rate bucket unavailable: pacing locally");
                self.fallback.reserve(limit).await
            }
        }
    }

    async fn pause(&self, service: &str, wait: Duration) {
        self.stash.lock().unwrap_or_else(|e| e.into_inner()).remove(service);
        self.fallback.pause(service, wait).await;
        if let Err(e) = self.pause_shared(service, wait).await {
            tracing::warn!(service, error = %e, "could not share a rate-limit pause with the other workers");
        }
        tracing::info!(
            service,
            wait_ms = wait.as_millis() as u64,
            run_id = self.run,
            "rate limited: every worker pauses"
        );
    }
}
