//! Fetch + store against the source's floor: an Intercom backfill with no
//! stages (the source's paging, its records, the engine, SQLite) next to a
//! client that only pages through the same fake and parses each answer's
//! JSON, in turns in one process, with the ratio of each pair.
//!
//! ```sh
//! SLUICE_BENCH_DIR=/dev/shm cargo run --release -p sluice-bench -- intercom-store [CONVERSATIONS] [ROUNDS]
//! ```
//!
//! The fake runs in this process with no latency injected, so both sides
//! wait on the same server work (it filters and sorts the whole data set for
//! every page). One partition, pages of 150, batches of 50, no per-document
//! events. Target (issue 18): fetch + store within 1.2x of the floor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_connectors::source::intercom::{IntercomConfig, IntercomSource};
use sluice_connectors::store::sqlite::SqliteStore;
use sluice_connectors::util::secret::Secret;
use sluice_core::{Pipeline, RunLabels, RunStatus, Settings, Start};
use sluice_testkit::{FakeIntercom, IntercomConfig as FakeIntercomConfig};

const PER_PAGE: u64 = 150;
const BATCH: usize = 50;
/// The range covering the fake's 90 days before 2026-01-01.
const DATE_FROM: &str = "2025-10-01";
const DATE_TO: &str = "2025-12-31";
const START: i64 = 1_759_276_800;
const END: i64 = 1_767_225_600;

pub async fn intercom_store(conversations: usize, rounds: usize) {
    let fake = FakeIntercom::start(
        FakeIntercomConfig::default().with_conversations(conversations).with_days(90).with_rate_limit(1_000_000),
    )
    .await
    .expect("fake intercom");
    let in_range = fake.dataset().ids_in_range(START, END).len() as u64;
    println!(
        "{in_range} conversations in {} pages of {PER_PAGE}, no latency injected; sluice: no stages, batches of \
         {BATCH}, SQLite in {}",
        in_range.div_ceil(PER_PAGE),
        std::env::var("SLUICE_BENCH_DIR").unwrap_or_else(|_| "the system's temporary directory".into())
    );
    println!("| round | floor s (page + parse) | fetch + store s | stored | ratio |");
    println!("| --- | --- | --- | --- | --- |");
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds.max(1) {
        // Turn about who goes first, so neither always meets a server warmed by the other.
        let ((floor, listed), (store, stored)) = if round % 2 == 1 {
            let first = floor(&fake).await;
            (first, fetch_and_store(&fake).await)
        } else {
            let first = fetch_and_store(&fake).await;
            (floor(&fake).await, first)
        };
        assert_eq!(listed, in_range, "the floor read every conversation of the range");
        let ratio = store.as_secs_f64() / floor.as_secs_f64();
        ratios.push(ratio);
        println!("| {round} | {:.3} | {:.3} | {stored} | {ratio:.2} |", floor.as_secs_f64(), store.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "\nfetch + store / floor: median {:.2} (min {:.2}, max {:.2}) over {} rounds",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
}

/// The floor: every search page of the range, one after another as a cursor
/// requires, each answer read whole and parsed; nothing else. Returns the
/// time and the conversations listed.
async fn floor(fake: &FakeIntercom) -> (Duration, u64) {
    let http = reqwest::Client::new();
    let url = format!("{}/conversations/search", fake.base_url());
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut listed = 0u64;
    loop {
        let mut pagination = json!({"per_page": PER_PAGE});
        if let Some(cursor) = &cursor {
            pagination["starting_after"] = json!(cursor);
        }
        let body = json!({
            "query": {"operator": "AND", "value": [
                {"field": "updated_at", "operator": ">", "value": START - 1},
                {"field": "updated_at", "operator": "<", "value": END},
            ]},
            "sort": {"field": "updated_at", "order": "ascending"},
            "pagination": pagination,
        });
        let answer = http
            .post(&url)
            .bearer_auth(fake.token())
            .header("Accept", "application/json")
            .header("Intercom-Version", "2.11")
            .json(&body)
            .send()
            .await
            .expect("search");
        assert!(answer.status().is_success(), "search answered {}", answer.status());
        let bytes = answer.bytes().await.expect("search body");
        let page: Value = serde_json::from_slice(&bytes).expect("search JSON");
        listed += page["conversations"].as_array().map_or(0, |c| c.len() as u64);
        cursor = page.pointer("/pages/next/starting_after").and_then(Value::as_str).map(str::to_string);
        if cursor.is_none() {
            return (started.elapsed(), listed);
        }
    }
}

/// The backfill with no stages into a fresh SQLite file: its time and how
/// many conversations it stored (the source's quality filter drops the short ones).
async fn fetch_and_store(fake: &FakeIntercom) -> (Duration, u64) {
    let dir = crate::bench_dir();
    let store = Arc::new(SqliteStore::open(&dir.path().join("intercom.db")).expect("sqlite"));
    let config = IntercomConfig {
        date_from: Some(DATE_FROM.into()),
        date_to: Some(DATE_TO.into()),
        base_url: Some(fake.base_url()),
        ..IntercomConfig::default()
    };
    let source = IntercomSource::with_token(config, Secret::new(fake.token().to_string()), "the fake's token".into())
        .expect("intercom source");
    let pipeline = Pipeline::new(Arc::new(source), store).settings(Settings {
        name: "intercom-store-bench".into(),
        batch_size: BATCH,
        per_document_events: false,
        phase: "classification".into(),
        labels: RunLabels { noun: "conversations".into(), window: None },
        ..Settings::default()
    });
    let started = Instant::now();
    let summary = pipeline.run(Start::New).await.expect("run");
    let wall = started.elapsed();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    (wall, summary.counts.stored)
}
