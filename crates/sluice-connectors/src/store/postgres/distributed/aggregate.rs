//! The run's checkpoint, derived from its partitions' rows: what status,
//! counts and the run row show of a distributed run.

use sluice_core::Checkpoint;

/// A partition row as the run's checkpoint is derived from it.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub name: String,
    /// Its step: 0 for a source partition, then the later steps in order.
    pub ordinal: i32,
    /// The phase of an id range (`None`: a source partition or the whole-corpus task).
    pub range_phase: Option<String>,
    pub done: bool,
    pub checkpoint: Checkpoint,
}

/// Each source partition's position by name and their counts; every row's
/// costs and batches summed; each later phase's counts summed over the rows
/// that ran it (its id ranges); the current phase and the phases done from
/// the latest step that has rows.
pub(crate) fn aggregate(parts: &[Part]) -> Checkpoint {
    let first = parts.iter().find(|p| p.ordinal == 0).map(|p| p.checkpoint.phase.clone()).unwrap_or_default();
    let mut run = Checkpoint::new(first);
    for part in parts {
        let cp = &part.checkpoint;
        run.batches += cp.batches;
        run.cost.add(&cp.cost);
        if part.ordinal == 0 {
            run.partitions.insert(part.name.clone(), cp.position(&part.name));
            run.counts.add(&cp.counts);
        } else {
            // A later row starts with its own phases' counts only, so a phase's ranges add up.
            for (phase, counts) in &cp.phase_counts {
                run.phase_counts.entry(phase.clone()).or_default().add(counts);
            }
        }
    }
    let latest = parts.iter().map(|p| p.ordinal).max().unwrap_or(0);
    let step: Vec<&Part> = parts.iter().filter(|p| p.ordinal == latest && latest > 0).collect();
    match step.as_slice() {
        [] => {}
        [task] if task.range_phase.is_none() => {
            if task.checkpoint.in_later_phase() {
                run.phase.clone_from(&task.checkpoint.phase);
                run.phases_done.clone_from(&task.checkpoint.phases_done);
            }
        }
        ranges => {
            // Each range's phases done are the ones before its phase, and its phase once it finished.
            let phase = ranges[0].range_phase.clone().unwrap_or_else(|| ranges[0].checkpoint.phase.clone());
            run.phases_done = ranges[0].checkpoint.phases_done.iter().filter(|p| **p != phase).cloned().collect();
            if ranges.iter().all(|r| r.done) {
                run.phases_done.push(phase.clone());
            }
            run.phase = phase;
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{Counts, Position};

    fn part(name: &str, ordinal: i32, range_phase: Option<&str>, done: bool, checkpoint: Checkpoint) -> Part {
        Part { name: name.into(), ordinal, range_phase: range_phase.map(str::to_string), done, checkpoint }
    }

    fn sources() -> Vec<Part> {
        let mut a = Checkpoint::new("classification");
        a.partitions.insert("a".into(), Position { cursor: Some("c1".into()), skip: 2, ..Position::default() });
        a.counts.stored = 3;
        a.batches = 1;
        let mut b = Checkpoint::new("classification");
        b.partitions.insert("b".into(), Position { done: true, ..Position::default() });
        b.counts.stored = 4;
        b.batches = 2;
        vec![part("a", 0, None, false, a), part("b", 0, None, true, b)]
    }

    /// A range of `phase` after `before` with `stored` documents, finished or not.
    fn range(phase: &str, before: &[&str], stored: u64, finished: bool) -> Checkpoint {
        let mut cp = Checkpoint::new("classification");
        for p in before.iter().chain([&phase]) {
            cp.advance_to(p);
        }
        cp.phase_counts.retain(|p, _| p == phase);
        cp.current_counts_mut().stored = stored;
        cp.cost.embedding_calls = stored;
        cp.batches = 1;
        if finished {
            cp.finish_phase();
        }
        cp
    }

    #[test]
    fn the_run_checkpoint_sums_its_partitions_and_takes_the_later_phases_from_their_task() {
        let mut later = Checkpoint::new("classification");
        later.advance_to("embedding_generation");
        later.current_counts_mut().stored = 5;
        let mut parts = sources();
        parts.push(part("__phases__", 1, None, false, later));
        let run = aggregate(&parts);
        assert_eq!(run.counts.stored, 7);
        assert_eq!(run.batches, 3);
        assert_eq!(run.position("a").skip, 2);
        assert!(run.position("b").done);
        assert_eq!(run.phase, "embedding_generation");
        assert_eq!(run.current_counts().stored, 5);
    }

    #[test]
    fn a_phase_split_in_ranges_counts_their_sum_and_is_done_once_every_range_is() {
        let mut parts = sources();
        for (i, stored) in [4, 5].into_iter().enumerate() {
            let cp = range("embedding_generation", &[], stored, true);
            parts.push(part(&format!("embedding_generation:{}", i + 1), 1, Some("embedding_generation"), true, cp));
        }
        let cp = range("facet_extraction", &["embedding_generation"], 2, true);
        parts.push(part("facet_extraction:1", 2, Some("facet_extraction"), false, cp));
        let cp = range("facet_extraction", &["embedding_generation"], 3, false);
        parts.push(part("facet_extraction:2", 2, Some("facet_extraction"), false, cp));
        let run = aggregate(&parts);
        assert_eq!(run.counts.stored, 7, "the first phase's counts are the source partitions'");
        assert_eq!(run.phase_counts["embedding_generation"], Counts { stored: 9, ..Counts::default() });
        assert_eq!(run.phase_counts["facet_extraction"].stored, 5);
        assert_eq!(run.phase, "facet_extraction");
        assert_eq!(run.phases_done, ["classification", "embedding_generation"], "facets not done: a range is not");
        assert_eq!(run.current_counts().stored, 5);
        assert_eq!((run.batches, run.cost.embedding_calls), (3 + 4, 14));

        for p in parts.iter_mut().filter(|p| p.ordinal == 2) {
            p.done = true;
        }
        let run = aggregate(&parts);
        assert_eq!(run.phases_done, ["classification", "embedding_generation", "facet_extraction"]);
        assert_eq!(run.phase, "facet_extraction", "a finished run keeps its last phase current");

        let mut tail = Checkpoint::new("classification");
        for p in ["embedding_generation", "facet_extraction", "theme_extraction"] {
            tail.advance_to(p);
        }
        tail.phase_counts.retain(|p, _| p == "theme_extraction");
        tail.current_counts_mut().stored = 9;
        parts.push(part("__phases__", 3, None, false, tail));
        let run = aggregate(&parts);
        assert_eq!(run.phase, "theme_extraction");
        assert_eq!(run.phases_done.len(), 3);
        assert_eq!(run.phase_counts["embedding_generation"].stored, 9, "the ranges' counts stay");
        assert_eq!(run.current_counts().stored, 9);
    }
}
