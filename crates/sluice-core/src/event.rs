//! The typed events a run emits. Serialized as one JSON object per event with
//! `"type"` and `"v"` fields; the same JSON goes to `--events-out`, the live
//! HTTP stream and the replay command.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::checkpoint::{Checkpoint, CostLedger, Counts};
use crate::mode::Mode;
use crate::record::Document;
use crate::store::RunStatus;

/// Version of the event schema. Bumped on a breaking change to any event.
pub const EVENT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub run_id: i64,
    /// Seconds since the Unix epoch.
    pub ts: f64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    RunStarted {
        pipeline: String,
        mode: Mode,
        resumed: bool,
        batch_size: usize,
        phase: String,
        /// Where the counts start (a resumed run carries its checkpoint's).
        counts: Counts,
        #[serde(default)]
        cost: CostLedger,
    },
    PageFetched {
        partition: String,
        records: u64,
        /// Records the source dropped at page level (not counted as fetched).
        dropped: u64,
        last_page: bool,
    },
    DocumentStarted {
        doc_id: String,
        source: String,
    },
    /// The document is committed to the store.
    DocumentCompleted {
        doc_id: String,
        source: String,
        duration_ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        document: Option<Box<Document>>,
    },
    DocumentFiltered {
        doc_id: String,
        source: String,
        stage: String,
        reason: String,
    },
    DocumentFailed {
        doc_id: Option<String>,
        source: String,
        stage: String,
        error: String,
        error_type: String,
        retry_count: u32,
        is_retryable: bool,
    },
    BatchCommitted {
        batch: u64,
        records: u64,
        commit_ms: f64,
        checkpoint: Checkpoint,
    },
    BatchProgress {
        completed: u64,
        failed: u64,
        in_flight: u64,
        estimated_total: Option<u64>,
        eta_seconds: Option<f64>,
        /// Records finished per second since the run (or resume) started.
        rate: f64,
    },
    AdapterStateChange {
        adapter: String,
        old_state: String,
        new_state: String,
        reason: Option<String>,
    },
    CursorFallback {
        partition: String,
        reason: String,
    },
    /// The run entered a phase (or resumed in it).
    PhaseStarted {
        phase: String,
        resumed: bool,
        /// Where the phase's counts start (a resumed phase carries its checkpoint's).
        #[serde(default)]
        counts: Counts,
        /// The stored documents of the source, which the phase reads: the
        /// total of a per-document phase. `None` when the store cannot say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        documents: Option<u64>,
    },
    /// A phase finished; `counts` are its own.
    PhaseFinished {
        phase: String,
        counts: Counts,
    },
    RunFinished {
        status: RunStatus,
        counts: Counts,
        duration_seconds: f64,
        error: Option<String>,
    },
}

impl EventKind {
    /// The `"type"` tag of this event.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunStarted { .. } => "RunStarted",
            EventKind::PageFetched { .. } => "PageFetched",
            EventKind::DocumentStarted { .. } => "DocumentStarted",
            EventKind::DocumentCompleted { .. } => "DocumentCompleted",
            EventKind::DocumentFiltered { .. } => "DocumentFiltered",
            EventKind::DocumentFailed { .. } => "DocumentFailed",
            EventKind::BatchCommitted { .. } => "BatchCommitted",
            EventKind::BatchProgress { .. } => "BatchProgress",
            EventKind::AdapterStateChange { .. } => "AdapterStateChange",
            EventKind::CursorFallback { .. } => "CursorFallback",
            EventKind::PhaseStarted { .. } => "PhaseStarted",
            EventKind::PhaseFinished { .. } => "PhaseFinished",
            EventKind::RunFinished { .. } => "RunFinished",
        }
    }

    pub fn is_per_document(&self) -> bool {
        matches!(
            self,
            EventKind::DocumentStarted { .. }
                | EventKind::DocumentCompleted { .. }
                | EventKind::DocumentFiltered { .. }
        )
    }
}

pub fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// Where the engine and the connectors send events. Cheap to clone. A sink
/// whose consumer went away drops events silently: events observe a run, they
/// never decide its outcome.
#[derive(Clone, Debug)]
pub struct EventSink {
    run_id: i64,
    per_document: bool,
    tx: Option<mpsc::Sender<Event>>,
}

impl EventSink {
    pub fn new(run_id: i64, per_document: bool, tx: mpsc::Sender<Event>) -> Self {
        Self { run_id, per_document, tx: Some(tx) }
    }

    /// A sink that drops everything (for tests and connectors used alone).
    pub fn discard() -> Self {
        Self { run_id: 0, per_document: false, tx: None }
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    pub fn wants_per_document(&self) -> bool {
        self.per_document && self.tx.is_some()
    }

    /// Sends an event, waiting while the consumer's buffer is full (backpressure).
    pub async fn emit(&self, kind: EventKind) {
        if kind.is_per_document() && !self.per_document {
            return;
        }
        if let Some(tx) = &self.tx {
            let event = Event { v: EVENT_VERSION, run_id: self.run_id, ts: now_seconds(), kind };
            let _ = tx.send(event).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_type_and_version() {
        let event = Event {
            v: EVENT_VERSION,
            run_id: 7,
            ts: 1.5,
            kind: EventKind::DocumentFailed {
                doc_id: Some("x".into()),
                source: "jsonl".into(),
                stage: "source".into(),
                error: "bad json".into(),
                error_type: "parse".into(),
                retry_count: 0,
                is_retryable: false,
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "DocumentFailed");
        assert_eq!(json["v"], 1);
        assert_eq!(json["is_retryable"], false);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn run_started_names_the_mode_in_lowercase() {
        let kind = EventKind::RunStarted {
            pipeline: "p".into(),
            mode: Mode::Batch,
            resumed: false,
            batch_size: 50,
            phase: "ingest".into(),
            counts: Counts::default(),
            cost: CostLedger::default(),
        };
        let json = serde_json::to_value(&kind).unwrap();
        assert_eq!(json["mode"], "batch");
        let back: EventKind = serde_json::from_value(json).unwrap();
        assert_eq!(back, kind);
    }

    #[tokio::test]
    async fn sink_drops_per_document_events_when_switched_off() {
        let (tx, mut rx) = mpsc::channel(8);
        let sink = EventSink::new(1, false, tx);
        sink.emit(EventKind::DocumentStarted { doc_id: "a".into(), source: "s".into() }).await;
        sink.emit(EventKind::CursorFallback { partition: "p".into(), reason: "r".into() }).await;
        drop(sink);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind.name(), "CursorFallback");
    }
}
