//! The web ingestion benchmark of the third seed: crawl the test kit's
//! generated site (simulated page latency), extract the main text, chunk it
//! and embed it through the fake OpenAI-compatible `/v1/embeddings`
//! (simulated latency per call), into SQLite; streaming against batch.
//!
//! ```sh
//! cargo run --release -p sluice-bench -- crawl [PAGES] [PAGE_MS] [EMBED_MS]
//! ```
//!
//! The ideal is the slowest stage alone: the crawl alone (measured: the same
//! crawl into a store that keeps nothing, no stages) or the embedding calls
//! alone (the calls the run made, one after another, times their latency).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_connectors::registry::{StageConfig, StageEntry, build_stage};
use sluice_connectors::remote::openai::OpenAiEndpoint;
use sluice_connectors::source::crawl::{CrawlConfig, CrawlSource};
use sluice_connectors::stage::chunk::{ChunkBy, ChunkConfig};
use sluice_connectors::stage::embed::EmbedConfig;
use sluice_connectors::stage::extract_html::ExtractHtmlConfig;
use sluice_connectors::store::sqlite::SqliteStore;
use sluice_connectors::util::secret::Secret;
use sluice_core::{Mode, Pipeline, RunLabels, RunStatus, Settings, Start, Store};
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::site::{FakeSite, SiteConfig};
use sluice_testkit::{FakeOpenAi, OpenAiConfig, OpenAiFaults};

const PER_HOST: usize = 4;
const BATCH: usize = 20;
const EMBED_BATCH: usize = 32;

fn source(site: &FakeSite) -> Arc<CrawlSource> {
    let mut config = CrawlConfig::new(vec![site.url("/")]);
    config.per_host_concurrency = PER_HOST;
    config.concurrency = PER_HOST;
    config.delay_ms = 0;
    config.retry_base_ms = 1;
    Arc::new(CrawlSource::new(config).expect("crawl source"))
}

fn pipeline(site: &FakeSite, openai: &FakeOpenAi, store: Arc<dyn Store>, mode: Mode) -> Pipeline {
    let stage = |stage| build_stage(&StageEntry { workers: 1, stage }).expect("stage");
    let embed = EmbedConfig {
        provider: "openai".into(),
        dimensions: 64,
        batch_size: EMBED_BATCH,
        endpoint: OpenAiEndpoint {
            base_url: Some(format!("{}/v1", openai.base_url())),
            api_key: Some(Secret::new(openai.key())),
            ..OpenAiEndpoint::default()
        },
        ..EmbedConfig::default()
    };
    let chunk = ChunkConfig { by: ChunkBy::Chars, size: Some(500), overlap: 50, ..ChunkConfig::default() };
    Pipeline::new(source(site), store)
        .settings(Settings {
            mode,
            name: "crawl-bench".into(),
            batch_size: BATCH,
            per_document_events: false,
            labels: RunLabels { noun: "pages".into(), window: None },
            ..Settings::default()
        })
        .stage(stage(StageConfig::ExtractHtml(ExtractHtmlConfig::default())))
        .stage(stage(StageConfig::Chunk(chunk)))
        .stage(stage(StageConfig::Embed(embed)))
}

