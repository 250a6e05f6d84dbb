//! The body of `POST /api/pipeline/run`.

use serde::Deserialize;
use utoipa::ToSchema;

/// `POST /api/pipeline/run`: every field optional; the pipeline file supplies the rest.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Backfill the last N days (1-3650): from today - N to today (UTC dates).
    pub days: Option<i64>,
    /// Start date `YYYY-MM-DD` (with `date_to`, instead of `days`).
    pub date_from: Option<String>,
    /// End date `YYYY-MM-DD`.
    pub date_to: Option<String>,
    /// Run the story creation phase after theme extraction.
    pub auto_create_stories: Option<bool>,
    /// Resume a stopped/failed run instead of starting one.
    pub resume: Option<bool>,
    /// With `resume`: this run, whatever its date range.
    pub resume_run_id: Option<i64>,
    /// Stop after this many conversations in total (counted across resumes).
    pub max_conversations: Option<i64>,
    /// Read only what changed since the pipeline's last completed run
    /// (docs/incremental.md); not with `resume` or a date range.
    pub incremental: Option<bool>,
    /// Check the request and the configuration, start nothing.
    pub dry_run: Option<bool>,
    /// Create a distributed run for `sluice worker` processes to share
    /// (PostgreSQL store only; docs/distributed.md); this server does not work on it.
    pub distributed: Option<bool>,
}
