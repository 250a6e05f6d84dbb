//! A fake of the Intercom REST API (version 2.11 shapes), enough of it for a
//! conversation backfill: search with cursor pagination, fetch one
//! conversation, auth, content negotiation, rate limits, and fault injection.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sluice_testkit::intercom::{FakeIntercom, IntercomConfig};
//! let fake = FakeIntercom::start(IntercomConfig::default().with_conversations(300)).await?;
//! let url = fake.base_url(); // http://127.0.0.1:PORT
//! // ... point the client at `url` with `Authorization: Bearer test-token` ...
//! assert_eq!(fake.counters().faults.total(), 0);
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//!
//! - `POST /conversations/search`, body
//!   `{"query": Q, "sort": {"field": "updated_at", "order": "ascending"}, "pagination": {"per_page": N, "starting_after": C}}`.
//!   `Q` is described in the `query` module (`updated_at`/`created_at` with `=`, `!=`, `>`,
//!   `<`, `>=`, `<=`, nested `AND`/`OR`, and a few text fields). `per_page`
//!   defaults to 20 and must be 1..=150, else 400. `sort.field` is
//!   `updated_at` (default) or `created_at`; `sort.order` is `ascending` or
//!   `descending` (default); ties are broken by numeric id in the same
//!   direction. The answer is
//!   `{"type":"conversation.list","pages":{"type":"pages","page":P,"per_page":N,"total_pages":T,"next":{"page":P+1,"starting_after":C}},"total_count":M,"conversations":[...]}`;
//!   the last page has no `next` key. Items carry no `conversation_parts`.
//!   Pagination is keyset-based like Intercom's: a cursor names the last item
//!   of its page, so a conversation updated during a backfill moves to the
//!   end of an ascending sort and is listed again (use
//!   [`FakeIntercom::touch`] to test that).
//! - `GET /conversations/{id}` (optional `?display_as=plaintext`): the full
//!   conversation with `conversation_parts`; unknown id: 404 `not_found`.
//! - Anything else: 404 `not_found` (Intercom also answers 404 to a wrong
//!   method).
//!
//! Every error body is
//! `{"type":"error.list","request_id":"...","errors":[{"code":"...","message":"..."}]}`.
//!
//! # Order of checks for each request
//!
//! 1. counted (per endpoint) and its `Intercom-Version` header recorded;
//! 2. `latency_ms` slept when the endpoint is targeted by the faults;
//! 3. `Authorization: Bearer <token>` checked: 401 `unauthorized` /
//!    "Access Token Invalid", without rate-limit headers (Intercom sends none
//!    to unauthenticated requests);
//! 4. `Accept` must allow `application/json` (a missing header does not):
//!    406 `media_type_not_acceptable`;
//! 5. `Intercom-Version`, when present, must look like `2.11` or be
//!    `Unstable`/`Preview`: else 400 `intercom_version_invalid`;
//! 6. the rate limiter: fixed 10-second windows aligned on multiples of 10
//!    epoch seconds, per token; every response from here on carries
//!    `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`
//!    (epoch seconds of the window's end); over the limit: 429
//!    `rate_limit_exceeded` / "Exceeded rate limit of N in 10_seconds";
//! 7. injected faults (see [`IntercomFaults`] and [`crate::faults`]);
//! 8. the request itself (400 `parameter_invalid` for a bad body or query,
//!    400 `client_error` / "Invalid starting_after param: ..." for a bad,
//!    expired or invalidated cursor).
//!
//! # Test-control endpoints (no auth, not counted, not rate limited)
//!
//! - `GET /_testkit/faults`, `POST /_testkit/faults` (a JSON object whose
//!   keys replace those of the current [`IntercomFaults`]; answers the new
//!   settings; resets the fault schedule);
//! - `GET /_testkit/counters`, `POST /_testkit/reset` (zeroes counters and
//!   the request log);
//! - `GET /_testkit/dataset`: `[{id, created_at, updated_at, theme, short}]`;
//! - `GET /_testkit/log`: the request log;
//! - `POST /_testkit/invalidate-cursors`: every cursor issued so far is
//!   rejected from now on.

pub mod dataset;
pub(crate) mod query;

