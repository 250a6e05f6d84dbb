//! The LLM classifier and the OpenAI embedder against the fake
//! OpenAI-compatible API over real HTTP: answers, usage, retries, parse
//! failures, a refused key, and the content-hash memo through the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_connectors::embedder::OpenAiEmbedder;
use sluice_connectors::remote::openai::{OpenAiApi, UNAUTHORIZED};
use sluice_connectors::stage::classify::llm::{LlmClassifier, LlmClassifyConfig, user_message};
use sluice_connectors::stage::embed::{EmbedConfig, EmbedStage};
use sluice_connectors::store::sqlite::SqliteStore;
use sluice_connectors::util::secret::Secret;
use sluice_core::{
    Context, Document, Event, EventKind, EventSink, Outcome, Page, Pipeline, Record, RunStatus, Settings, Source,
    SourceError, SourceItem, Stage, StageSpec, Start,
};
use sluice_testkit::intercom::{Dataset, DatasetSpec};
use sluice_testkit::openai::model;
use sluice_testkit::{DropMode, FakeOpenAi, FaultKind, OpenAiConfig, OpenAiFaults, Theme};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn categories() -> Vec<String> {
    let mut c: Vec<String> = Theme::ALL.iter().map(|t| t.category().to_string()).collect();
    c.push("other".into());
    c
}

async fn fake(faults: OpenAiFaults) -> FakeOpenAi {
    FakeOpenAi::start(OpenAiConfig::default().with_faults(faults)).await.expect("fake openai starts")
}

fn api(fake: &FakeOpenAi, key: &str) -> OpenAiApi {
    OpenAiApi::new(
        format!("{}/v1", fake.base_url()),
        Secret::new(key),
        "OPENAI_API_KEY".into(),
        Duration::from_secs(10),
    )
    .unwrap()
}

fn classifier(fake: &FakeOpenAi, edit: impl FnOnce(&mut LlmClassifyConfig)) -> LlmClassifier {
    let mut config = LlmClassifyConfig::new(categories());
    config.model = "test-model".into();
    edit(&mut config);
    LlmClassifier::with_api(config, api(fake, fake.key())).expect("valid classifier")
}

/// Quality conversations of the fake Intercom workspace, as plain-text records.
fn records(n: usize) -> Vec<Record> {
    let ds = Dataset::generate(&DatasetSpec { conversations: n * 2, ..DatasetSpec::default() });
    ds.all()
        .iter()
        .filter(|c| !c.is_short())
        .take(n)
        .map(|c| Record::new("intercom", c.id.clone(), c.body_text()).with_field("subject", c.subject.clone()))
        .collect()
}

fn docs(n: usize) -> Vec<Document> {
    records(n).into_iter().map(Document::from_record).collect()
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

fn state_changes(rx: &mut mpsc::Receiver<Event>) -> Vec<(String, String)> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|e| match e.kind {
            EventKind::AdapterStateChange { adapter, new_state, .. } => Some((adapter, new_state)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn classifies_with_the_model_records_usage_and_bounds_concurrency() {
    let fake = fake(OpenAiFaults { latency_ms: 40, ..OpenAiFaults::default() }).await;
    let stage = classifier(&fake, |c| c.concurrency = 4);
    let input = docs(24);
    let ctx = Context::detached();
    let started = Instant::now();
    let outcomes = stage.process(&ctx, input.clone()).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(6 * 40), "24 calls, 4 at a time, 40 ms each: {elapsed:?}");
    let cats = categories();
    for (outcome, doc) in outcomes.iter().zip(&input) {
        let Outcome::Kept(kept) = outcome else { panic!("{outcome:?}") };
        let c = kept.classification.as_ref().expect("classified");
        let expected = model::classify(Some(&cats), &user_message(doc, 12_000));
        assert_eq!(c.category, expected.category, "{}", doc.record.text);
        assert_eq!(c.classifier, "llm:test-model");
        assert!(c.reason.is_some() && (0.0..=1.0).contains(&c.confidence));
    }
    let themed = outcomes
        .iter()
        .zip(&input)
        .filter(|(o, d)| {
            let Outcome::Kept(k) = o else { return false };
            model::theme_of_text(&d.record.text).map(Theme::category)
                == Some(k.classification.as_ref().unwrap().category.as_str())
        })
        .count();
    assert!(themed >= 20, "the fake model recognises most themes ({themed}/24)");
    let usage = ctx.usage.snapshot();
    let counters = fake.counters();
    assert_eq!((usage.llm_calls, counters.chat_completions), (24, 24));
    assert_eq!(usage.tokens_in, counters.prompt_tokens);
    assert_eq!(usage.tokens_out, counters.completion_tokens);
    assert_eq!(counters.max_chat_repeats, 1);
    assert_eq!(counters.chat_modes.get("classify").copied(), Some(24));
}

#[tokio::test]
async fn json_object_mode_works_too() {
    let fake = fake(OpenAiFaults::default()).await;
    let stage = classifier(&fake, |c| c.response_format = "json_object".into());
    let outcomes = stage.process(&Context::detached(), docs(5)).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Kept(d) if d.classification.is_some())));
    assert_eq!(fake.counters().bad_requests, 0);
}

