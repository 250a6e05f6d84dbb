//! The Intercom backfill benchmark: conversations from the fake Intercom
//! (20 ms per search page), classified by the fake OpenAI-compatible API
//! (5 ms per chat call), into SQLite, with 1 and with 4 partitions.
//!
//! ```sh
//! cargo run --release -p sluice-bench -- intercom [CONVERSATIONS] [CONCURRENCY...]
//! ```
//!
//! The fakes run in this process; each pipeline runs in a child process
//! (this binary, `intercom-child`), so its peak RSS is the pipeline's alone.
//! The ideal is the slower of the two latency-bound chains: reading every
//! page of a partition one after another (pages / partitions x 20 ms) and
//! classifying every quality conversation `concurrency` at a time
//! (conversations / concurrency x 5 ms).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sluice_connectors::phase::{FacetConfig, PhasesConfig, StoryConfig, ThemeConfig, build_phases};
use sluice_connectors::registry::{SourceConfig, StageConfig, StageEntry, build_source, build_stage};
use sluice_connectors::source::intercom::IntercomConfig;
use sluice_connectors::stage::classify::ClassifyConfig;
use sluice_connectors::stage::classify_llm::LlmClassifyConfig;
use sluice_connectors::stage::embed::EmbedConfig;
use sluice_connectors::stage::normalize::NormalizeConfig;
use sluice_connectors::store::sqlite::SqliteStore;
use sluice_core::{Pipeline, RunLabels, RunStatus, Settings, Start};
use sluice_testkit::intercom::IntercomTarget;
use sluice_testkit::openai::OpenAiTarget;
use sluice_testkit::{
    FakeIntercom, FakeOpenAi, IntercomConfig as FakeIntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults, Theme,
};

const PAGE_MS: u64 = 20;
const CALL_MS: u64 = 5;
const PER_PAGE: u64 = 150;
const BATCH: usize = 50;
/// The range covering the fake's 90 days before 2026-01-01.
const DATE_FROM: &str = "2025-10-01";
const DATE_TO: &str = "2025-12-31";
const START: i64 = 1_759_276_800;
const END: i64 = 1_767_225_600;

/// The parent: starts the fakes and runs one child per configuration.
pub async fn intercom(conversations: usize, concurrencies: Vec<usize>) {
    let intercom =
        FakeIntercom::start(FakeIntercomConfig::default().with_conversations(conversations).with_days(90).with_faults(
            IntercomFaults { endpoints: IntercomTarget::Search, latency_ms: PAGE_MS, ..IntercomFaults::default() },
        ))
        .await
        .expect("fake intercom");
    let openai = FakeOpenAi::start(OpenAiConfig::default().with_rpm_limit(10_000_000).with_faults(OpenAiFaults {
        endpoints: OpenAiTarget::Chat,
        latency_ms: CALL_MS,
        ..OpenAiFaults::default()
    }))
    .await
    .expect("fake openai");
    let ds = intercom.dataset();
    let in_range = ds.ids_in_range(START, END);
    let short: std::collections::BTreeSet<String> = ds.short_ids().into_iter().collect();
    let quality = in_range.iter().filter(|id| !short.contains(*id)).count() as u64;
    let pages = (in_range.len() as u64).div_ceil(PER_PAGE);
    println!(
        "{} conversations ({quality} pass the quality filter), {pages} pages of {PER_PAGE} at {PAGE_MS} ms, \
         LLM calls at {CALL_MS} ms, batches of {BATCH}, SQLite",
        in_range.len()
    );
    println!(
        "| partitions | LLM concurrency | wall s | ideal s | wall / ideal | conversations/s | peak RSS MiB | LLM calls | search requests |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &concurrency in &concurrencies {
        for partitions in [1usize, 4] {
            intercom.reset_counters();
            openai.reset_counters();
            let Some((wall, rss, stored)) = run_child(&intercom, &openai, partitions, concurrency, false).await else {
                continue;
            };
            let fetch_ideal = pages.div_ceil(partitions as u64) as f64 * PAGE_MS as f64 / 1000.0;
            let llm_ideal = quality as f64 * CALL_MS as f64 / concurrency as f64 / 1000.0;
            let ideal = fetch_ideal.max(llm_ideal);
            let llm = openai.counters();
            assert_eq!(stored, quality, "every quality conversation stored");
            println!(
                "| {partitions} | {concurrency} | {wall:.2} | {ideal:.2} (fetch {fetch_ideal:.2}, LLM {llm_ideal:.2}) | {:.2} | {:.0} | {rss:.1} | {} | {} |",
                wall / ideal,
                stored as f64 / wall,
                llm.chat_completions,
                intercom.counters().search_requests
            );
        }
    }
    intercom_with_phases(&intercom, &openai, quality).await;
}

