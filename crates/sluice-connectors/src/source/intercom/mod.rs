//! Intercom conversations, by `updated_at`, for a date range.
//!
//! Each page is `POST /conversations/search` with
//! `updated_at > start - 1 AND updated_at < end` for the partition's slice of
//! the date range (see [`dates`]), sorted by `updated_at` ascending,
//! `pagination.per_page` (default 150, Intercom's maximum) and
//! `pagination.starting_after` = the cursor. The next page's cursor is
//! `pages.next.starting_after`; a page without `pages.next` (or with a null
//! one, or one without `starting_after`) is the last.
//!
//! Headers: `Authorization: Bearer <token>` with the token from the
//! environment variable `token_env` (default `INTERCOM_ACCESS_TOKEN`; a
//! `.env` file is read by the CLI), `Accept: application/json`,
//! `Intercom-Version` (default `2.11`). Base URL: `base_url`, else
//! `INTERCOM_BASE_URL`, else `https://api.intercom.io` (EU:
//! `https://api.eu.intercom.io`, AU: `https://api.au.intercom.io`).
//!
//! Errors, rate limits and pacing: see [`client`]. An invalid or expired
//! cursor is `SourceError::CursorInvalid`: the engine restarts the
//! partition from the start of its slice and relies on upsert and the
//! content-hash memo, so nothing is stored twice or paid for twice.
//!
//! Partitions: `partitions = N` cuts the range into N equal time slices,
//! fetched concurrently (up to the pipeline's `partition_concurrency`), each
//! with its own cursor. One partition is named by its dates
//! (`2025-10-01..2025-12-30`), several by number and bounds
//! (`2/4 2025-10-23T18:00:00Z..2025-11-15T12:00:00Z`, end excluded).
//!
//! `include_parts = true`: each conversation of a page is also read with
//! `GET /conversations/{id}` (at most `parts_concurrency` at once, each
//! retried on 429/5xx/drops) and its replies are appended to its text; a 404
//! there makes that conversation a failed record, not a failed run.
//!
//! Records: id = the conversation id; text = `source.body` (HTML, as
//! Intercom gives it; the normalize stage strips it) and, with parts, every
//! part's body, separated by blank lines; fields: `title`, `subject`,
//! `state`, `priority`, `channel` (`source.type`), `author_type`,
//! `author_domain` (the domain of the author's email only), `tags` (names),
//! `created_at`, and `parts` (how many, with parts); `updated_at`.
//!
//! Quality filter and counters: see [`quality`].

pub mod client;
pub mod dates;
pub mod quality;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sluice_core::pipeline::{RetryPolicy, Verdict, with_retries};
use sluice_core::{Context, Mode, Page, Record, Source, SourceError, SourceItem};
use tokio_util::sync::CancellationToken;

use self::client::IntercomClient;
use self::dates::{DateRange, format_timestamp};
use self::quality::is_quality;
use super::{check_not_empty, check_range, raw_of};
use crate::ConfigError;
use crate::http::{Secret, check_base_url, env_value};

pub use self::quality::QualityStage;

pub const DEFAULT_BASE_URL: &str = "https://api.intercom.io";
pub const BASE_URL_ENV: &str = "INTERCOM_BASE_URL";
pub const DEFAULT_TOKEN_ENV: &str = "INTERCOM_ACCESS_TOKEN";

fn default_token_env() -> String {
    DEFAULT_TOKEN_ENV.to_string()
}
fn default_version() -> String {
    "2.11".to_string()
}
fn default_per_page() -> u32 {
    150
}
fn default_partitions() -> usize {
    1
}
fn default_parts_concurrency() -> usize {
    8
}
fn default_min_chars() -> usize {
    20
}
fn default_name() -> String {
    "intercom".to_string()
}
fn default_timeout_secs() -> u64 {
    60
}

