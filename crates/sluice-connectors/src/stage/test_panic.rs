//! `[[stages]] kind = "test_panic"`: a stage that panics on a record whose text
//! contains `contains`, so the tests of the binary can show that a panicking
//! stage fails the run instead of hanging it. Compiled only with the
//! `test-faults` feature, which only the binary's dev-dependency turns on: a
//! build of the binary for use never has it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sluice_core::{Context, Document, Outcome, Stage, StageError};

use crate::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPanicConfig {
    /// The text that makes the stage panic.
    pub contains: String,
}

#[derive(Debug)]
pub struct TestPanicStage {
    contains: String,
}

#[async_trait]
impl Stage for TestPanicStage {
    fn name(&self) -> &str {
        "test_panic"
    }

    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        if let Some(doc) = docs.iter().find(|d| d.record.text.contains(&self.contains)) {
            panic!("test_panic: record {} contains {:?}", doc.id(), self.contains);
        }
        Ok(docs.into_iter().map(Outcome::Kept).collect())
    }
}

impl crate::kind::StageKind for TestPanicConfig {
    fn build(&self) -> Result<Arc<dyn Stage>, ConfigError> {
        if self.contains.is_empty() {
            return Err(ConfigError("test_panic.contains must not be empty".into()));
        }
        Ok(Arc::new(TestPanicStage { contains: self.contains.clone() }))
    }
}
