//! A fake OpenAI-compatible API: chat completions that classify support
//! conversations by keywords, deterministic embeddings, auth, rate-limit
//! headers, and fault injection.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sluice_testkit::openai::{FakeOpenAi, OpenAiConfig};
//! let fake = FakeOpenAi::start(OpenAiConfig::default()).await?;
//! let base = format!("{}/v1", fake.base_url()); // the client's base URL
//! // ... `Authorization: Bearer sk-test` ...
//! assert_eq!(fake.counters().max_chat_repeats, 0);
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! - `POST /v1/chat/completions`: `model` and a non-empty `messages` are
//!   required; `response_format` may be `text`, `json_object` (then some
//!   message must contain the word "json", as OpenAI demands, else 400) or
//!   `json_schema`; `temperature` must be within 0..=2; `n` gives that many
//!   identical choices; `stream: true` is refused with 400 (not modelled).
//!   The answer is a `chat.completion` whose `message.content` is a JSON
//!   text chosen by [`model::detect_mode`]:
//!   - classify: `{"category": C, "confidence": X, "reason": "mentions '...'"}`
//!     where C is chosen by keywords of the **last user message** and, when
//!     the request gives a category list ([`model::parse_categories`]: a
//!     `json_schema` enum, a JSON array in the system prompt, or a
//!     "Categories:" line or bullet list), always one of its items;
//!   - facets (system prompt says "facet"):
//!     `{"product_area": ..., "sentiment": ..., "intent": ...}`;
//!   - theme label (system prompt says "label" or "summary", and not
//!     "categor"): `{"label": ..., "summary": ...}`.
//! - `POST /v1/embeddings`: `input` a string or an array of strings (or
//!   token arrays), at most 2048, none empty; `model`; optional `dimensions`
//!   (default 64 in the fake, unlike the real models' 1536, to stay cheap;
//!   refused for `text-embedding-ada-002`); `encoding_format` `float` or
//!   `base64` (little-endian f32). Vectors come from [`model::embed`].
//! - `GET /v1/models`: a short model list.
//!
//! Errors have OpenAI's shape:
//! `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`.
//!
//! # Order of checks
//!
//! counted -> `latency_ms` (targeted endpoints) -> `Authorization: Bearer`
//! (401 `invalid_api_key`, or code null when no key is sent) -> the
//! requests-per-minute limiter (fixed windows aligned on the minute;
//! headers `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
//! `x-ratelimit-reset-requests` like `"12.5s"`, and the `-tokens`
//! counterparts, which are informative only; over the limit: 429
//! `rate_limit_exceeded` with `retry-after`) -> injected faults -> request
//! validation (400 `invalid_request_error`) -> the answer.
//!
//! # Counting inputs
//!
//! Each 200 chat answer (malformed content included: it was paid for)
//! counts the hash ([`crate::text_hash`]) of the last user message; each
//! fully answered embeddings request counts every input. So a test can
//! assert that no conversation was classified twice
//! ([`FakeOpenAi::chat_count`], [`OpenAiCounters::max_chat_repeats`]).
//!
//! # Test-control endpoints (no auth, not counted)
//!
//! `GET`/`POST /_testkit/faults` (JSON patch of [`OpenAiFaults`]),
//! `GET /_testkit/counters`, `POST /_testkit/reset`.

pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::model::Mode;
use crate::clock::Clock;
use crate::faults::{DropMode, FaultCounts, FaultKind, Periods, Schedule};
use crate::rng::text_hash;
use crate::server::{self, Running};

/// Which endpoints the faults (latency included) apply to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiTarget {
    /// Chat and embeddings.
    #[default]
    #[serde(alias = "both")]
    All,
    Chat,
    Embeddings,
}

