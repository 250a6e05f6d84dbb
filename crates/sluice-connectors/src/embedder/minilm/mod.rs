//! all-MiniLM-L6-v2 (or any BERT sentence encoder of that shape) run locally
//! on the CPU, in Rust: no network, no download; the weights come from a
//! directory the user names (`model.safetensors`, `config.json`,
//! `tokenizer.json`).
//!
//! What sentence-transformers does for this model: WordPiece tokens with
//! `[CLS]`/`[SEP]`, BERT forward ([`bert`]), mean over the text's tokens, L2
//! normalisation. The forward pass runs on a blocking thread so it does not
//! stall the async runtime, and uses every core (rayon) inside.

mod bert;
mod kernels;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use sluice_core::StageError;
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use self::bert::{Bert, Config as BertConfig, Scratch};
use super::Embedder;
use crate::ConfigError;
use crate::util::hash::fnv_hex;

/// The files a model directory must hold.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// sentence-transformers' own settings file; its `max_seq_length` is the
/// length the model was trained with (256 for all-MiniLM-L6-v2).
const SENTENCE_CONFIG: &str = "sentence_bert_config.json";

#[derive(Deserialize)]
struct SentenceConfig {
    max_seq_length: Option<usize>,
}

/// A loaded BERT sentence encoder.
#[derive(Clone)]
pub struct MiniLmEmbedder {
    inner: Arc<Loaded>,
}

struct Loaded {
    model: Bert,
    /// Truncates to `max_tokens`, does not pad.
    encoder: Tokenizer,
    /// Neither truncates nor pads: the true token count of a text.
    counter: Tokenizer,
    dimensions: usize,
    max_tokens: usize,
    fingerprint: String,
    model_dir: PathBuf,
}

impl std::fmt::Debug for MiniLmEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLmEmbedder")
            .field("model_dir", &self.inner.model_dir)
            .field("dimensions", &self.inner.dimensions)
            .field("max_tokens", &self.inner.max_tokens)
            .finish()
    }
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>, ConfigError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| {
        ConfigError(format!(
            "embed.model_dir = {:?}: cannot read {name} ({}: {e}); the directory needs {}",
            dir.display().to_string(),
            path.display(),
            MODEL_FILES.join(", ")
        ))
    })
}

