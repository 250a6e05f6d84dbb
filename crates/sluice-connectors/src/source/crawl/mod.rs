//! A web crawl: start URLs, links followed breadth-first within the allowed
//! hosts, up to `max_depth` links away and `max_pages` pages, politely (robots.txt,
//! per-host concurrency and delay), each canonical URL once.
//!
//! Each page becomes a record: id = the canonical URL (after redirects),
//! text = the raw HTML or text, fields `url`, `title`, `status`,
//! `content_type`, `depth`, `links` (the page's followable links), and
//! `etag` / `last_modified` when the server sent them (no fetch time: it
//! would change the content hash of an unchanged page, and with it the reuse
//! of paid results; the store keeps `stored_at`). A page that cannot
//! be had (404, 5xx or a dropped connection after retries) becomes a failure
//! with its URL as id and the status in the error.
//!
//! **A re-crawl** (any later run over the same store) asks conditionally for
//! the pages the store has ([`fetch`]): a `304` is an unchanged item (no
//! stage work, nothing written) whose stored links the crawl follows; a page
//! the store has that is now `404`/`410` is a deleted item, marked or removed
//! as `on_delete` says.
//!
//! **The cursor is the crawl frontier** ([`frontier`]): a page of this
//! source is one crawled URL, and its `next` cursor is the frontier after it
//! (its links queued). The engine commits a page's cursor with the batch
//! holding it, so a resumed crawl re-reads exactly the committed frontier:
//! committed pages are never fetched again, and the pages lost to a crash are
//! those that were in flight. Pages are fetched ahead ([`prefetch`]) so that
//! one-URL pages still keep `concurrency` requests in flight, and a slow page
//! at the head of the queue does not stop the rest: the pages behind it, and
//! those they link to, are fetched meanwhile. Results come out in queue
//! order, so re-fetching a cursor gives the same page.
//!
//! Pages are decoded by their charset ([`charset`]); a
//! `<meta http-equiv="refresh">` to another page is followed like a
//! redirect. With no `allowed_hosts`, the crawl stays on the host and port of
//! each start URL (`http://example.com/` allows `example.com:80` only).

mod canonical;
mod charset;
mod fetch;
mod frontier;
mod links;
mod politeness;
mod prefetch;
mod robots;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::store::{OnDelete, Store};
use sluice_core::{Context, Page, Record, Source, SourceError, SourceItem};

pub use self::canonical::{canonical, parse_absolute, resolve};
use self::fetch::{FetchSettings, Fetched, Fetcher, Stored, StoredPage};
pub use self::frontier::Frontier;
pub use self::links::{ParsedPage, parse_html};
use self::prefetch::Prefetcher;
pub use self::robots::ROBOTS_AGENT;
use crate::ConfigError;
use crate::util::validate::{check_not_empty, check_range};

/// The `User-Agent` sent unless `user_agent` says otherwise.
pub const DEFAULT_USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"), " (+crawl)");

fn default_name() -> String {
    "crawl".to_string()
}
fn default_concurrency() -> usize {
    8
}
fn default_per_host_concurrency() -> usize {
    2
}
fn default_delay_ms() -> u64 {
    100
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_retries() -> usize {
    2
}
fn default_retry_base_ms() -> u64 {
    200
}
fn default_max_redirects() -> usize {
    5
}
fn default_max_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_true() -> bool {
    true
}
fn default_user_agent() -> String {
    DEFAULT_USER_AGENT.to_string()
}

/// `[source] kind = "crawl"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlConfig {
    /// Where the crawl starts (http or https URLs).
    pub start_urls: Vec<String>,
    /// Hosts whose links are followed: `host:port` (that port only) or `host` (every port);
    /// default: the host and port of each start URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Links followed from a start URL at most (0: the start URLs only); default no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// Pages (stored or failed) at most, across resumes (the seed's CLOSESPIDER_PAGECOUNT); default no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<u64>,
    /// Requests in flight at most, over all hosts (1..=256).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests in flight at most to one host (1..=64).
    #[serde(default = "default_per_host_concurrency")]
    pub per_host_concurrency: usize,
    /// Time between the starts of two requests to one host (0..=60000); robots.txt's Crawl-delay wins when longer.
    #[serde(default = "default_delay_ms")]
    pub delay_ms: u64,
    /// Time-out of one request, body included (100..=600000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of a request that failed in a passing way (5xx, 408, 429, connection, time-out) (0..=10).
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// First backoff delay, doubled each retry (1..=60000).
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Redirects followed at most (0..=20).
    #[serde(default = "default_max_redirects")]
    pub max_redirects: usize,
    /// Largest body read (1024..=1073741824 bytes).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Obey robots.txt (default true).
    #[serde(default = "default_true")]
    pub respect_robots: bool,
    /// The `User-Agent` header; it must name sluice.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// Source name stored with every record.
    #[serde(default = "default_name")]
    pub name: String,
    /// Ask for the pages the store has with `If-None-Match` / `If-Modified-Since` (default true).
    #[serde(default = "default_true")]
    pub conditional: bool,
    /// A stored page now 404/410: `"mark"` (default: kept, left out of reads) or `"remove"`.
    #[serde(default)]
    pub on_delete: OnDelete,
}

