//! One store suite, every backend: a [`StoreHarness`] is a fresh database of
//! one backend ([`SqliteHarness`]: a SQLite file in a temporary directory;
//! [`PostgresHarness`]: a new database on the PostgreSQL server of
//! `SLUICE_TEST_POSTGRES_URL`), with the raw SQL the behaviours need to look
//! behind the store's back. A new backend is one more `impl StoreHarness`
//! and one line in `suite!` (`main.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use sluice_connectors::store::postgres::{create_scratch_database, drop_database, url_with_database};
use sluice_connectors::store::{InspectStore, PostgresStore, SqliteStore};
use sqlx::{Connection, Row};

pub use sluice_testkit::setting::postgres_url;

/// A fresh database of one backend, for one test.
#[async_trait]
pub trait StoreHarness: Send + Sync {
    /// A new, empty database; `None` when the backend is not available here.
    async fn fresh() -> Option<Self>
    where
        Self: Sized;

    /// A new store instance on the harness's database (as another process would open it).
    async fn open(&self) -> Arc<dyn InspectStore>;

    /// What the store's error messages name it by (its path, or its URL).
    fn name_in_errors(&self) -> String;

    /// Runs statements on a connection of its own.
    async fn try_exec(&self, sql: &str) -> Result<(), String>;

    /// The rows of a query, every value as text (NULL as `None`). JSON
    /// columns come back as their JSON text on every backend.
    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>>;

    /// Creates a trigger that makes inserting the document with id `poison` fail.
    async fn poison(&self);

    /// Sets a run's status to a value the schema refuses, bypassing the CHECK constraint.
    async fn force_status(&self, run: i64, status: &str);

    /// Releases the database (best effort).
    async fn finish(self)
    where
        Self: Sized;

    async fn exec(&self, sql: &str) {
        if let Err(e) = self.try_exec(sql).await {
            panic!("{sql}: {e}");
        }
    }
}

/// The SQLite file `sluice.db` in a temporary directory.
pub struct SqliteHarness {
    dir: tempfile::TempDir,
}

impl SqliteHarness {
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("sluice.db")
    }
}

#[async_trait]
impl StoreHarness for SqliteHarness {
    async fn fresh() -> Option<Self> {
        Some(SqliteHarness { dir: tempfile::tempdir().expect("temporary directory") })
    }

    async fn open(&self) -> Arc<dyn InspectStore> {
        Arc::new(SqliteStore::open(&self.path()).expect("open store"))
    }

    fn name_in_errors(&self) -> String {
        self.path().display().to_string()
    }

    async fn try_exec(&self, sql: &str) -> Result<(), String> {
        let conn = rusqlite::Connection::open(self.path()).map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| e.to_string())?;
        conn.execute_batch(sql).map_err(|e| e.to_string())
    }

    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let conn = rusqlite::Connection::open(self.path()).expect("raw connection");
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let n = stmt.column_count();
        stmt.query_map([], |row| {
            (0..n)
                .map(|i| {
                    Ok(match row.get::<_, rusqlite::types::Value>(i)? {
                        rusqlite::types::Value::Null => None,
                        rusqlite::types::Value::Integer(v) => Some(v.to_string()),
                        rusqlite::types::Value::Real(v) => Some(v.to_string()),
                        rusqlite::types::Value::Text(v) => Some(v),
                        rusqlite::types::Value::Blob(v) => Some(format!("{v:?}")),
                    })
                })
                .collect()
        })
        .and_then(|rows| rows.collect())
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    async fn poison(&self) {
        self.exec(
            "CREATE TRIGGER poison BEFORE INSERT ON documents WHEN NEW.id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned document'); END;",
        )
        .await
    }

    async fn force_status(&self, run: i64, status: &str) {
        let set = format!("UPDATE pipeline_runs SET status = '{status}' WHERE id = {run}");
        assert!(self.try_exec(&set).await.is_err(), "the CHECK constraint on status refuses {status:?}");
        self.exec(&format!("PRAGMA ignore_check_constraints = ON; {set}")).await
    }

    async fn finish(self) {}
}

/// A database of its own on the test server, dropped at the end.
pub struct PostgresHarness {
    admin: String,
    name: String,
    url: String,
}

impl PostgresHarness {
    /// A fresh database owned by `owner` (a role that must exist).
    pub async fn owned_by(owner: &str) -> Option<PostgresHarness> {
        let admin = postgres_url()?;
        let (name, _) =
            create_scratch_database(&admin, "sluice_test", Some(owner)).await.expect("create a test database");
        let url = url_with_database(&with_user(&admin, owner), &name);
        Some(PostgresHarness { admin, name, url })
    }

    /// The URL of the harness's database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

#[async_trait]
impl StoreHarness for PostgresHarness {
    /// A fresh database on the test server, or `None` when there is none (see [`postgres_url`]).
    async fn fresh() -> Option<Self> {
        let admin = postgres_url()?;
        let (name, url) = create_scratch_database(&admin, "sluice_test", None).await.expect("create a test database");
        Some(PostgresHarness { admin, name, url })
    }

    async fn open(&self) -> Arc<dyn InspectStore> {
        Arc::new(PostgresStore::open(&self.url).await.expect("open store"))
    }

    fn name_in_errors(&self) -> String {
        self.url.clone()
    }

    async fn try_exec(&self, sql: &str) -> Result<(), String> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.map_err(|e| e.to_string())?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut conn).await;
        let _ = conn.close().await;
        result.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("raw connection");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        rows.iter().map(|row| (0..row.len()).map(|i| pg_text(row, i)).collect()).collect()
    }

    async fn poison(&self) {
        self.exec(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.id = 'poison' THEN RAISE EXCEPTION 'poisoned document'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER poison BEFORE INSERT ON documents FOR EACH ROW EXECUTE FUNCTION poison();",
        )
        .await
    }

    async fn force_status(&self, run: i64, status: &str) {
        let set = format!("UPDATE pipeline_runs SET status = '{status}' WHERE id = {run}");
        assert!(self.try_exec(&set).await.is_err(), "the CHECK constraint on status refuses {status:?}");
        self.exec(&format!("ALTER TABLE pipeline_runs DROP CONSTRAINT pipeline_runs_status_check; {set}")).await
    }

    async fn finish(self) {
        if let Err(e) = drop_database(&self.admin, &self.name).await {
            eprintln!("warning: {e}");
        }
    }
}

fn pg_text(row: &sqlx::postgres::PgRow, i: usize) -> Option<String> {
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v;
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map(|v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<i32>, _>(i) {
        return v.map(|v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return v.map(|v| if v { "1".into() } else { "0".into() });
    }
    if let Ok(v) = row.try_get::<Option<serde_json::Value>, _>(i) {
        return v.map(|v| v.to_string());
    }
    if let Ok(v) = row.try_get::<Option<Vec<f32>>, _>(i) {
        return v.map(|v| format!("{v:?}"));
    }
    panic!("column {i} has a type this harness does not read")
}

/// `url` with its user replaced by `user` (and no password).
pub fn with_user(url: &str, user: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let host = match rest.rfind('@') {
        Some(at) if rest[..at].find('/').is_none() => &rest[at + 1..],
        _ => rest,
    };
    format!("{}{user}@{host}", &url[..scheme_end])
}
