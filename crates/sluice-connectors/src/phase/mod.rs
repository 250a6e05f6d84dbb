//! The phases after classification, in the runbook's order:
//! `embedding_generation`, `facet_extraction`, `theme_extraction` and
//! `story_creation`. Each reads the store and writes what it finds, with its
//! own place in the checkpoint (see [`sluice_core::PhaseSpec`]).

pub mod facets;
pub mod stories;
pub mod theme_fit;
pub mod themes;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::{PhaseSpec, StageSpec};

use crate::ConfigError;
use crate::stage::embed::{EmbedConfig, EmbedStage};

pub use facets::{FacetConfig, FacetStage};
pub use stories::{StoryConfig, StoryCreation};
pub use themes::{ThemeConfig, ThemeExtraction};

pub const EMBEDDING_GENERATION: &str = "embedding_generation";
pub const FACET_EXTRACTION: &str = "facet_extraction";
pub const THEME_EXTRACTION: &str = "theme_extraction";
pub const STORY_CREATION: &str = "story_creation";

/// `[phases.*]`: the later phases a run goes through, each present table
/// turning its phase on. They always run in the order above.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhasesConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_generation: Option<EmbedConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facet_extraction: Option<FacetConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme_extraction: Option<ThemeConfig>,
    /// Runs only when `auto_create_stories` is set (the runbook's flag);
    /// defaults apply when this table is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub story_creation: Option<StoryConfig>,
}

impl PhasesConfig {
    pub fn is_empty(&self) -> bool {
        self.embedding_generation.is_none()
            && self.facet_extraction.is_none()
            && self.theme_extraction.is_none()
            && self.story_creation.is_none()
    }

    /// The embedding phase's settings, for `EMBEDDING_BATCH_SIZE`.
    pub fn embed_mut(&mut self) -> Option<&mut EmbedConfig> {
        self.embedding_generation.as_mut()
    }
}

/// Builds the configured phases in order. Theme extraction needs embeddings
/// and stories need themes; a configuration missing one is refused.
pub fn build_phases(config: &PhasesConfig, auto_create_stories: bool) -> Result<Vec<PhaseSpec>, ConfigError> {
    let mut phases = Vec::new();
    if let Some(embed) = &config.embedding_generation {
        let stage =
            EmbedStage::new(embed.clone()).map_err(|e| ConfigError(format!("phases.{EMBEDDING_GENERATION}: {e}")))?;
        let spec = StageSpec::new(Arc::new(stage)).workers(EmbedStage::MIN_WORKERS);
        phases.push(PhaseSpec::documents(EMBEDDING_GENERATION, vec![spec]));
    }
    if let Some(facets) = &config.facet_extraction {
        let stage = FacetStage::new(facets.clone())?;
        phases.push(PhaseSpec::documents(FACET_EXTRACTION, vec![StageSpec::new(Arc::new(stage))]));
    }
    if let Some(themes) = &config.theme_extraction {
        if config.embedding_generation.is_none() {
            return Err(ConfigError(format!(
                "phases.{THEME_EXTRACTION} clusters embeddings: add a [phases.{EMBEDDING_GENERATION}] table"
            )));
        }
        phases.push(PhaseSpec::Task(Arc::new(ThemeExtraction::new(themes.clone())?)));
    }
    if auto_create_stories {
        if config.theme_extraction.is_none() {
            // Two ways out: the phases stories need, or no stories.
            let embeddings = match config.embedding_generation {
                Some(_) => String::new(),
                None => format!(" (and a [phases.{EMBEDDING_GENERATION}] table, which themes cluster)"),
            };
            return Err(ConfigError(format!(
                "auto_create_stories makes one story per theme: add a [phases.{THEME_EXTRACTION}] table{embeddings}, \
                 or set auto_create_stories = false"
            )));
        }
        let stories = config.story_creation.clone().unwrap_or_default();
        phases.push(PhaseSpec::Task(Arc::new(StoryCreation::new(stories)?)));
    }
    Ok(phases)
}
