//! `facet_extraction` by rules: the product area a document is about, its
//! sentiment and the writer's intent, from keyword lists. Offline, free and
//! deterministic; the lists are configurable.

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_core::{Context, Document, Outcome, Stage, StageError};

use crate::ConfigError;

/// `[phases.facet_extraction]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacetConfig {
    /// Only `rules` for now.
    #[serde(default = "rules")]
    pub provider: String,
    /// Product area → keywords (matched case-insensitively). Defaults cover
    /// a typical SaaS support queue.
    #[serde(default = "default_product_areas")]
    pub product_areas: BTreeMap<String, Vec<String>>,
    /// Intent → keywords.
    #[serde(default = "default_intents")]
    pub intents: BTreeMap<String, Vec<String>>,
}

impl Default for FacetConfig {
    fn default() -> Self {
        Self { provider: rules(), product_areas: default_product_areas(), intents: default_intents() }
    }
}

fn rules() -> String {
    "rules".into()
}

fn table(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries.iter().map(|(k, words)| (k.to_string(), words.iter().map(|w| w.to_string()).collect())).collect()
}

fn default_product_areas() -> BTreeMap<String, Vec<String>> {
    table(&[
        ("billing", &["invoice", "billing", "charge", "refund", "payment", "subscription", "price", "plan"]),
        ("account", &["login", "log in", "password", "sign in", "account", "2fa", "sso", "locked out"]),
        ("performance", &["slow", "timeout", "latency", "loading", "lag", "crash", "freez"]),
        ("integrations", &["integration", "api", "webhook", "slack", "zapier", "salesforce", "export", "import"]),
        ("mobile", &["mobile", "ios", "android", "iphone", "app store"]),
        ("notifications", &["notification", "email alert", "reminder", "digest"]),
    ])
}

fn default_intents() -> BTreeMap<String, Vec<String>> {
    table(&[
        ("bug_report", &["bug", "broken", "error", "doesn't work", "does not work", "not working", "fails", "crash"]),
        ("feature_request", &["feature", "would be great", "would love", "please add", "wish", "could you add"]),
        ("cancellation", &["cancel", "close my account", "unsubscribe", "downgrade"]),
        ("question", &["how do i", "how can i", "is it possible", "can i", "where is", "?"]),
    ])
}

const POSITIVE: &[&str] =
    &["thank", "great", "love", "awesome", "perfect", "excellent", "helpful", "appreciate", "works now", "resolved"];
const NEGATIVE: &[&str] = &[
    "frustrat",
    "angry",
    "terrible",
    "awful",
    "unacceptable",
    "disappoint",
    "annoy",
    "broken",
    "worst",
    "still not",
    "urgent",
    "asap",
];

/// A keyword list per label, matched in one pass.
struct Matcher {
    labels: Vec<String>,
    automaton: AhoCorasick,
    /// The label of each pattern.
    pattern_label: Vec<usize>,
}

impl Matcher {
    fn new(what: &str, table: &BTreeMap<String, Vec<String>>) -> Result<Self, ConfigError> {
        let mut labels = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_label = Vec::new();
        for (label, words) in table {
            if words.iter().any(|w| w.trim().is_empty()) {
                return Err(ConfigError(format!("phases.facet_extraction.{what}.{label} contains an empty keyword")));
            }
            for word in words {
                patterns.push(word.to_lowercase());
                pattern_label.push(labels.len());
            }
            labels.push(label.clone());
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| ConfigError(format!("phases.facet_extraction.{what}: {e}")))?;
        Ok(Self { labels, automaton, pattern_label })
    }

    /// The label with the most keyword hits (ties: the first in name order), if any hit.
    fn best(&self, text: &str) -> Option<&str> {
        let mut hits = vec![0u32; self.labels.len()];
        for m in self.automaton.find_iter(text) {
            hits[self.pattern_label[m.pattern().as_usize()]] += 1;
        }
        let (index, &count) = hits.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?;
        (count > 0).then(|| self.labels[index].as_str())
    }
}

/// Writes `annotations.facets = {product_area, sentiment, intent}`.
pub struct FacetStage {
    areas: Matcher,
    intents: Matcher,
    sentiment: Matcher,
}

impl FacetStage {
    pub fn new(config: FacetConfig) -> Result<Self, ConfigError> {
        if config.provider != "rules" {
            return Err(ConfigError(format!(
                "phases.facet_extraction.provider = {:?} is not supported (allowed: rules)",
                config.provider
            )));
        }
        let sentiment = table(&[("negative", NEGATIVE), ("positive", POSITIVE)]);
        Ok(Self {
            areas: Matcher::new("product_areas", &config.product_areas)?,
            intents: Matcher::new("intents", &config.intents)?,
            sentiment: Matcher::new("sentiment", &sentiment)?,
        })
    }

    pub fn facets(&self, text: &str) -> serde_json::Value {
        json!({
            "product_area": self.areas.best(text).unwrap_or("other"),
            "sentiment": self.sentiment.best(text).unwrap_or("neutral"),
            "intent": self.intents.best(text).unwrap_or("other"),
        })
    }
}

#[async_trait]
impl Stage for FacetStage {
    fn name(&self) -> &str {
        "facets"
    }

    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        Ok(docs
            .into_iter()
            .map(|mut doc| {
                let facets = self.facets(&doc.record.text);
                doc.annotations.insert("facets".into(), facets);
                Outcome::Kept(doc)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_area_sentiment_and_intent_with_most_hits() {
        let stage = FacetStage::new(FacetConfig::default()).unwrap();
        let f = stage.facets("I was charged twice on my invoice, this is unacceptable. Please refund the payment.");
        assert_eq!(f, json!({"product_area": "billing", "sentiment": "negative", "intent": "other"}));
        let f = stage.facets("Thanks! How do I connect the Slack integration?");
        assert_eq!(f, json!({"product_area": "integrations", "sentiment": "positive", "intent": "question"}));
        let f = stage.facets("hello");
        assert_eq!(f, json!({"product_area": "other", "sentiment": "neutral", "intent": "other"}));
    }

    #[test]
    fn bad_settings_are_refused_with_the_key() {
        let err = FacetStage::new(FacetConfig { provider: "magic".into(), ..FacetConfig::default() }).err().unwrap();
        assert!(err.0.contains("provider = \"magic\""), "{err}");
        let mut config = FacetConfig::default();
        config.intents.insert("empty".into(), vec![" ".into()]);
        assert!(FacetStage::new(config).err().unwrap().0.contains("intents.empty"));
    }
}
