//! The fake OpenAI's state: its counters and what its handlers share.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::config::OpenAiFaults;
use crate::clock::Clock;
use crate::faults::{FaultCounts, FaultState};

/// What the fake has seen and done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiCounters {
    pub chat_requests: u64,
    pub embedding_requests: u64,
    pub model_requests: u64,
    pub other_requests: u64,
    /// Chat requests answered 200 (malformed content included).
    pub chat_completions: u64,
    /// Chat answers per mode (`classify`, `facets`, `theme_label`).
    pub chat_modes: BTreeMap<String, u64>,
    /// Embeddings requests answered in full.
    pub embedding_responses: u64,
    /// Inputs embedded in those.
    pub embedded_inputs: u64,
    pub unauthorized: u64,
    /// 400s.
    pub bad_requests: u64,
    /// 429s from the real limiter (injected ones are in `faults`).
    pub rate_limited: u64,
    pub faults: FaultCounts,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Distinct last-user-message texts answered.
    pub distinct_chat_inputs: u64,
    /// The most times one of them was answered (0 when none).
    pub max_chat_repeats: u64,
    /// Distinct embedding input texts embedded.
    pub distinct_embedding_inputs: u64,
    /// The most times one of them was embedded.
    pub max_embedding_repeats: u64,
    /// The most requests the fake was handling at once (any endpoint).
    pub max_in_flight: u64,
    /// Microseconds spent handling requests, summed over requests: divided by
    /// a run's wall time, how many were in flight on average.
    pub busy_micros: u64,
}

/// What changes while the fake runs, behind one lock.
pub(super) struct Mutable {
    pub faults: FaultState<OpenAiFaults>,
    pub counters: OpenAiCounters,
    pub chat_inputs: HashMap<u64, u64>,
    pub embedding_inputs: HashMap<u64, u64>,
    pub rpm_limit: u32,
    /// (window start ms, requests in it, tokens in it)
    pub window: (i64, u32, u64),
    pub requests: u64,
    /// Requests being handled now.
    pub in_flight: u64,
}

/// The state every handler of one fake shares.
pub(super) struct Shared {
    pub key: String,
    pub tpm_limit: u64,
    pub default_dimensions: usize,
    pub seed: u64,
    pub clock: Clock,
    pub m: Mutex<Mutable>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters with the repeat tallies filled in.
    pub fn counters(&self) -> OpenAiCounters {
        let m = self.lock();
        let mut c = m.counters.clone();
        c.distinct_chat_inputs = m.chat_inputs.len() as u64;
        c.max_chat_repeats = m.chat_inputs.values().copied().max().unwrap_or(0);
        c.distinct_embedding_inputs = m.embedding_inputs.len() as u64;
        c.max_embedding_repeats = m.embedding_inputs.values().copied().max().unwrap_or(0);
        c
    }
}
