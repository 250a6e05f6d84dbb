//! A fake web site to crawl: a deterministic generated documentation site of
//! a few hundred interlinked HTML pages, with the awkward parts a crawler
//! meets, and an oracle that says which pages a correct crawl stores.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use sluice_testkit::site::{FakeSite, SiteConfig};
//! let site = FakeSite::start(SiteConfig::default()).await?;
//! let start = site.url("/");
//! let expected = site.expected(None); // what a full crawl from `start` stores, in order
//! assert!(expected.stored().contains(&site.url("/docs/0")));
//! # Ok(()) }
//! ```
//!
//! # The site
//!
//! - `/` links to `/docs/0`, `/notes.txt`, `/old/start` and, off-site,
//!   `http://example.invalid/` (plus `mailto:` and `javascript:` links).
//! - `/docs/{i}` (`i < pages`): a page with navigation, header, aside,
//!   footer, a script and a style around a `<main>` of seeded paragraphs (a
//!   few non-ASCII words and non-breaking spaces among them). Each links to
//!   `/docs/{i+1}` and three seeded others, written in varied but equivalent
//!   forms (fragment, `./relative`, `../docs/`, absolute, protocol-relative).
//! - `/private/{j}`: disallowed by `robots.txt`; they are linked from the
//!   navigation and are the only pages linking to `/orphan/{j}`, so a crawler
//!   that respects robots.txt never sees those.
//! - `/old/start`: 301 to `/docs/moved` (reachable only through it);
//!   `/go/docs-2`: 302 to `/docs/2`.
//! - `/missing`: 404. `/flaky`: drops the connection mid-body, every time.
//! - `/slow`: answers after `slow_ms`. `/notes.txt`: `text/plain`.
//! - `/image.png`: `image/png` (a crawler skips it).
//! - `/search?page=2&q=sluice`: linked with its query in both orders.
//! - the traps of [`traps`]: other charsets, `rel="NoFollow"`, a
//!   percent-escape case in robots.txt, an escaped unreserved character,
//!   meta refreshes.
//!
//! Every request waits `latency_ms` first (robots.txt excepted) and is
//! counted per path and query ([`FakeSite::fetch_count`]), so a test can check
//! that a resumed crawl does not fetch committed pages again, and per status
//! answered ([`FakeSite::status_count`]).
//!
//! # Conditional requests (RFC 9110 §13)
//!
//! Every `200` carries a strong `ETag` (a hash of the body sent) and a
//! `Last-Modified` (the site's date, plus an hour per [`FakeSite::edit`] of
//! the page). A GET with `If-None-Match` gets `304 Not Modified` when one of
//! its entity tags (or `*`) matches by weak comparison, and `If-Modified-Since`
//! is then ignored; without `If-None-Match`, a valid `If-Modified-Since` at or
//! after `Last-Modified` gets the `304`. A 304 has no body and carries the
//! `ETag` and `Last-Modified` a 200 would. Preconditions apply only where
//! the answer would be a 200. [`FakeSite::remove`] makes a page answer 404
//! or 410 from then on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;

use crate::rng::Rng;
use crate::server::Running;

pub mod traps;

/// What `robots.txt` says.
pub const ROBOTS_TXT: &str = "User-agent: *\nDisallow: /private/\nDisallow: /caf%C3%A9/\n";

/// The paths robots.txt disallows (as canonical paths start).
const DISALLOWED: [&str; 2] = ["/private/", "/caf%C3%A9/"];

/// How many `/private/{j}` (and `/orphan/{j}`) pages there are.
const PRIVATE_PAGES: usize = 5;

