//! Benchmarks of the engine, printed as Markdown rows for BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p sluice-bench -- throughput [RECORDS] [STORE/BATCH/EVENTS]  # e.g. sqlite/50/off: that row only
//! cargo run --release -p sluice-bench -- rss RECORDS          # one size per process: peak RSS is per process
//! cargo run --release -p sluice-bench -- modes
//! cargo run --release -p sluice-bench -- intercom [CONVERSATIONS] [CONCURRENCY...]  # see intercom.rs
//! cargo run --release -p sluice-bench -- intercom-store [CONVERSATIONS] [ROUNDS]    # see intercom_store.rs
//! cargo run --release -p sluice-bench -- distributed [CONVERSATIONS] [WORKERS...]  # see distributed.rs
//! cargo run --release -p sluice-bench -- postgres [RECORDS]   # needs SLUICE_BENCH_POSTGRES_URL (see postgres.rs)
//! cargo run --release -p sluice-bench -- crawl [PAGES] [PAGE_MS] [EMBED_MS]  # see crawl.rs
//! cargo run --release -p sluice-bench -- crawl-site URL [CONCURRENCY]      # against Scrapy: scripts/crawl-vs-scrapy.sh
//! cargo run --release -p sluice-bench -- embed [DOCUMENTS] [CALL_MS] [CONCURRENCY...]  # see embed.rs
//! cargo run --release -p sluice-bench -- embed-wire [DOCUMENTS] [DIMENSIONS]  # base64 vs floats, see embed.rs
//! cargo run --release -p sluice-bench -- unchanged [DOCUMENTS] [DIR] [OPENAI_URL] [CONCURRENCY]  # see unchanged.rs
//! cargo run --release -p sluice-bench -- chunk MB unbroken|natural [chars|before]  # see chunk.rs
//! cargo run --release -p sluice-bench --features minilm -- minilm [TEXTS] [BATCH] [OUT_DIR]  # see minilm.rs
//! ```

mod chunk;
mod crawl;
mod distributed;
mod embed;
mod intercom;
mod intercom_store;
#[cfg(feature = "minilm")]
mod minilm;
mod postgres;
mod unchanged;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use sluice_connectors::registry::{StageConfig, StageEntry, build_stage};
use sluice_connectors::source::generate::{GenerateConfig, GenerateSource};
use sluice_connectors::stage::classify_rules::{Rule, RulesClassifyConfig};
use sluice_connectors::stage::filter::FilterConfig;
use sluice_connectors::stage::normalize::NormalizeConfig;
use sluice_connectors::store::sqlite::SqliteStore;
use sluice_core::testing::MemStore;
use sluice_core::{
    Context, Document, Mode, Outcome, Pipeline, RunStatus, Settings, Stage, StageError, StageSpec, Start, Store,
};

