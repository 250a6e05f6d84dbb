//! Finding the run a resume means, one way for `sluice run --resume` and
//! `POST /api/pipeline/run` with `resume`: among the recent runs that match
//! (by pipeline name, or by date range), the newest that can be resumed.

use sluice_core::{RunInfo, RunStatus, Store, StoreError};

/// How many of the most recent runs a resume looks through.
const RUNS_SEARCHED: usize = 1000;

/// Why `run` cannot be resumed, if it cannot: it is completed or active, or
/// nothing of it was committed.
pub fn why_not_resumable(run: &RunInfo) -> Option<String> {
    if run.status == RunStatus::Completed {
        return Some(format!("run {} is completed: nothing to resume", run.id));
    }
    if !run.status.is_resumable() {
        return Some(format!("run {} is {}: only stopped, failed or stopping runs can be resumed", run.id, run.status));
    }
    if run.checkpoint.as_ref().is_none_or(|c| c.is_empty()) {
        return Some(format!("run {} has an empty checkpoint: nothing was committed, start a new run instead", run.id));
    }
    None
}

/// The newest recent run that `matches` and can be resumed; else
/// `Err(the newest run that matches)`, to say why it cannot (`None`: no run matches).
pub async fn find_resumable(
    store: &dyn Store,
    matches: impl Fn(&RunInfo) -> bool,
) -> Result<Result<RunInfo, Option<RunInfo>>, StoreError> {
    let mut candidates = store.list_runs(RUNS_SEARCHED).await?.into_iter().filter(|run| matches(run)).peekable();
    let newest = candidates.peek().cloned();
    Ok(candidates.find(|run| why_not_resumable(run).is_none()).ok_or(newest))
}