mod cursor;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::cursor::Cursor;
pub use self::dataset::{Conversation, Dataset, DatasetSpec, Part, Person};
use self::query::Query;
use crate::clock::Clock;
use crate::faults::{DropMode, FaultCounts, FaultKind, Periods, Schedule};
use crate::server::{self, Running};

/// Which endpoints the faults (latency included) apply to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntercomTarget {
    /// Search and get.
    #[default]
    #[serde(alias = "both")]
    All,
    /// `POST /conversations/search` only.
    Search,
    /// `GET /conversations/{id}` only.
    Get,
}

/// Fault settings of the fake Intercom. Every field has a default (no
/// faults), so a JSON patch may name only what it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IntercomFaults {
    /// The endpoints the faults below apply to.
    pub endpoints: IntercomTarget,
    /// Sleep this long before answering each targeted request.
    pub latency_ms: u64,
    /// Every Nth targeted request: 500 `server_error`.
    pub fail_every: Option<u64>,
    /// Every Nth targeted request: 429 `rate_limit_exceeded`, with
    /// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` one second ahead.
    pub rate_limit_every: Option<u64>,
    /// Every Nth targeted request: the connection is dropped.
    pub drop_every: Option<u64>,
    /// How a dropped connection looks.
    pub drop_mode: DropMode,
    /// Every Nth targeted request: 200 with truncated JSON.
    pub malformed_every: Option<u64>,
    /// Faults for the next requests, one per request, before the periodic
    /// ones apply (e.g. `["server_error", "server_error"]`).
    pub script: Vec<FaultKind>,
    /// Search cursors older than this (by the fake's clock) are refused with
    /// 400 `client_error`.
    pub cursor_ttl_secs: Option<u64>,
    /// Also send `Retry-After` (seconds) with every 429, injected or real.
    /// Real Intercom sends only `X-RateLimit-Reset`.
    pub retry_after: bool,
}

impl IntercomFaults {
    fn periods(&self) -> Periods {
        Periods {
            drop_every: self.drop_every,
            fail_every: self.fail_every,
            rate_limit_every: self.rate_limit_every,
            malformed_every: self.malformed_every,
        }
    }

    fn targets(&self, ep: Endpoint) -> bool {
        matches!(
            (self.endpoints, ep),
            (IntercomTarget::All, Endpoint::Search | Endpoint::Get)
                | (IntercomTarget::Search, Endpoint::Search)
                | (IntercomTarget::Get, Endpoint::Get)
        )
    }
}

/// Configuration of a fake Intercom.
#[derive(Clone, Debug)]
pub struct IntercomConfig {
    /// The generated workspace.
    pub dataset: DatasetSpec,
    /// The only access token accepted. Default `test-token`.
    pub token: String,
    /// Requests per 10-second window. Default 1000.
    pub rate_limit: u32,
    /// Initial fault settings (none by default).
    pub faults: IntercomFaults,
    /// The clock for rate-limit windows and cursor times.
    pub clock: Clock,
    /// Port on 127.0.0.1; 0 (default) picks a free one.
    pub port: u16,
}

impl Default for IntercomConfig {
    fn default() -> Self {
        IntercomConfig {
            dataset: DatasetSpec::default(),
            token: "test-token".to_string(),
            rate_limit: 1000,
            faults: IntercomFaults::default(),
            clock: Clock::system(),
            port: 0,
        }
    }
}

impl IntercomConfig {
    pub fn with_conversations(mut self, n: usize) -> Self {
        self.dataset.conversations = n;
        self
    }
    pub fn with_days(mut self, days: u32) -> Self {
        self.dataset.days = days;
        self
    }
    /// The end of the data, epoch seconds.
    pub fn with_now(mut self, now: i64) -> Self {
        self.dataset.now = now;
        self
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.dataset.seed = seed;
        self
    }
    pub fn with_short_fraction(mut self, fraction: f64) -> Self {
        self.dataset.short_fraction = fraction;
        self
    }
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }
    pub fn with_rate_limit(mut self, per_10s: u32) -> Self {
        self.rate_limit = per_10s;
        self
    }
    pub fn with_faults(mut self, faults: IntercomFaults) -> Self {
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

/// The endpoint of a request, for counters and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /conversations/search`.
    Search,
    /// `GET /conversations/{id}`.
    Get,
    /// Anything else (answered 404).
    Other,
}

