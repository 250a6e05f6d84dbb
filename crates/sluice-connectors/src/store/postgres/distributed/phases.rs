//! The later phases of a distributed run, split between workers. The run is
//! done in steps: step 0 is the source's partitions; each per-document later
//! phase before the first whole-corpus one (embeddings, facets) is a step of
//! id ranges of the stored documents, one leased row each; the phases from
//! the first whole-corpus one on (themes, stories) are one last step of one
//! task, since each of them reads everything the ones before wrote.
//!
//! The plan is written at submission (`run_phases`); a step's rows are made
//! by [`open_next_step`] in the transaction that marks the previous step's
//! last row done, under the run row's lock: the ranges are cut from the
//! documents the previous step left, they are made once however many
//! workers finish at the same moment, and no crash can fall between the
//! end of one step and the start of the next.

use serde_json::Value;
use sluice_core::store::RunId;
use sluice_core::{Checkpoint, Counts, Position, STORED_PARTITION};
use sqlx::{PgTransaction, Row};

use super::LATER_PHASES;
use super::ranges::id_range_bounds;

/// One step of a run's later phases.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseStep {
    /// 1, 2, ... (the source's partitions are step 0).
    pub ordinal: i32,
    /// The phase a range step runs; the first phase of the whole-corpus step.
    pub phase: String,
    /// Cut into id ranges rather than run as one task.
    pub per_document: bool,
    /// Where each row of the step starts: in `phase`, the phases before it done.
    pub checkpoint: Checkpoint,
}

/// The later steps of a run, as submitted.
#[derive(Clone, Debug, PartialEq)]
pub struct PhasePlan {
    /// The source whose stored documents the ranges split.
    pub source: String,
    /// How many id ranges a per-document step is cut into (at most).
    pub ranges: usize,
    pub steps: Vec<PhaseStep>,
}

impl PhasePlan {
    /// The plan for a pipeline whose first phase is `first` and whose later
    /// phases are `phases` (name, per-document), in order.
    pub fn new(first: &str, phases: &[(String, bool)], source: &str, ranges: usize) -> Self {
        let split = phases.iter().take_while(|(_, per_document)| *per_document).count();
        let mut steps = Vec::new();
        let mut done = vec![first.to_string()];
        for (i, (phase, _)) in phases.iter().enumerate() {
            if i > split {
                break;
            }
            let checkpoint = Checkpoint {
                phase: phase.clone(),
                phases_done: done.clone(),
                phase_counts: [(phase.clone(), Counts::default())].into(),
                ..Checkpoint::default()
            };
            let ordinal = i32::try_from(i + 1).unwrap_or(i32::MAX);
            steps.push(PhaseStep { ordinal, phase: phase.clone(), per_document: i < split, checkpoint });
            done.push(phase.clone());
        }
        Self { source: source.to_string(), ranges: ranges.max(1), steps }
    }

    /// The step the source's partitions hand on to (none: no later phase).
    pub fn first_step(&self) -> Option<&PhaseStep> {
        self.steps.first()
    }
}

/// A row of `run_partitions` to create.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NewPartition {
    pub name: String,
    pub ordinal: i32,
    pub later: bool,
    /// The phase of an id range.
    pub phase: Option<String>,
    /// The range's last id (inclusive); `None`: open.
    pub range_last: Option<String>,
    pub checkpoint: Checkpoint,
}

impl NewPartition {
    /// A partition of the source (step 0), starting from `checkpoint`.
    pub fn source(name: &str, checkpoint: &Checkpoint) -> Self {
        Self {
            name: name.to_string(),
            ordinal: 0,
            later: false,
            phase: None,
            range_last: None,
            checkpoint: checkpoint.clone(),
        }
    }
}

/// The rows of `step`: for a per-document step one per range, each ending at
/// its bound and starting after the previous one's (the first at the start);
/// for the whole-corpus step its one task.
pub(crate) fn step_rows(step: &PhaseStep, bounds: &[Option<String>]) -> Vec<NewPartition> {
    if !step.per_document {
        return vec![NewPartition {
            name: LATER_PHASES.to_string(),
            ordinal: step.ordinal,
            later: true,
            phase: None,
            range_last: None,
            checkpoint: step.checkpoint.clone(),
        }];
    }
    let width = bounds.len().to_string().len();
    let mut after: Option<String> = None;
    let mut rows = Vec::with_capacity(bounds.len());
    for (i, last) in bounds.iter().enumerate() {
        let mut checkpoint = step.checkpoint.clone();
        if after.is_some() {
            checkpoint
                .partitions
                .insert(STORED_PARTITION.to_string(), Position { cursor: after.clone(), ..Position::start() });
        }
        rows.push(NewPartition {
            // Zero-padded, so rows sort (and are claimed) in id order.
            name: format!("{}:{:0width$}", step.phase, i + 1),
            ordinal: step.ordinal,
            later: true,
            phase: Some(step.phase.clone()),
            range_last: last.clone(),
            checkpoint,
        });
        after.clone_from(last);
    }
    rows
}

