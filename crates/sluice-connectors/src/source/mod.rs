//! Sources: where records come from. Each implements [`sluice_core::Source`].
//!
//! - [`jsonl::JsonlSource`]: JSON lines files (one partition per file).
//! - [`files::FilesSource`]: a directory of text, markdown, HTML and JSON files.
//!   [`files_watch`] keeps it running to pick up new and changed files (`watch = true`).
//! - [`generate::GenerateSource`]: deterministic synthetic records for tests and benchmarks.
//! - [`intercom::IntercomSource`]: Intercom conversations by `updated_at` date range.
//! - [`crawl::CrawlSource`]: a polite, resumable web crawl (the checkpoint is the frontier).

use std::fmt::Display;

use serde_json::Value;

use crate::ConfigError;
use crate::dates::days_from_civil;

pub mod crawl;
pub mod files;
pub mod files_watch;
pub mod generate;
pub mod intercom;
pub mod jsonl;

/// The most bytes of a malformed input kept in `SourceItem::Invalid::raw`.
pub(crate) const MAX_RAW_BYTES: usize = 64 * 1024;

/// `s` cut to at most `max` bytes, on a char boundary.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Lossy UTF-8 of `bytes`, cut to [`MAX_RAW_BYTES`], for the failures table.
pub(crate) fn raw_of(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_RAW_BYTES)];
    let lossy = String::from_utf8_lossy(cut);
    truncate_utf8(&lossy, MAX_RAW_BYTES).to_string()
}

/// Checks `min <= value <= max`, else names the key, the value and the range.
pub(crate) fn check_range<T: PartialOrd + Display>(key: &str, value: T, min: T, max: T) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError(format!("{key} = {value} is out of range (allowed: {min}..={max})")));
    }
    Ok(())
}

/// Checks that a string setting is not empty.
pub(crate) fn check_not_empty(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError(format!("{key} = {value:?} must not be empty")));
    }
    Ok(())
}

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
/// into seconds since the Unix epoch. Fractions of a second are dropped.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        rest = &rest[1 + digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
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
    fn timestamps_from_json_values() {
        assert_eq!(timestamp_from_value(&Value::from(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(timestamp_from_value(&Value::from(1.5)), Some(1));
        assert_eq!(timestamp_from_value(&Value::from("1970-01-01T00:01:00Z")), Some(60));
        assert_eq!(timestamp_from_value(&Value::from("yesterday")), None);
        assert_eq!(timestamp_from_value(&Value::Null), None);
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("héllo", 3), "hé");
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(raw_of(&[b'a', 0xff]), "a\u{fffd}");
    }
}
