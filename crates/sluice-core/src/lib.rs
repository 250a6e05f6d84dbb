//! sluice-core: the engine of sluice. Records flow from a [`Source`] through
//! [`Stage`]s into a [`Store`], batch by batch, each batch committed with its
//! [`Checkpoint`] in one transaction, so a crash or a stop costs at most the
//! batches in flight. The primary API is [`Pipeline::stream_events`].

pub mod checkpoint;
pub mod context;
pub mod error;
pub mod event;
pub mod phase;
pub mod pipeline;
pub mod record;
pub mod source;
pub mod stage;
pub mod store;

pub use checkpoint::{Checkpoint, CostLedger, Counts, Position};
pub use context::{Context, UsageMeter};
pub use error::{EngineError, SourceError, StageError, StoreError};
pub use event::{Event, EventKind, EventSink};
pub use phase::{PhaseInput, PhaseOutput, PhaseSpec, PhaseTask, StoredDocuments};
pub use pipeline::RunLabels;
pub use pipeline::{Mode, Pipeline, RetryPolicy, RunHandle, RunSummary, Settings, StageSpec, Start};
pub use record::{Chunk, Classification, Document, Record};
pub use source::{Page, Source, SourceItem};
pub use stage::{Outcome, Stage, StageCounter};
pub use store::RunWindow;
pub use store::{
    CommitBatch, DocumentUpdate, Failure, FailureRow, MemoEntry, MemoKey, NewRun, PhaseResult, RunId, RunInfo,
    RunStatus, Store,
};
