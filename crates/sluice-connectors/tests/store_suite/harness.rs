//! One store suite, two backends: a [`Harness`] is a fresh database of one
//! backend (a SQLite file in a temporary directory, or a new database on the
//! PostgreSQL server of `SLUICE_TEST_POSTGRES_URL`), with the raw SQL the
//! behaviours need to look behind the store's back.

use std::sync::Arc;

use sluice_connectors::store::postgres::{create_scratch_database, drop_database};
use sluice_connectors::store::{InspectStore, PostgresStore, SqliteStore};
use sqlx::{Connection, Row};

pub use sluice_testkit::setting::postgres_url;

pub enum Harness {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin: String, name: String, url: String },
}

impl Harness {
    pub fn sqlite() -> Harness {
        Harness::Sqlite { dir: tempfile::tempdir().expect("temporary directory") }
    }

    /// A fresh database on the test server, or `None` when there is none (see [`postgres_url`]).
    pub async fn postgres() -> Option<Harness> {
        let admin = postgres_url()?;
        let (name, url) = create_scratch_database(&admin, "sluice_test", None).await.expect("create a test database");
        Some(Harness::Postgres { admin, name, url })
    }

    /// A fresh database owned by `owner` (a role that must exist).
    pub async fn postgres_owned_by(owner: &str) -> Option<Harness> {
        let admin = postgres_url()?;
        let (name, _) =
            create_scratch_database(&admin, "sluice_test", Some(owner)).await.expect("create a test database");
        let url = sluice_connectors::store::postgres::url_with_database(&with_user(&admin, owner), &name);
        Some(Harness::Postgres { admin, name, url })
    }

    /// Drops the PostgreSQL database (best effort).
    pub async fn finish(self) {
        if let Harness::Postgres { admin, name, .. } = self
            && let Err(e) = drop_database(&admin, &name).await
        {
            eprintln!("warning: {e}");
        }
    }

    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            Harness::Postgres { url, .. } => Some(url),
            Harness::Sqlite { .. } => None,
        }
    }

    /// A new store instance on the harness's database (as another process would open it).
    pub async fn open(&self) -> Arc<dyn InspectStore> {
        match self {
            Harness::Sqlite { dir } => Arc::new(SqliteStore::open(&dir.path().join("sluice.db")).expect("open store")),
            Harness::Postgres { url, .. } => Arc::new(PostgresStore::open(url).await.expect("open store")),
        }
    }

    /// What the store's error messages name it by (its path, or its URL).
    pub fn name_in_errors(&self) -> String {
        match self {
            Harness::Sqlite { dir } => dir.path().join("sluice.db").display().to_string(),
            Harness::Postgres { url, .. } => url.clone(),
        }
    }

    /// Runs statements on a connection of its own.
    pub async fn try_exec(&self, sql: &str) -> Result<(), String> {
        match self {
            Harness::Sqlite { dir } => {
                let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).map_err(|e| e.to_string())?;
                conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| e.to_string())?;
                conn.execute_batch(sql).map_err(|e| e.to_string())
            }
            Harness::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
                let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut conn).await;
                let _ = conn.close().await;
                result.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }

    pub async fn exec(&self, sql: &str) {
        if let Err(e) = self.try_exec(sql).await {
            panic!("{sql}: {e}");
        }
    }

    /// The rows of a query, every value as text (NULL as `None`). JSON
    /// columns come back as their JSON text on both backends.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Harness::Sqlite { dir } => {
                let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).expect("raw connection");
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
            Harness::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("raw connection");
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let _ = conn.close().await;
                rows.iter().map(|row| (0..row.len()).map(|i| pg_text(row, i)).collect()).collect()
            }
        }
    }

    /// Creates a trigger that makes inserting the document with id `poison` fail.
    pub async fn poison(&self) {
        match self {
            Harness::Sqlite { .. } => {
                self.exec(
                    "CREATE TRIGGER poison BEFORE INSERT ON documents WHEN NEW.id = 'poison'
                     BEGIN SELECT RAISE(ABORT, 'poisoned document'); END;",
                )
                .await
            }
            Harness::Postgres { .. } => {
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
        }
    }

    /// Sets a run's status to a value the schema refuses, bypassing the CHECK constraint.
    pub async fn force_status(&self, run: i64, status: &str) {
        let set = format!("UPDATE pipeline_runs SET status = '{status}' WHERE id = {run}");
        assert!(self.try_exec(&set).await.is_err(), "the CHECK constraint on status refuses {status:?}");
        match self {
            Harness::Sqlite { .. } => self.exec(&format!("PRAGMA ignore_check_constraints = ON; {set}")).await,
            Harness::Postgres { .. } => {
                self.exec(&format!("ALTER TABLE pipeline_runs DROP CONSTRAINT pipeline_runs_status_check; {set}")).await
            }
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
