//! Embedding inputs the API refuses (issue 11, item 3): one 100 KB text among
//! 31 ordinary ones in a call of 32, against the fake OpenAI that refuses an
//! input over its context exactly as the real API does (400, "This model's
//! maximum context length is 8192 tokens, however you requested N tokens").
//! Cut by tokens, every text is embedded; with cutting off, or for an input
//! refused for another reason, only that text's document fails, every
//! neighbour gets its vector, and a later run pays for none of them again.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sluice_testkit::{FakeOpenAi, OpenAiConfig, OpenAiFaults};

const BIG: &str = "t-big";

/// 32 tickets, the 20th about 100 KB (over 20,000 tokens); `marked` (if any)
/// also contains `marker`.
fn tickets(dir: &Path, marked: Option<(&str, &str)>) -> PathBuf {
    let path = dir.join("tickets.jsonl");
    let mut lines = String::new();
    for i in 0..32 {
        let id = if i == 19 { BIG.to_string() } else { format!("t-{i:02}") };
        let mut text = if i == 19 {
            (0..11_500).map(|w| format!("word{w} ")).collect::<String>()
        } else {
            format!("Ticket {i}: the invoice for order {} was charged twice, please refund one of them.", 1000 + i)
        };
        if let Some((who, marker)) = marked
            && who == id
        {
            text.push_str(marker);
        }
        lines.push_str(&serde_json::json!({"id": id, "text": text}).to_string());
        lines.push('\n');
    }
    assert!(lines.len() > 100_000, "the big ticket is about 100 KB");
    std::fs::write(&path, lines).unwrap();
    path
}

fn pipeline(dir: &Path, data: &Path, extra: &str) -> PathBuf {
    let path = dir.join("embed.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"limits\"\nbatch_size = 50\n[source]\nkind = \"jsonl\"\npath = {:?}\n\n\
             [[stages]]\nkind = \"embed\"\nprovider = \"openai\"\nmodel = \"text-embedding-3-small\"\n\
             dimensions = 64\nbatch_size = 32\nmax_attempts = 1\n{extra}\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    path
}

/// One `sluice run` against the fake; its JSON summary.
async fn run(openai: &FakeOpenAi, config: &Path, db_path: &Path) -> serde_json::Value {
    let mut cmd = sluice();
    cmd.args(["run", "-q", "--json", "-c"])
        .arg(config)
        .arg("--db")
        .arg(db_path)
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
        .env("OPENAI_API_KEY", openai.key());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = json_stdout(&out);
    assert_eq!(summary["status"], "completed", "{summary}");
    summary
}

fn embedded_ids(db_path: &Path) -> Vec<String> {
    let conn = db(db_path);
    let mut stmt = conn.prepare("SELECT id FROM documents WHERE embedding IS NOT NULL ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

fn failures(db_path: &Path, run: i64) -> Vec<serde_json::Value> {
    let out = run_ok(sluice().args(["failures", &run.to_string(), "--json", "--db"]).arg(db_path));
    json_stdout(&out).as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_input_is_cut_to_the_model_context_and_embedded() {
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = tickets(dir.path(), None);
    let config = pipeline(dir.path(), &data, "");
    let db_path = dir.path().join("cut.db");

    let summary = run(&openai, &config, &db_path).await;
    assert_eq!(summary["counts"]["failed"], 0, "{summary}");
    assert_eq!(embedded_ids(&db_path).len(), 32, "the big ticket is cut and embedded with the others");
    let c = openai.counters();
    assert_eq!(c.bad_requests, 0, "nothing was sent over the model's context");
    assert_eq!((c.embedding_requests, c.embedded_inputs), (1, 32), "one call of 32");

    // A later run over the same tickets pays for nothing.
    run(&openai, &config, &db_path).await;
    let again = openai.counters();
    assert_eq!(again.embedding_requests, 1, "the second run made no embeddings request: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cutting_off_only_the_long_input_fails_and_is_not_paid_again() {
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = tickets(dir.path(), None);
    let config = pipeline(dir.path(), &data, "max_input_tokens = 0");
    let db_path = dir.path().join("nocut.db");

    let summary = run(&openai, &config, &db_path).await;
    assert_eq!(summary["counts"]["failed"], 1, "{summary}");
    let embedded = embedded_ids(&db_path);
    assert_eq!(embedded.len(), 31, "every neighbour got its embedding: {embedded:?}");
    assert!(!embedded.iter().any(|id| id == BIG));
    let failed = failures(&db_path, 1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["record_id"], BIG);
    assert_eq!(failed[0]["stage"], "embed");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("maximum context length is 8192 tokens, however you requested"), "{error}");
    let c = openai.counters();
    assert_eq!(c.embedded_inputs, 31, "each neighbour paid once: {c:?}");
    assert_eq!(c.max_embedding_repeats, 1);
    // Halving 32 down to the one: a refusal per level, and one call answered per level below the top.
    assert_eq!(c.bad_requests, 6, "{c:?}");
    assert_eq!(c.embedding_responses, 5, "{c:?}");

    // A later run: the 31 are remembered; only the long one is sent, alone, and refused (unbilled).
    let summary = run(&openai, &config, &db_path).await;
    assert_eq!(summary["counts"]["failed"], 1, "{summary}");
    let again = openai.counters();
    assert_eq!(again.embedded_inputs, 31, "no neighbour paid twice: {again:?}");
    assert_eq!(again.embedding_requests - c.embedding_requests, 1, "{again:?}");
    assert_eq!(embedded_ids(&db_path).len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_refused_for_another_reason_fails_alone() {
    let faults = OpenAiFaults { refuse_inputs_containing: vec!["<unembeddable>".into()], ..OpenAiFaults::default() };
    let openai = FakeOpenAi::start(OpenAiConfig::default().with_faults(faults)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = tickets(dir.path(), Some(("t-03", " <unembeddable>")));
    let config = pipeline(dir.path(), &data, "");
    let db_path = dir.path().join("refused.db");

    let summary = run(&openai, &config, &db_path).await;
    assert_eq!(summary["counts"]["failed"], 1, "{summary}");
    let embedded = embedded_ids(&db_path);
    assert_eq!(embedded.len(), 31, "{embedded:?}");
    assert!(embedded.iter().any(|id| id == BIG), "the long one is cut and embedded");
    let failed = failures(&db_path, 1);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["record_id"], "t-03");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("HTTP 400") && error.contains("Invalid 'input[0]'"), "{error}");
    assert_eq!(openai.counters().embedded_inputs, 31);
}