/// Fault settings of the fake OpenAI. JSON patches may name only what they
/// change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenAiFaults {
    pub endpoints: OpenAiTarget,
    /// Sleep this long before answering each targeted request.
    pub latency_ms: u64,
    /// Every Nth targeted request: 500 `server_error`.
    pub fail_every: Option<u64>,
    /// Every Nth targeted request: 429 `rate_limit_exceeded` with
    /// `retry-after: retry_after_secs`.
    pub rate_limit_every: Option<u64>,
    /// Every Nth targeted request: the connection is dropped.
    pub drop_every: Option<u64>,
    pub drop_mode: DropMode,
    /// Every Nth targeted request: chat answers 200 with prose instead of
    /// JSON in `message.content`; embeddings answer truncated JSON.
    pub malformed_every: Option<u64>,
    /// Faults for the next requests, one each, before the periodic ones.
    pub script: Vec<FaultKind>,
    /// `retry-after` of injected 429s. Default 1.
    pub retry_after_secs: u64,
}

impl Default for OpenAiFaults {
    fn default() -> Self {
        OpenAiFaults {
            endpoints: OpenAiTarget::All,
            latency_ms: 0,
            fail_every: None,
            rate_limit_every: None,
            drop_every: None,
            drop_mode: DropMode::default(),
            malformed_every: None,
            script: Vec::new(),
            retry_after_secs: 1,
        }
    }
}

impl OpenAiFaults {
    fn periods(&self) -> Periods {
        Periods {
            drop_every: self.drop_every,
            fail_every: self.fail_every,
            rate_limit_every: self.rate_limit_every,
            malformed_every: self.malformed_every,
        }
    }

    fn targets(&self, ep: ApiEndpoint) -> bool {
        matches!(
            (self.endpoints, ep),
            (OpenAiTarget::All, ApiEndpoint::Chat | ApiEndpoint::Embeddings)
                | (OpenAiTarget::Chat, ApiEndpoint::Chat)
                | (OpenAiTarget::Embeddings, ApiEndpoint::Embeddings)
        )
    }
}

/// Configuration of a fake OpenAI API.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// The only API key accepted. Default `sk-test`.
    pub key: String,
    /// Requests per minute. Default 10,000.
    pub rpm_limit: u32,
    /// Tokens per minute, shown in headers only (not enforced). Default
    /// 10,000,000.
    pub tpm_limit: u64,
    /// Embedding size when the request gives no `dimensions`. Default 64.
    pub default_dimensions: usize,
    pub faults: OpenAiFaults,
    pub clock: Clock,
    /// Port on 127.0.0.1; 0 (default) picks a free one.
    pub port: u16,
    /// Salts ids (`chatcmpl-...`, request ids).
    pub seed: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            key: "sk-test".to_string(),
            rpm_limit: 10_000,
            tpm_limit: 10_000_000,
            default_dimensions: 64,
            faults: OpenAiFaults::default(),
            clock: Clock::system(),
            port: 0,
            seed: 7,
        }
    }
}

impl OpenAiConfig {
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }
    pub fn with_rpm_limit(mut self, rpm: u32) -> Self {
        self.rpm_limit = rpm;
        self
    }
    pub fn with_default_dimensions(mut self, dims: usize) -> Self {
        self.default_dimensions = dims;
        self
    }
    pub fn with_faults(mut self, faults: OpenAiFaults) -> Self {
        self.faults = faults;
        self
    }
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApiEndpoint {
    Chat,
    Embeddings,
    Models,
    Other,
}

/// What the fake has seen and done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiCounters {
    pub chat_requests: u64,
    pub embedding_requests: u64,
    pub model_requests: u64,
    pub other_requests: u64,
    /// Chat requests answered 200 (malformed content included).
    pub chat_completions: u64,
    /// Chat answers per mode (`classify`, `facets`, `theme_label`).
    pub chat_modes: BTreeMap<String, u64>,
    /// Embeddings requests answered in full.
    pub embedding_responses: u64,
    /// Inputs embedded in those.
    pub embedded_inputs: u64,
    pub unauthorized: u64,
    /// 400s.
    pub bad_requests: u64,
    /// 429s from the real limiter (injected ones are in `faults`).
    pub rate_limited: u64,
    pub faults: FaultCounts,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Distinct last-user-message texts answered.
    pub distinct_chat_inputs: u64,
    /// The most times one of them was answered (0 when none).
    pub max_chat_repeats: u64,
    /// Distinct embedding input texts embedded.
    pub distinct_embedding_inputs: u64,
    /// The most times one of them was embedded.
    pub max_embedding_repeats: u64,
    /// The most requests the fake was handling at once (any endpoint).
    pub max_in_flight: u64,
}

