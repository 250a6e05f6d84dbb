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
//!   `base64` (little-endian f32; [`OpenAiFaults::refuse_base64`] refuses it
//!   as a float-only compatible server). Vectors come from [`model::embed`].
//!   As the real API, one input over the model's context
//!   ([`OpenAiFaults::max_input_tokens`], counted with cl100k_base) refuses
//!   the whole request with 400 "This model's maximum context length is ...";
//!   [`OpenAiFaults::refuse_inputs_containing`] refuses inputs for another
//!   reason (400 `Invalid 'input[i]'`, `param: "input"`).
//! - `GET /v1/models`: a short model list.
//!
//! Errors have OpenAI's shape:
//! `{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}`.
//!
//! # Order of checks
//!
//! counted -> `Authorization: Bearer`
//! (401 `invalid_api_key`, or code null when no key is sent) -> the
//! requests-per-minute limiter (fixed windows aligned on the minute;
//! headers `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
//! `x-ratelimit-reset-requests` like `"12.5s"`, and the `-tokens`
//! counterparts, which are informative only; over the limit: 429
//! `rate_limit_exceeded` with `retry-after`) -> injected faults -> request
//! validation (400 `invalid_request_error`) -> the answer. Every answer of a
//! targeted endpoint leaves `latency_ms` after its request arrived, the
//! fake's own work included (a real API's latency includes its compute), and
//! is tallied in the counters only then.
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

mod chat;
mod config;
mod control;
mod embeddings;
mod pipeline;
mod routes;
mod state;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use self::config::{EMBEDDING_CONTEXT_TOKENS, OpenAiConfig, OpenAiFaults, OpenAiTarget};
use self::routes::router;
pub use self::state::OpenAiCounters;
use self::state::{Mutable, Shared};
use crate::clock::Clock;
use crate::faults::FaultState;
use crate::rng::text_hash;
use crate::server::Running;

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
        let shared = Arc::new(Shared {
            key: config.key,
            tpm_limit: config.tpm_limit,
            default_dimensions: config.default_dimensions.max(1),
            seed: config.seed,
            clock: config.clock,
            m: Mutex::new(Mutable {
                faults: FaultState::new(config.faults),
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
        self.shared.lock().faults.snapshot()
    }

    /// Replaces the fault settings and restarts the fault schedule.
    pub fn set_faults(&self, faults: OpenAiFaults) {
        self.shared.lock().faults.set(faults);
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
