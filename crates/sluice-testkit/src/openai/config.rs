//! The fake OpenAI's configuration and fault settings.

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::faults::{DropMode, FaultKind, FaultSettings, Periods};

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

/// Fault settings of the fake OpenAI. JSON patches may name only what they
/// change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenAiFaults {
    pub endpoints: OpenAiTarget,
    /// Sleep this long before answering each targeted request.
    pub latency_ms: u64,
    /// Every Nth targeted request: 500 `server_error`.
    pub fail_every: Option<u64>,
    /// Every Nth targeted request: 429 `rate_limit_exceeded` with
    /// `retry-after: retry_after_secs`.
    pub rate_limit_every: Option<u64>,
    /// Every Nth targeted request: the connection is dropped.
    pub drop_every: Option<u64>,
    pub drop_mode: DropMode,
    /// Every Nth targeted request: chat answers 200 with prose instead of
    /// JSON in `message.content`; embeddings answer truncated JSON.
    pub malformed_every: Option<u64>,
    /// Faults for the next requests, one each, before the periodic ones.
    pub script: Vec<FaultKind>,
    /// `retry-after` of injected 429s. Default 1.
    pub retry_after_secs: u64,
    /// Embeddings: the model's context in tokens (cl100k_base, as OpenAI
    /// counts). An input over it gets the real API's 400 for the whole
    /// request: "This model's maximum context length is 8192 tokens, however
    /// you requested N tokens ...". Default 8192, as text-embedding-3-*.
    pub max_input_tokens: u64,
    /// Embeddings: an input containing any of these texts is refused, with a
    /// 400 naming it (`Invalid 'input[i]': ...`) for the whole request: a
    /// per-input error other than length.
    pub refuse_inputs_containing: Vec<String>,
}

/// The embedding models' context, in tokens.
pub const EMBEDDING_CONTEXT_TOKENS: u64 = 8192;

impl Default for OpenAiFaults {
    fn default() -> Self {
        OpenAiFaults {
            endpoints: OpenAiTarget::All,
            latency_ms: 0,
            fail_every: None,
            rate_limit_every: None,
            drop_every: None,
            drop_mode: DropMode::default(),
            malformed_every: None,
            script: Vec::new(),
            retry_after_secs: 1,
            max_input_tokens: EMBEDDING_CONTEXT_TOKENS,
            refuse_inputs_containing: Vec::new(),
        }
    }
}

impl FaultSettings for OpenAiFaults {
    fn periods(&self) -> Periods {
        Periods {
            drop_every: self.drop_every,
            fail_every: self.fail_every,
            rate_limit_every: self.rate_limit_every,
            malformed_every: self.malformed_every,
        }
    }

    fn latency_ms(&self) -> u64 {
        self.latency_ms
    }

    fn script(&self) -> &[FaultKind] {
        &self.script
    }

    fn script_mut(&mut self) -> &mut Vec<FaultKind> {
        &mut self.script
    }
}

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
