//! The unchanged re-run (issue 18, item 1): documents from a JSON-lines file,
//! chunked (1000 characters, 100 overlap) and embedded by an OpenAI-compatible
//! embeddings API into SQLite, then the same run again over the same file.
//! The re-run finds every document stored with the same content by a
//! pipeline of the same fingerprint and skips it before any stage: no chunk,
//! no memo lookup, no write.
//!
//! ```sh
//! cargo run --release -p sluice-bench -- unchanged [DOCUMENTS] [DIR] [OPENAI_BASE_URL] [CONCURRENCY]
//! ```
//!
//! Without a URL the test kit's fake runs in this process (20 ms a call).
//! `scripts/unchanged-vs-python.sh` runs this and a hand-written asyncio
//! script against one fake and prints the ratio of the re-runs; the last
//! line, `rerun_wall_s=`, is what it reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sluice_connectors::registry::{StageConfig, StageEntry, build_stage};
use sluice_connectors::remote::openai::OpenAiEndpoint;
use sluice_connectors::source::jsonl::{JsonlConfig, JsonlSource};
use sluice_connectors::stage::chunk::{ChunkBy, ChunkConfig};
use sluice_connectors::stage::embed::EmbedConfig;
use sluice_connectors::store::sqlite::SqliteStore;
use sluice_connectors::util::secret::Secret;
use sluice_core::{Pipeline, RunStatus, RunSummary, Settings, Start};
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::{FakeOpenAi, OpenAiConfig, OpenAiFaults};

const BATCH: usize = 50;

fn pipeline(data: &Path, db: &Path, base_url: &str, concurrency: usize) -> Pipeline {
    let source = Arc::new(JsonlSource::new(JsonlConfig::new(data.to_str().expect("utf-8 path"))).expect("jsonl"));
    let chunk = ChunkConfig { by: ChunkBy::Chars, size: Some(1000), overlap: 100, ..ChunkConfig::default() };
    let embed = EmbedConfig {
        provider: "openai".into(),
        dimensions: 64,
        batch_size: 32,
        concurrency,
        endpoint: OpenAiEndpoint {
            base_url: Some(base_url.to_string()),
            api_key: Some(Secret::new("sk-test")),
            ..OpenAiEndpoint::default()
        },
        ..EmbedConfig::default()
    };
    let store = Arc::new(SqliteStore::open(db).expect("sqlite"));
    Pipeline::new(source, store)
        .settings(Settings {
            name: "unchanged-bench".into(),
            batch_size: BATCH,
            per_document_events: false,
            ..Settings::default()
        })
        .stage(build_stage(&StageEntry { workers: 1, stage: StageConfig::Chunk(chunk) }).expect("chunk"))
        .stage(build_stage(&StageEntry { workers: 1, stage: StageConfig::Embed(embed) }).expect("embed"))
}

fn row(label: &str, wall: f64, summary: &RunSummary) {
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    let c = &summary.counts;
    println!(
        "| {label} | {wall:.3} | {} | {} | {} | {} |",
        summary.checkpoint.cost.embedding_calls, c.stored, c.chunks, c.unchanged
    );
}

pub async fn unchanged(documents: usize, dir: Option<PathBuf>, base_url: Option<String>, concurrency: usize) {
    // Kept alive for the runs when no URL is given.
    let mut fake = None;
    let base_url = match base_url {
        Some(url) => url,
        None => {
            let openai =
                FakeOpenAi::start(OpenAiConfig::default().with_rpm_limit(100_000_000).with_faults(OpenAiFaults {
                    endpoints: OpenAiTarget::Embeddings,
                    latency_ms: 20,
                    ..OpenAiFaults::default()
                }))
                .await
                .expect("fake openai");
            let url = format!("{}/v1", openai.base_url());
            fake = Some(openai);
            url
        }
    };
    let temp = crate::bench_dir();
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("bench directory");
    let data = dir.join("docs.jsonl");
    crate::embed::write_corpus(&data, documents);
    let db = dir.join("sluice.db");
    let _ = std::fs::remove_file(&db);
    println!(
        "{documents} documents, chunked 1000/100, embedded 32 chunks a call at {concurrency} at once, into SQLite"
    );
    println!("| run | wall s | embedding calls | stored | chunks | unchanged |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let started = Instant::now();
    let first = pipeline(&data, &db, &base_url, concurrency).run(Start::New).await.expect("first run");
    row("first run", started.elapsed().as_secs_f64(), &first);
    let started = Instant::now();
    let again = pipeline(&data, &db, &base_url, concurrency).run(Start::New).await.expect("re-run");
    let rerun = started.elapsed().as_secs_f64();
    row("re-run, unchanged", rerun, &again);
    assert_eq!((again.counts.stored, again.counts.unchanged), (0, documents as u64), "the re-run skipped everything");
    drop(fake);
    println!("rerun_wall_s={rerun:.3}");
}