/// What the fake has seen and done. Request counters count every request,
/// whatever its outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntercomCounters {
    pub search_requests: u64,
    pub get_requests: u64,
    pub other_requests: u64,
    /// Search pages answered in full (200, not truncated).
    pub pages_served: u64,
    /// Conversations listed in those pages.
    pub conversations_listed: u64,
    /// `GET /conversations/{id}` answered 200 (not truncated).
    pub conversations_fetched: u64,
    /// 404s (unknown conversation or route).
    pub not_found: u64,
    /// Cursors refused: malformed, expired or invalidated.
    pub cursor_rejections: u64,
    /// Of which expired (TTL) or invalidated.
    pub cursor_expired: u64,
    pub unauthorized: u64,
    pub not_acceptable: u64,
    /// Other 400s (bad body, bad query, per_page out of range, bad version).
    pub bad_requests: u64,
    /// 429s from the real limiter (injected ones are in `faults`).
    pub rate_limited: u64,
    pub faults: FaultCounts,
    /// `Intercom-Version` header values seen, `(none)` when absent.
    pub intercom_versions: BTreeMap<String, u64>,
}

impl IntercomCounters {
    /// All requests to any endpoint.
    pub fn requests(&self) -> u64 {
        self.search_requests + self.get_requests + self.other_requests
    }
}

/// One entry of the request log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub endpoint: Endpoint,
    pub status: u16,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
    /// `pagination.starting_after` of a search.
    pub starting_after: Option<String>,
    /// The page number answered.
    pub page: Option<u64>,
    /// Conversations in the answered page.
    pub returned: usize,
    /// The `next.starting_after` answered.
    pub next: Option<String>,
    /// The id of a get.
    pub conversation_id: Option<String>,
}

const LOG_CAP: usize = 100_000;
const MAX_PER_PAGE: u64 = 150;
const DEFAULT_PER_PAGE: u64 = 20;

struct Mutable {
    faults: IntercomFaults,
    schedule: Schedule,
    counters: IntercomCounters,
    rate_limit: u32,
    /// token -> (window start, requests in it)
    windows: BTreeMap<String, (i64, u32)>,
    log: Vec<RequestRecord>,
    cursors_valid_from_ms: i64,
    cursors_issued: u64,
    requests: u64,
}

struct Shared {
    token: String,
    seed: u64,
    clock: Clock,
    dataset: RwLock<Arc<Dataset>>,
    m: Mutex<Mutable>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dataset(&self) -> Arc<Dataset> {
        self.dataset.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_faults(&self, faults: IntercomFaults) {
        let mut m = self.lock();
        m.schedule.reset(&faults.script);
        m.faults = faults;
    }
}

/// A running fake Intercom. Dropping it stops the server.
pub struct FakeIntercom {
    shared: Arc<Shared>,
    running: Running,
}

impl std::fmt::Debug for FakeIntercom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIntercom").field("addr", &self.running.addr()).finish()
    }
}

impl FakeIntercom {
    /// Generates the dataset and starts serving on 127.0.0.1.
    pub async fn start(config: IntercomConfig) -> io::Result<FakeIntercom> {
        let dataset = Dataset::generate(&config.dataset);
        FakeIntercom::start_with_dataset(config, dataset).await
    }

    /// Starts serving a given dataset (`config.dataset` is ignored, except
    /// its seed, which salts request ids and cursor nonces).
    pub async fn start_with_dataset(config: IntercomConfig, dataset: Dataset) -> io::Result<FakeIntercom> {
        let mut schedule = Schedule::default();
        schedule.reset(&config.faults.script);
        let shared = Arc::new(Shared {
            token: config.token,
            seed: config.dataset.seed,
            clock: config.clock,
            dataset: RwLock::new(Arc::new(dataset)),
            m: Mutex::new(Mutable {
                faults: config.faults,
                schedule,
                counters: IntercomCounters::default(),
                rate_limit: config.rate_limit,
                windows: BTreeMap::new(),
                log: Vec::new(),
                cursors_valid_from_ms: i64::MIN,
                cursors_issued: 0,
                requests: 0,
            }),
        });
        let running = Running::start(config.port, router(shared.clone())).await?;
        Ok(FakeIntercom { shared, running })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.running.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr()
    }

