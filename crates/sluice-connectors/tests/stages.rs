//! Behaviour of the basic stages: normalize, filter, classify (rules), chunk, embed.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use sluice_connectors::embedder::{Embedder, HashingEmbedder};
use sluice_connectors::stage::chunk::{ChunkBy, ChunkConfig, ChunkStage};
use sluice_connectors::stage::classify::rules::{RulesClassifier, RulesClassifyConfig};
use sluice_connectors::stage::embed::{EmbedConfig, EmbedStage};
use sluice_connectors::stage::filter::{FilterConfig, FilterStage};
use sluice_connectors::stage::normalize::{NormalizeConfig, NormalizeStage};
use sluice_core::{Chunk, Context, Document, Outcome, Record, Stage, StageCounter, StageError};

fn doc(id: &str, text: &str) -> Document {
    Document::from_record(Record::new("test", id, text))
}

async fn run(stage: &dyn Stage, docs: Vec<Document>) -> Vec<Outcome> {
    let n = docs.len();
    let ids: Vec<String> = docs.iter().map(|d| d.id().to_string()).collect();
    let outcomes = stage.process(&Context::detached(), docs).await.expect("process");
    assert_eq!(outcomes.len(), n, "one outcome per document");
    let out_ids: Vec<String> = outcomes.iter().map(|o| outcome_doc(o).id().to_string()).collect();
    assert_eq!(out_ids, ids, "outcomes in input order");
    outcomes
}

fn outcome_doc(outcome: &Outcome) -> &Document {
    match outcome {
        Outcome::Kept(doc) | Outcome::Filtered { doc, .. } | Outcome::Failed { doc, .. } => doc,
    }
}

fn kept(outcome: Outcome) -> Document {
    match outcome {
        Outcome::Kept(doc) => doc,
        other => panic!("expected kept, got {other:?}"),
    }
}

async fn run_one(stage: &dyn Stage, doc: Document) -> Outcome {
    run(stage, vec![doc]).await.pop().unwrap()
}

// ---------------------------------------------------------------- normalize

fn normalizer() -> NormalizeStage {
    NormalizeStage::new(NormalizeConfig::default()).unwrap()
}

#[tokio::test]
async fn normalize_turns_html_into_text_without_script_or_style() {
    let html = r#"<!DOCTYPE html>
<html><head><title>Ignored head</title><style>body { color: SECRET_STYLE; }</style></head>
<body>
  <script type="text/javascript">var SECRET_SCRIPT = "<p>not text</p>";</script>
  <h1>Refund   request</h1>
  <p>Hello,&nbsp;I was <b>charged</b>   twice for <a href="https://example.com/inv">invoice 42</a>.</p>
  <ul><li>first</li><li>second</li></ul>
  <noscript>fallback</noscript>
  <p>Thanks &amp; regards</p>
</body></html>"#;
    let out = kept(run_one(&normalizer(), doc("h", html)).await);
    let text = &out.record.text;
    assert!(!text.contains("SECRET_SCRIPT") && !text.contains("SECRET_STYLE"), "{text}");
    assert!(!text.contains('<') && !text.contains("&amp;") && !text.contains("&nbsp;"), "{text}");
    assert!(text.contains("Refund request"), "{text}");
    assert!(text.contains("Hello, I was charged twice for invoice 42."), "{text}");
    assert!(text.contains("Thanks & regards"), "{text}");
    assert!(!text.contains("[invoice") && !text.contains("* first") && !text.contains("**"), "no decorations: {text}");
    assert_eq!(text.trim(), text);
    assert!(!text.contains("\n\n\n") && !text.contains("  "), "{text:?}");
    // Only the text changes.
    assert_eq!(out.record.id, "h");
}

