//! `story_creation` (when `auto_create_stories` is set): one story per theme
//! of the run with at least `min_size` documents: a title, a summary and the
//! ids of its documents. Built from the themes and the stored facets, so it
//! is free, deterministic, and writing it again replaces it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_core::{Context, Counts, EngineError, PhaseInput, PhaseOutput, PhaseResult, PhaseTask};

use super::STORY_CREATION;
use crate::ConfigError;

/// `[phases.story_creation]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoryConfig {
    /// Themes with fewer documents get no story (1..=1000000).
    #[serde(default = "default_min_size")]
    pub min_size: usize,
}

impl Default for StoryConfig {
    fn default() -> Self {
        Self { min_size: default_min_size() }
    }
}

fn default_min_size() -> usize {
    3
}

pub struct StoryCreation {
    config: StoryConfig,
}

impl StoryCreation {
    pub fn new(config: StoryConfig) -> Result<Self, ConfigError> {
        if !(1..=1_000_000).contains(&config.min_size) {
            return Err(ConfigError(format!(
                "phases.story_creation.min_size = {} is out of range (allowed: 1-1000000)",
                config.min_size
            )));
        }
        Ok(Self { config })
    }
}

#[async_trait]
impl PhaseTask for StoryCreation {
    fn name(&self) -> &str {
        STORY_CREATION
    }

    async fn run(&self, _ctx: &Context, input: PhaseInput<'_>) -> Result<PhaseOutput, EngineError> {
        let themes = input.store.phase_results(input.run_id, "theme").await?;
        // Sentiment of each document, from facet_extraction when it ran.
        let mut sentiments: BTreeMap<String, String> = BTreeMap::new();
        input
            .for_each_document(|doc| {
                if let Some(Value::String(s)) = doc.annotations.get("facets").and_then(|f| f.get("sentiment")) {
                    sentiments.insert(doc.record.id, s.clone());
                }
            })
            .await?;
        let mut results = Vec::new();
        // Documents of the themes too small for a story: the count the run's end reports as left out.
        let mut left_out = 0u64;
        for theme in themes {
            let ids: Vec<&str> =
                theme.value["document_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if ids.len() < self.config.min_size {
                left_out += ids.len() as u64;
                continue;
            }
            let label = theme.value["label"].as_str().unwrap_or(&theme.key);
            let mut feelings: BTreeMap<&str, usize> = BTreeMap::new();
            for id in &ids {
                if let Some(s) = sentiments.get(*id) {
                    *feelings.entry(s).or_default() += 1;
                }
            }
            let mood = feelings.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).map(|(s, n)| (*s, *n));
            let mut summary = format!("{} conversations about {label}", ids.len());
            if let Some(category) = theme.value["top_category"].as_str() {
                summary.push_str(&format!(", mostly classified {category}"));
            }
            if let Some((sentiment, n)) = mood {
                summary.push_str(&format!("; {n} of them {sentiment}"));
            }
            summary.push('.');
            let key = theme.key.replacen("theme-", "story-", 1);
            results.push(PhaseResult {
                kind: "story".into(),
                key,
                value: json!({
                    "title": title_case(label),
                    "summary": summary,
                    "theme": theme.key,
                    "conversation_ids": ids,
                }),
            });
        }
        let counts = Counts { stored: results.len() as u64, filtered: left_out, ..Counts::default() };
        Ok(PhaseOutput { results, counts, ..PhaseOutput::default() })
    }
}

fn title_case(label: &str) -> String {
    let mut chars = label.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
