//! The Intercom source against the fake Intercom over real HTTP on loopback:
//! paging, partitions, parts, every error mapping, rate limits, and the
//! streaming and batch counter semantics through the engine.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_connectors::source::intercom::{IntercomConfig, IntercomSource};
use sluice_connectors::store::sqlite::SqliteStore;
use sluice_connectors::util::secret::Secret;
use sluice_core::{
    Context, Event, EventKind, EventSink, Mode, Page, Pipeline, RunStatus, Settings, Source, SourceError, SourceItem,
    Start,
};
use sluice_testkit::intercom::Dataset;
use sluice_testkit::{DropMode, FakeIntercom, FaultKind, IntercomConfig as FakeConfig, IntercomFaults};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// 2025-12-01T00:00:00Z and 2026-01-01T00:00:00Z: the range below, end excluded.
const START: i64 = 1_764_547_200;
const END: i64 = 1_767_225_600;

async fn fake(conversations: usize) -> FakeIntercom {
    fake_with(FakeConfig::default().with_conversations(conversations).with_days(45)).await
}

async fn fake_with(config: FakeConfig) -> FakeIntercom {
    FakeIntercom::start(config).await.expect("fake intercom starts")
}

/// December 2025, against `base_url`.
fn config(base_url: &str) -> IntercomConfig {
    let mut c = IntercomConfig::last_days(1);
    c.days = None;
    c.date_from = Some("2025-12-01".into());
    c.date_to = Some("2025-12-31".into());
    c.base_url = Some(base_url.to_string());
    c
}

/// The source; without the page filter it keeps short conversations (`min_chars = 0`).
fn source(mut config: IntercomConfig, token: &str, page_filter: bool) -> IntercomSource {
    if !page_filter {
        config.min_chars = 0;
    }
    IntercomSource::with_token(config, Secret::new(token), "INTERCOM_ACCESS_TOKEN".into()).expect("valid source")
}

fn events_ctx() -> (Context, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(10_000);
    (
        Context {
            events: EventSink::new(1, false, tx),
            stop: CancellationToken::new(),
            abort: CancellationToken::new(),
            usage: Arc::default(),
            ..Context::detached()
        },
        rx,
    )
}

fn drain_events(rx: &mut mpsc::Receiver<Event>) -> Vec<EventKind> {
    std::iter::from_fn(|| rx.try_recv().ok()).map(|e| e.kind).collect()
}

/// Every page of a partition from its start.
async fn drain(source: &IntercomSource, ctx: &Context, partition: &str) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = source.fetch(ctx, partition, cursor.as_deref()).await.expect("page");
        cursor = page.next.clone();
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
        assert!(pages.len() < 1000, "cursor loop");
    }
}

fn ids(pages: &[Page]) -> Vec<String> {
    pages.iter().flat_map(|p| p.items.iter().map(|i| i.id().to_string())).collect()
}

/// Ids in range, and those of them that pass the quality filter.
fn expected(ds: &Dataset) -> (Vec<String>, Vec<String>) {
    let all = ds.ids_in_range(START, END);
    let short: BTreeSet<String> = ds.short_ids().into_iter().collect();
    let quality = all.iter().filter(|id| !short.contains(*id)).cloned().collect();
    (all, quality)
}

#[tokio::test]
async fn pages_follow_cursors_and_filter_short_conversations_at_page_level() {
    let fake = fake(700).await;
    let (all, quality) = expected(&fake.dataset());
    assert!(all.len() > 300 && quality.len() < all.len(), "the range holds short and long conversations");
    let mut c = config(&fake.base_url());
    c.per_page = 50;
    let ctx = Context::detached();

    let filtering = source(c.clone(), fake.token(), true);
    let partitions = filtering.partitions().await.unwrap();
    assert_eq!(partitions, ["2025-12-01..2025-12-31"]);
    let pages = drain(&filtering, &ctx, &partitions[0]).await;
    assert_eq!(ids(&pages), quality, "quality conversations in updated_at order, each once");
    assert_eq!(pages.iter().map(|p| p.dropped).sum::<u64>() as usize, all.len() - quality.len());
    assert_eq!(pages.len(), all.len().div_ceil(50));

    let raw = source(c, fake.token(), false);
    let pages = drain(&raw, &ctx, &partitions[0]).await;
    assert_eq!(ids(&pages), all, "without the page filter every conversation comes");
    assert!(pages.iter().all(|p| p.dropped == 0));

    // What the requests looked like.
    let counters = fake.counters();
    assert_eq!(counters.intercom_versions.get("2.11").copied(), Some(counters.search_requests));
    assert_eq!((counters.unauthorized, counters.bad_requests, counters.rate_limited), (0, 0, 0));
    let first = &fake.request_log()[0];
    assert_eq!(first.starting_after, None);
    assert_eq!(first.returned, 50);
}

