//! The status document of a run: the one shape `sluice status --json` and the
//! HTTP API answer with. Every count in it is read from the checkpoint, so
//! the status and the checkpoint cannot disagree.

use serde::{Deserialize, Serialize};
use sluice_core::{Checkpoint, Counts, RunInfo, RunStatus};
use utoipa::ToSchema;

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RunStatusDoc {
    pub run_id: i64,
    pub pipeline: String,
    #[schema(value_type = String, example = "running")]
    pub status: RunStatus,
    pub current_phase: String,
    pub conversations_fetched: u64,
    pub conversations_filtered: u64,
    pub conversations_classified: u64,
    pub conversations_stored: u64,
    #[schema(value_type = Object)]
    pub counts: Counts,
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Checkpoint>,
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

impl RunStatusDoc {
    pub fn new(run: &RunInfo) -> Self {
        let counts = run.checkpoint.as_ref().map(|c| c.counts).unwrap_or_default();
        Self {
            run_id: run.id,
            pipeline: run.pipeline.clone(),
            status: run.status,
            current_phase: run.checkpoint.as_ref().map_or_else(|| run.phase.clone(), |c| c.phase.clone()),
            conversations_fetched: counts.fetched,
            conversations_filtered: counts.filtered,
            conversations_classified: counts.classified,
            conversations_stored: counts.stored,
            counts,
            checkpoint: run.checkpoint.clone(),
            date_from: run.date_from.clone(),
            date_to: run.date_to.clone(),
            started_at: run.started_at.clone(),
            updated_at: run.updated_at.clone(),
            finished_at: run.finished_at.clone(),
            error: run.error.clone(),
        }
    }
}