    /// The accepted access token.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The fake's clock (advance it if it is a manual one).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// A snapshot of the served data.
    pub fn dataset(&self) -> Arc<Dataset> {
        self.shared.dataset()
    }

    /// Sets a conversation's `updated_at`, as if it were replied to now.
    /// Returns false for an unknown id.
    pub fn touch(&self, id: &str, updated_at: i64) -> bool {
        let mut guard = self.shared.dataset.write().unwrap_or_else(|e| e.into_inner());
        let mut ds = (**guard).clone();
        let found = ds.touch(id, updated_at);
        *guard = Arc::new(ds);
        found
    }

    /// The current fault settings (`script`: what remains of it).
    pub fn faults(&self) -> IntercomFaults {
        let m = self.shared.lock();
        let mut f = m.faults.clone();
        f.script = m.schedule.remaining_script();
        f
    }

    /// Replaces the fault settings and restarts the fault schedule: the next
    /// targeted request is number 1.
    pub fn set_faults(&self, faults: IntercomFaults) {
        self.shared.set_faults(faults);
    }

    /// Edits the fault settings in place (and restarts the schedule).
    pub fn update_faults(&self, edit: impl FnOnce(&mut IntercomFaults)) {
        let mut f = self.faults();
        edit(&mut f);
        self.set_faults(f);
    }

    /// Requests per 10-second window.
    pub fn rate_limit(&self) -> u32 {
        self.shared.lock().rate_limit
    }

    pub fn set_rate_limit(&self, per_10s: u32) {
        self.shared.lock().rate_limit = per_10s;
    }

    pub fn counters(&self) -> IntercomCounters {
        self.shared.lock().counters.clone()
    }

    /// Zeroes the counters and clears the request log (rate-limit windows
    /// and the fault schedule are untouched).
    pub fn reset_counters(&self) {
        let mut m = self.shared.lock();
        m.counters = IntercomCounters::default();
        m.log.clear();
    }

    /// Every request so far (up to 100,000), oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// From now on every cursor issued so far is refused (400), as if the
    /// server had forgotten them.
    pub fn invalidate_cursors(&self) {
        let now = self.shared.clock.now_ms();
        let mut m = self.shared.lock();
        // Cursors issued in this same millisecond are invalidated too.
        m.cursors_valid_from_ms = now + 1;
    }

