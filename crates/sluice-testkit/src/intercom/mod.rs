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
//! - `GET /me`: the admin of the token and its `app` (counted as an other
//!   request; what `sluice check` calls).
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
//!   rejected from now on;
//! - `POST /_testkit/conversations`: `{"id"?, "updated_at", "body"?}` (or a
//!   list): updates a conversation, or adds one without `id`; answers `{"ids"}`.

pub mod dataset;
pub(crate) mod query;

mod config;
mod control;
mod cursor;
mod log;
mod pipeline;
mod routes;
mod search;
mod state;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

pub use self::config::{IntercomConfig, IntercomFaults, IntercomTarget};
pub use self::dataset::{Change, Conversation, Dataset, DatasetSpec, Part, Person};
pub use self::log::{Endpoint, RequestRecord};
use self::routes::router;
pub use self::state::IntercomCounters;
use self::state::{Mutable, Shared};
use crate::clock::Clock;
use crate::faults::FaultState;
use crate::server::Running;

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
        let shared = Arc::new(Shared {
            token: config.token,
            seed: config.dataset.seed,
            clock: config.clock,
            dataset: RwLock::new(Arc::new(dataset)),
            m: Mutex::new(Mutable {
                faults: FaultState::new(config.faults),
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

    /// Adds or updates conversations at once, as if they were written now;
    /// answers their ids. `Err`: an unknown id (nothing changed).
    pub fn apply(&self, changes: &[Change]) -> Result<Vec<String>, String> {
        self.shared.apply(changes)
    }

    /// The current fault settings (`script`: what remains of it).
    pub fn faults(&self) -> IntercomFaults {
        self.shared.lock().faults.snapshot()
    }

    /// Replaces the fault settings and restarts the fault schedule: the next
    /// targeted request is number 1.
    pub fn set_faults(&self, faults: IntercomFaults) {
        self.shared.lock().faults.set(faults);
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