impl CrawlConfig {
    pub fn new(start_urls: Vec<String>) -> Self {
        Self {
            start_urls,
            allowed_hosts: Vec::new(),
            max_depth: None,
            max_pages: None,
            concurrency: default_concurrency(),
            per_host_concurrency: default_per_host_concurrency(),
            delay_ms: default_delay_ms(),
            timeout_ms: default_timeout_ms(),
            retries: default_retries(),
            retry_base_ms: default_retry_base_ms(),
            max_redirects: default_max_redirects(),
            max_bytes: default_max_bytes(),
            respect_robots: true,
            user_agent: default_user_agent(),
            name: default_name(),
            conditional: true,
            on_delete: OnDelete::default(),
        }
    }
}

/// The crawl source. One partition (`main`): a breadth-first crawl is one frontier.
pub struct CrawlSource {
    config: CrawlConfig,
    /// Canonical start URLs.
    start: Vec<String>,
    fetcher: Arc<Fetcher>,
    prefetch: Prefetcher,
}

impl std::fmt::Debug for CrawlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrawlSource").field("config", &self.config).finish()
    }
}

impl CrawlSource {
    pub fn new(config: CrawlConfig) -> Result<Self, ConfigError> {
        if config.start_urls.is_empty() {
            return Err(ConfigError(
                "crawl.start_urls is empty (allowed: one or more http:// or https:// URLs)".into(),
            ));
        }
        let mut start = Vec::new();
        let mut hosts = Vec::new();
        for url in &config.start_urls {
            let parsed = parse_absolute(url)
                .map_err(|e| ConfigError(format!("crawl.start_urls: {url:?} is not a URL to crawl: {e}")))?;
            let port = parsed.port_or_known_default().unwrap_or_default();
            hosts.push(format!("{}:{port}", parsed.host_str().unwrap_or_default()));
            start.push(parsed.to_string());
        }
        let mut allowed_hosts = Vec::new();
        for host in &config.allowed_hosts {
            let host = host.trim().to_ascii_lowercase();
            if host.is_empty() || host.contains(['/', ' ']) {
                return Err(ConfigError(format!(
                    "crawl.allowed_hosts: {host:?} is not a host (allowed: HOST or HOST:PORT, e.g. docs.example.com)"
                )));
            }
            allowed_hosts.push(host);
        }
        if allowed_hosts.is_empty() {
            allowed_hosts = hosts;
        }
        if let Some(depth) = config.max_depth {
            check_range("crawl.max_depth", depth, 0, 10_000)?;
        }
        if let Some(pages) = config.max_pages {
            check_range("crawl.max_pages", pages, 1, 1_000_000_000)?;
        }
        check_range("crawl.concurrency", config.concurrency, 1, 256)?;
        check_range("crawl.per_host_concurrency", config.per_host_concurrency, 1, 64)?;
        check_range("crawl.delay_ms", config.delay_ms, 0, 60_000)?;
        check_range("crawl.timeout_ms", config.timeout_ms, 100, 600_000)?;
        check_range("crawl.retries", config.retries, 0, 10)?;
        check_range("crawl.retry_base_ms", config.retry_base_ms, 1, 60_000)?;
        check_range("crawl.max_redirects", config.max_redirects, 0, 20)?;
        check_range("crawl.max_bytes", config.max_bytes, 1024, 1 << 30)?;
        check_not_empty("crawl.name", &config.name)?;
        if !config.user_agent.to_ascii_lowercase().contains("sluice") {
            return Err(ConfigError(format!(
                "crawl.user_agent = {:?} must name sluice (e.g. \"sluice/1.0 (+https://example.com/bot)\")",
                config.user_agent
            )));
        }
        if reqwest::header::HeaderValue::from_str(&config.user_agent).is_err() {
            return Err(ConfigError(format!("crawl.user_agent = {:?} is not a valid header value", config.user_agent)));
        }
        let settings = FetchSettings {
            user_agent: config.user_agent.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            retries: config.retries,
            retry_base: Duration::from_millis(config.retry_base_ms),
            max_bytes: config.max_bytes,
            delay: Duration::from_millis(config.delay_ms),
            respect_robots: config.respect_robots,
            allowed_hosts,
        };
        let fetcher = Arc::new(Fetcher::new(settings, config.per_host_concurrency)?);
        let prefetch = Prefetcher::new(fetcher.clone(), config.concurrency, config.max_depth);
        Ok(Self { config, start, fetcher, prefetch })
    }

