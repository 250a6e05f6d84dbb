//! Fault vocabulary shared by both fakes, and the deterministic schedule that
//! decides which request gets which fault.
//!
//! Every request to a targeted endpoint that passed authentication and the
//! real rate limiter gets a sequence number, 1, 2, 3, ... counted from the
//! last time the faults were set (so "fail every 3rd" means the 3rd, 6th, ...
//! request after [`set_faults`](crate::FakeIntercom::set_faults)). A scripted
//! fault list, when present, is consumed first, one entry per request; then
//! the periodic faults apply, in this order of precedence when several fall
//! on the same request: drop, server error, rate limit, malformed.
//!
//! [`FaultState`] is the plumbing both fakes share: their settings, the
//! schedule those drive, latency, and the `/_testkit/faults` JSON patches.

use std::collections::VecDeque;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// No fault: in a script, lets one request through.
    #[serde(alias = "ok")]
    None,
    /// HTTP 500 with the service's error body.
    ServerError,
    /// HTTP 429 with the service's rate-limit body and headers.
    RateLimit,
    /// The connection is dropped (see [`DropMode`]): a transport error.
    Drop,
    /// HTTP 200 whose payload is unusable: truncated JSON (Intercom, and
    /// OpenAI embeddings) or non-JSON `message.content` (OpenAI chat).
    Malformed,
}

/// How a dropped connection looks to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropMode {
    /// Status line, headers and part of the body are sent, then the
    /// connection is closed: the client's `send()` succeeds and reading the
    /// body fails (reqwest: a body/decode error).
    #[default]
    MidBody,
    /// The connection is closed before any byte of the response: the client's
    /// `send()` fails (reqwest: "connection closed before message completed").
    BeforeHeaders,
}

/// How many faults of each kind were injected.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Requests that were delayed by `latency_ms`.
    pub latency: u64,
    pub server_error: u64,
    pub rate_limit: u64,
    pub drop: u64,
    pub malformed: u64,
}

impl FaultCounts {
    pub(crate) fn record(&mut self, kind: FaultKind) {
        match kind {
            FaultKind::None => {}
            FaultKind::ServerError => self.server_error += 1,
            FaultKind::RateLimit => self.rate_limit += 1,
            FaultKind::Drop => self.drop += 1,
            FaultKind::Malformed => self.malformed += 1,
        }
    }

    /// All injected faults except latency.
    pub fn total(&self) -> u64 {
        self.server_error + self.rate_limit + self.drop + self.malformed
    }
}

/// The periodic settings the schedule reads (`None` or `Some(0)`: off).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Periods {
    pub drop_every: Option<u64>,
    pub fail_every: Option<u64>,
    pub rate_limit_every: Option<u64>,
    pub malformed_every: Option<u64>,
}

/// The running state: the sequence number and what remains of the script.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    seq: u64,
    script: VecDeque<FaultKind>,
}

impl Schedule {
    pub fn reset(&mut self, script: &[FaultKind]) {
        self.seq = 0;
        self.script = script.iter().copied().collect();
    }

    pub fn remaining_script(&self) -> Vec<FaultKind> {
        self.script.iter().copied().collect()
    }

    /// Decides the fault of the next eligible request.
    pub fn next(&mut self, p: Periods) -> FaultKind {
        self.seq += 1;
        if let Some(kind) = self.script.pop_front() {
            return kind;
        }
        let hit = |every: Option<u64>| matches!(every, Some(n) if n > 0 && self.seq.is_multiple_of(n));
        if hit(p.drop_every) {
            FaultKind::Drop
        } else if hit(p.fail_every) {
            FaultKind::ServerError
        } else if hit(p.rate_limit_every) {
            FaultKind::RateLimit
        } else if hit(p.malformed_every) {
            FaultKind::Malformed
        } else {
            FaultKind::None
        }
    }
}

/// What a fake's fault settings expose to the shared plumbing.
pub(crate) trait FaultSettings: Clone + Serialize + DeserializeOwned {
    /// The periodic faults.
    fn periods(&self) -> Periods;
    /// The sleep before each targeted request.
    fn latency_ms(&self) -> u64;
    /// The scripted faults, as set.
    fn script(&self) -> &[FaultKind];
    fn script_mut(&mut self) -> &mut Vec<FaultKind>;
}

