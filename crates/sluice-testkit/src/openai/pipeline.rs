//! The checks every request to the fake OpenAI goes through, in order
//! (see the module docs of [`super`]): counting, latency, auth, the
//! requests-per-minute limiter and injected faults, around the work of one
//! endpoint, then the tallies of its answer.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::config::ApiEndpoint;
use super::model::Mode;
use super::state::Shared;
use crate::faults::FaultKind;
use crate::server;

/// OpenAI's error body.
pub(super) fn api_error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

static LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
static REMAINING_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-requests");
static RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
static LIMIT_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");
static RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");
static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static PROCESSING_MS: HeaderName = HeaderName::from_static("openai-processing-ms");

/// OpenAI's duration format: `"120ms"`, `"17.5s"`, `"6m0s"`.
pub(crate) fn fmt_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}s")
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len().max(1));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// The result of the request itself.
pub(super) struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// On success: what to tally.
    pub tally: Tally,
}

/// What a 200 answer adds to the counters and input tallies.
pub(super) enum Tally {
    None,
    Chat { input: u64, mode: Mode, prompt: u64, completion: u64 },
    Embeddings { inputs: Vec<u64>, tokens: u64 },
}

/// A 400 `invalid_request_error`.
pub(super) fn bad_request(message: &str, param: Option<&str>, code: Option<&str>) -> Answer {
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: api_error(message, "invalid_request_error", param, code),
        tally: Tally::None,
    }
}

/// Counts a request as in flight until its answer is ready (on every return path).
struct InFlight(Arc<Shared>, std::time::Instant);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let mut m = shared.lock();
        m.in_flight += 1;
        m.counters.max_in_flight = m.counters.max_in_flight.max(m.in_flight);
        drop(m);
        InFlight(shared.clone(), std::time::Instant::now())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut m = self.0.lock();
        m.in_flight -= 1;
        m.counters.busy_micros += self.1.elapsed().as_micros() as u64;
    }
}

