//! What a resume request may say besides which run to resume. A resume keeps
//! the run's saved settings; each other field is applied to them or refused
//! with a 400 naming it, never dropped:
//! - `max_conversations`: applied (raise or lower the run's cap, counted across resumes), while the run is
//!   still in its first phase;
//! - `days`, `date_from`/`date_to`: find the run (`days`, same-day resume); with `resume_run_id` they must
//!   name the run's own range;
//! - `auto_create_stories`: must match the run's (its phases are part of its checkpoint);
//! - `dry_run`: applied by the caller (checks, starts nothing).

use sluice_core::RunInfo;

use super::error::ApiError;
use super::request::RunRequest;
use crate::config::PipelineFile;

/// Checks done before looking the run up.
pub fn check_request(request: &RunRequest) -> Result<(), ApiError> {
    if request.resume != Some(true) || request.resume_run_id.is_some() || request.days.is_some() {
        return Ok(());
    }
    let field = if request.date_from.is_some() { "date_from" } else { "date_to" };
    if request.date_from.is_some() || request.date_to.is_some() {
        return Err(ApiError::bad_request(format!(
            "{field}: a resume finds its run by days (the range a run was started with today) or by \
             resume_run_id, not by dates"
        )));
    }
    Ok(())
}

/// Applies the request's fields to the saved settings of `run`, the run it resumes.
pub fn apply(
    request: &RunRequest,
    range: Option<&(String, String)>,
    run: &RunInfo,
    file: &mut PipelineFile,
) -> Result<(), ApiError> {
    if let Some((from, to)) = range
        && request.resume_run_id.is_some()
        && (run.date_from.as_deref() != Some(from.as_str()) || run.date_to.as_deref() != Some(to.as_str()))
    {
        let field = if request.days.is_some() { "days" } else { "date_from/date_to" };
        let own = match (&run.date_from, &run.date_to) {
            (Some(f), Some(t)) => format!("covers {f}..{t}"),
            _ => "has no date range".to_string(),
        };
        return Err(ApiError::bad_request(format!(
            "{field}: the request names {from}..{to} but run {} {own}, and a resume keeps the run's range \
             (leave {field} out with resume_run_id)",
            run.id
        )));
    }
    if let Some(wanted) = request.auto_create_stories {
        let saved = file.auto_create_stories.unwrap_or(false);
        if wanted != saved {
            return Err(ApiError::bad_request(format!(
                "auto_create_stories = {wanted}: run {} was started with auto_create_stories = {saved}, and a \
                 resume keeps the run's phases (start a new run to change them)",
                run.id
            )));
        }
    }
    if let Some(max) = request.max_conversations {
        if let Some(checkpoint) = run.checkpoint.as_ref().filter(|c| c.in_later_phase()) {
            return Err(ApiError::bad_request(format!(
                "max_conversations: run {} is past its first phase (now in {}) and fetches no more records",
                run.id, checkpoint.phase
            )));
        }
        file.max_records = Some(max as u64);
    }
    Ok(())
}
