//! The crawl source against the test kit site's traps (issue 21): pages in
//! other charsets, `rel="NoFollow"`, a percent-escape case in robots.txt, an
//! escaped unreserved character, meta refreshes; and a slow page at the head
//! of the queue that no longer holds the crawl back.

use std::collections::BTreeSet;

use sluice_connectors::source::crawl::{CrawlConfig, CrawlSource, resolve};
use sluice_core::{Context, Page, Record, Source, SourceItem};
use sluice_testkit::site::traps::{CAFE, NIHONGO};
use sluice_testkit::site::{FakeSite, SiteConfig};
use url::Url;

async fn site(config: SiteConfig) -> FakeSite {
    FakeSite::start(config).await.expect("site starts")
}

fn config(start: Vec<String>) -> CrawlConfig {
    let mut c = CrawlConfig::new(start);
    c.delay_ms = 0;
    c.retry_base_ms = 1;
    c.per_host_concurrency = 4;
    c.concurrency = 4;
    c
}

async fn drain(source: &CrawlSource) -> Vec<Page> {
    let ctx = Context::detached();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = source.fetch(&ctx, "main", cursor.as_deref()).await.expect("a page");
        cursor = page.next.clone();
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 10_000, "the crawl does not end");
    }
}

fn records(pages: &[Page]) -> Vec<&Record> {
    pages
        .iter()
        .flat_map(|p| &p.items)
        .filter_map(|i| match i {
            SourceItem::Record(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn ids(pages: &[Page]) -> Vec<(String, bool)> {
    pages.iter().flat_map(|p| &p.items).map(|i| (i.id().to_string(), matches!(i, SourceItem::Record(_)))).collect()
}

#[tokio::test]
async fn the_traps_are_crawled_by_the_standards() {
    let site = site(SiteConfig { pages: 20, slow_ms: 20, ..SiteConfig::default() }).await;
    let pages = drain(&CrawlSource::new(config(vec![site.url("/")])).unwrap()).await;
    let expected = site.expected(None);
    assert_eq!(ids(&pages), expected.pages.iter().map(|p| (p.url.clone(), p.stored)).collect::<Vec<_>>());
    let records = records(&pages);
    let text_of = |path: &str| {
        let url = site.url(path);
        records.iter().find(|r| r.id == url).unwrap_or_else(|| panic!("{path} is stored")).text.clone()
    };

    // Charsets: by header, meta, http-equiv, BOM and detection; the stored text reads right.
    for path in ["/charset/latin1-header.html", "/charset/latin1-meta.html", "/charset/cp1252-http-equiv.html"] {
        let text = text_of(path);
        assert!(text.contains(CAFE) && !text.contains('\u{fffd}'), "{path}: {text}");
    }
    let bom = text_of("/charset/utf8-bom.html");
    assert!(bom.starts_with("<!DOCTYPE html>") && bom.contains(CAFE), "the BOM is read, not kept: {bom:?}");
    for path in ["/charset/sjis-header.html", "/charset/sjis-meta.html", "/charset/sjis-undeclared.html"] {
        let text = text_of(path);
        assert!(text.contains(NIHONGO) && !text.contains('\u{fffd}'), "{path}: {text}");
    }
    let latin1 = records.iter().find(|r| r.id == site.url("/charset/latin1-header.html")).unwrap();
    assert_eq!(latin1.fields["title"], "Latin-1 by header");
    assert_eq!(latin1.fields["content_type"], "text/html; charset=ISO-8859-1", "the header is kept as sent");

    // rel="NoFollow" and rel="external NOFOLLOW": not followed.
    assert_eq!(site.fetch_count("/traps/nofollow-a.html"), 0);
    assert_eq!(site.fetch_count("/traps/nofollow-b.html"), 0);
    // robots.txt's Disallow: /caf%C3%A9/ stops /caf%c3%a9/menu.html, in either spelling.
    assert_eq!(site.fetch_count("/caf%c3%a9/menu.html") + site.fetch_count("/caf%C3%A9/menu.html"), 0);
    // /traps/pct-%74arget.html is /traps/pct-target.html: one request, one record.
    assert_eq!(site.fetch_count("/traps/pct-target.html"), 1);
    assert_eq!(site.fetch_count("/traps/pct-%74arget.html"), 0);
    let stored: Vec<&str> = records.iter().map(|r| r.id.as_str()).filter(|id| id.contains("pct-")).collect();
    assert_eq!(stored, [site.url("/traps/pct-target.html")]);
    // A meta refresh is followed like a redirect: the target is stored under its URL, the refresh page is not.
    assert!(text_of("/traps/refreshed.html").contains("Refreshed"));
    assert!(!records.iter().any(|r| r.id.contains("/traps/refresh.html") || r.id.contains("refresh-away")));
    assert_eq!(site.fetch_count("/traps/refresh.html"), 1);
    assert_eq!(site.fetch_count("/away"), 0, "a refresh off the allowed hosts is not followed");
    // Every page once (the dropped one: first try and two retries).
    for (path, count) in site.fetch_counts() {
        assert_eq!(count, if path == "/flaky" { 3 } else { 1 }, "{path}");
    }
}

#[test]
fn canonical_urls_normalise_percent_escapes_as_rfc_3986_says() {
    let base = Url::parse("http://h.example/dir/").unwrap();
    for (href, want) in [
        ("pct-%74arget.html", "http://h.example/dir/pct-target.html"),
        ("/caf%c3%a9/menu.html", "http://h.example/caf%C3%A9/menu.html"),
        ("/caf%C3%A9/menu.html", "http://h.example/caf%C3%A9/menu.html"),
        ("/café/menu.html", "http://h.example/caf%C3%A9/menu.html"),
        ("/%7Euser/%2fx?q=%61%2f&b=%7e", "http://h.example/~user/%2Fx?b=~&q=a%2F"),
        ("/a%2Db%5Fc%2Ed", "http://h.example/a-b_c.d"),
    ] {
        assert_eq!(resolve(&base, href).unwrap().as_str(), want, "{href}");
    }
}

#[tokio::test]
async fn a_meta_refresh_counts_against_the_redirect_limit() {
    let site = site(SiteConfig { pages: 5, ..SiteConfig::default() }).await;
    let mut c = config(vec![site.url("/traps/refresh.html")]);
    c.max_redirects = 0;
    let pages = drain(&CrawlSource::new(c).unwrap()).await;
    let failures: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.items)
        .filter_map(|i| match i {
            SourceItem::Invalid { id, error_type, .. } => Some((id.clone(), error_type.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failures, [(site.url("/traps/refresh.html"), "too_many_redirects".to_string())]);
    assert_eq!(site.fetch_count("/traps/refreshed.html"), 0);
}

#[tokio::test]
async fn a_slow_page_at_the_head_of_the_queue_does_not_hold_the_crawl_back() {
    // `/slow` answers once 60 other requests were answered, or after 20 s: fetching in queue
    // order only, a crawl would have fetched 3 more pages and waited the 20 s.
    let site = site(SiteConfig { pages: 120, slow_ms: 20_000, slow_waits_for: 60, ..SiteConfig::default() }).await;
    let source = CrawlSource::new(config(vec![site.url("/slow"), site.url("/")])).unwrap();
    let pages = drain(&source).await;
    assert!(site.answered_while_slow() >= 60, "{} pages answered while /slow waited", site.answered_while_slow());

    // Still in queue order, with the slow page first, and the same pages as a crawl without it.
    let got = ids(&pages);
    assert_eq!(got.first(), Some(&(site.url("/slow"), true)));
    let got: BTreeSet<(String, bool)> = got.into_iter().collect();
    let want: BTreeSet<(String, bool)> = site.expected(None).pages.iter().map(|p| (p.url.clone(), p.stored)).collect();
    assert_eq!(got, want);
    // Fetching ahead fetched nothing twice and nothing it should not.
    for (path, count) in site.fetch_counts() {
        assert_eq!(count, if path == "/flaky" { 3 } else { 1 }, "{path}");
    }
    assert_eq!(site.fetch_count("/private/0"), 0);
    assert!(site.max_in_flight() <= 4, "concurrency bounds the requests in flight: {}", site.max_in_flight());
}

#[tokio::test]
async fn a_crawl_resumed_while_a_slow_page_was_pending_yields_the_same_pages_without_refetching() {
    let site = site(SiteConfig { pages: 60, slow_ms: 20_000, slow_waits_for: 30, ..SiteConfig::default() }).await;
    let start = vec![site.url("/"), site.url("/slow")];
    let full: Vec<(String, bool)> = ids(&drain(&CrawlSource::new(config(start.clone())).unwrap()).await);
    site.reset_counts();

    // Take the first page (the slow one is next), then crash (drop the source) and resume.
    let first = CrawlSource::new(config(start.clone())).unwrap();
    let ctx = Context::detached();
    let page = first.fetch(&ctx, "main", None).await.unwrap();
    let mut all = ids(std::slice::from_ref(&page));
    drop(first);
    let committed = all.clone();
    let counts = site.fetch_counts();

    let second = CrawlSource::new(config(start)).unwrap();
    let mut cursor = page.next;
    while let Some(at) = cursor {
        let page = second.fetch(&ctx, "main", Some(&at)).await.unwrap();
        all.extend(ids(std::slice::from_ref(&page)));
        cursor = page.next;
    }
    assert_eq!(all, full, "resumed crawl = uninterrupted crawl, in the same order");
    for (id, _) in committed {
        let path = id.strip_prefix(&site.base_url()).unwrap();
        assert_eq!(site.fetch_count(path), counts.get(path).copied().unwrap_or(0), "{path} fetched again");
    }
}
