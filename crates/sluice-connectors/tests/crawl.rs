//! The crawl source against the generated test site over real HTTP on
//! loopback: canonical URLs, robots.txt, redirects, failures, depth and page
//! limits, the frontier as a resumable cursor, and settings validation; and
//! the `extract_html` stage on the site's pages.

use std::collections::BTreeSet;

use sluice_connectors::source::crawl::{CrawlConfig, CrawlSource, canonical, resolve};
use sluice_connectors::stage::extract_html::{ExtractHtmlConfig, ExtractHtmlStage};
use sluice_core::{Context, Page, Source, SourceError, SourceItem};
use sluice_testkit::site::{Expected, FakeSite, SiteConfig};
use url::Url;

async fn site(pages: usize) -> FakeSite {
    FakeSite::start(SiteConfig { pages, slow_ms: 50, ..SiteConfig::default() }).await.expect("site starts")
}

fn config(site: &FakeSite) -> CrawlConfig {
    let mut c = CrawlConfig::new(vec![site.url("/")]);
    c.delay_ms = 0;
    c.retry_base_ms = 1;
    c.per_host_concurrency = 4;
    c
}

/// Every page from the start (or from `cursor`), following `next`.
async fn drain(source: &CrawlSource, cursor: Option<String>) -> Vec<Page> {
    let ctx = Context::detached();
    let mut pages = Vec::new();
    let mut cursor = cursor;
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

/// (id, stored?) of every item, in order.
fn items(pages: &[Page]) -> Vec<(String, bool)> {
    pages
        .iter()
        .flat_map(|p| &p.items)
        .map(|item| (item.id().to_string(), matches!(item, SourceItem::Record(_))))
        .collect()
}

fn expected_items(expected: &Expected) -> Vec<(String, bool)> {
    expected.pages.iter().map(|p| (p.url.clone(), p.stored)).collect()
}

#[test]
fn canonical_urls_drop_fragments_sort_queries_and_normalise_hosts_ports_and_paths() {
    let base = Url::parse("http://docs.example.com/guide/intro").unwrap();
    let same = [
        "http://docs.example.com/guide/page?b=2&a=1",
        "HTTP://Docs.Example.COM:80/guide/page?a=1&b=2#part",
        "page?a=1&b=2",
        "./page?b=2&a=1#x",
        "../guide/./page?a=1&b=2",
        "//docs.example.com/guide/page?&a=1&b=2&",
    ];
    for href in same {
        assert_eq!(resolve(&base, href).unwrap().as_str(), "http://docs.example.com/guide/page?a=1&b=2", "{href}");
    }
    assert_eq!(resolve(&base, "/x?").unwrap().as_str(), "http://docs.example.com/x");
    assert_eq!(resolve(&base, "https://docs.example.com:443/").unwrap().as_str(), "https://docs.example.com/");
    assert_eq!(resolve(&base, "http://docs.example.com:8080/").unwrap().as_str(), "http://docs.example.com:8080/");
    for ignored in ["mailto:a@b.c", "javascript:void(0)", "ftp://docs.example.com/f", "", "   "] {
        assert!(resolve(&base, ignored).is_none(), "{ignored}");
    }
    assert!(canonical(Url::parse("file:///etc/passwd").unwrap()).is_none());
}

#[tokio::test]
async fn a_full_crawl_yields_exactly_the_allowed_reachable_pages_in_breadth_first_order() {
    let site = site(120).await;
    let source = CrawlSource::new(config(&site)).unwrap();
    let pages = drain(&source, None).await;
    let expected = site.expected(None);
    assert_eq!(items(&pages), expected_items(&expected));

    let got: BTreeSet<String> = items(&pages).into_iter().map(|(id, _)| id).collect();
    assert!((0..120).all(|i| got.contains(&site.url(&format!("/docs/{i}")))), "every docs page is reachable");
    // robots.txt: read once, its section never fetched, and what only it links to never seen.
    assert_eq!(site.fetch_count("/robots.txt"), 1);
    assert_eq!(site.fetch_count("/private/0"), 0);
    assert_eq!(site.fetch_count("/orphan/0"), 0);
    // The redirect is followed and its target stored under its own URL, once.
    assert!(got.contains(&site.url("/docs/moved")) && !got.contains(&site.url("/old/start")));
    assert_eq!(site.fetch_count("/docs/moved"), 1);
    assert!(!got.contains(&site.url("/go/docs-2")));
    // Text, slow pages and queries in either order: one page each.
    assert!(got.contains(&site.url("/notes.txt")) && got.contains(&site.url("/slow")));
    assert!(got.contains(&site.url("/search?page=2&q=sluice")));
    assert_eq!(site.fetch_count("/search?page=2&q=sluice"), 1);
    assert_eq!(site.fetch_count("/search?q=sluice&page=2"), 0);
    // Non-text content is skipped, not stored.
    assert!(!got.contains(&site.url("/image.png")));
    // Every page fetched once, except the one that drops: first try and two retries.
    for (path, count) in site.fetch_counts() {
        let want = if path == "/flaky" { 3 } else { 1 };
        assert_eq!(count, want, "{path}");
    }
    assert!(site.user_agents().iter().all(|ua| ua.starts_with("sluice/")), "{:?}", site.user_agents());

    let records: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.items)
        .filter_map(|i| match i {
            SourceItem::Record(r) => Some(r),
            _ => None,
        })
        .collect();
    let home = records.iter().find(|r| r.id == site.url("/")).unwrap();
    assert_eq!(home.fields["title"], "Sluice documentation");
    assert_eq!(home.fields["status"], 200);
    assert_eq!(home.fields["depth"], 0);
    assert_eq!(home.fields["url"], site.url("/").as_str());
    assert!(home.fields["content_type"].as_str().unwrap().starts_with("text/html"));
    assert!(home.text.contains("<nav>"), "the record keeps the raw HTML");
    let notes = records.iter().find(|r| r.id == site.url("/notes.txt")).unwrap();
    assert!(notes.fields["content_type"].as_str().unwrap().starts_with("text/plain"));
    assert!(notes.text.starts_with("Release notes"));
}

