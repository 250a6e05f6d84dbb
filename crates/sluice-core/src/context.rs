//! What a source or stage gets from the engine while a run is going.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::checkpoint::CostLedger;
use crate::event::{EventKind, EventSink};
use crate::memo::WriteAhead;
use crate::pacer::{LocalPacer, Pacer, RateLimit};

#[derive(Clone, Debug)]
pub struct Context {
    pub events: EventSink,
    /// Cancelled when the run is asked to stop; long waits should watch it.
    pub stop: CancellationToken,
    /// Cancelled when the run fails: nothing done from then on is committed,
    /// so retry loops and backoffs should give up at once.
    pub abort: CancellationToken,
    /// Where stages record the remote calls and tokens they pay for.
    pub usage: Arc<UsageMeter>,
    /// Where stages hand each paid result as soon as it arrives (see [`crate::stage::write_ahead`]).
    pub write_ahead: WriteAhead,
    /// Paces requests to rate-limited services (see [`crate::pacer`]); shared
    /// by every worker of a distributed run.
    pub pacer: Arc<dyn Pacer>,
}

/// Counts paid calls as they happen; the engine writes a snapshot into every
/// checkpoint, so the cost ledger survives a resume.
#[derive(Debug, Default)]
pub struct UsageMeter {
    llm_calls: AtomicU64,
    embedding_calls: AtomicU64,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    embedding_tokens: AtomicU64,
    /// Woken at every paid call, so the write-ahead stores the ledger at once.
    changed: tokio::sync::Notify,
}

impl UsageMeter {
    pub fn new(seed: CostLedger) -> Self {
        Self {
            llm_calls: AtomicU64::new(seed.llm_calls),
            embedding_calls: AtomicU64::new(seed.embedding_calls),
            tokens_in: AtomicU64::new(seed.tokens_in),
            tokens_out: AtomicU64::new(seed.tokens_out),
            embedding_tokens: AtomicU64::new(seed.embedding_tokens),
            changed: tokio::sync::Notify::new(),
        }
    }

    pub fn llm_call(&self, tokens_in: u64, tokens_out: u64) {
        self.llm_calls.fetch_add(1, Ordering::Relaxed);
        self.tokens(tokens_in, tokens_out);
        self.changed.notify_one();
    }

    pub fn embedding_call(&self, tokens_in: u64) {
        self.embedding_calls.fetch_add(1, Ordering::Relaxed);
        self.embedding_tokens.fetch_add(tokens_in, Ordering::Relaxed);
        self.tokens(tokens_in, 0);
        self.changed.notify_one();
    }

    fn tokens(&self, tokens_in: u64, tokens_out: u64) {
        self.tokens_in.fetch_add(tokens_in, Ordering::Relaxed);
        self.tokens_out.fetch_add(tokens_out, Ordering::Relaxed);
    }

    /// Returns after the next paid call (at once if one was made since the last wait).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn snapshot(&self) -> CostLedger {
        CostLedger {
            llm_calls: self.llm_calls.load(Ordering::Relaxed),
            embedding_calls: self.embedding_calls.load(Ordering::Relaxed),
            tokens_in: self.tokens_in.load(Ordering::Relaxed),
            tokens_out: self.tokens_out.load(Ordering::Relaxed),
            embedding_tokens: self.embedding_tokens.load(Ordering::Relaxed),
        }
    }
}

impl Context {
    pub fn detached() -> Self {
        Self {
            events: EventSink::discard(),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            usage: Arc::default(),
            write_ahead: WriteAhead::default(),
            pacer: Arc::new(LocalPacer::default()),
        }
    }

    /// Waits until one request to `limit.service` may go (see [`crate::pacer`]),
    /// reporting waits of a second or more as `AdapterStateChange` events of
    /// `adapter`. Returns early, without a token, when the run is aborted or
    /// stopped: the caller's request then fails or is not committed anyway.
    pub async fn pace(&self, adapter: &str, limit: &RateLimit) {
        // The longest sleep before asking again: a pause lifted elsewhere is seen within it.
        const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(5);
        let mut reported = false;
        loop {
            let wait = self.pacer.reserve(limit).await;
            if wait.is_zero() {
                break;
            }
            if !reported && wait >= std::time::Duration::from_secs(1) {
                reported = true;
                let why = format!("pacing {}: waiting {} ms for the rate limit", limit.service, wait.as_millis());
                self.state_change(adapter, "ok", "rate_limited", Some(why)).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                _ = self.abort.cancelled() => break,
                _ = self.stop.cancelled() => break,
            }
        }
        if reported {
            self.state_change(adapter, "rate_limited", "ok", None).await;
        }
    }

    /// Reports a change of an adapter's state (rate limited, backing off...),
    /// as an event and a log line.
    pub async fn state_change(&self, adapter: &str, old_state: &str, new_state: &str, reason: Option<String>) {
        tracing::info!(adapter, old_state, new_state, reason = reason.as_deref().unwrap_or(""), "adapter state change");
        self.events
            .emit(EventKind::AdapterStateChange {
                adapter: adapter.to_string(),
                old_state: old_state.to_string(),
                new_state: new_state.to_string(),
                reason,
            })
            .await;
    }
}