/// Configuration of a [`FakeSite`].
#[derive(Clone, Debug)]
pub struct SiteConfig {
    /// How many `/docs/{i}` pages (1..). Default 300.
    pub pages: usize,
    /// Seed of the texts and links.
    pub seed: u64,
    /// Wait before answering every request (robots.txt excepted).
    pub latency_ms: u64,
    /// How long `/slow` takes. Default 300.
    pub slow_ms: u64,
    /// When not 0, `/slow` answers as soon as this many other requests were
    /// answered since it came (and after `slow_ms` at the latest): a crawl
    /// that keeps fetching while a page is slow releases it early
    /// ([`FakeSite::answered_while_slow`]).
    pub slow_waits_for: u64,
    /// Port on 127.0.0.1; 0 (default) picks a free one.
    pub port: u16,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig { pages: 300, seed: 7, latency_ms: 0, slow_ms: 300, slow_waits_for: 0, port: 0 }
    }
}

/// A link as the HTML writes it, and the page it means.
#[derive(Clone, Debug)]
struct Link {
    /// Canonical path (and sorted query) of the target, or an absolute URL off the site.
    target: Target,
    /// The `href` as written; `{host}` is replaced by the request's Host.
    href: String,
    /// The `rel` attribute, when there is one.
    rel: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Path(String),
    /// Off-site, or not http: a crawler must not follow it.
    Elsewhere,
}

#[derive(Clone, Debug)]
enum Node {
    Html {
        title: String,
        description: String,
        paragraphs: Vec<String>,
        links: Vec<Link>,
        slow: bool,
    },
    Text(String),
    Binary,
    Redirect {
        status: StatusCode,
        to: String,
    },
    Drop,
    /// An HTML page given as bytes (another charset): stored, no links.
    Encoded {
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A page whose `<meta http-equiv="refresh" content>` is `href`, meaning `to`.
    Refresh {
        to: Target,
        href: String,
    },
}

/// One entry of a crawl's expected result, in crawl (breadth-first) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedPage {
    /// Canonical URL: the record id (or the failure's id).
    pub url: String,
    pub depth: u32,
    /// Stored as a record (`true`) or listed as a failure (404, dropped connection).
    pub stored: bool,
}

/// What a breadth-first crawl from `/` that respects robots.txt yields.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub pages: Vec<ExpectedPage>,
}

impl Expected {
    /// URLs stored as records.
    pub fn stored(&self) -> BTreeSet<String> {
        self.pages.iter().filter(|p| p.stored).map(|p| p.url.clone()).collect()
    }

    /// URLs that end in the failures table.
    pub fn failed(&self) -> BTreeSet<String> {
        self.pages.iter().filter(|p| !p.stored).map(|p| p.url.clone()).collect()
    }

    /// The first `n` entries: what a crawl with `max_pages = n` yields.
    pub fn first(&self, n: usize) -> Expected {
        Expected { pages: self.pages.iter().take(n).cloned().collect() }
    }
}

struct Shared {
    nodes: BTreeMap<String, Node>,
    latency_ms: AtomicU64,
    slow_ms: u64,
    slow_waits_for: u64,
    /// Requests answered (robots.txt excepted), and the most of them answered while `/slow` waited.
    answered: AtomicU64,
    answered_while_slow: AtomicU64,
    counts: Mutex<HashMap<String, u64>>,
    user_agents: Mutex<BTreeSet<String>>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Answers by status (robots.txt excepted).
    statuses: Mutex<BTreeMap<u16, u64>>,
    /// Pages removed, with the status they answer (404 or 410).
    removed: Mutex<HashMap<String, StatusCode>>,
    /// Edits per page: each adds a paragraph and an hour to its `Last-Modified`.
    edits: Mutex<HashMap<String, u64>>,
}

/// The `Last-Modified` of every page never edited: 2026-01-01T00:00:00Z.
const SITE_DATE_SECS: u64 = 1_767_225_600;

/// The site, served on 127.0.0.1. Dropping it stops the server.
pub struct FakeSite {
    shared: Arc<Shared>,
    running: Running,
}

impl std::fmt::Debug for FakeSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSite").field("addr", &self.running.addr()).finish()
    }
}