/// The same allocator as the `sluice` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let number = |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("throughput") => runtime.block_on(throughput(number(1, 1_000_000), args.get(2).map(String::as_str))),
        Some("rss") => runtime.block_on(rss(number(1, 100_000))),
        Some("modes") => runtime.block_on(modes()),
        Some("intercom") => {
            let concurrencies: Vec<usize> = args.iter().skip(2).filter_map(|s| s.parse().ok()).collect();
            let concurrencies = if concurrencies.is_empty() { vec![16, 64] } else { concurrencies };
            runtime.block_on(intercom::intercom(number(1, 20_000) as usize, concurrencies))
        }
        Some("intercom-store") => {
            runtime.block_on(intercom_store::intercom_store(number(1, 20_000) as usize, number(2, 5) as usize))
        }
        Some("intercom-child") => runtime.block_on(intercom::child(
            number(1, 1) as usize,
            number(2, 16) as usize,
            std::path::Path::new(args.get(3).map_or("bench.db", String::as_str)),
        )),
        Some("distributed") => {
            let workers: Vec<usize> = args.iter().skip(2).filter_map(|s| s.parse().ok()).collect();
            let workers = if workers.is_empty() { vec![1, 2, 4] } else { workers };
            runtime.block_on(distributed::distributed(number(1, 4_000) as usize, workers))
        }
        Some("distributed-limit") => {
            runtime.block_on(distributed::shared_limit(number(1, 2_000) as usize, number(2, 600) as u32))
        }
        Some("postgres") => runtime.block_on(postgres::postgres(number(1, 200_000))),
        Some("crawl") => runtime.block_on(crawl::crawl(number(1, 300) as usize, number(2, 20), number(3, 40))),
        Some("embed") => {
            let concurrencies: Vec<usize> = args.iter().skip(3).filter_map(|s| s.parse().ok()).collect();
            let concurrencies = if concurrencies.is_empty() { vec![4, 16] } else { concurrencies };
            runtime.block_on(embed::embed(number(1, 2_000) as usize, number(2, 20), concurrencies))
        }
        Some("embed-wire") => runtime.block_on(embed::embed_wire(number(1, 2_000) as usize, number(2, 1536) as usize)),
        Some("crawl-site") => runtime.block_on(crawl::crawl_site(
            args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:8003/".into()),
            number(2, 8) as usize,
        )),
        Some("unchanged") => runtime.block_on(unchanged::unchanged(
            number(1, 2_000) as usize,
            args.get(2).map(std::path::PathBuf::from),
            args.get(3).cloned(),
            number(4, 16) as usize,
        )),
        Some("chunk") => chunk::chunk(
            number(1, 1) as usize,
            args.get(2).map_or("unbroken", String::as_str),
            args.get(3).map_or("chars", String::as_str),
        ),
        #[cfg(feature = "minilm")]
        Some("minilm") => {
            minilm::minilm(number(1, 2_000) as usize, number(2, 32) as usize, args.get(3).map(Into::into))
        }
        #[cfg(not(feature = "minilm"))]
        Some("minilm") => eprintln!("minilm needs the bench built with --features minilm"),
        _ => eprintln!(
            "usage: sluice-bench throughput [RECORDS] [STORE/BATCH/EVENTS] | rss RECORDS | modes | postgres [RECORDS] | distributed [CONVERSATIONS] [WORKERS...] | distributed-limit [CONVERSATIONS] [RPM_LIMIT] | intercom [CONVERSATIONS] [CONCURRENCY...] | intercom-store [CONVERSATIONS] [ROUNDS] | crawl [PAGES] [PAGE_MS] [EMBED_MS] | crawl-site URL [CONCURRENCY] | embed [DOCUMENTS] [CALL_MS] [CONCURRENCY...] | embed-wire [DOCUMENTS] [DIMENSIONS] | unchanged [DOCUMENTS] [DIR] [OPENAI_URL] [CONCURRENCY] | chunk MB unbroken|natural [chars|before] | minilm [TEXTS] [BATCH] [OUT_DIR]"
        ),
    }
}

fn stage(config: StageConfig) -> StageSpec {
    build_stage(&StageEntry { workers: 1, stage: config }).expect("stage config")
}

/// SQLite at `db`, or (without one) a store that keeps nothing.
fn sqlite_or_null(db: Option<&std::path::Path>) -> Arc<dyn Store> {
    match db {
        Some(db) => Arc::new(SqliteStore::open(db).expect("sqlite")),
        None => Arc::new(MemStore::discarding()),
    }
}

/// generate -> normalize -> filter -> classify(rules) -> `store`: the pipeline
/// every engine and store benchmark measures.
pub(crate) fn engine_pipeline(
    records: u64,
    batch_size: usize,
    per_document_events: bool,
    store: Arc<dyn Store>,
) -> Pipeline {
    let mut gen_config = GenerateConfig::new(records);
    gen_config.page_size = 500;
    let source = Arc::new(GenerateSource::new(gen_config).expect("generate"));
    let rules = RulesClassifyConfig {
        rules: vec![
            Rule { category: "billing".into(), keywords: vec!["refund".into(), "invoice".into(), "billing".into()] },
            Rule { category: "account".into(), keywords: vec!["login".into(), "password".into()] },
            Rule { category: "bug".into(), keywords: vec!["crash".into(), "error".into(), "bug".into()] },
        ],
        default_category: "other".into(),
    };
    Pipeline::new(source, store)
        .settings(Settings { batch_size, per_document_events, name: "bench".into(), ..Settings::default() })
        .stage(stage(StageConfig::Normalize(NormalizeConfig::default())))
        .stage(stage(StageConfig::Filter(FilterConfig::default())))
        .stage(stage(StageConfig::Classify(rules.into())))
}

