//! Exponential backoff with jitter for the engine's retries (source pages,
//! retryable record failures, store commits). The schedule comes from backon;
//! the loop is ours because every wait must honour a server's Retry-After,
//! emit an event and be cut short when the run is aborted.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::context::Context;

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 6, min_delay: Duration::from_millis(200), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries as usize)
            .with_jitter()
            .build()
    }
}

/// What a failed attempt means for the retry loop.
pub enum Verdict {
    /// Give up: the error is final.
    Fatal,
    /// Try again after the backoff delay, or after the given delay if longer.
    Retry(Option<Duration>),
}

/// Runs `op` until it succeeds, its error is fatal, retries run out, or
/// `cancel` fires (the last error is returned then). `adapter` names what is
/// retried in the `AdapterStateChange` events.
pub async fn with_retries<T, E, Fut>(
    policy: &RetryPolicy,
    ctx: &Context,
    adapter: &str,
    cancel: &CancellationToken,
    mut op: impl FnMut() -> Fut,
    verdict: impl Fn(&E) -> Verdict,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut delays = policy.delays();
    let mut waited = false;
    loop {
        let error = match op().await {
            Ok(value) => {
                if waited {
                    ctx.state_change(adapter, "backing_off", "ok", None).await;
                }
                return Ok(value);
            }
            Err(error) => error,
        };
        let Verdict::Retry(retry_after) = verdict(&error) else {
            return Err(error);
        };
        let Some(backoff) = delays.next() else {
            return Err(error);
        };
        let delay = retry_after.map_or(backoff, |after| after.max(backoff));
        tracing::warn!(adapter, delay_ms = delay.as_millis() as u64, %error, "retrying after error");
        ctx.state_change(adapter, "ok", "backing_off", Some(format!("{error}; retry in {} ms", delay.as_millis())))
            .await;
        waited = true;
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return Err(error),
        }
    }
}