/// Inserts `rows` into the run's partitions (one statement, in the caller's transaction).
pub(crate) async fn insert_partitions(
    tx: &mut PgTransaction<'_>,
    run: RunId,
    rows: &[NewPartition],
) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let ordinals: Vec<i32> = rows.iter().map(|r| r.ordinal).collect();
    let later: Vec<bool> = rows.iter().map(|r| r.later).collect();
    let phases: Vec<Option<&str>> = rows.iter().map(|r| r.phase.as_deref()).collect();
    let lasts: Vec<Option<&str>> = rows.iter().map(|r| r.range_last.as_deref()).collect();
    let checkpoints = json_texts(rows.iter().map(|r| &r.checkpoint))?;
    sqlx::query(
        "INSERT INTO run_partitions (run_id, name, ordinal, later, phase, range_last, checkpoint)
         SELECT $1, u.name, u.ordinal, u.later, u.phase, u.range_last, u.checkpoint::jsonb
         FROM UNNEST($2::text[], $3::int[], $4::bool[], $5::text[], $6::text[], $7::text[])
              AS u(name, ordinal, later, phase, range_last, checkpoint)",
    )
    .bind(run)
    .bind(&names)
    .bind(&ordinals)
    .bind(&later)
    .bind(&phases)
    .bind(&lasts)
    .bind(&checkpoints)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the run's plan (at submission, in its transaction).
pub(crate) async fn insert_plan(tx: &mut PgTransaction<'_>, run: RunId, plan: &PhasePlan) -> Result<(), sqlx::Error> {
    let ordinals: Vec<i32> = plan.steps.iter().map(|s| s.ordinal).collect();
    let phases: Vec<&str> = plan.steps.iter().map(|s| s.phase.as_str()).collect();
    let per_document: Vec<bool> = plan.steps.iter().map(|s| s.per_document).collect();
    let checkpoints = json_texts(plan.steps.iter().map(|s| &s.checkpoint))?;
    sqlx::query(
        "INSERT INTO run_phases (run_id, ordinal, phase, per_document, source, ranges, checkpoint)
         SELECT $1, u.ordinal, u.phase, u.per_document, $5, $6, u.checkpoint::jsonb
         FROM UNNEST($2::int[], $3::text[], $4::bool[], $7::text[]) AS u(ordinal, phase, per_document, checkpoint)",
    )
    .bind(run)
    .bind(&ordinals)
    .bind(&phases)
    .bind(&per_document)
    .bind(&plan.source)
    .bind(i32::try_from(plan.ranges).unwrap_or(i32::MAX))
    .bind(&checkpoints)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn json_texts<'a>(checkpoints: impl Iterator<Item = &'a Checkpoint>) -> Result<Vec<String>, sqlx::Error> {
    checkpoints.map(|cp| serde_json::to_string(cp).map_err(|e| sqlx::Error::Encode(Box::new(e)))).collect()
}

