//! `sluice-bench postgres [RECORDS]`: the PostgreSQL store against SQLite.
//!
//! 1. Records/s of the same pipeline (generate -> normalize -> filter ->
//!    classify(rules) -> store) into each store, at batch sizes 50 and 500.
//! 2. The cost of the per-batch checkpoint: commits of batches of 10, 50 and
//!    500 documents with their checkpoint, against commits of the checkpoint
//!    alone (an empty batch: the transaction and the `pipeline_runs` update,
//!    which every batch pays once), per commit and per record.
//!
//! The server is `SLUICE_BENCH_POSTGRES_URL`, else `SLUICE_TEST_POSTGRES_URL`
//! (e.g. from `eval "$(.ci/postgres.sh start)"`); each measurement uses a
//! database of its own, dropped afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sluice_connectors::store::postgres::{create_scratch_database, drop_database};
use sluice_connectors::store::{InspectStore, PostgresStore, SqliteStore};
use sluice_core::{Checkpoint, CommitBatch, Document, NewRun, Pipeline, Record, Start, Store};

/// A store under test, and what to clean up after it.
enum Target {
    /// Holds the directory (deleted on drop).
    Sqlite {
        _dir: tempfile::TempDir,
    },
    Postgres {
        admin: String,
        name: String,
    },
}

impl Target {
    async fn open(kind: &str, admin: &str) -> (Target, Arc<dyn InspectStore>) {
        match kind {
            "sqlite" => {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open(&dir.path().join("bench.db")).expect("sqlite");
                (Target::Sqlite { _dir: dir }, Arc::new(store))
            }
            _ => {
                let (name, url) = create_scratch_database(admin, "sluice_bench", None).await.expect("bench database");
                let store = PostgresStore::open(&url).await.expect("postgres");
                (Target::Postgres { admin: admin.to_string(), name }, Arc::new(store))
            }
        }
    }

    async fn cleanup(self) {
        if let Target::Postgres { admin, name } = self
            && let Err(e) = drop_database(&admin, &name).await
        {
            eprintln!("warning: {e}");
        }
    }
}

/// The engine benchmark's pipeline, without per-document events, into `store`.
fn pipeline(records: u64, batch_size: usize, store: Arc<dyn Store>) -> Pipeline {
    crate::engine_pipeline(records, batch_size, false, store)
}

fn documents(batch: usize, size: usize) -> Vec<Document> {
    (0..size)
        .map(|i| {
            let n = batch * size + i;
            Document::from_record(
                Record::new(
                    "bench",
                    format!("conv-{n:08}"),
                    format!("customer message number {n}: my invoice is wrong"),
                )
                .with_field("author", "user"),
            )
        })
        .collect()
}

/// Commits `commits` batches of `size` documents (0: the checkpoint alone)
/// with a checkpoint each; returns the mean wall time of one commit.
async fn commit_cost(store: &dyn Store, size: usize, commits: usize) -> Duration {
    let run = store
        .create_run(&NewRun { pipeline: "bench".into(), phase: "classification".into(), ..NewRun::default() })
        .await
        .expect("run");
    let batches: Vec<CommitBatch> =
        (0..commits).map(|b| CommitBatch { documents: documents(b, size), ..CommitBatch::default() }).collect();
    let mut checkpoint = Checkpoint::new("classification");
    let started = Instant::now();
    for batch in &batches {
        checkpoint.batches += 1;
        checkpoint.counts.fetched += size as u64;
        checkpoint.counts.stored += size as u64;
        store.commit(run.id, batch, &checkpoint).await.expect("commit");
    }
    started.elapsed() / commits as u32
}

pub async fn postgres(records: u64) {
    let Some(admin) =
        ["SLUICE_BENCH_POSTGRES_URL", "SLUICE_TEST_POSTGRES_URL"].iter().find_map(|k| std::env::var(k).ok())
    else {
        eprintln!(
            "set SLUICE_BENCH_POSTGRES_URL (or SLUICE_TEST_POSTGRES_URL) to a server this may create databases on"
        );
        return;
    };

    println!("Pipeline generate -> normalize -> filter -> classify(rules) -> store, {records} records:");
    println!();
    println!("| store | batch size | wall s | records/s | stored |");
    println!("| --- | --- | --- | --- | --- |");
    for batch_size in [50usize, 500] {
        for kind in ["sqlite", "postgres"] {
            let (target, store) = Target::open(kind, &admin).await;
            let pipeline = pipeline(records, batch_size, store.clone());
            let started = Instant::now();
            let mut events = Box::pin(pipeline.stream_events(Start::New).await.expect("start"));
            while events.next().await.is_some() {}
            let wall = started.elapsed().as_secs_f64();
            let stored = store.document_count().await.expect("count");
            println!("| {kind} | {batch_size} | {wall:.2} | {:.0} | {stored} |", records as f64 / wall);
            drop(events);
            target.cleanup().await;
        }
    }

    println!();
    println!("Per-batch commit (documents + checkpoint in one transaction) against the checkpoint alone:");
    println!();
    println!(
        "| store | batch size | commit ms | records/s | checkpoint-only commit ms | checkpoint share of the commit | checkpoint µs per record |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for size in [10usize, 50, 500] {
        for kind in ["sqlite", "postgres"] {
            let (target, store) = Target::open(kind, &admin).await;
            let commits = (20_000 / size).clamp(40, 1_000);
            // Warm up (connections, prepared statements, table files).
            commit_cost(store.as_ref(), size, 5).await;
            let alone = commit_cost(store.as_ref(), 0, 500).await;
            let with_docs = commit_cost(store.as_ref(), size, commits).await;
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            println!(
                "| {kind} | {size} | {:.3} | {:.0} | {:.3} | {:.0}% | {:.1} |",
                ms(with_docs),
                size as f64 / with_docs.as_secs_f64(),
                ms(alone),
                100.0 * alone.as_secs_f64() / with_docs.as_secs_f64(),
                alone.as_secs_f64() * 1e6 / size as f64
            );
            target.cleanup().await;
        }
    }
}