/// Runs the common checks (see the module docs of [`super`]) around `work`.
pub(super) async fn handle(
    shared: Arc<Shared>,
    ep: ApiEndpoint,
    headers: HeaderMap,
    model_name: String,
    work: impl FnOnce(&Shared, FaultKind) -> Answer,
) -> Response {
    let started = std::time::Instant::now();
    let _in_flight = InFlight::enter(&shared);
    let (request_id, latency) = {
        let mut m = shared.lock();
        m.requests += 1;
        let n = m.requests;
        match ep {
            ApiEndpoint::Chat => m.counters.chat_requests += 1,
            ApiEndpoint::Embeddings => m.counters.embedding_requests += 1,
            ApiEndpoint::Models => m.counters.model_requests += 1,
            ApiEndpoint::Other => m.counters.other_requests += 1,
        }
        let latency = m.faults.latency_ms(m.faults.settings().targets(ep));
        if latency > 0 {
            m.counters.faults.latency += 1;
        }
        (format!("req_{}", server::request_id(shared.seed, n)), latency)
    };
    // The latency is the time to the answer, the fake's own work included (as
    // a real API's latency includes its compute): each answer waits until
    // `latency` after the request arrived, and is tallied after that wait.
    let answered_at = tokio::time::Instant::from_std(started) + std::time::Duration::from_millis(latency);
    let wait = || tokio::time::sleep_until(answered_at);
    let base_headers = vec![(X_REQUEST_ID.clone(), request_id.clone())];

    // Auth.
    let key = server::bearer(&headers);
    if key.as_deref() != Some(shared.key.as_str()) {
        wait().await;
        shared.lock().counters.unauthorized += 1;
        let body = match key.filter(|k| !k.is_empty()) {
            None => api_error(
                "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if you're accessing the API from your browser and are prompted for a username and password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                None,
                None,
            ),
            Some(k) => api_error(
                &format!(
                    "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
                    mask_key(&k)
                ),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
        };
        return server::json(StatusCode::UNAUTHORIZED, &body, &base_headers);
    }

    // Rate limit (requests per minute, fixed windows).
    let now_ms = shared.clock.now_ms();
    let (mut out_headers, limited, fault, drop_mode, retry_after_secs, limit) = {
        let mut m = shared.lock();
        let limit = m.rpm_limit;
        let window_start = now_ms - now_ms.rem_euclid(60_000);
        if m.window.0 != window_start {
            m.window = (window_start, 0, 0);
        }
        m.window.1 = m.window.1.saturating_add(1);
        let used = m.window.1;
        let limited = used > limit;
        let reset_ms = window_start + 60_000 - now_ms;
        let targeted = !limited && m.faults.settings().targets(ep);
        let fault = m.faults.next(targeted);
        let tokens_used = m.window.2;
        let mut h = base_headers.clone();
        h.extend([
            (LIMIT_REQUESTS.clone(), limit.to_string()),
            (REMAINING_REQUESTS.clone(), limit.saturating_sub(used).to_string()),
            (RESET_REQUESTS.clone(), fmt_duration(reset_ms)),
            (LIMIT_TOKENS.clone(), shared.tpm_limit.to_string()),
            (REMAINING_TOKENS.clone(), shared.tpm_limit.saturating_sub(tokens_used).to_string()),
            (RESET_TOKENS.clone(), fmt_duration(reset_ms)),
        ]);
        if limited {
            let secs = (reset_ms as u64).div_ceil(1000).max(1);
            h.push((RETRY_AFTER.clone(), secs.to_string()));
            h.push((RETRY_AFTER_MS.clone(), reset_ms.max(1).to_string()));
        }
        (h, limited, fault, m.faults.settings().drop_mode, m.faults.settings().retry_after_secs, limit)
    };
    let rate_limit_body = |wait: &str| {
        api_error(
            &format!(
                "Rate limit reached for {model_name} in organization org-testkit on requests per min (RPM): Limit {limit}, Used {limit}, Requested 1. Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more."
            ),
            "requests",
            None,
            Some("rate_limit_exceeded"),
        )
    };
    if limited {
        wait().await;
        shared.lock().counters.rate_limited += 1;
        let wait = out_headers.iter().find(|(n, _)| *n == RESET_REQUESTS).map(|(_, v)| v.clone()).unwrap_or_default();
        return server::json(StatusCode::TOO_MANY_REQUESTS, &rate_limit_body(&wait), &out_headers);
    }

    // Injected faults.
    if fault != FaultKind::None {
        wait().await;
    }
    match fault {
        FaultKind::Drop => {
            shared.lock().counters.faults.record(fault);
            let partial = json!({"id": "chatcmpl-dropped", "object": "chat.completion", "choices": []});
            return server::dropped(drop_mode, &partial, &out_headers);
        }
        FaultKind::ServerError => {
            shared.lock().counters.faults.record(fault);
            let body = api_error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
                None,
            );
            return server::json(StatusCode::INTERNAL_SERVER_ERROR, &body, &out_headers);
        }
        FaultKind::RateLimit => {
            shared.lock().counters.faults.record(fault);
            let secs = retry_after_secs.max(1);
            for (name, value) in out_headers.iter_mut() {
                if *name == REMAINING_REQUESTS {
                    *value = "0".to_string();
                }
            }
            out_headers.push((RETRY_AFTER.clone(), secs.to_string()));
            out_headers.push((RETRY_AFTER_MS.clone(), (secs * 1000).to_string()));
            let body = rate_limit_body(&format!("{secs}s"));
            return server::json(StatusCode::TOO_MANY_REQUESTS, &body, &out_headers);
        }
        FaultKind::Malformed | FaultKind::None => {}
    }

    let answer = work(&shared, fault);
    if fault == FaultKind::None {
        wait().await;
    }
    let mut truncate = false;
    {
        let mut m = shared.lock();
        if answer.status == StatusCode::OK {
            match &answer.tally {
                Tally::Chat { input, mode, prompt, completion } => {
                    if fault == FaultKind::Malformed {
                        m.counters.faults.record(fault);
                    }
                    m.counters.chat_completions += 1;
                    let mode_name = serde_json::to_value(mode)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    *m.counters.chat_modes.entry(mode_name).or_default() += 1;
                    m.counters.prompt_tokens += prompt;
                    m.counters.completion_tokens += completion;
                    m.window.2 += prompt + completion;
                    *m.chat_inputs.entry(*input).or_default() += 1;
                }
                Tally::Embeddings { inputs, tokens } => {
                    if fault == FaultKind::Malformed {
                        m.counters.faults.record(fault);
                        truncate = true;
                    } else {
                        m.counters.embedding_responses += 1;
                        m.counters.embedded_inputs += inputs.len() as u64;
                        m.counters.prompt_tokens += tokens;
                        m.window.2 += tokens;
                        for h in inputs {
                            *m.embedding_inputs.entry(*h).or_default() += 1;
                        }
                    }
                }
                Tally::None => {}
            }
        } else if answer.status == StatusCode::BAD_REQUEST {
            m.counters.bad_requests += 1;
        }
    }
    out_headers.push((PROCESSING_MS.clone(), started.elapsed().as_millis().to_string()));
    if truncate {
        server::truncated(&answer.body, &out_headers)
    } else {
        server::json(answer.status, &answer.body, &out_headers)
    }
}

/// The `model` of a request body, for the rate-limit message.
pub(super) fn model_of(body: &Option<Value>) -> String {
    body.as_ref().and_then(|b| b.get("model")).and_then(Value::as_str).unwrap_or("gpt-4o-mini").to_string()
}

pub(super) const UNPARSABLE: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_openai() {
        assert_eq!(fmt_duration(120), "120ms");
        assert_eq!(fmt_duration(17_500), "17.5s");
        assert_eq!(fmt_duration(1_000), "1s");
        assert_eq!(fmt_duration(360_000), "6m0s");
        assert_eq!(fmt_duration(-5), "0ms");
    }

    #[test]
    fn keys_are_masked() {
        assert_eq!(mask_key("sk-wrong-key-1234"), "sk-**********1234");
        assert_eq!(mask_key("short"), "*****");
    }
}