/// When every row of the run's latest step is done and the plan has a next
/// step, creates that step's rows; returns how many. The caller holds the
/// run row's lock (`FOR UPDATE`) in `tx`, so this happens once per step.
pub(crate) async fn open_next_step(tx: &mut PgTransaction<'_>, run: RunId) -> Result<usize, sqlx::Error> {
    let latest: Option<(i32, bool)> = sqlx::query_as(
        "SELECT ordinal, bool_and(done) FROM run_partitions WHERE run_id = $1
         GROUP BY ordinal ORDER BY ordinal DESC LIMIT 1",
    )
    .bind(run)
    .fetch_optional(&mut **tx)
    .await?;
    // No row at all: a source without partitions, its step 0 done at once.
    let (at, done) = latest.unwrap_or((0, true));
    if !done {
        return Ok(0);
    }
    let next = sqlx::query(
        "SELECT ordinal, phase, per_document, source, ranges, checkpoint FROM run_phases
         WHERE run_id = $1 AND ordinal = $2",
    )
    .bind(run)
    .bind(at + 1)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = next else { return Ok(0) };
    let checkpoint: Value = row.try_get(5)?;
    let step = PhaseStep {
        ordinal: row.try_get(0)?,
        phase: row.try_get(1)?,
        per_document: row.try_get(2)?,
        checkpoint: serde_json::from_value(checkpoint).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    };
    let bounds = if step.per_document {
        let (source, ranges): (String, i32) = (row.try_get(3)?, row.try_get(4)?);
        id_range_bounds(&mut **tx, &source, usize::try_from(ranges).unwrap_or(1)).await?
    } else {
        Vec::new()
    };
    let rows = step_rows(&step, &bounds);
    insert_partitions(tx, run, &rows).await?;
    tracing::info!(run_id = run, step = step.ordinal, phase = %step.phase, rows = rows.len(), "later step opened");
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(phases: &[(&str, bool)]) -> Vec<(String, bool)> {
        phases.iter().map(|(n, d)| (n.to_string(), *d)).collect()
    }

    #[test]
    fn per_document_phases_before_the_first_whole_corpus_one_are_split_and_the_rest_is_one_task() {
        let phases = kinds(&[
            ("embedding_generation", true),
            ("facet_extraction", true),
            ("theme_extraction", false),
            ("story_creation", false),
        ]);
        let plan = PhasePlan::new("classification", &phases, "intercom", 4);
        let steps: Vec<(i32, &str, bool)> =
            plan.steps.iter().map(|s| (s.ordinal, s.phase.as_str(), s.per_document)).collect();
        assert_eq!(
            steps,
            [(1, "embedding_generation", true), (2, "facet_extraction", true), (3, "theme_extraction", false)]
        );
        let facets = &plan.steps[1].checkpoint;
        assert_eq!(facets.phase, "facet_extraction");
        assert_eq!(facets.phases_done, ["classification", "embedding_generation"]);
        assert!(facets.in_later_phase() && !facets.is_empty(), "resumed in its phase");
        assert_eq!(facets.phase_counts.keys().collect::<Vec<_>>(), ["facet_extraction"], "counts its own phase only");
        let tail = &plan.steps[2].checkpoint;
        assert_eq!(tail.phases_done, ["classification", "embedding_generation", "facet_extraction"]);
    }

    #[test]
    fn a_plan_without_per_document_phases_is_the_one_task_of_before_and_none_without_phases() {
        let plan = PhasePlan::new("classification", &kinds(&[("theme_extraction", false), ("x", true)]), "s", 3);
        assert_eq!(plan.steps.len(), 1);
        let mut before = Checkpoint::new("classification");
        before.advance_to("theme_extraction");
        assert_eq!(plan.steps[0].checkpoint, before);
        assert!(PhasePlan::new("classification", &[], "s", 3).first_step().is_none());
        let only = PhasePlan::new("classification", &kinds(&[("embedding_generation", true)]), "s", 0);
        assert_eq!((only.steps.len(), only.ranges), (1, 1));
    }

    #[test]
    fn ranges_start_after_the_previous_ones_bound_and_the_last_is_open() {
        let plan = PhasePlan::new("classification", &kinds(&[("embedding_generation", true)]), "s", 3);
        let bounds = [Some("d09".to_string()), Some("d19".to_string()), None];
        let rows = step_rows(&plan.steps[0], &bounds);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["embedding_generation:1", "embedding_generation:2", "embedding_generation:3"]);
        let starts: Vec<Option<String>> = rows.iter().map(|r| r.checkpoint.position(STORED_PARTITION).cursor).collect();
        assert_eq!(starts, [None, Some("d09".into()), Some("d19".into())]);
        let lasts: Vec<Option<&str>> = rows.iter().map(|r| r.range_last.as_deref()).collect();
        assert_eq!(lasts, [Some("d09"), Some("d19"), None]);
        assert!(rows.iter().all(|r| r.later && r.ordinal == 1 && r.phase.as_deref() == Some("embedding_generation")));
        let many: Vec<Option<String>> = (0..12).map(|i| Some(format!("d{i}"))).collect();
        assert_eq!(step_rows(&plan.steps[0], &many)[0].name, "embedding_generation:01", "names sort in order");
    }

    #[test]
    fn the_whole_corpus_step_is_one_task_named_as_before() {
        let plan = PhasePlan::new("classification", &kinds(&[("theme_extraction", false)]), "s", 3);
        let rows = step_rows(&plan.steps[0], &[]);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].name.as_str(), rows[0].phase.as_ref(), rows[0].later), (LATER_PHASES, None, true));
    }
}