/// `[source] kind = "intercom"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntercomConfig {
    /// The last N days (1..=3650); or give `date_from` (and `date_to`). See [`dates`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// First day, `YYYY-MM-DD` (UTC), included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC), included. Default: today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_to: Option<String>,
    /// API base URL; default `INTERCOM_BASE_URL`, else `https://api.intercom.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Environment variable holding the access token. Default `INTERCOM_ACCESS_TOKEN`.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// `Intercom-Version` header. Default `2.11`.
    #[serde(default = "default_version")]
    pub intercom_version: String,
    /// Conversations per page (1..=150). Default 150.
    #[serde(default = "default_per_page")]
    pub per_page: u32,
    /// Time slices of the range, fetched concurrently (1..=64). Default 1.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
    /// Also fetch each conversation's replies. Default false.
    #[serde(default)]
    pub include_parts: bool,
    /// `GET /conversations/{id}` at once, with `include_parts` (1..=64). Default 8.
    #[serde(default = "default_parts_concurrency")]
    pub parts_concurrency: usize,
    /// Quality filter: conversations with fewer visible characters are
    /// dropped (0: keep all). Default 20.
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
    /// Stop after this many conversations, counted across resumes (the
    /// pipeline's `max_records` when that is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conversations: Option<u64>,
    /// Source name stored with every record. Default `intercom`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Time-out of one request, in seconds (1..=600). Default 60.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

