//! Embedding: vectors for every chunk, or for the whole text of a document
//! that has no chunks, computed in batches across the documents of a batch.
//!
//! With a paid embedder (`provider = "openai"`) the stage remembers the
//! vectors of each document with its content hash (the engine's memo), so
//! unchanged content is not embedded again after a crash, a cursor fallback
//! or a re-run; each document's vectors go to the run's write-ahead as soon
//! as its last call is answered, so a crash re-pays only unanswered calls.
//! The fingerprint is the embedder's (provider, model, dimensions); a
//! remembered result is only put back when the document's chunks are the
//! same texts as when it was made.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_core::{Context, Document, Memo, Outcome, Stage, StageCounter, StageError, hand_over};
use tokio::sync::Semaphore;

use crate::ConfigError;
use crate::embedder::{Embedder, HashingEmbedder};
use crate::remote::endpoint::{OpenAiEndpoint, UNAUTHORIZED};
use crate::util::hash::fnv_hex;
use crate::util::validate::check_range;

/// The most calls `concurrency` may allow at once.
const MAX_CONCURRENCY: usize = 256;

/// Providers `provider` accepts.
pub const PROVIDERS: [&str; 3] = ["hashing", "openai", "minilm"];

fn default_provider() -> String {
    "hashing".to_string()
}

fn default_dimensions() -> usize {
    256
}

fn default_batch_size() -> usize {
    32
}

fn default_concurrency() -> usize {
    4
}

fn default_model() -> String {
    "text-embedding-3-small".to_string()
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `[[stages]] kind = "embed"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// `hashing` (offline, default), `openai` (any OpenAI-compatible
    /// `/embeddings`) or `minilm` (a local BERT sentence encoder such as
    /// all-MiniLM-L6-v2; needs the `minilm` cargo feature).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// `minilm`: the directory holding `model.safetensors`, `config.json` and `tokenizer.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_dir: Option<std::path::PathBuf>,
    /// Length of the vectors (8..=4096). For `openai`, sent as the request's
    /// `dimensions` (unless `send_dimensions = false`) and checked on the answer.
    #[serde(default = "default_dimensions")]
    pub dimensions: usize,
    /// Texts per embedder call (1..=2048); `EMBEDDING_BATCH_SIZE` overrides it.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Embedder calls in flight at once over all batches the stage works on
    /// (1..=256). Default 4. The stage works on at least
    /// [`EmbedStage::MIN_WORKERS`] batches at once, so that these calls
    /// overlap across batches instead of idling at the end of each.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// `openai`: the model. Default `text-embedding-3-small`.
    #[serde(default = "default_model")]
    pub model: String,
    /// `openai`: where the API is, its key, tries per call and time-out
    /// (`base_url`, `api_key_env`, `api_key`, `max_attempts`, `timeout_secs`).
    #[serde(flatten)]
    pub endpoint: OpenAiEndpoint,
    /// `openai`: send `dimensions` with each request (default true; set false
    /// for models or servers that refuse it, and set `dimensions` to the
    /// model's own size).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub send_dimensions: bool,
    /// `openai`: each input is cut to this many tokens before it is sent
    /// (counted with cl100k_base, as OpenAI's embedding models count), so
    /// that no input is over the model's context. Default: 8191 for
    /// text-embedding-3-small/-large and text-embedding-ada-002, no cut for
    /// other models; 0 never cuts. An input the API still refuses fails alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<usize>,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self {
            provider: default_provider(),
            model_dir: None,
            dimensions: default_dimensions(),
            batch_size: default_batch_size(),
            concurrency: default_concurrency(),
            model: default_model(),
            endpoint: OpenAiEndpoint::default(),
            send_dimensions: true,
            max_input_tokens: None,
        }
    }
}

/// Sets `chunk.embedding` on every chunk, and `doc.embedding` on documents
/// without chunks (from the whole text; not for an empty text). A failed call
/// fails the documents whose texts were in it, with the embedder's error; a
/// call the provider refused for some of its texts ([`Embedder::splits_on`])
/// is split in halves until only the documents of the refused texts fail.
/// At most `concurrency` calls are in flight at once, over every batch (and
/// worker) the stage serves: the permits are shared, clones included.
#[derive(Clone)]
pub struct EmbedStage {
    embedder: Arc<dyn Embedder>,
    batch_size: usize,
    concurrency: usize,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for EmbedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedStage")
            .field("embedder", &self.embedder.fingerprint())
            .field("batch_size", &self.batch_size)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

impl EmbedStage {
    /// Batches the stage works on at once at least (its `workers` in a
    /// pipeline file, and in the embedding phase): with one, the slots a
    /// batch's last calls leave free stay idle until the next batch starts;
    /// with more, the next batches' calls take them. Four rather than two
    /// because a finished batch's worker waits for the stage before it to
    /// hand over another: measured with 20 ms calls, 4 at once, two left
    /// 1.33x the latency bound and four 1.21x (BENCHMARKS.md). `concurrency`
    /// still bounds the calls, so this costs batches in memory, not requests.
    pub const MIN_WORKERS: usize = 4;

