//! The fake Intercom's test-control endpoints under `/_testkit/` (no auth,
//! not counted, not rate limited).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::state::{IntercomCounters, Shared};
use crate::server;

/// A JSON answer without extra headers.
fn plain_json(status: StatusCode, v: &Value) -> Response {
    server::json(status, v, &[])
}

pub(super) async fn tk_get_faults(State(shared): State<Arc<Shared>>) -> Response {
    let f = shared.lock().faults.snapshot();
    plain_json(StatusCode::OK, &json!(f))
}

pub(super) async fn tk_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let patched = shared.lock().faults.patch(&body);
    match patched {
        Ok(f) => plain_json(StatusCode::OK, &f),
        Err(e) => plain_json(StatusCode::BAD_REQUEST, &e),
    }
}

pub(super) async fn tk_counters(State(shared): State<Arc<Shared>>) -> Response {
    let c = shared.lock().counters.clone();
    plain_json(StatusCode::OK, &json!(c))
}

pub(super) async fn tk_reset(State(shared): State<Arc<Shared>>) -> Response {
    let mut m = shared.lock();
    m.counters = IntercomCounters::default();
    m.log.clear();
    plain_json(StatusCode::OK, &json!({"ok": true}))
}

pub(super) async fn tk_dataset(State(shared): State<Arc<Shared>>) -> Response {
    let ds = shared.dataset();
    let rows: Vec<Value> = ds
        .all()
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
                "theme": c.theme,
                "short": c.is_short(),
            })
        })
        .collect();
    plain_json(StatusCode::OK, &Value::Array(rows))
}

pub(super) async fn tk_log(State(shared): State<Arc<Shared>>) -> Response {
    let log = shared.lock().log.clone();
    plain_json(StatusCode::OK, &json!(log))
}

/// `POST /_testkit/conversations` with a [`super::dataset::Change`] (or a
/// list of them): adds or updates conversations; answers their ids.
pub(super) async fn tk_change(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    use super::dataset::Change;
    let changes: Vec<Change> = match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Array(_)) => match serde_json::from_value(v) {
            Ok(list) => list,
            Err(e) => return plain_json(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
        },
        Ok(v) => match serde_json::from_value(v) {
            Ok(one) => vec![one],
            Err(e) => return plain_json(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
        },
        Err(e) => return plain_json(StatusCode::BAD_REQUEST, &json!({"error": format!("not JSON: {e}")})),
    };
    match shared.apply(&changes) {
        Ok(ids) => plain_json(StatusCode::OK, &json!({"ids": ids})),
        Err(unknown) => plain_json(StatusCode::NOT_FOUND, &json!({"error": format!("no conversation {unknown:?}")})),
    }
}

pub(super) async fn tk_invalidate(State(shared): State<Arc<Shared>>) -> Response {
    let now = shared.clock.now_ms();
    shared.lock().cursors_valid_from_ms = now + 1;
    plain_json(StatusCode::OK, &json!({"ok": true}))
}
