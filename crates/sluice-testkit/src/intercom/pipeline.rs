//! The checks every request to the fake Intercom goes through, in order
//! (see the module docs of [`super`]): counting, latency, auth, `Accept`,
//! `Intercom-Version`, the rate limiter and injected faults, around the
//! work of one endpoint.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::log::{self, Endpoint, RequestRecord};
use super::state::{Mutable, Shared};
use crate::faults::{self, FaultKind};
use crate::server;

pub(super) fn error_list(request_id: &str, code: &str, message: &str) -> Value {
    json!({
        "type": "error.list",
        "request_id": request_id,
        "errors": [{"code": code, "message": message}],
    })
}

/// What the request itself produced, before faults are applied to it.
pub(super) struct Outcome {
    pub status: StatusCode,
    pub body: Value,
    pub effect: Effect,
    pub page: Option<u64>,
    pub returned: usize,
    pub next: Option<String>,
}

/// What a request's outcome adds to the counters.
pub(super) enum Effect {
    Page,
    Fetched,
    NotFound,
    CursorRejected {
        expired: bool,
    },
    BadRequest,
    /// `GET /me`: counted as an other request only.
    Identified,
}

impl Outcome {
    pub fn error(status: StatusCode, request_id: &str, code: &str, message: &str, effect: Effect) -> Outcome {
        Outcome { status, body: error_list(request_id, code, message), effect, page: None, returned: 0, next: None }
    }
}

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");

