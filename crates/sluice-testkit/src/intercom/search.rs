//! The fake Intercom's `POST /conversations/search`: the query, the sort and
//! keyset pagination with cursors.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::cursor::Cursor;
use super::dataset::Conversation;
use super::log::{Endpoint, empty_record};
use super::pipeline::{Effect, Outcome, handle};
use super::query::Query;
use super::state::Shared;

/// `pagination.per_page` bounds.
const MAX_PER_PAGE: u64 = 150;
const DEFAULT_PER_PAGE: u64 = 20;

/// `POST /conversations/search`.
pub(super) async fn search_handler(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut record = empty_record(Endpoint::Search);
    record.starting_after = parsed
        .as_ref()
        .and_then(|v| v.pointer("/pagination/starting_after"))
        .and_then(Value::as_str)
        .map(str::to_string);
    handle(shared, Endpoint::Search, headers, record, move |s, rid| search(s, rid, parsed)).await
}

#[derive(Clone, Copy)]
pub(super) struct Sort {
    by_created: bool,
    descending: bool,
}

impl Sort {
    fn tag(self) -> u64 {
        (self.by_created as u64) * 2 + self.descending as u64
    }
    fn key(self, c: &Conversation) -> (i64, u64) {
        let t = if self.by_created { c.created_at } else { c.updated_at };
        (t * 1000, c.id_num())
    }
}

fn parse_sort(v: Option<&Value>) -> Result<Sort, String> {
    let Some(v) = v else {
        return Ok(Sort { by_created: false, descending: true });
    };
    let by_created = match v.get("field").and_then(Value::as_str).unwrap_or("updated_at") {
        "updated_at" => false,
        "created_at" => true,
        other => {
            return Err(format!("sort field {other:?} is not supported by the fake (updated_at, created_at)"));
        }
    };
    let descending = match v.get("order").and_then(Value::as_str).unwrap_or("descending") {
        "ascending" | "asc" => false,
        "descending" | "desc" => true,
        other => return Err(format!("sort order {other:?} is invalid (ascending, descending)")),
    };
    Ok(Sort { by_created, descending })
}

fn search(shared: &Shared, rid: &str, body: Option<Value>) -> Outcome {
    let bad = |code: &str, msg: &str| Outcome::error(StatusCode::BAD_REQUEST, rid, code, msg, Effect::BadRequest);
    let Some(body) = body.filter(Value::is_object) else {
        return bad("parameter_invalid", "Request body must be a valid JSON object");
    };
    let Some(query) = body.get("query") else {
        return bad("parameter_not_found", "query parameter is required");
    };
    let q = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => return bad("parameter_invalid", &format!("Invalid query: {e}")),
    };
    let q = if shared.lock().faults.settings().inclusive_comparisons { q.inclusive() } else { q };
    let sort = match parse_sort(body.get("sort")) {
        Ok(s) => s,
        Err(e) => return bad("parameter_invalid", &e),
    };
    let pagination = body.get("pagination");
    let per_page = match pagination.and_then(|p| p.get("per_page")) {
        None | Some(Value::Null) => DEFAULT_PER_PAGE,
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
            Some(n) if (1..=MAX_PER_PAGE).contains(&n) => n,
            _ => {
                return bad(
                    "parameter_invalid",
                    &format!("per_page must be an integer between 1 and {MAX_PER_PAGE}, got {v}"),
                );
            }
        },
    };
    let starting_after = match pagination.and_then(|p| p.get("starting_after")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return bad("parameter_invalid", &format!("starting_after must be a string, got {other}")),
    };

    let now_ms = shared.clock.now_ms();
    let cursor = match starting_after {
        None => None,
        Some(s) => {
            let generic = shared.lock().faults.settings().generic_cursor_errors;
            let reject = |detail: &str, expired: bool| {
                let (code, message) = if generic {
                    ("parameter_invalid", "Invalid request".to_string())
                } else {
                    ("client_error", format!("Invalid starting_after param: {detail}"))
                };
                Outcome::error(StatusCode::BAD_REQUEST, rid, code, &message, Effect::CursorRejected { expired })
            };
            let c = match Cursor::decode(&s) {
                Ok(c) => c,
                Err(e) => return reject(&e, false),
            };
            if c.sort != sort.tag() {
                return reject("the cursor belongs to a search with a different sort", false);
            }
            let (ttl, valid_from) = {
                let m = shared.lock();
                (m.faults.settings().cursor_ttl_secs, m.cursors_valid_from_ms)
            };
            if c.issued_ms < valid_from {
                return reject("the cursor has expired", true);
            }
            if let Some(ttl) = ttl
                && now_ms - c.issued_ms > ttl as i64 * 1000
            {
                return reject("the cursor has expired", true);
            }
            Some(c)
        }
    };

    let ds = shared.dataset();
    let mut items: Vec<&Conversation> = ds.all().iter().filter(|c| q.matches(c)).collect();
    items.sort_by_key(|c| sort.key(c));
    if sort.descending {
        items.reverse();
    }
    let total = items.len();
    let start = match cursor {
        None => 0,
        Some(c) => {
            let at = (c.key_ms, c.id);
            if sort.descending {
                items.partition_point(|it| sort.key(it) >= at)
            } else {
                items.partition_point(|it| sort.key(it) <= at)
            }
        }
    };
    let end = (start + per_page as usize).min(total);
    let page_items = &items[start.min(end)..end];
    let page = cursor.map(|c| c.page + 1).unwrap_or(1);
    let total_pages = total.div_ceil(per_page as usize);
    let next = if end < total {
        let last = page_items.last().expect("a page before the end is not empty");
        let (key_ms, id) = sort.key(last);
        let n = {
            let mut m = shared.lock();
            m.cursors_issued += 1;
            m.cursors_issued
        };
        let nonce = crate::rng::mix(shared.seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d)) % 1_000_000_000;
        Some(Cursor { key_ms, id, page, issued_ms: now_ms, nonce, sort: sort.tag() }.encode())
    } else {
        None
    };
    let mut pages = json!({
        "type": "pages",
        "page": page,
        "per_page": per_page,
        "total_pages": total_pages,
    });
    if let Some(next) = &next {
        pages["next"] = json!({"page": page + 1, "starting_after": next});
    }
    let body = json!({
        "type": "conversation.list",
        "pages": pages,
        "total_count": total,
        "conversations": page_items.iter().map(|c| c.to_json(false, false)).collect::<Vec<_>>(),
    });
    Outcome { status: StatusCode::OK, body, effect: Effect::Page, page: Some(page), returned: page_items.len(), next }
}
