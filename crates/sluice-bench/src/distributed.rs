//! The distributed benchmark: one Intercom backfill (fake Intercom, fake
//! OpenAI at 50 ms per chat call) shared by 1, 2 and 4 `sluice worker`
//! processes on this machine through PostgreSQL. Each worker is capped at
//! 2 slots x `concurrency = 4` LLM calls at once, so the run is LLM-bound
//! and workers mostly wait: the ideal speedup is the worker count.
//!
//! ```sh
//! cargo build --release -p sluice
//! SLUICE_BIN=$CARGO_TARGET_DIR/release/sluice SLUICE_BENCH_POSTGRES_URL=postgres://... \
//!   cargo run --release -p sluice-bench -- distributed [CONVERSATIONS] [WORKERS...]
//! ```

use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_connectors::store::InspectStore;
use sluice_connectors::store::postgres::{PostgresStore, create_scratch_database, drop_database};
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults, Theme};

const CALL_MS: u64 = 200;
const PARTITIONS: usize = 32;

fn pipeline_text() -> String {
    let categories: Vec<String> =
        Theme::ALL.iter().map(|t| format!("{:?}", t.category())).chain(["\"other\"".to_string()]).collect();
    format!(
        r#"name = "dist-bench"
batch_size = 20
phase = "classification"

[source]
kind = "intercom"
date_from = "2025-10-01"
date_to = "2025-12-31"
per_page = 50
partitions = {PARTITIONS}

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
provider = "llm"
model = "test-model"
concurrency = 4
categories = [{}]
"#,
        categories.join(", ")
    )
}

pub async fn distributed(conversations: usize, workers: Vec<usize>) {
    let admin = std::env::var("SLUICE_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("SLUICE_TEST_POSTGRES_URL"))
        .expect("SLUICE_BENCH_POSTGRES_URL (or SLUICE_TEST_POSTGRES_URL) names the PostgreSQL server");
    let bin = std::env::var("SLUICE_BIN").expect("SLUICE_BIN names a release build of the sluice binary");
    let intercom = FakeIntercom::start(
        IntercomConfig::default()
            .with_conversations(conversations)
            .with_days(90)
            .with_rate_limit(1_000_000)
            .with_faults(IntercomFaults { latency_ms: 20, ..IntercomFaults::default() }),
    )
    .await
    .expect("fake intercom");
    let openai = FakeOpenAi::start(OpenAiConfig::default().with_faults(OpenAiFaults {
        endpoints: OpenAiTarget::All,
        latency_ms: CALL_MS,
        ..OpenAiFaults::default()
    }))
    .await
    .expect("fake openai");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("dist.toml");
    std::fs::write(&config, pipeline_text()).expect("pipeline file");
    let command = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(args)
            .env("INTERCOM_BASE_URL", intercom.base_url())
            .env("INTERCOM_ACCESS_TOKEN", intercom.token())
            .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
            .env("OPENAI_API_KEY", openai.key())
            .env("SLUICE_LOG", "warn")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    println!("| workers | conversations | wall s | conv/s | speedup | commits/s | LLM calls | 429s |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut base = None;
    for n in workers {
        let (name, url) = create_scratch_database(&admin, "sluice_bench_dist", None).await.expect("bench database");
        let before = openai.counters();
        let status = command(&["run", "--distributed", "-c", config.to_str().unwrap(), "--db", &url])
            .status()
            .await
            .expect("submit");
        assert!(status.success(), "sluice run --distributed failed");
        let started = Instant::now();
        let mut children: Vec<_> = (0..n)
            .map(|_| {
                command(&["worker", "--store", &url, "--slots", "2", "--lease-secs", "10", "--exit-when-idle"])
                    .spawn()
                    .expect("worker")
            })
            .collect();
        for child in &mut children {
            let status = tokio::time::timeout(Duration::from_secs(600), child.wait()).await.expect("in time").unwrap();
            assert!(status.success(), "a worker failed");
        }
        let secs = started.elapsed().as_secs_f64();
        let (stored, commits) = counts(&url).await;
        let after = openai.counters();
        let rate = stored as f64 / secs;
        let speedup = rate / *base.get_or_insert(rate);
        println!(
            "| {n} | {stored} | {secs:.1} | {rate:.0} | {speedup:.2}x | {:.1} | {} | {} |",
            commits as f64 / secs,
            after.chat_completions - before.chat_completions,
            after.rate_limited - before.rate_limited
        );
        drop_database(&admin, &name).await.expect("drop the bench database");
    }
}

/// Documents stored and fenced commits made.
async fn counts(url: &str) -> (u64, i64) {
    let store = PostgresStore::open(url).await.expect("open the bench database");
    let stored = store.document_count().await.expect("count documents");
    let commits = store.run_partitions(1).await.expect("read partitions").iter().map(|p| p.commit_seq).sum();
    store.close().await;
    (stored, commits)
}
