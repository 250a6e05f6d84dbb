//! Distributed runs on PostgreSQL (issue 14): one run, any number of
//! `sluice worker` processes on any machines, the same guarantees as one
//! process (nothing lost, nothing written twice, a crash costs the batches
//! in flight).
//!
//! - **Partitions are leased rows** of `run_partitions` (migration 0005):
//!   the source's partitions, then the later phases in steps (`phases.rs`,
//!   migration 0010): each per-document phase before the first whole-corpus
//!   one as id ranges of the stored documents, the rest as one `__phases__`
//!   task. A step's rows are made in the transaction that marks the previous
//!   step's last row done, so a crash costs a range's batches in flight and
//!   never falls between two steps.
//!   A claim is one `UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED)`
//!   that bumps the partition's `epoch` and sets a lease from the server's
//!   clock. Plain SQL rather than pgmq or graphile_worker: sluice's own row
//!   has to hold the checkpoint and the fence anyway, so a queue would be a
//!   second source of truth with its own "ran twice" history, a second
//!   crate on a pre-release sqlx line (pgmq 0.34 alpha), and a schema of
//!   76 functions, for ~1,000 work items a run.
//! - **Every commit is fenced** ([`fence`]): its first statement moves the
//!   partition's `commit_seq` and checkpoint `WHERE epoch = <my claim>`;
//!   zero rows rolls the whole transaction back. In READ COMMITTED a commit
//!   and a claim of the same row serialize on its row lock, so a commit is
//!   either the old owner's last legitimate one or refused. Safety never
//!   depends on clocks; leases only decide when a takeover may happen.
//! - **Heartbeats** extend the lease in their own transaction (never in a
//!   commit) and bring the run's status (`stopping`) to every worker.
//! - **Completion**: a partition is marked done by a fenced update after the
//!   engine finished it; the worker that marks the last one done completes
//!   the run, under the run row's lock, and refreshes the run's checkpoint,
//!   which is derived from the partitions (`aggregate.rs`: positions by name,
//!   summed counts, a later phase's counts summed over its ranges).
//! - **Rate limits are shared** ([`pacer`]): a token bucket row per (run,
//!   service), so N workers keep one rate, and one worker's 429 pauses all.

mod aggregate;
pub mod fence;
mod lease;
mod pacer;
mod partition_store;
mod phases;
mod ranges;
mod report;
mod submit;

pub use self::fence::{Fence, LEASE_LOST};
pub use self::lease::{Claim, IdRange, WorkerId};
pub use self::pacer::{STASH_TTL, SharedPacer};
pub use self::partition_store::PartitionStore;
pub use self::phases::{PhasePlan, PhaseStep};
pub use self::report::{PartitionRow, WorkerRow};

/// The name of the task that runs the whole-corpus later phases of a distributed run.
pub const LATER_PHASES: &str = "__phases__";
