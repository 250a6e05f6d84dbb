//! Pacing of requests to rate-limited services (an LLM API, Intercom), so
//! that a run stays under a configured rate and a 429 pauses every caller of
//! the service, not only the one that met it.
//!
//! One role, [`Pacer`]: "may I send one request to this service now, and if
//! not, how long until I ask again" plus "the service told us to wait".
//! [`LocalPacer`] keeps its buckets in memory (one process); the PostgreSQL
//! store has one whose buckets are rows shared by every worker of a
//! distributed run, so N workers together keep the one limit.
//! Connectors call [`crate::Context::pace`] before each request and
//! [`Pacer::pause`] on a 429.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// A service and the rate it may be called at.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimit {
    /// Which bucket: e.g. `openai http://host/v1 gpt-4o-mini`, `intercom https://api.intercom.io`.
    pub service: String,
    /// Requests per minute over the whole run (every worker together); `None`:
    /// no limit of ours, only the service's own pauses (429) are shared.
    pub per_minute: Option<f64>,
}

impl RateLimit {
    pub fn new(service: impl Into<String>, per_minute: Option<f64>) -> Self {
        Self { service: service.into(), per_minute: per_minute.filter(|r| r.is_finite() && *r > 0.0) }
    }

    /// Refill per second.
    pub fn per_second(&self) -> Option<f64> {
        self.per_minute.map(|r| r / 60.0)
    }

    /// The most requests sent at once after a quiet spell: one second's worth
    /// (at least one), so a fixed one-minute window of the service sees at
    /// most the rate plus one second of it.
    pub fn burst(&self) -> f64 {
        self.per_second().map_or(f64::INFINITY, |r| r.max(1.0))
    }
}

/// Decides when requests to a rate-limited service may go.
#[async_trait]
pub trait Pacer: Send + Sync + Debug {
    /// Takes one request's token: `Duration::ZERO` when the request may go
    /// now, else how long to wait before asking again (nothing was taken).
    async fn reserve(&self, limit: &RateLimit) -> Duration;

    /// The service answered "too many requests, wait `wait`": every caller of
    /// `service` (in every worker, for a shared pacer) waits that long.
    async fn pause(&self, service: &str, wait: Duration);
}

/// A token bucket: `tokens` refilled at the rate up to the burst.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub tokens: f64,
    pub at: Instant,
    pub paused_until: Option<Instant>,
}

impl Bucket {
    pub fn full(limit: &RateLimit, now: Instant) -> Self {
        Self { tokens: limit.burst(), at: now, paused_until: None }
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub fn take(&mut self, limit: &RateLimit, now: Instant) -> Duration {
        if let Some(until) = self.paused_until {
            if until > now {
                return until - now;
            }
            self.paused_until = None;
        }
        let Some(rate) = limit.per_second() else { return Duration::ZERO };
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(limit.burst());
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64(((1.0 - self.tokens) / rate).max(0.001))
        }
    }

    /// No request before `until`, and none saved up for the moment it ends.
    pub fn pause(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
        self.tokens = self.tokens.min(0.0);
        self.at = self.at.max(until);
    }
}

/// Buckets in this process's memory: the pacer of a single-process run.
#[derive(Debug, Default)]
pub struct LocalPacer {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl LocalPacer {
    fn with_bucket<T>(&self, service: &str, make: impl FnOnce() -> Bucket, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        f(buckets.entry(service.to_string()).or_insert_with(make))
    }
}

#[async_trait]
impl Pacer for LocalPacer {
    async fn reserve(&self, limit: &RateLimit) -> Duration {
        let now = Instant::now();
        self.with_bucket(&limit.service, || Bucket::full(limit, now), |b| b.take(limit, now))
    }

    async fn pause(&self, service: &str, wait: Duration) {
        let now = Instant::now();
        let empty = || Bucket { tokens: 0.0, at: now, paused_until: None };
        self.with_bucket(service, empty, |b| b.pause(now + wait));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_the_rate() {
        let limit = RateLimit::new("s", Some(120.0)); // 2/s, burst 2
        let t0 = Instant::now();
        let mut b = Bucket::full(&limit, t0);
        assert_eq!(b.take(&limit, t0), Duration::ZERO);
        assert_eq!(b.take(&limit, t0), Duration::ZERO);
        let wait = b.take(&limit, t0);
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(b.take(&limit, t0 + Duration::from_millis(500)), Duration::ZERO);
        // Saving up stops at the burst.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.take(&limit, later), Duration::ZERO);
        assert_eq!(b.take(&limit, later), Duration::ZERO);
        assert!(b.take(&limit, later) > Duration::ZERO);
    }

    #[test]
    fn a_pause_holds_every_request_until_it_ends() {
        let limit = RateLimit::new("s", None);
        let t0 = Instant::now();
        let mut b = Bucket::full(&limit, t0);
        assert_eq!(b.take(&limit, t0), Duration::ZERO, "no rate: only pauses hold requests");
        b.pause(t0 + Duration::from_secs(2));
        assert_eq!(b.take(&limit, t0 + Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(b.take(&limit, t0 + Duration::from_secs(2)), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_local_pause_reaches_every_caller_of_the_service() {
        let pacer = LocalPacer::default();
        let limit = RateLimit::new("llm", Some(6000.0));
        assert_eq!(pacer.reserve(&limit).await, Duration::ZERO);
        pacer.pause("llm", Duration::from_secs(3)).await;
        assert!(pacer.reserve(&limit).await > Duration::from_secs(2));
        assert_eq!(pacer.reserve(&RateLimit::new("other", None)).await, Duration::ZERO);
    }
}
