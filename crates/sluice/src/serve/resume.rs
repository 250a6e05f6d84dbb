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
use sluice_connectors::PipelineFile;

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

#[cfg(test)]
mod tests {
    use sluice_core::{Checkpoint, RunStatus};

    use super::*;

    fn stopped_run(checkpoint: Checkpoint) -> RunInfo {
        RunInfo {
            id: 5,
            pipeline: "gen".into(),
            status: RunStatus::Stopped,
            phase: "classification".into(),
            checkpoint: Some(checkpoint),
            config: serde_json::Value::Null,
            date_from: Some("2026-09-02".into()),
            date_to: Some("2026-12-01".into()),
            started_at: String::new(),
            updated_at: String::new(),
            finished_at: None,
            error: None,
        }
    }

    fn saved_file() -> PipelineFile {
        PipelineFile::from_saved(&serde_json::json!({
            "name": "gen",
            "source": {"kind": "generate", "count": 10, "page_size": 5, "latency_ms": 0, "seed": 7},
        }))
        .unwrap()
    }

    #[test]
    fn max_conversations_applies_in_the_first_phase_and_is_refused_after_it() {
        let request = RunRequest {
            resume: Some(true),
            resume_run_id: Some(5),
            max_conversations: Some(300),
            ..Default::default()
        };
        let mut file = saved_file();
        apply(&request, None, &stopped_run(Checkpoint::new("classification")), &mut file).unwrap();
        assert_eq!(file.max_records, Some(300));

        let mut later = Checkpoint::new("classification");
        later.advance_to("embedding_generation");
        let mut file = saved_file();
        let refused = apply(&request, None, &stopped_run(later), &mut file).unwrap_err();
        assert!(refused.error.starts_with("max_conversations:"), "{}", refused.error);
        assert!(refused.error.contains("embedding_generation"), "{}", refused.error);
        assert_eq!(file.max_records, None, "nothing applied");
    }

    #[test]
    fn a_range_that_is_the_runs_own_is_accepted_with_resume_run_id() {
        let request = RunRequest { resume: Some(true), resume_run_id: Some(5), ..Default::default() };
        let own = ("2026-09-02".to_string(), "2026-12-01".to_string());
        let run = stopped_run(Checkpoint::new("classification"));
        apply(&request, Some(&own), &run, &mut saved_file()).unwrap();
        let other = ("2026-11-24".to_string(), "2026-12-01".to_string());
        let refused = apply(&request, Some(&other), &run, &mut saved_file()).unwrap_err();
        assert!(refused.error.contains("covers 2026-09-02..2026-12-01"), "{}", refused.error);
    }
}