impl MiniLmEmbedder {
    /// Loads the model in `model_dir`. Every missing or unreadable file is a
    /// configuration error naming it.
    pub fn load(model_dir: &Path) -> Result<Self, ConfigError> {
        let shown = model_dir.display().to_string();
        if !model_dir.is_dir() {
            return Err(ConfigError(format!(
                "embed.model_dir = {shown:?} is not a directory (it must hold {})",
                MODEL_FILES.join(", ")
            )));
        }
        let config_bytes = read_file(model_dir, "config.json")?;
        let config: BertConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            ConfigError(format!("embed.model_dir = {shown:?}: config.json is not a BERT configuration: {e}"))
        })?;
        let tokenizer_bytes = read_file(model_dir, "tokenizer.json")?;
        let tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| ConfigError(format!("embed.model_dir = {shown:?}: tokenizer.json cannot be read: {e}")))?;
        let weights = read_file(model_dir, "model.safetensors")?;
        let weights_len = weights.len();

        // The optional sentence-transformers setting wins when present (it is
        // what the model was trained and evaluated with); else the position
        // table's size. Never more than the position table holds.
        let sentence_max = match std::fs::read(model_dir.join(SENTENCE_CONFIG)) {
            Ok(bytes) => {
                serde_json::from_slice::<SentenceConfig>(&bytes)
                    .map_err(|e| ConfigError(format!("embed.model_dir = {shown:?}: {SENTENCE_CONFIG}: {e}")))?
                    .max_seq_length
            }
            Err(_) => None,
        };
        let max_tokens = sentence_max.unwrap_or(config.max_position_embeddings).min(config.max_position_embeddings);
        if max_tokens < 2 {
            return Err(ConfigError(format!(
                "embed.model_dir = {shown:?}: a maximum of {max_tokens} tokens leaves no room for text"
            )));
        }

        let file = safetensors::SafeTensors::deserialize(&weights)
            .map_err(|e| ConfigError(format!("embed.model_dir = {shown:?}: model.safetensors cannot be read: {e}")))?;
        let model = Bert::load(&config, file).map_err(|e| {
            ConfigError(format!("embed.model_dir = {shown:?}: model.safetensors does not match config.json: {e}"))
        })?;
        drop(weights);

        // tokenizer.json ships with truncation and padding fixed at 128: off
        // for counting; for embedding our own limit and no padding (the
        // encoder runs each text at its own length).
        let mut counter = tokenizer.clone();
        counter.with_padding(None);
        counter
            .with_truncation(None)
            .map_err(|e| ConfigError(format!("embed.model_dir = {shown:?}: tokenizer.json: {e}")))?;
        let mut encoder = tokenizer;
        encoder.with_padding(None);
        encoder
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                ..TruncationParams::default()
            }))
            .map_err(|e| ConfigError(format!("embed.model_dir = {shown:?}: tokenizer.json: {e}")))?;

        let mut identity = config_bytes;
        identity.extend_from_slice(&tokenizer_bytes);
        identity.extend_from_slice(&weights_len.to_le_bytes());
        let fingerprint = format!("minilm:{}:{}:{max_tokens}", fnv_hex(&identity), config.hidden_size);
        Ok(Self {
            inner: Arc::new(Loaded {
                model,
                encoder,
                counter,
                dimensions: config.hidden_size,
                max_tokens,
                fingerprint,
                model_dir: model_dir.to_path_buf(),
            }),
        })
    }

    /// Tokens the text has, without truncation, padding or special tokens.
    pub fn count_tokens(&self, text: &str) -> Result<usize, StageError> {
        let encoding = self
            .inner
            .counter
            .encode(text, false)
            .map_err(|e| StageError::permanent("embedding", format!("tokenizer: {e}")))?;
        Ok(encoding.len())
    }

    /// Tokens an embedded text is cut to, `[CLS]` and `[SEP]` included.
    pub fn max_tokens(&self) -> usize {
        self.inner.max_tokens
    }

    /// Embeds on the calling thread, [`FORWARD_BATCH`] texts of like length
    /// per forward pass. [`Embedder::embed`] runs this on a blocking thread.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        self.embed_blocking_in(texts, FORWARD_BATCH)
    }

    /// [`Self::embed_blocking`], at most `batch` texts per forward pass.
    pub fn embed_blocking_in(&self, texts: &[String], batch: usize) -> Result<Vec<Vec<f32>>, StageError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.embed(texts, batch.max(1)).map_err(|e| StageError::permanent("embedding", format!("minilm: {e}")))
    }
}

/// Texts per forward pass when the caller does not say: sentence-transformers'
/// default, and where larger passes stop paying on a CPU.
pub const FORWARD_BATCH: usize = 32;

impl Loaded {
    /// Tokenizes every text once, then runs the texts in order of token
    /// count, `batch` at a time (texts of like length in one pass share its
    /// attention work evenly between the cores); the vectors go back to the
    /// texts' order.
    fn embed(&self, texts: &[String], batch: usize) -> Result<Vec<Vec<f32>>, String> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self.encoder.encode_batch_fast(inputs, true).map_err(|e| format!("tokenizer: {e}"))?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        let mut scratch = Scratch::default();
        for pass in order.chunks(batch) {
            let rows: Vec<&[u32]> = pass.iter().map(|&i| encodings[i].get_ids()).collect();
            for (&i, vector) in pass.iter().zip(self.model.embed(&rows, &mut scratch)?) {
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }
}

#[async_trait]
impl Embedder for MiniLmEmbedder {
    fn name(&self) -> &str {
        "minilm"
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions
    }

    fn fingerprint(&self) -> String {
        self.inner.fingerprint.clone()
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        let this = self.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || this.embed_blocking(&texts))
            .await
            .map_err(|e| StageError::permanent("embedding", format!("minilm worker: {e}")))?
    }
}
