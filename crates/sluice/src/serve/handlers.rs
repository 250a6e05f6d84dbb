//! The HTTP endpoints. Bodies and queries are parsed by hand so every bad
//! input gets a 400 with a JSON body naming what was wrong.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Serialize;
use sluice_core::{EventKind, RunId};
use tokio::sync::broadcast::error::RecvError;
use utoipa::{OpenApi, ToSchema};

use super::access::check_token;
use super::api_doc::CommonErrors;
use super::error::{ApiError, ErrorBody};
use super::state::{AppState, RunRequest, RunResponse, busy};
use crate::status::{RunStatusDoc, slot_held};

type Shared = State<Arc<AppState>>;

/// Mutating endpoints need `Authorization: Bearer $SLUICE_API_TOKEN` when a token is set.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    check_token(state.token.as_deref(), headers)
}

fn run_id(raw: &str) -> Result<RunId, ApiError> {
    raw.parse::<RunId>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("run id {raw:?} is not a positive integer")))
}

/// Start a backfill, or resume a stopped/failed one (`resume`, `resume_run_id`).
#[utoipa::path(post, path = "/api/pipeline/run", request_body = RunRequest,
    responses((status = 200, body = RunResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 409, body = ErrorBody), (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn run(State(state): Shared, headers: HeaderMap, body: Bytes) -> Result<Json<RunResponse>, ApiError> {
    authorize(&state, &headers)?;
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("the body is not a valid run request").with_detail(serde_json::json!(e.to_string()))
        })?
    };
    Ok(Json(state.start(request).await?))
}

