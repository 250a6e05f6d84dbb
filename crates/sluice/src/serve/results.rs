//! Read-only answers for the dashboard (and any other client): a run's
//! dead-letter queue, its themes and stories with their conversations, and a
//! text search over the stored documents. All are JSON like the rest of the
//! API, and the dashboard's pages are rendered from the same functions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;
use sluice_connectors::PipelineFile;
use sluice_core::{Document, FailureRow, RunId, Store};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::state::AppState;

type Shared = State<Arc<AppState>>;

/// Documents read per store call while searching.
const SCAN_PAGE: usize = 1000;
/// A search or a theme's conversations read at most this many stored documents:
/// the answer stays quick on a large store (it says when it stopped early).
pub const SCAN_CAP: usize = 50_000;

/// The read endpoints here.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/pipeline/{run_id}/failures", get(failures))
        .route("/api/pipeline/{run_id}/results", get(results))
        .route("/api/documents/search", get(search))
}

pub fn run_id(raw: &str) -> Result<RunId, ApiError> {
    raw.parse::<RunId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("run id {raw:?} is not a positive integer")))
}

fn allow_only(query: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => {
            Err(ApiError::bad_request(format!("unknown query parameter {unknown:?} (allowed: {})", allowed.join(", "))))
        }
        None => Ok(()),
    }
}

/// Which failures a listing keeps: all given conditions hold.
#[derive(Clone, Debug, Default)]
pub struct FailureFilter {
    pub error_type: Option<String>,
    pub stage: Option<String>,
    /// Case-insensitive text in the record id or the message.
    pub text: Option<String>,
    pub unresolved: bool,
}

impl FailureFilter {
    pub fn from_query(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        allow_only(query, &["error_type", "stage", "q", "unresolved"])?;
        let some = |k: &str| query.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let unresolved = match query.get("unresolved").map(String::as_str) {
            None | Some("") | Some("false") => false,
            Some("true") | Some("on") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!("unresolved = {other:?} is not true or false")));
            }
        };
        Ok(Self {
            error_type: some("error_type"),
            stage: some("stage"),
            text: some("q").map(|t| t.to_lowercase()),
            unresolved,
        })
    }

    pub fn keeps(&self, row: &FailureRow) -> bool {
        let f = &row.failure;
        self.error_type.as_ref().is_none_or(|t| &f.error_type == t)
            && self.stage.as_ref().is_none_or(|s| &f.stage == s)
            && self
                .text
                .as_ref()
                .is_none_or(|t| f.record_id.to_lowercase().contains(t) || f.error.to_lowercase().contains(t))
            && (!self.unresolved || row.resolved_by.is_none())
    }
}

#[derive(Serialize, ToSchema)]
pub struct FailuresResponse {
    pub run_id: RunId,
    /// All failures of the run, before the filter.
    pub total: usize,
    /// The rows `sluice failures --json` prints.
    #[schema(value_type = Vec<Object>)]
    pub failures: Vec<FailureRow>,
}

