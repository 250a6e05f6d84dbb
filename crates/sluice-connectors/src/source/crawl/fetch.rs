//! Fetching one URL politely: robots.txt, the per-host gate, time-outs and
//! retries with exponential backoff (backon). Redirects are not followed
//! here: a redirect comes back canonical and checked against the allowed
//! hosts, and the crawl follows it only when its target is new to the
//! frontier (so a redirect to a page already seen costs no second fetch).
//!
//! | answer | outcome |
//! | --- | --- |
//! | 2xx `text/html`, `application/xhtml+xml` | a page, with its title and links |
//! | 2xx HTML with a `<meta http-equiv="refresh">` to another page (≤ 100 s) | the target, like a redirect |
//! | 2xx `text/plain` | a page without links |
//! | 2xx other content types | skipped (logged) |
//! | 304 to a conditional request (a page the store has) | unchanged: its stored links are followed |
//! | 404, 410 for a page the store has (or marked deleted) | gone: the document is marked or removed (one marked already: nothing, with `mark`) |
//! | 301, 302, 303, 307, 308 | the target, for the crawl to follow |
//! | 408, 429, 5xx, connection errors, time-outs, bodies cut short | retried, then a failure |
//! | other 4xx | a failure, at once |
//!
//! Bodies are decoded by their charset ([`super::charset`]).
//!
//! **Conditional requests.** For a page the store holds with an `ETag` or a
//! `Last-Modified` (kept in its fields `etag`, `last_modified`, with its
//! `links`), the request carries `If-None-Match` / `If-Modified-Since`
//! ([`Stored`], loaded once before the run). A `304` then costs no body and
//! no stage work, and the crawl goes on through the page's stored links.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use url::Url;

use super::canonical::{authority, resolve};
use super::charset;
use super::links::parse_html;
use super::politeness::HostGates;
use super::robots::{RobotsCache, Rules};
use crate::remote::http::{retry_after, transport_error};

/// The longest a server's `Retry-After` is obeyed before a retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How a crawl fetches.
#[derive(Clone, Debug)]
pub struct FetchSettings {
    pub user_agent: String,
    pub timeout: Duration,
    pub retries: usize,
    pub retry_base: Duration,
    pub max_bytes: usize,
    pub delay: Duration,
    pub respect_robots: bool,
    /// `host` or `host:port` entries a crawl may visit: `host:port` that
    /// port only (the scheme's default when the URL names none), a bare
    /// `host` every port of it.
    pub allowed_hosts: Vec<String>,
}

impl FetchSettings {
    pub fn allows_host(&self, url: &Url) -> bool {
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default();
        self.allowed_hosts.iter().any(|allowed| {
            let (allowed_host, allowed_port) = match allowed.rsplit_once(':') {
                Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p.parse::<u16>().ok()),
                _ => (allowed.as_str(), None),
            };
            allowed_host.eq_ignore_ascii_case(host) && allowed_port.is_none_or(|p| Some(p) == port)
        })
    }
}

/// What the store holds of a page: its validators and the links it had.
#[derive(Clone, Debug, Default)]
pub struct StoredPage {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// `None` for a page stored before links were kept: it gets no conditional request.
    pub links: Option<Vec<Url>>,
}

/// The crawl's pages the store holds, by canonical URL, and those it marked deleted.
#[derive(Debug, Default)]
pub struct Stored {
    pub pages: HashMap<String, StoredPage>,
    pub deleted: HashSet<String>,
}

impl Stored {
    /// The validators to send for `url`, when a 304 could be acted on.
    fn conditional(&self, url: &Url) -> Option<&StoredPage> {
        self.pages.get(url.as_str()).filter(|p| p.links.is_some() && (p.etag.is_some() || p.last_modified.is_some()))
    }

    fn knows(&self, url: &Url) -> bool {
        self.pages.contains_key(url.as_str()) || self.deleted.contains(url.as_str())
    }
}

