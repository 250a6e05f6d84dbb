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
