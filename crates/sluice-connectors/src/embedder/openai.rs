//! Embeddings from any OpenAI-compatible `/embeddings` endpoint.
//!
//! One request per call of the embed stage (its `batch_size` texts, which
//! `EMBEDDING_BATCH_SIZE` overrides). 429, 5xx, dropped connections and
//! truncated bodies are retried inside the call with backoff that honours
//! `retry-after` (each wait an `AdapterStateChange` event); a refused key
//! fails the batch with `error_type` [`crate::remote::openai::UNAUTHORIZED`]. Every answered call is
//! recorded in the cost ledger with the `usage` tokens reported. Empty texts
//! get the zero vector without being sent (the API refuses them).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_core::{Context, StageError};
use sluice_core::{RetryPolicy, Verdict, with_retries};

use super::Embedder;
use crate::ConfigError;
use crate::remote::openai::{ApiError, OpenAiApi};

/// An OpenAI-compatible embeddings model.
#[derive(Clone, Debug)]
pub struct OpenAiEmbedder {
    api: OpenAiApi,
    model: String,
    dimensions: usize,
    send_dimensions: bool,
    retry: RetryPolicy,
}

impl OpenAiEmbedder {
    /// `dimensions` is the length every vector must have; it is sent as the
    /// request's `dimensions` parameter when `send_dimensions` (models before
    /// `text-embedding-3` and some servers refuse the parameter).
    pub fn new(
        api: OpenAiApi,
        model: impl Into<String>,
        dimensions: usize,
        send_dimensions: bool,
        max_attempts: u32,
    ) -> Result<Self, ConfigError> {
        let model = model.into();
        if model.trim().is_empty() {
            return Err(ConfigError("embed.model = \"\" must name a model".into()));
        }
        crate::util::validate::check_range("embed.max_attempts", max_attempts, 1, 20)?;
        let retry = RetryPolicy {
            max_retries: max_attempts.saturating_sub(1),
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        };
        Ok(Self { api, model, dimensions, send_dimensions, retry })
    }

    fn request(&self, texts: &[String]) -> Value {
        let mut body = json!({"model": self.model, "input": texts, "encoding_format": "float"});
        if self.send_dimensions {
            body["dimensions"] = json!(self.dimensions);
        }
        body
    }

    /// Reads an answer: one vector per input, by `index`, of the right length.
    fn read(&self, answer: &Value, expected: usize) -> Result<Vec<Vec<f32>>, StageError> {
        let bad = |what: String| StageError::permanent("embedding", format!("embeddings answer: {what}"));
        let data = answer.get("data").and_then(Value::as_array).ok_or_else(|| bad("no data array".into()))?;
        if data.len() != expected {
            return Err(bad(format!("{} vectors for {expected} texts", data.len())));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in data.iter().enumerate() {
            let index = item.get("index").and_then(Value::as_u64).map_or(position, |i| i as usize);
            let values = item
                .get("embedding")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("item {position} has no embedding array")))?;
            let vector: Vec<f32> = values.iter().filter_map(Value::as_f64).map(|x| x as f32).collect();
            if vector.len() != values.len() {
                return Err(bad(format!("item {position} has non-numeric values")));
            }
            if vector.len() != self.dimensions {
                return Err(bad(format!(
                    "model {} returned {} dimensions, embed.dimensions is {}",
                    self.model,
                    vector.len(),
                    self.dimensions
                )));
            }
            match vectors.get_mut(index) {
                Some(slot @ None) => *slot = Some(vector),
                _ => return Err(bad(format!("index {index} is out of range or repeated"))),
            }
        }
        vectors.into_iter().map(|v| v.ok_or_else(|| bad("a text got no vector".into()))).collect()
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        "openai"
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn fingerprint(&self) -> String {
        format!("openai:{}:{}:{}", self.api.base_url(), self.model, self.dimensions)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        self.embed_with(&Context::detached(), texts).await
    }

    async fn embed_with(&self, ctx: &Context, texts: &[String]) -> Result<Vec<Vec<f32>>, StageError> {
        let sent: Vec<(usize, &String)> = texts.iter().enumerate().filter(|(_, t)| !t.trim().is_empty()).collect();
        let mut vectors = vec![vec![0f32; self.dimensions]; texts.len()];
        if sent.is_empty() {
            return Ok(vectors);
        }
        let inputs: Vec<String> = sent.iter().map(|(_, t)| (*t).clone()).collect();
        let body = self.request(&inputs);
        let answer = with_retries(
            &self.retry,
            ctx,
            "embed",
            &ctx.abort,
            || self.api.post("/embeddings", &body),
            |e: &ApiError| match e {
                ApiError::Retryable { retry_after, .. } => Verdict::Retry(*retry_after),
                _ => Verdict::Fatal,
            },
        )
        .await
        .map_err(ApiError::into_stage_error)?;
        let usage = answer.get("usage");
        let tokens = usage
            .and_then(|u| u.get("prompt_tokens").or_else(|| u.get("total_tokens")))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        ctx.usage.embedding_call(tokens);
        for ((index, _), vector) in sent.iter().zip(self.read(&answer, inputs.len())?) {
            vectors[*index] = vector;
        }
        Ok(vectors)
    }

    fn is_paid(&self) -> bool {
        true
    }
}