#[tokio::test]
async fn unparseable_answers_fail_the_record_after_parse_attempts() {
    let fake = fake(OpenAiFaults { malformed_every: Some(1), ..OpenAiFaults::default() }).await;
    let stage = classifier(&fake, |c| c.parse_attempts = 3);
    let ctx = Context::detached();
    let outcomes = stage.process(&ctx, docs(2)).await.unwrap();
    for outcome in &outcomes {
        let Outcome::Failed { error, doc } = outcome else { panic!("{outcome:?}") };
        assert_eq!(error.error_type, "parse", "{error:?}");
        assert!(!error.retryable, "a model that cannot answer is not retried by the engine");
        assert!(doc.classification.is_none());
    }
    assert_eq!(fake.counters().chat_completions, 6, "three tries per record");
    assert_eq!(ctx.usage.snapshot().llm_calls, 6, "unusable answers were paid for");

    // A usable answer on the second try is enough.
    fake.set_faults(OpenAiFaults { script: vec![FaultKind::Malformed], ..OpenAiFaults::default() });
    let outcomes = stage.process(&ctx, docs(1)).await.unwrap();
    assert!(matches!(&outcomes[0], Outcome::Kept(_)), "{outcomes:?}");
}

#[tokio::test]
async fn rate_limits_server_errors_and_drops_are_retried_inside_the_stage() {
    let fake = fake(OpenAiFaults {
        script: vec![FaultKind::RateLimit, FaultKind::ServerError, FaultKind::Drop],
        drop_mode: DropMode::BeforeHeaders,
        retry_after_secs: 1,
        ..OpenAiFaults::default()
    })
    .await;
    let stage = classifier(&fake, |c| c.concurrency = 1);
    let (ctx, mut rx) = events_ctx();
    let started = Instant::now();
    let outcomes = stage.process(&ctx, docs(1)).await.unwrap();
    assert!(matches!(&outcomes[0], Outcome::Kept(d) if d.classification.is_some()), "{outcomes:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "retry-after of the 429 was honoured");
    let counters = fake.counters();
    assert_eq!((counters.chat_requests, counters.chat_completions), (4, 1));
    assert_eq!(ctx.usage.snapshot().llm_calls, 1, "failed calls are not paid");
    let changes = state_changes(&mut rx);
    assert_eq!(changes.iter().filter(|(a, s)| a == "classify" && s == "backing_off").count(), 3, "{changes:?}");

    // Still failing after max_attempts: the record fails as retryable, for the engine to try later.
    fake.set_faults(OpenAiFaults { fail_every: Some(1), ..OpenAiFaults::default() });
    let stage = classifier(&fake, |c| c.endpoint.max_attempts = 2);
    let outcomes = stage.process(&Context::detached(), docs(1)).await.unwrap();
    assert!(matches!(&outcomes[0], Outcome::Failed { error, .. } if error.retryable && error.error_type == "http_500"));
}

#[tokio::test]
async fn a_refused_key_fails_the_whole_batch_without_printing_it() {
    let fake = fake(OpenAiFaults::default()).await;
    let stage =
        LlmClassifier::with_api(LlmClassifyConfig::new(categories()), api(&fake, "sk-wrong-secret-key")).unwrap();
    let err = stage.process(&Context::detached(), docs(3)).await.unwrap_err();
    assert_eq!(err.error_type, UNAUTHORIZED);
    assert!(err.message.contains("OPENAI_API_KEY") && err.message.contains("401"), "{}", err.message);
    assert!(!err.message.contains("secret") && !format!("{stage:?}").contains("secret"), "{}", err.message);
}

#[test]
fn fingerprint_changes_with_model_prompt_and_categories() {
    let api =
        OpenAiApi::new("http://127.0.0.1:9/v1".into(), Secret::new("k"), "k".into(), Duration::from_secs(1)).unwrap();
    let make = |edit: &dyn Fn(&mut LlmClassifyConfig)| {
        let mut c = LlmClassifyConfig::new(categories());
        edit(&mut c);
        LlmClassifier::with_api(c, api.clone()).unwrap().memo().map(|m| m.fingerprint()).unwrap()
    };
    let base = make(&|_| {});
    assert_eq!(base, make(&|_| {}), "stable");
    assert_eq!(base, make(&|c| c.concurrency = 3), "scheduling does not change answers");
    assert!(base.starts_with("llm:gpt-4o-mini:"), "{base}");
    for changed in [
        make(&|c| c.model = "gpt-4.1".into()),
        make(&|c| c.prompt = Some("Classify tickets.".into())),
        make(&|c| c.categories.push("spam".into())),
        make(&|c| c.response_format = "json_object".into()),
    ] {
        assert_ne!(changed, base);
    }
}

#[test]
fn bad_settings_are_refused_with_key_and_value() {
    let api =
        OpenAiApi::new("http://127.0.0.1:9/v1".into(), Secret::new("k"), "k".into(), Duration::from_secs(1)).unwrap();
    for (edit, needle) in [
        (
            Box::new(|c: &mut LlmClassifyConfig| c.categories = vec!["a".into()])
                as Box<dyn Fn(&mut LlmClassifyConfig)>,
            "at least two",
        ),
        (Box::new(|c: &mut LlmClassifyConfig| c.categories = vec!["a".into(), "A".into()]), "twice"),
        (Box::new(|c: &mut LlmClassifyConfig| c.concurrency = 0), "classify.concurrency = 0"),
        (Box::new(|c: &mut LlmClassifyConfig| c.response_format = "xml".into()), "classify.response_format = \"xml\""),
        (Box::new(|c: &mut LlmClassifyConfig| c.temperature = 3.0), "classify.temperature = 3"),
    ] {
        let mut c = LlmClassifyConfig::new(categories());
        edit(&mut c);
        let err = LlmClassifier::with_api(c, api.clone()).unwrap_err().to_string();
        assert!(err.contains(needle), "{err} should contain {needle}");
    }
}

/// A source of fixed records, one page.
struct Fixed(Vec<Record>);

#[async_trait]
impl Source for Fixed {
    fn name(&self) -> &str {
        "intercom"
    }
    async fn fetch(&self, _ctx: &Context, _partition: &str, _cursor: Option<&str>) -> Result<Page, SourceError> {
        Ok(Page { items: self.0.iter().cloned().map(SourceItem::Record).collect(), next: None, dropped: 0 })
    }
}

async fn run(store: &Arc<SqliteStore>, records: &[Record], stage: Arc<dyn Stage>) -> sluice_core::RunSummary {
    let summary = Pipeline::new(Arc::new(Fixed(records.to_vec())), store.clone())
        .settings(Settings { batch_size: 10, name: "memo".into(), ..Settings::default() })
        .stage(StageSpec::new(stage))
        .run(Start::New)
        .await
        .unwrap();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    summary
}

#[tokio::test]
async fn unchanged_content_is_not_classified_again_until_the_fingerprint_changes() {
    let fake = fake(OpenAiFaults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("memo.db")).unwrap());
    let input = records(20);

    let first = run(&store, &input, Arc::new(classifier(&fake, |_| {}))).await;
    assert_eq!((first.counts.classified, first.counts.skipped_unchanged), (20, 0));
    assert_eq!(first.checkpoint.cost.llm_calls, 20);
    assert_eq!(fake.counters().chat_completions, 20);

    // A re-run with a fresh stage (a new process): every stored conversation
    // is unchanged, so it is skipped before the stage (one call saved each).
    let again = run(&store, &input, Arc::new(classifier(&fake, |_| {}))).await;
    assert_eq!((again.counts.classified, again.counts.skipped_unchanged, again.counts.unchanged), (0, 20, 20));
    assert_eq!(again.checkpoint.cost.llm_calls, 0);
    assert_eq!(fake.counters().chat_completions, 20, "no call for unchanged conversations");

    // One conversation changed: only it is asked again.
    let mut changed = input.clone();
    changed[3].text.push_str(" Also, the invoice is wrong.");
    run(&store, &changed, Arc::new(classifier(&fake, |_| {}))).await;
    assert_eq!(fake.counters().chat_completions, 21);

    // A new prompt: everything is classified again.
    let reprompted = run(&store, &changed, Arc::new(classifier(&fake, |c| c.prompt = Some("Be terse.".into())))).await;
    assert_eq!((reprompted.counts.skipped_unchanged, reprompted.checkpoint.cost.llm_calls), (0, 20));
    assert_eq!(fake.counters().chat_completions, 41);
    assert_eq!(fake.counters().max_chat_repeats, 2, "each text: once, then once more under the new prompt");
}

