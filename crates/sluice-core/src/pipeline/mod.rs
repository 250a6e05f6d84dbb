//! Building a pipeline and running it: `Pipeline::start` gives a `RunHandle`
//! whose event stream is the primary API; `iter_results` and `run` wrap it.

mod batcher;
mod commit;
mod fetch;
mod fingerprint;
mod handle;
mod legacy;
mod panics;
mod run;
mod stages;
mod state;
mod streaming;
mod unchanged;
mod write_ahead;

use std::sync::Arc;

use serde_json::Value;

pub use crate::mode::Mode;
use crate::pacer::{LocalPacer, Pacer};
use crate::phase::PhaseSpec;
use crate::sink::Sink;
use crate::source::Source;
use crate::stage::StageSpec;
use crate::store::{RunId, RunWindow, Store};

pub use crate::retry::{RetryPolicy, Verdict, with_retries};
pub use handle::{InFlight, RunHandle, RunSummary};

pub const MIN_BATCH_SIZE: usize = 10;
pub const MAX_BATCH_SIZE: usize = 500;
pub const DEFAULT_BATCH_SIZE: usize = 50;
/// 16 MiB: far above a ticket or a page, small enough that one record cannot stall a run.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// The smallest `max_record_bytes` allowed.
pub const MIN_MAX_RECORD_BYTES: usize = 1024;

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
    /// A record whose text and fields hold more bytes than this is a failure
    /// (`record_too_large`) instead of going through the stages.
    pub max_record_bytes: usize,
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
    /// Paid results are stored as they arrive, ahead of their batch (see
    /// [`crate::memo`]). On unless `SLUICE_WRITE_AHEAD=off`, which is there
    /// to measure what it costs.
    pub write_ahead: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: "default".into(),
            mode: Mode::Streaming,
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_bytes: 8 * 1024 * 1024,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_records: None,
            partition_concurrency: 4,
            per_document_events: true,
            include_documents: false,
            phase: "ingest".into(),
            config: Value::Null,
            labels: RunLabels::default(),
            retry: RetryPolicy::default(),
            event_buffer: 1024,
            write_ahead: write_ahead::enabled_by_env(),
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
    /// Written before each commit of the store, in order.
    pub(crate) sinks: Vec<Arc<dyn Sink>>,
    pub(crate) settings: Settings,
    /// Shared by the runs of this pipeline; a distributed worker gives one shared through the store.
    pub(crate) pacer: Arc<dyn Pacer>,
    /// [`Self::only_phase`]: the last id its per-document phase reads.
    pub(crate) phase_last: Option<String>,
}

impl Pipeline {
    pub fn new(source: Arc<dyn Source>, store: Arc<dyn Store>) -> Self {
        Self {
            source,
            stages: Vec::new(),
            phases: Vec::new(),
            store,
            sinks: Vec::new(),
            settings: Settings::default(),
            pacer: Arc::new(LocalPacer::default()),
            phase_last: None,
        }
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

    /// Adds a secondary output, written before each commit of the store
    /// and inside the same retry (see [`Sink`]).
    pub fn sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.sinks.push(sink);
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

    /// Paces rate-limited requests with `pacer` (e.g. buckets shared by every worker of a distributed run).
    pub fn with_pacer(mut self, pacer: Arc<dyn Pacer>) -> Self {
        self.pacer = pacer;
        self
    }

    pub fn settings_ref(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The source (a distributed run asks it for its partitions).
    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// The names of the phases after the first, in order.
    pub fn phase_names(&self) -> Vec<String> {
        self.phases.iter().map(|p| p.name().to_string()).collect()
    }

    /// The phases after the first, in order, each with whether it is
    /// per-document ([`PhaseSpec::per_document`]).
    pub fn phase_kinds(&self) -> Vec<(String, bool)> {
        self.phases.iter().map(|p| (p.name().to_string(), p.per_document())).collect()
    }

    /// The same pipeline without its later phases (a distributed worker
    /// runs a source partition with it; the later phases are a task of their own).
    pub fn without_phases(mut self) -> Self {
        self.phases.clear();
        self
    }

    /// Only the later phase `name`, and for a per-document phase only the
    /// stored documents up to id `last` (inclusive; `None`: to the end): one
    /// id range of a phase split between workers. The run must be resumed
    /// in that phase, its checkpoint's cursor the range's start (exclusive).
    pub fn only_phase(mut self, name: &str, last: Option<String>) -> Self {
        self.phases.retain(|p| p.name() == name);
        self.phase_last = last;
        self
    }
}