    pub fn new(config: EmbedConfig) -> Result<Self, ConfigError> {
        check_range("embed.dimensions", config.dimensions, 8, 4096)?;
        check_range("embed.batch_size", config.batch_size, 1, 2048)?;
        check_range("embed.concurrency", config.concurrency, 1, MAX_CONCURRENCY)?;
        let embedder: Arc<dyn Embedder> = match config.provider.as_str() {
            "hashing" => Arc::new(HashingEmbedder::new(config.dimensions)?),
            "openai" => openai_embedder(&config)?,
            "minilm" => minilm_embedder(&config)?,
            other => {
                return Err(ConfigError(format!(
                    "embed.provider = {other:?} is not supported (allowed: {})",
                    PROVIDERS.join(", ")
                )));
            }
        };
        Self::with_embedder(embedder, config.batch_size)?.with_concurrency(config.concurrency)
    }

    /// A stage over any embedder (other providers, tests), with the default `concurrency`.
    pub fn with_embedder(embedder: Arc<dyn Embedder>, batch_size: usize) -> Result<Self, ConfigError> {
        check_range("embed.batch_size", batch_size, 1, 2048)?;
        let concurrency = default_concurrency();
        Ok(Self { embedder, batch_size, concurrency, permits: Arc::new(Semaphore::new(concurrency)) })
    }

    /// The same stage with `concurrency` calls in flight at most (1..=256).
    pub fn with_concurrency(mut self, concurrency: usize) -> Result<Self, ConfigError> {
        check_range("embed.concurrency", concurrency, 1, MAX_CONCURRENCY)?;
        self.concurrency = concurrency;
        self.permits = Arc::new(Semaphore::new(concurrency));
        Ok(self)
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// One embedder call, holding one of the stage's permits while it runs.
    async fn call(&self, ctx: &Context, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        let _permit = self.permits.acquire().await.map_err(|_| StageError::permanent("closed", "stage is closed"))?;
        let vectors = self.embedder.embed_with(ctx, texts).await?;
        if vectors.len() != texts.len() {
            return Err(StageError::permanent(
                "embedding",
                format!(
                    "embedder {} returned {} vectors for {} texts",
                    self.embedder.name(),
                    vectors.len(),
                    texts.len()
                ),
            ));
        }
        Ok(vectors)
    }

    /// One call, or, when the provider refuses it for some of its texts, its
    /// halves, theirs, and so on down to single texts: one refused text costs
    /// only itself (and about log2(batch_size) more calls).
    async fn call_or_split(&self, ctx: &Context, call: Vec<Target>, texts: Vec<String>) -> Vec<Called> {
        let mut todo = vec![(call, texts)];
        let mut done = Vec::new();
        while let Some((mut call, mut texts)) = todo.pop() {
            match self.call(ctx, &texts).await {
                Err(error) if texts.len() > 1 && self.embedder.splits_on(&error) => {
                    tracing::debug!(texts = texts.len(), error = %error, "embedding call refused; splitting it");
                    let half = texts.len() / 2;
                    // The first half is tried first (the stack's top).
                    todo.push((call.split_off(half), texts.split_off(half)));
                    todo.push((call, texts));
                }
                result => done.push((call, result)),
            }
        }
        done
    }
}

impl EmbedStage {
    /// Hands the vectors of document `d`, all in, to the run's write-ahead
    /// (stored now, not with the batch: a crash must not throw paid vectors away).
    fn write_ahead_doc(&self, ctx: &Context, doc: &Document, d: usize, embedded: &[(Vec<Target>, Vec<Vec<f32>>)]) {
        let mut doc = doc.clone();
        for (call, vectors) in embedded {
            for (target, vector) in call.iter().zip(vectors).filter(|(t, _)| t.doc == d) {
                match target.chunk {
                    Some(c) => doc.chunks[c].embedding = Some(vector.clone()),
                    None => doc.embedding = Some(vector.clone()),
                }
            }
        }
        hand_over(ctx, self, &doc);
    }
}

/// A call's targets with its vectors or its error.
type Called = (Vec<Target>, Result<Vec<Vec<f32>>, StageError>);

/// The OpenAI-compatible `/embeddings` the endpoint settings name.
#[cfg(feature = "openai")]
fn openai_embedder(config: &EmbedConfig) -> Result<Arc<dyn Embedder>, ConfigError> {
    check_range("embed.timeout_secs", config.endpoint.timeout_secs, 1, 600)?;
    let api = config.endpoint.api("embed")?;
    if let Some(max) = config.max_input_tokens {
        check_range("embed.max_input_tokens", max, 0, 1_000_000)?;
    }
    Ok(Arc::new(
        crate::embedder::OpenAiEmbedder::new(
            api,
            config.model.clone(),
            config.dimensions,
            config.send_dimensions,
            config.endpoint.max_attempts,
        )?
        .with_max_input_tokens(config.max_input_tokens),
    ))
}

#[cfg(not(feature = "openai"))]
fn openai_embedder(_config: &EmbedConfig) -> Result<Arc<dyn Embedder>, ConfigError> {
    Err(crate::lacking::needs("embed.provider = \"openai\"", "openai"))
}

/// The local model named by `model_dir`. Its vectors have the model's own
/// size; `dimensions`, when changed from its default, must say the same.
#[cfg(feature = "minilm")]
fn minilm_embedder(config: &EmbedConfig) -> Result<Arc<dyn Embedder>, ConfigError> {
    let dir = config.model_dir.as_deref().ok_or_else(|| {
        ConfigError(
            "embed.provider = \"minilm\" needs model_dir, the directory holding model.safetensors, config.json and \
             tokenizer.json"
                .into(),
        )
    })?;
    let embedder = crate::embedder::MiniLmEmbedder::load(dir)?;
    if config.dimensions != default_dimensions() && config.dimensions != embedder.dimensions() {
        return Err(ConfigError(format!(
            "embed.dimensions = {} but the model in {} gives {} dimensions (leave dimensions out)",
            config.dimensions,
            dir.display(),
            embedder.dimensions()
        )));
    }
    Ok(Arc::new(embedder))
}

#[cfg(not(feature = "minilm"))]
fn minilm_embedder(_config: &EmbedConfig) -> Result<Arc<dyn Embedder>, ConfigError> {
    Err(ConfigError(
        "embed.provider = \"minilm\" is not in this build of sluice: build it with `--features minilm` \
         (e.g. cargo build --release -p sluice --features minilm)"
            .into(),
    ))
}

/// Where a text of the batch goes: a chunk of a document, or the document itself.
#[derive(Clone, Copy)]
struct Target {
    doc: usize,
    chunk: Option<usize>,
}

#[async_trait]
impl Stage for EmbedStage {
    fn name(&self) -> &str {
        "embed"
    }