/// A run's status, phase, counts and checkpoint.
#[utoipa::path(get, path = "/api/pipeline/status/{run_id}", params(("run_id" = i64, Path)),
    responses((status = 200, body = RunStatusDoc), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn status(State(state): Shared, Path(raw): Path<String>) -> Result<Json<RunStatusDoc>, ApiError> {
    let id = run_id(&raw)?;
    let run = state.store.get_run(id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    Ok(Json(state.status_doc(&run).await))
}

/// The same document as `/api/pipeline/status/{run_id}`.
#[utoipa::path(get, path = "/api/pipeline/{run_id}", params(("run_id" = i64, Path)),
    responses((status = 200, body = RunStatusDoc), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn run_document(state: Shared, raw: Path<String>) -> Result<Json<RunStatusDoc>, ApiError> {
    status(state, raw).await
}

#[derive(Serialize, ToSchema)]
pub struct ActiveResponse {
    pub active: bool,
    pub run_id: Option<RunId>,
    /// The active run's status document, when there is one.
    pub run: Option<RunStatusDoc>,
    /// `sluice serve --every`: the interval and the next tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<super::incremental::ScheduleDoc>,
}

/// Whether a run is active on this store (in this process or another), and which.
#[utoipa::path(get, path = "/api/pipeline/active",
    responses((status = 200, body = ActiveResponse), (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn active(State(state): Shared) -> Result<Json<ActiveResponse>, ApiError> {
    let run_id = match state.active_run_id() {
        Some(id) => Some(id),
        None => match state.store.acquire_active().await {
            Ok(guard) => {
                drop(guard);
                None
            }
            Err(sluice_core::StoreError::Busy { active_run_id }) => Some(active_run_id),
            Err(e) => return Err(e.into()),
        },
    };
    let run = match run_id {
        Some(id) => state.store.get_run(id).await?.map(|r| RunStatusDoc::new(&r)),
        None => None,
    };
    Ok(Json(ActiveResponse { active: run_id.is_some(), run_id, run, schedule: state.schedule() }))
}

#[derive(Serialize, ToSchema)]
pub struct HistoryResponse {
    pub runs: Vec<RunStatusDoc>,
}

/// The latest runs, newest first (`limit` 1-100, default 20).
#[utoipa::path(get, path = "/api/pipeline/history", params(("limit" = Option<u32>, Query)),
    responses((status = 200, body = HistoryResponse), (status = 400, body = ErrorBody), (status = 500, body = ErrorBody),
               (status = 503, body = ErrorBody)))]
pub async fn history(
    State(state): Shared,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<HistoryResponse>, ApiError> {
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "limit") {
        return Err(ApiError::bad_request(format!("unknown query parameter {unknown:?} (allowed: limit)")));
    }
    let limit = match query.get("limit") {
        None => 20,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("limit = {raw:?} is out of range (allowed: 1-100)")))?,
    };
    let runs = state.store.list_runs(limit).await?;
    let held = slot_held(state.store.as_ref()).await;
    Ok(Json(HistoryResponse { runs: runs.iter().map(|run| RunStatusDoc::new(run).with_slot(held)).collect() }))
}

#[derive(Serialize, ToSchema)]
pub struct StopResponse {
    pub run_id: RunId,
    pub status: String,
    pub message: String,
}

/// Stop the active run: it commits the batches in flight, checkpoints and ends `stopped`; without one, the
/// distributed run this server created (PostgreSQL store): its workers commit, release their leases, it ends `stopped`.
#[utoipa::path(post, path = "/api/pipeline/stop",
    responses((status = 200, body = StopResponse), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
               (status = 409, body = ErrorBody), (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn stop(State(state): Shared, headers: HeaderMap) -> Result<Json<StopResponse>, ApiError> {
    authorize(&state, &headers)?;
    if let Some(run_id) = state.stop() {
        return Ok(Json(StopResponse {
            run_id,
            status: "stopping".into(),
            message: format!("run {run_id} will stop after committing the batches in flight"),
        }));
    }
    if let Some(run_id) = state.stop_distributed().await? {
        return Ok(Json(StopResponse {
            run_id,
            status: "stopping".into(),
            message: format!(
                "distributed run {run_id} will stop once its workers committed their batches in flight and \
                 released their leases; resume it with {{\"distributed\": true, \"resume\": true, \"resume_run_id\": {run_id}}}"
            ),
        }));
    }
    match state.store.acquire_active().await {
        Err(sluice_core::StoreError::Busy { active_run_id }) => {
            Err(busy(active_run_id).with_detail(serde_json::json!({
                "active_run_id": active_run_id,
                "hint": "the run is driven by another process; stop it there"
            })))
        }
        Err(e) => Err(e.into()),
        Ok(_) => Err(ApiError::not_found("no run is active")),
    }
}

/// A run's events, live, as Server-Sent Events (the JSON of `--events-out`), from RunStarted to RunFinished.
#[utoipa::path(get, path = "/api/pipeline/{run_id}/events", params(("run_id" = i64, Path)),
    responses((status = 200, content_type = "text/event-stream", body = String), (status = 400, body = ErrorBody),
               (status = 404, body = ErrorBody), (status = 500, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn events(
    State(state): Shared,
    Path(raw): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id = run_id(&raw)?;
    let Some(channel) = state.channel(id) else {
        return Err(match state.store.get_run(id).await? {
            Some(_) => ApiError::not_found(format!(
                "run {id} was not run by this server since it started; its events are in its --events-out log"
            )),
            None => ApiError::not_found(format!("run {id} not found")),
        });
    };
    let (rx, history) = channel.subscribe();
    let last_replayed = history.last().map_or(0, |(seq, _)| *seq);
    let live = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, rx)),
                Err(RecvError::Lagged(n)) => tracing::warn!(skipped = n, "a slow event stream skipped events"),
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |(seq, _)| std::future::ready(*seq > last_replayed));
    let items = Box::pin(futures::stream::iter(history).chain(live));
    // Ends right after RunFinished.
    let stream = futures::stream::unfold((items, false), |(mut items, finished)| async move {
        if finished {
            return None;
        }
        let (seq, event) = items.next().await?;
        let finished = matches!(event.kind, EventKind::RunFinished { .. });
        let data = serde_json::to_string(event.as_ref()).unwrap_or_default();
        Some((Ok(SseEvent::default().id(seq.to_string()).event(event.kind.name()).data(data)), (items, finished)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): Shared) -> Response {
    state.distributed_gauges().await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub store: String,
}

/// Liveness, with a read from the store.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn healthz(State(state): Shared) -> Result<Json<Health>, ApiError> {
    state.store.list_runs(1).await.map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(Health { status: "ok".into(), store: state.store.describe() }))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "sluice", description = "Start, stop, resume and watch ingestion runs."),
    paths(run, status, run_document, active, history, stop, events, metrics, healthz, openapi),
    modifiers(&CommonErrors),
    components(schemas(
        RunRequest,
        RunResponse,
        RunStatusDoc,
        ActiveResponse,
        HistoryResponse,
        StopResponse,
        Health,
        ErrorBody
    ))
)]
pub struct ApiDoc;

/// The OpenAPI document, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "This OpenAPI document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi().merge_from(super::results_doc::ResultsApi::openapi()))
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!("no such endpoint: {method} {path}; see /openapi.json"))
}
