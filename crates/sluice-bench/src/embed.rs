//! The embed path at its latency bound (issue 18, item 2): documents from a
//! JSON-lines file, chunked (1000 characters, 100 overlap), every chunk
//! embedded by the test kit's fake OpenAI (in this process, a fixed latency
//! per call, default 20 ms), 32 chunks a call, into a store that keeps
//! nothing, so the embedding calls are all there is to wait for.
//!
//! ```sh
//! cargo run --release -p sluice-bench -- embed [DOCUMENTS] [CALL_MS] [CONCURRENCY...]
//! # the fake in its own process, so its work does not share this one's runtime:
//! sluice-testkit openai --port 8095 --rpm 100000000 --fault-endpoints embeddings --latency-ms 20 &
//! SLUICE_BENCH_OPENAI_URL=http://127.0.0.1:8095 cargo run --release -p sluice-bench -- embed 2000 20 4 16
//! ```
//!
//! The bound: `calls x CALL_MS / concurrency` (no run can be faster with that
//! many calls in flight at most). Each row is one run; the ratio is wall /
//! bound. Rows with the embed stage on 1 batch at a time, on 2 and on
//! `EmbedStage::MIN_WORKERS` (what a pipeline file gets now) show what the
//! overlap across batches is worth: with one, a batch's last calls leave
//! slots idle until the next batch starts. "mean calls at once" is the
//! fake's time spent answering, summed over calls, over the wall time.
//!
//! `embed-wire [DOCUMENTS] [DIMENSIONS]`: the same path at real vector sizes
//! (default 1536, `text-embedding-3-small`), once with vectors as base64 (what
//! the embedder asks for) and once as JSON floats (the fake refusing base64,
//! as a float-only server does), 16 at once: wall and this process's CPU,
//! each twice in the order base64, floats, floats, base64.

use std::sync::Arc;
use std::time::Instant;

use sluice_connectors::registry::{StageConfig, StageEntry, build_stage};
use sluice_connectors::remote::openai::OpenAiEndpoint;
use sluice_connectors::source::jsonl::{JsonlConfig, JsonlSource};
use sluice_connectors::stage::chunk::{ChunkBy, ChunkConfig};
use sluice_connectors::stage::embed::{EmbedConfig, EmbedStage};
use sluice_connectors::util::secret::Secret;
use sluice_core::testing::MemStore;
use sluice_core::{Pipeline, RunStatus, RunSummary, Settings, StageSpec, Start};
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::{FakeOpenAi, OpenAiConfig, OpenAiFaults};

const EMBED_BATCH: usize = 32;
/// Vector size of the `embed` rows: small, so the calls' waiting is what is measured.
const DIMENSIONS: usize = 64;
const BATCH: usize = 50;
/// Characters per document: about 15.7 chunks of 1000 with 100 overlap, so
/// 2,000 documents make about 983 calls of 32, as in the issue's comparison.
const DOC_CHARS: usize = 14_000;

/// `documents` support-ticket-like texts of about [`DOC_CHARS`] characters.
pub(crate) fn write_corpus(path: &std::path::Path, documents: usize) {
    let words = ["invoice", "refund", "login", "password", "crash", "export", "billing", "slow", "report", "api"];
    let mut out = String::new();
    for d in 0..documents {
        let mut text = String::with_capacity(DOC_CHARS + 32);
        let mut w = d;
        while text.len() < DOC_CHARS {
            text.push_str(words[w % words.len()]);
            text.push_str(&format!(" {} ", w % 997));
            w = w.wrapping_mul(31).wrapping_add(7);
        }
        out.push_str(&format!("{{\"id\":\"doc-{d}\",\"text\":\"{text}\"}}\n"));
    }
    std::fs::write(path, out).expect("corpus written");
}

