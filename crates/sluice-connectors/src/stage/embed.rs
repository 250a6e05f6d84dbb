//! Embedding: vectors for every chunk, or for the whole text of a document
//! that has no chunks, computed in batches across the documents of a batch.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{Context, Document, Outcome, Stage, StageCounter, StageError};

use super::check_range;
use crate::ConfigError;
use crate::embedder::{Embedder, HashingEmbedder};

/// Providers `provider` accepts.
pub const PROVIDERS: [&str; 1] = ["hashing"];

fn default_provider() -> String {
    "hashing".to_string()
}

fn default_dimensions() -> usize {
    256
}

fn default_batch_size() -> usize {
    32
}

/// `[[stages]] type = "embed"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    /// Only `hashing` for now.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// Length of the vectors (8..=4096).
    #[serde(default = "default_dimensions")]
    pub dimensions: usize,
    /// Texts per embedder call (1..=2048).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        Self { provider: default_provider(), dimensions: default_dimensions(), batch_size: default_batch_size() }
    }
}

/// Sets `chunk.embedding` on every chunk, and `doc.embedding` on documents
/// without chunks (from the whole text; not for an empty text). A failed call
/// fails the documents whose texts were in it, with the embedder's error.
#[derive(Clone)]
pub struct EmbedStage {
    embedder: Arc<dyn Embedder>,
    batch_size: usize,
}

impl std::fmt::Debug for EmbedStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedStage")
            .field("embedder", &self.embedder.fingerprint())
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl EmbedStage {
    pub fn new(config: EmbedConfig) -> Result<Self, ConfigError> {
        check_range("embed.dimensions", config.dimensions, 8, 4096)?;
        check_range("embed.batch_size", config.batch_size, 1, 2048)?;
        let embedder: Arc<dyn Embedder> = match config.provider.as_str() {
            "hashing" => Arc::new(HashingEmbedder::new(config.dimensions)?),
            other => {
                return Err(ConfigError(format!(
                    "embed.provider = {other:?} is not supported (allowed: {})",
                    PROVIDERS.join(", ")
                )));
            }
        };
        Ok(Self { embedder, batch_size: config.batch_size })
    }

    /// A stage over any embedder (other providers, tests).
    pub fn with_embedder(embedder: Arc<dyn Embedder>, batch_size: usize) -> Result<Self, ConfigError> {
        check_range("embed.batch_size", batch_size, 1, 2048)?;
        Ok(Self { embedder, batch_size })
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }
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

    async fn process(&self, _ctx: &Context, mut docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
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

        let mut failed: Vec<Option<StageError>> = vec![None; docs.len()];
        let mut pending = targets.into_iter().peekable();
        let mut call: Vec<Target> = Vec::with_capacity(self.batch_size);
        let mut texts: Vec<String> = Vec::with_capacity(self.batch_size);
        while pending.peek().is_some() {
            call.clear();
            texts.clear();
            // Skip texts of documents an earlier call already failed.
            for target in pending.by_ref() {
                if failed[target.doc].is_some() {
                    continue;
                }
                let doc = &docs[target.doc];
                texts.push(match target.chunk {
                    Some(c) => doc.chunks[c].text.clone(),
                    None => doc.record.text.clone(),
                });
                call.push(target);
                if call.len() == self.batch_size {
                    break;
                }
            }
            if call.is_empty() {
                break;
            }
            let result = self.embedder.embed(&texts).await.and_then(|vectors| {
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
            });
            match result {
                Ok(vectors) => {
                    for (target, vector) in call.iter().zip(vectors) {
                        let doc = &mut docs[target.doc];
                        match target.chunk {
                            Some(c) => doc.chunks[c].embedding = Some(vector),
                            None => doc.embedding = Some(vector),
                        }
                    }
                }
                Err(error) => {
                    for target in &call {
                        failed[target.doc].get_or_insert_with(|| error.clone());
                    }
                }
            }
        }

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
}
