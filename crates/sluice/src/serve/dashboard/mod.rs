//! The web dashboard at `/`: server-rendered pages (maud) over the same store
//! reads as the JSON API, with one small embedded script for the live chart,
//! the buttons (which call the API with the token kept in the browser) and
//! the refresh of the runs list. Everything is embedded in the binary: no
//! CDN, it works offline. The read-only pages work without JavaScript.

mod failures;
mod layout;
mod results;
mod run;
mod runs;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use super::error::ApiError;
use super::results::run_id;
use super::state::AppState;
use crate::status::RunStatusDoc;
use layout::{Section, page};

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

type Shared = State<Arc<AppState>>;

/// The dashboard's routes, merged into the API's router.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(runs_page))
        .route("/runs/{run_id}", get(run_page))
        .route("/runs/{run_id}/failures", get(failures_page))
        .route("/runs/{run_id}/results", get(results_page))
        .route("/search", get(search_page))
        .route("/assets/dashboard.css", get(|| asset("text/css; charset=utf-8", CSS)))
        .route("/assets/dashboard.js", get(|| asset("text/javascript; charset=utf-8", JS)))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// An error on a page answers an HTML page with the API's status and message.
pub struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<sluice_core::StoreError> for PageError {
    fn from(e: sluice_core::StoreError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        if status.is_server_error() {
            tracing::error!(%status, error = %self.0.error, "dashboard page failed");
        }
        let body = html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error { (self.0.error) }
            p { a href="/" { "Back to the runs" } }
        };
        (status, Html(page("Error", Section::Runs, None, body).into_string())).into_response()
    }
}

type PageResult = Result<Html<String>, PageError>;

fn done(markup: Markup) -> PageResult {
    Ok(Html(markup.into_string()))
}

async fn run_doc(state: &AppState, raw: &str) -> Result<RunStatusDoc, PageError> {
    let id = run_id(raw)?;
    let run = state.store.get_run(id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    Ok(RunStatusDoc::new(&run))
}

async fn runs_page(State(state): Shared) -> PageResult {
    let runs: Vec<RunStatusDoc> = state.store.list_runs(50).await?.iter().map(RunStatusDoc::new).collect();
    done(runs::page(&runs, state.token.is_some()))
}

async fn run_page(State(state): Shared, Path(raw): Path<String>) -> PageResult {
    let doc = run_doc(&state, &raw).await?;
    let live = state.channel(doc.run_id).is_some();
    done(run::page(&doc, live))
}

async fn failures_page(
    State(state): Shared,
    Path(raw): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let doc = run_doc(&state, &raw).await?;
    let filter = super::results::FailureFilter::from_query(&query)?;
    let rows = state.store.failures(doc.run_id).await?;
    done(failures::page(&doc, &rows, &filter))
}

async fn results_page(
    State(state): Shared,
    Path(raw): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> PageResult {
    let doc = run_doc(&state, &raw).await?;
    let open = query.get("key").map(String::as_str).filter(|k| !k.is_empty());
    let results = super::results::run_results(&state, doc.run_id, open).await?;
    done(results::page(&doc, &results, open))
}

async fn search_page(State(state): Shared, Query(query): Query<HashMap<String, String>>) -> PageResult {
    let text = query.get("q").map(|q| q.trim().to_string()).unwrap_or_default();
    let found = if text.is_empty() {
        None
    } else {
        let source = super::results::default_source(&state)?;
        Some(super::results::search_documents(state.store.as_ref(), &source, &text, 100).await?)
    };
    done(results::search_page(&text, found.as_ref()))
}