    /// The embedder's model and dimensions: batch size and concurrency do not change a vector.
    fn fingerprint(&self) -> Option<String> {
        Some(Memo::fingerprint(self))
    }

    async fn process(&self, ctx: &Context, mut docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        let mut targets = Vec::new();
        for (d, doc) in docs.iter_mut().enumerate() {
            doc.embedding = None;
            if doc.chunks.is_empty() {
                if !doc.record.text.trim().is_empty() {
                    targets.push(Target { doc: d, chunk: None });
                }
            } else {
                for (c, chunk) in doc.chunks.iter_mut().enumerate() {
                    chunk.embedding = None;
                    targets.push(Target { doc: d, chunk: Some(c) });
                }
            }
        }

        // Calls are made up lazily, when a slot frees: texts of documents an
        // earlier call already failed are left out (with `concurrency = 1`,
        // exactly as if the calls ran one after another).
        let failed: Mutex<Vec<Option<StageError>>> = Mutex::new(vec![None; docs.len()]);
        // Texts of each document not embedded yet: at 0 its vectors go to the write-ahead.
        let ahead = ctx.write_ahead.is_enabled() && self.memo().is_some();
        let mut remaining = vec![0usize; docs.len()];
        targets.iter().for_each(|t| remaining[t.doc] += 1);
        let mut pending = targets.into_iter();
        let docs_ref = &docs;
        let next_call = || {
            let failed = failed.lock().unwrap_or_else(|e| e.into_inner());
            let mut call: Vec<Target> = Vec::with_capacity(self.batch_size);
            let mut texts: Vec<String> = Vec::with_capacity(self.batch_size);
            for target in pending.by_ref() {
                if failed[target.doc].is_some() {
                    continue;
                }
                let doc = &docs_ref[target.doc];
                texts.push(match target.chunk {
                    Some(c) => doc.chunks[c].text.clone(),
                    None => doc.record.text.clone(),
                });
                call.push(target);
                if call.len() == self.batch_size {
                    break;
                }
            }
            (!call.is_empty()).then_some((call, texts))
        };
        let mut calls = futures::stream::iter(std::iter::from_fn(next_call))
            .map(|(call, texts)| self.call_or_split(ctx, call, texts))
            .buffer_unordered(self.concurrency);
        let mut embedded: Vec<(Vec<Target>, Vec<Vec<f32>>)> = Vec::new();
        while let Some(results) = calls.next().await {
            for (call, result) in results {
                match result {
                    Ok(vectors) if ahead => {
                        let done: Vec<usize> = call
                            .iter()
                            .filter_map(|t| {
                                remaining[t.doc] -= 1;
                                (remaining[t.doc] == 0).then_some(t.doc)
                            })
                            .collect();
                        embedded.push((call, vectors));
                        for d in done {
                            self.write_ahead_doc(ctx, &docs_ref[d], d, &embedded);
                        }
                    }
                    Ok(vectors) => embedded.push((call, vectors)),
                    // A refused key: every call would fail the same way; fail the batch (and the run).
                    Err(error) if error.error_type == UNAUTHORIZED => return Err(error),
                    Err(error) => {
                        let mut failed = failed.lock().unwrap_or_else(|e| e.into_inner());
                        for target in &call {
                            failed[target.doc].get_or_insert_with(|| error.clone());
                        }
                    }
                }
            }
        }
        drop(calls);
        for (call, vectors) in embedded {
            for (target, vector) in call.iter().zip(vectors) {
                let doc = &mut docs[target.doc];
                match target.chunk {
                    Some(c) => doc.chunks[c].embedding = Some(vector),
                    None => doc.embedding = Some(vector),
                }
            }
        }
        let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());

