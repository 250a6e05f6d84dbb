//! Embeddings from any OpenAI-compatible `/embeddings` endpoint.
//!
//! One request per call of the embed stage (its `batch_size` texts, which
//! `EMBEDDING_BATCH_SIZE` overrides). 429, 5xx, dropped connections and
//! truncated bodies are retried inside the call with backoff that honours
//! `retry-after` (each wait an `AdapterStateChange` event); a refused key
//! fails the batch with `error_type` [`crate::remote::openai::UNAUTHORIZED`]. Every answered call is
//! recorded in the cost ledger with the `usage` tokens reported. Empty texts
//! get the zero vector without being sent (the API refuses them).
//!
//! Each input is cut to `max_input_tokens` tokens before it is sent, counted
//! with cl100k_base as OpenAI's embedding models count them (the model's
//! context by default for OpenAI's models, see [`model_context`]), so that one
//! long text does not make the API refuse the whole call. A call the API still
//! refuses for one of its inputs (a 400) is split by the embed stage
//! ([`Embedder::splits_on`]).
//!
//! Vectors are asked for as `encoding_format: "base64"` (little-endian f32,
//! what OpenAI's own clients ask for): a quarter of the bytes of JSON floats,
//! decoded without parsing decimals, and the same values. A compatible server
//! that answers floats anyway is read as well; one that refuses the parameter
//! (a 400 naming `encoding_format`) is asked again for floats, and from then
//! on by this embedder.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use serde_json::{Value, json};
use sluice_core::{Context, StageError};
use sluice_core::{RetryPolicy, Verdict, with_retries};

use super::Embedder;
use crate::ConfigError;
use crate::remote::openai::{ApiError, OpenAiApi, is_refused_request};

/// The context, in tokens, of OpenAI's embedding models (all count with
/// cl100k_base); `None` for a model this build does not know.
pub fn model_context(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-3-large" | "text-embedding-ada-002" => Some(8191),
        _ => None,
    }
}

/// `text` cut to at most `max` tokens (cl100k_base), at a character boundary,
/// with its length in tokens before the cut when it was cut.
pub fn cut_to_tokens(text: &str, max: usize) -> (Cow<'_, str>, Option<usize>) {
    // A token is at least one byte: a short text needs no tokenizing.
    if text.len() <= max {
        return (Cow::Borrowed(text), None);
    }
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let tokens = bpe.encode_ordinary(text);
    if tokens.len() <= max {
        return (Cow::Borrowed(text), None);
    }
    let mut keep = max;
    loop {
        // The tokens decode to the text's own bytes, so their length is where to cut.
        let bytes = bpe.decode_bytes(&tokens[..keep]).map_or(0, |b| b.len());
        let cut = &text[..text.floor_char_boundary(bytes)];
        // A prefix almost always takes the same tokens; if not, cut a little more.
        let counted = bpe.encode_ordinary(cut).len();
        if counted <= max || keep == 0 {
            return (Cow::Owned(cut.to_string()), Some(tokens.len()));
        }
        keep = keep.saturating_sub(counted - max);
    }
}

