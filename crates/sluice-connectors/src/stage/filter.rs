//! Filtering: drop documents that are too short, too long, contain a banned
//! phrase, or miss a required field. Each drop says which rule and why.

use aho_corasick::MatchKind;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::{Context, Document, Outcome, Stage, StageError};

use super::KeywordMatcher;
use crate::ConfigError;

fn default_min_chars() -> usize {
    20
}

/// `[[stages]] kind = "filter"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Fewer characters (not bytes) than this: filtered.
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
    /// More characters than this: filtered. No limit when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chars: Option<usize>,
    /// Texts containing any of these (case-insensitive substrings): filtered.
    #[serde(default)]
    pub drop_if_contains: Vec<String>,
    /// Field keys that must be present and not null.
    #[serde(default)]
    pub require_fields: Vec<String>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            min_chars: default_min_chars(),
            max_chars: None,
            drop_if_contains: Vec::new(),
            require_fields: Vec::new(),
        }
    }
}

/// Applies the rules in order: `min_chars`, `max_chars`, `drop_if_contains`,
/// `require_fields`; the first that drops a document gives the reason.
#[derive(Clone, Debug)]
pub struct FilterStage {
    config: FilterConfig,
    banned: Option<KeywordMatcher>,
}

impl FilterStage {
    pub fn new(config: FilterConfig) -> Result<Self, ConfigError> {
        if let Some(max) = config.max_chars {
            if max == 0 {
                return Err(ConfigError("filter.max_chars = 0 must be at least 1".into()));
            }
            if max < config.min_chars {
                return Err(ConfigError(format!(
                    "filter.max_chars = {max} must not be smaller than filter.min_chars = {}",
                    config.min_chars
                )));
            }
        }
        if let Some(bad) = config.drop_if_contains.iter().find(|s| s.is_empty()) {
            return Err(ConfigError(format!(
                "filter.drop_if_contains contains {bad:?}; an empty string matches everything"
            )));
        }
        if let Some(bad) = config.require_fields.iter().find(|s| s.trim().is_empty()) {
            return Err(ConfigError(format!("filter.require_fields contains {bad:?}, which is not a field key")));
        }
        let banned = if config.drop_if_contains.is_empty() {
            None
        } else {
            Some(
                KeywordMatcher::new(&config.drop_if_contains, MatchKind::LeftmostFirst)
                    .map_err(|e| ConfigError(format!("filter.drop_if_contains: {e}")))?,
            )
        };
        Ok(Self { config, banned })
    }

    /// Why `doc` is dropped, or `None` when it passes.
    pub fn check(&self, doc: &Document) -> Option<String> {
        let text = &doc.record.text;
        let config = &self.config;
        // Counting chars is only needed near the limits: a byte count bounds it.
        let too_short = config.min_chars > 0 && text.len() < config.min_chars.saturating_mul(4);
        let maybe_too_long = config.max_chars.is_some_and(|max| text.len() > max);
        if too_short || maybe_too_long {
            let chars = text.chars().count();
            if chars < config.min_chars {
                return Some(format!("too short: {chars} chars < min_chars {}", config.min_chars));
            }
            if let Some(max) = config.max_chars
                && chars > max
            {
                return Some(format!("too long: {chars} chars > max_chars {max}"));
            }
        }
        if let Some(banned) = &self.banned
            && let Some(k) = banned.first(text)
        {
            return Some(format!("contains {:?} (drop_if_contains)", config.drop_if_contains[k]));
        }
        for key in &config.require_fields {
            match doc.record.fields.get(key) {
                None => return Some(format!("missing required field {key:?} (require_fields)")),
                Some(Value::Null) => return Some(format!("required field {key:?} is null (require_fields)")),
                Some(_) => {}
            }
        }
        None
    }
}

#[async_trait]
impl Stage for FilterStage {
    fn name(&self) -> &str {
        "filter"
    }

    fn fingerprint(&self) -> Option<String> {
        super::config_fingerprint(1, &self.config)
    }

    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        Ok(docs
            .into_iter()
            .map(|doc| match self.check(&doc) {
                Some(reason) => Outcome::Filtered { doc, reason },
                None => Outcome::Kept(doc),
            })
            .collect())
    }
}

/// `kind = "filter"`.
impl crate::kind::StageKind for FilterConfig {
    fn build(&self) -> Result<std::sync::Arc<dyn Stage>, ConfigError> {
        Ok(std::sync::Arc::new(FilterStage::new(self.clone())?))
    }
}
