//! UTC calendar dates for `days` ranges, without a date library: a run of
//! `days = N` started today covers `[today - N, today]`, so the same request
//! on the same day names the same range (the runbook's same-day resume) and
//! a request on another day does not (resume by run id then).

use std::time::{SystemTime, UNIX_EPOCH};

/// Today's UTC date as days since 1970-01-01.
pub fn today() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| (d.as_secs() / 86_400) as i64).unwrap_or(0)
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01), proleptic Gregorian.
pub fn format_day(days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Parses `YYYY-MM-DD` into a day number; `None` if it is not a real date.
pub fn parse_day(text: &str) -> Option<i64> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    // Hinnant's days_from_civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    // Reject 2025-02-30 and friends by round-tripping.
    (format_day(days) == format!("{y:04}-{m:02}-{d:02}")).then_some(days)
}

/// The range `days = n` names today.
pub fn range_for_days(n: u32) -> (String, String) {
    let today = today();
    (format_day(today - i64::from(n)), format_day(today))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates_round_trip() {
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(format_day(19_723), "2024-01-01");
        assert_eq!(parse_day("2024-02-29"), Some(19_782));
        assert_eq!(format_day(19_782), "2024-02-29");
        for day in [-1000, 0, 59, 60, 11_016, 20_000, 40_000] {
            assert_eq!(parse_day(&format_day(day)), Some(day));
        }
    }

    #[test]
    fn impossible_dates_are_refused() {
        for bad in ["2025-02-29", "2025-13-01", "2025-00-10", "2025-1-01", "yesterday", "2025-01-01-01", ""] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_range_ends_today() {
        let (from, to) = range_for_days(90);
        assert_eq!(parse_day(&to), Some(today()));
        assert_eq!(parse_day(&from), Some(today() - 90));
    }
}