    fn limit_reached(&self, frontier: &Frontier) -> bool {
        self.config.max_pages.is_some_and(|max| frontier.emitted >= max)
    }

    /// Fetches `url` (popped at `depth`), following redirects (and meta refreshes) whose target
    /// is new to the frontier, and gives its item, if any, with its links
    /// queued. A redirect to a page seen before gives nothing: that page is
    /// (or will be) stored under its own URL.
    async fn crawl_one(&self, frontier: &mut Frontier, url: url::Url, depth: u32) -> Option<SourceItem> {
        let mut fetched = self.prefetch.take(&url, depth).await;
        let mut hops = 0;
        while let Fetched::Redirect { from, to } = fetched {
            hops += 1;
            if hops > self.config.max_redirects {
                fetched = Fetched::Failed {
                    error: format!("more than {} redirects, the last from {from} to {to}", self.config.max_redirects),
                    url: from,
                    status: None,
                    error_type: "too_many_redirects".into(),
                };
                break;
            }
            if !frontier.mark_seen(to.as_str()) {
                tracing::debug!(%from, %to, "redirect to a page already seen");
                return None;
            }
            fetched = self.prefetch.take(&to, depth).await;
        }
        self.consume(frontier, depth, fetched)
    }

    fn consume(&self, frontier: &mut Frontier, depth: u32, fetched: Fetched) -> Option<SourceItem> {
        match fetched {
            Fetched::Redirect { .. } => None,
            Fetched::Skipped { url, reason } => {
                tracing::info!(url = %url, reason, "page skipped");
                None
            }
            // Marked by an earlier crawl: nothing to do, and not counted deleted again.
            Fetched::Gone { url, status, marked: true } if self.config.on_delete == OnDelete::Mark => {
                tracing::debug!(url = %url, status, "page still gone, marked deleted before");
                None
            }
            Fetched::Gone { url, status, .. } => {
                tracing::info!(url = %url, status, action = ?self.config.on_delete, "page gone");
                Some(SourceItem::Deleted { id: url.to_string(), action: self.config.on_delete })
            }
            Fetched::Unchanged { url, links } => {
                self.queue_links(frontier, depth, &links);
                tracing::debug!(url = %url, "page unchanged (304)");
                Some(SourceItem::Unchanged { id: url.to_string() })
            }
            Fetched::Failed { url, status, error_type, error } => {
                tracing::warn!(url = %url, error, "page failed");
                let raw = json!({ "url": url.as_str(), "status": status, "depth": depth }).to_string();
                Some(SourceItem::Invalid { id: url.to_string(), raw, error_type, error })
            }
            Fetched::Page(page) => {
                self.queue_links(frontier, depth, &page.links);
                let url = page.url.to_string();
                let links: Vec<&str> = page.links.iter().map(url::Url::as_str).collect();
                let mut record = Record::new(&self.config.name, &url, page.body)
                    .with_field("url", url.clone())
                    .with_field("title", page.title.unwrap_or_default())
                    .with_field("status", page.status)
                    .with_field("content_type", page.content_type)
                    .with_field("depth", depth)
                    .with_field("links", links);
                if let Some(etag) = page.etag {
                    record = record.with_field("etag", etag);
                }
                if let Some(date) = page.last_modified {
                    record = record.with_field("last_modified", date);
                }
                Some(SourceItem::Record(record))
            }
        }
    }

    fn queue_links(&self, frontier: &mut Frontier, depth: u32, links: &[url::Url]) {
        if self.config.max_depth.is_none_or(|max| depth < max) {
            for link in links {
                if self.fetcher.settings().allows_host(link) {
                    frontier.push(link.as_str(), depth + 1);
                }
            }
        }
    }
}