        Ok(docs
            .into_iter()
            .zip(failed)
            .map(|(mut doc, error)| match error {
                Some(error) => {
                    doc.embedding = None;
                    doc.chunks.iter_mut().for_each(|c| c.embedding = None);
                    Outcome::Failed { doc, error }
                }
                None => Outcome::Kept(doc),
            })
            .collect())
    }

    fn counter(&self) -> Option<StageCounter> {
        Some(StageCounter::Embedded)
    }

    fn memo(&self) -> Option<&dyn Memo> {
        self.embedder.is_paid().then_some(self as &dyn Memo)
    }
}

/// A paid embedder's vectors are remembered (`memo` says when).
impl Memo for EmbedStage {
    fn fingerprint(&self) -> String {
        format!("embed:{}", self.embedder.fingerprint())
    }

    fn value(&self, doc: &Document) -> Option<Value> {
        let chunks: Vec<Value> =
            doc.chunks.iter().map(|c| json!({"text": fnv_hex(c.text.as_bytes()), "embedding": c.embedding})).collect();
        Some(json!({"embedding": doc.embedding, "chunks": chunks}))
    }

    fn apply(&self, doc: &mut Document, value: &Value) -> bool {
        let vector = |v: &Value| -> Option<Option<Vec<f32>>> {
            match v {
                Value::Null => Some(None),
                v => serde_json::from_value::<Vec<f32>>(v.clone())
                    .ok()
                    .filter(|e| e.len() == self.embedder.dimensions())
                    .map(Some),
            }
        };
        let (Some(whole), Some(chunks)) = (value.get("embedding"), value.get("chunks").and_then(Value::as_array))
        else {
            return false;
        };
        if chunks.len() != doc.chunks.len() {
            return false;
        }
        let Some(whole) = vector(whole) else { return false };
        // What `process` would compute: a vector per chunk, or one for a non-empty unchunked text.
        let expect_whole = doc.chunks.is_empty() && !doc.record.text.trim().is_empty();
        if whole.is_some() != expect_whole {
            return false;
        }
        let mut restored = Vec::with_capacity(chunks.len());
        for (chunk, memo) in doc.chunks.iter().zip(chunks) {
            let same_text = memo.get("text").and_then(Value::as_str) == Some(fnv_hex(chunk.text.as_bytes()).as_str());
            match memo.get("embedding").and_then(vector) {
                Some(Some(e)) if same_text => restored.push(e),
                _ => return false,
            }
        }
        for (chunk, e) in doc.chunks.iter_mut().zip(restored) {
            chunk.embedding = Some(e);
        }
        doc.embedding = whole;
        true
    }
}

/// `kind = "embed"`.
impl crate::kind::StageKind for EmbedConfig {
    fn build(&self) -> Result<Arc<dyn Stage>, ConfigError> {
        Ok(Arc::new(EmbedStage::new(self.clone())?))
    }
}