/// The run's dead-letter queue, filtered by `error_type`, `stage`, `q` (text) and `unresolved`.
#[utoipa::path(get, path = "/api/pipeline/{run_id}/failures",
    params(("run_id" = i64, Path), ("error_type" = Option<String>, Query), ("stage" = Option<String>, Query),
           ("q" = Option<String>, Query), ("unresolved" = Option<bool>, Query)),
    responses((status = 200, body = FailuresResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn failures(
    State(state): Shared,
    Path(raw): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<FailuresResponse>, ApiError> {
    let id = run_id(&raw)?;
    let filter = FailureFilter::from_query(&query)?;
    existing_run(state.store.as_ref(), id).await?;
    let rows = state.store.failures(id).await?;
    let total = rows.len();
    Ok(Json(FailuresResponse { run_id: id, total, failures: rows.into_iter().filter(|r| filter.keeps(r)).collect() }))
}

async fn existing_run(store: &dyn Store, id: RunId) -> Result<sluice_core::RunInfo, ApiError> {
    store.get_run(id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))
}

/// A stored document as the dashboard shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DocumentView {
    pub source: String,
    pub id: String,
    pub title: String,
    pub snippet: String,
    pub category: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub facets: Option<Value>,
    pub theme: Option<String>,
}

/// Characters of a document's text a view shows.
const SNIPPET: usize = 240;

impl DocumentView {
    /// The view of `doc`, its snippet around the first place its text has `needle`
    /// (lowercase), or from the start.
    pub fn around(doc: &Document, needle: &str) -> Self {
        let mut view = Self::new(doc);
        let lower = doc.record.text.to_lowercase();
        if let Some(at) = lower.find(needle).filter(|_| !needle.is_empty()) {
            let skip = lower[..at].chars().count().saturating_sub(SNIPPET / 3);
            let mut snippet: String = doc.record.text.chars().skip(skip).take(SNIPPET).collect();
            if skip > 0 {
                snippet.insert(0, '…');
            }
            view.snippet = snippet;
        }
        view
    }

    pub fn new(doc: &Document) -> Self {
        let record = &doc.record;
        let title = ["title", "subject", "name"]
            .iter()
            .find_map(|k| record.fields.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .unwrap_or_else(|| record.id.clone());
        let snippet: String = record.text.chars().take(SNIPPET).collect();
        Self {
            source: record.source.clone(),
            id: record.id.clone(),
            title,
            snippet,
            category: doc.classification.as_ref().map(|c| c.category.clone()),
            facets: doc.annotations.get("facets").cloned(),
            theme: doc.annotations.get("theme").and_then(|t| t.get("label")).and_then(Value::as_str).map(Into::into),
        }
    }
}

/// A theme or a story, with its conversations when asked for.
#[derive(Serialize, ToSchema)]
pub struct ResultGroup {
    pub kind: String,
    pub key: String,
    /// What the phase wrote: a theme's `label`, `terms`, `size`, `document_ids`; a story's `title`, `summary`, ...
    #[schema(value_type = Object)]
    pub value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversations: Option<Vec<DocumentView>>,
}

impl ResultGroup {
    pub fn title(&self) -> String {
        ["title", "label"]
            .iter()
            .find_map(|k| self.value.get(*k).and_then(Value::as_str))
            .unwrap_or(&self.key)
            .to_string()
    }

    /// The ids of the documents the group is made of.
    pub fn member_ids(&self) -> Vec<String> {
        ["document_ids", "conversation_ids"]
            .iter()
            .find_map(|k| self.value.get(*k).and_then(Value::as_array))
            .map(|ids| ids.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    }
}

#[derive(Serialize, ToSchema)]
pub struct ResultsResponse {
    pub run_id: RunId,
    pub themes: Vec<ResultGroup>,
    pub stories: Vec<ResultGroup>,
}

/// A run's themes and stories; `key=theme-000` adds that one's conversations.
#[utoipa::path(get, path = "/api/pipeline/{run_id}/results", params(("run_id" = i64, Path), ("key" = Option<String>, Query)),
    responses((status = 200, body = ResultsResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn results(
    State(state): Shared,
    Path(raw): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ResultsResponse>, ApiError> {
    let id = run_id(&raw)?;
    allow_only(&query, &["key"])?;
    Ok(Json(run_results(&state, id, query.get("key").map(String::as_str)).await?))
}

/// The themes and stories of run `id`; the one keyed `open` with its conversations.
pub async fn run_results(state: &AppState, id: RunId, open: Option<&str>) -> Result<ResultsResponse, ApiError> {
    let run = existing_run(state.store.as_ref(), id).await?;
    let group = |kind: &str| {
        let store = state.store.clone();
        let kind = kind.to_string();
        async move {
            Ok::<_, ApiError>(
                store
                    .phase_results(id, &kind)
                    .await?
                    .into_iter()
                    .map(|r| ResultGroup { kind: r.kind, key: r.key, value: r.value, conversations: None })
                    .collect::<Vec<_>>(),
            )
        }
    };
    let mut themes = group("theme").await?;
    let mut stories = group("story").await?;
    if let Some(key) = open {
        let Some(target) = themes.iter_mut().chain(stories.iter_mut()).find(|g| g.key == key) else {
            return Err(ApiError::not_found(format!("run {id} has no theme or story {key:?}")));
        };
        let wanted: HashSet<String> = target.member_ids().into_iter().collect();
        let source = source_of(&run.config).unwrap_or_default();
        let keep = |d: &Document| wanted.contains(d.id());
        let mut docs = scan(state.store.as_ref(), &source, keep, DocumentView::new, wanted.len()).await?.0;
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        target.conversations = Some(docs);
    }
    Ok(ResultsResponse { run_id: id, themes, stories })
}

/// The name of the source a saved pipeline reads (documents are stored under it).
pub fn source_of(config: &Value) -> Option<String> {
    let file = PipelineFile::from_saved(config).ok()?;
    file.source.kind().build().ok().map(|s| s.name().to_string())
}

/// Stored documents of `source` that `keep`, up to `limit`, reading at most
/// `SCAN_CAP`; and whether the scan stopped at the cap.
pub async fn scan(
    store: &dyn Store,
    source: &str,
    keep: impl Fn(&Document) -> bool,
    view: impl Fn(&Document) -> DocumentView,
    limit: usize,
) -> Result<(Vec<DocumentView>, bool), ApiError> {
    let mut found = Vec::new();
    let mut after: Option<String> = None;
    let mut read = 0;
    while found.len() < limit {
        if read >= SCAN_CAP {
            return Ok((found, true));
        }
        let page = store.scan_documents(source, after.as_deref(), SCAN_PAGE).await?;
        read += page.len();
        let last = (page.len() == SCAN_PAGE).then(|| page.last().map(|d| d.id().to_string())).flatten();
        found.extend(page.iter().filter(|d| keep(d)).map(&view));
        match last {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    found.truncate(limit);
    Ok((found, false))
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub query: String,
    pub source: String,
    pub documents: Vec<DocumentView>,
    /// The search read `SCAN_CAP` documents and stopped: there may be more matches.
    pub truncated: bool,
}

/// Stored documents whose text or title contains `q` (case-insensitive), of the
/// source the server's pipeline reads (`source` names another); `limit` 1-200.
#[utoipa::path(get, path = "/api/documents/search",
    params(("q" = String, Query), ("limit" = Option<u32>, Query), ("source" = Option<String>, Query)),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody),
               (status = 503, body = ErrorBody)))]
pub async fn search(
    State(state): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<SearchResponse>, ApiError> {
    allow_only(&query, &["q", "source", "limit"])?;
    let text = query.get("q").map(|q| q.trim().to_string()).unwrap_or_default();
    if text.is_empty() {
        return Err(ApiError::bad_request("q is missing: give the text to search for"));
    }
    let limit = match query.get("limit") {
        None => 50,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit = {raw:?} is out of range (allowed: 1-200)")))?,
    };
    let source = match query.get("source") {
        Some(s) => s.clone(),
        None => default_source(&state)?,
    };
    Ok(Json(search_documents(state.store.as_ref(), &source, &text, limit).await?))
}

/// The source of the server's pipeline file.
pub fn default_source(state: &AppState) -> Result<String, ApiError> {
    let source = state.file.source.kind().build()?;
    Ok(source.name().to_string())
}

pub async fn search_documents(
    store: &dyn Store,
    source: &str,
    text: &str,
    limit: usize,
) -> Result<SearchResponse, ApiError> {
    let needle = text.to_lowercase();
    let matches = |d: &Document| {
        d.record.text.to_lowercase().contains(&needle)
            || d.record.fields.get("title").and_then(Value::as_str).is_some_and(|t| t.to_lowercase().contains(&needle))
    };
    let view = |d: &Document| DocumentView::around(d, &needle);
    let (documents, truncated) = scan(store, source, matches, view, limit).await?;
    Ok(SearchResponse { query: text.to_string(), source: source.to_string(), documents, truncated })
}

#[cfg(test)]
mod tests {
    use sluice_core::{Failure, Record};

    use super::*;

    fn row(error_type: &str, stage: &str, error: &str, resolved_by: Option<RunId>) -> FailureRow {
        FailureRow {
            id: 1,
            run_id: 1,
            failure: Failure {
                source: "src".into(),
                record_id: "rec-7".into(),
                stage: stage.into(),
                error_type: error_type.into(),
                error: error.into(),
                retryable: false,
                retry_count: 1,
                payload: String::new(),
                has_record: true,
            },
            created_at: String::new(),
            resolved_by,
        }
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_failure_filter_keeps_rows_meeting_every_condition() {
        let rows = [
            row("parse", "classify", "answer was prose", None),
            row("http", "embed", "HTTP 500", None),
            row("parse", "classify", "answer was prose", Some(2)),
        ];
        let kept = |pairs: &[(&str, &str)]| {
            let filter = FailureFilter::from_query(&query(pairs)).unwrap();
            rows.iter().filter(|r| filter.keeps(r)).count()
        };
        assert_eq!(kept(&[]), 3);
        assert_eq!(kept(&[("error_type", "parse")]), 2);
        assert_eq!(kept(&[("error_type", "parse"), ("unresolved", "true")]), 1);
        assert_eq!(kept(&[("stage", "embed"), ("q", "http 5")]), 1);
        assert_eq!(kept(&[("q", "REC-7")]), 3, "the record id is searched too");
        assert_eq!(kept(&[("error_type", ""), ("stage", " ")]), 3, "blank fields filter nothing");
        assert!(FailureFilter::from_query(&query(&[("unresolved", "maybe")])).is_err());
        assert!(FailureFilter::from_query(&query(&[("colour", "red")])).is_err());
    }

    #[test]
    fn a_search_snippet_shows_the_match() {
        let text = format!("{} the refund was late {}", "x ".repeat(400), "y ".repeat(400));
        let doc = Document::from_record(Record::new("src", "a", text).with_field("title", "Late"));
        let view = DocumentView::around(&doc, "refund");
        assert!(view.snippet.contains("refund"), "{}", view.snippet);
        assert!(view.snippet.starts_with('…'));
        assert_eq!(view.title, "Late");
        let plain = DocumentView::around(&doc, "absent");
        assert!(plain.snippet.starts_with("x x"), "no match: the start of the text");
        let multibyte = Document::from_record(Record::new("src", "b", "İİİ ünïcode refund"));
        assert!(DocumentView::around(&multibyte, "refund").snippet.contains("refund"));
    }
}
