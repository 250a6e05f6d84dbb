//! Helpers for tests that run the real `sluice` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Tests set the store explicitly; a developer's environment must not leak in.
    for key in [
        "DATABASE_URL",
        "PIPELINE_MODE",
        "PIPELINE_STREAMING_BATCH",
        "PIPELINE_STREAMING_BATCH_SIZE",
        "EMBEDDING_BATCH_SIZE",
        "SLUICE_LOG",
        "RUST_LOG",
    ] {
        cmd.env_remove(key);
    }
    cmd.current_dir(repo_root());
    cmd
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("sluice runs");
    assert!(
        out.status.success(),
        "sluice failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json_stdout(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

pub fn db(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

pub fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Reads an events log, skipping a torn last line.
pub fn events(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

pub fn count_type(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["type"] == kind).count()
}

/// Appends `text` to the file at `path`.
pub fn append(path: &Path, text: &str) {
    let mut content = std::fs::read_to_string(path).unwrap();
    content.push_str(text);
    std::fs::write(path, content).unwrap();
}

/// Every later phase, with offline defaults, to append to a pipeline file.
pub const ALL_PHASES: &str = "
[phases.embedding_generation]
dimensions = 32

[phases.facet_extraction]

[phases.theme_extraction]
themes = 6
";

/// Every later phase, embeddings by the (fake) OpenAI API, `themes` themes
/// and stories of at least 5, to append to an Intercom pipeline file.
pub fn openai_phases(themes: usize) -> String {
    format!(
        r#"
[phases.embedding_generation]
provider = "openai"
model = "test-embedding"
dimensions = 32

[phases.facet_extraction]

[phases.theme_extraction]
themes = {themes}

[phases.story_creation]
min_size = 5
"#
    )
}

/// A pipeline over `generate` with a little latency per page, so a run takes a while.
pub fn generate_pipeline(dir: &Path, count: u64, page_size: u64, latency_ms: u64) -> PathBuf {
    let path = dir.join("gen.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "gen"
batch_size = 50

[source]
kind = "generate"
count = {count}
page_size = {page_size}
latency_ms = {latency_ms}
seed = 7

[[stages]]
kind = "normalize"

[[stages]]
kind = "classify"
rules = [{{ category = "billing", keywords = ["refund", "invoice"] }}, {{ category = "bug", keywords = ["crash", "error"] }}]

[[stages]]
kind = "embed"
dimensions = 32
"#
        ),
    )
    .unwrap();
    path
}

/// The database a test's `sluice` runs use: a SQLite file, or a fresh
/// database on the PostgreSQL server of `SLUICE_TEST_POSTGRES_URL`. The
/// assertions read it with SQL both backends understand.
pub enum TestDb {
    Sqlite(PathBuf),
    Postgres { admin: String, name: String, url: String },
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

pub use sluice_testkit::setting::postgres_url;

impl TestDb {
    pub fn sqlite(dir: &Path) -> TestDb {
        TestDb::Sqlite(dir.join("crash.db"))
    }

    /// A fresh database on the test server (see [`postgres_url`]).
    pub fn postgres() -> Option<TestDb> {
        let admin = postgres_url()?;
        let (name, url) =
            block_on(sluice_connectors::store::postgres::create_scratch_database(&admin, "sluice_e2e", None))
                .expect("create a test database");
        Some(TestDb::Postgres { admin, name, url })
    }

    pub fn label(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    /// The connection URL of a PostgreSQL test database (`None` for SQLite).
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            TestDb::Sqlite(_) => None,
            TestDb::Postgres { url, .. } => Some(url),
        }
    }

    /// What `sluice --db` takes.
    pub fn arg(&self) -> std::ffi::OsString {
        match self {
            TestDb::Sqlite(path) => path.clone().into_os_string(),
            TestDb::Postgres { url, .. } => url.into(),
        }
    }

    /// The first column of the first row as an integer (`None` for NULL or no row).
    pub fn scalar(&self, sql: &str) -> Option<i64> {
        match self {
            TestDb::Sqlite(path) => {
                use rusqlite::OptionalExtension;
                db(path).query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).optional().unwrap().flatten()
            }
            TestDb::Postgres { url, .. } => block_on(async {
                use sqlx::{Connection, Row};
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_optional(&mut conn).await.unwrap();
                let _ = conn.close().await;
                row.and_then(|r| r.try_get::<Option<i64>, _>(0).unwrap_or_else(|e| panic!("{sql}: {e}")))
            }),
        }
    }

    /// The first column of the first row as text.
    pub fn text(&self, sql: &str) -> Option<String> {
        match self {
            TestDb::Sqlite(path) => {
                use rusqlite::OptionalExtension;
                db(path).query_row(sql, [], |r| r.get::<_, Option<String>>(0)).optional().unwrap().flatten()
            }
            TestDb::Postgres { url, .. } => block_on(async {
                use sqlx::{Connection, Row};
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let row = sqlx::query(sqlx::AssertSqlSafe(sql.to_string())).fetch_optional(&mut conn).await.unwrap();
                let _ = conn.close().await;
                row.and_then(|r| r.try_get::<Option<String>, _>(0).unwrap_or_else(|e| panic!("{sql}: {e}")))
            }),
        }
    }

    /// After a `sluice` process was killed: waits until the server has
    /// finished what that process had sent (a COMMIT already on the wire
    /// still lands) and closed its sessions, so reads see the final state.
    pub fn settle(&self) {
        if let TestDb::Postgres { .. } = self {
            let deadline = Instant::now() + Duration::from_secs(20);
            let sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'sluice'";
            while self.scalar(sql).unwrap_or(0) > 0 {
                assert!(Instant::now() < deadline, "the killed process's sessions did not end");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Whether sluice has created its tables yet.
    pub fn has_runs(&self) -> bool {
        let sql = match self {
            TestDb::Sqlite(path) if !path.exists() => return false,
            TestDb::Sqlite(_) => "SELECT count(*) FROM sqlite_master WHERE name = 'pipeline_runs'",
            TestDb::Postgres { .. } => "SELECT count(*) FROM pg_tables WHERE tablename = 'pipeline_runs'",
        };
        self.scalar(sql).unwrap_or(0) > 0
    }

    /// `counts.stored` of run `run`'s checkpoint (0 before its first commit).
    pub fn stored_in_checkpoint(&self, run: i64) -> i64 {
        let sql = match self {
            TestDb::Sqlite(_) => {
                format!("SELECT json_extract(checkpoint, '$.counts.stored') FROM pipeline_runs WHERE id = {run}")
            }
            TestDb::Postgres { .. } => {
                format!("SELECT (checkpoint->'counts'->>'stored')::bigint FROM pipeline_runs WHERE id = {run}")
            }
        };
        self.scalar(&sql).unwrap_or(0)
    }

    /// Drops a PostgreSQL test database (best effort); a SQLite file goes with its directory.
    pub fn cleanup(self) {
        if let TestDb::Postgres { admin, name, .. } = self
            && let Err(e) = block_on(sluice_connectors::store::postgres::drop_database(&admin, &name))
        {
            eprintln!("warning: {e}");
        }
    }
}

/// `sluice` with the fake Intercom's and the fake OpenAI's URLs and credentials in its environment.
pub fn sluice_for(intercom: &sluice_testkit::FakeIntercom, openai: &sluice_testkit::FakeOpenAi) -> Command {
    let mut cmd = sluice();
    cmd.env("INTERCOM_BASE_URL", intercom.base_url())
        .env("INTERCOM_ACCESS_TOKEN", intercom.token())
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.base_url()))
        .env("OPENAI_API_KEY", openai.key())
        .env("SLUICE_LOG", "info");
    cmd
}

/// Runs `cmd` to its end off the async runtime's threads (three minutes at most), killing it if the test ends first.
pub async fn output(cmd: Command) -> Output {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(180), cmd.output()).await.expect("sluice finishes in time").unwrap()
}
