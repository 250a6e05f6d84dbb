//! The fake OpenAI's routes, and its endpoints other than chat and
//! embeddings.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::chat::chat_handler;
use super::config::ApiEndpoint;
use super::control::{tk_counters, tk_get_faults, tk_reset, tk_set_faults};
use super::embeddings::embeddings_handler;
use super::pipeline::{Answer, Tally, api_error, handle};
use super::state::Shared;

/// The fake's routes.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_handler))
        .route("/v1/embeddings", post(embeddings_handler))
        .route("/v1/models", get(models_handler))
        .route("/_testkit/faults", get(tk_get_faults).post(tk_set_faults))
        .route("/_testkit/counters", get(tk_counters))
        .route("/_testkit/reset", post(tk_reset))
        .fallback(fallback_handler)
        .method_not_allowed_fallback(fallback_handler)
        .with_state(shared)
}

/// `GET /v1/models`: a short model list.
async fn models_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(shared, ApiEndpoint::Models, headers, "models".into(), |_, _| {
        let data: Vec<Value> = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "text-embedding-3-large"]
            .iter()
            .map(|id| json!({"id": id, "object": "model", "created": 1_715_367_049, "owned_by": "system"}))
            .collect();
        Answer { status: StatusCode::OK, body: json!({"object": "list", "data": data}), tally: Tally::None }
    })
    .await
}

/// Any other route or method: 404, after the common checks.
async fn fallback_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(shared, ApiEndpoint::Other, headers, "unknown".into(), |_, _| Answer {
        status: StatusCode::NOT_FOUND,
        body: api_error(
            "Invalid URL (the fake serves POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models)",
            "invalid_request_error",
            None,
            None,
        ),
        tally: Tally::None,
    })
    .await
}