/// Declares a fake's fault settings: the fields every fake shares (latency,
/// the periodic faults, the drop mode, the script), then the fake's own
/// (each with an optional `= default`), with their `Default` (no faults) and
/// the [`FaultSettings`] the shared plumbing reads. The struct stays flat, so
/// tests write `OpenAiFaults { latency_ms: 5, ..OpenAiFaults::default() }`
/// and `POST /_testkit/faults` patches name the keys directly.
macro_rules! fault_settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty $(= $default:expr)?, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            /// Sleep this long before answering each targeted request.
            pub latency_ms: u64,
            /// Every Nth targeted request: 500 `server_error`.
            pub fail_every: Option<u64>,
            /// Every Nth targeted request: 429 with the service's rate-limit
            /// body and headers (see the fake's docs).
            pub rate_limit_every: Option<u64>,
            /// Every Nth targeted request: the connection is dropped.
            pub drop_every: Option<u64>,
            /// How a dropped connection looks.
            pub drop_mode: $crate::faults::DropMode,
            /// Every Nth targeted request: 200 with an unusable payload
            /// ([`FaultKind::Malformed`](crate::faults::FaultKind::Malformed)).
            pub malformed_every: Option<u64>,
            /// Faults for the next requests, one per request, before the periodic
            /// ones apply (e.g. `["server_error", "server_error"]`).
            pub script: Vec<$crate::faults::FaultKind>,
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    latency_ms: 0,
                    fail_every: None,
                    rate_limit_every: None,
                    drop_every: None,
                    drop_mode: $crate::faults::DropMode::default(),
                    malformed_every: None,
                    script: Vec::new(),
                    $( $field: fault_settings!(@default $($default)?), )*
                }
            }
        }

        impl $crate::faults::FaultSettings for $name {
            fn periods(&self) -> $crate::faults::Periods {
                $crate::faults::Periods {
                    drop_every: self.drop_every,
                    fail_every: self.fail_every,
                    rate_limit_every: self.rate_limit_every,
                    malformed_every: self.malformed_every,
                }
            }

            fn latency_ms(&self) -> u64 {
                self.latency_ms
            }

            fn script(&self) -> &[$crate::faults::FaultKind] {
                &self.script
            }

            fn script_mut(&mut self) -> &mut Vec<$crate::faults::FaultKind> {
                &mut self.script
            }
        }
    };
    (@default) => { Default::default() };
    (@default $default:expr) => { $default };
}
pub(crate) use fault_settings;

/// A fake's fault settings and the schedule they drive; setting them
/// restarts the schedule.
#[derive(Debug)]
pub(crate) struct FaultState<F> {
    settings: F,
    schedule: Schedule,
}

impl<F: FaultSettings> FaultState<F> {
    pub fn new(settings: F) -> Self {
        let mut schedule = Schedule::default();
        schedule.reset(settings.script());
        FaultState { settings, schedule }
    }

    /// The settings as last set (`script` whole).
    pub fn settings(&self) -> &F {
        &self.settings
    }

    /// Replaces the settings; the next targeted request is number 1.
    pub fn set(&mut self, settings: F) {
        self.schedule.reset(settings.script());
        self.settings = settings;
    }

    /// The settings with `script` holding what remains of it.
    pub fn snapshot(&self) -> F {
        let mut f = self.settings.clone();
        *f.script_mut() = self.schedule.remaining_script();
        f
    }

    /// The latency of a request (0 when it is not targeted).
    pub fn latency_ms(&self, targeted: bool) -> u64 {
        if targeted { self.settings.latency_ms() } else { 0 }
    }

    /// The fault of the next request; untargeted requests are not counted.
    pub fn next(&mut self, targeted: bool) -> FaultKind {
        if targeted { self.schedule.next(self.settings.periods()) } else { FaultKind::None }
    }

    /// `POST /_testkit/faults`: applies a JSON object's keys onto the
    /// settings. Ok: the new settings; Err: the 400 body.
    pub fn patch(&mut self, body: &[u8]) -> Result<Value, Value> {
        let patch: Value = match serde_json::from_slice(body) {
            Ok(Value::Object(p)) => Value::Object(p),
            _ => return Err(json!({"error": "body must be a JSON object"})),
        };
        match merge_patch::<F>(&self.settings, &patch) {
            Ok(f) => {
                self.set(f.clone());
                Ok(json!(f))
            }
            Err(e) => Err(json!({"error": e})),
        }
    }
}