/// The fake embeddings API: in this process, or the test kit's binary at a URL.
enum Fake {
    InProcess(FakeOpenAi),
    /// `sluice-testkit openai` (key `sk-test`), read and reset over its control routes.
    Remote {
        base_url: String,
        http: reqwest::Client,
    },
}

impl Fake {
    async fn start(call_ms: u64) -> Fake {
        if let Ok(base_url) = std::env::var("SLUICE_BENCH_OPENAI_URL") {
            return Fake::Remote { base_url: base_url.trim_end_matches('/').to_string(), http: reqwest::Client::new() };
        }
        let openai = FakeOpenAi::start(OpenAiConfig::default().with_rpm_limit(100_000_000).with_faults(OpenAiFaults {
            endpoints: OpenAiTarget::Embeddings,
            latency_ms: call_ms,
            ..OpenAiFaults::default()
        }))
        .await
        .expect("fake openai");
        Fake::InProcess(openai)
    }

    fn base_url(&self) -> String {
        match self {
            Fake::InProcess(openai) => openai.base_url().to_string(),
            Fake::Remote { base_url, .. } => base_url.clone(),
        }
    }

    fn key(&self) -> String {
        match self {
            Fake::InProcess(openai) => openai.key().to_string(),
            Fake::Remote { .. } => "sk-test".to_string(),
        }
    }

    fn place(&self) -> &'static str {
        match self {
            Fake::InProcess(_) => "this process",
            Fake::Remote { .. } => "its own process",
        }
    }

    /// Make the fake a float-only server (400 on `encoding_format: "base64"`), or not.
    async fn refuse_base64(&self, refuse: bool) {
        match self {
            Fake::InProcess(openai) => openai.update_faults(|f| f.refuse_base64 = refuse),
            Fake::Remote { base_url, http } => {
                let patch = serde_json::json!({ "refuse_base64": refuse });
                http.post(format!("{base_url}/_testkit/faults")).json(&patch).send().await.expect("fake faults");
            }
        }
    }

    async fn reset(&self) {
        match self {
            Fake::InProcess(openai) => openai.reset_counters(),
            Fake::Remote { base_url, http } => {
                http.post(format!("{base_url}/_testkit/reset")).send().await.expect("fake reset");
            }
        }
    }

    /// Embedding requests answered, the most in flight at once, and seconds spent answering, summed over requests.
    async fn counters(&self) -> (u64, u64, f64) {
        match self {
            Fake::InProcess(openai) => {
                let c = openai.counters();
                (c.embedding_requests, c.max_in_flight, c.busy_micros as f64 / 1e6)
            }
            Fake::Remote { base_url, http } => {
                let c: serde_json::Value = http
                    .get(format!("{base_url}/_testkit/counters"))
                    .send()
                    .await
                    .expect("fake counters")
                    .json()
                    .await
                    .expect("counters are JSON");
                let n = |k: &str| c[k].as_u64().unwrap_or_default();
                (n("embedding_requests"), n("max_in_flight"), n("busy_micros") as f64 / 1e6)
            }
        }
    }
}

fn pipeline(data: &std::path::Path, openai: &Fake, concurrency: usize, workers: usize, dimensions: usize) -> Pipeline {
    let source = Arc::new(JsonlSource::new(JsonlConfig::new(data.to_str().expect("utf-8 path"))).expect("jsonl"));
    let chunk = ChunkConfig { by: ChunkBy::Chars, size: Some(1000), overlap: 100, ..ChunkConfig::default() };
    let embed = EmbedConfig {
        provider: "openai".into(),
        dimensions,
        batch_size: EMBED_BATCH,
        concurrency,
        endpoint: OpenAiEndpoint {
            base_url: Some(format!("{}/v1", openai.base_url())),
            api_key: Some(Secret::new(openai.key())),
            ..OpenAiEndpoint::default()
        },
        ..EmbedConfig::default()
    };
    Pipeline::new(source, Arc::new(MemStore::discarding()))
        .settings(Settings {
            name: "embed-bench".into(),
            batch_size: BATCH,
            per_document_events: false,
            ..Settings::default()
        })
        .stage(build_stage(&StageEntry { workers: 1, stage: StageConfig::Chunk(chunk) }).expect("chunk"))
        // Built here rather than by the registry, which gives embed at least
        // EmbedStage::MIN_WORKERS: the row with 1 shows what that is for.
        .stage(StageSpec::new(Arc::new(EmbedStage::new(embed).expect("embed"))).workers(workers))
}