#[tokio::test]
async fn normalize_whitespace_rules_and_plain_text_fast_path() {
    let stage = normalizer();
    let docs = vec![
        doc("1", "  Hello \t\t world  \n\n\n\n\n  second   paragraph \r\n third line  "),
        doc("2", "already normal\n\nnothing to do"),
        doc("3", "a < b and c > d, 1<2"),
        doc("4", " \n\t "),
    ];
    let texts: Vec<String> = run(&stage, docs).await.into_iter().map(|o| kept(o).record.text).collect();
    assert_eq!(
        texts,
        ["Hello world\n\nsecond paragraph\nthird line", "already normal\n\nnothing to do", "a < b and c > d, 1<2", ""]
    );

    let keep_html = NormalizeStage::new(NormalizeConfig { html: false }).unwrap();
    let out = kept(run_one(&keep_html, doc("x", "<p>kept   as is</p>\n\n\n<p>x</p>")).await);
    assert_eq!(out.record.text, "<p>kept as is</p>\n\n<p>x</p>");
    let config: NormalizeConfig = serde_json::from_value(json!({})).unwrap();
    assert!(config.html);
    assert!(serde_json::from_value::<NormalizeConfig>(json!({"htm": false})).is_err());
}

#[tokio::test]
async fn normalize_survives_garbage_html() {
    let mut nasty: Vec<String> = vec![
        "<".into(),
        "<<<<>>>><<</>>".into(),
        "<p".into(),
        "</p></div></body></html>".into(),
        "<script>never closed <p>text".into(),
        "<style>never closed".into(),
        "<!-- unclosed comment <p>hi</p>".into(),
        "<![CDATA[ x ]]><?xml version='1.0'?><!DOCTYPE>".into(),
        "<a href='\u{0}'>\u{0}nul\u{0}</a>".into(),
        "&#xFFFFFFFF; &#0; &#55296; &#x110000; &bogus; &amp".into(),
        "<table><tr><td colspan=999999 rowspan=-5>x</td></tr></table>".into(),
        "<p>\u{202e}rtl \u{feff}bom \u{1F600} emoji</p>".into(),
        "<svg><foreignObject><math><mi><table><select><option>x</select></svg>".into(),
        format!("<p title=\"{}\">long attribute</p>", "x".repeat(200_000)),
        "<div>".repeat(3_000),
        "<ul><li>".repeat(1_000),
        "<table><tr><td>".repeat(200),
        "<b><i><u>".repeat(2_000) + "deep",
    ];
    // Pseudo-random tag soup.
    let mut state = 12345u64;
    for _ in 0..20 {
        let mut soup = String::new();
        for _ in 0..2_000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let pieces = ["<", ">", "/", "p", "div", "!", "--", "&", ";", "#", " ", "\n", "script", "=\"", "td", "é"];
            soup.push_str(pieces[(state >> 59) as usize % pieces.len()]);
        }
        nasty.push(soup);
    }
    let docs: Vec<Document> = nasty.iter().enumerate().map(|(i, t)| doc(&i.to_string(), t)).collect();
    let outcomes = run(&normalizer(), docs).await;
    for outcome in outcomes {
        let text = kept(outcome).record.text;
        assert_eq!(text.trim(), text);
        assert!(!text.contains("\n\n\n"));
    }
}

#[tokio::test]
async fn normalize_deep_nesting_takes_linear_time() {
    // html2text needs time quadratic in the nesting depth (minutes for these);
    // such documents are converted by stripping tags instead.
    let units = ["<div>", "<ul><li>", "<blockquote>", "<div></span>", "<font><div></font>", "<b>", "<table><tr><td>"];
    let docs: Vec<Document> =
        units.iter().enumerate().map(|(i, u)| doc(&i.to_string(), &(u.repeat(20_000) + "deep text"))).collect();
    let started = std::time::Instant::now();
    let outcomes = run(&normalizer(), docs).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    for outcome in outcomes {
        assert_eq!(kept(outcome).record.text, "deep text");
    }
}

// ---------------------------------------------------------------- filter

