//! HTTP to Intercom: headers, pacing by the rate-limit headers, and the
//! mapping of answers to the engine's typed source errors.
//!
//! | answer | error |
//! | --- | --- |
//! | 401 | fatal: the token in `INTERCOM_ACCESS_TOKEN` (or `token_env`) is refused |
//! | 403 | fatal: the token lacks the permission |
//! | 429 | retryable, after `Retry-After` or until `X-RateLimit-Reset`, plus jitter |
//! | 408, 409, 500-599, connection errors, time-outs, truncated or malformed bodies | retryable |
//! | any other 4xx to a request that sent a cursor | cursor invalid: the partition restarts from its first page |
//! | 404 to search, 406, other 4xx | fatal, with Intercom's error code and message |
//!
//! Intercom does not say which error an expired or forgotten cursor gets: it
//! has answered 400 `client_error` naming `starting_after`, and a bare 400
//! `parameter_invalid` "Invalid request". So any refusal of a request with a
//! cursor (other than the token's and the rate limiter's) is taken for a bad
//! cursor; the first page, which has none, still decides whether the request
//! itself is wrong: a 4xx there stays fatal.
//!
//! Pacing: every answer's `X-RateLimit-Limit/Remaining/Reset` is read; once
//! the requests this process sent in the current window reach the remaining
//! allowance, further requests wait for the window's reset (plus jitter), so
//! a well-behaved run does not meet 429 at all. Every such wait is an
//! `AdapterStateChange` event (`ok` -> `rate_limited` -> `ok`) and a log line.
//! Before that, the run's [`sluice_core::Pacer`] paces the app's requests at
//! `requests_per_minute` when set; a 429, or an answer saying the window is
//! used up, pauses the app's bucket, which in a distributed run holds every worker.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sluice_core::{Context, RateLimit, SourceError};

use crate::remote::http::{error_summary, header_str, jitter, now_epoch_secs, transport_error};
use crate::util::secret::Secret;

/// The longest a pacing wait or a computed 429 wait lasts (clock skew guard).
const MAX_WAIT: Duration = Duration::from_secs(120);

/// What the rate-limit headers said last.
#[derive(Debug, Default)]
struct GateState {
    /// Requests still allowed in the window ending at `reset_at`, minus the
    /// ones this process sent since (an estimate that never overshoots).
    remaining: Option<u64>,
    /// End of the current window, epoch seconds.
    reset_at: Option<i64>,
}

/// Paces requests by the rate-limit headers. Shared by every partition.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    state: Mutex<GateState>,
}

impl RateGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request may be sent and counts it.
    pub(crate) async fn acquire(&self, ctx: &Context, adapter: &str) {
        loop {
            let wait = {
                let mut s = self.lock();
                let now = now_epoch_secs();
                if s.reset_at.is_some_and(|reset| now >= reset as f64) {
                    // A new window: its allowance is unknown until the next answer.
                    *s = GateState::default();
                }
                match (s.remaining, s.reset_at) {
                    (Some(0), Some(reset)) => {
                        Some(Duration::from_secs_f64((reset as f64 - now).max(0.0)).min(MAX_WAIT))
                    }
                    (Some(left), _) => {
                        s.remaining = Some(left - 1);
                        None
                    }
                    (None, _) => None,
                }
            };
            let Some(wait) = wait else { return };
            let wait = wait + jitter(Duration::from_millis(250));
            let reason = format!(
                "X-RateLimit-Remaining is used up; waiting {} ms for the rate-limit window to reset",
                wait.as_millis()
            );
            tracing::info!(adapter, wait_ms = wait.as_millis() as u64, "rate limit reached: pausing requests");
            ctx.state_change(adapter, "ok", "rate_limited", Some(reason)).await;
            tokio::time::sleep(wait).await;
            ctx.state_change(adapter, "rate_limited", "ok", None).await;
        }
    }

    /// Takes in the rate-limit headers of an answer.
    pub(crate) fn observe(&self, headers: &HeaderMap) {
        let remaining = header_str(headers, "x-ratelimit-remaining").and_then(|v| v.parse::<u64>().ok());
        let reset = header_str(headers, "x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok());
        let (Some(remaining), Some(reset)) = (remaining, reset) else { return };
        let mut s = self.lock();
        match s.reset_at {
            // The same window: requests sent since this answer was made count too.
            Some(current) if current == reset => {
                s.remaining = Some(s.remaining.map_or(remaining, |r| r.min(remaining)))
            }
            // An older window's answer, arriving late: nothing new.
            Some(current) if current > reset => {}
            _ => {
                s.remaining = Some(remaining);
                s.reset_at = Some(reset);
            }
        }
    }

    /// After a 429: nothing more until `reset_at`.
    pub(crate) fn exhausted(&self, reset_at: Option<i64>) {
        let mut s = self.lock();
        s.remaining = Some(0);
        if let Some(reset) = reset_at {
            s.reset_at = Some(reset);
        } else if s.reset_at.is_none() {
            s.reset_at = Some(now_epoch_secs() as i64 + 1);
        }
    }
}