#[tokio::test]
async fn records_carry_html_text_and_fields() {
    let fake = fake(200).await;
    let ds = fake.dataset();
    let (_, quality) = expected(&ds);
    let source = source(config(&fake.base_url()), fake.token(), true);
    let pages = drain(&source, &Context::detached(), "2025-12-01..2025-12-31").await;
    let SourceItem::Record(record) = &pages[0].items[0] else { panic!("a record") };
    let conversation = ds.get(&record.id).expect("known id");
    assert_eq!(record.id, quality[0]);
    assert_eq!(record.text, conversation.body);
    assert!(record.text.starts_with('<'), "HTML is kept for the normalize stage");
    assert_eq!(record.updated_at, Some(conversation.updated_at));
    assert_eq!(record.fields["state"], conversation.state.as_str());
    assert_eq!(record.fields["created_at"], conversation.created_at);
    let domain = conversation.author.email.rsplit_once('@').unwrap().1;
    assert_eq!(record.fields["author_domain"], domain);
    assert_eq!(record.source, "intercom");
}

#[tokio::test]
async fn partitions_split_the_range_and_together_read_it_once() {
    let fake = fake(600).await;
    let (_, quality) = expected(&fake.dataset());
    let mut c = config(&fake.base_url());
    c.partitions = 4;
    c.per_page = 40;
    let source = source(c, fake.token(), true);
    let partitions = source.partitions().await.unwrap();
    assert_eq!(partitions.len(), 4);
    assert!(partitions[0].starts_with("1/4 2025-12-01T00:00:00Z.."), "{}", partitions[0]);
    assert!(partitions[3].ends_with("..2026-01-01T00:00:00Z"), "{}", partitions[3]);
    let ctx = Context::detached();
    let mut seen = Vec::new();
    for partition in &partitions {
        let got = ids(&drain(&source, &ctx, partition).await);
        assert!(!got.is_empty(), "{partition} has conversations");
        seen.extend(got);
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no conversation in two slices");
    assert_eq!(distinct, quality.iter().collect::<BTreeSet<_>>());
    let err = source.fetch(&ctx, "nope", None).await.unwrap_err();
    assert!(matches!(err, SourceError::Fatal { .. }), "{err:?}");
}

#[tokio::test]
async fn include_parts_appends_replies_and_uses_bounded_gets() {
    let fake = fake(150).await;
    let ds = fake.dataset();
    let (_, quality) = expected(&ds);
    let mut c = config(&fake.base_url());
    c.include_parts = true;
    c.parts_concurrency = 4;
    let source = source(c, fake.token(), true);
    let pages = drain(&source, &Context::detached(), "2025-12-01..2025-12-31").await;
    assert_eq!(ids(&pages), quality);
    let with_replies = pages
        .iter()
        .flat_map(|p| &p.items)
        .filter_map(|i| match i {
            SourceItem::Record(r) => Some(r),
            _ => None,
        })
        .find(|r| ds.get(&r.id).is_some_and(|c| c.parts.iter().any(|p| p.body.is_some())))
        .expect("some conversation has replies");
    let conversation = ds.get(&with_replies.id).unwrap();
    assert!(with_replies.text.starts_with(&conversation.body));
    for part in conversation.parts.iter().filter_map(|p| p.body.as_deref()) {
        assert!(with_replies.text.contains(part), "reply {part:?} is in the text");
    }
    assert_eq!(with_replies.fields["parts"], conversation.parts.len());
    assert_eq!(fake.counters().get_requests, ds.ids_in_range(START, END).len() as u64);
}

#[tokio::test]
async fn a_refused_token_is_fatal_and_never_printed() {
    let fake = fake(50).await;
    let source = source(config(&fake.base_url()), "wrong-token-123", true);
    let err = source.fetch(&Context::detached(), "2025-12-01..2025-12-31", None).await.unwrap_err();
    let SourceError::Fatal { message } = &err else { panic!("{err:?}") };
    assert!(message.contains("401") && message.contains("INTERCOM_ACCESS_TOKEN"), "{message}");
    assert!(!message.contains("wrong-token-123") && !format!("{source:?}").contains("wrong-token-123"));
}

#[tokio::test]
async fn server_errors_drops_and_truncated_bodies_are_retryable() {
    let fake = fake(100).await;
    let source = source(config(&fake.base_url()), fake.token(), true);
    let ctx = Context::detached();
    let p = "2025-12-01..2025-12-31";
    for (fault, mode) in [
        (FaultKind::ServerError, DropMode::MidBody),
        (FaultKind::Drop, DropMode::MidBody),
        (FaultKind::Drop, DropMode::BeforeHeaders),
        (FaultKind::Malformed, DropMode::MidBody),
    ] {
        fake.set_faults(IntercomFaults { script: vec![fault], drop_mode: mode, ..IntercomFaults::default() });
        let err = source.fetch(&ctx, p, None).await.unwrap_err();
        assert!(matches!(err, SourceError::Retryable { .. }), "{fault:?}/{mode:?}: {err:?}");
        assert!(source.fetch(&ctx, p, None).await.is_ok(), "{fault:?}: the next try works");
    }
    assert_eq!(fake.counters().faults.total(), 4);
}

#[tokio::test]
async fn a_429_waits_until_the_reset_and_says_so() {
    let fake = fake(100).await;
    let source = source(config(&fake.base_url()), fake.token(), true);
    let (ctx, mut rx) = events_ctx();
    fake.set_faults(IntercomFaults { script: vec![FaultKind::RateLimit], ..IntercomFaults::default() });
    let err = source.fetch(&ctx, "2025-12-01..2025-12-31", None).await.unwrap_err();
    let SourceError::Retryable { retry_after: Some(wait), .. } = err else { panic!("{err:?}") };
    // The fake's injected 429 resets one second ahead.
    assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_millis(2600), "{wait:?}");
    let events = drain_events(&mut rx);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EventKind::AdapterStateChange { new_state, .. } if new_state == "rate_limited")),
        "{events:?}"
    );
    // Retry-After, when sent, is what the wait follows.
    fake.set_faults(IntercomFaults {
        script: vec![FaultKind::RateLimit],
        retry_after: true,
        ..IntercomFaults::default()
    });
    let err = source.fetch(&ctx, "2025-12-01..2025-12-31", None).await.unwrap_err();
    assert!(matches!(err, SourceError::Retryable { retry_after: Some(w), .. } if w >= Duration::from_secs(1)));
}

