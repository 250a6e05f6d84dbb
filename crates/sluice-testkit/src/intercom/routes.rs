//! The fake Intercom's routes, and its endpoints other than search.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::control::{
    tk_change, tk_counters, tk_dataset, tk_get_faults, tk_invalidate, tk_log, tk_reset, tk_set_faults,
};
use super::log::{Endpoint, empty_record};
use super::pipeline::{Effect, Outcome, handle};
use super::search::search_handler;
use super::state::Shared;

/// The fake's routes.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/conversations/search", post(search_handler))
        .route("/conversations/{id}", get(get_handler))
        .route("/me", get(me_handler))
        .route("/_testkit/faults", get(tk_get_faults).post(tk_set_faults))
        .route("/_testkit/counters", get(tk_counters))
        .route("/_testkit/reset", post(tk_reset))
        .route("/_testkit/dataset", get(tk_dataset))
        .route("/_testkit/log", get(tk_log))
        .route("/_testkit/invalidate-cursors", post(tk_invalidate))
        .route("/_testkit/conversations", post(tk_change))
        .fallback(fallback_handler)
        .method_not_allowed_fallback(fallback_handler)
        .with_state(shared)
}

#[derive(Deserialize)]
struct GetParams {
    display_as: Option<String>,
}

/// `GET /conversations/{id}`.
async fn get_handler(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<GetParams>,
    headers: HeaderMap,
) -> Response {
    let mut record = empty_record(Endpoint::Get);
    record.conversation_id = Some(id.clone());
    let plaintext = params.display_as.as_deref() == Some("plaintext");
    handle(shared, Endpoint::Get, headers, record, move |s, rid| {
        let ds = s.dataset();
        match ds.get(&id) {
            Some(c) => Outcome {
                status: StatusCode::OK,
                body: c.to_json(true, plaintext),
                effect: Effect::Fetched,
                page: None,
                returned: 1,
                next: None,
            },
            None => Outcome::error(StatusCode::NOT_FOUND, rid, "not_found", "Resource Not Found", Effect::NotFound),
        }
    })
    .await
}

/// `GET /me`: the admin the token belongs to, and its workspace (Intercom's
/// "identify an admin" shape), after the common checks (auth, accept, version,
/// rate limit, faults of "all" endpoints).
async fn me_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(shared, Endpoint::Other, headers, empty_record(Endpoint::Other), |_, _| Outcome {
        status: StatusCode::OK,
        body: serde_json::json!({
            "type": "admin",
            "id": "991267460",
            "email": "admin@example.com",
            "name": "Test Admin",
            "email_verified": true,
            "app": {
                "type": "app",
                "id_code": "testkit",
                "name": "sluice testkit",
                "created_at": 1_700_000_000,
                "secure": false,
                "identity_verification": false,
                "timezone": "UTC",
                "region": "US"
            },
            "has_inbox_seat": true
        }),
        effect: Effect::Identified,
        page: None,
        returned: 0,
        next: None,
    })
    .await
}

/// Any other route or method: 404, after the common checks.
async fn fallback_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    handle(shared, Endpoint::Other, headers, empty_record(Endpoint::Other), |_, rid| {
        Outcome::error(StatusCode::NOT_FOUND, rid, "not_found", "Resource Not Found", Effect::NotFound)
    })
    .await
}
