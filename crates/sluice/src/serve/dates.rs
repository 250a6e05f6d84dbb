//! `days` ranges for the HTTP API, with the connectors' calendar
//! arithmetic (`util::time`, the one the Intercom source uses), so the range
//! a request names and the range the source reads are computed by one piece
//! of code. A run of `days = N` started today covers
//! `[today - N, today]` (UTC dates, both included): the same request on the
//! same day names the same range (the runbook's same-day resume), on another
//! day it does not (resume by run id then).

use sluice_connectors::util::time::{format_date, parse_date, today};

/// Parses `YYYY-MM-DD` into days since 1970-01-01; `None` if it is not a real date.
pub fn parse_day(text: &str) -> Option<i64> {
    parse_date("date", text).ok()
}

/// The range `days = n` names today.
pub fn range_for_days(n: u32) -> (String, String) {
    let today = today();
    (format_date(today - i64::from(n)), format_date(today))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_dates_are_refused() {
        for bad in ["2025-02-29", "2025-13-01", "2025-00-10", "2025-1-01", "yesterday", "2025-01-01-01", ""] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
        assert_eq!(parse_day("2024-02-29").map(format_date).as_deref(), Some("2024-02-29"));
    }

    #[test]
    fn days_range_ends_today() {
        let (from, to) = range_for_days(90);
        assert_eq!(parse_day(&to), Some(today()));
        assert_eq!(parse_day(&from), Some(today() - 90));
    }
}