impl FakeSite {
    pub async fn start(config: SiteConfig) -> io::Result<FakeSite> {
        let shared = Arc::new(Shared {
            nodes: build_site(config.pages.max(1), config.seed),
            latency_ms: AtomicU64::new(config.latency_ms),
            slow_ms: config.slow_ms,
            slow_waits_for: config.slow_waits_for,
            answered: AtomicU64::new(0),
            answered_while_slow: AtomicU64::new(0),
            counts: Mutex::new(HashMap::new()),
            user_agents: Mutex::new(BTreeSet::new()),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            statuses: Mutex::new(BTreeMap::new()),
            removed: Mutex::new(HashMap::new()),
            edits: Mutex::new(HashMap::new()),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let running = Running::start(config.port, router).await?;
        Ok(FakeSite { shared, running })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.running.base_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.addr()
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Requests seen for `path` (with its query as requested, e.g. `/search?page=2&q=sluice`).
    pub fn fetch_count(&self, path: &str) -> u64 {
        self.lock_counts().get(path).copied().unwrap_or(0)
    }

    /// Requests seen, by path and query.
    pub fn fetch_counts(&self) -> BTreeMap<String, u64> {
        self.lock_counts().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Requests seen in all, robots.txt included.
    pub fn total_fetches(&self) -> u64 {
        self.lock_counts().values().sum()
    }

    /// Every `User-Agent` header seen.
    pub fn user_agents(&self) -> BTreeSet<String> {
        self.shared.user_agents.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The most requests (robots.txt excepted) that were being answered at once.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::Relaxed)
    }

    /// The most other requests answered while one `/slow` request waited.
    pub fn answered_while_slow(&self) -> u64 {
        self.shared.answered_while_slow.load(Ordering::Relaxed)
    }

    /// Answers given with `status` (robots.txt excepted), e.g. 200 or 304.
    pub fn status_count(&self, status: u16) -> u64 {
        lock(&self.shared.statuses).get(&status).copied().unwrap_or(0)
    }

    pub fn reset_counts(&self) {
        self.lock_counts().clear();
        lock(&self.shared.statuses).clear();
        self.shared.max_in_flight.store(0, Ordering::Relaxed);
    }

    /// Removes the page at `path`: it answers `gone` (404 Not Found or 410 Gone) from now on.
    pub fn remove(&self, path: &str, gone: u16) {
        let status = StatusCode::from_u16(gone).ok().filter(|s| *s == StatusCode::NOT_FOUND || *s == StatusCode::GONE);
        lock(&self.shared.removed).insert(path.to_string(), status.unwrap_or(StatusCode::NOT_FOUND));
    }

    /// Brings back a page [`FakeSite::remove`] took away, as it was.
    pub fn restore(&self, path: &str) {
        lock(&self.shared.removed).remove(path);
    }

    /// Changes the page at `path`: one more paragraph, a new `ETag`, an hour later `Last-Modified`.
    pub fn edit(&self, path: &str) {
        *lock(&self.shared.edits).entry(path.to_string()).or_default() += 1;
    }

    pub fn set_latency_ms(&self, ms: u64) {
        self.shared.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// The pages a breadth-first crawl from `/` stores or fails, in order,
    /// up to `max_depth` links from `/` (`None`: no limit). Links are
    /// followed in document order, redirects to their target (with the depth
    /// of the link), each canonical URL once; robots.txt's disallowed pages,
    /// off-site links and non-text content yield nothing.
    pub fn expected(&self, max_depth: Option<u32>) -> Expected {
        let nodes = &self.shared.nodes;
        let removed = lock(&self.shared.removed).clone();
        let base = self.base_url();
        let mut seen: BTreeSet<String> = BTreeSet::from(["/".to_string()]);
        let mut queue: VecDeque<(String, u32)> = VecDeque::from([("/".to_string(), 0)]);
        let mut pages = Vec::new();
        while let Some((path, depth)) = queue.pop_front() {
            if DISALLOWED.iter().any(|prefix| path.starts_with(prefix)) {
                continue;
            }
            let mut at = path;
            // A meta refresh is followed like a redirect.
            if let Some(Node::Redirect { to, .. } | Node::Refresh { to: Target::Path(to), .. }) = nodes.get(&at) {
                if !seen.insert(to.clone()) {
                    continue;
                }
                at = to.clone();
            }
            let url = format!("{base}{at}");
            match nodes.get(&at).filter(|_| !removed.contains_key(&at)) {
                None | Some(Node::Drop) => pages.push(ExpectedPage { url, depth, stored: false }),
                Some(Node::Binary) | Some(Node::Redirect { .. }) | Some(Node::Refresh { .. }) => {}
                Some(Node::Text(_)) | Some(Node::Encoded { .. }) => {
                    pages.push(ExpectedPage { url, depth, stored: true })
                }
                Some(Node::Html { links, .. }) => {
                    pages.push(ExpectedPage { url, depth, stored: true });
                    if max_depth.is_some_and(|max| depth >= max) {
                        continue;
                    }
                    for link in links {
                        if let Target::Path(p) = &link.target
                            && seen.insert(p.clone())
                        {
                            queue.push_back((p.clone(), depth + 1));
                        }
                    }
                }
            }
        }
        Expected { pages }
    }

    fn lock_counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.shared.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the server, letting in-flight requests finish.
    pub async fn shutdown(mut self) {
        self.running.shutdown().await;
    }
}

async fn handle(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let key = match uri.query() {
        Some(q) => format!("{}?{q}", uri.path()),
        None => uri.path().to_string(),
    };
    *shared.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(key.clone()).or_default() += 1;
    if let Some(agent) = headers.get(header::USER_AGENT).and_then(|h| h.to_str().ok()) {
        shared.user_agents.lock().unwrap_or_else(|e| e.into_inner()).insert(agent.to_string());
    }
    if uri.path() == "/robots.txt" {
        return text_response(StatusCode::OK, "text/plain; charset=utf-8", ROBOTS_TXT.to_string());
    }
    let _gauge = InFlight::enter(&shared);
    let latency = shared.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let response = answer(&shared, &key, &headers).await;
    *lock(&shared.statuses).entry(response.status().as_u16()).or_default() += 1;
    response
}

/// The answer to a GET of `key` (path and query), conditional requests included.
async fn answer(shared: &Shared, key: &str, headers: &HeaderMap) -> Response {
    if let Some(status) = lock(&shared.removed).get(key).copied() {
        let body = if status == StatusCode::GONE { "<h1>Gone</h1>" } else { "<h1>Not found</h1>" };
        return text_response(status, "text/html; charset=utf-8", body.into());
    }
    let edits = lock(&shared.edits).get(key).copied().unwrap_or(0);
    let response = plain_answer(shared, key, headers, edits).await;
    if response.status() != StatusCode::OK || matches!(shared.nodes.get(key), Some(Node::Drop)) {
        return response;
    }
    conditional(response, headers, edits).await
}

/// Adds `ETag` and `Last-Modified` to a 200, and answers 304 instead where the request's preconditions say so.
async fn conditional(response: Response, request: &HeaderMap, edits: u64) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "body".into());
    };
    let etag = format!("\"{:016x}\"", fnv1a(&bytes));
    let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(SITE_DATE_SECS + edits * 3600);
    for (name, value) in [(header::ETAG, etag.clone()), (header::LAST_MODIFIED, httpdate::fmt_http_date(modified))] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            parts.headers.insert(name, value);
        }
    }
    if not_modified(request, &etag, modified) {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in [header::ETAG, header::LAST_MODIFIED] {
            if let Some(value) = parts.headers.get(&name) {
                resp.headers_mut().insert(name, value.clone());
            }
        }
        return resp;
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// RFC 9110 §13.2.2 for a GET: `If-None-Match` (weak comparison) decides when
/// present; otherwise a valid `If-Modified-Since` not before `modified`.
fn not_modified(request: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    let none_match: Vec<&str> = request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).collect();
    if !none_match.is_empty() {
        let ours = opaque_tag(etag);
        return none_match
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || (!tag.is_empty() && opaque_tag(tag) == ours));
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok());
    match since.and_then(|s| httpdate::parse_http_date(s).ok()) {
        Some(since) => modified <= since,
        None => false,
    }
}

