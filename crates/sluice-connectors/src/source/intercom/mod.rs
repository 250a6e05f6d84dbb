//! Intercom conversations, by `updated_at`, for a date range.
//!
//! Each page is `POST /conversations/search` with
//! `updated_at > start - 1 AND updated_at < end` for the partition's slice of
//! the date range (see [`dates`]; an incremental run reads an exact span),
//! sorted by `updated_at` ascending,
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
//! The range is exact whatever the API's comparison: Intercom's reference
//! reads `>` as "greater (or equal) than", so a conversation of the page
//! whose `updated_at` is outside the slice (`start - 1`, `end`) is dropped
//! (counted with the page's dropped, logged at debug).
//!
//! Quality filter and counters: see [`quality`].

pub mod client;
pub mod config;
pub mod dates;
pub mod quality;
pub mod record;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};
use sluice_core::{Context, Page, Record, Source, SourceError, SourceItem};
use sluice_core::{RetryPolicy, Verdict, with_retries};

use self::client::IntercomClient;
pub use self::config::{BASE_URL_ENV, DEFAULT_BASE_URL, DEFAULT_TOKEN_ENV, IntercomConfig};
use self::dates::{Span, format_timestamp};
use self::quality::is_quality;
use self::record::conversation_id;
pub use self::record::conversation_record;
use crate::ConfigError;
use crate::remote::http::{check_base_url, env_value};
use crate::util::secret::Secret;
use crate::util::text::raw_of;
use crate::util::validate::{check_not_empty, check_range};

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
    span: Span,
    slices: Vec<Slice>,
    parts_retry: RetryPolicy,
}

impl IntercomSource {
    /// Reads the token from the environment (`token_env`) and builds the source.
    pub fn new(config: IntercomConfig) -> Result<Self, ConfigError> {
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
        Self::with_token(config, Secret::new(token), origin)
    }

    /// The source with a given token; `token_origin` names it in messages.
    pub fn with_token(config: IntercomConfig, token: Secret, token_origin: String) -> Result<Self, ConfigError> {
        check_range("source.per_page", config.per_page, 1, 150)?;
        check_range("source.partitions", config.partitions, 1, 64)?;
        check_range("source.parts_concurrency", config.parts_concurrency, 1, 64)?;
        check_range("source.timeout_secs", config.timeout_secs, 1, 600)?;
        if let Some(rpm) = config.requests_per_minute
            && !(rpm.is_finite() && (0.1..=1_000_000.0).contains(&rpm))
        {
            return Err(ConfigError(format!(
                "source.requests_per_minute = {rpm} is out of range (allowed: 0.1..=1000000)"
            )));
        }
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
        check_range("source.overlap_secs", config.overlap_secs, 0, 7 * dates::SECS_PER_DAY as u64)?;
        let span = config.span_at(dates::today())?;
        let (from, to) = config.date_range()?;
        let slices = slices(span, &format!("{from}..{to}"), config.partitions);
        let client = IntercomClient::new(
            base_url,
            token,
            token_origin,
            config.intercom_version.trim().to_string(),
            config.name.clone(),
            Duration::from_secs(config.timeout_secs),
            config.requests_per_minute,
        )?;
        let parts_retry =
            RetryPolicy { max_retries: 6, min_delay: Duration::from_millis(250), max_delay: Duration::from_secs(30) };
        Ok(Self { config, client: Arc::new(client), span, slices, parts_retry })
    }