fn filter(config: FilterConfig) -> FilterStage {
    FilterStage::new(config).unwrap()
}

fn reason(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Filtered { reason, .. } => Some(reason),
        Outcome::Kept(_) => None,
        Outcome::Failed { error, .. } => panic!("failed: {error}"),
    }
}

#[tokio::test]
async fn filter_min_and_max_chars_count_characters() {
    let stage = filter(FilterConfig { max_chars: Some(30), ..FilterConfig::default() });
    let outcomes = run(
        &stage,
        vec![
            doc("short", "twelve chars"),
            doc("accents", &"é".repeat(19)),
            doc("exact", &"é".repeat(20)),
            doc("max", &"x".repeat(30)),
            doc("long", &"y".repeat(31)),
        ],
    )
    .await;
    let reasons: Vec<Option<&str>> = outcomes.iter().map(reason).collect();
    assert_eq!(
        reasons,
        [
            Some("too short: 12 chars < min_chars 20"),
            Some("too short: 19 chars < min_chars 20"),
            None,
            None,
            Some("too long: 31 chars > max_chars 30"),
        ]
    );
}

#[tokio::test]
async fn filter_drop_if_contains_and_require_fields() {
    let stage = filter(FilterConfig {
        min_chars: 0,
        drop_if_contains: vec!["unsubscribe".into(), "Out of Office".into()],
        require_fields: vec!["author".into()],
        ..FilterConfig::default()
    });
    let with_author =
        |id: &str, text: &str| Document::from_record(Record::new("test", id, text).with_field("author", "ann"));
    let mut null_author = doc("null", "fine text");
    null_author.record.fields.insert("author".into(), serde_json::Value::Null);
    let outcomes = run(
        &stage,
        vec![
            with_author("ok", "A perfectly fine message"),
            with_author("unsub", "click here to UNSUBSCRIBE now"),
            with_author("ooo", "I am out of office until Monday"),
            doc("no-author", "fine text"),
            null_author,
        ],
    )
    .await;
    let reasons: Vec<Option<&str>> = outcomes.iter().map(reason).collect();
    assert_eq!(
        reasons,
        [
            None,
            Some("contains \"unsubscribe\" (drop_if_contains)"),
            Some("contains \"Out of Office\" (drop_if_contains)"),
            Some("missing required field \"author\" (require_fields)"),
            Some("required field \"author\" is null (require_fields)"),
        ]
    );
}

#[test]
fn filter_config_errors() {
    let error = FilterStage::new(FilterConfig { min_chars: 50, max_chars: Some(10), ..FilterConfig::default() })
        .unwrap_err()
        .to_string();
    assert!(error.contains("filter.max_chars = 10") && error.contains("filter.min_chars = 50"), "{error}");
    let error = FilterStage::new(FilterConfig { drop_if_contains: vec!["".into()], ..FilterConfig::default() })
        .unwrap_err()
        .to_string();
    assert!(error.contains("filter.drop_if_contains"), "{error}");
    let config: FilterConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!((config.min_chars, config.max_chars), (20, None));
    assert!(serde_json::from_value::<FilterConfig>(json!({"min_char": 3})).is_err());
}

// ---------------------------------------------------------------- classify

fn classifier() -> RulesClassifier {
    let config: RulesClassifyConfig = serde_json::from_value(json!({
        "rules": [
            {"category": "billing", "keywords": ["refund", "invoice", "charge"]},
            {"category": "account", "keywords": ["login", "password"]},
            {"category": "bug", "keywords": ["crash", "error"]},
        ]
    }))
    .unwrap();
    RulesClassifier::new(config).unwrap()
}

async fn classify(stage: &RulesClassifier, text: &str) -> sluice_core::Classification {
    kept(run_one(stage, doc("c", text)).await).classification.expect("classified")
}

