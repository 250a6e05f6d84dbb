//! The fake OpenAI's configuration and fault settings.

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::faults::fault_settings;

/// The endpoint of a request, for counters and fault targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ApiEndpoint {
    Chat,
    Embeddings,
    Models,
    Other,
}

/// Which endpoints the faults (latency included) apply to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiTarget {
    /// Chat and embeddings.
    #[default]
    #[serde(alias = "both")]
    All,
    Chat,
    Embeddings,
}

fault_settings! {
    /// Fault settings of the fake OpenAI. JSON patches may name only what they
    /// change. Its 429s carry `retry-after: retry_after_secs`; its malformed
    /// answers are prose instead of JSON in a chat's `message.content`, and
    /// truncated JSON from embeddings.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct OpenAiFaults {
        /// The endpoints the faults apply to.
        pub endpoints: OpenAiTarget,
        /// `retry-after` of injected 429s. Default 1.
        pub retry_after_secs: u64 = 1,
        /// Embeddings: the model's context in tokens (cl100k_base, as OpenAI
        /// counts). An input over it gets the real API's 400 for the whole
        /// request: "This model's maximum context length is 8192 tokens, however
        /// you requested N tokens ...". Default 8192, as text-embedding-3-*.
        pub max_input_tokens: u64 = EMBEDDING_CONTEXT_TOKENS,
        /// Embeddings: an input containing any of these texts is refused, with a
        /// 400 naming it (`Invalid 'input[i]': ...`) for the whole request: a
        /// per-input error other than length.
        pub refuse_inputs_containing: Vec<String>,
        /// Embeddings: answer as a compatible server that knows only
        /// `encoding_format: "float"`: a request for `"base64"` gets a 400
        /// naming the parameter.
        pub refuse_base64: bool,
    }
}

/// The embedding models' context, in tokens.
pub const EMBEDDING_CONTEXT_TOKENS: u64 = 8192;

impl OpenAiFaults {
    /// Whether the faults apply to a request to `ep`.
    pub(super) fn targets(&self, ep: ApiEndpoint) -> bool {
        matches!(
            (self.endpoints, ep),
            (OpenAiTarget::All, ApiEndpoint::Chat | ApiEndpoint::Embeddings)
                | (OpenAiTarget::Chat, ApiEndpoint::Chat)
                | (OpenAiTarget::Embeddings, ApiEndpoint::Embeddings)
        )
    }
}

/// Configuration of a fake OpenAI API.
#[derive(Clone, Debug)]
pub struct OpenAiConfig {
    /// The only API key accepted. Default `sk-test`.
    pub key: String,
    /// Requests per minute. Default 10,000.
    pub rpm_limit: u32,
    /// Tokens per minute, shown in headers only (not enforced). Default
    /// 10,000,000.
    pub tpm_limit: u64,
    /// Embedding size when the request gives no `dimensions`. Default 64.
    pub default_dimensions: usize,
    pub faults: OpenAiFaults,
    pub clock: Clock,
    /// Port on 127.0.0.1; 0 (default) picks a free one.
    pub port: u16,
    /// Salts ids (`chatcmpl-...`, request ids).
    pub seed: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            key: "sk-test".to_string(),
            rpm_limit: 10_000,
            tpm_limit: 10_000_000,
            default_dimensions: 64,
            faults: OpenAiFaults::default(),
            clock: Clock::system(),
            port: 0,
            seed: 7,
        }
    }
}

impl OpenAiConfig {
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }
    pub fn with_rpm_limit(mut self, rpm: u32) -> Self {
        self.rpm_limit = rpm;
        self
    }
    pub fn with_default_dimensions(mut self, dims: usize) -> Self {
        self.default_dimensions = dims;
        self
    }
    pub fn with_faults(mut self, faults: OpenAiFaults) -> Self {
        self.faults = faults;
        self
    }
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }
}