#[tokio::test]
async fn failed_pages_become_invalid_items_with_their_url_and_status() {
    let site = site(20).await;
    let source = CrawlSource::new(config(&site)).unwrap();
    let pages = drain(&source, None).await;
    let failures: Vec<_> = pages
        .iter()
        .flat_map(|p| &p.items)
        .filter_map(|i| match i {
            SourceItem::Invalid { id, error_type, error, raw } => {
                Some((id.clone(), error_type.clone(), error.clone(), raw.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    let missing = failures.iter().find(|f| f.0 == site.url("/missing")).expect("the 404 is a failure");
    assert_eq!(missing.1, "http_404");
    assert!(missing.2.contains("404") && missing.2.contains("/missing"), "{}", missing.2);
    assert!(missing.3.contains("\"status\":404"), "{}", missing.3);
    let flaky = failures.iter().find(|f| f.0 == site.url("/flaky")).expect("the dropped page is a failure");
    assert_eq!(flaky.1, "connection");
    assert!(flaky.2.contains("after 3 attempts"), "{}", flaky.2);
}

#[tokio::test]
async fn max_depth_and_max_pages_bound_the_crawl() {
    let site = site(120).await;
    let mut c = config(&site);
    c.max_depth = Some(2);
    let pages = drain(&CrawlSource::new(c).unwrap(), None).await;
    let expected = site.expected(Some(2));
    assert_eq!(items(&pages), expected_items(&expected));
    assert!(expected.pages.iter().all(|p| p.depth <= 2));
    assert!(expected.pages.len() < site.expected(None).pages.len());

    let mut c = config(&site);
    c.max_depth = Some(0);
    let pages = drain(&CrawlSource::new(c).unwrap(), None).await;
    assert_eq!(items(&pages), vec![(site.url("/"), true)]);

    site.reset_counts();
    let mut c = config(&site);
    c.max_pages = Some(25);
    c.concurrency = 4;
    let pages = drain(&CrawlSource::new(c).unwrap(), None).await;
    assert_eq!(items(&pages), expected_items(&site.expected(None).first(25)));
    // Fetching ahead costs at most `concurrency - 1` pages past the limit. Pages,
    // not requests: how often a failing page is retried, and how many redirect
    // hops lead to a page, depend on when the limit is reached, which depends
    // on how fast the other fetches answer.
    let pages: BTreeSet<String> =
        site.expected(None).pages.iter().map(|p| Url::parse(&p.url).unwrap().path().to_string()).collect();
    let counts = site.fetch_counts();
    let fetched: Vec<&String> = counts.iter().filter(|(p, n)| pages.contains(*p) && **n > 0).map(|(p, _)| p).collect();
    assert!(fetched.len() <= 25 + 3, "{} pages fetched for 25: {fetched:?}", fetched.len());
}

#[tokio::test]
async fn the_cursor_is_the_frontier_a_new_source_resumes_from_without_refetching() {
    let site = site(60).await;
    let full = items(&drain(&CrawlSource::new(config(&site)).unwrap(), None).await);
    site.reset_counts();

    // Crawl 10 pages, then drop the source (a crash) and resume from the cursor with a new one.
    let mut c = config(&site);
    c.concurrency = 1; // no fetching ahead: the first source fetches exactly those 10 pages
    let first = CrawlSource::new(c).unwrap();
    let ctx = Context::detached();
    let mut cursor = None;
    let mut before = Vec::new();
    for _ in 0..10 {
        let page = first.fetch(&ctx, "main", cursor.as_deref()).await.unwrap();
        before.extend(items(std::slice::from_ref(&page)));
        cursor = page.next;
    }
    // Re-fetching a cursor gives the same page.
    let again = first.fetch(&ctx, "main", cursor.as_deref()).await.unwrap();
    let again_items = items(std::slice::from_ref(&again));
    drop(first);
    let committed: Vec<String> = before.iter().map(|(id, _)| id.clone()).collect();
    let counts_before = site.fetch_counts();

    let second = CrawlSource::new(config(&site)).unwrap();
    let rest = drain(&second, cursor).await;
    let rest = items(&rest);
    assert_eq!(rest.first(), again_items.first());
    let mut all = before.clone();
    all.extend(rest);
    assert_eq!(all, full, "resumed crawl = uninterrupted crawl");
    for id in committed {
        let path = id.strip_prefix(&site.base_url()).unwrap();
        assert_eq!(site.fetch_count(path), counts_before.get(path).copied().unwrap_or(0), "{path} fetched again");
    }

    let err = second.fetch(&ctx, "main", Some("not a frontier")).await.unwrap_err();
    assert!(matches!(err, SourceError::CursorInvalid { .. }), "{err:?}");
}

#[test]
fn bad_settings_are_refused_with_the_key_and_value() {
    let base = || CrawlConfig::new(vec!["http://127.0.0.1:9/".into()]);
    let refused = |c: CrawlConfig, key: &str| {
        let err = CrawlSource::new(c).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    };
    refused(CrawlConfig::new(vec![]), "crawl.start_urls");
    refused(CrawlConfig::new(vec!["ftp://host/x".into()]), "crawl.start_urls");
    refused(CrawlConfig::new(vec!["not a url".into()]), "crawl.start_urls");
    let mut c = base();
    c.concurrency = 0;
    refused(c, "crawl.concurrency = 0");
    let mut c = base();
    c.per_host_concurrency = 65;
    refused(c, "crawl.per_host_concurrency = 65");
    let mut c = base();
    c.delay_ms = 60_001;
    refused(c, "crawl.delay_ms = 60001");
    let mut c = base();
    c.timeout_ms = 0;
    refused(c, "crawl.timeout_ms = 0");
    let mut c = base();
    c.retries = 11;
    refused(c, "crawl.retries = 11");
    let mut c = base();
    c.max_pages = Some(0);
    refused(c, "crawl.max_pages = 0");
    let mut c = base();
    c.user_agent = "Mozilla/5.0".into();
    refused(c, "must name sluice");
    let mut c = base();
    c.allowed_hosts = vec!["http://x/".into()];
    refused(c, "crawl.allowed_hosts");
    let unknown = serde_json::from_str::<CrawlConfig>(r#"{"start_urls": ["http://a/"], "max_page": 3}"#);
    assert!(unknown.unwrap_err().to_string().contains("max_page"));
}

#[tokio::test]
async fn links_stay_on_the_start_hosts_and_off_site_links_are_never_requested() {
    let site = site(10).await;
    // Reached as "localhost": links written with the request's host stay on it, the rest
    // (absolute links to 127.0.0.1 are none here) follow the relative paths.
    let mut c = config(&site);
    c.start_urls = vec![format!("http://localhost:{}/", site.addr().port())];
    c.max_depth = Some(1);
    let pages = drain(&CrawlSource::new(c).unwrap(), None).await;
    assert!(items(&pages).iter().all(|(id, _)| id.starts_with("http://localhost:")), "{:?}", items(&pages));
    // Off-site links are never requested: the test would hang or fail on example.invalid otherwise.
    assert_eq!(site.fetch_count("/elsewhere"), 0);
}

#[tokio::test]
async fn extract_html_keeps_the_main_text_title_and_description() {
    let site = site(5).await;
    let html = reqwest::get(site.url("/docs/1")).await.unwrap().text().await.unwrap();
    let stage = ExtractHtmlStage::new(ExtractHtmlConfig::default()).unwrap();
    let out = stage.extract(&html);
    assert_eq!(out.title.as_deref(), Some("Docs page 1"));
    assert!(out.description.as_deref().unwrap().starts_with("About Docs page 1:"));
    assert!(out.text.starts_with("Docs page 1\n\n"), "{}", out.text);
    for boilerplate in ["Sluice Docs", "tracking code", "font-family", "Copyright", "Related", "Enable JavaScript"] {
        assert!(!out.text.contains(boilerplate), "{boilerplate} left in:\n{}", out.text);
    }
    assert!(!out.text.contains('\u{a0}') && !out.text.contains("  "), "whitespace normalised");

    let tricky = "<html><head><title> A\u{a0}\u{3000}title </title></head><body><nav>menu</nav>\
                  <p>un\u{3000}deux\u{a0}\u{a0}trois</p><div>日本語<br>テキスト</div><script>x()</script></body></html>";
    let out = stage.extract(tricky);
    assert_eq!(out.title.as_deref(), Some("A title"));
    assert_eq!(out.text, "un deux trois\n\n日本語\nテキスト");
    let deep = format!("{}text{}", "<div>".repeat(3_000), "</div>".repeat(3_000));
    assert_eq!(stage.extract(&deep).text, "text");
    assert!(ExtractHtmlStage::new(ExtractHtmlConfig { drop: vec!["na v".into()], prefer_main: true }).is_err());
}

#[tokio::test]
async fn per_host_concurrency_bounds_the_requests_a_host_sees_at_once() {
    let site =
        FakeSite::start(SiteConfig { pages: 40, latency_ms: 10, slow_ms: 50, ..SiteConfig::default() }).await.unwrap();
    let mut c = config(&site);
    c.per_host_concurrency = 2;
    c.concurrency = 8; // fetching ahead asks for more than the host may get
    let pages = drain(&CrawlSource::new(c).unwrap(), None).await;
    assert_eq!(items(&pages), expected_items(&site.expected(None)));
    assert!(site.max_in_flight() <= 2, "{} requests at once", site.max_in_flight());
    assert!(site.max_in_flight() >= 1);
}

/// A hand-made site: robots.txt answers `robots_status`; `/` links to a page
/// that fails once with 500 and then answers, and to one that always answers 503.
async fn flaky_server(robots_status: u16) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::http::StatusCode;
    use axum::response::Html;
    use axum::routing::get;

    let robots_requests = Arc::new(AtomicU64::new(0));
    let once = Arc::new(AtomicU64::new(0));
    let counter = robots_requests.clone();
    let app =
        axum::Router::new()
            .route(
                "/robots.txt",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { (StatusCode::from_u16(robots_status).unwrap(), "User-agent: *\nDisallow:\n") }
                }),
            )
            .route("/", get(|| async { Html(r#"<a href="/once">once</a> <a href="/always">always</a>"#) }))
            .route(
                "/once",
                get(move || {
                    let first = once.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first { Err(StatusCode::INTERNAL_SERVER_ERROR) } else { Ok(Html("<title>Once</title>ok")) }
                    }
                }),
            )
            .route("/always", get(|| async { StatusCode::SERVICE_UNAVAILABLE }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, robots_requests)
}

#[tokio::test]
async fn server_errors_are_retried_and_an_unreadable_robots_txt_forbids_the_host() {
    let (base, robots_requests) = flaky_server(404).await;
    let mut c = CrawlConfig::new(vec![format!("{base}/")]);
    c.delay_ms = 0;
    c.retry_base_ms = 1;
    let pages = drain(&CrawlSource::new(c.clone()).unwrap(), None).await;
    let got = items(&pages);
    assert_eq!(
        got,
        vec![(format!("{base}/"), true), (format!("{base}/once"), true), (format!("{base}/always"), false)],
        "a missing robots.txt allows everything; a 500 then 200 is stored; a lasting 503 is a failure"
    );
    let error = pages.iter().flat_map(|p| &p.items).find_map(|i| match i {
        SourceItem::Invalid { error_type, error, .. } => Some(format!("{error_type}: {error}")),
        _ => None,
    });
    assert!(error.as_deref().is_some_and(|e| e.starts_with("http_503") && e.contains("after 3 attempts")), "{error:?}");
    assert_eq!(robots_requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    let (base, robots_requests) = flaky_server(503).await;
    c.start_urls = vec![format!("{base}/")];
    let pages = drain(&CrawlSource::new(c).unwrap(), None).await;
    assert!(items(&pages).is_empty(), "RFC 9309: a robots.txt that cannot be read forbids the host");
    assert_eq!(robots_requests.load(std::sync::atomic::Ordering::SeqCst), 3, "robots.txt is retried too");
}
