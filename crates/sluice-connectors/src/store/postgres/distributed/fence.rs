//! The fence: the first statement of every commit of a distributed
//! partition. It moves the partition's commit sequence and checkpoint only
//! while the partition's epoch is still the one this worker claimed; zero
//! rows means the lease moved to another worker, and the caller rolls the
//! whole transaction back.

use serde_json::Value;
use sluice_core::store::RunId;
use sqlx::PgTransaction;
use sqlx::types::Json;

/// Which partition a commit belongs to and the epoch of the claim it is made under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub run: RunId,
    pub partition: String,
    pub epoch: i64,
    /// The claiming worker, written with each commit for the audit trail.
    pub owner: String,
}

impl Fence {
    /// Runs the fenced update (and its audit row) in `tx`; false: the lease moved, nothing may be written.
    pub(crate) async fn pass(&self, tx: &mut PgTransaction<'_>, checkpoint: &Value) -> Result<bool, sqlx::Error> {
        let seq: Option<i64> = sqlx::query_scalar(
            "WITH fenced AS (
                 UPDATE run_partitions SET commit_seq = commit_seq + 1, checkpoint = $4, updated_at = now()
                 WHERE run_id = $1 AND name = $2 AND epoch = $3 AND NOT done
                 RETURNING run_id, name, commit_seq, epoch)
             INSERT INTO partition_commits (run_id, name, seq, epoch, owner)
             SELECT run_id, name, commit_seq, epoch, $5 FROM fenced
             RETURNING seq",
        )
        .bind(self.run)
        .bind(&self.partition)
        .bind(self.epoch)
        .bind(Json(checkpoint))
        .bind(&self.owner)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(seq.is_some())
    }

    /// What a refused commit says (the lease is lost for good: not retried).
    pub(crate) fn refusal(&self) -> String {
        format!("{} {}", LEASE_LOST, self.describe())
    }

    pub fn describe(&self) -> String {
        format!("partition {:?} of run {} (epoch {})", self.partition, self.run, self.epoch)
    }
}

/// The start of a refused commit's error, which workers look for.
pub const LEASE_LOST: &str = "commit refused, lease lost:";
