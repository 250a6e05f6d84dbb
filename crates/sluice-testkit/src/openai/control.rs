//! The fake OpenAI's test-control endpoints under `/_testkit/` (no auth,
//! not counted).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::state::{OpenAiCounters, Shared};
use crate::server;

pub(super) async fn tk_get_faults(State(shared): State<Arc<Shared>>) -> Response {
    let f = shared.lock().faults.snapshot();
    server::json(StatusCode::OK, &json!(f), &[])
}

pub(super) async fn tk_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let patched = shared.lock().faults.patch(&body);
    match patched {
        Ok(f) => server::json(StatusCode::OK, &f, &[]),
        Err(e) => server::json(StatusCode::BAD_REQUEST, &e, &[]),
    }
}

pub(super) async fn tk_counters(State(shared): State<Arc<Shared>>) -> Response {
    server::json(StatusCode::OK, &json!(shared.counters()), &[])
}

pub(super) async fn tk_reset(State(shared): State<Arc<Shared>>) -> Response {
    let mut m = shared.lock();
    m.counters = OpenAiCounters::default();
    m.chat_inputs.clear();
    m.embedding_inputs.clear();
    server::json(StatusCode::OK, &json!({"ok": true}), &[])
}
