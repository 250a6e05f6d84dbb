//! Incremental runs: a new run that reads only what changed since the
//! pipeline's last completed run.
//!
//! Its span is `[mark - overlap, now)`, the mark being the greatest
//! `updated_at` of the documents the pipeline's last completed run (backfill
//! or incremental) or an earlier run of it stored ([`Store::high_water_mark`]),
//! or, when they stored none, the end of that run's range. The span is set on
//! the source before the run is saved, so the run records it as its range
//! (`date_from`/`date_to`, RFC 3339) and a resume reads the same span. The
//! overlap is read again for clock skew and late writes; the memo makes it
//! cost no paid call. A pipeline with no completed run gets a backfill of its
//! configured range, and says so.

use sluice_core::store::{HighWaterMark, RunId};

use crate::ConfigError;
use crate::pipeline_file::PipelineFile;
use crate::util::time::{SECS_PER_DAY, format_timestamp, parse_date, parse_rfc3339};

/// What an incremental run will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The completed run it continues, if any.
    pub after_run: Option<RunId>,
    /// The high-water mark, epoch seconds.
    pub mark: Option<i64>,
    /// `[start, end)` read, epoch seconds; `None`: the configured range.
    pub span: Option<(i64, i64)>,
    /// One line for the log.
    pub message: String,
}

/// Whether the file asks for incremental runs (`incremental = true` in `[source]`).
pub fn is_incremental(file: &PipelineFile) -> bool {
    file.source.clone().kind_mut().incremental().is_some_and(|i| i.incremental())
}

/// Makes new runs of the file incremental; answers the pipeline's name and
/// the `source` of its documents, which the high-water mark is read for.
pub fn target(file: &mut PipelineFile) -> Result<(String, String), ConfigError> {
    let tag = file.source.tag();
    let pipeline = file.name.clone().unwrap_or_else(|| "default".into());
    let Some(incremental) = file.source.kind_mut().incremental() else {
        return Err(ConfigError(format!(
            "[source] kind = {tag:?} cannot run incrementally (incremental runs read by updated_at: kind = \"intercom\")"
        )));
    };
    incremental.set_incremental(true);
    Ok((pipeline, incremental.record_source().to_string()))
}

/// Sets the span of an incremental run from the pipeline's high-water mark
/// (`None`: no completed run), `now` being epoch seconds.
pub fn apply(file: &mut PipelineFile, mark: Option<&HighWaterMark>, now: i64) -> Result<Plan, ConfigError> {
    let pipeline = file.name.clone().unwrap_or_else(|| "default".into());
    let tag = file.source.tag();
    let Some(source) = file.source.kind_mut().incremental() else {
        return Err(ConfigError(format!("[source] kind = {tag:?} cannot run incrementally")));
    };
    let backfill = |why: String| Plan {
        after_run: mark.map(|m| m.run.id),
        mark: None,
        span: None,
        message: format!("{why}: this incremental run is a backfill of the configured range"),
    };
    let Some(hwm) = mark else {
        return Ok(backfill(format!("no completed run of pipeline {pipeline:?} yet")));
    };
    let Some(at) = hwm.updated_at.or_else(|| window_end(hwm.run.date_to.as_deref())) else {
        return Ok(backfill(format!("run {} stored no dated documents and has no range", hwm.run.id)));
    };
    let overlap = i64::try_from(source.overlap_secs()).unwrap_or(i64::MAX);
    let start = at.saturating_sub(overlap);
    // A mark ahead of this clock still reads something.
    let end = now.max(start + 1);
    source.set_span(start, end)?;
    Ok(Plan {
        after_run: Some(hwm.run.id),
        mark: Some(at),
        span: Some((start, end)),
        message: format!(
            "incremental run after run {}: high-water mark {}, reading {}..{} ({overlap}s overlap)",
            hwm.run.id,
            format_timestamp(at),
            format_timestamp(start),
            format_timestamp(end)
        ),
    })
}

/// The first second after a recorded range's end: a timestamp (excluded
/// already) or a day (included).
fn window_end(to: Option<&str>) -> Option<i64> {
    let to = to?;
    parse_rfc3339(to).or_else(|| parse_date("date_to", to).ok().map(|day| (day + 1) * SECS_PER_DAY))
}

/// Epoch seconds now.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(all(test, feature = "intercom"))]
mod tests {
    use serde_json::json;
    use sluice_core::{RunInfo, RunStatus};

    use super::*;

    fn intercom() -> PipelineFile {
        let text = "name = \"p\"\n[source]\nkind = \"intercom\"\ndate_from = \"2025-12-01\"\ndate_to = \"2025-12-31\"\noverlap_secs = 60\n";
        toml::from_str(text).unwrap()
    }

    fn completed(id: RunId, date_to: &str, updated_at: Option<i64>) -> HighWaterMark {
        let run = RunInfo {
            id,
            pipeline: "p".into(),
            status: RunStatus::Completed,
            phase: "classification".into(),
            checkpoint: None,
            config: json!({}),
            date_from: None,
            date_to: Some(date_to.into()),
            started_at: String::new(),
            updated_at: String::new(),
            finished_at: None,
            error: None,
        };
        HighWaterMark { run, updated_at }
    }

    #[test]
    fn the_span_starts_at_the_mark_minus_the_overlap() {
        let mut file = intercom();
        assert!(!is_incremental(&file));
        assert_eq!(target(&mut file).unwrap(), ("p".into(), "intercom".into()));
        assert!(is_incremental(&file));
        let plan = apply(&mut file, Some(&completed(3, "2025-12-31", Some(1_767_000_000))), 1_767_100_000).unwrap();
        assert_eq!((plan.after_run, plan.span), (Some(3), Some((1_766_999_940, 1_767_100_000))));
        let window = file.settings().labels.window.unwrap();
        assert_eq!((window.from.as_str(), window.to.as_str()), ("2025-12-29T09:19:00Z", "2025-12-30T13:06:40Z"));
        assert!(plan.message.contains("after run 3"), "{}", plan.message);
    }

    #[test]
    fn without_documents_the_mark_is_the_end_of_the_runs_range() {
        let mut file = intercom();
        let plan = apply(&mut file, Some(&completed(1, "2025-12-31", None)), 1_767_300_000).unwrap();
        assert_eq!(plan.mark, Some(1_767_225_600));
        let plan = apply(&mut file, Some(&completed(2, "2025-12-31T10:00:00Z", None)), 1_767_300_000).unwrap();
        assert_eq!(plan.mark, Some(1_767_175_200));
        // A mark ahead of the clock still reads a second.
        let plan = apply(&mut file, Some(&completed(2, "2025-12-31", Some(1_767_300_000))), 1_767_000_000).unwrap();
        assert_eq!(plan.span, Some((1_767_299_940, 1_767_299_941)));
    }

    #[test]
    fn a_first_incremental_run_is_a_backfill_and_says_so() {
        let mut file = intercom();
        let plan = apply(&mut file, None, 1_767_300_000).unwrap();
        assert_eq!((plan.span, plan.after_run), (None, None));
        assert!(plan.message.contains("no completed run of pipeline \"p\"") && plan.message.contains("backfill"));
        let window = file.settings().labels.window.unwrap();
        assert_eq!((window.from.as_str(), window.to.as_str()), ("2025-12-01", "2025-12-31"));
    }

    #[test]
    fn other_sources_cannot_run_incrementally() {
        let mut file: PipelineFile = toml::from_str("[source]\nkind = \"generate\"\ncount = 3\n").unwrap();
        let err = target(&mut file).unwrap_err().to_string();
        assert!(err.contains("\"generate\" cannot run incrementally"), "{err}");
    }
}