/// Runs `pipeline` from the start on a fake with fresh counters; the summary
/// of a run that completed with nothing failed, and its wall seconds.
async fn timed_run(openai: &Fake, pipeline: Pipeline) -> (RunSummary, f64) {
    openai.reset().await;
    let started = Instant::now();
    let summary = pipeline.run(Start::New).await.expect("run");
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    assert_eq!(summary.counts.failed, 0);
    (summary, wall)
}

pub async fn embed(documents: usize, call_ms: u64, concurrencies: Vec<usize>) {
    let openai = Fake::start(call_ms).await;
    let dir = crate::bench_dir();
    let data = dir.path().join("docs.jsonl");
    write_corpus(&data, documents);
    println!(
        "{documents} documents of ~{DOC_CHARS} characters, chunked 1000/100, {EMBED_BATCH} chunks a call, \
         {call_ms} ms a call (the test kit's fake, in {}), batches of {BATCH}, no store",
        openai.place()
    );
    println!(
        "| concurrency | embed batches at once | calls | chunks | bound s | wall s | wall / bound | most calls at once | mean calls at once |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &concurrency in &concurrencies {
        for workers in [1, 2, EmbedStage::MIN_WORKERS] {
            let (summary, wall) = timed_run(&openai, pipeline(&data, &openai, concurrency, workers, DIMENSIONS)).await;
            let (calls, max_in_flight, busy) = openai.counters().await;
            let bound = calls as f64 * call_ms as f64 / 1000.0 / concurrency as f64;
            println!(
                "| {concurrency} | {workers} | {calls} | {} | {bound:.2} | {wall:.2} | {:.2} | {max_in_flight} | {:.2} |",
                summary.counts.chunks,
                wall / bound,
                busy / wall
            );
        }
    }
}

/// Vectors as base64 against vectors as JSON floats, at `dimensions`.
pub async fn embed_wire(documents: usize, dimensions: usize) {
    const CALL_MS: u64 = 20;
    const CONCURRENCY: usize = 16;
    let openai = Fake::start(CALL_MS).await;
    let dir = crate::bench_dir();
    let data = dir.path().join("docs.jsonl");
    write_corpus(&data, documents);
    println!(
        "{documents} documents chunked 1000/100, {EMBED_BATCH} chunks a call of {dimensions} dimensions, \
         {CALL_MS} ms a call (the fake, in {}), {CONCURRENCY} at once",
        openai.place()
    );
    println!("| vectors as | calls | wall s | CPU s (this process) | CPU ms per call |");
    println!("| --- | --- | --- | --- | --- |");
    // Each twice, the second pair in reverse order, so that warming up falls on neither.
    let (base64, floats) = (("base64", false), ("JSON floats", true));
    for (encoding, refuse) in [base64, floats, floats, base64] {
        openai.refuse_base64(refuse).await;
        let cpu_before = crate::cpu_seconds();
        let (_, wall) =
            timed_run(&openai, pipeline(&data, &openai, CONCURRENCY, EmbedStage::MIN_WORKERS, dimensions)).await;
        let cpu = crate::cpu_seconds() - cpu_before;
        let (calls, _, _) = openai.counters().await;
        println!("| {encoding} | {calls} | {wall:.2} | {cpu:.2} | {:.2} |", cpu * 1000.0 / calls as f64);
    }
    openai.refuse_base64(false).await;
}