impl IntercomConfig {
    /// A configuration for the last `days` days, everything else default.
    pub fn last_days(days: u32) -> Self {
        Self {
            days: Some(days),
            date_from: None,
            date_to: None,
            base_url: None,
            token_env: default_token_env(),
            intercom_version: default_version(),
            per_page: default_per_page(),
            partitions: default_partitions(),
            include_parts: false,
            parts_concurrency: default_parts_concurrency(),
            min_chars: default_min_chars(),
            max_conversations: None,
            name: default_name(),
            timeout_secs: default_timeout_secs(),
        }
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

/// One time slice of the range.
#[derive(Clone, Debug)]
struct Slice {
    name: String,
    /// Included, epoch seconds.
    start: i64,
    /// Excluded, epoch seconds.
    end: i64,
}

/// The Intercom source. See the module docs.
#[derive(Debug)]
pub struct IntercomSource {
    config: IntercomConfig,
    client: Arc<IntercomClient>,
    range: DateRange,
    slices: Vec<Slice>,
    /// Drop short conversations at page level (streaming mode).
    page_filter: bool,
    parts_retry: RetryPolicy,
}

impl IntercomSource {
    /// Reads the token from the environment (`token_env`) and builds the
    /// source for `mode`: streaming filters short conversations at page
    /// level, batch leaves that to [`QualityStage`].
    pub fn new(config: IntercomConfig, mode: Mode) -> Result<Self, ConfigError> {
        if config.token_env.trim().is_empty() {
            return Err(ConfigError("source.token_env = \"\" must name an environment variable".into()));
        }
        let token = env_value(&config.token_env).ok_or_else(|| {
            ConfigError(format!(
                "{} is not set: put the Intercom access token in the environment or in .env{}",
                config.token_env,
                if config.token_env == DEFAULT_TOKEN_ENV { "" } else { " (source.token_env names this variable)" }
            ))
        })?;
        let origin = config.token_env.clone();
        Self::with_token(config, Secret::new(token), origin, mode == Mode::Streaming)
    }

    /// The source with a given token; `token_origin` names it in messages.
    pub fn with_token(
        config: IntercomConfig,
        token: Secret,
        token_origin: String,
        page_filter: bool,
    ) -> Result<Self, ConfigError> {
        check_range("source.per_page", config.per_page, 1, 150)?;
        check_range("source.partitions", config.partitions, 1, 64)?;
        check_range("source.parts_concurrency", config.parts_concurrency, 1, 64)?;
        check_range("source.timeout_secs", config.timeout_secs, 1, 600)?;
        check_range("source.min_chars", config.min_chars, 0, 100_000)?;
        check_not_empty("source.name", &config.name)?;
        check_not_empty("source.intercom_version", &config.intercom_version)?;
        if config.max_conversations == Some(0) {
            return Err(ConfigError(
                "source.max_conversations = 0 would fetch nothing (allowed: at least 1, or leave it out)".into(),
            ));
        }
        if token.is_empty() {
            return Err(ConfigError(format!("{token_origin} is empty: it must hold the Intercom access token")));
        }
        let base_url = match config.base_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => check_base_url("source.base_url", url)?,
            None => match env_value(BASE_URL_ENV) {
                Some(url) => check_base_url(BASE_URL_ENV, &url)?,
                None => DEFAULT_BASE_URL.to_string(),
            },
        };
        let range = config.date_range_at(dates::today())?;
        let slices = slices(range, config.partitions);
        let client = IntercomClient::new(
            base_url,
            token,
            token_origin,
            config.intercom_version.trim().to_string(),
            config.name.clone(),
            Duration::from_secs(config.timeout_secs),
        )?;
        let parts_retry =
            RetryPolicy { max_retries: 6, min_delay: Duration::from_millis(250), max_delay: Duration::from_secs(30) };
        Ok(Self { config, client: Arc::new(client), range, slices, page_filter, parts_retry })
    }

    /// The resolved date range.
    pub fn range(&self) -> DateRange {
        self.range
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// The search request for a slice at a cursor.
    fn search_body(&self, slice: &Slice, cursor: Option<&str>, per_page: u32) -> Value {
        let mut pagination = json!({"per_page": per_page});
        if let Some(cursor) = cursor {
            pagination["starting_after"] = json!(cursor);
        }
        json!({
            "query": {
                "operator": "AND",
                "value": [
                    // Intercom compares timestamps with > and < only.
                    {"field": "updated_at", "operator": ">", "value": slice.start - 1},
                    {"field": "updated_at", "operator": "<", "value": slice.end},
                ],
            },
            "sort": {"field": "updated_at", "order": "ascending"},
            "pagination": pagination,
        })
    }

    /// The record of a conversation (with its parts when `full` has them).
    fn record(&self, conversation: &Value, full: Option<&Value>) -> Result<Record, String> {
        conversation_record(&self.config.name, full.unwrap_or(conversation), full.is_some())
    }

    /// The full conversation (with parts), retried on passing errors; `None` on 404.
    async fn full_conversation(&self, ctx: &Context, id: &str) -> Result<Option<Value>, SourceError> {
        let never = CancellationToken::new();
        with_retries(
            &self.parts_retry,
            ctx,
            &self.config.name,
            &never,
            || self.client.conversation(ctx, id),
            |e: &SourceError| match e {
                SourceError::Retryable { retry_after, .. } => Verdict::Retry(*retry_after),
                _ => Verdict::Fatal,
            },
        )
        .await
    }

    /// Turns the conversations of a page into items (fetching parts when asked).
    async fn items(
        &self,
        ctx: &Context,
        conversations: &[Value],
        cursor: Option<&str>,
    ) -> Result<Vec<SourceItem>, SourceError> {
        let locator = |i: usize| format!("page after {}#{i}", cursor.unwrap_or("(start)"));
        if !self.config.include_parts {
            return Ok(conversations
                .iter()
                .enumerate()
                .map(|(i, c)| match self.record(c, None) {
                    Ok(record) => SourceItem::Record(record),
                    Err(error) => invalid(c, locator(i), "malformed_conversation", error),
                })
                .collect());
        }
        let results: Vec<Result<SourceItem, SourceError>> =
            futures::stream::iter(conversations.iter().cloned().enumerate())
                .map(|(i, c)| self.item_with_parts(ctx, c, locator(i)))
                .buffered(self.config.parts_concurrency)
                .collect()
                .await;
        results.into_iter().collect()
    }

    /// The item of one listed conversation, read again in full with its parts.
    async fn item_with_parts(&self, ctx: &Context, c: Value, locator: String) -> Result<SourceItem, SourceError> {
        let Some(id) = conversation_id(&c) else {
            return Ok(invalid(&c, locator, "malformed_conversation", "the conversation has no id".into()));
        };
        Ok(match self.full_conversation(ctx, &id).await? {
            Some(full) => match self.record(&c, Some(&full)) {
                Ok(record) => SourceItem::Record(record),
                Err(error) => invalid(&full, id, "malformed_conversation", error),
            },
            None => SourceItem::Invalid {
                raw: raw_of(c.to_string().as_bytes()),
                error_type: "not_found".into(),
                error: format!("GET /conversations/{id} answered 404: listed by search but not found"),
                id,
            },
        })
    }
}

/// Cuts a range into `n` equal time slices, named for the checkpoint.
fn slices(range: DateRange, n: usize) -> Vec<Slice> {
    if n <= 1 {
        return vec![Slice {
            name: format!("{}..{}", range.from_str(), range.to_str()),
            start: range.start_ts(),
            end: range.end_ts(),
        }];
    }
    let (start, span) = (range.start_ts(), range.end_ts() - range.start_ts());
    let at = |i: usize| start + (i128::from(span) * i as i128 / n as i128) as i64;
    (0..n)
        .map(|i| Slice {
            name: format!("{}/{n} {}..{}", i + 1, format_timestamp(at(i)), format_timestamp(at(i + 1))),
            start: at(i),
            end: at(i + 1),
        })
        .collect()
}

/// The id of a conversation: a string, or a number written as one.
fn conversation_id(c: &Value) -> Option<String> {
    match c.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn invalid(c: &Value, fallback_id: String, error_type: &str, error: String) -> SourceItem {
    SourceItem::Invalid {
        id: conversation_id(c).unwrap_or(fallback_id),
        raw: raw_of(c.to_string().as_bytes()),
        error_type: error_type.into(),
        error,
    }
}

/// Maps an Intercom conversation (API 2.x JSON) to a record (see the module docs).
pub fn conversation_record(source: &str, c: &Value, with_parts: bool) -> Result<Record, String> {
    let id = conversation_id(c).ok_or("the conversation has no id")?;
    let src = c.get("source");
    let body = src.and_then(|s| s.get("body")).and_then(Value::as_str).unwrap_or("");
    let mut text = body.to_string();
    let mut fields = Map::new();
    if with_parts {
        let parts = c
            .pointer("/conversation_parts/conversation_parts")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for part in parts {
            if let Some(body) = part.get("body").and_then(Value::as_str).filter(|b| !b.trim().is_empty()) {
                if !text.is_empty() {
                    text.push_str("\n\n");
                }
                text.push_str(body);
            }
        }
        fields.insert("parts".into(), json!(parts.len()));
    }
    if let Some(title) = str_field(c.get("title")) {
        fields.insert("title".into(), json!(title));
    }
    if let Some(subject) = str_field(src.and_then(|s| s.get("subject"))) {
        fields.insert("subject".into(), json!(subject));
    }
    for (key, value) in [
        ("state", str_field(c.get("state"))),
        ("priority", str_field(c.get("priority"))),
        ("channel", str_field(src.and_then(|s| s.get("type")))),
        ("author_type", str_field(src.and_then(|s| s.pointer("/author/type")))),
    ] {
        if let Some(value) = value {
            fields.insert(key.into(), json!(value));
        }
    }
    if let Some(domain) = str_field(src.and_then(|s| s.pointer("/author/email")))
        .and_then(|email| email.rsplit_once('@').map(|(_, domain)| domain.to_lowercase()))
        .filter(|d| !d.is_empty())
    {
        fields.insert("author_domain".into(), json!(domain));
    }
    let tags: Vec<&str> = c
        .pointer("/tags/tags")
        .and_then(Value::as_array)
        .map(|tags| tags.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    if !tags.is_empty() {
        fields.insert("tags".into(), json!(tags));
    }
    if let Some(created) = c.get("created_at").and_then(Value::as_i64) {
        fields.insert("created_at".into(), json!(created));
    }
    Ok(Record { source: source.to_string(), id, text, fields, updated_at: c.get("updated_at").and_then(Value::as_i64) })
}

/// A non-empty string value, trimmed.
fn str_field(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// The cursor of the next page: `pages.next.starting_after`, if any.
fn next_cursor(answer: &Value) -> Option<String> {
    answer
        .pointer("/pages/next/starting_after")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[async_trait]
impl Source for IntercomSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    async fn partitions(&self) -> Result<Vec<String>, SourceError> {
        Ok(self.slices.iter().map(|s| s.name.clone()).collect())
    }

    async fn fetch(&self, ctx: &Context, partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let slice = self.slices.iter().find(|s| s.name == partition).ok_or_else(|| {
            SourceError::fatal(format!(
                "partition {partition:?} is not a slice of this source's range {}..{} in {} partitions",
                self.range.from_str(),
                self.range.to_str(),
                self.slices.len()
            ))
        })?;
        let body = self.search_body(slice, cursor, self.config.per_page);
        let answer = self.client.search(ctx, &body, cursor.is_some()).await?;
        let Some(conversations) = answer.get("conversations").and_then(Value::as_array) else {
            return Err(SourceError::retryable(format!(
                "Intercom search: the answer has no conversations array: {}",
                crate::http::excerpt(&answer.to_string(), 200)
            )));
        };
        let next = next_cursor(&answer);
        let mut items = self.items(ctx, conversations, cursor).await?;
        let mut dropped = 0;
        if self.page_filter && self.config.min_chars > 0 {
            items.retain(|item| match item {
                SourceItem::Record(r) if !is_quality(&r.text, self.config.min_chars) => {
                    dropped += 1;
                    false
                }
                _ => true,
            });
        }
        Ok(Page { items, next, dropped })
    }

    /// `total_count` of a one-item search over the whole range (one request,
    /// no retries; `None` when it fails). Short conversations are included.
    async fn estimated_total(&self) -> Option<u64> {
        let whole = Slice { name: String::new(), start: self.range.start_ts(), end: self.range.end_ts() };
        let body = self.search_body(&whole, None, 1);
        let answer = self.client.search(&Context::detached(), &body, false).await.ok()?;
        answer.get("total_count").and_then(Value::as_u64)
    }
}

/// `kind = "intercom"`: conversations over a range of days, which a run
/// saves as dates; a run of it is in the `classification` phase.
impl crate::kind::SourceKind for IntercomConfig {
    fn build(&self) -> Result<Arc<dyn Source>, ConfigError> {
        Ok(Arc::new(IntercomSource::new(self.clone(), Mode::Streaming)?))
    }

    fn run_defaults(&self) -> crate::kind::RunDefaults {
        crate::kind::RunDefaults {
            noun: "conversations",
            phase: Some("classification"),
            max_records: self.max_conversations,
        }
    }

    fn pin(&mut self) -> Result<(), ConfigError> {
        self.pin_dates()
    }

    fn dated(&mut self) -> Option<&mut dyn crate::kind::DateRanged> {
        Some(self)
    }
}

impl crate::kind::DateRanged for IntercomConfig {
    fn range(&self) -> Result<(String, String), ConfigError> {
        self.date_range()
    }

    fn set_range(&mut self, date_from: &str, date_to: &str) -> Result<(), ConfigError> {
        self.set_dates(date_from, date_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_range_without_gaps() {
        let range = DateRange { from: 20_362, to: 20_451 };
        let one = slices(range, 1);
        assert_eq!(one[0].name, "2025-10-01..2025-12-29");
        assert_eq!((one[0].start, one[0].end), (range.start_ts(), range.end_ts()));
        let four = slices(range, 4);
        assert_eq!(four.len(), 4);
        assert_eq!(four[0].start, range.start_ts());
        assert_eq!(four[3].end, range.end_ts());
        for pair in four.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert!(four[1].name.starts_with("2/4 2025-"), "{}", four[1].name);
    }

    #[test]
    fn conversations_map_to_records() {
        let c = json!({
            "type": "conversation", "id": "123", "title": null, "created_at": 10, "updated_at": 20,
            "state": "open", "priority": "not_priority",
            "tags": {"type": "tag.list", "tags": [{"name": "vip"}]},
            "source": {"type": "email", "subject": "Refund", "body": "<p>I was charged twice</p>",
                       "author": {"type": "user", "email": "Ann@Example.COM"}},
            "conversation_parts": {"conversation_parts": [{"body": "<p>Sorry!</p>"}, {"body": null}]},
        });
        let r = conversation_record("intercom", &c, false).unwrap();
        assert_eq!((r.id.as_str(), r.text.as_str(), r.updated_at), ("123", "<p>I was charged twice</p>", Some(20)));
        assert_eq!(r.fields["author_domain"], "example.com");
        assert_eq!(r.fields["tags"], json!(["vip"]));
        assert_eq!(r.fields["subject"], "Refund");
        assert!(!r.fields.contains_key("title") && !r.fields.contains_key("parts"));
        assert!(!serde_json::to_string(&r).unwrap().contains("Ann@"), "no email addresses");
        let full = conversation_record("intercom", &c, true).unwrap();
        assert_eq!(full.text, "<p>I was charged twice</p>\n\n<p>Sorry!</p>");
        assert_eq!(full.fields["parts"], 2);
        assert!(conversation_record("intercom", &json!({"source": {}}), false).is_err());
        assert_eq!(conversation_record("i", &json!({"id": 7}), false).unwrap().id, "7");
    }

    #[test]
    fn next_cursor_reads_pages_next() {
        assert_eq!(
            next_cursor(&json!({"pages": {"next": {"page": 2, "starting_after": "abc"}}})).as_deref(),
            Some("abc")
        );
        for last in [
            json!({"pages": {"page": 3}}),
            json!({"pages": {"next": null}}),
            json!({"pages": {"next": {"page": 2}}}),
            json!({"pages": {"next": {"starting_after": null}}}),
            json!({}),
        ] {
            assert_eq!(next_cursor(&last), None, "{last}");
        }
    }

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