#[tokio::test]
async fn classify_counts_hits_case_insensitively() {
    let stage = classifier();
    assert_eq!(stage.name(), "classify");
    assert_eq!(stage.counter(), Some(StageCounter::Classified));

    let c = classify(&stage, "I need a REFUND for this Invoice, and another refund").await;
    assert_eq!(c.category, "billing");
    assert_eq!(c.confidence, 1.0);
    assert_eq!(c.reason.as_deref(), Some("matched: refund, invoice"));
    assert_eq!(c.classifier, "rules");

    let c = classify(&stage, "Login fails, password reset fails, and one refund").await;
    assert_eq!(c.category, "account");
    assert!((c.confidence - 2.0 / 3.0).abs() < 1e-6, "{}", c.confidence);
    assert_eq!(c.reason.as_deref(), Some("matched: login, password"));
}

#[tokio::test]
async fn classify_ties_go_to_the_earlier_rule() {
    let stage = classifier();
    let c = classify(&stage, "the app shows an ERROR when I open the invoice").await;
    assert_eq!(c.category, "billing", "billing is the earlier rule");
    assert_eq!(c.confidence, 0.5);
    let c = classify(&stage, "crash at login").await;
    assert_eq!(c.category, "account");
}

#[tokio::test]
async fn classify_without_hits_uses_the_default_category() {
    let c = classify(&classifier(), "what a lovely day").await;
    assert_eq!((c.category.as_str(), c.confidence), ("other", 0.0));
    let config: RulesClassifyConfig = serde_json::from_value(json!({
        "rules": [{"category": "billing", "keywords": ["refund"]}],
        "default_category": "general",
    }))
    .unwrap();
    let c = classify(&RulesClassifier::new(config).unwrap(), "nothing here").await;
    assert_eq!((c.category.as_str(), c.confidence), ("general", 0.0));
}

#[test]
fn classify_config_errors() {
    let error = RulesClassifier::new(serde_json::from_value(json!({"rules": []})).unwrap()).unwrap_err().to_string();
    assert!(error.contains("classify.rules"), "{error}");
    let error = RulesClassifier::new(
        serde_json::from_value(json!({"rules": [
            {"category": "a", "keywords": ["x"]},
            {"category": "b", "keywords": []},
        ]}))
        .unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("classify.rules[1]") && error.contains("\"b\""), "{error}");
    let error = RulesClassifier::new(
        serde_json::from_value(json!({"rules": [
            {"category": "a", "keywords": ["Refund"]},
            {"category": "b", "keywords": ["refund"]},
        ]}))
        .unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("already a keyword of rules[0]"), "{error}");
    assert!(
        serde_json::from_value::<RulesClassifyConfig>(json!({"rules": [{"category": "a", "words": ["x"]}]})).is_err()
    );
}

// ---------------------------------------------------------------- chunk

fn long_text() -> String {
    let mut text = String::new();
    for p in 0..12 {
        for s in 0..6 {
            text.push_str(&format!("Paragraph {p} sentence {s} talks about refunds, invoices and slow logins. "));
        }
        text.push_str("\n\n");
    }
    text
}

fn assert_offsets_point_at_chunks(text: &str, chunks: &[Chunk]) {
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.index as usize, i);
        assert_eq!(&text[chunk.offset..chunk.offset + chunk.text.len()], chunk.text, "chunk {i}");
        assert!(chunk.embedding.is_none());
    }
    assert!(chunks.windows(2).all(|w| w[0].offset < w[1].offset), "offsets increase");
}

#[tokio::test]
async fn chunk_by_chars_with_offsets() {
    let text = long_text();
    let stage = ChunkStage::new(ChunkConfig { size: Some(500), ..ChunkConfig::default() }).unwrap();
    let out = kept(run_one(&stage, doc("d", &text)).await);
    let chunks = &out.chunks;
    assert!(chunks.len() >= text.chars().count() / 500, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.text.chars().count() <= 500 && !c.text.is_empty()));
    assert_offsets_point_at_chunks(&text, chunks);
    // Without overlap the chunks cover the text (less whitespace) without repeating it.
    assert!(chunks.windows(2).all(|w| w[0].offset + w[0].text.len() <= w[1].offset));
    let covered: usize = chunks.iter().map(|c| c.text.len()).sum();
    assert!(covered >= text.trim().len() - chunks.len() * 2 - 24, "{covered} of {}", text.len());
    assert_eq!(out.record.text, text, "the text is not changed");
}

