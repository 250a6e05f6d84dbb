//! Building a pipeline and running it: `Pipeline::start` gives a `RunHandle`
//! whose event stream is the primary API; `iter_results` and `run` wrap it.

mod batch;
mod commit;
mod fetch;
mod retry;
mod run;
mod stages;
mod streaming;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::phase::PhaseSpec;
use crate::source::Source;
use crate::stage::Stage;
use crate::store::{RunId, RunWindow, Store};

pub use retry::{RetryPolicy, Verdict, with_retries};
pub use run::{RunHandle, RunSummary};

/// How the stages are scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fetch, every stage and commit run at once on different batches.
    #[default]
    Streaming,
    /// Fetch everything, then each stage over everything, then store (legacy).
    Batch,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Streaming => "streaming",
            Mode::Batch => "batch",
        }
    }
}

pub const MIN_BATCH_SIZE: usize = 10;
pub const MAX_BATCH_SIZE: usize = 500;
pub const DEFAULT_BATCH_SIZE: usize = 50;

/// Everything about a run that is not a connector.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Pipeline name; runs are resumed by it.
    pub name: String,
    pub mode: Mode,
    /// Records per batch (10-500).
    pub batch_size: usize,
    /// A batch is closed early when its records hold this many bytes.
    pub max_batch_bytes: usize,
    /// Stop after this many fetched records, counted across resumes.
    pub max_records: Option<u64>,
    /// Partitions fetched at once.
    pub partition_concurrency: usize,
    /// Emit DocumentStarted/Completed/Filtered (off for raw speed).
    pub per_document_events: bool,
    /// Attach the stored document to DocumentCompleted (for `iter_results`).
    pub include_documents: bool,
    /// Name of the phase this pipeline runs, written in the checkpoint.
    pub phase: String,
    /// The resolved configuration, saved with the run for resume.
    pub config: Value,
    /// How the run describes itself; the engine only passes them on.
    pub labels: RunLabels,
    pub retry: RetryPolicy,
    /// Capacity of the event channel to the consumer.
    pub event_buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: "default".into(),
            mode: Mode::Streaming,
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_bytes: 8 * 1024 * 1024,
            max_records: None,
            partition_concurrency: 4,
            per_document_events: true,
            include_documents: false,
            phase: "ingest".into(),
            config: Value::Null,
            labels: RunLabels::default(),
            retry: RetryPolicy::default(),
            event_buffer: 1024,
        }
    }
}

/// What a run says about itself, as its source's settings have it: the
/// word for its records in log lines, and the part of the source's data it
/// covers, stored with the run row so a later request can find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLabels {
    /// Word for records in log lines ("records", "conversations").
    pub noun: String,
    pub window: Option<RunWindow>,
}

impl Default for RunLabels {
    fn default() -> Self {
        Self { noun: "records".into(), window: None }
    }
}

/// A stage with its scheduling knobs.
#[derive(Clone)]
pub struct StageSpec {
    pub stage: Arc<dyn Stage>,
    /// Batches this stage works on at once (order of batches is kept).
    pub workers: usize,
    /// Times a record's retryable failure is retried before it is recorded.
    pub max_retries: u32,
}

impl StageSpec {
    pub fn new(stage: Arc<dyn Stage>) -> Self {
        Self { stage, workers: 1, max_retries: 3 }
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }
}

/// Start a new run or resume a stopped/failed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    New,
    Resume(RunId),
}

/// A source, its stages and a store, with settings. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) source: Arc<dyn Source>,
    pub(crate) stages: Vec<StageSpec>,
    /// Phases after the first, in order.
    pub(crate) phases: Vec<PhaseSpec>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) settings: Settings,
}

impl Pipeline {
    pub fn new(source: Arc<dyn Source>, store: Arc<dyn Store>) -> Self {
        Self { source, stages: Vec::new(), phases: Vec::new(), store, settings: Settings::default() }
    }

    pub fn stage(mut self, spec: StageSpec) -> Self {
        self.stages.push(spec);
        self
    }

    /// Adds a phase to run after the previous one finished.
    pub fn phase(mut self, spec: PhaseSpec) -> Self {
        self.phases.push(spec);
        self
    }

    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The same pipeline reading from another source (e.g. retrying failures).
    pub fn with_source(mut self, source: Arc<dyn Source>) -> Self {
        self.source = source;
        self
    }

    pub fn settings_ref(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
