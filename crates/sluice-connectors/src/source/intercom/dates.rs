//! The backfill's date range: UTC calendar dates, both ends included.
//!
//! - `date_from = "2025-10-01"`, `date_to = "2025-12-30"`: conversations
//!   with `2025-10-01T00:00:00Z <= updated_at < 2025-12-31T00:00:00Z`.
//! - `date_to` left out: today (UTC).
//! - `days = N` instead: `date_from` = today − N days, `date_to` = today. So
//!   `days = 90` on 2025-12-30 is 2025-10-01..2025-12-30: every conversation
//!   updated since midnight UTC 90 days ago, up to the run's end.
//!
//! A run stores the resolved dates (`YYYY-MM-DD`) as its `date_from` and
//! `date_to`, and its saved settings hold them instead of `days`, so a resume
//! on a later day reads the same range. Resolving `days` again on the same
//! UTC day gives the same dates, which is how a resume by `days` finds it.
//!
//! An incremental run reads an exact [`Span`] of seconds instead
//! (`updated_from`/`updated_to`, RFC 3339), which it saves the same way.

use crate::ConfigError;
/// The calendar helpers, from [`crate::util::time`] (this path is kept for their callers).
pub use crate::util::time::{SECS_PER_DAY, civil_from_days, format_date, format_timestamp, parse_date, today};

/// An inclusive range of days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateRange {
    pub from: i64,
    pub to: i64,
}

impl DateRange {
    /// First second of the range (epoch seconds, included).
    pub fn start_ts(&self) -> i64 {
        self.from * SECS_PER_DAY
    }

    /// First second after the range (epoch seconds, excluded).
    pub fn end_ts(&self) -> i64 {
        (self.to + 1) * SECS_PER_DAY
    }

    pub fn from_str(&self) -> String {
        format_date(self.from)
    }

    pub fn to_str(&self) -> String {
        format_date(self.to)
    }
}

/// The exact time span a run reads: `start <= updated_at < end`, epoch seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    /// The span of a range of days.
    pub fn of(range: DateRange) -> Self {
        Self { start: range.start_ts(), end: range.end_ts() }
    }

    /// Whether a conversation updated at `ts` belongs to the span.
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }
}

/// The span `updated_from`/`updated_to` name (RFC 3339, end excluded).
pub fn resolve_span(from: Option<&str>, to: Option<&str>) -> Result<Option<Span>, ConfigError> {
    let parse = |key: &str, value: &str| {
        crate::util::time::parse_rfc3339(value).ok_or_else(|| {
            ConfigError(format!(
                "source.{key} = {value:?} is not a timestamp (allowed: RFC 3339, e.g. 2025-12-30T08:00:00Z)"
            ))
        })
    };
    match (from, to) {
        (None, None) => Ok(None),
        (Some(from), Some(to)) => {
            let span = Span { start: parse("updated_from", from)?, end: parse("updated_to", to)? };
            if span.end <= span.start {
                return Err(ConfigError(format!(
                    "source.updated_to = {to:?} is not after source.updated_from = {from:?}"
                )));
            }
            Ok(Some(span))
        }
        _ => Err(ConfigError("source.updated_from and source.updated_to go together".into())),
    }
}

/// The range the settings describe, `today` being the current UTC day.
pub fn resolve(
    days: Option<u32>,
    date_from: Option<&str>,
    date_to: Option<&str>,
    today: i64,
) -> Result<DateRange, ConfigError> {
    match (days, date_from, date_to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(ConfigError(
            "source.days and source.date_from/date_to are both set: give either days (the last N days) or an \
             explicit date_from (and optional date_to)"
                .into(),
        )),
        (Some(days), None, None) => {
            if !(1..=3650).contains(&days) {
                return Err(ConfigError(format!("source.days = {days} is out of range (allowed: 1..=3650)")));
            }
            Ok(DateRange { from: today - i64::from(days), to: today })
        }
        (None, Some(from), to) => {
            let from = parse_date("source.date_from", from)?;
            let to = match to {
                Some(to) => parse_date("source.date_to", to)?,
                None => today,
            };
            if to < from {
                return Err(ConfigError(format!(
                    "source.date_to = {:?} is before source.date_from = {:?}",
                    format_date(to),
                    format_date(from)
                )));
            }
            Ok(DateRange { from, to })
        }
        (None, None, Some(_)) => {
            Err(ConfigError("source.date_to is set without source.date_from (give date_from, or days)".into()))
        }
        (None, None, None) => Err(ConfigError(
            "source: the date range is missing: set days = N (the last N days) or date_from = \"YYYY-MM-DD\" \
             (and optionally date_to)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_mean_today_minus_n_through_today() {
        let today = parse_date("k", "2025-12-30").unwrap();
        let r = resolve(Some(90), None, None, today).unwrap();
        assert_eq!((r.from_str().as_str(), r.to_str().as_str()), ("2025-10-01", "2025-12-30"));
        assert_eq!(r.start_ts(), 1_759_276_800); // 2025-10-01T00:00:00Z
        assert_eq!(r.end_ts(), 1_767_139_200); // 2025-12-31T00:00:00Z
        // The pinned dates read back to the same range.
        assert_eq!(resolve(None, Some("2025-10-01"), Some("2025-12-30"), today + 5).unwrap(), r);
        assert_eq!(resolve(None, Some("2025-10-01"), None, today).unwrap(), r);
    }

    #[test]
    fn spans_are_exact_and_checked() {
        let span = resolve_span(Some("2025-12-30T08:00:00Z"), Some("2025-12-30T09:00:00Z")).unwrap().unwrap();
        assert_eq!(span.end - span.start, 3600);
        assert!(span.contains(span.start) && !span.contains(span.end) && !span.contains(span.start - 1));
        assert_eq!(resolve_span(None, None).unwrap(), None);
        for (from, to, needle) in [
            (Some("2025-12-30"), Some("2025-12-30T09:00:00Z"), "not a timestamp"),
            (Some("2025-12-30T09:00:00Z"), Some("2025-12-30T09:00:00Z"), "not after"),
            (Some("2025-12-30T09:00:00Z"), None, "go together"),
        ] {
            let err = resolve_span(from, to).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let day = DateRange { from: 20_000, to: 20_000 };
        assert_eq!(Span::of(day), Span { start: day.start_ts(), end: day.end_ts() });
    }

    #[test]
    fn bad_ranges_are_named() {
        let today = 20_000;
        for (days, from, to, needle) in [
            (Some(0), None, None, "source.days = 0"),
            (Some(5), Some("2025-01-01"), None, "both set"),
            (None, None, Some("2025-01-01"), "without source.date_from"),
            (None, None, None, "date range is missing"),
            (None, Some("2025-02-01"), Some("2025-01-01"), "before"),
        ] {
            let err = resolve(days, from, to, today).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