#[tokio::test]
async fn pacing_by_the_rate_limit_headers_avoids_429() {
    // 8 requests per fixed 10-second window. More than 16 pages to read: however the
    // first request falls in its window, two windows cannot hold them, so the
    // source must wait at least once (with 12 pages a run could straddle a
    // window boundary and need no wait).
    let fake = fake_with(FakeConfig::default().with_conversations(180).with_days(45).with_rate_limit(8)).await;
    let mut c = config(&fake.base_url());
    c.per_page = 6;
    let source = source(c, fake.token(), false);
    let (ctx, mut rx) = events_ctx();
    let started = Instant::now();
    let pages = drain(&source, &ctx, "2025-12-01..2025-12-31").await;
    assert!(pages.len() > 16 && pages.len() <= 24, "{} pages", pages.len());
    assert_eq!(fake.counters().rate_limited, 0, "no request met a 429");
    let events = drain_events(&mut rx);
    let waits = events
        .iter()
        .filter(|e| matches!(e, EventKind::AdapterStateChange { new_state, .. } if new_state == "rate_limited"))
        .count();
    assert!(waits >= 1, "{events:?}");
    // At most three windows: a guard against a hang, not a speed claim.
    assert!(started.elapsed() < Duration::from_secs(45));
}

#[tokio::test]
async fn an_expired_or_unknown_cursor_is_cursor_invalid() {
    let fake = fake(200).await;
    let mut c = config(&fake.base_url());
    c.per_page = 20;
    let source = source(c, fake.token(), true);
    let ctx = Context::detached();
    let p = "2025-12-01..2025-12-31";
    let first = source.fetch(&ctx, p, None).await.unwrap();
    let next = first.next.expect("a second page");
    assert!(source.fetch(&ctx, p, Some(&next)).await.is_ok());
    fake.invalidate_cursors();
    let err = source.fetch(&ctx, p, Some(&next)).await.unwrap_err();
    assert!(matches!(&err, SourceError::CursorInvalid { message } if message.contains("starting_after")), "{err:?}");
    let err = source.fetch(&ctx, p, Some("not-a-cursor")).await.unwrap_err();
    assert!(matches!(err, SourceError::CursorInvalid { .. }), "{err:?}");
    assert!(source.fetch(&ctx, p, None).await.is_ok(), "the start of the range still works");
}