#[tokio::test]
async fn openai_embeddings_batch_record_usage_retry_and_are_remembered() {
    let fake = fake(OpenAiFaults { script: vec![FaultKind::RateLimit], ..OpenAiFaults::default() }).await;
    let embedder =
        Arc::new(OpenAiEmbedder::new(api(&fake, fake.key()), "text-embedding-3-small", 64, true, 4).unwrap());
    let stage = EmbedStage::with_embedder(embedder.clone(), 8).unwrap();
    assert!(
        stage.memo().is_some_and(|m| m.fingerprint().contains("text-embedding-3-small")),
        "a paid embedder is remembered"
    );
    let mut input = docs(20);
    input[5].record.text = "   ".into();
    let (ctx, mut rx) = events_ctx();
    let outcomes = stage.process(&ctx, input).await.unwrap();
    for (i, outcome) in outcomes.iter().enumerate() {
        let Outcome::Kept(doc) = outcome else { panic!("{outcome:?}") };
        if i == 5 {
            assert!(doc.embedding.is_none(), "an empty text is not embedded");
        } else {
            let e = doc.embedding.as_ref().expect("embedded");
            assert_eq!(e.len(), 64);
            assert_eq!(e, &model::embed(&doc.record.text, 64), "the fake's vector for the text");
        }
    }
    let counters = fake.counters();
    assert_eq!((counters.embedding_responses, counters.embedded_inputs), (3, 19), "19 texts in calls of 8");
    let usage = ctx.usage.snapshot();
    assert_eq!((usage.embedding_calls, usage.tokens_in), (3, counters.prompt_tokens));
    assert!(state_changes(&mut rx).iter().any(|(a, s)| a == "embed" && s == "backing_off"));

    // Through the engine: a second run embeds nothing.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("e.db")).unwrap());
    let input = records(12);
    let stage = Arc::new(EmbedStage::with_embedder(embedder.clone(), 8).unwrap());
    let first = run(&store, &input, stage.clone()).await;
    assert_eq!((first.counts.embedded, first.checkpoint.cost.embedding_calls), (12, 3), "batches of 10: 8+2, then 2");
    let before = fake.counters().embedding_responses;
    let second = run(&store, &input, stage).await;
    // Stored unchanged: skipped before the stage, one embed stage saved per document.
    assert_eq!((second.counts.embedded, second.counts.unchanged), (0, second.counts.skipped_unchanged));
    assert!(second.counts.unchanged > 0);
    assert_eq!(fake.counters().embedding_responses, before, "no embedding call for unchanged content");

    // A refused key fails the batch.
    let bad = OpenAiEmbedder::new(api(&fake, "sk-nope-secret"), "text-embedding-3-small", 64, true, 2).unwrap();
    let err = EmbedStage::with_embedder(Arc::new(bad), 8).unwrap().process(&Context::detached(), docs(2)).await;
    assert!(matches!(&err, Err(e) if e.error_type == UNAUTHORIZED && !e.message.contains("secret")), "{err:?}");
}