/// An Intercom API endpoint with its token.
#[derive(Debug)]
pub(crate) struct IntercomClient {
    http: reqwest::Client,
    base_url: String,
    token: Secret,
    /// Where the token came from, for messages.
    token_origin: String,
    version: String,
    adapter: String,
    gate: RateGate,
    /// The app's bucket in the run's pacer, shared by every worker of a distributed run.
    limit: RateLimit,
}

/// An answer that came back in full.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl IntercomClient {
    pub(crate) fn new(
        base_url: String,
        token: Secret,
        token_origin: String,
        version: String,
        adapter: String,
        timeout: Duration,
        requests_per_minute: Option<f64>,
    ) -> Result<Self, crate::ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::ConfigError(format!("cannot build the HTTP client: {e}")))?;
        // Intercom's limits are per app (one token, one app) at one regional base URL.
        let limit = RateLimit::new(format!("intercom {base_url}"), requests_per_minute);
        Ok(Self { http, base_url, token, token_origin, version, adapter, gate: RateGate::default(), limit })
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request (after pacing) and reads the whole answer. Transport
    /// failures are retryable; the status is left to the caller.
    async fn send(&self, ctx: &Context, request: reqwest::RequestBuilder, what: &str) -> Result<Answer, SourceError> {
        ctx.pace(&self.adapter, &self.limit).await;
        self.gate.acquire(ctx, &self.adapter).await;
        let request = request
            .bearer_auth(self.token.expose())
            .header("Accept", "application/json")
            .header("Intercom-Version", &self.version);
        let response = request
            .send()
            .await
            .map_err(|e| SourceError::retryable(format!("Intercom {what}: {}", transport_error(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        self.gate.observe(&headers);
        // The window is used up (by this process or another worker of the run): everyone waits for its reset.
        if header_str(&headers, "x-ratelimit-remaining") == Some("0")
            && let Some(reset) = header_str(&headers, "x-ratelimit-reset").and_then(|v| v.parse::<f64>().ok())
        {
            let wait = Duration::from_secs_f64((reset - now_epoch_secs()).clamp(0.0, MAX_WAIT.as_secs_f64()));
            ctx.pacer.pause(&self.limit.service, wait).await;
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| SourceError::retryable(format!("Intercom {what}: {}", transport_error(&e))))?;
        Ok(Answer { status, headers, body: body.to_vec() })
    }

    /// `POST /conversations/search`. `with_cursor`: the body has a
    /// `starting_after` (a 400 `client_error` then means the cursor is invalid).
    pub(crate) async fn search(&self, ctx: &Context, body: &Value, with_cursor: bool) -> Result<Value, SourceError> {
        let what = "search";
        let request = self.http.post(format!("{}/conversations/search", self.base_url)).json(body);
        let answer = self.send(ctx, request, what).await?;
        self.read(ctx, answer, what, with_cursor).await
    }

    /// `GET /conversations/{id}`: the conversation with its parts, or `None` when Intercom does not know it (404).
    pub(crate) async fn conversation(&self, ctx: &Context, id: &str) -> Result<Option<Value>, SourceError> {
        let what = format!("get conversation {id}");
        let request = self.http.get(format!("{}/conversations/{id}", self.base_url));
        let answer = self.send(ctx, request, &what).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        self.read(ctx, answer, &what, false).await.map(Some)
    }

    /// The JSON of a successful answer, or the error the answer means.
    async fn read(&self, ctx: &Context, answer: Answer, what: &str, with_cursor: bool) -> Result<Value, SourceError> {
        if answer.status.is_success() {
            return serde_json::from_slice(&answer.body).map_err(|e| {
                SourceError::retryable(format!("Intercom {what}: the answer is not valid JSON (truncated?): {e}"))
            });
        }
        let error = map_status(what, answer.status, &answer.headers, &answer.body, with_cursor, &self.token_origin);
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            let reset = header_str(&answer.headers, "x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok());
            self.gate.exhausted(reset);
            if let SourceError::Retryable { retry_after: Some(wait), .. } = &error {
                ctx.pacer.pause(&self.limit.service, *wait).await;
            }
            if let SourceError::Retryable { message, retry_after } = &error {
                let wait = retry_after.map(|d| d.as_millis()).unwrap_or_default();
                ctx.state_change(&self.adapter, "ok", "rate_limited", Some(format!("{message}; retry in {wait} ms")))
                    .await;
            }
        }
        Err(error)
    }
}

/// The error an unsuccessful Intercom answer means (see the module docs).
/// `token_origin` names where the token came from; the token never appears.
pub(crate) fn map_status(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    with_cursor: bool,
    token_origin: &str,
) -> SourceError {
    let code = status.as_u16();
    let summary = error_summary(body);
    match code {
        401 => SourceError::fatal(format!(
            "Intercom refused the access token (HTTP 401 unauthorized) on {what}: check {token_origin} \
             (missing, mistyped, revoked, or for another region than the base URL)"
        )),
        403 => SourceError::fatal(format!(
            "Intercom refused access (HTTP 403 forbidden) on {what}: the token in {token_origin} lacks the \
             permission to read conversations ({summary})"
        )),
        429 => SourceError::Retryable {
            message: format!("Intercom {what}: rate limited (HTTP 429 {summary})"),
            retry_after: Some(rate_limit_wait(headers)),
        },
        408 | 409 | 500..=599 => SourceError::Retryable {
            message: format!("Intercom {what}: HTTP {code} {summary}"),
            retry_after: crate::remote::http::retry_after(headers),
        },
        400..=499 if with_cursor => {
            SourceError::CursorInvalid { message: format!("Intercom {what}: HTTP {code} {summary}") }
        }
        404 => SourceError::fatal(format!(
            "Intercom {what}: HTTP 404 {summary}: check the base URL (US https://api.intercom.io, EU \
             https://api.eu.intercom.io, AU https://api.au.intercom.io)"
        )),
        406 => SourceError::fatal(format!("Intercom {what}: HTTP 406 {summary}")),
        _ => SourceError::fatal(format!("Intercom {what}: HTTP {code} {summary}")),
    }
}

/// How long to wait after a 429: `Retry-After` when given, else until
/// `X-RateLimit-Reset`, at least one second, plus up to 500 ms of jitter.
fn rate_limit_wait(headers: &HeaderMap) -> Duration {
    let base = crate::remote::http::retry_after(headers).unwrap_or_else(|| {
        let reset = header_str(headers, "x-ratelimit-reset").and_then(|v| v.parse::<f64>().ok());
        let now = now_epoch_secs();
        reset.map_or(Duration::from_secs(1), |reset| Duration::from_secs_f64((reset - now).max(0.0)))
    });
    base.clamp(Duration::from_secs(1), MAX_WAIT) + jitter(Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn map(code: u16, body: &str, with_cursor: bool) -> SourceError {
        map_status(
            "search",
            StatusCode::from_u16(code).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            with_cursor,
            "INTERCOM_ACCESS_TOKEN",
        )
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let e = map(401, r#"{"errors":[{"code":"unauthorized","message":"Access Token Invalid"}]}"#, false);
        assert!(
            matches!(&e, SourceError::Fatal { message } if message.contains("INTERCOM_ACCESS_TOKEN") && message.contains("401")),
            "{e:?}"
        );
        assert!(matches!(map(403, "{}", false), SourceError::Fatal { message } if message.contains("permission")));
        let cursor = r#"{"type":"error.list","errors":[{"code":"client_error","message":"Invalid starting_after param: expired"}]}"#;
        assert!(matches!(map(400, cursor, true), SourceError::CursorInvalid { .. }));
        assert!(matches!(map(400, cursor, false), SourceError::Fatal { .. }), "no cursor was sent");
        for code in [500, 502, 503, 504, 408] {
            assert!(matches!(map(code, "", false), SourceError::Retryable { .. }), "{code}");
        }
        assert!(
            matches!(map(404, "{}", false), SourceError::Fatal { message } if message.contains("api.eu.intercom.io"))
        );
        assert!(matches!(map(422, "{}", false), SourceError::Fatal { .. }));
    }

    #[test]
    fn any_refusal_of_a_request_with_a_cursor_is_a_bad_cursor() {
        let generic = r#"{"type":"error.list","errors":[{"code":"parameter_invalid","message":"Invalid request"}]}"#;
        match map(400, generic, true) {
            SourceError::CursorInvalid { message } => {
                assert!(message.contains("parameter_invalid: Invalid request"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        for code in [400, 404, 410, 422] {
            assert!(matches!(map(code, generic, true), SourceError::CursorInvalid { .. }), "{code}");
            assert!(matches!(map(code, generic, false), SourceError::Fatal { .. }), "{code} on a first page");
        }
        assert!(matches!(map(401, "{}", true), SourceError::Fatal { .. }));
        assert!(matches!(map(403, "{}", true), SourceError::Fatal { .. }));
        assert!(matches!(map(429, "{}", true), SourceError::Retryable { .. }));
        assert!(matches!(map(409, "{}", true), SourceError::Retryable { .. }));
    }

    #[test]
    fn a_429_waits_for_retry_after_or_the_reset() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        let wait = rate_limit_wait(&h);
        assert!(wait >= Duration::from_secs(3) && wait <= Duration::from_millis(3500), "{wait:?}");
        let mut h = HeaderMap::new();
        let reset = (now_epoch_secs() as i64 + 5).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let wait = rate_limit_wait(&h);
        assert!(wait >= Duration::from_secs(3) && wait <= Duration::from_millis(5600), "{wait:?}");
        assert!(rate_limit_wait(&HeaderMap::new()) >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn the_gate_pauses_when_the_allowance_is_used_up() {
        let gate = RateGate::default();
        let ctx = Context::detached();
        let mut h = HeaderMap::new();
        let reset = now_epoch_secs() as i64 + 1;
        h.insert("x-ratelimit-remaining", HeaderValue::from(2u64));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        gate.observe(&h);
        let expected = reset as f64 - now_epoch_secs();
        let started = std::time::Instant::now();
        gate.acquire(&ctx, "t").await;
        gate.acquire(&ctx, "t").await;
        assert!(started.elapsed() < Duration::from_millis(100), "two requests are allowed at once");
        gate.acquire(&ctx, "t").await;
        let waited = started.elapsed();
        assert!(waited.as_secs_f64() + 0.05 >= expected, "waited {waited:?} for a reset {expected}s away");
        assert!(now_epoch_secs() >= reset as f64, "the third request went after the reset");
    }
}
