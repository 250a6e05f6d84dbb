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
    /// Records seen again and left alone: a re-run's or a re-fetch's record
    /// stored with the same content by the same pipeline, or a crawled page
    /// answered 304. Neither sent through the stages nor rewritten, nor
    /// counted as fetched.
    pub unchanged: u64,
    /// Stored documents the source found gone, marked or removed.
    #[serde(skip_serializing_if = "is_zero")]
    pub deleted: u64,
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
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
    }

    /// Records whose journey ended (stored, filtered, failed or found unchanged).
    pub fn finished(&self) -> u64 {
        self.stored + self.filtered + self.failed + self.unchanged
    }

    /// Records the source gave this run: fetched, or found unchanged.
    pub fn seen(&self) -> u64 {
        self.fetched + self.unchanged
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
    /// The part of `tokens_in` sent to embedding models (priced apart from the LLM's).
    #[serde(skip_serializing_if = "is_zero")]
    pub embedding_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CostLedger {
    pub fn add(&mut self, other: &CostLedger) {
        self.llm_calls += other.llm_calls;
        self.embedding_calls += other.embedding_calls;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
        self.embedding_tokens += other.embedding_tokens;
    }

    /// Each field the larger of the two: two snapshots of one growing ledger
    /// merged, whatever order they were stored in.
    pub fn max(&self, other: &CostLedger) -> CostLedger {
        CostLedger {
            llm_calls: self.llm_calls.max(other.llm_calls),
            embedding_calls: self.embedding_calls.max(other.embedding_calls),
            tokens_in: self.tokens_in.max(other.tokens_in),
            tokens_out: self.tokens_out.max(other.tokens_out),
            embedding_tokens: self.embedding_tokens.max(other.embedding_tokens),
        }
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
    /// Phases finished, in order. While it is empty the run is in its first
    /// phase (reading the source) and `counts` are that phase's; a later phase
    /// counts in `phase_counts` and positions its own scan in `partitions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases_done: Vec<String>,
    /// Counts of the phases after the first, by phase name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phase_counts: BTreeMap<String, Counts>,
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
        self.batches == 0 && self.partitions.values().all(Position::is_start) && self.phases_done.is_empty()
    }

    /// Whether the run is past its first phase (the first phase done and
    /// another one current; a completed run keeps its last phase current).
    pub fn in_later_phase(&self) -> bool {
        self.phases_done.first().is_some_and(|first| *first != self.phase)
    }

    /// Marks the current phase done, at the end of a run.
    pub fn finish_phase(&mut self) {
        if !self.phases_done.contains(&self.phase) {
            self.phases_done.push(self.phase.clone());
        }
    }

    /// The counts the current phase adds to.
    pub fn current_counts(&self) -> Counts {
        if self.in_later_phase() {
            self.phase_counts.get(&self.phase).copied().unwrap_or_default()
        } else {
            self.counts
        }
    }

    pub fn current_counts_mut(&mut self) -> &mut Counts {
        if self.in_later_phase() { self.phase_counts.entry(self.phase.clone()).or_default() } else { &mut self.counts }
    }

    /// Marks the current phase done and moves to `next` with fresh positions.
    pub fn advance_to(&mut self, next: &str) {
        let done = std::mem::replace(&mut self.phase, next.to_string());
        if !self.phases_done.contains(&done) {
            self.phases_done.push(done);
        }
        self.partitions.clear();
        self.phase_counts.entry(next.to_string()).or_default();
    }

    /// Whether `phase` was finished by this run.
    pub fn phase_done(&self, phase: &str) -> bool {
        self.phases_done.iter().any(|p| p == phase)
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

    #[test]
    fn a_later_phase_counts_apart_and_starts_its_own_positions() {
        let mut cp = Checkpoint::new("classification");
        cp.partitions.insert("main".into(), Position { done: true, ..Position::default() });
        cp.current_counts_mut().stored = 10;
        cp.advance_to("embedding_generation");
        assert!(cp.in_later_phase() && cp.phase_done("classification") && cp.partitions.is_empty());
        cp.current_counts_mut().stored += 4;
        assert_eq!(cp.counts.stored, 10);
        assert_eq!(cp.current_counts().stored, 4);
        let back: Checkpoint = serde_json::from_value(serde_json::to_value(&cp).unwrap()).unwrap();
        assert_eq!(back, cp);
        assert!(!back.is_empty());
    }
}
