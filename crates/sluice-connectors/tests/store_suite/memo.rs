//! The memo's write-ahead, its ledger, and its vectors in binary, on every
//! backend (the `suite!` of `main.rs` runs each function per backend).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_core::store::{CommitBatch, MemoEntry, MemoKey};
use sluice_core::{
    Checkpoint, Context, CostLedger, Document, Memo, Outcome, Page, Pipeline, Record, RunStatus, Settings, Source,
    SourceError, SourceItem, Stage, StageError, StageSpec, Start, Store,
};

use crate::harness::StoreHarness;
use crate::new_run;

fn vector(seed: usize) -> Vec<f32> {
    (0..256).map(|i| ((i * 7 + seed * 13) % 101) as f32 / 101.0 - 0.37).collect()
}

fn entry(id: &str, value: Value) -> MemoEntry {
    MemoEntry {
        source: "src".into(),
        id: id.into(),
        stage: "embed".into(),
        fingerprint: "embed:test".into(),
        content_hash: format!("hash-{id}"),
        value,
    }
}

fn key(id: &str) -> MemoKey {
    MemoKey { source: "src".into(), id: id.into(), content_hash: format!("hash-{id}") }
}

fn cost(llm_calls: u64) -> CostLedger {
    CostLedger { llm_calls, embedding_calls: 1, tokens_in: 10 * llm_calls, tokens_out: llm_calls, embedding_tokens: 10 }
}

pub async fn results_written_ahead_are_found_and_the_ledger_only_grows(h: &dyn StoreHarness) {
    let store = h.open().await;
    let run = store.create_run(&new_run("p")).await.unwrap();
    let value = json!({"embedding": vector(1), "chunks": []});
    store.write_ahead(run.id, &[entry("a", value.clone())], &cost(3)).await.unwrap();

    // Before any batch the run gets an empty checkpoint (still nothing to resume) holding the ledger.
    let kept = store.get_run(run.id).await.unwrap().unwrap().checkpoint.expect("the ledger is kept");
    assert!(kept.is_empty(), "{kept:?}");
    assert_eq!(kept.cost, cost(3));
    let found = store.memo_lookup("embed", "embed:test", &[key("a"), key("b")]).await.unwrap();
    assert_eq!(found, vec![Some(value.clone()), None], "the vector comes back as the same f32s");

    // The first batch carries the ledger; a later write-ahead raises it, an older batch snapshot does not lower it.
    let mut next = Checkpoint::new("classification");
    next.batches = 1;
    next.cost = cost(3);
    store.commit(run.id, &CommitBatch::default(), &next).await.unwrap();
    store.write_ahead(run.id, &[], &cost(4)).await.unwrap();
    next.batches = 2;
    next.cost = cost(2);
    store.commit(run.id, &CommitBatch::default(), &next).await.unwrap();
    let stored = store.get_run(run.id).await.unwrap().unwrap().checkpoint.unwrap();
    assert_eq!((stored.batches, stored.cost), (2, cost(4)));
    next.batches = 2;
    next.cost = cost(5);
    store.commit(run.id, &CommitBatch::default(), &next).await.unwrap();
    store.write_ahead(run.id, &[], &cost(4)).await.unwrap();
    let stored = store.get_run(run.id).await.unwrap().unwrap().checkpoint.unwrap();
    assert_eq!((stored.batches, stored.cost), (2, cost(5)), "the write-ahead keeps the rest of the checkpoint");
    store.write_ahead(run.id, &[], &cost(6)).await.unwrap();
    assert_eq!(store.get_run(run.id).await.unwrap().unwrap().checkpoint.unwrap().cost, cost(6));
}

/// A paid stage whose memo holds a vector under `embedding`; counts its calls.
struct PaidVectors {
    calls: AtomicU64,
}

#[async_trait]
impl Stage for PaidVectors {
    fn name(&self) -> &str {
        "embed"
    }
    async fn process(&self, _ctx: &Context, docs: Vec<Document>) -> Result<Vec<Outcome>, StageError> {
        Ok(docs
            .into_iter()
            .map(|mut doc| {
                self.calls.fetch_add(1, Ordering::SeqCst);
                doc.embedding = Some(vector(doc.id().len() + doc.record.text.len()));
                Outcome::Kept(doc)
            })
            .collect())
    }
    fn memo(&self) -> Option<&dyn Memo> {
        Some(self)
    }
}

