//! Errors of the HTTP API: a status code and a JSON body
//! `{"error": "...", "detail": ...}`. Never a 500 for bad input.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub detail: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self { status, error: error.into(), detail: Value::Null }
    }

    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, error = %self.error, "request failed");
        }
        (self.status, Json(ErrorBody { error: self.error, detail: self.detail })).into_response()
    }
}

impl From<sluice_core::StoreError> for ApiError {
    fn from(e: sluice_core::StoreError) -> Self {
        match e {
            sluice_core::StoreError::Busy { active_run_id } => {
                ApiError::new(StatusCode::CONFLICT, format!("run {active_run_id} is already active"))
                    .with_detail(serde_json::json!({ "active_run_id": active_run_id }))
            }
            sluice_core::StoreError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<sluice_core::EngineError> for ApiError {
    fn from(e: sluice_core::EngineError) -> Self {
        match e {
            sluice_core::EngineError::Store(store) => store.into(),
            sluice_core::EngineError::Invalid(message) => ApiError::bad_request(message),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<sluice_connectors::ConfigError> for ApiError {
    fn from(e: sluice_connectors::ConfigError) -> Self {
        ApiError::bad_request(e.0)
    }
}