pub async fn crawl(pages: usize, page_ms: u64, embed_ms: u64) {
    let site = FakeSite::start(SiteConfig { pages, latency_ms: page_ms, slow_ms: 100, ..SiteConfig::default() })
        .await
        .expect("site");
    let openai = FakeOpenAi::start(OpenAiConfig::default().with_rpm_limit(10_000_000).with_faults(OpenAiFaults {
        endpoints: OpenAiTarget::Embeddings,
        latency_ms: embed_ms,
        ..OpenAiFaults::default()
    }))
    .await
    .expect("fake openai");
    let expected = site.expected(None);

    // The crawl alone: no stages, nothing kept.
    let started = Instant::now();
    let summary = Pipeline::new(source(&site), Arc::new(sluice_core::testing::MemStore::discarding()))
        .settings(Settings { batch_size: BATCH, per_document_events: false, ..Settings::default() })
        .run(Start::New)
        .await
        .expect("run");
    let fetch_alone = started.elapsed();
    assert_eq!(summary.counts.fetched as usize, expected.pages.len());

    let mut rows = Vec::new();
    for mode in [Mode::Streaming, Mode::Batch] {
        openai.reset_counters();
        let dir = crate::bench_dir();
        let store = Arc::new(SqliteStore::open(&dir.path().join("crawl.db")).expect("sqlite"));
        let started = Instant::now();
        let summary = pipeline(&site, &openai, store, mode).run(Start::New).await.expect("run");
        let wall = started.elapsed();
        assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
        assert_eq!(summary.counts.stored as usize, expected.stored().len(), "every reachable page stored");
        let calls = openai.counters().embedding_requests;
        rows.push((mode, wall, calls, summary.counts.chunks));
    }
    let calls = rows[0].2;
    let embed_alone = Duration::from_millis(calls * embed_ms);
    let ideal = fetch_alone.max(embed_alone);
    println!(
        "{} pages stored + {} failed, crawled {PER_HOST} at a time at {page_ms} ms a page; {} chunks embedded \
         {EMBED_BATCH} a call ({calls} calls at {embed_ms} ms); batches of {BATCH}; SQLite",
        expected.stored().len(),
        expected.failed().len(),
        rows[0].3
    );
    println!(
        "crawl alone {:.2} s, embedding calls alone {:.2} s",
        fetch_alone.as_secs_f64(),
        embed_alone.as_secs_f64()
    );
    println!("| mode | wall s | ideal s (slowest stage alone) | wall / ideal | sum of stages s |");
    println!("| --- | --- | --- | --- | --- |");
    for (mode, wall, _, _) in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            mode.as_str(),
            wall.as_secs_f64(),
            ideal.as_secs_f64(),
            wall.as_secs_f64() / ideal.as_secs_f64(),
            (fetch_alone + embed_alone).as_secs_f64()
        );
    }
    let (streaming, batch) = (rows[0].1.as_secs_f64(), rows[1].1.as_secs_f64());
    println!(
        "streaming takes {:.0}% less time than batch (the seed claims 55-60%; the ideal here is {:.0}%)",
        100.0 * (1.0 - streaming / batch),
        100.0 * (1.0 - ideal.as_secs_f64() / batch)
    );
}

/// The crawl alone against a site served by another process (the test kit's
/// `site` command, as `crates/sluice-bench/scripts/crawl-vs-scrapy.sh` runs
/// it for both crawlers): wall, CPU and peak RSS of this process, pages.
///
/// ```sh
/// cargo run --release -p sluice-bench -- crawl-site URL [CONCURRENCY]
/// ```
pub async fn crawl_site(url: String, concurrency: usize) {
    let mut config = CrawlConfig::new(vec![url]);
    config.per_host_concurrency = concurrency.min(64);
    config.concurrency = concurrency;
    config.delay_ms = 0;
    config.retry_base_ms = 1;
    let source = Arc::new(CrawlSource::new(config).expect("crawl source"));
    let cpu_before = crate::cpu_seconds();
    let started = Instant::now();
    let summary = Pipeline::new(source, Arc::new(sluice_core::testing::MemStore::discarding()))
        .settings(Settings { batch_size: BATCH, per_document_events: false, ..Settings::default() })
        .run(Start::New)
        .await
        .expect("run");
    let wall = started.elapsed().as_secs_f64();
    let cpu = crate::cpu_seconds() - cpu_before;
    println!(
        "| sluice | {concurrency} | {} pages ({} failed) | {wall:.2} | {cpu:.2} | {:.0} |",
        summary.counts.fetched,
        summary.counts.failed,
        crate::peak_rss_mib()
    );
}