/// An entity tag without its weakness indicator (`W/"x"` and `"x"` compare equal weakly).
fn opaque_tag(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

/// FNV-1a, 64 bits: a stable hash of a body for its `ETag`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The unconditional answer to `key`, with `edits` paragraphs added to an HTML page.
async fn plain_answer(shared: &Shared, key: &str, headers: &HeaderMap, edits: u64) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1").to_string();
    match shared.nodes.get(key) {
        None => text_response(StatusCode::NOT_FOUND, "text/html; charset=utf-8", "<h1>Not found</h1>".into()),
        Some(Node::Redirect { status, to }) => {
            let mut resp = text_response(*status, "text/html; charset=utf-8", String::new());
            if let Ok(v) = HeaderValue::from_str(to) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Some(Node::Text(body)) => text_response(StatusCode::OK, "text/plain; charset=utf-8", body.clone()),
        Some(Node::Binary) => {
            let mut resp = Response::new(Body::from(Bytes::from_static(b"\x89PNG\r\n\x1a\n")));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            resp
        }
        Some(Node::Drop) => dropped_html(),
        Some(Node::Encoded { content_type, body }) => {
            let mut resp = Response::new(Body::from(body.clone()));
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            resp
        }
        Some(Node::Refresh { href, .. }) => {
            text_response(StatusCode::OK, "text/html; charset=utf-8", traps::refresh_html(href))
        }
        Some(node @ Node::Html { slow, .. }) => {
            if *slow {
                wait_slowly(shared).await;
            }
            let mut html = render(node, &host);
            for n in 1..=edits {
                html = html.replacen("</main>", &format!("<p>Revised, revision {n}.</p></main>"), 1);
            }
            text_response(StatusCode::OK, "text/html; charset=utf-8", html)
        }
    }
}

/// `/slow`'s wait: `slow_ms`, or until `slow_waits_for` other requests were answered.
async fn wait_slowly(shared: &Shared) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(shared.slow_ms);
    let before = shared.answered.load(Ordering::Acquire);
    let answered = || shared.answered.load(Ordering::Acquire) - before;
    while tokio::time::Instant::now() < deadline && (shared.slow_waits_for == 0 || answered() < shared.slow_waits_for) {
        tokio::time::sleep(Duration::from_millis(2).min(deadline - tokio::time::Instant::now())).await;
    }
    shared.answered_while_slow.fetch_max(answered(), Ordering::AcqRel);
}

