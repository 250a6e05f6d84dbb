//! Dates and times, through `chrono`: RFC 3339 timestamps read from records,
//! and the UTC calendar days (days since 1970-01-01) that date ranges are
//! made of. Days are plain `i64`s so ranges are simple arithmetic.

// Which helpers a build uses depends on the sources it has (their features).
#![cfg_attr(not(all(feature = "jsonl", feature = "files", feature = "csv", feature = "intercom")), allow(dead_code))]

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeDelta, Utc};
use serde_json::Value;

use crate::ConfigError;

pub const SECS_PER_DAY: i64 = 86_400;

/// Seconds since the Unix epoch from a JSON value: an integer (epoch seconds),
/// a finite float (truncated), or an RFC 3339 string.
pub(crate) fn timestamp_from_value(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.is_finite() && f.abs() < 1e15).then(|| f.trunc() as i64)
        }),
        Value::String(s) => parse_rfc3339(s),
        _ => None,
    }
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:30:00Z`, `2024-05-01 12:30:00.25+02:00`)
/// into seconds since the Unix epoch. Fractions of a second are dropped; a
/// leap second (`:60`) counts as the first second of the next minute.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    // chrono also takes U+2212 as a minus sign; a timestamp here is ASCII.
    if !s.is_ascii() {
        return None;
    }
    let time = DateTime::parse_from_rfc3339(s).ok()?;
    let leap = i64::from(time.timestamp_subsec_nanos() >= 1_000_000_000);
    Some(time.timestamp() + leap)
}

/// 1970-01-01, day 0 of the days used here.
fn epoch() -> NaiveDate {
    DateTime::UNIX_EPOCH.date_naive()
}

/// The calendar date of days since 1970-01-01, clamped to the dates chrono
/// can hold (about ±262,000 years), so no number of days panics.
fn date_of(days: i64) -> NaiveDate {
    let limit = if days < 0 { NaiveDate::MIN } else { NaiveDate::MAX };
    TimeDelta::try_days(days).and_then(|d| epoch().checked_add_signed(d)).unwrap_or(limit)
}

/// Days since 1970-01-01 of a date.
fn days_of(date: NaiveDate) -> i64 {
    date.signed_duration_since(epoch()).num_days()
}

/// `(year, month, day)` of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let date = date_of(days);
    (i64::from(date.year()), i64::from(date.month()), i64::from(date.day()))
}

/// Days since 1970-01-01 of a proleptic Gregorian date. Months past 12 and
/// days past the month's end run on into the next (as `day - 1` days after
/// the month's first), so every input has an answer.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let months = year.saturating_mul(12).saturating_add(month.saturating_sub(1));
    let first = i32::try_from(months.div_euclid(12))
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, months.rem_euclid(12) as u32 + 1, 1))
        .unwrap_or(if months < 0 { NaiveDate::MIN } else { NaiveDate::MAX });
    days_of(first).saturating_add(day.saturating_sub(1))
}

/// Today (UTC), in days since 1970-01-01.
pub fn today() -> i64 {
    days_of(Utc::now().date_naive())
}

/// Parses `YYYY-MM-DD` (a real date, years 1970 to 9999) into days since
/// 1970-01-01; the error names `key` and the value.
pub fn parse_date(key: &str, value: &str) -> Result<i64, ConfigError> {
    let bad = || ConfigError(format!("{key} = {value:?} is not a date (allowed: YYYY-MM-DD, e.g. 2025-10-01)"));
    let text = value.trim();
    // chrono's `%m` and `%d` also take one digit, and `%Y` a sign: the shape is checked first.
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !shaped {
        return Err(bad());
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())?;
    if date.year() < 1970 {
        return Err(bad());
    }
    Ok(days_of(date))
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn format_date(days: i64) -> String {
    date_of(days).format("%Y-%m-%d").to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of epoch seconds.
pub fn format_timestamp(ts: i64) -> String {
    let secs = ts.rem_euclid(SECS_PER_DAY);
    let time = NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, 0).unwrap_or_default();
    format!("{}T{}Z", format_date(ts.div_euclid(SECS_PER_DAY)), time.format("%H:%M:%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_zulu_offsets_and_fractions() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-05-01T12:30:00Z"), Some(1_714_566_600));
        assert_eq!(parse_rfc3339("2024-05-01T14:30:00.123+02:00"), Some(1_714_566_600));
        assert_eq!(parse_rfc3339("2024-05-01 07:30:00-05:00"), Some(1_714_566_600));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1));
    }

    #[test]
    fn rfc3339_refuses_garbage() {
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:30:00",
            "2024-05-01T12:30:00.Z",
            "2024-05-01T12:30:00+2:00",
            "2024-05-01X12:30:00Z",
            "２０２４-05-01T12:30:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_edge_cases_read_as_before_chrono() {
        // A leap second is the first second of the next minute, as the hand-written parser had it.
        assert_eq!(parse_rfc3339("2016-12-31T23:59:60Z"), Some(1_483_228_800));
        assert_eq!(parse_rfc3339(" 2024-05-01t12:30:00z "), Some(1_714_566_600));
        // chrono takes U+2212 for a minus sign; the old parser did not.
        assert_eq!(parse_rfc3339("2024-05-01T07:30:00\u{2212}05:00"), None);
        assert_eq!(days_from_civil(2024, 13, 1), days_from_civil(2025, 1, 1));
        assert_eq!(format_date(i64::MAX), format_date(i64::MAX - 1), "far dates clamp, never panic");
    }

    #[test]
    fn timestamps_from_json_values() {
        assert_eq!(timestamp_from_value(&Value::from(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(timestamp_from_value(&Value::from(1.5)), Some(1));
        assert_eq!(timestamp_from_value(&Value::from("1970-01-01T00:01:00Z")), Some(60));
        assert_eq!(timestamp_from_value(&Value::from("yesterday")), None);
        assert_eq!(timestamp_from_value(&Value::Null), None);
    }

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
    fn days_and_dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        for days in [-800_000, -1, 0, 59, 60, 19_782, 40_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
