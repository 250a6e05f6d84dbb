//! The fake Intercom's configuration and fault settings.

use serde::{Deserialize, Serialize};

use super::dataset::DatasetSpec;
use super::log::Endpoint;
use crate::clock::Clock;
use crate::faults::fault_settings;

/// Which endpoints the faults (latency included) apply to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntercomTarget {
    /// Search and get.
    #[default]
    #[serde(alias = "both")]
    All,
    /// `POST /conversations/search` only.
    Search,
    /// `GET /conversations/{id}` only.
    Get,
}

fault_settings! {
    /// Fault settings of the fake Intercom. Every field has a default (no
    /// faults), so a JSON patch may name only what it changes. Its 429s carry
    /// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` one second ahead;
    /// its malformed answers are 200 with truncated JSON.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct IntercomFaults {
        /// The endpoints the faults apply to.
        pub endpoints: IntercomTarget,
        /// Search cursors older than this (by the fake's clock) are refused with
        /// 400 `client_error`.
        pub cursor_ttl_secs: Option<u64>,
        /// Refused cursors get the bare 400 Intercom also answers an expired
        /// cursor with, `parameter_invalid` "Invalid request", instead of
        /// `client_error` naming `starting_after`.
        pub generic_cursor_errors: bool,
        /// Also send `Retry-After` (seconds) with every 429, injected or real.
        /// Real Intercom sends only `X-RateLimit-Reset`.
        pub retry_after: bool,
        /// Compare timestamps with `>` as "greater (or equal) than" and `<` as
        /// "less (or equal) than", one reading of Intercom's reference.
        pub inclusive_comparisons: bool,
    }
}

impl IntercomFaults {
    /// Whether the faults apply to a request to `ep`.
    pub(super) fn targets(&self, ep: Endpoint) -> bool {
        matches!(
            (self.endpoints, ep),
            (IntercomTarget::All, Endpoint::Search | Endpoint::Get)
                | (IntercomTarget::Search, Endpoint::Search)
                | (IntercomTarget::Get, Endpoint::Get)
        )
    }
}

/// Configuration of a fake Intercom.
#[derive(Clone, Debug)]
pub struct IntercomConfig {
    /// The generated workspace.
    pub dataset: DatasetSpec,
    /// The only access token accepted. Default `test-token`.
    pub token: String,
    /// Requests per 10-second window. Default 1000.
    pub rate_limit: u32,
    /// Initial fault settings (none by default).
    pub faults: IntercomFaults,
    /// The clock for rate-limit windows and cursor times.
    pub clock: Clock,
    /// Port on 127.0.0.1; 0 (default) picks a free one.
    pub port: u16,
}

impl Default for IntercomConfig {
    fn default() -> Self {
        IntercomConfig {
            dataset: DatasetSpec::default(),
            token: "test-token".to_string(),
            rate_limit: 1000,
            faults: IntercomFaults::default(),
            clock: Clock::system(),
            port: 0,
        }
    }
}

impl IntercomConfig {
    pub fn with_conversations(mut self, n: usize) -> Self {
        self.dataset.conversations = n;
        self
    }
    pub fn with_days(mut self, days: u32) -> Self {
        self.dataset.days = days;
        self
    }
    /// The end of the data, epoch seconds.
    pub fn with_now(mut self, now: i64) -> Self {
        self.dataset.now = now;
        self
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.dataset.seed = seed;
        self
    }
    pub fn with_short_fraction(mut self, fraction: f64) -> Self {
        self.dataset.short_fraction = fraction;
        self
    }
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }
    pub fn with_rate_limit(mut self, per_10s: u32) -> Self {
        self.rate_limit = per_10s;
        self
    }
    pub fn with_faults(mut self, faults: IntercomFaults) -> Self {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::faults::{FaultKind, merge_patch};

    #[test]
    fn fault_patch_merges() {
        let cur = IntercomFaults { fail_every: Some(3), ..IntercomFaults::default() };
        let f: IntercomFaults =
            merge_patch(&cur, &json!({"latency_ms": 5, "endpoints": "both", "script": ["drop", "ok"]})).unwrap();
        assert_eq!(f.fail_every, Some(3));
        assert_eq!(f.latency_ms, 5);
        assert_eq!(f.endpoints, IntercomTarget::All);
        assert_eq!(f.script, vec![FaultKind::Drop, FaultKind::None]);
        let f: IntercomFaults = merge_patch(&f, &json!({"fail_every": null})).unwrap();
        assert_eq!(f.fail_every, None);
        assert!(merge_patch::<IntercomFaults>(&f, &json!({"latency_ms": "x"})).is_err());
    }
}
