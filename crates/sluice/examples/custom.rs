//! A custom `Source` and a custom `Stage`, run by the engine into a SQLite
//! store, with the typed events as the primary API. Run it with
//!
//!     cargo run --release -p sluice --example custom
//!
//! and run it again: the second run resumes nothing (the first completed) and
//! upserts the same ten documents, so the store still holds ten.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use sluice_connectors::store::SqliteStore;
use sluice_core::{
    Context, Document, EventKind, Outcome, Page, Pipeline, Record, Source, SourceError, SourceItem, Stage, StageError,
    StageSpec, Start,
};

/// Numbers 1..=count, five a page; the cursor is the next number to read.
struct Numbers {
    count: u64,
}

#[async_trait]
impl Source for Numbers {
    fn name(&self) -> &str {
        "numbers"
    }

    async fn fetch(&self, _ctx: &Context, _partition: &str, cursor: Option<&str>) -> Result<Page, SourceError> {
        let from: u64 = match cursor {
            None => 1,
            Some(c) => c.parse().map_err(|_| SourceError::CursorInvalid { message: format!("bad cursor {c:?}") })?,
        };
        let to = (from + 4).min(self.count);
        let items = (from..=to)
            .map(|n| SourceItem::Record(Record::new("numbers", n.to_string(), format!("number {n}"))))
            .collect();
        Ok(Page { items, next: (to < self.count).then(|| (to + 1).to_string()), dropped: 0 })
    }

    async fn estimated_total(&self) -> Option<u64> {
        Some(self.count)
    }
}

/// Keeps even numbers, with a `parity` field; filters odd ones out.
struct EvenOnly;

#[async_trait]
impl Stage for EvenOnly {
    fn name(&self) -> &str {
        "even_only"
    }

    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        Ok(docs
            .into_iter()
            .map(|mut doc| {
                let n: u64 = doc.record.id.parse().unwrap_or(1);
                if n.is_multiple_of(2) {
                    doc.record.fields.insert("parity".into(), "even".into());
                    Outcome::Kept(doc)
                } else {
                    Outcome::Filtered { doc, reason: "odd".into() }
                }
            })
            .collect())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("sluice-custom-example.db");
    let store = Arc::new(SqliteStore::open(&path)?);
    let pipeline = Pipeline::new(Arc::new(Numbers { count: 20 }), store).stage(StageSpec::new(Arc::new(EvenOnly)));
    let mut events = Box::pin(pipeline.stream_events(Start::New).await?);
    while let Some(event) = events.next().await {
        match event.kind {
            EventKind::BatchCommitted { batch, records, .. } => println!("batch {batch}: {records} records committed"),
            EventKind::RunFinished { status, counts, .. } => {
                println!("run {} {status}: stored {} filtered {}", event.run_id, counts.stored, counts.filtered);
            }
            _ => {}
        }
    }
    println!("store: {}", path.display());
    Ok(())
}