/// A fetched page.
#[derive(Clone, Debug)]
pub struct FetchedPage {
    /// Canonical URL of the last hop (after redirects).
    pub url: Url,
    pub status: u16,
    pub content_type: String,
    pub body: String,
    pub title: Option<String>,
    /// Followable links, canonical, in document order (not yet scoped).
    pub links: Vec<Url>,
    /// The answer's `ETag` and `Last-Modified`, for the next crawl's conditional request.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// What fetching a URL came to.
#[derive(Clone, Debug)]
pub enum Fetched {
    Page(FetchedPage),
    /// The page could not be had: it becomes a failure with this URL as id.
    Failed {
        url: Url,
        status: Option<u16>,
        error_type: String,
        error: String,
    },
    /// A redirect to `to` (canonical, within the allowed hosts).
    Redirect {
        from: Url,
        to: Url,
    },
    /// `304 Not Modified`: the stored page is current; `links` are its stored links.
    Unchanged {
        url: Url,
        links: Vec<Url>,
    },
    /// `404` or `410` for a page the store has: it is gone. `marked`: the
    /// store has it marked deleted already (an earlier crawl found it gone).
    Gone {
        url: Url,
        status: u16,
        marked: bool,
    },
    /// Not a page to store: robots.txt forbids it, a redirect leaves the allowed hosts, not text.
    Skipped {
        url: Url,
        reason: String,
    },
}

/// One attempt's error.
#[derive(Debug)]
struct AttemptError {
    retryable: bool,
    status: Option<u16>,
    error_type: String,
    message: String,
    retry_after: Option<Duration>,
}

/// An answer read in full.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

pub struct Fetcher {
    http: reqwest::Client,
    settings: FetchSettings,
    gates: HostGates,
    robots: RobotsCache,
    /// What the store holds, set before the run ([`Fetcher::set_stored`]).
    stored: RwLock<Arc<Stored>>,
}

impl Fetcher {
    pub fn new(settings: FetchSettings, per_host_concurrency: usize) -> Result<Self, crate::ConfigError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(settings.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| crate::ConfigError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            settings,
            gates: HostGates::new(per_host_concurrency),
            robots: RobotsCache::default(),
            stored: RwLock::default(),
        })
    }

    /// What the store holds of this crawl's pages (conditional requests, deletions).
    pub fn set_stored(&self, stored: Stored) {
        *self.stored.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(stored);
    }

    fn stored(&self) -> Arc<Stored> {
        self.stored.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn settings(&self) -> &FetchSettings {
        &self.settings
    }

    /// Fetches `url` (one hop: a redirect is returned, not followed).
    pub async fn fetch(&self, url: Url) -> Fetched {
        let rules = self.robots_for(&url).await;
        if self.settings.respect_robots && !rules.allows(url.as_str()) {
            let reason = match &*rules {
                Rules::DisallowAll { reason } => format!("robots.txt could not be read ({reason})"),
                _ => "disallowed by robots.txt".to_string(),
            };
            return Fetched::Skipped { url, reason };
        }
        let delay = rules.crawl_delay().map_or(self.settings.delay, |d| d.max(self.settings.delay));
        let stored = self.stored();
        let known = stored.conditional(&url);
        let answer = match self.get_with_retries(&url, delay, known).await {
            Ok(answer) => answer,
            Err(e) => return Fetched::Failed { url, status: e.status, error_type: e.error_type, error: e.message },
        };
        if answer.status == StatusCode::NOT_MODIFIED {
            return match known.and_then(|k| k.links.clone()) {
                Some(links) => Fetched::Unchanged { url, links },
                None => Fetched::Failed {
                    error: format!("HTTP 304 for {url}, which was not asked conditionally"),
                    url,
                    status: Some(304),
                    error_type: "http_304".into(),
                },
            };
        }
        if matches!(answer.status, StatusCode::NOT_FOUND | StatusCode::GONE) && stored.knows(&url) {
            let marked = stored.deleted.contains(url.as_str()) && !stored.pages.contains_key(url.as_str());
            return Fetched::Gone { url, status: answer.status.as_u16(), marked };
        }
        if answer.status.is_redirection() && answer.status != StatusCode::NOT_MODIFIED {
            let location = answer.headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
            let Some(to) = location.and_then(|loc| resolve(&url, loc)) else {
                return Fetched::Failed {
                    error: format!("HTTP {} without a usable Location header for {url}", answer.status),
                    url,
                    status: Some(answer.status.as_u16()),
                    error_type: "redirect".into(),
                };
            };
            if !self.settings.allows_host(&to) {
                return Fetched::Skipped { url, reason: format!("redirects off the allowed hosts to {to}") };
            }
            return Fetched::Redirect { from: url, to };
        }
        if !answer.status.is_success() {
            return Fetched::Failed {
                error_type: format!("http_{}", answer.status.as_u16()),
                error: format!("HTTP {} for {url}", answer.status),
                url,
                status: Some(answer.status.as_u16()),
            };
        }
        match page_of(url, answer) {
            Fetched::Redirect { from, to } if !self.settings.allows_host(&to) => {
                Fetched::Skipped { reason: format!("refreshes off the allowed hosts to {to}"), url: from }
            }
            fetched => fetched,
        }
    }

    async fn robots_for(&self, url: &Url) -> Arc<Rules> {
        if !self.settings.respect_robots {
            return Arc::new(Rules::AllowAll);
        }
        let origin = url.origin().ascii_serialization();
        self.robots
            .get_or_fetch(&origin, || async {
                let Ok(robots_url) = Url::parse(&format!("{origin}/robots.txt")) else {
                    return Rules::AllowAll;
                };
                match self.get_with_retries(&robots_url, self.settings.delay, None).await {
                    Ok(answer) => Rules::from_answer(&origin, answer.status.as_u16(), &answer.body),
                    Err(e) if e.status.is_some_and(|s| (400..500).contains(&s)) => Rules::AllowAll,
                    Err(e) => {
                        tracing::warn!(origin, error = %e.message, "robots.txt unreadable: the host is not crawled");
                        Rules::DisallowAll { reason: e.message }
                    }
                }
            })
            .await
    }

    async fn get_with_retries(
        &self,
        url: &Url,
        delay: Duration,
        known: Option<&StoredPage>,
    ) -> Result<Answer, AttemptError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.settings.retries)
            .with_jitter();
        let mut attempts = 0usize;
        let result = (|| {
            attempts += 1;
            self.get_once(url, delay, known)
        })
        .retry(backoff)
        .when(|e: &AttemptError| e.retryable)
        .adjust(|e: &AttemptError, planned| planned.map(|d| e.retry_after.map_or(d, |ra| ra.min(MAX_RETRY_AFTER))))
        .notify(|e: &AttemptError, wait| tracing::debug!(%url, error = %e.message, ?wait, "retrying"))
        .await;
        result.map_err(|mut e| {
            if attempts > 1 {
                e.message = format!("{} (after {attempts} attempts)", e.message);
            }
            e
        })
    }

    async fn get_once(&self, url: &Url, delay: Duration, known: Option<&StoredPage>) -> Result<Answer, AttemptError> {
        let _permit = self.gates.acquire(&authority(url), delay).await;
        let transport = |e: &reqwest::Error| AttemptError {
            retryable: true,
            status: None,
            error_type: if e.is_timeout() { "timeout".into() } else { "connection".into() },
            message: format!("{url}: {}", transport_error(e)),
            retry_after: None,
        };
        let mut request = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5");
        if let Some(known) = known {
            // Both when both are known: a server that ignores one may honour the other.
            if let Some(etag) = &known.etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = &known.last_modified {
                request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
            }
        }
        let mut response = request.send().await.map_err(|e| transport(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
        {
            return Err(AttemptError {
                retryable: true,
                status: Some(status.as_u16()),
                error_type: format!("http_{}", status.as_u16()),
                message: format!("HTTP {status} for {url}"),
                retry_after: retry_after(&headers),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e))? {
            if body.len() + chunk.len() > self.settings.max_bytes {
                return Err(AttemptError {
                    retryable: false,
                    status: Some(status.as_u16()),
                    error_type: "too_large".into(),
                    message: format!("{url}: the body is larger than max_bytes = {}", self.settings.max_bytes),
                    retry_after: None,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, headers, body })
    }
}

/// A header's value as text, when it is one.
fn header_text(headers: &reqwest::header::HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A 2xx answer as a page (or, for a meta refresh, a redirect), or skipped when it is not text.
fn page_of(url: Url, answer: Answer) -> Fetched {
    let content_type = header_text(&answer.headers, reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let etag = header_text(&answer.headers, reqwest::header::ETAG);
    let last_modified = header_text(&answer.headers, reqwest::header::LAST_MODIFIED);
    let mime = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let is_html = match mime.as_str() {
        "text/html" | "application/xhtml+xml" => true,
        "text/plain" => false,
        "" if sniffs_as_html(&answer.body) => true,
        _ => return Fetched::Skipped { url, reason: format!("content type {content_type:?} is not HTML or text") },
    };
    let (body, _encoding) = charset::decode(&content_type, &answer.body, is_html);
    let (title, links) = if is_html {
        let parsed = parse_html(&body, &url);
        if let Some(to) = parsed.refresh {
            return Fetched::Redirect { from: url, to };
        }
        (parsed.title, parsed.links)
    } else {
        (None, Vec::new())
    };
    let status = answer.status.as_u16();
    Fetched::Page(FetchedPage { url, status, content_type, body, title, links, etag, last_modified })
}

/// An answer without a content type is HTML when it looks like it.
fn sniffs_as_html(body: &[u8]) -> bool {
    crate::util::html::looks_like_html(&String::from_utf8_lossy(body))
}
