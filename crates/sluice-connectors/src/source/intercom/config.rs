//! `[source] kind = "intercom"`: the settings, and the date range they name
//! (`days` counted back from today, or explicit dates) pinned to dates before
//! a run is saved.

use serde::{Deserialize, Serialize};

use super::dates::{self, DateRange};
use crate::ConfigError;

pub const DEFAULT_BASE_URL: &str = "https://api.intercom.io";
pub const BASE_URL_ENV: &str = "INTERCOM_BASE_URL";
pub const DEFAULT_TOKEN_ENV: &str = "INTERCOM_ACCESS_TOKEN";

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
}

impl Default for IntercomConfig {
    /// No date range (one must be given), the rest as the field docs say.
    fn default() -> Self {
        Self {
            days: None,
            date_from: None,
            date_to: None,
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

    /// The date range as of now, as `(date_from, date_to)`, both `YYYY-MM-DD`, both included.
    pub fn date_range(&self) -> Result<(String, String), ConfigError> {
        let range = self.date_range_at(dates::today())?;
        Ok((range.from_str(), range.to_str()))
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
}