impl Memo for PaidVectors {
    fn fingerprint(&self) -> String {
        "embed:paid-vectors".into()
    }
    fn value(&self, doc: &Document) -> Option<Value> {
        Some(json!({"embedding": doc.embedding, "chunks": []}))
    }
    fn apply(&self, doc: &mut Document, value: &Value) -> bool {
        match serde_json::from_value::<Vec<f32>>(value["embedding"].clone()) {
            Ok(v) if v.len() == 256 => {
                doc.embedding = Some(v);
                true
            }
            _ => false,
        }
    }
}

struct Fixed(Vec<Record>);

#[async_trait]
impl Source for Fixed {
    fn name(&self) -> &str {
        "src"
    }
    async fn fetch(&self, _ctx: &Context, _partition: &str, _cursor: Option<&str>) -> Result<Page, SourceError> {
        Ok(Page { items: self.0.iter().cloned().map(SourceItem::Record).collect(), next: None, dropped: 0 })
    }
}

async fn run_paid(store: Arc<dyn Store>, records: &[Record]) -> (u64, sluice_core::RunSummary) {
    let stage = Arc::new(PaidVectors { calls: AtomicU64::new(0) });
    let summary = Pipeline::new(Arc::new(Fixed(records.to_vec())), store)
        .settings(Settings { batch_size: 10, name: "memo".into(), ..Settings::default() })
        .stage(StageSpec::new(stage.clone()))
        .run(Start::New)
        .await
        .unwrap();
    assert_eq!(summary.status, RunStatus::Completed, "{:?}", summary.error);
    (stage.calls.load(Ordering::SeqCst), summary)
}

/// A store written before migration 0004 (vectors as JSON text, no
/// `vectors` column) is migrated when opened, and a re-run makes no paid call.
pub async fn an_old_store_with_vectors_in_json_is_migrated_without_losing_a_memo_hit(h: &dyn StoreHarness) {
    let records: Vec<Record> = (0..30).map(|i| Record::new("src", format!("r{i:02}"), format!("text {i}"))).collect();
    let (paid, _) = run_paid(h.open().await, &records).await;
    assert_eq!(paid, 30);
    let ids = h.rows("SELECT id FROM stage_results ORDER BY id").await;
    assert_eq!(ids.len(), 30);

    // Back to the old format: each vector in its JSON, no blob, the migration undone.
    let store = h.open().await;
    let keys: Vec<MemoKey> = records
        .iter()
        .map(|r| MemoKey {
            source: "src".into(),
            id: r.id.clone(),
            content_hash: Document::from_record(r.clone()).content_hash,
        })
        .collect();
    let values = store.memo_lookup("embed", "embed:paid-vectors", &keys).await.unwrap();
    drop(store);
    for (k, value) in keys.iter().zip(&values) {
        let old = serde_json::to_string(value.as_ref().expect("a hit before the downgrade")).unwrap();
        assert!(old.contains("\"embedding\":["), "{old}");
        h.exec(&format!("UPDATE stage_results SET value = '{old}' WHERE id = '{}'", k.id)).await;
    }
    h.exec("ALTER TABLE stage_results DROP COLUMN vectors").await;
    h.exec("DELETE FROM schema_migrations WHERE version = 4").await;

    // Opening migrates: every vector moves to the blob, and every memo still hits.
    let store = h.open().await;
    let left = h.rows("SELECT count(*) FROM stage_results WHERE vectors IS NULL").await;
    assert_eq!(left[0][0].as_deref(), Some("0"), "every vector moved to binary");
    let refs = h.rows("SELECT count(*) FROM stage_results WHERE CAST(value AS TEXT) LIKE '%f32%'").await;
    assert_eq!(refs[0][0].as_deref(), Some("30"));
    assert_eq!(store.memo_lookup("embed", "embed:paid-vectors", &keys).await.unwrap(), values);
    let (paid, summary) = run_paid(store, &records).await;
    assert_eq!((paid, summary.counts.skipped_unchanged), (0, 30), "a re-run after the migration pays nothing");
}
