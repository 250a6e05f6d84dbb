//! Rule-based classification: keywords per category, one automaton for all.

use std::collections::HashMap;

use aho_corasick::MatchKind;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{Classification, Context, Document, Outcome, Stage, StageCounter, StageError};

use crate::ConfigError;
use crate::stage::KeywordMatcher;

/// The `classifier` name set on every classification this stage makes.
pub const CLASSIFIER: &str = "rules";

fn default_category() -> String {
    "other".to_string()
}

/// One rule: a category and the keywords that vote for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub category: String,
    pub keywords: Vec<String>,
}

/// `[[stages]] kind = "classify"` with `[[stages.rules]]` tables.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesClassifyConfig {
    /// Ordered rules; on a tie the earlier rule wins.
    pub rules: Vec<Rule>,
    /// The category when no keyword matches (confidence 0).
    #[serde(default = "default_category")]
    pub default_category: String,
}

/// Counts keyword hits per category over the whole text (case-insensitive,
/// substrings, longest match at each place); the category with the most hits
/// wins, ties go to the earlier rule, and confidence is the winner's share of
/// all hits.
#[derive(Clone, Debug)]
pub struct RulesClassifier {
    config: RulesClassifyConfig,
    matcher: KeywordMatcher,
    /// Category names, in the order of their first rule.
    categories: Vec<String>,
    /// For every keyword of the automaton: (category index, keyword as configured).
    keywords: Vec<(usize, String)>,
}

impl RulesClassifier {
    pub fn new(config: RulesClassifyConfig) -> Result<Self, ConfigError> {
        if config.rules.is_empty() {
            return Err(ConfigError(
                "classify.rules = [] must hold at least one rule ({ category = \"...\", keywords = [...] })".into(),
            ));
        }
        if config.default_category.trim().is_empty() {
            return Err(ConfigError(format!(
                "classify.default_category = {:?} must not be empty",
                config.default_category
            )));
        }
        let mut categories: Vec<String> = Vec::new();
        let mut keywords: Vec<(usize, String)> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (r, rule) in config.rules.iter().enumerate() {
            if rule.category.trim().is_empty() {
                return Err(ConfigError(format!(
                    "classify.rules[{r}].category = {:?} must not be empty",
                    rule.category
                )));
            }
            if rule.keywords.is_empty() {
                return Err(ConfigError(format!(
                    "classify.rules[{r}] (category {:?}) has no keywords; give at least one",
                    rule.category
                )));
            }
            let category = match categories.iter().position(|c| *c == rule.category) {
                Some(c) => c,
                None => {
                    categories.push(rule.category.clone());
                    categories.len() - 1
                }
            };
            for keyword in &rule.keywords {
                if keyword.trim().is_empty() {
                    return Err(ConfigError(format!(
                        "classify.rules[{r}].keywords contains {keyword:?}; keywords must not be empty"
                    )));
                }
                if let Some(&earlier) = seen.get(&keyword.to_lowercase()) {
                    return Err(ConfigError(format!(
                        "classify.rules[{r}].keywords contains {keyword:?}, already a keyword of rules[{earlier}] \
                         (category {:?}); a keyword can vote for one rule only",
                        config.rules[earlier].category
                    )));
                }
                seen.insert(keyword.to_lowercase(), r);
                keywords.push((category, keyword.clone()));
            }
        }
        let patterns: Vec<String> = keywords.iter().map(|(_, k)| k.clone()).collect();
        let matcher = KeywordMatcher::new(&patterns, MatchKind::LeftmostLongest)
            .map_err(|e| ConfigError(format!("classify.rules: cannot build the keyword automaton: {e}")))?;
        Ok(Self { config, matcher, categories, keywords })
    }

    /// The classification of `text`.
    pub fn classify(&self, text: &str) -> Classification {
        let mut hits = vec![0u32; self.categories.len()];
        // Distinct keywords in the order first seen, per category.
        let mut matched: Vec<usize> = Vec::new();
        self.matcher.for_each(text, |k| {
            hits[self.keywords[k].0] += 1;
            if !matched.contains(&k) {
                matched.push(k);
            }
        });
        let total: u32 = hits.iter().sum();
        if total == 0 {
            return Classification {
                category: self.config.default_category.clone(),
                confidence: 0.0,
                reason: Some("no keyword matched".to_string()),
                classifier: CLASSIFIER.to_string(),
            };
        }
        // max_by_key keeps the last maximum; scan in reverse so ties go to the earliest category.
        let (winner, &winner_hits) = hits.iter().enumerate().rev().max_by_key(|(_, h)| **h).expect("categories");
        let reason = matched
            .iter()
            .filter(|&&k| self.keywords[k].0 == winner)
            .map(|&k| self.keywords[k].1.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Classification {
            category: self.categories[winner].clone(),
            confidence: winner_hits as f32 / total as f32,
            reason: Some(format!("matched: {reason}")),
            classifier: CLASSIFIER.to_string(),
        }
    }
}

#[async_trait]
impl Stage for RulesClassifier {
    fn name(&self) -> &str {
        "classify"
    }

    fn fingerprint(&self) -> Option<String> {
        crate::stage::config_fingerprint(1, &self.config)
    }

    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        Ok(docs
            .into_iter()
            .map(|mut doc| {
                doc.classification = Some(self.classify(&doc.record.text));
                Outcome::Kept(doc)
            })
            .collect())
    }

    fn counter(&self) -> Option<StageCounter> {
        Some(StageCounter::Classified)
    }
}
