//! Chunking: split a document's text into pieces of at most `size` characters
//! or tokens, on the largest semantic boundaries that fit (text-splitter).

mod windows;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{Chunk, Context, Document, Outcome, Stage, StageError};
use text_splitter::{Characters, ChunkConfig as SplitterConfig, TextSplitter};
use tiktoken_rs::CoreBPE;
use windows::{CharBound, TokenBound, split_in_windows};

use crate::ConfigError;
use crate::util::validate::check_range;

/// The default `size` when counting characters.
pub const DEFAULT_CHARS: usize = 1000;
/// The default `size` when counting tokens.
pub const DEFAULT_TOKENS: usize = 256;
/// Tokenizers that ship with tiktoken-rs (no download).
pub const TOKENIZERS: [&str; 2] = ["cl100k_base", "o200k_base"];

/// Batches with more text than this are chunked on a blocking thread.
const INLINE_BYTES: usize = 64 * 1024;

/// What `size` and `overlap` count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChunkBy {
    #[default]
    Chars,
    Tokens,
}

fn default_tokenizer() -> String {
    "cl100k_base".to_string()
}

/// `[[stages]] kind = "chunk"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkConfig {
    /// `chars` or `tokens`.
    #[serde(default)]
    pub by: ChunkBy,
    /// Largest chunk, in chars or tokens (default 1000 chars or 256 tokens; 1..=1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// How much of the previous chunk a chunk repeats (smaller than size).
    #[serde(default)]
    pub overlap: usize,
    /// With `by = "tokens"`: `cl100k_base` or `o200k_base`.
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self { by: ChunkBy::Chars, size: None, overlap: 0, tokenizer: default_tokenizer() }
    }
}

impl ChunkConfig {
    /// The size in effect: `size`, or the default of `by`.
    pub fn effective_size(&self) -> usize {
        self.size.unwrap_or(match self.by {
            ChunkBy::Chars => DEFAULT_CHARS,
            ChunkBy::Tokens => DEFAULT_TOKENS,
        })
    }
}

enum Splitter {
    Chars(TextSplitter<Characters>, usize),
    Tokens(TextSplitter<&'static CoreBPE>, usize),
}

impl Splitter {
    /// The chunks of `text`, window by window (see `windows`): linear in its length.
    fn chunks(&self, text: &str) -> Vec<Chunk> {
        let pieces = match self {
            Splitter::Chars(s, size) => split_in_windows(text, &CharBound(*size), |t| s.chunk_indices(t).collect()),
            Splitter::Tokens(s, size) => split_in_windows(text, &TokenBound(*size), |t| s.chunk_indices(t).collect()),
        };
        pieces
            .into_iter()
            .enumerate()
            .map(|(index, (offset, piece))| Chunk {
                index: index as u32,
                offset,
                text: piece.to_string(),
                embedding: None,
            })
            .collect()
    }
}

impl std::fmt::Debug for Splitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Splitter::Chars(s, _) => s.fmt(f),
            Splitter::Tokens(..) => f.write_str("TextSplitter<CoreBPE>"),
        }
    }
}

/// Replaces `doc.chunks` with the chunks of the text; `offset` is the byte
/// offset of each chunk in the text. An empty text gives no chunks.
#[derive(Clone, Debug)]
pub struct ChunkStage {
    config: ChunkConfig,
    splitter: Arc<Splitter>,
}

impl ChunkStage {
    pub fn new(config: ChunkConfig) -> Result<Self, ConfigError> {
        let size = config.effective_size();
        check_range("chunk.size", size, 1, 1_000_000)?;
        if config.overlap >= size {
            return Err(ConfigError(format!(
                "chunk.overlap = {} must be smaller than chunk.size = {size}",
                config.overlap
            )));
        }
        let overlap_error = |e| ConfigError(format!("chunk.overlap = {}: {e}", config.overlap));
        let splitter = match config.by {
            ChunkBy::Chars => Splitter::Chars(
                TextSplitter::new(SplitterConfig::new(size).with_overlap(config.overlap).map_err(overlap_error)?),
                size,
            ),
            ChunkBy::Tokens => {
                let bpe: &'static CoreBPE = match config.tokenizer.as_str() {
                    "cl100k_base" => tiktoken_rs::cl100k_base_singleton(),
                    "o200k_base" => tiktoken_rs::o200k_base_singleton(),
                    other => {
                        return Err(ConfigError(format!(
                            "chunk.tokenizer = {other:?} is not supported (allowed: {})",
                            TOKENIZERS.join(", ")
                        )));
                    }
                };
                let splitter_config =
                    SplitterConfig::new(size).with_overlap(config.overlap).map_err(overlap_error)?.with_sizer(bpe);
                Splitter::Tokens(TextSplitter::new(splitter_config), size)
            }
        };
        Ok(Self { config, splitter: Arc::new(splitter) })
    }

    pub fn config(&self) -> &ChunkConfig {
        &self.config
    }

    /// The chunks of `text`.
    pub fn chunk_text(&self, text: &str) -> Vec<Chunk> {
        self.splitter.chunks(text)
    }
}

fn chunk_all(splitter: &Splitter, docs: &mut [Document]) {
    for doc in docs {
        doc.chunks = splitter.chunks(&doc.record.text);
    }
}

#[async_trait]
impl Stage for ChunkStage {
    fn name(&self) -> &str {
        "chunk"
    }

    fn fingerprint(&self) -> Option<String> {
        crate::stage::config_fingerprint(1, &self.config)
    }

    async fn process(&self, _ctx: &Context, mut docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        let bytes: usize = docs.iter().map(|d| d.record.text.len()).sum();
        if bytes > INLINE_BYTES || matches!(*self.splitter, Splitter::Tokens(..)) && bytes > INLINE_BYTES / 8 {
            // Splitting (tokenizing above all) is CPU work: keep it off the async workers.
            let splitter = self.splitter.clone();
            docs = tokio::task::spawn_blocking(move || {
                chunk_all(&splitter, &mut docs);
                docs
            })
            .await
            .map_err(|e| StageError::permanent("panic", format!("chunk panicked: {e}")))?;
        } else {
            chunk_all(&self.splitter, &mut docs);
        }
        Ok(docs.into_iter().map(Outcome::Kept).collect())
    }
}

/// `kind = "chunk"`.
impl crate::kind::StageKind for ChunkConfig {
    fn build(&self) -> Result<Arc<dyn Stage>, ConfigError> {
        Ok(Arc::new(ChunkStage::new(self.clone())?))
    }
}