    /// Stops the server, letting in-flight requests finish.
    pub async fn shutdown(mut self) {
        self.running.shutdown().await;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/conversations/search", post(search_handler))
        .route("/conversations/{id}", get(get_handler))
        .route("/_testkit/faults", get(tk_get_faults).post(tk_set_faults))
        .route("/_testkit/counters", get(tk_counters))
        .route("/_testkit/reset", post(tk_reset))
        .route("/_testkit/dataset", get(tk_dataset))
        .route("/_testkit/log", get(tk_log))
        .route("/_testkit/invalidate-cursors", post(tk_invalidate))
        .fallback(fallback_handler)
        .method_not_allowed_fallback(fallback_handler)
        .with_state(shared)
}

fn error_list(request_id: &str, code: &str, message: &str) -> Value {
    json!({
        "type": "error.list",
        "request_id": request_id,
        "errors": [{"code": code, "message": message}],
    })
}

/// What the request itself produced, before faults are applied to it.
struct Outcome {
    status: StatusCode,
    body: Value,
    effect: Effect,
    page: Option<u64>,
    returned: usize,
    next: Option<String>,
}

enum Effect {
    Page,
    Fetched,
    NotFound,
    CursorRejected { expired: bool },
    BadRequest,
}

impl Outcome {
    fn error(status: StatusCode, request_id: &str, code: &str, message: &str, effect: Effect) -> Outcome {
        Outcome { status, body: error_list(request_id, code, message), effect, page: None, returned: 0, next: None }
    }
}

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

fn version_is_valid(v: &str) -> bool {
    if v.eq_ignore_ascii_case("unstable") || v.eq_ignore_ascii_case("preview") {
        return true;
    }
    match v.split_once('.') {
        Some((major, minor)) => {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Runs the common pipeline of checks (see the module docs) around `work`.
async fn handle(
    shared: Arc<Shared>,
    ep: Endpoint,
    headers: HeaderMap,
    mut record: RequestRecord,
    work: impl FnOnce(&Shared, &str) -> Outcome,
) -> Response {
    let version = headers.get("intercom-version").map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    // 1. count, 2. latency
    let (request_id, latency) = {
        let mut m = shared.lock();
        m.requests += 1;
        let n = m.requests;
        let c = &mut m.counters;
        match ep {
            Endpoint::Search => c.search_requests += 1,
            Endpoint::Get => c.get_requests += 1,
            Endpoint::Other => c.other_requests += 1,
        }
        *c.intercom_versions.entry(version.clone().unwrap_or_else(|| "(none)".to_string())).or_default() += 1;
        let latency = if m.faults.targets(ep) { m.faults.latency_ms } else { 0 };
        if latency > 0 {
            m.counters.faults.latency += 1;
        }
        (server::request_id(shared.seed, n), latency)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let rid_header = vec![(X_REQUEST_ID.clone(), request_id.clone())];
    let finish = |m: &mut Mutable, record: RequestRecord| {
        if m.log.len() < LOG_CAP {
            m.log.push(record);
        }
    };

    // 3. auth
    if server::bearer(&headers).as_deref() != Some(shared.token.as_str()) {
        let mut m = shared.lock();
        m.counters.unauthorized += 1;
        record.status = 401;
        finish(&mut m, record);
        let body = error_list(&request_id, "unauthorized", "Access Token Invalid");
        return server::json(StatusCode::UNAUTHORIZED, &body, &rid_header);
    }
    // 4. accept
    if !server::accepts_json(&headers) {
        let mut m = shared.lock();
        m.counters.not_acceptable += 1;
        record.status = 406;
        finish(&mut m, record);
        let body = error_list(
            &request_id,
            "media_type_not_acceptable",
            "The Accept header should send a media type of application/json",
        );
        return server::json(StatusCode::NOT_ACCEPTABLE, &body, &rid_header);
    }
    // 5. version
    if let Some(v) = &version
        && !version_is_valid(v)
    {
        let mut m = shared.lock();
        m.counters.bad_requests += 1;
        record.status = 400;
        finish(&mut m, record);
        let body = error_list(&request_id, "intercom_version_invalid", "The requested version could not be found");
        return server::json(StatusCode::BAD_REQUEST, &body, &rid_header);
    }
    // 6. rate limit, 7. faults
    let now = shared.clock.now_secs();
    let (headers_out, limited, fault, drop_mode, limit) = {
        let mut m = shared.lock();
        let limit = m.rate_limit;
        let window_start = now - now.rem_euclid(10);
        let entry = m.windows.entry(shared.token.clone()).or_insert((window_start, 0));
        if entry.0 != window_start {
            *entry = (window_start, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let used = entry.1;
        let reset = window_start + 10;
        let limited = used > limit;
        let remaining = limit.saturating_sub(used);
        let fault = if !limited && m.faults.targets(ep) {
            let p = m.faults.periods();
            m.schedule.next(p)
        } else {
            FaultKind::None
        };
        let (remaining, reset) = if fault == FaultKind::RateLimit { (0, now + 1) } else { (remaining, reset) };
        let mut h = vec![
            (X_RATELIMIT_LIMIT.clone(), limit.to_string()),
            (X_RATELIMIT_REMAINING.clone(), remaining.to_string()),
            (X_RATELIMIT_RESET.clone(), reset.to_string()),
            (X_REQUEST_ID.clone(), request_id.clone()),
        ];
        if (limited || fault == FaultKind::RateLimit) && m.faults.retry_after {
            h.push((RETRY_AFTER.clone(), (reset - now).max(1).to_string()));
        }
        (h, limited, fault, m.faults.drop_mode, limit)
    };
    if limited {
        let body =
            error_list(&request_id, "rate_limit_exceeded", &format!("Exceeded rate limit of {limit} in 10_seconds"));
        let mut m = shared.lock();
        m.counters.rate_limited += 1;
        record.status = 429;
        finish(&mut m, record);
        return server::json(StatusCode::TOO_MANY_REQUESTS, &body, &headers_out);
    }
    match fault {
        FaultKind::Drop => {
            let mut m = shared.lock();
            m.counters.faults.record(fault);
            record.status = 200;
            record.fault = Some(fault);
            finish(&mut m, record);
            let partial = json!({"type": "conversation.list", "pages": {"type": "pages"}, "conversations": []});
            return server::dropped(drop_mode, &partial, &headers_out);
        }
        FaultKind::ServerError => {
            let mut m = shared.lock();
            m.counters.faults.record(fault);
            record.status = 500;
            record.fault = Some(fault);
            finish(&mut m, record);
            let body = error_list(&request_id, "server_error", "Server Error");
            return server::json(StatusCode::INTERNAL_SERVER_ERROR, &body, &headers_out);
        }
        FaultKind::RateLimit => {
            let body = error_list(
                &request_id,
                "rate_limit_exceeded",
                &format!("Exceeded rate limit of {limit} in 10_seconds"),
            );
            let mut m = shared.lock();
            m.counters.faults.record(fault);
            record.status = 429;
            record.fault = Some(fault);
            finish(&mut m, record);
            return server::json(StatusCode::TOO_MANY_REQUESTS, &body, &headers_out);
        }
        FaultKind::Malformed | FaultKind::None => {}
    }
    // 8. the request itself
    let outcome = work(&shared, &request_id);
    let truncate = fault == FaultKind::Malformed && outcome.status == StatusCode::OK;
    let mut m = shared.lock();
    record.status = outcome.status.as_u16();
    record.page = outcome.page;
    record.returned = outcome.returned;
    record.next = outcome.next.clone();
    if truncate {
        m.counters.faults.record(fault);
        record.fault = Some(fault);
    } else {
        let c = &mut m.counters;
        match outcome.effect {
            Effect::Page => {
                c.pages_served += 1;
                c.conversations_listed += outcome.returned as u64;
            }
            Effect::Fetched => c.conversations_fetched += 1,
            Effect::NotFound => c.not_found += 1,
            Effect::CursorRejected { expired } => {
                c.cursor_rejections += 1;
                if expired {
                    c.cursor_expired += 1;
                }
            }
            Effect::BadRequest => c.bad_requests += 1,
        }
    }
    finish(&mut m, record);
    drop(m);
    if truncate {
        server::truncated(&outcome.body, &headers_out)
    } else {
        server::json(outcome.status, &outcome.body, &headers_out)
    }
}

fn empty_record(ep: Endpoint) -> RequestRecord {
    RequestRecord {
        endpoint: ep,
        status: 0,
        fault: None,
        starting_after: None,
        page: None,
        returned: 0,
        next: None,
        conversation_id: None,
    }
}

async fn search_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut record = empty_record(Endpoint::Search);
    record.starting_after = parsed
        .as_ref()
        .and_then(|v| v.pointer("/pagination/starting_after"))
        .and_then(Value::as_str)
        .map(str::to_string);
    handle(shared, Endpoint::Search, headers, record, move |s, rid| search(s, rid, parsed)).await
}

#[derive(Clone, Copy)]
struct Sort {
    by_created: bool,
    descending: bool,
}

impl Sort {
    fn tag(self) -> u64 {
        (self.by_created as u64) * 2 + self.descending as u64
    }
    fn key(self, c: &Conversation) -> (i64, u64) {
        let t = if self.by_created { c.created_at } else { c.updated_at };
        (t * 1000, c.id_num())
    }
}

fn parse_sort(v: Option<&Value>) -> Result<Sort, String> {
    let Some(v) = v else {
        return Ok(Sort { by_created: false, descending: true });
    };
    let by_created = match v.get("field").and_then(Value::as_str).unwrap_or("updated_at") {
        "updated_at" => false,
        "created_at" => true,
        other => {
            return Err(format!("sort field {other:?} is not supported by the fake (updated_at, created_at)"));
        }
    };
    let descending = match v.get("order").and_then(Value::as_str).unwrap_or("descending") {
        "ascending" | "asc" => false,
        "descending" | "desc" => true,
        other => return Err(format!("sort order {other:?} is invalid (ascending, descending)")),
    };
    Ok(Sort { by_created, descending })
}

fn search(shared: &Shared, rid: &str, body: Option<Value>) -> Outcome {
    let bad = |code: &str, msg: &str| Outcome::error(StatusCode::BAD_REQUEST, rid, code, msg, Effect::BadRequest);
    let Some(body) = body.filter(Value::is_object) else {
        return bad("parameter_invalid", "Request body must be a valid JSON object");
    };
    let Some(query) = body.get("query") else {
        return bad("parameter_not_found", "query parameter is required");
    };
    let q = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => return bad("parameter_invalid", &format!("Invalid query: {e}")),
    };
    let sort = match parse_sort(body.get("sort")) {
        Ok(s) => s,
        Err(e) => return bad("parameter_invalid", &e),
    };
    let pagination = body.get("pagination");
    let per_page = match pagination.and_then(|p| p.get("per_page")) {
        None | Some(Value::Null) => DEFAULT_PER_PAGE,
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
            Some(n) if (1..=MAX_PER_PAGE).contains(&n) => n,
            _ => {
                return bad(
                    "parameter_invalid",
                    &format!("per_page must be an integer between 1 and {MAX_PER_PAGE}, got {v}"),
                );
            }
        },
    };
    let starting_after = match pagination.and_then(|p| p.get("starting_after")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return bad("parameter_invalid", &format!("starting_after must be a string, got {other}")),
    };

    let now_ms = shared.clock.now_ms();
    let cursor = match starting_after {
        None => None,
        Some(s) => {
            let reject = |detail: &str, expired: bool| {
                Outcome::error(
                    StatusCode::BAD_REQUEST,
                    rid,
                    "client_error",
                    &format!("Invalid starting_after param: {detail}"),
                    Effect::CursorRejected { expired },
                )
            };
            let c = match Cursor::decode(&s) {
                Ok(c) => c,
                Err(e) => return reject(&e, false),
            };
            if c.sort != sort.tag() {
                return reject("the cursor belongs to a search with a different sort", false);
            }
            let (ttl, valid_from) = {
                let m = shared.lock();
                (m.faults.cursor_ttl_secs, m.cursors_valid_from_ms)
            };
            if c.issued_ms < valid_from {
                return reject("the cursor has expired", true);
            }
            if let Some(ttl) = ttl
                && now_ms - c.issued_ms > ttl as i64 * 1000
            {
                return reject("the cursor has expired", true);
            }
            Some(c)
        }
    };

    let ds = shared.dataset();
    let mut items: Vec<&Conversation> = ds.all().iter().filter(|c| q.matches(c)).collect();
    items.sort_by_key(|c| sort.key(c));
    if sort.descending {
        items.reverse();
    }
    let total = items.len();
    let start = match cursor {
        None => 0,
        Some(c) => {
            let at = (c.key_ms, c.id);
            if sort.descending {
                items.partition_point(|it| sort.key(it) >= at)
            } else {
                items.partition_point(|it| sort.key(it) <= at)
            }
        }
    };
    let end = (start + per_page as usize).min(total);
    let page_items = &items[start.min(end)..end];
    let page = cursor.map(|c| c.page + 1).unwrap_or(1);
    let total_pages = total.div_ceil(per_page as usize);
    let next = if end < total {
        let last = page_items.last().expect("a page before the end is not empty");
        let (key_ms, id) = sort.key(last);
        let n = {
            let mut m = shared.lock();
            m.cursors_issued += 1;
            m.cursors_issued
        };
        let nonce = crate::rng::mix(shared.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d)) % 1_000_000_000;
        Some(Cursor { key_ms, id, page, issued_ms: now_ms, nonce, sort: sort.tag() }.encode())
    } else {
        None
    };
    let mut pages = json!({
        "type": "pages",
        "page": page,
        "per_page": per_page,
        "total_pages": total_pages,
    });
    if let Some(next) = &next {
        pages["next"] = json!({"page": page + 1, "starting_after": next});
    }
    let body = json!({
        "type": "conversation.list",
        "pages": pages,
        "total_count": total,
        "conversations": page_items.iter().map(|c| c.to_json(false, false)).collect::<Vec<_>>(),
    });
    Outcome { status: StatusCode::OK, body, effect: Effect::Page, page: Some(page), returned: page_items.len(), next }
}

#[derive(Deserialize)]
struct GetParams {
    display_as: Option<String>,
}

async fn get_handler(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<GetParams>,
    headers: HeaderMap,
) -> Response {
    let mut record = empty_record(Endpoint::Get);
    record.conversation_id = Some(id.clone());
    let plaintext = params.display_as.as_deref() == Some("plaintext");
    handle(shared, Endpoint::Get, headers, record, move |s, rid| {
        let ds = s.dataset();
        match ds.get(&id) {
            Some(c) => Outcome {
                status: StatusCode::OK,
                body: c.to_json(true, plaintext),
                effect: Effect::Fetched,
                page: None,
                returned: 1,
                next: None,
            },
            None => Outcome::error(StatusCode::NOT_FOUND, rid, "not_found", "Resource Not Found", Effect::NotFound),
        }
    })
    .await
}

async fn fallback_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(shared, Endpoint::Other, headers, empty_record(Endpoint::Other), |_, rid| {
        Outcome::error(StatusCode::NOT_FOUND, rid, "not_found", "Resource Not Found", Effect::NotFound)
    })
    .await
}

fn plain_json(status: StatusCode, v: &Value) -> Response {
    server::json(status, v, &[])
}

async fn tk_get_faults(State(shared): State<Arc<Shared>>) -> Response {
    let f = {
        let m = shared.lock();
        let mut f = m.faults.clone();
        f.script = m.schedule.remaining_script();
        f
    };
    plain_json(StatusCode::OK, &json!(f))
}

async fn tk_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(Value::Object(p)) => Value::Object(p),
        _ => return plain_json(StatusCode::BAD_REQUEST, &json!({"error": "body must be a JSON object"})),
    };
    let current = shared.lock().faults.clone();
    match crate::merge_patch::<IntercomFaults>(&current, &patch) {
        Ok(f) => {
            shared.set_faults(f.clone());
            plain_json(StatusCode::OK, &json!(f))
        }
        Err(e) => plain_json(StatusCode::BAD_REQUEST, &json!({"error": e})),
    }
}