/// A server that answers 403 to search, or lists one conversation whose GET is 404.
async fn odd_server(forbid: bool) -> (String, tokio::task::JoinHandle<()>) {
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    let search = move || async move {
        if forbid {
            let body = r#"{"type":"error.list","errors":[{"code":"forbidden","message":"Scope missing"}]}"#;
            return (StatusCode::FORBIDDEN, body.to_string());
        }
        let body = serde_json::json!({
            "type": "conversation.list",
            "pages": {"type": "pages", "page": 1, "per_page": 150, "total_pages": 1, "next": null},
            "total_count": 2,
            "conversations": [
                {"id": "404404", "updated_at": START + 10, "source": {"body": "<p>gone by the time we ask for it</p>"}},
                {"updated_at": START + 20, "source": {"body": "no id at all"}},
            ],
        });
        (StatusCode::OK, body.to_string())
    };
    let app = Router::new().route("/conversations/search", post(search)).route(
        "/conversations/{id}",
        get(|| async { (StatusCode::NOT_FOUND, r#"{"type":"error.list","errors":[{"code":"not_found"}]}"#) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test]
async fn forbidden_is_fatal_and_a_missing_conversation_is_a_failed_record() {
    let (url, server) = odd_server(true).await;
    let err = source(config(&url), "t", true).fetch(&Context::detached(), "2025-12-01..2025-12-31", None).await;
    assert!(matches!(&err, Err(SourceError::Fatal { message }) if message.contains("403")), "{err:?}");
    server.abort();

    let (url, server) = odd_server(false).await;
    let mut c = config(&url);
    c.include_parts = true;
    let page = source(c, "t", true).fetch(&Context::detached(), "2025-12-01..2025-12-31", None).await.unwrap();
    assert_eq!(page.next, None, "a null next is the last page");
    assert_eq!(page.items.len(), 2);
    assert!(
        matches!(&page.items[0], SourceItem::Invalid { id, error_type, .. } if id == "404404" && error_type == "not_found")
    );
    assert!(matches!(&page.items[1], SourceItem::Invalid { error_type, .. } if error_type == "malformed_conversation"));
    server.abort();
}

/// Runs the source through the engine into SQLite in `mode`, as the registry assembles it: the same
/// source in both modes (it drops short conversations at page level), the engine counts them.
async fn run_mode(fake: &FakeIntercom, mode: Mode) -> (sluice_core::RunSummary, BTreeSet<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    let mut c = config(&fake.base_url());
    c.per_page = 60;
    let src = Arc::new(source(c, fake.token(), true));
    let pipeline = Pipeline::new(src, store.clone()).settings(Settings {
        mode,
        batch_size: 25,
        name: "intercom".into(),
        phase: "classification".into(),
        labels: sluice_core::RunLabels { noun: "conversations".into(), window: None },
        ..Settings::default()
    });
    let summary = pipeline.run(Start::New).await.unwrap();
    let conn = rusqlite_ids(&dir.path().join("s.db"));
    (summary, conn)
}

fn rusqlite_ids(path: &std::path::Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM documents").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0)).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn counters_follow_the_runbook_in_streaming_and_batch_mode() {
    let fake = fake(500).await;
    let (all, quality) = expected(&fake.dataset());
    let short = (all.len() - quality.len()) as u64;
    assert!(short > 0);

    let (streaming, stored_streaming) = run_mode(&fake, Mode::Streaming).await;
    assert_eq!(streaming.status, RunStatus::Completed);
    assert_eq!(streaming.counts.fetched, quality.len() as u64, "streaming: fetched = quality conversations");
    assert_eq!(streaming.counts.filtered, 0, "streaming: filtered is always 0");
    assert_eq!(streaming.counts.stored, quality.len() as u64);

    let (batch, stored_batch) = run_mode(&fake, Mode::Batch).await;
    assert_eq!(batch.status, RunStatus::Completed);
    assert_eq!(batch.counts.fetched, all.len() as u64, "batch: fetched = raw API count");
    assert_eq!(batch.counts.filtered, short, "batch: filtered = the short ones");
    assert_eq!(batch.counts.fetched - batch.counts.filtered, quality.len() as u64);
    assert_eq!(batch.counts.stored, streaming.counts.stored, "stored compares across modes");
    assert_eq!(stored_batch, stored_streaming, "both modes store the same conversations");
    assert_eq!(stored_streaming, quality.iter().cloned().collect());
}

#[tokio::test]
async fn the_estimate_is_the_raw_total_from_one_extra_search() {
    let fake = fake(700).await;
    let (all, quality) = expected(&fake.dataset());
    assert!(quality.len() < all.len());
    let filtering = source(config(&fake.base_url()), fake.token(), true);
    // Short conversations are dropped later, page by page, so they are in the estimate (README says so).
    assert_eq!(filtering.estimated_total().await, Some(all.len() as u64));
    let counters = fake.counters();
    assert_eq!(counters.search_requests, 1, "one search request, which counts against the rate limit");
    assert_eq!(fake.request_log()[0].returned, 1, "per_page=1");
}