struct Mutable {
    faults: OpenAiFaults,
    schedule: Schedule,
    counters: OpenAiCounters,
    chat_inputs: HashMap<u64, u64>,
    embedding_inputs: HashMap<u64, u64>,
    rpm_limit: u32,
    /// (window start ms, requests in it, tokens in it)
    window: (i64, u32, u64),
    requests: u64,
    /// Requests being handled now.
    in_flight: u64,
}

struct Shared {
    key: String,
    tpm_limit: u64,
    default_dimensions: usize,
    seed: u64,
    clock: Clock,
    m: Mutex<Mutable>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_faults(&self, faults: OpenAiFaults) {
        let mut m = self.lock();
        m.schedule.reset(&faults.script);
        m.faults = faults;
    }

    fn counters(&self) -> OpenAiCounters {
        let m = self.lock();
        let mut c = m.counters.clone();
        c.distinct_chat_inputs = m.chat_inputs.len() as u64;
        c.max_chat_repeats = m.chat_inputs.values().copied().max().unwrap_or(0);
        c.distinct_embedding_inputs = m.embedding_inputs.len() as u64;
        c.max_embedding_repeats = m.embedding_inputs.values().copied().max().unwrap_or(0);
        c
    }
}

/// A running fake OpenAI API. Dropping it stops the server.
pub struct FakeOpenAi {
    shared: Arc<Shared>,
    running: Running,
}

impl std::fmt::Debug for FakeOpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOpenAi").field("addr", &self.running.addr()).finish()
    }
}

impl FakeOpenAi {
    /// Starts serving on 127.0.0.1.
    pub async fn start(config: OpenAiConfig) -> io::Result<FakeOpenAi> {
        let mut schedule = Schedule::default();
        schedule.reset(&config.faults.script);
        let shared = Arc::new(Shared {
            key: config.key,
            tpm_limit: config.tpm_limit,
            default_dimensions: config.default_dimensions.max(1),
            seed: config.seed,
            clock: config.clock,
            m: Mutex::new(Mutable {
                faults: config.faults,
                schedule,
                counters: OpenAiCounters::default(),
                chat_inputs: HashMap::new(),
                embedding_inputs: HashMap::new(),
                rpm_limit: config.rpm_limit,
                window: (i64::MIN, 0, 0),
                requests: 0,
                in_flight: 0,
            }),
        });
        let running = Running::start(config.port, router(shared.clone())).await?;
        Ok(FakeOpenAi { shared, running })
    }

    /// `http://127.0.0.1:PORT` (the API lives under `/v1`).
    pub fn base_url(&self) -> String {
        self.running.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr()
    }

    /// The accepted API key.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The current fault settings (`script`: what remains of it).
    pub fn faults(&self) -> OpenAiFaults {
        let m = self.shared.lock();
        let mut f = m.faults.clone();
        f.script = m.schedule.remaining_script();
        f
    }

    /// Replaces the fault settings and restarts the fault schedule.
    pub fn set_faults(&self, faults: OpenAiFaults) {
        self.shared.set_faults(faults);
    }

    /// Edits the fault settings in place (and restarts the schedule).
    pub fn update_faults(&self, edit: impl FnOnce(&mut OpenAiFaults)) {
        let mut f = self.faults();
        edit(&mut f);
        self.set_faults(f);
    }

    pub fn set_rpm_limit(&self, rpm: u32) {
        self.shared.lock().rpm_limit = rpm;
    }

    pub fn counters(&self) -> OpenAiCounters {
        self.shared.counters()
    }

    /// Zeroes counters and the input tallies.
    pub fn reset_counters(&self) {
        let mut m = self.shared.lock();
        m.counters = OpenAiCounters::default();
        m.chat_inputs.clear();
        m.embedding_inputs.clear();
    }

    /// How many times a last-user-message text was answered.
    pub fn chat_count(&self, text: &str) -> u64 {
        self.shared.lock().chat_inputs.get(&text_hash(text)).copied().unwrap_or(0)
    }

    /// How many times a text was embedded.
    pub fn embedding_count(&self, text: &str) -> u64 {
        self.shared.lock().embedding_inputs.get(&text_hash(text)).copied().unwrap_or(0)
    }

