//! Distributed runs (issue 14) with the real binary: `sluice run
//! --distributed` and several `sluice worker` processes sharing one run
//! through the PostgreSQL of `SLUICE_TEST_POSTGRES_URL`, against the test
//! kit's fake Intercom and fake OpenAI (in this process, real HTTP over
//! loopback). Workers are SIGKILLed and restarted, and one is frozen
//! (SIGSTOP) past its lease and thawed, so its late commit is attempted
//! and refused by the fence.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use sluice_testkit::{FakeIntercom, FakeOpenAi, IntercomConfig, IntercomFaults, OpenAiConfig, OpenAiFaults, Theme};
use tokio::process::Child;

/// December 2025 (UTC), the range of every pipeline below, end excluded.
const START: i64 = 1_764_547_200;
const END: i64 = 1_767_225_600;
const PARTITIONS: usize = 16;
const LEASE_SECS: &str = "2";

async fn fakes(conversations: usize, llm_latency_ms: u64) -> (FakeIntercom, FakeOpenAi) {
    let intercom = FakeIntercom::start(
        IntercomConfig::default()
            .with_conversations(conversations)
            .with_days(45)
            .with_rate_limit(100_000)
            .with_faults(IntercomFaults { latency_ms: 5, ..IntercomFaults::default() }),
    )
    .await
    .expect("fake intercom starts");
    let openai = FakeOpenAi::start(
        OpenAiConfig::default().with_faults(OpenAiFaults { latency_ms: llm_latency_ms, ..OpenAiFaults::default() }),
    )
    .await
    .expect("fake openai starts");
    (intercom, openai)
}

/// Ids in the range that pass the quality filter.
fn quality_ids(fake: &FakeIntercom) -> BTreeSet<String> {
    let ds = fake.dataset();
    let short: BTreeSet<String> = ds.short_ids().into_iter().collect();
    ds.ids_in_range(START, END).into_iter().filter(|id| !short.contains(id)).collect()
}

/// An Intercom backfill in `PARTITIONS` slices with LLM classification; `phases`: with every later phase.
fn pipeline(dir: &Path, phases: bool) -> PathBuf {
    let categories: Vec<String> =
        Theme::ALL.iter().map(|t| format!("{:?}", t.category())).chain(["\"other\"".to_string()]).collect();
    let later = if phases { "auto_create_stories = true\n" } else { "" };
    let mut text = format!(
        r#"name = "dist"
batch_size = 10
phase = "classification"
{later}
[source]
kind = "intercom"
date_from = "2025-12-01"
date_to = "2025-12-31"
per_page = 20
partitions = {PARTITIONS}

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
provider = "llm"
model = "test-model"
concurrency = 2
categories = [{}]
"#,
        categories.join(", ")
    );
    if phases {
        text.push_str(
            r#"
[phases.embedding_generation]
provider = "openai"
model = "test-embedding"
dimensions = 32

[phases.facet_extraction]

[phases.theme_extraction]
themes = 6

[phases.story_creation]
min_size = 5
"#,
        );
    }
    let path = dir.join("dist.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `sluice` with the fakes' URLs and credentials in its environment.
fn sluice_for(intercom: &FakeIntercom, openai: &FakeOpenAi) -> std::process::Command {
    let mut cmd = sluice();
    cmd.env("INTERCOM_BASE_URL", intercom.base_url())
        .env("INTERCOM_ACCESS_TOKEN", intercom.token())
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
        .env("OPENAI_API_KEY", openai.key())
        .env("SLUICE_LOG", "info");
    cmd
}

/// Creates the distributed run; returns its id.
fn submit(intercom: &FakeIntercom, openai: &FakeOpenAi, config: &Path, url: &str) -> i64 {
    let mut cmd = sluice_for(intercom, openai);
    cmd.args(["run", "--distributed", "--json", "-c"]).arg(config).args(["--db", url]);
    let out = run_ok(&mut cmd);
    let answer = json_stdout(&out);
    assert_eq!(answer["distributed"], true, "{answer}");
    answer["run_id"].as_i64().unwrap()
}

/// A worker process, its log in `log`.
fn spawn_worker(intercom: &FakeIntercom, openai: &FakeOpenAi, url: &str, log: &Path, delay_ms: Option<u64>) -> Child {
    let mut cmd = sluice_for(intercom, openai);
    cmd.args(["worker", "--store", url, "--lease-secs", LEASE_SECS, "--slots", "2"]);
    if let Some(ms) = delay_ms {
        cmd.env("SLUICE_TEST_COMMIT_DELAY_MS", ms.to_string());
    }
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(log).unwrap());
    tokio::process::Command::from(cmd).kill_on_drop(true).spawn().expect("worker starts")
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// `TestDb` blocks on a runtime of its own: call it from a thread outside this test's runtime.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().expect("a database call"))
}

fn sc(db: &TestDb, sql: &str) -> Option<i64> {
    off_runtime(|| db.scalar(sql))
}

fn tx(db: &TestDb, sql: &str) -> Option<String> {
    off_runtime(|| db.text(sql))
}

fn status_of(db: &TestDb, run: i64) -> String {
    tx(db, &format!("SELECT status FROM pipeline_runs WHERE id = {run}")).unwrap_or_default()
}

/// Waits for `what` (checked every 50 ms) or fails after `secs`.
async fn wait_for(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends the workers with SIGTERM (they release their leases and leave).
async fn stop_workers(workers: &mut [Child]) {
    for w in workers.iter() {
        if w.id().is_some() {
            signal(w, "-TERM");
        }
    }
    for w in workers.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(20), w.wait()).await.expect("a worker leaves on SIGTERM");
    }
}

