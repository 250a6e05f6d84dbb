//! Embedders: text to vectors. The embed stage calls one in batches.

use async_trait::async_trait;
use sluice_core::StageError;

pub mod hashing;

pub use hashing::HashingEmbedder;

/// Turns texts into vectors of `dimensions()` floats.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// The provider name, e.g. `hashing`.
    fn name(&self) -> &str;

    /// Length of every vector `embed` returns.
    fn dimensions(&self) -> usize;

    /// Names provider, model and dimensions: two embedders with the same
    /// fingerprint give the same vectors, so stored vectors can be reused.
    fn fingerprint(&self) -> String;

    /// One vector per text, in order. A retryable error (rate limit,
    /// timeout) makes the engine try the affected documents again.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError>;
}
