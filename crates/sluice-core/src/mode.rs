//! How a run schedules its stages: streaming (the default) or the legacy
//! batch mode. Written in `RunStarted` and chosen by `Settings::mode`.

use serde::{Deserialize, Serialize};

/// How the stages are scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fetch, every stage and commit run at once on different batches.
    #[default]
    Streaming,
    /// Fetch everything, then each stage over everything, then store (legacy).
    Batch,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Streaming => "streaming",
            Mode::Batch => "batch",
        }
    }
}
