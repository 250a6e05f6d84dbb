//! `[source] kind = "intercom"`: the settings, and the date range they name
//! (`days` counted back from today, or explicit dates) pinned to dates before
//! a run is saved.

use serde::{Deserialize, Serialize};

use super::dates::{self, DateRange, Span};
use crate::ConfigError;

pub const DEFAULT_BASE_URL: &str = "https://api.intercom.io";
pub const BASE_URL_ENV: &str = "INTERCOM_BASE_URL";
pub const DEFAULT_TOKEN_ENV: &str = "INTERCOM_ACCESS_TOKEN";
/// Five minutes: Intercom's clocks and late writes, re-read but not re-paid (the memo).
pub const DEFAULT_OVERLAP_SECS: u64 = 300;

/// `[source] kind = "intercom"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntercomConfig {
    /// The last N days (1..=3650); or give `date_from` (and `date_to`). See [`dates`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// First day, `YYYY-MM-DD` (UTC), included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), included. Default: today.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_to: Option<String>,
    /// Exact span instead of the dates: from this RFC 3339 time (included)...
    /// An incremental run sets both (see `incremental`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_from: Option<String>,
    /// ...to this one (excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_to: Option<String>,
    /// A new run starts from the pipeline's high-water mark (the greatest
    /// `updated_at` its last completed run stored) minus `overlap_secs`, up
    /// to now, instead of the date range (docs/incremental.md). Default false.
    pub incremental: bool,
    /// Seconds before the high-water mark an incremental run reads again,
    /// for clock skew and late writes (0..=604800). Default 300.
    pub overlap_secs: u64,
    /// API base URL; default `INTERCOM_BASE_URL`, else `https://api.intercom.io`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Environment variable holding the access token. Default `INTERCOM_ACCESS_TOKEN`.
    pub token_env: String,
    /// `Intercom-Version` header. Default `2.11`.
    pub intercom_version: String,
    /// Conversations per page (1..=150). Default 150.
    pub per_page: u32,
    /// Time slices of the range, fetched concurrently (1..=64). Default 1.
    pub partitions: usize,
    /// Also fetch each conversation's replies. Default false.
    pub include_parts: bool,
    /// `GET /conversations/{id}` at once, with `include_parts` (1..=64). Default 8.
    pub parts_concurrency: usize,
    /// Quality filter: conversations with fewer visible characters are
    /// dropped (0: keep all). Default 20.
    pub min_chars: usize,
    /// Stop after this many conversations, counted across resumes (the
    /// pipeline's `max_records` when that is not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_conversations: Option<u64>,
    /// Source name stored with every record. Default `intercom`.
    pub name: String,
    /// Time-out of one request, in seconds (1..=600). Default 60.
    pub timeout_secs: u64,
    /// Requests per minute to this Intercom app over the whole run (every
    /// worker of a distributed run together). Unset: paced by Intercom's
    /// `X-RateLimit-*` headers only; a 429 or a used-up window still holds every worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<f64>,
}

impl Default for IntercomConfig {
    /// No date range (one must be given), the rest as the field docs say.
    fn default() -> Self {
        Self {
            days: None,
            date_from: None,
            date_to: None,
            updated_from: None,
            updated_to: None,
            incremental: false,
            overlap_secs: DEFAULT_OVERLAP_SECS,
            base_url: None,
            token_env: DEFAULT_TOKEN_ENV.to_string(),
            intercom_version: "2.11".to_string(),
            per_page: 150,
            partitions: 1,
            include_parts: false,
            parts_concurrency: 8,
            min_chars: 20,
            max_conversations: None,
            name: "intercom".to_string(),
            timeout_secs: 60,
            requests_per_minute: None,
        }
    }
}

impl IntercomConfig {
    /// A configuration for the last `days` days, everything else default.
    pub fn last_days(days: u32) -> Self {
        Self { days: Some(days), ..Self::default() }
    }

    /// The date range, `days` being counted back from `today` (days since 1970-01-01).
    pub fn date_range_at(&self, today: i64) -> Result<DateRange, ConfigError> {
        dates::resolve(self.days, self.date_from.as_deref(), self.date_to.as_deref(), today)
    }

