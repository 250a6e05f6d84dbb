//! The progress view on a real terminal: the binary runs inside a
//! pseudo-terminal (`script` from util-linux) of a given width, and what it
//! drew is read back. The bar must be drawn, fit the width, carry a short
//! message, honour `NO_COLOR`/`--color`, say when a rate limit pauses the run,
//! and give each later phase the total it goes over.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, OpenAiConfig, OpenAiFaults};

/// Runs `args` in a pseudo-terminal `cols` wide; returns what the terminal received.
fn in_terminal(cols: u16, dir: &Path, env: &[(&str, &str)], args: &str) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "CI needs `script` (util-linux)");
        return None;
    }
    let typescript = dir.join(format!("tty-{cols}.txt"));
    let command = format!("stty cols {cols} rows 30; {} {args}", env!("CARGO_BIN_EXE_sluice"));
    let mut cmd = Command::new("script");
    cmd.arg("-qfec").arg(&command).arg(&typescript).current_dir(repo_root());
    for key in ["NO_COLOR", "SLUICE_LOG", "RUST_LOG", "DATABASE_URL", "CLICOLOR_FORCE"] {
        cmd.env_remove(key);
    }
    cmd.env("TERM", "xterm-256color");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("script runs");
    assert!(out.status.success(), "{command} failed: {}", stderr(&out));
    Some(String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned())
}

/// The screen lines drawn: split at carriage returns and newlines, escapes removed.
fn frames(raw: &str) -> Vec<String> {
    raw.split(['\r', '\n'])
        .map(strip_escapes)
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Script started") && !l.starts_with("Script done"))
        .collect()
}

fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn generate_pipeline(dir: &Path, count: u64) -> String {
    let path = dir.join("gen.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"gen\"\nbatch_size = 20\n[source]\nkind = \"generate\"\ncount = {count}\npage_size = 20\nlatency_ms = 20\n\
             [[stages]]\nkind = \"chunk\"\nby = \"chars\"\nsize = 100\noverlap = 10\n\
             [store]\nkind = \"sqlite\"\npath = {:?}\n",
            dir.join("gen.db").display().to_string()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn the_bar_is_drawn_and_fits_80_and_120_columns() {
    for cols in [80usize, 120] {
        let dir = tempfile::tempdir().unwrap();
        let config = generate_pipeline(dir.path(), 1500);
        let Some(raw) = in_terminal(cols as u16, dir.path(), &[], &format!("run -c {config}")) else { return };
        let frames = frames(&raw);
        let bars: Vec<&String> = frames.iter().filter(|l| l.contains("/1500") && l.contains("[")).collect();
        assert!(!bars.is_empty(), "no bar drawn at {cols} columns:\n{}", frames.join("\n"));
        // The bar's frames (the summary after it is a log line, free to wrap).
        for line in frames.iter().filter(|l| l.contains(" done ") || l.contains("/1500")) {
            assert!(line.chars().count() <= cols, "a frame wider than {cols} columns wraps: {line:?}");
        }
        // A visible bar, a rate and ETA, the phase and the non-zero counters only.
        let last = bars.last().unwrap();
        assert!(last.contains("=") && last.contains("/s") && last.contains("ingest"), "{last}");
        assert!(last.contains("stored ") && !last.contains("failed 0") && !last.contains("filtered"), "{last}");
        assert!(frames.iter().any(|l| l.contains("run 1 completed")), "{}", frames.join("\n"));
        // Colour by default on a terminal.
        assert!(raw.contains("\u{1b}[3"), "no colour at {cols} columns");
    }
}

#[test]
fn no_color_and_color_never_draw_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 300);
    let Some(raw) = in_terminal(100, dir.path(), &[("NO_COLOR", "1")], &format!("run -c {config}")) else { return };
    assert!(raw.contains("/300"), "{raw}");
    assert!(!raw.contains("\u{1b}[3"), "NO_COLOR=1 still coloured: {raw:?}");
    std::fs::remove_file(dir.path().join("gen.db")).unwrap();
    let raw = in_terminal(100, dir.path(), &[], &format!("--color never run -c {config}")).unwrap();
    assert!(raw.contains("/300") && !raw.contains("\u{1b}[3"), "--color never still coloured: {raw:?}");
    // --color always wins over NO_COLOR.
    std::fs::remove_file(dir.path().join("gen.db")).unwrap();
    let raw = in_terminal(100, dir.path(), &[("NO_COLOR", "1")], &format!("run --color always -c {config}")).unwrap();
    assert!(raw.contains("\u{1b}[3"), "--color always not coloured");
}