async fn tk_counters(State(shared): State<Arc<Shared>>) -> Response {
    let c = shared.lock().counters.clone();
    plain_json(StatusCode::OK, &json!(c))
}

async fn tk_reset(State(shared): State<Arc<Shared>>) -> Response {
    let mut m = shared.lock();
    m.counters = IntercomCounters::default();
    m.log.clear();
    plain_json(StatusCode::OK, &json!({"ok": true}))
}

async fn tk_dataset(State(shared): State<Arc<Shared>>) -> Response {
    let ds = shared.dataset();
    let rows: Vec<Value> = ds
        .all()
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
                "theme": c.theme,
                "short": c.is_short(),
            })
        })
        .collect();
    plain_json(StatusCode::OK, &Value::Array(rows))
}

async fn tk_log(State(shared): State<Arc<Shared>>) -> Response {
    let log = shared.lock().log.clone();
    plain_json(StatusCode::OK, &json!(log))
}

async fn tk_invalidate(State(shared): State<Arc<Shared>>) -> Response {
    let now = shared.clock.now_ms();
    shared.lock().cursors_valid_from_ms = now + 1;
    plain_json(StatusCode::OK, &json!({"ok": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_is_valid("2.11"));
        assert!(version_is_valid("Unstable"));
        assert!(!version_is_valid("2"));
        assert!(!version_is_valid("v2.11"));
        assert!(!version_is_valid("2.x"));
    }

    #[test]
    fn fault_patch_merges() {
        let cur = IntercomFaults { fail_every: Some(3), ..IntercomFaults::default() };
        let f: IntercomFaults =
            crate::merge_patch(&cur, &json!({"latency_ms": 5, "endpoints": "both", "script": ["drop", "ok"]})).unwrap();
        assert_eq!(f.fail_every, Some(3));
        assert_eq!(f.latency_ms, 5);
        assert_eq!(f.endpoints, IntercomTarget::All);
        assert_eq!(f.script, vec![FaultKind::Drop, FaultKind::None]);
        let f: IntercomFaults = crate::merge_patch(&f, &json!({"fail_every": null})).unwrap();
        assert_eq!(f.fail_every, None);
        assert!(crate::merge_patch::<IntercomFaults>(&f, &json!({"latency_ms": "x"})).is_err());
    }
}