/// An OpenAI-compatible embeddings model.
#[derive(Clone, Debug)]
pub struct OpenAiEmbedder {
    api: OpenAiApi,
    model: String,
    dimensions: usize,
    send_dimensions: bool,
    retry: RetryPolicy,
    /// Inputs are cut to this many tokens; `None`: sent whole.
    max_input_tokens: Option<usize>,
    /// Cleared once the server refuses `encoding_format: "base64"`.
    base64: Arc<AtomicBool>,
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
        let max_input_tokens = model_context(&model);
        Ok(Self {
            api,
            model,
            dimensions,
            send_dimensions,
            retry,
            max_input_tokens,
            base64: Arc::new(AtomicBool::new(true)),
        })
    }

    /// The same embedder cutting inputs to `max` tokens (`Some(0)`: never
    /// cut; `None`: the model's context, see [`model_context`]).
    pub fn with_max_input_tokens(mut self, max: Option<usize>) -> Self {
        self.max_input_tokens = match max {
            Some(0) => None,
            Some(max) => Some(max),
            None => model_context(&self.model),
        };
        self
    }

    /// The input as sent: cut to `max_input_tokens`.
    fn fit<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(max) = self.max_input_tokens else { return Cow::Borrowed(text) };
        let (fitted, cut_from) = cut_to_tokens(text, max);
        if let Some(tokens) = cut_from {
            tracing::debug!(model = %self.model, tokens, max, "embedding input cut to the model's context");
        }
        fitted
    }

    fn request(&self, texts: &[String], base64: bool) -> Value {
        let format = if base64 { "base64" } else { "float" };
        let mut body = json!({"model": self.model, "input": texts, "encoding_format": format});
        if self.send_dimensions {
            body["dimensions"] = json!(self.dimensions);
        }
        body
    }

    /// POSTs the inputs (with retries), asked for as base64 unless the
    /// server refused it before; a refusal naming `encoding_format` is asked
    /// again for floats.
    async fn call(&self, ctx: &Context, inputs: &[String]) -> Result<Value, StageError> {
        let base64 = self.base64.load(Ordering::Relaxed);
        match self.post(ctx, &self.request(inputs, base64)).await {
            Err(ApiError::Request(e)) if base64 && e.message.contains("encoding_format") => {
                if self.base64.swap(false, Ordering::Relaxed) {
                    tracing::warn!(model = %self.model, error = %e.message,
                        "the embeddings server refused encoding_format \"base64\": asking for floats from now on");
                }
                self.post(ctx, &self.request(inputs, false)).await.map_err(ApiError::into_stage_error)
            }
            answer => answer.map_err(ApiError::into_stage_error),
        }
    }

    async fn post(&self, ctx: &Context, body: &Value) -> Result<Value, ApiError> {
        with_retries(
            &self.retry,
            ctx,
            "embed",
            &ctx.abort,
            || self.api.post_paced(ctx, "embed", "/embeddings", body),
            |e: &ApiError| match e {
                ApiError::Retryable { retry_after, .. } => Verdict::Retry(*retry_after),
                _ => Verdict::Fatal,
            },
        )
        .await
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
            let vector = match item.get("embedding") {
                Some(Value::Array(values)) => {
                    let vector: Vec<f32> = values.iter().filter_map(Value::as_f64).map(|x| x as f32).collect();
                    if vector.len() != values.len() {
                        return Err(bad(format!("item {position} has non-numeric values")));
                    }
                    vector
                }
                Some(Value::String(encoded)) => decode_base64(encoded)
                    .ok_or_else(|| bad(format!("item {position}'s embedding is not base64 of little-endian f32")))?,
                _ => return Err(bad(format!("item {position} has no embedding (an array or a base64 string)"))),
            };
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
        let base = format!("openai:{}:{}:{}", self.api.base_url(), self.model, self.dimensions);
        // Cutting at the model's own context changes no vector the API would
        // give (it refuses longer inputs): remembered vectors stay valid. A
        // shorter cut, or one for a model of unknown context, makes others.
        match self.max_input_tokens {
            Some(max) if model_context(&self.model).is_none_or(|context| max < context) => format!("{base}:cut{max}"),
            _ => base,
        }
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
        let inputs: Vec<String> = sent.iter().map(|(_, t)| self.fit(t).into_owned()).collect();
        let answer = self.call(ctx, &inputs).await?;
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

    /// A 4xx other than the key's, the URL's or the rate limiter's: the API
    /// refused this request (an input too long, or unacceptable), so a part
    /// of its inputs may pass.
    fn splits_on(&self, error: &StageError) -> bool {
        is_refused_request(error)
    }
}

/// A base64 embedding's values: little-endian f32, as OpenAI sends them.
fn decode_base64(encoded: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> usize {
        tiktoken_rs::cl100k_base_singleton().encode_ordinary(text).len()
    }

    #[test]
    fn a_long_text_is_cut_to_a_prefix_of_at_most_max_tokens() {
        let text: String = (0..5_000).map(|w| format!("wörd{w} ünïcode ")).collect();
        let before = tokens(&text);
        assert!(before > 1000);
        let (cut, from) = cut_to_tokens(&text, 1000);
        assert_eq!(from, Some(before));
        assert!(tokens(&cut) <= 1000 && tokens(&cut) > 990, "{}", tokens(&cut));
        assert!(text.starts_with(cut.as_ref()));
    }

    #[test]
    fn a_text_within_the_limit_is_sent_whole() {
        let (cut, from) = cut_to_tokens("short text", 3);
        assert!(matches!(cut, Cow::Borrowed("short text")) && from.is_none());
        let long = "a ".repeat(100);
        let (cut, from) = cut_to_tokens(&long, 150);
        assert!(matches!(cut, Cow::Borrowed(_)) && from.is_none(), "100 tokens in 200 bytes");
        assert_eq!(model_context("text-embedding-3-small"), Some(8191));
        assert_eq!(model_context("nomic-embed-text"), None);
    }

    #[test]
    fn base64_embeddings_decode_to_their_f32_values_and_bad_ones_are_refused() {
        let values = [0.25f32, -1.5, f32::MIN_POSITIVE, 3.0e-8];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(decode_base64(&encoded), Some(values.to_vec()));
        assert_eq!(decode_base64("AAAAAA=="), Some(vec![0.0]));
        assert_eq!(decode_base64("AAAA"), None, "three bytes are not an f32");

        assert_eq!(decode_base64("not base64!"), None);
    }
}