#[tokio::test]
async fn chunk_overlap_is_shared_between_neighbours() {
    let text = long_text();
    let stage = ChunkStage::new(ChunkConfig { size: Some(200), overlap: 80, ..ChunkConfig::default() }).unwrap();
    let chunks = kept(run_one(&stage, doc("d", &text)).await).chunks;
    assert!(chunks.len() > 5);
    assert_offsets_point_at_chunks(&text, &chunks);
    let overlapping = chunks.windows(2).filter(|w| w[1].offset < w[0].offset + w[0].text.len()).count();
    assert!(overlapping >= chunks.len() / 2, "{overlapping} of {} neighbours overlap", chunks.len() - 1);
}

#[tokio::test]
async fn chunk_by_tokens() {
    let text = long_text();
    for (tokenizer, bpe) in
        [("cl100k_base", tiktoken_rs::cl100k_base_singleton()), ("o200k_base", tiktoken_rs::o200k_base_singleton())]
    {
        let config = ChunkConfig { by: ChunkBy::Tokens, size: Some(40), overlap: 10, tokenizer: tokenizer.into() };
        let stage = ChunkStage::new(config).unwrap();
        let chunks = kept(run_one(&stage, doc("d", &text)).await).chunks;
        assert!(chunks.len() > 10, "{tokenizer}: {} chunks", chunks.len());
        assert_offsets_point_at_chunks(&text, &chunks);
        for chunk in &chunks {
            let tokens = bpe.encode_ordinary(&chunk.text).len();
            assert!(tokens <= 40, "{tokenizer}: {tokens} tokens");
        }
        // Counting chars instead would give far bigger chunks than 40 chars.
        assert!(chunks.iter().any(|c| c.text.chars().count() > 100));
    }
    let default_tokens: ChunkConfig = serde_json::from_value(json!({"by": "tokens"})).unwrap();
    assert_eq!(default_tokens.effective_size(), 256);
    let default_chars: ChunkConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(default_chars.effective_size(), 1000);
    assert_eq!(default_chars.tokenizer, "cl100k_base");
}

#[tokio::test]
async fn chunk_empty_text_gives_no_chunks_and_old_chunks_are_replaced() {
    let stage = ChunkStage::new(ChunkConfig::default()).unwrap();
    let mut stale = doc("s", "short text");
    stale.chunks = vec![Chunk { index: 0, offset: 0, text: "stale".into(), embedding: Some(vec![1.0]) }];
    let outcomes = run(&stage, vec![doc("e", ""), doc("w", "  \n "), stale]).await;
    let docs: Vec<Document> = outcomes.into_iter().map(kept).collect();
    assert!(docs[0].chunks.is_empty());
    assert!(docs[1].chunks.is_empty());
    assert_eq!(docs[2].chunks, [Chunk { index: 0, offset: 0, text: "short text".into(), embedding: None }]);
}

#[test]
fn chunk_config_errors() {
    let error = ChunkStage::new(ChunkConfig { size: Some(500), overlap: 600, ..ChunkConfig::default() })
        .unwrap_err()
        .to_string();
    assert_eq!(error, "chunk.overlap = 600 must be smaller than chunk.size = 500");
    let error =
        ChunkStage::new(ChunkConfig { by: ChunkBy::Tokens, overlap: 256, ..ChunkConfig::default() }).unwrap_err();
    assert_eq!(error.to_string(), "chunk.overlap = 256 must be smaller than chunk.size = 256");
    let error = ChunkStage::new(ChunkConfig { size: Some(0), ..ChunkConfig::default() }).unwrap_err().to_string();
    assert!(error.contains("chunk.size = 0"), "{error}");
    let error =
        ChunkStage::new(ChunkConfig { by: ChunkBy::Tokens, tokenizer: "gpt2".into(), ..ChunkConfig::default() })
            .unwrap_err()
            .to_string();
    assert!(error.contains("chunk.tokenizer = \"gpt2\"") && error.contains("o200k_base"), "{error}");
    assert!(serde_json::from_value::<ChunkConfig>(json!({"by": "words"})).is_err());
}