/// CPU seconds (user + system) this process has used so far.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks a second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// A scratch directory for the benchmark's database: under `SLUICE_BENCH_DIR`
/// when set (e.g. /dev/shm, to take the disk out of the measurement), else the
/// system's temporary directory.
fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SLUICE_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("SLUICE_BENCH_DIR is a writable directory"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

/// Runs to the end, reading every event as a consumer would.
async fn drive(pipeline: &Pipeline) -> (Duration, u64) {
    let started = Instant::now();
    let mut events = Box::pin(pipeline.stream_events(Start::New).await.expect("start"));
    let mut seen = 0u64;
    while events.next().await.is_some() {
        seen += 1;
    }
    (started.elapsed(), seen)
}

/// Every row of the table, or only `only` (`store/batch size/events`, e.g. `sqlite/50/off`).
async fn throughput(records: u64, only: Option<&str>) {
    println!("| store | batch size | per-document events | records | wall s | records/s | events |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (store, batch_size, events) in [
        ("none", 50, false),
        ("sqlite", 50, false),
        ("sqlite", 50, true),
        ("sqlite", 500, false),
        ("sqlite", 500, true),
    ] {
        if only.is_some_and(|row| row != format!("{store}/{batch_size}/{}", if events { "on" } else { "off" })) {
            continue;
        }
        {
            let dir = bench_dir();
            let db = dir.path().join("bench.db");
            let pipeline = engine_pipeline(
                records,
                batch_size,
                events,
                sqlite_or_null((store == "sqlite").then_some(db.as_path())),
            );
            let (wall, seen) = drive(&pipeline).await;
            println!(
                "| {store} | {batch_size} | {} | {records} | {:.2} | {:.0} | {seen} |",
                if events { "on" } else { "off" },
                wall.as_secs_f64(),
                records as f64 / wall.as_secs_f64()
            );
        }
    }
}

/// Peak resident set of this process (VmHWM), in MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn rss(records: u64) {
    let dir = bench_dir();
    let db = dir.path().join("bench.db");
    let pipeline = engine_pipeline(records, 50, false, sqlite_or_null(Some(db.as_path())));
    let (wall, _) = drive(&pipeline).await;
    println!(
        "| {records} | 50 | {:.1} | {:.0} | {:.1} |",
        wall.as_secs_f64(),
        records as f64 / wall.as_secs_f64(),
        peak_rss_mib()
    );
}

/// A stage that only waits, standing for a remote call of fixed latency per batch.
struct Latency {
    name: String,
    per_batch: Duration,
}

#[async_trait]
impl Stage for Latency {
    fn name(&self) -> &str {
        &self.name
    }
    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        tokio::time::sleep(self.per_batch).await;
        Ok(docs.into_iter().map(Outcome::Kept).collect())
    }
}

async fn modes() {
    const RECORDS: u64 = 5_000;
    const BATCH: u64 = 50;
    const PAGE_MS: u64 = 20;
    let stage_ms = [10u64, 15];
    let pages = RECORDS / BATCH;
    let fetch_alone = pages * PAGE_MS;
    let stage_alone: Vec<u64> = stage_ms.iter().map(|ms| pages * ms).collect();
    let ideal = Duration::from_millis(*stage_alone.iter().chain([&fetch_alone]).max().unwrap_or(&0));
    let sequential = Duration::from_millis(fetch_alone + stage_alone.iter().sum::<u64>());
    println!(
        "{RECORDS} records, pages of {BATCH} at {PAGE_MS} ms, stages of {:?} ms per batch: fetch alone {fetch_alone} ms, stages alone {stage_alone:?} ms",
        stage_ms
    );
    println!("| mode | wall s | ideal s (slowest stage alone) | ratio to ideal | sum of stages s |");
    println!("| --- | --- | --- | --- | --- |");
    for mode in [Mode::Streaming, Mode::Batch] {
        let dir = bench_dir();
        let mut config = GenerateConfig::new(RECORDS);
        config.page_size = BATCH as usize;
        config.latency_ms = PAGE_MS;
        let source = Arc::new(GenerateSource::new(config).expect("generate"));
        let store = Arc::new(SqliteStore::open(&dir.path().join("modes.db")).expect("sqlite"));
        let mut pipeline = Pipeline::new(source, store).settings(Settings {
            mode,
            batch_size: BATCH as usize,
            per_document_events: false,
            name: "modes".into(),
            ..Settings::default()
        });
        for (i, ms) in stage_ms.iter().enumerate() {
            pipeline = pipeline.stage(StageSpec::new(Arc::new(Latency {
                name: format!("latency{i}"),
                per_batch: Duration::from_millis(*ms),
            })));
        }
        let started = Instant::now();
        let summary = pipeline.run(Start::New).await.expect("run");
        let wall = started.elapsed();
        assert_eq!(summary.status, RunStatus::Completed);
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            mode.as_str(),
            wall.as_secs_f64(),
            ideal.as_secs_f64(),
            wall.as_secs_f64() / ideal.as_secs_f64(),
            sequential.as_secs_f64()
        );
    }
}