    /// Answer count per [`crate::text_hash`] of the last user message.
    pub fn chat_input_counts(&self) -> HashMap<u64, u64> {
        self.shared.lock().chat_inputs.clone()
    }

    /// Embed count per [`crate::text_hash`] of each input.
    pub fn embedding_input_counts(&self) -> HashMap<u64, u64> {
        self.shared.lock().embedding_inputs.clone()
    }

    /// Stops the server, letting in-flight requests finish.
    pub async fn shutdown(mut self) {
        self.running.shutdown().await;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_handler))
        .route("/v1/embeddings", post(embeddings_handler))
        .route("/v1/models", get(models_handler))
        .route("/_testkit/faults", get(tk_get_faults).post(tk_set_faults))
        .route("/_testkit/counters", get(tk_counters))
        .route("/_testkit/reset", post(tk_reset))
        .fallback(fallback_handler)
        .method_not_allowed_fallback(fallback_handler)
        .with_state(shared)
}

fn api_error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
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
struct Answer {
    status: StatusCode,
    body: Value,
    /// On success: what to tally.
    tally: Tally,
}

enum Tally {
    None,
    Chat { input: u64, mode: Mode, prompt: u64, completion: u64 },
    Embeddings { inputs: Vec<u64>, tokens: u64 },
}

fn bad_request(message: &str, param: Option<&str>, code: Option<&str>) -> Answer {
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: api_error(message, "invalid_request_error", param, code),
        tally: Tally::None,
    }
}

/// Counts a request as in flight until its answer is ready (on every return path).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> Self {
        let mut m = shared.lock();
        m.in_flight += 1;
        m.counters.max_in_flight = m.counters.max_in_flight.max(m.in_flight);
        drop(m);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

async fn handle(
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
        let latency = if m.faults.targets(ep) { m.faults.latency_ms } else { 0 };
        if latency > 0 {
            m.counters.faults.latency += 1;
        }
        (format!("req_{}", server::request_id(shared.seed, n)), latency)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let base_headers = vec![(X_REQUEST_ID.clone(), request_id.clone())];

    // Auth.
    let key = server::bearer(&headers);
    if key.as_deref() != Some(shared.key.as_str()) {
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
        let fault = if !limited && m.faults.targets(ep) {
            let p = m.faults.periods();
            m.schedule.next(p)
        } else {
            FaultKind::None
        };
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
        (h, limited, fault, m.faults.drop_mode, m.faults.retry_after_secs, limit)
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
        shared.lock().counters.rate_limited += 1;
        let wait = out_headers.iter().find(|(n, _)| *n == RESET_REQUESTS).map(|(_, v)| v.clone()).unwrap_or_default();
        return server::json(StatusCode::TOO_MANY_REQUESTS, &rate_limit_body(&wait), &out_headers);
    }

    // Injected faults.
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

fn model_of(body: &Option<Value>) -> String {
    body.as_ref().and_then(|b| b.get("model")).and_then(Value::as_str).unwrap_or("gpt-4o-mini").to_string()
}

const UNPARSABLE: &str = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)";

async fn chat_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let model_name = model_of(&parsed);
    handle(shared, ApiEndpoint::Chat, headers, model_name, move |s, fault| {
        chat(s, parsed, fault == FaultKind::Malformed)
    })
    .await
}

