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
pub use crate::dates::civil_from_days;
use crate::dates::days_from_civil;

pub const SECS_PER_DAY: i64 = 86_400;

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

/// Today (UTC), in days since 1970-01-01.
pub fn today() -> i64 {
    (crate::http::now_epoch_secs() as i64).div_euclid(SECS_PER_DAY)
}

/// Parses `YYYY-MM-DD` into days since 1970-01-01.
pub fn parse_date(key: &str, value: &str) -> Result<i64, ConfigError> {
    let bad = || ConfigError(format!("{key} = {value:?} is not a date (allowed: YYYY-MM-DD, e.g. 2025-10-01)"));
    let b = value.trim().as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
    };
    let (year, month, day) = (num(0, 4).ok_or_else(bad)?, num(5, 7).ok_or_else(bad)?, num(8, 10).ok_or_else(bad)?);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds.
pub fn format_timestamp(ts: i64) -> String {
    let secs = ts.rem_euclid(SECS_PER_DAY);
    format!("{}T{:02}:{:02}:{:02}Z", format_date(ts.div_euclid(SECS_PER_DAY)), secs / 3600, secs / 60 % 60, secs % 60)
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
    fn dates_round_trip() {
        for day in [-1, 0, 59, 365, 11_016, 20_000, 2_932_896] {
            let s = format_date(day);
            if day >= 0 {
                assert_eq!(parse_date("k", &s).unwrap(), day, "{s}");
            }
        }
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(parse_date("k", "2000-02-29").unwrap(), 11_016);
        assert_eq!(format_timestamp(1_767_225_599), "2025-12-31T23:59:59Z");
        for bad in ["2025-02-29", "2025-13-01", "25-01-01", "2025/01/01", "2025-01-1", ""] {
            let err = parse_date("source.date_from", bad).unwrap_err().to_string();
            assert!(err.contains("source.date_from") && err.contains("YYYY-MM-DD"), "{err}");
        }
    }

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