/// What every distributed run must leave behind: exactly the quality
/// conversations, each written once, every partition done with its commits
/// numbered 1..n under non-decreasing epochs, and the run's checkpoint the
/// sum of its partitions'.
fn assert_exactly_once(db: &TestDb, run: i64, quality: &BTreeSet<String>) {
    assert_eq!(status_of(db, run), "completed");
    let stored = tx(db, "SELECT string_agg(id, ',' ORDER BY id COLLATE \"C\") FROM documents").unwrap_or_default();
    let mut want: Vec<&str> = quality.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(stored, want.join(","), "stored ids are the quality conversations, none missing, none extra");
    assert_eq!(sc(db, "SELECT count(*) FROM documents WHERE write_count <> 1"), Some(0), "write_count = 1");
    assert_eq!(sc(db, "SELECT count(*) FROM run_partitions WHERE NOT done"), Some(0));
    assert_eq!(
        sc(db,
            "SELECT count(*) FROM run_partitions p
             WHERE p.commit_seq <> (SELECT count(*) FROM partition_commits c WHERE c.run_id = p.run_id AND c.name = p.name)
                OR p.commit_seq <> (SELECT coalesce(max(seq), 0) FROM partition_commits c
                                    WHERE c.run_id = p.run_id AND c.name = p.name)"
        ),
        Some(0),
        "each partition's commit sequence is 1..n without a gap or a repeat"
    );
    assert_eq!(
        sc(
            db,
            "SELECT count(*) FROM partition_commits a JOIN partition_commits b
             ON a.run_id = b.run_id AND a.name = b.name AND b.seq = a.seq + 1 WHERE b.epoch < a.epoch"
        ),
        Some(0),
        "no commit of an older epoch landed after one of a newer epoch"
    );
    assert_eq!(
        off_runtime(|| db.stored_in_checkpoint(run)),
        quality.len() as i64,
        "the run's checkpoint sums its partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_killed_and_frozen_store_each_conversation_once() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let seed = std::env::var("SLUICE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos seeded with SLUICE_TEST_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    // 80 ms per LLM call, 2 at a time per partition: the run takes some seconds on 4 workers.
    let (intercom, openai) = fakes(2_400, 80).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let url = match db {
        TestDb::Postgres { url, .. } => url.clone(),
        TestDb::Sqlite(_) => unreachable!(),
    };
    let run = submit(&intercom, &openai, &config, &url);
    assert_eq!(sc(db, &format!("SELECT count(*) FROM run_partitions WHERE run_id = {run}")), Some(PARTITIONS as i64));

    let log = |i: usize, generation: usize| dir.path().join(format!("worker-{i}-{generation}.log"));
    // Worker 0 waits 300 ms before each commit, so a SIGSTOP almost surely finds it outside a transaction.
    let mut workers: Vec<Child> =
        (0..4).map(|i| spawn_worker(&intercom, &openai, &url, &log(i, 0), (i == 0).then_some(300))).collect();
    let mut generations = [0usize; 4];

    // The zombie: freeze worker 0 while it holds a partition, until another worker took one of them over.
    let zombie_pid = workers[0].id().unwrap();
    let held = format!("SELECT count(*) FROM run_partitions WHERE owner LIKE '%:{zombie_pid}:%' AND NOT done");
    let mut taken_over = false;
    for attempt in 0..5 {
        wait_for(60, "worker 0 to hold a partition", || sc(db, &format!("{held} AND lease_until > now()")) > Some(0))
            .await;
        let before = tx(
            db,
            &format!(
                "SELECT string_agg(name || ':' || epoch, ',') FROM run_partitions
                 WHERE owner LIKE '%:{zombie_pid}:%' AND NOT done AND lease_until > now()"
            ),
        )
        .unwrap_or_default();
        signal(&workers[0], "-STOP");
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline && !taken_over {
            tokio::time::sleep(Duration::from_millis(100)).await;
            taken_over = before.split(',').any(|held| {
                let (name, epoch) = held.rsplit_once(':').unwrap();
                sc(db, &format!(
                    "SELECT count(*) FROM run_partitions WHERE run_id = {run} AND name = '{name}' AND epoch > {epoch}"
                )) == Some(1)
            });
        }
        signal(&workers[0], "-CONT");
        if taken_over {
            eprintln!("attempt {attempt}: partitions {before} of the frozen worker were taken over");
            break;
        }
        eprintln!("attempt {attempt}: the frozen worker held a row lock (frozen inside a commit); again");
    }
    assert!(taken_over, "another worker took over a partition of the frozen worker");
    let refused = format!("SELECT refused_commits FROM workers WHERE pid = {zombie_pid}");
    wait_for(30, "the thawed worker's late commit to be refused", || sc(db, &refused) >= Some(1)).await;

    // SIGKILL the others at random (restarting them) until the run completes.
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while status_of(db, run) != "completed" {
        assert!(Instant::now() < deadline, "the run did not complete; worker logs in {}", dir.path().display());
        tokio::time::sleep(Duration::from_millis(rng.u64(600..1_500))).await;
        if kills < 6 && status_of(db, run) == "running" {
            let i = rng.usize(1..4);
            workers[i].start_kill().unwrap();
            workers[i].wait().await.unwrap();
            generations[i] += 1;
            workers[i] = spawn_worker(&intercom, &openai, &url, &log(i, generations[i]), None);
            kills += 1;
        }
    }
    stop_workers(&mut workers).await;
    eprintln!("{kills} workers killed");

    let zombie_log = std::fs::read_to_string(log(0, 0)).unwrap();
    assert!(zombie_log.contains("commit refused, lease lost"), "the refusal is in the thawed worker's log");
    assert!(zombie_log.contains("paid results of the refused batch kept as memos"), "the refused batch's LLM results");
    assert_exactly_once(db, run, &quality);
    let refused_total = sc(db, "SELECT sum(refused_commits)::bigint FROM workers").unwrap_or(0);
    assert!(refused_total >= 1);
    // Paid calls beyond one per conversation come only from batches that never committed: those in flight
    // in a killed worker, or refused. Each partition engine holds at most 16 batches of 10 (see
    // Pipeline::max_batches_in_flight: 1 + (1+2) + (1+2) + 4 + 5), a worker 2 of them.
    let paid = openai.counters().chat_completions;
    let bound = quality.len() as u64 + (kills + refused_total as u64) * 2 * 16 * 10;
    eprintln!("{paid} LLM calls for {} conversations, {refused_total} refused commits", quality.len());
    assert!(paid >= quality.len() as u64 && paid <= bound, "{paid} LLM calls for {} conversations", quality.len());
    off_runtime(|| owned.cleanup());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_run_stops_resumes_and_runs_its_later_phases_as_one_task() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(600, 40).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), true);
    let url = match db {
        TestDb::Postgres { url, .. } => url.clone(),
        TestDb::Sqlite(_) => unreachable!(),
    };
    let run = submit(&intercom, &openai, &config, &url);
    // The later phases are one more partition, claimable once the source's are done.
    assert_eq!(sc(db, "SELECT count(*) FROM run_partitions WHERE later"), Some(1));
    let mut workers: Vec<Child> =
        (0..2).map(|i| spawn_worker(&intercom, &openai, &url, &dir.path().join(format!("w{i}.log")), None)).collect();
    wait_for(60, "a first commit", || sc(db, "SELECT count(*) FROM partition_commits") > Some(0)).await;

    let mut stop = sluice();
    stop.args(["stop", "--db", &url, "--run-id", &run.to_string()]);
    let out = run_ok(&mut stop);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("run {run} is stopped")), "{}", stderr(&out));
    assert_eq!(sc(db, "SELECT count(*) FROM run_partitions WHERE lease_until > now() AND NOT done"), Some(0));
    let commits = sc(db, "SELECT count(*) FROM partition_commits");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sc(db, "SELECT count(*) FROM partition_commits"), commits, "nothing commits while stopped");

    let mut status = sluice();
    status.args(["status", &run.to_string(), "--db", &url]);
    let shown = String::from_utf8_lossy(&run_ok(&mut status).stdout).into_owned();
    assert!(
        shown.contains("status:   stopped") && shown.contains("partitions:") && shown.contains("2 alive"),
        "{shown}"
    );

    let mut resume = sluice_for(&intercom, &openai);
    resume.args(["run", "--distributed", "--resume-run-id", &run.to_string(), "--db", &url]);
    run_ok(&mut resume);
    wait_for(120, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;

    assert_exactly_once(db, run, &quality);
    let missing = |sql: &str| sc(db, &format!("SELECT count(*) FROM documents WHERE {sql} IS NULL"));
    assert_eq!(missing("embedding"), Some(0), "embedding_generation");
    assert_eq!(missing("annotations->'facets'->>'sentiment'"), Some(0), "facet_extraction");
    assert_eq!(missing("annotations->'theme'->>'id'"), Some(0), "theme_extraction");
    let themes = sc(db, &format!("SELECT count(*) FROM run_results WHERE run_id = {run} AND kind = 'theme'"));
    assert!(themes.is_some_and(|n| (2..=6).contains(&n)), "{themes:?} themes");
    let big = sc(
        db,
        &format!(
            "SELECT count(*) FROM run_results WHERE run_id = {run} AND kind = 'theme' AND (value->>'size')::int >= 5"
        ),
    );
    let stories = sc(db, &format!("SELECT count(*) FROM run_results WHERE run_id = {run} AND kind = 'story'"));
    assert_eq!(stories, big, "one story per theme of at least 5");

    let mut status = sluice();
    status.args(["status", &run.to_string(), "--db", &url, "--json"]);
    let doc = json_stdout(&run_ok(&mut status));
    assert_eq!(doc["distributed"], true);
    assert_eq!(doc["partitions"].as_array().unwrap().len(), PARTITIONS + 1);
    assert!(doc["partitions"].as_array().unwrap().iter().all(|p| p["done"] == true), "{doc}");
    assert_eq!(doc["current_phase"], "story_creation");
    off_runtime(|| owned.cleanup());
}

