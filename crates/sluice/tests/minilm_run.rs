//! The real binary with `provider = "minilm"` over a few files, into SQLite
//! and the items sink: every chunk gets a 384-dimension unit vector from the
//! model in `SLUICE_MINILM_DIR`, and texts about the same thing land closer
//! than unrelated ones. Skipped with a message without the model directory,
//! except in CI, where it fails.

mod common;

use common::{count, db, run_ok, sluice, stderr};
use sluice_connectors::store::items_sink::item_name;

use sluice_testkit::setting::minilm_dir as model_dir;

const FILES: [(&str, &str); 4] = [
    ("refunds.md", "# Refunds\n\nI was charged twice for my subscription and would like my money back."),
    ("billing/double-charge.txt", "My credit card was billed two times this month; please refund the extra payment."),
    ("garden.txt", "Tomatoes grow best in full sun with regular watering and rich soil."),
    ("notes/empty-ish.md", "   "),
];

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn a_run_with_the_local_model_embeds_every_chunk() {
    let Some(model) = model_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    for (name, text) in FILES {
        let path = docs.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let out = dir.path().join("out");
    let config = dir.path().join("minilm.toml");
    std::fs::write(
        &config,
        format!(
            r#"name = "minilm"
batch_size = 10

[source]
kind = "files"
path = {docs:?}

[[stages]]
kind = "normalize"

[[stages]]
kind = "chunk"
by = "chars"
size = 400
overlap = 0

[[stages]]
kind = "embed"
provider = "minilm"
model_dir = {model:?}
batch_size = 2

[store]
kind = "sqlite"
path = {db:?}

[sink]
kind = "items"
path = {out:?}
"#,
            db = dir.path().join("sluice.db"),
        ),
    )
    .unwrap();
    let ran = run_ok(sluice().args(["run", "-c"]).arg(&config));
    let conn = db(&dir.path().join("sluice.db"));
    let stored = count(&conn, "SELECT COUNT(*) FROM documents");
    assert!(stored >= 3, "the three texts are stored: {}", stderr(&ran));

    let ids: Vec<(String, String)> = conn
        .prepare("SELECT source, id FROM documents")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let vector_of = |needle: &str| -> Vec<f64> {
        let (source, id) = ids.iter().find(|(_, id)| id.contains(needle)).unwrap_or_else(|| panic!("{needle} stored"));
        let path = out.join("chunks").join(format!("{}_chunks.json", item_name(source, id)));
        let item: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let chunks = item["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 1, "{needle}: one chunk");
        let vector: Vec<f64> = chunks[0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(vector.len(), 384, "{needle}");
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{needle}: norm {norm}");
        vector
    };
    let (refunds, double_charge, garden) = (vector_of("refunds"), vector_of("double-charge"), vector_of("garden"));
    let related = cosine(&refunds, &double_charge);
    assert!(related > 0.5, "two texts about being charged twice: {related}");
    assert!(related > cosine(&refunds, &garden) + 0.3, "closer than to gardening");
    assert!(related > cosine(&double_charge, &garden) + 0.3);

    // The run's saved settings name the provider, so a resume uses the same model.
    let saved: String = conn.query_row("SELECT config FROM pipeline_runs", [], |r| r.get(0)).unwrap();
    assert!(saved.contains("\"provider\":\"minilm\""), "{saved}");
}
