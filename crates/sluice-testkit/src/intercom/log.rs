//! The fake Intercom's request log: one record per request, oldest first.

use serde::{Deserialize, Serialize};

use crate::faults::FaultKind;

/// The endpoint of a request, for counters and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /conversations/search`.
    Search,
    /// `GET /conversations/{id}`.
    Get,
    /// Anything else (answered 404).
    Other,
}

/// One entry of the request log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub endpoint: Endpoint,
    pub status: u16,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
    /// `pagination.starting_after` of a search.
    pub starting_after: Option<String>,
    /// The page number answered.
    pub page: Option<u64>,
    /// Conversations in the answered page.
    pub returned: usize,
    /// The `next.starting_after` answered.
    pub next: Option<String>,
    /// The id of a get.
    pub conversation_id: Option<String>,
}

/// The log keeps the first this many requests.
const LOG_CAP: usize = 100_000;

/// Appends to the log while it is under its cap.
pub(super) fn push(log: &mut Vec<RequestRecord>, record: RequestRecord) {
    if log.len() < LOG_CAP {
        log.push(record);
    }
}

/// The record of a request before anything is known of its outcome.
pub(super) fn empty_record(ep: Endpoint) -> RequestRecord {
    RequestRecord {
        endpoint: ep,
        status: 0,
        fault: None,
        starting_after: None,
        page: None,
        returned: 0,
        next: None,
        conversation_id: None,
    }
}