/// Sleeps `ms` milliseconds (nothing when 0).
pub(crate) async fn delay(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Applies a JSON object's keys onto the serialized `current` value and
/// deserializes the result (the `POST /_testkit/faults` semantics).
pub(crate) fn merge_patch<T>(current: &T, patch: &Value) -> Result<T, String>
where
    T: Serialize + DeserializeOwned,
{
    let mut v = serde_json::to_value(current).map_err(|e| e.to_string())?;
    let (Some(target), Some(patch)) = (v.as_object_mut(), patch.as_object()) else {
        return Err("a patch must be a JSON object".into());
    };
    for (k, val) in patch {
        if !target.contains_key(k) {
            return Err(format!("unknown setting {k:?}"));
        }
        target.insert(k.clone(), val.clone());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_faults_fall_on_multiples_with_precedence() {
        let mut s = Schedule::default();
        let p =
            Periods { drop_every: Some(6), fail_every: Some(3), rate_limit_every: Some(2), malformed_every: Some(0) };
        let got: Vec<_> = (0..6).map(|_| s.next(p)).collect();
        use FaultKind::*;
        assert_eq!(got, vec![None, RateLimit, ServerError, RateLimit, None, Drop]);
    }

    #[test]
    fn script_first_then_periods_and_reset_restarts_count() {
        let mut s = Schedule::default();
        s.reset(&[FaultKind::Malformed, FaultKind::None]);
        let p = Periods { fail_every: Some(2), ..Periods::default() };
        use FaultKind::*;
        assert_eq!(s.next(p), Malformed);
        assert_eq!(s.next(p), None); // scripted None on seq 2
        assert_eq!(s.next(p), None);
        assert_eq!(s.next(p), ServerError);
        s.reset(&[]);
        assert_eq!(s.next(p), None);
        assert_eq!(s.next(p), ServerError);
    }

    #[derive(Clone, Default, Serialize, Deserialize)]
    struct Settings {
        fail_every: Option<u64>,
        latency_ms: u64,
        script: Vec<FaultKind>,
    }

    impl FaultSettings for Settings {
        fn periods(&self) -> Periods {
            Periods { fail_every: self.fail_every, ..Periods::default() }
        }
        fn latency_ms(&self) -> u64 {
            self.latency_ms
        }
        fn script(&self) -> &[FaultKind] {
            &self.script
        }
        fn script_mut(&mut self) -> &mut Vec<FaultKind> {
            &mut self.script
        }
    }

    #[test]
    fn state_snapshots_the_remaining_script_and_patches_restart_it() {
        let mut st =
            FaultState::new(Settings { script: vec![FaultKind::Drop, FaultKind::None], ..Settings::default() });
        assert_eq!(st.next(false), FaultKind::None); // untargeted: the script is not consumed
        assert_eq!(st.next(true), FaultKind::Drop);
        assert_eq!(st.snapshot().script, vec![FaultKind::None]);
        assert_eq!(st.settings().script.len(), 2);
        assert_eq!(st.latency_ms(true), 0);

        let answer = st.patch(br#"{"fail_every": 1, "latency_ms": 7}"#).unwrap();
        assert_eq!(answer["fail_every"], 1);
        assert_eq!(st.latency_ms(true), 7);
        assert_eq!(st.latency_ms(false), 0);
        // The patch kept the whole script and restarted it.
        assert_eq!(st.next(true), FaultKind::Drop);
        assert_eq!(st.next(true), FaultKind::None);
        assert_eq!(st.next(true), FaultKind::ServerError);

        assert_eq!(st.patch(b"[1]").unwrap_err()["error"], "body must be a JSON object");
        assert!(st.patch(br#"{"nope": 1}"#).unwrap_err()["error"].as_str().unwrap().contains("unknown setting"));
        assert!(st.patch(br#"{"latency_ms": "x"}"#).is_err());
        assert_eq!(st.settings().latency_ms, 7);
    }
}