fn version_is_valid(v: &str) -> bool {
    if v.eq_ignore_ascii_case("unstable") || v.eq_ignore_ascii_case("preview") {
        return true;
    }
    match v.split_once('.') {
        Some((major, minor)) => {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Runs the common pipeline of checks (see the module docs) around `work`.
pub(super) async fn handle(
    shared: Arc<Shared>,
    ep: Endpoint,
    headers: HeaderMap,
    mut record: RequestRecord,
    work: impl FnOnce(&Shared, &str) -> Outcome,
) -> Response {
    let version = headers.get("intercom-version").map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    // 1. count, 2. latency
    let (request_id, latency) = {
        let mut m = shared.lock();
        m.requests += 1;
        let n = m.requests;
        let c = &mut m.counters;
        match ep {
            Endpoint::Search => c.search_requests += 1,
            Endpoint::Get => c.get_requests += 1,
            Endpoint::Other => c.other_requests += 1,
        }
        *c.intercom_versions.entry(version.clone().unwrap_or_else(|| "(none)".to_string())).or_default() += 1;
        let latency = m.faults.latency_ms(m.faults.settings().targets(ep));
        if latency > 0 {
            m.counters.faults.latency += 1;
        }
        (server::request_id(shared.seed, n), latency)
    };
    faults::delay(latency).await;
    let rid_header = vec![(X_REQUEST_ID.clone(), request_id.clone())];
    let finish = |m: &mut Mutable, record: RequestRecord| log::push(&mut m.log, record);

    // 3. auth
    if server::bearer(&headers).as_deref() != Some(shared.token.as_str()) {
        let mut m = shared.lock();
        m.counters.unauthorized += 1;
        record.status = 401;
        finish(&mut m, record);
        let body = error_list(&request_id, "unauthorized", "Access Token Invalid");
        return server::json(StatusCode::UNAUTHORIZED, &body, &rid_header);
    }
    // 4. accept
    if !server::accepts_json(&headers) {
        let mut m = shared.lock();
        m.counters.not_acceptable += 1;
        record.status = 406;
        finish(&mut m, record);
        let body = error_list(
            &request_id,
            "media_type_not_acceptable",
            "The Accept header should send a media type of application/json",
        );
        return server::json(StatusCode::NOT_ACCEPTABLE, &body, &rid_header);
    }
    // 5. version
    if let Some(v) = &version
        && !version_is_valid(v)
    {
        let mut m = shared.lock();
        m.counters.bad_requests += 1;
        record.status = 400;
        finish(&mut m, record);
        let body = error_list(&request_id, "intercom_version_invalid", "The requested version could not be found");
        return server::json(StatusCode::BAD_REQUEST, &body, &rid_header);
    }
    // 6. rate limit, 7. faults
    let now = shared.clock.now_secs();
    let (headers_out, limited, fault, drop_mode, limit) = {
        let mut m = shared.lock();
        let limit = m.rate_limit;
        let window_start = now - now.rem_euclid(10);
        let entry = m.windows.entry(shared.token.clone()).or_insert((window_start, 0));
        if entry.0 != window_start {
            *entry = (window_start, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let used = entry.1;
        let reset = window_start + 10;
        let limited = used > limit;
        let remaining = limit.saturating_sub(used);
        let targeted = !limited && m.faults.settings().targets(ep);
        let fault = m.faults.next(targeted);
        let (remaining, reset) = if fault == FaultKind::RateLimit { (0, now + 1) } else { (remaining, reset) };
        let mut h = vec![
            (X_RATELIMIT_LIMIT.clone(), limit.to_string()),
            (X_RATELIMIT_REMAINING.clone(), remaining.to_string()),
            (X_RATELIMIT_RESET.clone(), reset.to_string()),
            (X_REQUEST_ID.clone(), request_id.clone()),
        ];
        if (limited || fault == FaultKind::RateLimit) && m.faults.settings().retry_after {
            h.push((RETRY_AFTER.clone(), (reset - now).max(1).to_string()));
        }
        (h, limited, fault, m.faults.settings().drop_mode, limit)
    };
    if limited {
        let body =
            error_list(&request_id, "rate_limit_exceeded", &format!("Exceeded rate limit of {limit} in 10_seconds"));
        let mut m = shared.lock();
        m.counters.rate_limited += 1;
        record.status = 429;
        finish(&mut m, record);
        return server::json(StatusCode::TOO_MANY_REQUESTS, &body, &headers_out);
    }
    match fault {
        FaultKind::Drop => {
            let mut m = shared.lock();
            m.counters.faults.record(fault);
            record.status = 200;
            record.fault = Some(fault);
            finish(&mut m, record);
            let partial = json!({"type": "conversation.list", "pages": {"type": "pages"}, "conversations": []});
            return server::dropped(drop_mode, &partial, &headers_out);
        }
        FaultKind::ServerError => {
            let mut m = shared.lock();
            m.counters.faults.record(fault);
            record.status = 500;
            record.fault = Some(fault);
            finish(&mut m, record);
            let body = error_list(&request_id, "server_error", "Server Error");
            return server::json(StatusCode::INTERNAL_SERVER_ERROR, &body, &headers_out);
        }
        FaultKind::RateLimit => {
            let body = error_list(
                &request_id,
                "rate_limit_exceeded",
                &format!("Exceeded rate limit of {limit} in 10_seconds"),
            );
            let mut m = shared.lock();
            m.counters.faults.record(fault);
            record.status = 429;
            record.fault = Some(fault);
            finish(&mut m, record);
            return server::json(StatusCode::TOO_MANY_REQUESTS, &body, &headers_out);
        }
        FaultKind::Malformed | FaultKind::None => {}
    }
    // 8. the request itself
    let outcome = work(&shared, &request_id);
    let truncate = fault == FaultKind::Malformed && outcome.status == StatusCode::OK;
    let mut m = shared.lock();
    record.status = outcome.status.as_u16();
    record.page = outcome.page;
    record.returned = outcome.returned;
    record.next = outcome.next.clone();
    if truncate {
        m.counters.faults.record(fault);
        record.fault = Some(fault);
    } else {
        let c = &mut m.counters;
        match outcome.effect {
            Effect::Page => {
                c.pages_served += 1;
                c.conversations_listed += outcome.returned as u64;
            }
            Effect::Fetched => c.conversations_fetched += 1,
            Effect::NotFound => c.not_found += 1,
            Effect::CursorRejected { expired } => {
                c.cursor_rejections += 1;
                if expired {
                    c.cursor_expired += 1;
                }
            }
            Effect::BadRequest => c.bad_requests += 1,
            Effect::Identified => {}
        }
    }
    finish(&mut m, record);
    drop(m);
    if truncate {
        server::truncated(&outcome.body, &headers_out)
    } else {
        server::json(outcome.status, &outcome.body, &headers_out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_is_valid("2.11"));
        assert!(version_is_valid("Unstable"));
        assert!(!version_is_valid("2"));
        assert!(!version_is_valid("v2.11"));
        assert!(!version_is_valid("2.x"));
    }
}
