//! `POST /api/pipeline/{run_id}/failures/retry`: what `sluice failures retry`
//! does, over HTTP (the dashboard's retry button). The unresolved failures
//! that kept their record run through the run's pipeline again as a new run
//! of their own; each record it stores is marked resolved. The request waits
//! for that run: it holds the store's run slot like any run (409 while
//! another is active).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Serialize;
use sluice_connectors::{PipelineFile, build_pipeline};
use sluice_core::{RunId, Start};
use utoipa::ToSchema;

use super::access::check_token;
use super::error::{ApiError, ErrorBody};
use super::results::run_id;
use super::state::{AppState, busy};
use crate::commands::failures::{RecordsSource, retryable_record};

#[derive(Serialize, ToSchema)]
pub struct RetryResponse {
    pub run_id: RunId,
    /// The run that retried the records; `None` when there was nothing to retry.
    pub retry_run_id: Option<RunId>,
    pub status: String,
    pub resolved: u64,
    /// Failures without a record (the source could not read them): not retried.
    pub not_retryable: usize,
    pub message: String,
}

/// Retry the run's unresolved failures that kept their record, as a new run; answers when it ends.
#[utoipa::path(post, path = "/api/pipeline/{run_id}/failures/retry", params(("run_id" = i64, Path)),
    responses((status = 200, body = RetryResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
               (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 500, body = ErrorBody),
               (status = 503, body = ErrorBody)))]
pub async fn retry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Json<RetryResponse>, ApiError> {
    check_token(state.token.as_deref(), &headers)?;
    let id = run_id(&raw)?;
    let run = state.store.get_run(id).await?.ok_or_else(|| ApiError::not_found(format!("run {id} not found")))?;
    if let Some(active) = state.active_run_id() {
        return Err(busy(active));
    }
    let rows = state.store.failures(id).await?;
    let open: Vec<_> = rows.iter().filter(|r| r.resolved_by.is_none()).collect();
    let records: Vec<_> = open.iter().filter_map(|r| retryable_record(r)).collect();
    let not_retryable = open.len() - records.len();
    if records.is_empty() {
        return Ok(Json(RetryResponse {
            run_id: id,
            retry_run_id: None,
            status: "nothing_to_retry".into(),
            resolved: 0,
            not_retryable,
            message: format!("run {id}: nothing to retry"),
        }));
    }
    let mut file = PipelineFile::from_saved(&run.config)?;
    file.name = Some(format!("{}:retry-of-{id}", file.name.clone().unwrap_or_default()));
    file.max_records = None;
    let source = Arc::new(RecordsSource { name: "failures".into(), records: Arc::new(records) });
    let pipeline = build_pipeline(&file, state.store.clone())?.with_source(source);
    let summary = pipeline.run(Start::New).await?;
    let resolved = state.store.resolve_failures(id, summary.run_id).await?;
    Ok(Json(RetryResponse {
        run_id: id,
        retry_run_id: Some(summary.run_id),
        status: summary.status.to_string(),
        resolved,
        not_retryable,
        message: format!("retry run {} {}: {resolved} failures of run {id} resolved", summary.run_id, summary.status),
    }))
}