// ---------------------------------------------------------------- embed

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn chunked(id: &str, pieces: &[&str]) -> Document {
    let mut d = doc(id, &pieces.join(" "));
    d.chunks = pieces
        .iter()
        .enumerate()
        .map(|(i, t)| Chunk { index: i as u32, offset: 0, text: t.to_string(), embedding: None })
        .collect();
    d
}

#[tokio::test]
async fn embed_sets_chunk_or_whole_document_embeddings() {
    let stage = EmbedStage::new(EmbedConfig::default()).unwrap();
    assert_eq!(stage.name(), "embed");
    assert_eq!(stage.counter(), Some(StageCounter::Embedded));
    let outcomes = run(
        &stage,
        vec![
            chunked("chunks", &["first chunk about refunds", "second chunk about logins"]),
            doc("whole", "a document without chunks"),
            doc("empty", ""),
        ],
    )
    .await;
    let docs: Vec<Document> = outcomes.into_iter().map(kept).collect();
    assert!(docs[0].embedding.is_none());
    for chunk in &docs[0].chunks {
        let e = chunk.embedding.as_ref().expect("chunk embedded");
        assert_eq!(e.len(), 256);
        assert!((norm(e) - 1.0).abs() < 1e-5);
    }
    assert_ne!(docs[0].chunks[0].embedding, docs[0].chunks[1].embedding);
    let whole = docs[1].embedding.as_ref().expect("whole document embedded");
    assert_eq!(whole.len(), 256);
    assert!((norm(whole) - 1.0).abs() < 1e-5);
    assert!(docs[1].chunks.is_empty());
    assert!(docs[2].embedding.is_none(), "an empty text is not embedded");

    // The whole-document vector is the embedder's vector of the text.
    let direct = HashingEmbedder::new(256).unwrap().embed_one("a document without chunks");
    assert_eq!(whole, &direct);
}

#[tokio::test]
async fn embed_is_deterministic_and_dimensions_follow_config() {
    let config = EmbedConfig { dimensions: 64, ..EmbedConfig::default() };
    let a = kept(run_one(&EmbedStage::new(config.clone()).unwrap(), doc("x", "Refund my invoice please")).await);
    let b = kept(run_one(&EmbedStage::new(config).unwrap(), doc("x", "Refund my invoice please")).await);
    assert_eq!(a.embedding.as_ref().unwrap().len(), 64);
    assert_eq!(a.embedding, b.embedding);

    // Pinned values (computed independently): a change of hashing, tokenizing or
    // weighting would silently break the reuse of stored vectors.
    let e = HashingEmbedder::new(16).unwrap();
    let v = e.embed_one("Refund my invoice, please!");
    let (a, b, c) = (0.417_028_8_f32, 0.625_543_2_f32, 0.208_514_4_f32);
    let expected = [-a, 0.0, -a, 0.0, b, 0.0, 0.0, 0.0, 0.0, 0.0, a, -c, 0.0, c, 0.0, 0.0];
    for (i, (x, y)) in v.iter().zip(expected).enumerate() {
        assert!((x - y).abs() < 1e-6, "dimension {i}: {x} != {y}");
    }
    assert_eq!(e.embed_one("REFUND  my\tinvoice please"), v);
    assert_eq!(e.fingerprint(), "hashing/fnv1a-uni-bigram-v1/16");
    let zero = e.embed_one("  ...  ");
    assert!(zero.iter().all(|x| *x == 0.0), "no tokens: the zero vector, no NaN");
}

