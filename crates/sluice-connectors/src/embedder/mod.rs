//! Embedders: text to vectors. The embed stage calls one in batches.
//! [`hashing`] is always built; [`openai`] needs the `openai` feature, [`minilm`] the `minilm` one.

use async_trait::async_trait;
use sluice_core::{Context, StageError};

pub mod hashing;
#[cfg(feature = "minilm")]
pub mod minilm;
#[cfg(feature = "openai")]
pub mod openai;

pub use hashing::HashingEmbedder;
#[cfg(feature = "minilm")]
pub use minilm::MiniLmEmbedder;
#[cfg(feature = "openai")]
pub use openai::OpenAiEmbedder;

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

    /// `embed` with the run's context: a paid embedder records its calls and
    /// tokens in `ctx.usage` (the cost ledger) and reports its waits as
    /// events. The embed stage calls this one.
    async fn embed_with(&self, ctx: &Context, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        let _ = ctx;
        self.embed(texts).await
    }

    /// Whether calls cost money (a remote API). The embed stage then keeps
    /// the vectors of unchanged content and does not ask for them again.
    fn is_paid(&self) -> bool {
        false
    }

    /// Whether a call that failed with `error` may pass in parts: the
    /// provider refused the call for some of its texts (one too long, or
    /// unacceptable). The embed stage then splits the call in halves, down to
    /// single texts, so that only the refused texts fail.
    fn splits_on(&self, error: &StageError) -> bool {
        let _ = error;
        false
    }
}