/// Counts a request as being answered until dropped (a dropped connection included).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::AcqRel);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A 200 whose connection dies after the first bytes of the body.
fn dropped_html() -> Response {
    let stream = futures::stream::unfold(0u8, |step| async move {
        match step {
            0 => Some((Ok(Bytes::from_static(b"<html><head><title>Flaky</title></head><body><p>Half")), 1)),
            1 => {
                // Let the head and the first chunk reach the wire first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Err(io::Error::new(io::ErrorKind::ConnectionAborted, "sluice-testkit: injected drop")), 2))
            }
            _ => None,
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp
}

fn render(node: &Node, host: &str) -> String {
    let Node::Html { title, description, paragraphs, links, .. } = node else {
        return String::new();
    };
    let anchor = |l: &Link| {
        let href = l.href.replace("{host}", host);
        let rel = l.rel.map(|rel| format!(" rel=\"{rel}\"")).unwrap_or_default();
        format!("<a href=\"{href}\"{rel}>{}</a>", escape(&l.href.replace("{host}", "")))
    };
    // Document order: navigation (header), main, aside. The oracle follows the same order.
    let nav: Vec<String> = links.iter().take(NAV.len()).map(anchor).collect();
    let body: Vec<String> = links.iter().skip(NAV.len()).map(anchor).collect();
    let (main_links, aside_links) = body.split_at(body.len().min(2));
    let paragraphs: String = paragraphs.iter().map(|p| format!("<p>{}</p>\n", escape(p))).collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"description\" content=\"{description}\">\
         <style>body {{ font-family: sans-serif; }} nav a {{ margin: 0 1em; }}</style>\
         <script>window.analytics = {{ track: function() {{ return 'tracking code'; }} }};</script></head>\n\
         <body><header><div class=\"logo\">Sluice Docs</div><nav>{nav}</nav></header>\n\
         <main><h1>{title}</h1>\n{paragraphs}<p>See also {main}.</p></main>\n\
         <aside><h2>Related</h2>{aside}</aside>\n\
         <footer>Copyright Sluice Testkit. All rights reserved.</footer>\
         <noscript>Enable JavaScript for the search box.</noscript>\
         <script src=\"/app.js\"></script></body></html>\n",
        title = escape(title),
        description = escape(description),
        nav = nav.join(" | "),
        main = main_links.join(", "),
        aside = aside_links.join(" "),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The navigation every HTML page starts with: (target, href).
const NAV: [(&str, &str); 4] =
    [("/", "/"), ("/docs/0", "/docs/0#top"), ("/private/0", "/private/0"), ("/notes.txt", "/notes.txt")];

const WORDS: &[&str] = &[
    "pipeline",
    "stream",
    "batch",
    "checkpoint",
    "resume",
    "record",
    "stage",
    "chunk",
    "embedding",
    "store",
    "cursor",
    "frontier",
    "crawl",
    "page",
    "robots",
    "retry",
    "latency",
    "commit",
    "partition",
    "source",
    "sink",
    "vector",
    "données",
    "für",
    "naïve",
    "façade",
    "straße",
    "日本語",
    "mañana",
    "Ελληνικά",
    "the",
    "a",
    "of",
    "and",
    "to",
    "with",
    "every",
    "once",
    "never",
    "quickly",
    "safely",
    "again",
];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut out = String::new();
    for w in 0..words {
        if w > 0 {
            // Now and then a non-breaking or doubled space: normalisation must cope.
            out.push_str(match rng.below(20) {
                0 => "\u{a0}",
                1 => "  ",
                _ => " ",
            });
        }
        out.push_str(rng.pick_str(WORDS));
    }
    out.push('.');
    out
}

fn html_page(rng: &mut Rng, title: String, links: Vec<Link>, slow: bool) -> Node {
    let paragraphs = (0..rng.range(4, 8))
        .map(|_| {
            let words = rng.range(30, 80) as usize;
            sentence(rng, words)
        })
        .collect();
    let description = format!("About {}: {}", title, sentence(rng, 8));
    Node::Html { title, description, paragraphs, links, slow }
}

fn link(target: &str, href: impl Into<String>) -> Link {
    Link { target: Target::Path(target.to_string()), href: href.into(), rel: None }
}

fn nav_links() -> Vec<Link> {
    NAV.iter().map(|(target, href)| link(target, *href)).collect()
}

/// An equivalent way to write a link from `/docs/{from}` to `/docs/{to}`.
fn doc_href(rng: &mut Rng, to: usize) -> String {
    match rng.below(6) {
        0 => format!("/docs/{to}"),
        1 => format!("/docs/{to}#section-{}", rng.below(5)),
        2 => format!("./{to}"),
        3 => format!("../docs/{to}"),
        4 => format!("http://{{host}}/docs/{to}"),
        _ => format!("//{{host}}/docs/./{to}"),
    }
}

fn build_site(pages: usize, seed: u64) -> BTreeMap<String, Node> {
    let mut rng = Rng::new(seed);
    let mut nodes = BTreeMap::new();
    let mut home = nav_links();
    home.extend([
        link("/docs/0", "/docs/0"),
        link("/old/start", "/old/start"),
        Link { target: Target::Elsewhere, href: "http://example.invalid/elsewhere".into(), rel: None },
        Link { target: Target::Elsewhere, href: "mailto:docs@example.invalid".into(), rel: None },
        Link { target: Target::Elsewhere, href: "javascript:void(0)".into(), rel: None },
    ]);
    home.extend(traps::add(&mut nodes));
    nodes.insert("/".to_string(), html_page(&mut rng, "Sluice documentation".into(), home, false));
    // Special pages hang off the first docs pages (at most `pages - 1` of them).
    let specials: [(&str, &str); 7] = [
        ("/missing", "/missing"),
        ("/go/docs-2", "/go/docs-2"),
        ("/flaky", "/flaky"),
        ("/slow", "/slow"),
        ("/search?page=2&q=sluice", "/search?q=sluice&page=2#results"),
        ("/search?page=2&q=sluice", "/search?page=2&q=sluice"),
        ("/image.png", "/image.png"),
    ];
    for i in 0..pages {
        let mut links = nav_links();
        if i + 1 < pages {
            links.push(link(&format!("/docs/{}", i + 1), doc_href(&mut rng, i + 1)));
        }
        if let Some((target, href)) = specials.get(i) {
            links.push(link(target, *href));
        }
        for _ in 0..3 {
            let to = rng.below(pages as u64) as usize;
            links.push(link(&format!("/docs/{to}"), doc_href(&mut rng, to)));
        }
        nodes.insert(format!("/docs/{i}"), html_page(&mut rng, format!("Docs page {i}"), links, false));
    }
    for j in 0..PRIVATE_PAGES {
        let mut links = nav_links();
        links.push(link(&format!("/orphan/{j}"), format!("/orphan/{j}")));
        links.push(link(
            &format!("/private/{}", (j + 1) % PRIVATE_PAGES),
            format!("/private/{}", (j + 1) % PRIVATE_PAGES),
        ));
        nodes.insert(format!("/private/{j}"), html_page(&mut rng, format!("Private {j}"), links, false));
        nodes.insert(format!("/orphan/{j}"), html_page(&mut rng, format!("Orphan {j}"), nav_links(), false));
    }
    nodes.insert(
        "/old/start".into(),
        Node::Redirect { status: StatusCode::MOVED_PERMANENTLY, to: "/docs/moved".into() },
    );
    nodes.insert("/go/docs-2".into(), Node::Redirect { status: StatusCode::FOUND, to: "/docs/2".into() });
    nodes.insert("/docs/moved".into(), html_page(&mut rng, "Moved here".into(), nav_links(), false));
    nodes.insert("/flaky".into(), Node::Drop);
    nodes.insert("/slow".into(), html_page(&mut rng, "A slow page".into(), nav_links(), true));
    nodes.insert("/search?page=2&q=sluice".into(), html_page(&mut rng, "Search results".into(), nav_links(), false));
    nodes.insert("/image.png".into(), Node::Binary);
    let notes = (0..6).map(|_| sentence(&mut rng, 40)).collect::<Vec<_>>().join("\n\n");
    nodes.insert("/notes.txt".into(), Node::Text(format!("Release notes\n\n{notes}\n")));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_is_deterministic_and_pages_carry_boilerplate_around_main() {
        let a = build_site(50, 7);
        let b = build_site(50, 7);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(format!("{a:?}"), format!("{:?}", build_site(50, 8)));
        let rendered = render(&a["/docs/3"], "127.0.0.1:9");
        assert!(rendered.contains("<nav>") && rendered.contains("<main>") && rendered.contains("<script>"));
    }
}
