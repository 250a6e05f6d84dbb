//! The fingerprint of a pipeline's stages, stored with each document it
//! makes, so a later run can tell it would make the same row.

use sha2::{Digest, Sha256};

use crate::record::to_hex;
use crate::stage::StageSpec;

/// The fingerprint of a pipeline's stages, in order: what shapes the rows
/// it stores besides the record's content. `None` when a stage cannot tell
/// its own, so nothing is ever skipped by mistake.
pub(crate) fn pipeline_fingerprint(stages: &[StageSpec]) -> Option<String> {
    let mut hasher = Sha256::new();
    hasher.update(b"sluice pipeline v1\0");
    for spec in stages {
        let stage = spec.stage.as_ref();
        hasher.update(stage.name().as_bytes());
        hasher.update([0u8]);
        hasher.update(stage.fingerprint()?.as_bytes());
        hasher.update([0u8]);
    }
    Some(to_hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::context::Context;
    use crate::error::StageError;
    use crate::record::Document;
    use crate::stage::{Outcome, Stage};

    struct Configured(&'static str, Option<&'static str>);

    #[async_trait]
    impl Stage for Configured {
        fn name(&self) -> &str {
            self.0
        }
        async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
            Ok(docs.into_iter().map(Outcome::Kept).collect())
        }
        fn fingerprint(&self) -> Option<String> {
            self.1.map(str::to_string)
        }
    }

    fn specs(stages: &[(&'static str, Option<&'static str>)]) -> Vec<StageSpec> {
        stages.iter().map(|&(name, fp)| StageSpec::new(Arc::new(Configured(name, fp)))).collect()
    }

    #[test]
    fn a_pipeline_is_fingerprinted_only_when_every_stage_tells_its_own() {
        let a = pipeline_fingerprint(&specs(&[("chunk", Some("1000/100")), ("embed", Some("model-a"))]));
        assert!(a.is_some());
        assert_eq!(a, pipeline_fingerprint(&specs(&[("chunk", Some("1000/100")), ("embed", Some("model-a"))])));
        assert_eq!(pipeline_fingerprint(&specs(&[("chunk", Some("1000/100")), ("custom", None)])), None);
        assert!(pipeline_fingerprint(&[]).is_some(), "no stage: the row is the record itself");
    }

    #[test]
    fn a_changed_stage_config_order_or_stage_changes_the_fingerprint() {
        let base = pipeline_fingerprint(&specs(&[("chunk", Some("1000/100")), ("embed", Some("model-a"))]));
        let others = [
            specs(&[("chunk", Some("800/100")), ("embed", Some("model-a"))]),
            specs(&[("chunk", Some("1000/100")), ("embed", Some("model-b"))]),
            specs(&[("embed", Some("model-a")), ("chunk", Some("1000/100"))]),
            specs(&[("chunk", Some("1000/100"))]),
            // The name/value boundary is kept: "ab"+"c" is not "a"+"bc".
            specs(&[("chunk1", Some("000/100")), ("embed", Some("model-a"))]),
        ];
        for other in others {
            assert_ne!(base, pipeline_fingerprint(&other));
        }
    }
}
