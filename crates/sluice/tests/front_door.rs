//! The operator's front door with the real binary: `sluice init` writes
//! pipelines that run as written, `sluice check` validates one without
//! changing anything and calls each remote service once, `sluice run`
//! without a pipeline file points at `init`, and the help, completions and
//! man page are there.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, OpenAiConfig};

fn in_dir(dir: &Path) -> Command {
    let mut cmd = sluice();
    cmd.current_dir(dir);
    for key in ["INTERCOM_BASE_URL", "INTERCOM_ACCESS_TOKEN", "OPENAI_BASE_URL", "OPENAI_API_KEY"] {
        cmd.env_remove(key);
    }
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn init_jsonl_writes_a_pipeline_that_checks_and_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(in_dir(dir.path()).args(["init", "jsonl"]));
    assert!(stdout(&out).contains("sluice check"), "{}", stdout(&out));
    assert!(dir.path().join("pipeline.toml").is_file() && dir.path().join("data/records.jsonl").is_file());
    let text = std::fs::read_to_string(dir.path().join("pipeline.toml")).unwrap();
    assert!(text.lines().filter(|l| l.trim_start().starts_with('#')).count() >= 5, "commented:\n{text}");

    let out = run_ok(in_dir(dir.path()).arg("check"));
    let report = stdout(&out);
    assert!(report.contains("ok   config") && report.contains("does not exist yet"), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    // check changes nothing: no database appears.
    assert!(!dir.path().join("sluice.db").exists(), "check created the store");

    let out = run_ok(in_dir(dir.path()).args(["run", "--json"]));
    let summary = json_stdout(&out);
    assert_eq!((summary["counts"]["fetched"].as_u64(), summary["counts"]["stored"].as_u64()), (Some(4), Some(3)));
    let out = run_ok(in_dir(dir.path()).arg("check"));
    assert!(stdout(&out).contains("exists"), "{}", stdout(&out));

    // A second init does not overwrite the user's file.
    let out = in_dir(dir.path()).args(["init", "jsonl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
}

#[test]
fn init_files_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(in_dir(dir.path()).args(["init", "files", "-o", "docs.toml"]));
    let out = run_ok(in_dir(dir.path()).args(["run", "-c", "docs.toml", "--json"]));
    assert_eq!(json_stdout(&out)["counts"]["stored"].as_u64(), Some(2));
}

#[test]
fn every_template_builds_and_only_intercom_needs_secrets() {
    for template in ["jsonl", "files", "crawl", "intercom"] {
        let dir = tempfile::tempdir().unwrap();
        run_ok(in_dir(dir.path()).args(["init", template]));
        assert_eq!(dir.path().join(".env.example").exists(), template == "intercom", "{template}");
        let out = in_dir(dir.path()).arg("check").output().unwrap();
        let report = stdout(&out);
        assert!(report.contains("ok   config"), "{template}: {report}");
        if template == "intercom" {
            assert_eq!(out.status.code(), Some(2), "{report}");
            assert!(report.contains("FAIL intercom: INTERCOM_ACCESS_TOKEN is not set"), "{report}");
            assert!(report.contains("FAIL openai (classify): OPENAI_API_KEY is not set"), "{report}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{template}: {report}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_calls_each_service_once_and_names_the_exact_problem() {
    let intercom = FakeIntercom::start(IntercomConfig::default().with_conversations(10)).await.unwrap();
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    run_ok(in_dir(dir.path()).args(["init", "intercom"]));
    let check = |token: &str, key: &str| {
        in_dir(dir.path())
            .arg("check")
            .env("INTERCOM_BASE_URL", intercom.base_url())
            .env("INTERCOM_ACCESS_TOKEN", token)
            .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
            .env("OPENAI_API_KEY", key)
            .output()
            .unwrap()
    };
    let out = check(intercom.token(), openai.key());
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("ok   intercom: GET") && report.contains("/me 200"), "{report}");
    assert!(report.contains("ok   openai (classify): GET") && report.contains("/v1/models 200"), "{report}");
    assert_eq!(intercom.counters().other_requests, 1);
    assert_eq!(openai.counters().model_requests, 1);
    assert_eq!((intercom.counters().search_requests, openai.counters().chat_requests), (0, 0), "nothing paid for");
    assert!(!dir.path().join("intercom.db").exists(), "check created the store");

    let out = check("wrong-token", "sk-wrong");
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("401 Unauthorized: Access Token Invalid (INTERCOM_ACCESS_TOKEN is refused)"), "{report}");
    assert!(report.contains("401 Unauthorized: Incorrect API key") && report.contains("OPENAI_API_KEY"), "{report}");
    assert!(!report.contains("sk-wrong") && !report.contains("wrong-token"), "a secret was printed: {report}");

    // A service that is down is named with the reason.
    let down = in_dir(dir.path())
        .arg("check")
        .env("INTERCOM_BASE_URL", "http://127.0.0.1:9")
        .env("INTERCOM_ACCESS_TOKEN", "t")
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
        .env("OPENAI_API_KEY", openai.key())
        .output()
        .unwrap();
    let report = stdout(&down);
    assert_eq!(down.status.code(), Some(1), "{report}");
    assert!(report.contains("FAIL intercom: GET http://127.0.0.1:9/me: cannot connect"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_uses_an_api_key_written_in_the_pipeline_file() {
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |key: &str| {
        let text = format!(
            "[source]\nkind = \"generate\"\ncount = 3\n\n[[stages]]\nkind = \"classify\"\nprovider = \"llm\"\n\
             categories = [\"a\", \"b\"]\nbase_url = \"{}/v1\"\napi_key = \"{key}\"\n",
            openai.base_url()
        );
        std::fs::write(dir.path().join("pipeline.toml"), text).unwrap();
    };
    // The key is in the file, none in the environment: the run would work, so check says ok.
    write(openai.key());
    let out = in_dir(dir.path()).arg("check").output().unwrap();
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("ok   openai (classify): GET") && report.contains("/v1/models 200"), "{report}");
    assert!(!report.contains("OPENAI_API_KEY"), "the inline key was not the one checked: {report}");
    assert_eq!(openai.counters().model_requests, 1);

    // The inline key is the one sent, even when the environment has a good one: a wrong one fails,
    // named by where it is, and not printed.
    write("sk-inline-wrong");
    let out = in_dir(dir.path()).arg("check").env("OPENAI_API_KEY", openai.key()).output().unwrap();
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("401 Unauthorized") && report.contains("(classify.api_key is refused)"), "{report}");
    assert!(!report.contains("sk-inline-wrong"), "a secret was printed: {report}");
    assert_eq!(openai.counters().model_requests, 2);
}

#[test]
fn check_reports_a_bad_file_with_its_key_and_a_missing_one_with_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = in_dir(dir.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("sluice init"), "{}", stdout(&out));

    std::fs::write(dir.path().join("pipeline.toml"), "name = \"x\"\nbatchsize = 3\n[source]\nkind = \"generate\"\n")
        .unwrap();
    let out = in_dir(dir.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("batchsize") && stdout(&out).contains("line 2"), "{}", stdout(&out));

    // The store's directory is checked too, and nothing is created there.
    std::fs::write(
        dir.path().join("pipeline.toml"),
        "[source]\nkind = \"generate\"\ncount = 5\n[store]\nkind = \"sqlite\"\npath = \"missing/x.db\"\n",
    )
    .unwrap();
    let out = in_dir(dir.path()).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("the directory missing does not exist"), "{}", stdout(&out));
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn check_does_not_create_a_postgres_database() {
    let Ok(url) = std::env::var("SLUICE_TEST_POSTGRES_URL") else {
        assert!(std::env::var("CI").is_err(), "CI needs SLUICE_TEST_POSTGRES_URL");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), "[source]\nkind = \"generate\"\ncount = 5\n").unwrap();
    let out = run_ok(in_dir(dir.path()).args(["check", "--db", &url]));
    assert!(stdout(&out).contains("ok   store: PostgreSQL"), "{}", stdout(&out));

    let missing = sluice_connectors::store::postgres::url_with_database(&url, "sluice_front_door_never_created");
    let out = in_dir(dir.path()).args(["check", "--db", &missing]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("does not exist"), "{}", stdout(&out));
    // Still missing: check did not create it.
    let again = in_dir(dir.path()).args(["check", "--db", &missing]).output().unwrap();
    assert!(stdout(&again).contains("does not exist"), "{}", stdout(&again));
}

#[test]
fn run_without_a_pipeline_file_points_at_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = in_dir(dir.path()).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read pipeline file pipeline.toml: it does not exist; `sluice init` writes one"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("sluice.db").exists());
}

#[test]
fn help_documents_every_argument_the_exit_codes_and_examples() {
    let out = run_ok(sluice().arg("--help"));
    let help = stdout(&out);
    for needle in ["Exit codes:", "130", "101", "Examples:", "sluice init", "[env: SLUICE_LOG]"] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    for command in ["run", "runs", "status", "events", "failures", "serve", "stop", "init", "check", "completions"] {
        let out = run_ok(sluice().args([command, "--help"]));
        let help = stdout(&out);
        assert!(help.contains("Example"), "{command} --help has no example:\n{help}");
        // Every option and argument has a description: after its name, or on the next line (long help).
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !(line.starts_with("  -") || line.starts_with("      --") || line.starts_with("  <")) {
                continue;
            }
            let indent = line.len() - line.trim_start().len();
            let same_line = line.trim_start().find("  ").is_some_and(|at| !line[indent + at..].trim().is_empty());
            let next_line = lines.get(i + 1).is_some_and(|next| {
                let next_indent = next.len() - next.trim_start().len();
                next_indent > indent && !next.trim().is_empty() && !next.trim_start().starts_with('-')
            });
            assert!(same_line || next_line, "{command}: an argument without help text: {line:?}");
        }
    }
    let out = run_ok(sluice().args(["run", "--help"]));
    assert!(stdout(&out).contains("[env: DATABASE_URL]") && stdout(&out).contains("130"), "{}", stdout(&out));
}

#[test]
fn completions_and_the_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(sluice().args(["completions", shell]));
        assert!(stdout(&out).contains("sluice") && stdout(&out).contains("resume-run-id"), "{shell}");
    }
    let out = run_ok(sluice().arg("man"));
    let page = stdout(&out);
    assert!(page.starts_with(".ie") || page.contains(".TH sluice 1"), "{page}");
    assert!(page.contains("init") && page.contains("check"), "{page}");
}

#[test]
fn a_bad_key_inside_stages_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[source]\nkind = \"generate\"\ncount = 5\n\n[[stages]]\nkind = \"chunk\"\nby = \"chars\"\nsizee = 5\n";
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    let out = in_dir(dir.path()).args(["run", "-c", "p.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 8: unknown field `sizee`"), "{}", stderr(&out));
}