#[tokio::test]
async fn a_server_refusing_base64_is_asked_for_floats_once_and_from_then_on() {
    // The default fake answers base64 (what the embedder asks for); this one knows only floats.
    let fake = fake(OpenAiFaults { refuse_base64: true, ..OpenAiFaults::default() }).await;
    let embedder =
        Arc::new(OpenAiEmbedder::new(api(&fake, fake.key()), "text-embedding-3-small", 64, true, 2).unwrap());
    let stage = EmbedStage::with_embedder(embedder, 4).unwrap().with_concurrency(1).unwrap();
    let outcomes = stage.process(&Context::detached(), docs(8)).await.unwrap();
    for outcome in &outcomes {
        let Outcome::Kept(doc) = outcome else { panic!("{outcome:?}") };
        assert_eq!(doc.embedding.as_ref(), Some(&model::embed(&doc.record.text, 64)), "the same vectors as floats");
    }
    let counters = fake.counters();
    assert_eq!(
        (counters.embedding_requests, counters.bad_requests, counters.embedding_responses),
        (3, 1, 2),
        "one refusal, then both calls of 4 as floats"
    );
}

#[tokio::test]
async fn embed_concurrency_bounds_the_calls_in_flight_over_all_batches() {
    // Slow answers keep calls open, so the fake sees how many overlap.
    let fake = fake(OpenAiFaults { latency_ms: 200, ..OpenAiFaults::default() }).await;
    let config: EmbedConfig = serde_json::from_value(serde_json::json!({
        "provider": "openai",
        "base_url": format!("{}/v1", fake.base_url()),
        "api_key": fake.key(),
        "dimensions": 64,
        "batch_size": 1,
        "concurrency": 3,
    }))
    .unwrap();
    let stage = EmbedStage::new(config).unwrap();
    // Two batches at once, as two workers would: 6 calls each could be asked for, 3 may be in flight.
    let input = docs(12);
    let (a, b) = input.split_at(6);
    let ctx = Context::detached();
    let (first, second) = tokio::join!(stage.process(&ctx, a.to_vec()), stage.process(&ctx, b.to_vec()));
    for outcome in first.unwrap().iter().chain(&second.unwrap()) {
        assert!(matches!(outcome, Outcome::Kept(d) if d.embedding.is_some()), "{outcome:?}");
    }
    let counters = fake.counters();
    assert_eq!(counters.embedding_responses, 12, "one call per text");
    assert_eq!(counters.max_in_flight, 3, "concurrency is reached and never exceeded, over both batches");

    // Alone, one batch with `concurrency = 1` makes its calls one after another.
    fake.reset_counters();
    let embedder =
        Arc::new(OpenAiEmbedder::new(api(&fake, fake.key()), "text-embedding-3-small", 64, true, 2).unwrap());
    let stage = EmbedStage::with_embedder(embedder, 1).unwrap().with_concurrency(1).unwrap();
    let outcomes = stage.process(&ctx, docs(3)).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Kept(_))));
    assert_eq!((fake.counters().embedding_responses, fake.counters().max_in_flight), (3, 1));
}
