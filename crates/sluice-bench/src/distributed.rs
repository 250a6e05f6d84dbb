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
//!   cargo run --release -p sluice-bench -- distributed-limit [CONVERSATIONS] [RPM_LIMIT]
//! ```
//!
//! `distributed-limit`: 4 workers against a fake OpenAI with a requests-per-minute
//! limit, without and with a shared `requests_per_minute` (429s counted).

use std::process::Stdio;
use std::time::{Duration, Instant};

use sluice_connectors::store::InspectStore;
use sluice_connectors::store::postgres::{PostgresStore, create_scratch_database, drop_database};
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults, Theme};

const CALL_MS: u64 = 200;
const PARTITIONS: usize = 32;

fn pipeline_text(requests_per_minute: Option<f64>) -> String {
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
{}categories = [{}]
"#,
        requests_per_minute.map(|r| format!("requests_per_minute = {r}\n")).unwrap_or_default(),
        categories.join(", ")
    )
}

/// The fakes and the `sluice` binary one bench uses.
struct Bench {
    admin: String,
    bin: String,
    intercom: FakeIntercom,
    openai: FakeOpenAi,
    dir: tempfile::TempDir,
}

/// One run of the bench: what the table rows show.
struct Measured {
    stored: u64,
    secs: f64,
    commits: i64,
    llm_calls: u64,
    rate_limited: u64,
}

impl Bench {
    async fn start(conversations: usize, rpm_limit: u32) -> Bench {
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
        let openai = FakeOpenAi::start(OpenAiConfig::default().with_rpm_limit(rpm_limit).with_faults(OpenAiFaults {
            endpoints: OpenAiTarget::All,
            latency_ms: CALL_MS,
            ..OpenAiFaults::default()
        }))
        .await
        .expect("fake openai");
        let dir = tempfile::tempdir().expect("temp dir");
        Bench { admin, bin, intercom, openai, dir }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .env("INTERCOM_BASE_URL", self.intercom.base_url())
            .env("INTERCOM_ACCESS_TOKEN", self.intercom.token())
            .env("OPENAI_BASE_URL", format!("{}/v1", self.openai.base_url()))
            .env("OPENAI_API_KEY", self.openai.key())
            .env("SLUICE_LOG", "warn")
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// One distributed run of `workers` workers, in a database of its own.
    async fn run(&self, workers: usize, requests_per_minute: Option<f64>) -> Measured {
        let config = self.dir.path().join("dist.toml");
        std::fs::write(&config, pipeline_text(requests_per_minute)).expect("pipeline file");
        let (name, url) =
            create_scratch_database(&self.admin, "sluice_bench_dist", None).await.expect("bench database");
        let before = self.openai.counters();
        let status = self
            .command(&["run", "--distributed", "-c", config.to_str().unwrap(), "--db", &url])
            .status()
            .await
            .expect("submit");
        assert!(status.success(), "sluice run --distributed failed");
        let started = Instant::now();
        let mut children: Vec<_> = (0..workers)
            .map(|_| {
                self.command(&["worker", "--store", &url, "--slots", "2", "--lease-secs", "10", "--exit-when-idle"])
                    .spawn()
                    .expect("worker")
            })
            .collect();
        for child in &mut children {
            let status = tokio::time::timeout(Duration::from_secs(900), child.wait()).await.expect("in time").unwrap();
            assert!(status.success(), "a worker failed");
        }
        let secs = started.elapsed().as_secs_f64();
        let (stored, commits) = counts(&url).await;
        let after = self.openai.counters();
        drop_database(&self.admin, &name).await.expect("drop the bench database");
        Measured {
            stored,
            secs,
            commits,
            llm_calls: after.chat_completions - before.chat_completions,
            rate_limited: after.rate_limited - before.rate_limited,
        }
    }
}

pub async fn distributed(conversations: usize, workers: Vec<usize>) {
    let bench = Bench::start(conversations, 10_000_000).await;
    println!("| workers | conversations | wall s | conv/s | speedup | commits/s | LLM calls | 429s |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut base = None;
    for n in workers {
        let m = bench.run(n, None).await;
        let rate = m.stored as f64 / m.secs;
        let speedup = rate / *base.get_or_insert(rate);
        println!(
            "| {n} | {} | {:.1} | {rate:.0} | {speedup:.2}x | {:.1} | {} | {} |",
            m.stored,
            m.secs,
            m.commits as f64 / m.secs,
            m.llm_calls,
            m.rate_limited
        );
    }
}

/// 4 workers against a fake OpenAI limited to `rpm_limit` requests a
/// minute (fixed one-minute windows): once with no rate of ours (each 429
/// still pauses every worker through the run's bucket), once with
/// `requests_per_minute` at 90 % of the limit, shared by all four.
pub async fn shared_limit(conversations: usize, rpm_limit: u32) {
    let bench = Bench::start(conversations, rpm_limit).await;
    let shared = (f64::from(rpm_limit) * 0.9).floor();
    println!("| 4 workers, fake limit {rpm_limit}/min | conversations | wall s | LLM calls/min | LLM calls | 429s |");
    println!("|---|---|---|---|---|---|");
    for (what, rpm) in
        [("no requests_per_minute (429 pauses shared)", None), ("requests_per_minute shared", Some(shared))]
    {
        next_minute().await;
        let m = bench.run(4, rpm).await;
        let label = match rpm {
            Some(r) => format!("{what} = {r}"),
            None => what.to_string(),
        };
        println!(
            "| {label} | {} | {:.1} | {:.0} | {} | {} |",
            m.stored,
            m.secs,
            (m.llm_calls + m.rate_limited) as f64 / m.secs * 60.0,
            m.llm_calls,
            m.rate_limited
        );
    }
}

/// Waits for the fake's next fixed one-minute window, so that a run does not
/// start in a window the run before it has used up (its first calls would
/// meet 429s that no pacing of its own could avoid).
async fn next_minute() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let into = now.as_millis() % 60_000;
    tokio::time::sleep(Duration::from_millis((60_000 - into) as u64 + 200)).await;
}

/// Documents stored and fenced commits made.
async fn counts(url: &str) -> (u64, i64) {
    let store = PostgresStore::open(url).await.expect("open the bench database");
    let stored = store.document_count().await.expect("count documents");
    let commits = store.run_partitions(1).await.expect("read partitions").iter().map(|p| p.commit_seq).sum();
    store.close().await;
    (stored, commits)
}