/// A TCP proxy to PostgreSQL that can be cut: while cut it stops
/// forwarding in both directions without closing anything (a network
/// partition, not a reset), and forwards what it held once healed.
struct CutProxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutProxy {
    async fn start(upstream: std::net::SocketAddr) -> CutProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in
                    [(cr, sw), (sr, cw)].map(|(r, w)| (Box::new(r) as Box<dyn tokio::io::AsyncRead + Send + Unpin>, w))
                {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while flag.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown().await;
                    });
                }
            }
        });
        CutProxy { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_by_a_proxy_loses_its_partitions_and_writes_nothing_twice() {
    let Some(owned) = off_runtime(TestDb::postgres) else { return };
    let db = &owned;
    let (intercom, openai) = fakes(1_200, 60).await;
    let quality = quality_ids(&intercom);
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path(), false);
    let url = match db {
        TestDb::Postgres { url, .. } => url.clone(),
        TestDb::Sqlite(_) => unreachable!(),
    };
    let run = submit(&intercom, &openai, &config, &url);
    // The cut worker reaches PostgreSQL through the proxy; the other one directly.
    let (userinfo, rest) = url.split_once('@').expect("a postgres://user@host:port/db URL");
    let (hostport, database) = rest.split_once('/').unwrap();
    let upstream = tokio::net::lookup_host(hostport).await.unwrap().next().unwrap();
    let proxy = CutProxy::start(upstream).await;
    let via_proxy = format!("{userinfo}@127.0.0.1:{}/{database}", proxy.port);
    let cut_log = dir.path().join("cut.log");
    let mut workers = vec![
        spawn_worker(&intercom, &openai, &via_proxy, &cut_log, Some(300)),
        spawn_worker(&intercom, &openai, &url, &dir.path().join("direct.log"), None),
    ];
    let cut_pid = workers[0].id().unwrap();
    let held = format!(
        "SELECT string_agg(name || '|' || epoch, ',') FROM run_partitions
         WHERE owner LIKE '%:{cut_pid}:%' AND NOT done AND lease_until > now()"
    );
    wait_for(60, "the cut worker to hold a partition", || tx(db, &held).is_some()).await;
    let before = tx(db, &held).unwrap();
    proxy.set_cut(true);
    let taken_over = || {
        before.split(',').any(|p| {
            let (name, epoch) = p.rsplit_once('|').unwrap();
            sc(
                db,
                &format!(
                    "SELECT count(*) FROM run_partitions WHERE run_id = {run} AND name = '{name}' AND epoch > {epoch}"
                ),
            ) == Some(1)
        })
    };
    wait_for(30, "the direct worker to take a partition of the cut one over", taken_over).await;
    proxy.set_cut(false);
    wait_for(120, "the run to complete", || status_of(db, run) == "completed").await;
    stop_workers(&mut workers).await;
    assert_exactly_once(db, run, &quality);
    let log = std::fs::read_to_string(&cut_log).unwrap();
    eprintln!(
        "cut worker: refused commits {:?}, lease lost in log: {}",
        sc(db, &format!("SELECT refused_commits FROM workers WHERE pid = {cut_pid}")),
        log.contains("lease lost")
    );
    assert!(log.contains("lease lost"), "the healed worker found its lease gone");
    off_runtime(|| owned.cleanup());
}

#[test]
fn sqlite_refuses_to_distribute() {
    let dir = tempfile::tempdir().unwrap();
    let config = generate_pipeline(dir.path(), 100, 10, 0);
    let out = sluice()
        .args(["run", "--distributed", "-c"])
        .arg(&config)
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("distributed runs need the PostgreSQL store"), "{}", stderr(&out));
    let out = sluice().args(["worker", "--store", "sqlite:x.db"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("distributed runs need the PostgreSQL store"), "{}", stderr(&out));
}