#[tokio::test]
async fn embed_similar_texts_are_closer_than_unrelated_ones() {
    let e = HashingEmbedder::new(256).unwrap();
    let a = e.embed_one("I was charged twice and need a refund for my invoice");
    let b = e.embed_one("charged twice, please refund the invoice");
    let c = e.embed_one("the mobile app crashes when I open the settings screen");
    let (ab, ac) = (cosine(&a, &b), cosine(&a, &c));
    assert!(ab > 0.4, "{ab}");
    assert!(ab > ac + 0.3, "similar {ab} vs unrelated {ac}");
    assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
}

/// Records the size of every call; fails calls that contain a text with "FAIL".
struct Recording {
    inner: HashingEmbedder,
    calls: Mutex<Vec<usize>>,
    retryable: bool,
}

#[async_trait]
impl Embedder for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn fingerprint(&self) -> String {
        "recording".into()
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        self.calls.lock().unwrap().push(texts.len());
        if texts.iter().any(|t| t.contains("FAIL")) {
            let error = if self.retryable {
                StageError::retryable("http_429", "rate limited")
            } else {
                StageError::permanent("http_400", "bad input")
            };
            return Err(error);
        }
        self.inner.embed(texts).await
    }
}

fn recording(retryable: bool) -> Arc<Recording> {
    Arc::new(Recording { inner: HashingEmbedder::new(16).unwrap(), calls: Mutex::new(Vec::new()), retryable })
}

#[tokio::test]
async fn embed_batches_texts_across_documents() {
    let embedder = recording(false);
    let stage = EmbedStage::with_embedder(embedder.clone(), 8).unwrap();
    let docs: Vec<Document> = (0..10).map(|i| chunked(&i.to_string(), &["one", "two", "three"])).collect();
    let outcomes = run(&stage, docs).await;
    assert_eq!(*embedder.calls.lock().unwrap(), [8, 8, 8, 6]);
    for outcome in outcomes {
        assert!(kept(outcome).chunks.iter().all(|c| c.embedding.as_ref().is_some_and(|e| e.len() == 16)));
    }
}

#[tokio::test]
async fn embed_failed_call_fails_only_its_documents() {
    for retryable in [true, false] {
        let embedder = recording(retryable);
        let stage = EmbedStage::with_embedder(embedder.clone(), 2).unwrap();
        // Calls: [a, b] ok; [c1, c2 FAIL] fails c; [d, e] ok.
        let outcomes = run(
            &stage,
            vec![
                doc("a", "alpha"),
                doc("b", "beta"),
                chunked("c", &["gamma", "FAIL here"]),
                doc("d", "delta"),
                doc("e", "epsilon"),
            ],
        )
        .await;
        assert_eq!(*embedder.calls.lock().unwrap(), [2, 2, 2]);
        let states: Vec<&str> = outcomes
            .iter()
            .map(|o| match o {
                Outcome::Kept(d) => {
                    assert!(d.embedding.is_some());
                    "kept"
                }
                Outcome::Failed { error, doc } => {
                    assert_eq!(error.retryable, retryable);
                    assert!(doc.chunks.iter().all(|c| c.embedding.is_none()));
                    "failed"
                }
                Outcome::Filtered { .. } => "filtered",
            })
            .collect();
        assert_eq!(states, ["kept", "kept", "failed", "kept", "kept"]);
    }
}