/// Tells a child to run the later phases after classification.
const PHASES_ENV: &str = "SLUICE_BENCH_PHASES";

/// One more backfill, 4 partitions and 64 LLM calls at once, through every
/// later phase (embeddings from the fake API, rules facets, 8 themes, stories).
pub async fn intercom_with_phases(intercom: &FakeIntercom, openai: &FakeOpenAi, quality: u64) {
    openai.reset_counters();
    let Some((wall, rss, stored)) = run_child(intercom, openai, 4, 64, true).await else { return };
    assert_eq!(stored, quality, "every quality conversation stored");
    let llm = openai.counters();
    println!(
        "\nWith every later phase (4 partitions, 64 LLM calls at once): {wall:.2} s, peak RSS {rss:.1} MiB, \
         {} LLM calls, {} embedding calls",
        llm.chat_completions, llm.embedding_responses
    );
}

/// Runs one backfill in a child process against the fakes; its wall time,
/// peak RSS and stored count, or `None` (said on stderr) if it failed.
async fn run_child(
    intercom: &FakeIntercom,
    openai: &FakeOpenAi,
    partitions: usize,
    concurrency: usize,
    phases: bool,
) -> Option<(f64, f64, u64)> {
    let exe = std::env::current_exe().expect("current exe");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("intercom-child")
        .arg(partitions.to_string())
        .arg(concurrency.to_string())
        .arg(dir.path().join("bench.db"))
        .env("INTERCOM_BASE_URL", intercom.base_url())
        .env("INTERCOM_ACCESS_TOKEN", intercom.token())
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
        .env("OPENAI_API_KEY", openai.key());
    if phases {
        cmd.env(PHASES_ENV, "1");
    } else {
        cmd.env_remove(PHASES_ENV);
    }
    let out = cmd.output().await.expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed = parse_child(&text);
    if parsed.is_none() {
        eprintln!("child failed: {}\n{}", text, String::from_utf8_lossy(&out.stderr));
    }
    parsed
}

fn parse_child(text: &str) -> Option<(f64, f64, u64)> {
    let line = text.lines().find(|l| l.starts_with("RESULT "))?;
    let mut parts = line.split_whitespace().skip(1);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The child: one backfill through the library, as `sluice run` assembles it.
pub async fn child(partitions: usize, concurrency: usize, db: &Path) {
    let mut source = IntercomConfig::last_days(1);
    source.days = None;
    source.date_from = Some(DATE_FROM.into());
    source.date_to = Some(DATE_TO.into());
    source.partitions = partitions;
    let source = build_source(&SourceConfig::Intercom(source)).expect("intercom source");
    let mut categories: Vec<String> = Theme::ALL.iter().map(|t| t.category().to_string()).collect();
    categories.push("other".into());
    let mut llm = LlmClassifyConfig::new(categories);
    llm.concurrency = concurrency;
    let store = Arc::new(SqliteStore::open(db).expect("sqlite"));
    let stage = |workers, stage| build_stage(&StageEntry { workers, stage }).expect("stage");
    let mut pipeline = Pipeline::new(source, store)
        .settings(Settings {
            name: "intercom-bench".into(),
            batch_size: BATCH,
            per_document_events: false,
            partition_concurrency: partitions,
            phase: "classification".into(),
            labels: RunLabels { noun: "conversations".into(), window: None },
            ..Settings::default()
        })
        .stage(stage(1, StageConfig::Normalize(NormalizeConfig::default())))
        .stage(stage(4, StageConfig::Classify(ClassifyConfig::Llm(llm))));
    if std::env::var_os(PHASES_ENV).is_some() {
        let phases = PhasesConfig {
            embedding_generation: Some(EmbedConfig {
                provider: "openai".into(),
                model: "bench-embedding".into(),
                dimensions: 256,
                ..EmbedConfig::default()
            }),
            facet_extraction: Some(FacetConfig::default()),
            theme_extraction: Some(ThemeConfig::default()),
            story_creation: Some(StoryConfig::default()),
        };
        for phase in build_phases(&phases, true).expect("phases") {
            pipeline = pipeline.phase(phase);
        }
    }
    let started = Instant::now();
    let summary = pipeline.run(Start::New).await.expect("run");
    let wall = started.elapsed();
    if summary.status != RunStatus::Completed {
        eprintln!("run ended {}: {:?}", summary.status, summary.error);
        return;
    }
    println!("RESULT {:.3} {:.1} {}", wall.as_secs_f64(), crate::peak_rss_mib(), summary.counts.stored);
}