/// The text of a message's `content`: a string, or the `text` parts of an
/// array of content parts.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            Some(parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n"))
        }
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn chat(shared: &Shared, body: Option<Value>, malformed: bool) -> Answer {
    let Some(body) = body.filter(Value::is_object) else {
        return bad_request(UNPARSABLE, None, None);
    };
    let Some(model_name) = body.get("model").and_then(Value::as_str) else {
        return bad_request("you must provide a model parameter", None, None);
    };
    let Some(messages) = body.get("messages") else {
        return bad_request(
            "Missing required parameter: 'messages'.",
            Some("messages"),
            Some("missing_required_parameter"),
        );
    };
    let Some(messages) = messages.as_array() else {
        return bad_request(
            &format!("Invalid type for 'messages': expected an array, but got {messages} instead."),
            Some("messages"),
            Some("invalid_type"),
        );
    };
    if messages.is_empty() {
        return bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        );
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return bad_request("sluice-testkit does not model stream=true", Some("stream"), None);
    }
    if let Some(t) = body.get("temperature").filter(|t| !t.is_null()) {
        match t.as_f64() {
            Some(x) if (0.0..=2.0).contains(&x) => {}
            Some(x) if x > 2.0 => {
                return bad_request(
                    &format!(
                        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got {x} instead."
                    ),
                    Some("temperature"),
                    Some("decimal_above_max_value"),
                );
            }
            _ => {
                return bad_request(
                    &format!("Invalid 'temperature': expected a number between 0 and 2, but got {t} instead."),
                    Some("temperature"),
                    Some("invalid_value"),
                );
            }
        }
    }
    let mut system = String::new();
    let mut last_user: Option<String> = None;
    let mut all_text = String::new();
    for (i, msg) in messages.iter().enumerate() {
        let role = msg.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "system" | "developer" | "user" | "assistant" | "tool") {
            return bad_request(
                &format!(
                    "Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'."
                ),
                Some(&format!("messages[{i}].role")),
                Some("invalid_value"),
            );
        }
        let Some(text) = msg.get("content").and_then(content_text) else {
            return bad_request(
                &format!("Invalid type for 'messages[{i}].content'."),
                Some(&format!("messages[{i}].content")),
                Some("invalid_type"),
            );
        };
        all_text.push_str(&text);
        all_text.push('\n');
        match role {
            "system" | "developer" => {
                system.push_str(&text);
                system.push('\n');
            }
            "user" => last_user = Some(text),
            _ => {}
        }
    }
    let mut schema: Option<&Value> = None;
    if let Some(rf) = body.get("response_format").filter(|v| !v.is_null()) {
        match rf.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                if !all_text.to_lowercase().contains("json") {
                    return bad_request(
                        "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
                        Some("messages"),
                        None,
                    );
                }
            }
            Some("json_schema") => match rf.get("json_schema") {
                Some(js) if js.is_object() => schema = Some(js),
                _ => {
                    return bad_request(
                        "Missing required parameter: 'response_format.json_schema'.",
                        Some("response_format.json_schema"),
                        Some("missing_required_parameter"),
                    );
                }
            },
            _ => {
                return bad_request(
                    "Invalid value for 'response_format.type': expected one of 'text', 'json_object' or 'json_schema'.",
                    Some("response_format.type"),
                    Some("invalid_value"),
                );
            }
        }
    }
    let user = last_user.unwrap_or_default();
    let mode = model::detect_mode(&system, schema);
    let categories = model::parse_categories(&system, schema);
    let content = if malformed {
        model::malformed_answer(mode, categories.as_deref(), &user)
    } else {
        model::answer(mode, categories.as_deref(), &user)
    };
    let n = body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 8);
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| m.get("content").and_then(content_text).map(|t| model::approx_tokens(&t)).unwrap_or(0) + 4)
        .sum::<u64>()
        + 3;
    let completion_tokens = model::approx_tokens(&content) * n;
    let counter = {
        let m = shared.lock();
        m.requests
    };
    let id = format!("chatcmpl-{}", server::request_id(shared.seed ^ 0xc4a7, counter).trim_start_matches('0'));
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop",
            })
        })
        .collect();
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": shared.clock.now_secs(),
        "model": model_name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_testkit",
    });
    Answer {
        status: StatusCode::OK,
        body,
        tally: Tally::Chat { input: text_hash(&user), mode, prompt: prompt_tokens, completion: completion_tokens },
    }
}

async fn embeddings_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let model_name = model_of(&parsed);
    handle(shared, ApiEndpoint::Embeddings, headers, model_name, move |s, _| embeddings(s, parsed)).await
}

const INPUT_INVALID: &str =
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

