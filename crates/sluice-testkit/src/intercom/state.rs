//! The fake Intercom's state: its counters and what its handlers share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};

use super::config::IntercomFaults;
use super::dataset::Dataset;
use super::log::RequestRecord;
use crate::clock::Clock;
use crate::faults::{FaultCounts, FaultState};

/// What the fake has seen and done. Request counters count every request,
/// whatever its outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntercomCounters {
    pub search_requests: u64,
    pub get_requests: u64,
    pub other_requests: u64,
    /// Search pages answered in full (200, not truncated).
    pub pages_served: u64,
    /// Conversations listed in those pages.
    pub conversations_listed: u64,
    /// `GET /conversations/{id}` answered 200 (not truncated).
    pub conversations_fetched: u64,
    /// 404s (unknown conversation or route).
    pub not_found: u64,
    /// Cursors refused: malformed, expired or invalidated.
    pub cursor_rejections: u64,
    /// Of which expired (TTL) or invalidated.
    pub cursor_expired: u64,
    pub unauthorized: u64,
    pub not_acceptable: u64,
    /// Other 400s (bad body, bad query, per_page out of range, bad version).
    pub bad_requests: u64,
    /// 429s from the real limiter (injected ones are in `faults`).
    pub rate_limited: u64,
    pub faults: FaultCounts,
    /// `Intercom-Version` header values seen, `(none)` when absent.
    pub intercom_versions: BTreeMap<String, u64>,
}

impl IntercomCounters {
    /// All requests to any endpoint.
    pub fn requests(&self) -> u64 {
        self.search_requests + self.get_requests + self.other_requests
    }
}

/// What changes while the fake runs, behind one lock.
pub(super) struct Mutable {
    pub faults: FaultState<IntercomFaults>,
    pub counters: IntercomCounters,
    pub rate_limit: u32,
    /// token -> (window start, requests in it)
    pub windows: BTreeMap<String, (i64, u32)>,
    pub log: Vec<RequestRecord>,
    pub cursors_valid_from_ms: i64,
    pub cursors_issued: u64,
    pub requests: u64,
}

/// The state every handler of one fake shares.
pub(super) struct Shared {
    pub token: String,
    pub seed: u64,
    pub clock: Clock,
    pub dataset: RwLock<Arc<Dataset>>,
    pub m: Mutex<Mutable>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dataset(&self) -> Arc<Dataset> {
        self.dataset.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies changes to the served data, all or none; `Err`: an unknown id.
    pub fn apply(&self, changes: &[super::dataset::Change]) -> Result<Vec<String>, String> {
        let mut guard = self.dataset.write().unwrap_or_else(|e| e.into_inner());
        let mut ds = (**guard).clone();
        let mut ids = Vec::with_capacity(changes.len());
        for change in changes {
            ids.push(ds.apply(change).ok_or_else(|| change.id.clone().unwrap_or_default())?);
        }
        *guard = Arc::new(ds);
        Ok(ids)
    }
}
