//! What an incremental run and the schedule need that the server's state
//! holds: the span of a new incremental run, and the schedule as shown.

use serde::Serialize;
use sluice_connectors::{PipelineFile, incremental};
use sluice_core::Store;
use utoipa::ToSchema;

use super::error::ApiError;

/// The schedule, as `/api/pipeline/active` shows it: `every_secs` (`--every`) or `cron` (`--cron`).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, ToSchema)]
pub struct ScheduleDoc {
    /// Seconds between ticks (`--every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// The cron expression (`--cron`), evaluated in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// When the next incremental run starts (RFC 3339 UTC).
    pub next_tick: Option<String>,
    /// Ticks that started a run, and ticks skipped while one was active.
    pub started: u64,
    pub skipped: u64,
}

/// Sets the span of an incremental run of `file` from the pipeline's high-water mark.
pub async fn plan_incremental(store: &dyn Store, file: &mut PipelineFile) -> Result<(), ApiError> {
    let (pipeline, source) = incremental::target(file)?;
    let mark = store.high_water_mark(&pipeline, &source).await?;
    let plan = incremental::apply(file, mark.as_ref(), incremental::now())?;
    tracing::info!(after_run = plan.after_run, "{}", plan.message);
    Ok(())
}