fn embeddings(shared: &Shared, body: Option<Value>) -> Answer {
    let Some(body) = body.filter(Value::is_object) else {
        return bad_request(UNPARSABLE, None, None);
    };
    let Some(model_name) = body.get("model").and_then(Value::as_str) else {
        return bad_request("you must provide a model parameter", None, None);
    };
    let Some(input) = body.get("input") else {
        return bad_request("Missing required parameter: 'input'.", Some("input"), Some("missing_required_parameter"));
    };
    let token_text = |v: &Value| -> Option<String> {
        let arr = v.as_array()?;
        let toks: Option<Vec<String>> = arr.iter().map(|t| t.as_u64().map(|n| n.to_string())).collect();
        toks.map(|t| t.join(" ")).filter(|s| !s.is_empty())
    };
    let texts: Vec<String> = match input {
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        Value::Array(items) if !items.is_empty() && items.len() <= 2048 => {
            if items.iter().all(Value::is_u64) {
                match token_text(input) {
                    Some(t) => vec![t],
                    None => return bad_request(INPUT_INVALID, None, None),
                }
            } else {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    match it {
                        Value::String(s) if !s.is_empty() => out.push(s.clone()),
                        Value::Array(_) => match token_text(it) {
                            Some(t) => out.push(t),
                            None => return bad_request(INPUT_INVALID, None, None),
                        },
                        _ => return bad_request(INPUT_INVALID, None, None),
                    }
                }
                out
            }
        }
        _ => return bad_request(INPUT_INVALID, None, None),
    };
    let dims = match body.get("dimensions").filter(|v| !v.is_null()) {
        None => shared.default_dimensions,
        Some(_) if model_name == "text-embedding-ada-002" => {
            return bad_request("This model does not support specifying dimensions.", None, None);
        }
        Some(v) => match v.as_u64() {
            Some(d) if (1..=3072).contains(&d) => d as usize,
            _ => {
                return bad_request(
                    &format!("Invalid value for 'dimensions' = {v}. Must be an integer between 1 and 3072."),
                    Some("dimensions"),
                    Some("invalid_value"),
                );
            }
        },
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return bad_request(
                &format!("Invalid value for 'encoding_format': '{other}'. Supported values are: 'float' and 'base64'."),
                Some("encoding_format"),
                Some("invalid_value"),
            );
        }
    };
    let tokens: u64 = texts.iter().map(|t| model::approx_tokens(t)).sum();
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = model::embed(t, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Answer {
        status: StatusCode::OK,
        body: json!({
            "object": "list",
            "data": data,
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
        tally: Tally::Embeddings { inputs: texts.iter().map(|t| text_hash(t)).collect(), tokens },
    }
}

async fn models_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(shared, ApiEndpoint::Models, headers, "models".into(), |_, _| {
        let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "text-embedding-3-large"]
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 1_715_367_049, "owned_by": "system"}))
            .collect();
        Answer { status: StatusCode::OK, body: json!({"object": "list", "data": data}), tally: Tally::None }
    })
    .await
}

async fn fallback_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(shared, ApiEndpoint::Other, headers, "unknown".into(), |_, _| Answer {
        status: StatusCode::NOT_FOUND,
        body: api_error(
            "Invalid URL (the fake serves POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models)",
            "invalid_request_error",
            None,
            None,
        ),
        tally: Tally::None,
    })
    .await
}

async fn tk_get_faults(State(shared): State<Arc<Shared>>) -> Response {
    let f = {
        let m = shared.lock();
        let mut f = m.faults.clone();
        f.script = m.schedule.remaining_script();
        f
    };
    server::json(StatusCode::OK, &json!(f), &[])
}

async fn tk_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(p)) => Value::Object(p),
        _ => return server::json(StatusCode::BAD_REQUEST, &json!({"error": "body must be a JSON object"}), &[]),
    };
    let current = shared.lock().faults.clone();
    match crate::merge_patch::<OpenAiFaults>(&current, &patch) {
        Ok(f) => {
            shared.set_faults(f.clone());
            server::json(StatusCode::OK, &json!(f), &[])
        }
        Err(e) => server::json(StatusCode::BAD_REQUEST, &json!({"error": e}), &[]),
    }
}

async fn tk_counters(State(shared): State<Arc<Shared>>) -> Response {
    server::json(StatusCode::OK, &json!(shared.counters()), &[])
}

async fn tk_reset(State(shared): State<Arc<Shared>>) -> Response {
    let mut m = shared.lock();
    m.counters = OpenAiCounters::default();
    m.chat_inputs.clear();
    m.embedding_inputs.clear();
    server::json(StatusCode::OK, &json!({"ok": true}), &[])
}

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