    /// The resolved span of seconds read.
    pub fn span(&self) -> Span {
        self.span
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
        with_retries(
            &self.parts_retry,
            ctx,
            &self.config.name,
            &ctx.abort,
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

/// Cuts a span into `n` equal time slices, named for the checkpoint (one
/// slice by `name`, the range as the run records it).
fn slices(span: Span, name: &str, n: usize) -> Vec<Slice> {
    if n <= 1 {
        return vec![Slice { name: name.to_string(), start: span.start, end: span.end }];
    }
    let (start, span) = (span.start, span.end - span.start);
    let at = |i: usize| start + (i128::from(span) * i as i128 / n as i128) as i64;
    (0..n)
        .map(|i| Slice {
            name: format!("{}/{n} {}..{}", i + 1, format_timestamp(at(i)), format_timestamp(at(i + 1))),
            start: at(i),
            end: at(i + 1),
        })
        .collect()
}

fn invalid(c: &Value, fallback_id: String, error_type: &str, error: String) -> SourceItem {
    SourceItem::Invalid {
        id: conversation_id(c).unwrap_or(fallback_id),
        raw: raw_of(c.to_string().as_bytes()),
        error_type: error_type.into(),
        error,
    }
}

/// Drops the records updated outside the slice; returns how many.
fn outside(items: &mut Vec<SourceItem>, slice: &Slice) -> u64 {
    let before = items.len();
    let span = Span { start: slice.start, end: slice.end };
    items.retain(|item| !matches!(item, SourceItem::Record(r) if r.updated_at.is_some_and(|t| !span.contains(t))));
    (before - items.len()) as u64
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
                format_timestamp(self.span.start),
                format_timestamp(self.span.end),
                self.slices.len()
            ))
        })?;
        let body = self.search_body(slice, cursor, self.config.per_page);
        let answer = self.client.search(ctx, &body, cursor.is_some()).await?;
        let Some(conversations) = answer.get("conversations").and_then(Value::as_array) else {
            return Err(SourceError::retryable(format!(
                "Intercom search: the answer has no conversations array: {}",
                crate::remote::http::excerpt(&answer.to_string(), 200)
            )));
        };
        let next = next_cursor(&answer);
        let mut items = self.items(ctx, conversations, cursor).await?;
        let mut dropped = outside(&mut items, slice);
        if dropped > 0 {
            tracing::debug!(
                partition,
                dropped,
                "conversations outside the range dropped (the API compared inclusively)"
            );
        }
        if self.config.min_chars > 0 {
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
    /// no retries; `None` when it fails): the raw total, short conversations
    /// included, since they are only dropped page by page (README says so).
    async fn estimated_total(&self) -> Option<u64> {
        let whole = Slice { name: String::new(), start: self.span.start, end: self.span.end };
        let body = self.search_body(&whole, None, 1);
        let answer = self.client.search(&Context::detached(), &body, false).await.ok()?;
        answer.get("total_count").and_then(Value::as_u64)
    }
}

/// `kind = "intercom"`: conversations over a range of days, which a run
/// saves as dates; a run of it is in the `classification` phase.
impl crate::kind::SourceKind for IntercomConfig {
    fn build(&self) -> Result<Arc<dyn Source>, ConfigError> {
        Ok(Arc::new(IntercomSource::new(self.clone())?))
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

    fn incremental(&mut self) -> Option<&mut dyn crate::kind::Incremental> {
        Some(self)
    }
}

impl crate::kind::Incremental for IntercomConfig {
    fn incremental(&self) -> bool {
        self.incremental
    }

    fn set_incremental(&mut self, on: bool) {
        self.incremental = on;
    }

    fn overlap_secs(&self) -> u64 {
        self.overlap_secs
    }

    fn record_source(&self) -> &str {
        &self.name
    }

    fn set_span(&mut self, start: i64, end: i64) -> Result<(), ConfigError> {
        IntercomConfig::set_span(self, start, end)
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
    use super::dates::DateRange;
    use super::*;

    #[test]
    fn slices_cover_the_range_without_gaps() {
        let range = DateRange { from: 20_362, to: 20_451 };
        let one = slices(Span::of(range), "2025-10-01..2025-12-29", 1);
        assert_eq!(one[0].name, "2025-10-01..2025-12-29");
        assert_eq!((one[0].start, one[0].end), (range.start_ts(), range.end_ts()));
        let four = slices(Span::of(range), "", 4);
        assert_eq!(four.len(), 4);
        assert_eq!(four[0].start, range.start_ts());
        assert_eq!(four[3].end, range.end_ts());
        for pair in four.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        assert!(four[1].name.starts_with("2/4 2025-"), "{}", four[1].name);
    }

    #[test]
    fn records_outside_the_slice_are_dropped() {
        let slice = Slice { name: String::new(), start: 100, end: 200 };
        let at = |id: &str, t: Option<i64>| {
            let mut r = Record::new("intercom", id, "text");
            r.updated_at = t;
            SourceItem::Record(r)
        };
        let mut items =
            vec![at("a", Some(99)), at("b", Some(100)), at("c", Some(199)), at("d", Some(200)), at("e", None)];
        assert_eq!(outside(&mut items, &slice), 2);
        let ids: Vec<&str> = items.iter().map(SourceItem::id).collect();
        assert_eq!(ids, ["b", "c", "e"]);
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
}