#[test]
fn embed_config_errors() {
    let error =
        EmbedStage::new(EmbedConfig { provider: "magic".into(), ..EmbedConfig::default() }).unwrap_err().to_string();
    assert!(error.contains("embed.provider = \"magic\"") && error.contains("hashing, openai"), "{error}");
    let error = EmbedStage::new(EmbedConfig { dimensions: 4, ..EmbedConfig::default() }).unwrap_err().to_string();
    assert!(error.contains("embed.dimensions = 4") && error.contains("8..=4096"), "{error}");
    let error = EmbedStage::new(EmbedConfig { batch_size: 0, ..EmbedConfig::default() }).unwrap_err().to_string();
    assert!(error.contains("embed.batch_size = 0"), "{error}");
    let config: EmbedConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!((config.provider.as_str(), config.dimensions, config.batch_size), ("hashing", 256, 32));
    assert!(serde_json::from_value::<EmbedConfig>(json!({"modle": "x"})).is_err());
}

#[test]
fn embed_concurrency_defaults_to_4_and_is_range_checked() {
    let config: EmbedConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(config.concurrency, 4);
    for bad in [0, 257] {
        let error =
            EmbedStage::new(EmbedConfig { concurrency: bad, ..EmbedConfig::default() }).unwrap_err().to_string();
        assert!(error.contains(&format!("embed.concurrency = {bad}")) && error.contains("1..=256"), "{error}");
        let error = EmbedStage::with_embedder(recording(false), 8).unwrap().with_concurrency(bad).unwrap_err();
        assert!(error.to_string().contains("embed.concurrency"), "{error}");
    }
    assert!(EmbedStage::new(EmbedConfig { concurrency: 256, ..EmbedConfig::default() }).is_ok());
}

// ---------------------------------------------------------------- together

#[tokio::test]
async fn generated_records_exercise_the_stages() {
    use sluice_connectors::source::generate::{GenerateConfig, GenerateSource};

    let mut config = GenerateConfig::new(400);
    config.html_every = 4;
    config.short_every = 10;
    let source = GenerateSource::new(config).unwrap();
    let docs: Vec<Document> = (0..400).map(|i| Document::from_record(source.record(i))).collect();

    let normalized: Vec<Document> = run(&normalizer(), docs).await.into_iter().map(kept).collect();
    for (i, d) in normalized.iter().enumerate() {
        assert!(!d.record.text.contains('<') && !d.record.text.contains("analytics"), "{i}: {}", d.record.text);
        if (i + 1) % 4 == 0 && (i + 1) % 10 != 0 {
            // The <h1> title and the paragraph survive.
            assert!(d.record.text.starts_with(d.record.fields["title"].as_str().unwrap()), "{}", d.record.text);
        }
    }

    let outcomes = run(&FilterStage::new(FilterConfig::default()).unwrap(), normalized).await;
    let filtered: Vec<usize> =
        outcomes.iter().enumerate().filter(|(_, o)| matches!(o, Outcome::Filtered { .. })).map(|(i, _)| i).collect();
    assert_eq!(filtered, (0..400).filter(|i| (i + 1) % 10 == 0).collect::<Vec<_>>());

    let survivors: Vec<Document> =
        outcomes.into_iter().filter_map(|o| if let Outcome::Kept(d) = o { Some(d) } else { None }).collect();
    let config: RulesClassifyConfig = serde_json::from_value(json!({"rules": [
        {"category": "billing", "keywords": ["refund", "invoice", "billing"]},
        {"category": "account", "keywords": ["login", "password"]},
        {"category": "bug", "keywords": ["crash", "error", "bug"]},
        {"category": "feature", "keywords": ["feature"]},
        {"category": "performance", "keywords": ["slow"]},
    ]}))
    .unwrap();
    let classified: Vec<Document> =
        run(&RulesClassifier::new(config).unwrap(), survivors).await.into_iter().map(kept).collect();
    let mut counts = std::collections::BTreeMap::new();
    for d in &classified {
        *counts.entry(d.classification.as_ref().unwrap().category.clone()).or_insert(0) += 1;
    }
    for category in ["billing", "account", "bug", "feature", "performance", "other"] {
        assert!(counts.get(category).copied().unwrap_or(0) >= 10, "{counts:?}");
    }
}
