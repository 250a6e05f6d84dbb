//! The checkpoint a run commits with every batch: where each partition of the
//! source stands, and the cumulative counts. It is the only schema for counts:
//! status output, events and resume all read these fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where one partition of a source stands after the last committed batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Cursor of the page being consumed; `None` is the partition's first page.
    pub cursor: Option<String>,
    /// Records of that page already committed (they are skipped on resume).
    #[serde(default)]
    pub skip: u64,
    /// Id of the last committed record of that page. On resume the page is
    /// skipped through this id when it is found, which stays right even if the
    /// page's contents shifted; `skip` is the fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
    /// The partition has been read to its end.
    #[serde(default)]
    pub done: bool,
}

impl Position {
    pub fn start() -> Self {
        Self::default()
    }

    pub fn is_start(&self) -> bool {
        self.cursor.is_none() && self.skip == 0 && !self.done
    }
}

/// Cumulative counters of a run. A resumed run starts from these, not from zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// Records that entered a batch (in streaming Intercom runs: quality conversations).
    pub fetched: u64,
    /// Records a stage dropped on purpose.
    pub filtered: u64,
    /// Records a classify stage labelled.
    pub classified: u64,
    /// Documents upserted into the store.
    pub stored: u64,
    /// Records that ended in the failures table.
    pub failed: u64,
    /// Stage calls saved because a stored result for the same content was reused.
    pub skipped_unchanged: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Embeddings computed (chunks or whole documents).
    pub embedded: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.fetched += other.fetched;
        self.filtered += other.filtered;
        self.classified += other.classified;
        self.stored += other.stored;
        self.failed += other.failed;
        self.skipped_unchanged += other.skipped_unchanged;
        self.chunks += other.chunks;
        self.embedded += other.embedded;
    }

    /// Records whose journey ended (stored, filtered or failed).
    pub fn finished(&self) -> u64 {
        self.stored + self.filtered + self.failed
    }
}

/// What a run paid for: remote calls made and tokens used, cumulative across
/// resumes. Calls saved by reusing stored results are `counts.skipped_unchanged`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CostLedger {
    pub llm_calls: u64,
    pub embedding_calls: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

impl CostLedger {
    pub fn add(&mut self, other: &CostLedger) {
        self.llm_calls += other.llm_calls;
        self.embedding_calls += other.embedding_calls;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
    }
}

/// What a run commits with each batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub phase: String,
    /// Position per source partition, by partition name.
    #[serde(default)]
    pub partitions: BTreeMap<String, Position>,
    #[serde(default)]
    pub counts: Counts,
    /// Batches committed so far; the next batch is numbered `batches + 1`.
    #[serde(default)]
    pub batches: u64,
    /// Remote calls paid for so far (including those of batches in flight).
    #[serde(default)]
    pub cost: CostLedger,
}

impl Checkpoint {
    pub fn new(phase: impl Into<String>) -> Self {
        Self { phase: phase.into(), ..Self::default() }
    }

    pub fn position(&self, partition: &str) -> Position {
        self.partitions.get(partition).cloned().unwrap_or_default()
    }

    /// True when nothing was ever committed: resuming it is starting over.
    pub fn is_empty(&self) -> bool {
        self.batches == 0 && self.partitions.values().all(Position::is_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_missing_from_old_json_read_as_zero_not_error() {
        let cp: Checkpoint = serde_json::from_str(
            r#"{"phase":"classification","counts":{"fetched":150,"classified":145,"stored":140}}"#,
        )
        .unwrap();
        assert_eq!(cp.counts.fetched, 150);
        assert_eq!(cp.counts.classified, 145);
        assert_eq!(cp.counts.stored, 140);
        assert_eq!(cp.counts.failed, 0);
        assert!(cp.is_empty());
    }

    #[test]
    fn checkpoint_round_trips_with_positions() {
        let mut cp = Checkpoint::new("ingest");
        cp.batches = 3;
        cp.partitions.insert(
            "main".into(),
            Position { cursor: Some("abc".into()), skip: 7, last_id: Some("r7".into()), done: false },
        );
        let json = serde_json::to_value(&cp).unwrap();
        assert_eq!(json["partitions"]["main"]["skip"], 7);
        assert_eq!(serde_json::from_value::<Checkpoint>(json).unwrap(), cp);
        assert!(!cp.is_empty());
    }
}
