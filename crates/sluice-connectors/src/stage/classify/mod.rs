//! `[[stages]] kind = "classify"`: which classifier, by `provider`.
//!
//! - `provider = "rules"` (the default, offline): keyword rules, see
//!   [`rules`].
//! - `provider = "llm"`: an OpenAI-compatible chat model, see
//!   [`llm`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

#[cfg(feature = "openai")]
pub mod llm;
pub mod rules;

#[cfg(feature = "openai")]
use self::llm::LlmClassifyConfig;
use self::rules::RulesClassifyConfig;

/// Providers `provider` accepts.
pub const PROVIDERS: [&str; 2] = ["rules", "llm"];

/// The settings of a classify stage, by provider.
#[derive(Clone, Debug)]
pub enum ClassifyConfig {
    Rules(RulesClassifyConfig),
    /// Needs the `openai` feature.
    #[cfg(feature = "openai")]
    Llm(LlmClassifyConfig),
}

impl From<RulesClassifyConfig> for ClassifyConfig {
    fn from(config: RulesClassifyConfig) -> Self {
        ClassifyConfig::Rules(config)
    }
}

#[cfg(feature = "openai")]
impl From<LlmClassifyConfig> for ClassifyConfig {
    fn from(config: LlmClassifyConfig) -> Self {
        ClassifyConfig::Llm(config)
    }
}

impl ClassifyConfig {
    pub fn provider(&self) -> &'static str {
        match self {
            ClassifyConfig::Rules(_) => "rules",
            #[cfg(feature = "openai")]
            ClassifyConfig::Llm(_) => "llm",
        }
    }
}

impl Serialize for ClassifyConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let inner = match self {
            ClassifyConfig::Rules(c) => serde_json::to_value(c),
            #[cfg(feature = "openai")]
            ClassifyConfig::Llm(c) => serde_json::to_value(c),
        }
        .map_err(S::Error::custom)?;
        let mut map = match inner {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        map.insert("provider".into(), Value::from(self.provider()));
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ClassifyConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = Map::<String, Value>::deserialize(deserializer)?;
        let provider = match map.remove("provider") {
            None => "rules".to_string(),
            Some(Value::String(p)) => p,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "classify.provider = {other} is not a string (allowed: {})",
                    PROVIDERS.join(", ")
                )));
            }
        };
        let rest = Value::Object(map);
        match provider.as_str() {
            "rules" => serde_json::from_value(rest)
                .map(ClassifyConfig::Rules)
                .map_err(|e| D::Error::custom(format!("classify (provider = \"rules\"): {e}"))),
            #[cfg(feature = "openai")]
            "llm" => serde_json::from_value(rest)
                .map(ClassifyConfig::Llm)
                .map_err(|e| D::Error::custom(format!("classify (provider = \"llm\"): {e}"))),
            #[cfg(not(feature = "openai"))]
            "llm" => Err(D::Error::custom(crate::lacking::needs("classify.provider = \"llm\"", "openai"))),
            other => Err(D::Error::custom(format!(
                "classify.provider = {other:?} is not supported (allowed: {})",
                PROVIDERS.join(", ")
            ))),
        }
    }
}

/// `kind = "classify"`: the classifier `provider` names.
impl crate::kind::StageKind for ClassifyConfig {
    fn build(&self) -> Result<std::sync::Arc<dyn sluice_core::Stage>, crate::ConfigError> {
        Ok(match self {
            ClassifyConfig::Rules(c) => std::sync::Arc::new(rules::RulesClassifier::new(c.clone())?),
            #[cfg(feature = "openai")]
            ClassifyConfig::Llm(c) => std::sync::Arc::new(llm::LlmClassifier::new(c.clone())?),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[cfg(feature = "openai")]
    #[test]
    fn rules_is_the_default_provider_and_both_round_trip() {
        let rules: ClassifyConfig =
            serde_json::from_value(json!({"rules": [{"category": "a", "keywords": ["x"]}]})).unwrap();
        assert!(matches!(rules, ClassifyConfig::Rules(_)));
        let saved = serde_json::to_value(&rules).unwrap();
        assert_eq!(saved["provider"], "rules");
        assert!(matches!(serde_json::from_value::<ClassifyConfig>(saved).unwrap(), ClassifyConfig::Rules(_)));

        let llm: ClassifyConfig = serde_json::from_value(
            json!({"provider": "llm", "categories": ["a", "b"], "model": "m", "api_key": "sk-secret"}),
        )
        .unwrap();
        let ClassifyConfig::Llm(config) = &llm else { panic!("llm") };
        assert_eq!(config.endpoint.api_key.as_ref().map(|k| k.expose()), Some("sk-secret"));
        let saved = serde_json::to_string(&llm).unwrap();
        assert!(!saved.contains("sk-secret") && saved.contains("\"provider\":\"llm\""), "{saved}");
    }

    #[test]
    fn bad_providers_and_keys_are_named() {
        let err = serde_json::from_value::<ClassifyConfig>(json!({"provider": "magic"})).unwrap_err().to_string();
        assert!(err.contains("magic") && err.contains("rules, llm"), "{err}");
        #[cfg(feature = "openai")]
        {
            let err =
                serde_json::from_value::<ClassifyConfig>(json!({"provider": "llm", "categories": ["a"], "modle": "x"}))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("modle"), "{err}");
        }
    }

    #[cfg(not(feature = "openai"))]
    #[test]
    fn the_llm_provider_without_its_feature_names_the_feature() {
        let err = serde_json::from_value::<ClassifyConfig>(json!({"provider": "llm", "categories": ["a"]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("provider = \"llm\"") && err.contains("`openai` feature"), "{err}");
    }
}