#[test]
fn quiet_draws_no_bar_and_an_invalid_log_filter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100);
    let Some(raw) = in_terminal(100, dir.path(), &[], &format!("run -q -c {config}")) else { return };
    assert!(!raw.contains("/100") && raw.contains("run 1 completed"), "{raw}");

    let out = sluice().args(["runs", "--db", "x.db"]).env("SLUICE_LOG", "sluice=loud").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SLUICE_LOG=sluice=loud is not a log filter"), "{}", stderr(&out));
    // -v shows debug logs, -q only warnings: the "run started" info line goes.
    let db = dir.path().join("v.db").display().to_string();
    let out = run_ok(sluice().args(["run", "-q", "-c", &config, "--db", &db]));
    assert!(!stderr(&out).contains("INFO"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_pause_is_shown_with_its_countdown() {
    // 3 requests per 10-second window, 10 conversations a page: the run pauses for the window.
    let fake = FakeIntercom::start(IntercomConfig::default().with_conversations(60).with_days(45).with_rate_limit(3))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ic.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"ic\"\nbatch_size = 10\n[source]\nkind = \"intercom\"\ndate_from = \"2025-11-01\"\ndate_to = \"2025-12-31\"\nper_page = 10\nmin_chars = 0\n\
             base_url = {:?}\n[[stages]]\nkind = \"normalize\"\n[store]\nkind = \"sqlite\"\npath = {:?}\n",
            fake.base_url(),
            dir.path().join("ic.db").display().to_string()
        ),
    )
    .unwrap();
    let args = format!("run -c {}", config.display());
    let token = fake.token().to_string();
    let dir_path = dir.path().to_path_buf();
    let raw = tokio::task::spawn_blocking(move || {
        in_terminal(120, &dir_path, &[("INTERCOM_ACCESS_TOKEN", token.as_str())], &args)
    })
    .await
    .unwrap();
    let Some(raw) = raw else { return };
    let frames = frames(&raw);
    assert!(
        frames.iter().any(|l| l.contains("waiting for the rate limit (resets in ")),
        "no pause shown:\n{}",
        frames.join("\n")
    );
    assert!(frames.iter().any(|l| l.contains("run 1 completed")), "{}", frames.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_phase_counts_towards_the_stored_documents_it_reads() {
    let openai = FakeOpenAi::start(OpenAiConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("emb.toml");
    // The embedding phase reads every stored document of the source, not only this run's.
    let write = |count: u64, seed: u64| {
        std::fs::write(
            &config,
            format!(
                "name = \"emb\"\nbatch_size = 20\n[source]\nkind = \"generate\"\ncount = {count}\nseed = {seed}\npage_size = 50\n\
                 [phases.embedding_generation]\nprovider = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"{}\"\n\
                 dimensions = 8\nbatch_size = 10\nconcurrency = 1\n[phases.facet_extraction]\n\
                 [store]\nkind = \"sqlite\"\npath = {:?}\n",
                openai.base_url(),
                openai.key(),
                dir.path().join("emb.db").display().to_string()
            ),
        )
        .unwrap();
    };
    write(300, 1);
    let config_arg = config.display().to_string();
    run_ok(sluice().args(["run", "-q", "-c", &config_arg]));
    // Then 100 of them change: the phase embeds those 100 (slowly), and reuses the other 200's.
    write(100, 2);
    openai.set_faults(OpenAiFaults { latency_ms: 250, ..OpenAiFaults::default() });
    let dir_path = dir.path().to_path_buf();
    let args = format!("run -c {config_arg}");
    let raw = tokio::task::spawn_blocking(move || in_terminal(120, &dir_path, &[], &args)).await.unwrap();
    let Some(raw) = raw else { return };
    let frames = frames(&raw);
    let embedding: Vec<&String> =
        frames.iter().filter(|l| l.contains("embedding_generation") && l.contains("[")).collect();
    assert!(!embedding.is_empty(), "no bar in the embedding phase:\n{}", frames.join("\n"));
    for line in &embedding {
        assert!(line.contains("/300 "), "the phase's total is not the 300 stored documents: {line}");
        assert!(line.chars().count() <= 120, "a frame wider than 120 columns: {line:?}");
    }
    for line in frames.iter().filter(|l| l.contains("facet_extraction") && l.contains("[")) {
        assert!(line.contains("/300 "), "facets go over the 300 stored documents too: {line}");
    }
    // While it embeds the changed documents the bar is part-way, not full, with a rate of this phase.
    assert!(embedding.iter().any(|l| !l.contains("300/300")), "{}", frames.join("\n"));
    assert!(embedding.iter().any(|l| l.contains("/s")), "no rate in the phase:\n{}", frames.join("\n"));
    assert!(frames.iter().any(|l| l.contains("run 2 completed")), "{}", frames.join("\n"));
}