#[async_trait]
impl Source for CrawlSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    /// Reads what the store holds of this crawl: the validators and links of
    /// its pages (for conditional requests) and the pages marked deleted.
    /// Held in memory for the run: a few hundred bytes a page.
    async fn prepare(&self, store: &dyn Store) -> Result<(), SourceError> {
        let mut stored = Stored::default();
        let unreadable =
            |e: sluice_core::StoreError| SourceError::fatal(format!("crawl: reading the stored pages: {e}"));
        if let Ok(ids) = store.deleted_ids(&self.config.name).await {
            stored.deleted = ids.into_iter().collect();
        }
        let mut after: Option<String> = None;
        loop {
            let docs = match store.scan_documents(&self.config.name, after.as_deref(), SCAN_PAGE).await {
                Ok(docs) => docs,
                // A store that cannot be read back (a sink-only store): every page is fetched in full.
                Err(sluice_core::StoreError::Contract { .. }) => break,
                Err(e) => return Err(unreadable(e)),
            };
            let Some(last) = docs.last() else { break };
            after = Some(last.id().to_string());
            let full = docs.len() == SCAN_PAGE;
            for doc in docs {
                stored.pages.insert(doc.id().to_string(), stored_page(&doc.record.fields, self.config.conditional));
            }
            if !full {
                break;
            }
        }
        let conditional = stored.pages.values().filter(|p| p.links.is_some()).count();
        tracing::info!(
            pages = stored.pages.len(),
            conditional,
            deleted = stored.deleted.len(),
            "crawl: stored pages read"
        );
        self.fetcher.set_stored(stored);
        Ok(())
    }

    /// One page = the next URL of the frontier that gives an item (skipped
    /// URLs are passed over); `next` is the frontier after it.
    async fn fetch(&self, _ctx: &Context, _partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let mut frontier = match cursor {
            None => Frontier::start(self.start.iter().map(String::as_str)),
            Some(cursor) => Frontier::decode(cursor).map_err(|message| SourceError::CursorInvalid { message })?,
        };
        let mut items = Vec::new();
        while items.is_empty() && !self.limit_reached(&frontier) {
            let Some((url, depth)) = frontier.pop() else { break };
            let Ok(parsed) = url::Url::parse(&url) else { continue };
            let remaining = self.config.max_pages.map(|max| max.saturating_sub(frontier.emitted));
            self.prefetch.warm(&url, depth, &frontier, remaining);
            if let Some(item) = self.crawl_one(&mut frontier, parsed, depth).await {
                frontier.emitted += 1;
                items.push(item);
            }
        }
        let done = frontier.queue_is_empty() || self.limit_reached(&frontier);
        Ok(Page { items, next: (!done).then(|| frontier.encode()), dropped: 0 })
    }

    async fn estimated_total(&self) -> Option<u64> {
        self.config.max_pages
    }
}

/// Stored documents read per query by [`CrawlSource::prepare`].
const SCAN_PAGE: usize = 500;

/// What a stored page's fields say for a conditional request (nothing when `conditional` is off).
fn stored_page(fields: &serde_json::Map<String, serde_json::Value>, conditional: bool) -> StoredPage {
    if !conditional {
        return StoredPage::default();
    }
    let text = |key: &str| fields.get(key).and_then(serde_json::Value::as_str).map(str::to_string);
    let links = fields
        .get("links")
        .and_then(serde_json::Value::as_array)
        .map(|links| links.iter().filter_map(|l| l.as_str()).filter_map(|l| url::Url::parse(l).ok()).collect());
    StoredPage { etag: text("etag"), last_modified: text("last_modified"), links }
}

/// `kind = "crawl"`: its records are web pages.
impl crate::kind::SourceKind for CrawlConfig {
    fn build(&self) -> Result<Arc<dyn Source>, ConfigError> {
        Ok(Arc::new(CrawlSource::new(self.clone())?))
    }

    fn run_defaults(&self) -> crate::kind::RunDefaults {
        crate::kind::RunDefaults { noun: "pages", ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(source: &CrawlSource, url: &str) -> bool {
        source.fetcher.settings().allows_host(&url::Url::parse(url).unwrap())
    }

    #[test]
    fn the_default_allowed_hosts_are_the_start_urls_host_and_port_whatever_the_port() {
        let source = CrawlSource::new(CrawlConfig::new(vec!["http://Example.com/docs/".into()])).unwrap();
        assert!(allows(&source, "http://example.com/x") && allows(&source, "http://example.com:80/y"));
        assert!(!allows(&source, "http://example.com:8080/"), "another port of the host");
        assert!(!allows(&source, "https://example.com/"), "port 443 is another port");
        assert!(!allows(&source, "http://other.example.com/"));
        let source = CrawlSource::new(CrawlConfig::new(vec!["http://127.0.0.1:8003/".into()])).unwrap();
        assert!(allows(&source, "http://127.0.0.1:8003/a") && !allows(&source, "http://127.0.0.1/"));

        // Configured: `host` is every port of it, `host:port` that port only (the scheme's default included).
        let mut config = CrawlConfig::new(vec!["http://example.com/".into()]);
        config.allowed_hosts = vec!["docs.example.com".into(), "Example.com:80".into(), "[::1]:8080".into()];
        let source = CrawlSource::new(config).unwrap();
        assert!(allows(&source, "http://docs.example.com:9000/") && allows(&source, "https://docs.example.com/"));
        assert!(allows(&source, "http://example.com/") && !allows(&source, "http://example.com:81/"));
        assert!(allows(&source, "http://[::1]:8080/") && !allows(&source, "http://[::1]:8081/"));
    }
}
