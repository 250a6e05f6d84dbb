//! sluice-core: the engine of sluice. Records flow from a [`Source`] through
//! [`Stage`]s into a [`Store`], batch by batch, each batch committed with its
//! [`Checkpoint`] in one transaction, so a crash or a stop costs at most the
//! batches in flight. The primary API is [`Pipeline::stream_events`].
//!
//! Cargo feature `testing`: the module [`testing`](crate::testing) with an
//! in-memory `MemStore` and a scripted `VecSource`, to test stages, sinks
//! and whole pipelines without a database
//! (`sluice-core = { version = "…", features = ["testing"] }` in
//! `[dev-dependencies]`).

pub mod checkpoint;
pub mod context;
pub mod distributed;
pub mod error;
pub mod event;
pub mod memo;
pub mod mode;
pub mod pacer;
pub mod phase;
pub mod pipeline;
pub mod record;
pub mod retry;
pub mod sink;
pub mod source;
pub mod stage;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use checkpoint::{Checkpoint, CostLedger, Counts, Position};
pub use context::{Context, UsageMeter};
pub use error::{EngineError, SourceError, StageError, StoreError};
pub use event::{Event, EventKind, EventSink};
pub use memo::WriteAhead;
pub use mode::Mode;
pub use pacer::{LocalPacer, Pacer, RateLimit};
pub use phase::{PhaseInput, PhaseOutput, PhaseSpec, PhaseTask, STORED_PARTITION, StoredDocuments};
pub use pipeline::{InFlight, Pipeline, RunHandle, RunLabels, RunSummary, Settings, Start};
pub use record::{Chunk, Classification, Document, Record};
pub use retry::{RetryPolicy, Verdict, with_retries};
pub use sink::Sink;
pub use source::{Page, Source, SourceItem};
pub use stage::{Memo, Outcome, Stage, StageCounter, StageSpec, hand_over, write_ahead};
pub use store::RunWindow;
pub use store::{
    CommitBatch, DocumentUpdate, Failure, FailureRow, HighWaterMark, MemoEntry, MemoKey, NewRun, PhaseResult, RunId,
    RunInfo, RunStatus, Store,
};