    /// The seconds a run reads: `updated_from..updated_to` when set, else the date range.
    pub fn span_at(&self, today: i64) -> Result<Span, ConfigError> {
        match dates::resolve_span(self.updated_from.as_deref(), self.updated_to.as_deref())? {
            Some(span) => Ok(span),
            None => Ok(Span::of(self.date_range_at(today)?)),
        }
    }

    /// The range as of now, as a run records it: `(date_from, date_to)`,
    /// both `YYYY-MM-DD`, both included; or, for an exact span, its
    /// `(updated_from, updated_to)` as RFC 3339 UTC, the end excluded.
    pub fn date_range(&self) -> Result<(String, String), ConfigError> {
        if let Some(span) = dates::resolve_span(self.updated_from.as_deref(), self.updated_to.as_deref())? {
            return Ok((dates::format_timestamp(span.start), dates::format_timestamp(span.end)));
        }
        let range = self.date_range_at(dates::today())?;
        Ok((range.from_str(), range.to_str()))
    }

    /// Reads exactly `start <= updated_at < end` (epoch seconds) instead of the dates.
    pub fn set_span(&mut self, start: i64, end: i64) -> Result<(), ConfigError> {
        self.updated_from = Some(dates::format_timestamp(start));
        self.updated_to = Some(dates::format_timestamp(end));
        dates::resolve_span(self.updated_from.as_deref(), self.updated_to.as_deref()).map(|_| ())
    }

    /// Replaces `days` by the explicit dates it means today, so that the
    /// configuration saved with a run names the same range on any later day.
    pub fn pin_dates(&mut self) -> Result<(), ConfigError> {
        self.pin_dates_at(dates::today())
    }

    /// Sets an explicit range, `YYYY-MM-DD`, both days included (e.g. the
    /// range an HTTP request asked for), replacing `days`.
    pub fn set_dates(&mut self, date_from: &str, date_to: &str) -> Result<(), ConfigError> {
        let range = dates::resolve(None, Some(date_from), Some(date_to), dates::today())?;
        self.days = None;
        self.updated_from = None;
        self.updated_to = None;
        self.date_from = Some(range.from_str());
        self.date_to = Some(range.to_str());
        Ok(())
    }

    pub fn pin_dates_at(&mut self, today: i64) -> Result<(), ConfigError> {
        let range = self.date_range_at(today)?;
        self.days = None;
        self.date_from = Some(range.from_str());
        self.date_to = Some(range.to_str());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_pinned_to_dates() {
        let mut c = IntercomConfig::last_days(90);
        let today = dates::parse_date("k", "2025-12-30").unwrap();
        c.pin_dates_at(today).unwrap();
        assert_eq!(
            (c.days, c.date_from.as_deref(), c.date_to.as_deref()),
            (None, Some("2025-10-01"), Some("2025-12-30"))
        );
        c.pin_dates_at(today + 3).unwrap();
        assert_eq!(c.date_from.as_deref(), Some("2025-10-01"), "pinning twice changes nothing");
        c.set_dates("2025-11-01", "2025-11-30").unwrap();
        assert_eq!((c.date_from.as_deref(), c.date_to.as_deref()), (Some("2025-11-01"), Some("2025-11-30")));
        assert!(c.set_dates("2025-11-30", "2025-11-01").is_err());
    }

    #[test]
    fn a_span_replaces_the_dates_and_is_recorded_as_timestamps() {
        let mut c = IntercomConfig::last_days(90);
        let today = dates::parse_date("k", "2025-12-30").unwrap();
        assert_eq!(c.span_at(today).unwrap(), Span::of(c.date_range_at(today).unwrap()));
        c.set_span(1_767_052_800, 1_767_056_400).unwrap();
        assert_eq!(c.span_at(today).unwrap(), Span { start: 1_767_052_800, end: 1_767_056_400 });
        assert_eq!(c.date_range().unwrap(), ("2025-12-30T00:00:00Z".into(), "2025-12-30T01:00:00Z".into()));
        assert!(c.set_span(5, 5).is_err(), "an empty span is refused");
        c.set_dates("2025-11-01", "2025-11-30").unwrap();
        assert_eq!(c.updated_from, None, "explicit dates replace the span");
    }
}
