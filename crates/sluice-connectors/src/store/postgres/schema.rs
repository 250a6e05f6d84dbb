//! Schema set-up: the numbered migrations, applied once each under an
//! advisory lock, and the embedding columns: pgvector `vector` when the
//! server has the extension (fixed to `vector(N)` with an HNSW index by the
//! first commit that carries embeddings), `real[]` otherwise.

use std::sync::{Mutex, PoisonError};

use sluice_core::StoreError;
use sqlx::postgres::PgConnection;

use super::errors::{error_text, is_transient};
use super::pool::Db;
use crate::store::memo_vectors::split_vectors;

/// The numbered migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../../migrations/postgres/0002_stage_results.sql")),
    (3, include_str!("../../../migrations/postgres/0003_phases.sql")),
    (4, include_str!("../../../migrations/postgres/0004_memo_vectors.sql")),
    (5, include_str!("../../../migrations/postgres/0005_distributed.sql")),
    (6, include_str!("../../../migrations/postgres/0006_pipeline_fingerprint.sql")),
    (8, include_str!("../../../migrations/postgres/0008_deleted_documents.sql")),
    (9, include_str!("../../../migrations/postgres/0009_rate_buckets.sql")),
    (10, include_str!("../../../migrations/postgres/0010_phase_partitions.sql")),
];

/// The migration whose code part moves memo vectors out of the JSON.
const MEMO_VECTORS: i64 = 4;

/// First key of the transaction-level advisory lock serializing schema changes ("slum").
const SCHEMA_LOCK_CLASS: i32 = 0x736c_756d;
/// Takes the schema lock for the rest of the transaction.
const SCHEMA_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext(coalesce(current_schema(), '')))";

/// How embeddings are stored, decided at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingStorage {
    /// pgvector `vector` columns (fixed to `vector(N)` with an HNSW index once N is known).
    Vector,
    /// Plain `real[]` columns (the `vector` extension is not available).
    RealArray,
}

impl EmbeddingStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingStorage::Vector => "vector",
            EmbeddingStorage::RealArray => "real[]",
        }
    }
}

/// What opening found out.
pub(super) struct Setup {
    pub(super) storage: EmbeddingStorage,
    /// Per table (documents, chunks), the state of its vector column's dimension.
    dims: Mutex<[Dimension; 2]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dimension {
    /// `vector` without a dimension: no HNSW index yet.
    Open,
    /// `vector(N)` with its HNSW index.
    Fixed(i32),
    /// Fixing it failed (rows of several dimensions already there): left unindexed.
    Unfixable,
}

const VECTOR_TABLES: [&str; 2] = ["documents", "chunks"];

/// Applies the migrations and settles the embedding columns, in one
/// transaction under an advisory lock.
pub(super) async fn set_up(db: &Db) -> Result<Setup, StoreError> {
    let what = "setting up the schema";
    let mut tx = db.pool().begin().await.map_err(db.sql(what))?;
    sqlx::query(SCHEMA_LOCK_SQL).bind(SCHEMA_LOCK_CLASS).execute(&mut *tx).await.map_err(db.sql(what))?;
    // No "already exists, skipping" notices in the logs at every open.
    sqlx::raw_sql("SET LOCAL client_min_messages = warning").execute(&mut *tx).await.map_err(db.sql(what))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(db.sql(what))?;
    let current: i64 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .map_err(db.sql(what))?;
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(db.schema(format!(
            "the database is at schema version {current}, newer than this sluice knows ({known}); use a newer sluice"
        )));
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations").fetch_all(&mut *tx).await.map_err(db.sql(what))?;
    // Every migration not recorded yet, not only those past the highest: a
    // store may have a later one from a build that had it before an earlier one.
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(db.sql(format!("applying migration {version:04}")))?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(db.sql(what))?;
        if *version == MEMO_VECTORS {
            move_memo_vectors(&mut tx).await.map_err(db.sql("applying migration 0004 (moving memo vectors)"))?;
        }
        tracing::debug!(version, "applied PostgreSQL migration");
    }

    // pgvector, when the server has it and we may create it.
    sqlx::raw_sql("SAVEPOINT vector_extension").execute(&mut *tx).await.map_err(db.sql(what))?;
    let extension = sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS vector").execute(&mut *tx).await;
    let unavailable_because = match extension {
        Ok(_) => None,
        Err(e) if is_transient(&e) => return Err(db.sql(what)(e)),
        Err(e) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT vector_extension").execute(&mut *tx).await.map_err(db.sql(what))?;
            Some(e.to_string())
        }
    };
    let unavailable_because = match unavailable_because {
        Some(reason) => Some(reason),
        None => vector_columns(db, &mut tx).await?,
    };
    let mut dims = [Dimension::Open; 2];
    let mut storage = EmbeddingStorage::RealArray;
    for (i, table) in VECTOR_TABLES.iter().enumerate() {
        let (kind, typmod) = column_type_mod(&mut tx, table).await.map_err(db.sql(what))?;
        if kind.starts_with("vector") {
            storage = EmbeddingStorage::Vector;
            dims[i] = if typmod > 0 { Dimension::Fixed(typmod) } else { Dimension::Open };
        }
    }
    tx.commit().await.map_err(db.sql(what))?;

    match (storage, unavailable_because) {
        (EmbeddingStorage::Vector, _) => tracing::info!(
            store = %db.describe,
            "PostgreSQL store: embeddings in pgvector vector columns (HNSW index once their dimension is known)"
        ),
        (EmbeddingStorage::RealArray, reason) => tracing::info!(
            store = %db.describe,
            reason = reason.as_deref().unwrap_or("unknown"),
            "PostgreSQL store: embeddings in real[] columns (the vector extension is not available)"
        ),
    }
    Ok(Setup { storage, dims: Mutex::new(dims) })
}

/// Turns `real[]` embedding columns (from before the extension was
/// there) into `vector` columns, keeping their values; both or neither.
/// Answers why not when existing values cannot be vectors (empty ones).
async fn vector_columns(db: &Db, tx: &mut PgConnection) -> Result<Option<String>, StoreError> {
    let what = "turning the embedding columns into vector columns";
    sqlx::raw_sql("SAVEPOINT vector_columns").execute(&mut *tx).await.map_err(db.sql(what))?;
    for table in VECTOR_TABLES {
        let kind = column_type(tx, table).await.map_err(db.sql(what))?;
        if kind != "real[]" {
            continue;
        }
        let altered = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {table} ALTER COLUMN embedding TYPE vector USING embedding::vector"
        )))
        .execute(&mut *tx)
        .await;
        match altered {
            Ok(_) => {}
            Err(e) if is_transient(&e) => return Err(db.sql(what)(e)),
            Err(e) => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT vector_columns").execute(&mut *tx).await.map_err(db.sql(what))?;
                let reason = format!("the stored embeddings of {table} cannot become vectors: {}", error_text(&e));
                tracing::warn!(store = %db.describe, "{reason}; keeping real[] columns");
                return Ok(Some(reason));
            }
        }
    }
    Ok(None)
}

/// In vector mode, fixes the dimension of a table's embedding column and
/// indexes it, the first time a commit carries embeddings for it. Runs
/// before (not in) the commit's transaction; a failure other than a lost
/// connection leaves the column unindexed with a warning.
pub(super) async fn fix_dimensions(db: &Db, setup: &Setup, wanted: [Option<usize>; 2]) -> Result<(), StoreError> {
    if setup.storage != EmbeddingStorage::Vector {
        return Ok(());
    }
    for (i, table) in VECTOR_TABLES.iter().enumerate() {
        let Some(dim) = wanted[i] else { continue };
        let state = setup.dims.lock().unwrap_or_else(PoisonError::into_inner)[i];
        if state != Dimension::Open || dim == 0 {
            continue;
        }
        let Ok(dim) = i32::try_from(dim) else { continue };
        let result = fix_dimension(db, table, dim).await;
        let next = match result {
            Ok(found) => found,
            Err(e) if is_transient(&e) => return Err(db.sql(format!("indexing {table}.embedding"))(e)),
            Err(e) => {
                tracing::warn!(
                    store = %db.describe,
                    "cannot give {table}.embedding the dimension {dim} and an HNSW index ({e}); \
                     embeddings are stored without an index"
                );
                Dimension::Unfixable
            }
        };
        setup.dims.lock().unwrap_or_else(PoisonError::into_inner)[i] = next;
    }
    Ok(())
}

async fn fix_dimension(db: &Db, table: &str, dim: i32) -> Result<Dimension, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    sqlx::query(SCHEMA_LOCK_SQL).bind(SCHEMA_LOCK_CLASS).execute(&mut *tx).await?;
    let (_, typmod) = column_type_mod(&mut tx, table).await?;
    if typmod > 0 {
        // Another process fixed it meanwhile.
        tx.commit().await?;
        return Ok(Dimension::Fixed(typmod));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({dim});
         CREATE INDEX IF NOT EXISTS {table}_embedding_hnsw ON {table} USING hnsw (embedding vector_cosine_ops);"
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(store = %db.describe, "{table}.embedding is vector({dim}) with an HNSW index");
    Ok(Dimension::Fixed(dim))
}

/// The type of `table.embedding` as PostgreSQL names it (`real[]`, `vector`, `vector(384)`).
async fn column_type(tx: &mut PgConnection, table: &str) -> Result<String, sqlx::Error> {
    Ok(column_type_mod(tx, table).await?.0)
}

/// The type name and type modifier (a vector's dimension, -1 if none) of `table.embedding`.
async fn column_type_mod(tx: &mut PgConnection, table: &str) -> Result<(String, i32), sqlx::Error> {
    sqlx::query_as(
        "SELECT format_type(atttypid, atttypmod), atttypmod FROM pg_attribute
         WHERE attrelid = to_regclass($1) AND attname = 'embedding' AND NOT attisdropped",
    )
    .bind(table)
    .fetch_one(tx)
    .await
}

/// The code part of migration 0004: the vectors of rows written before it
/// move from their JSON to the `vectors` bytea, as little-endian f32s.
async fn move_memo_vectors(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, String, String, serde_json::Value)> = sqlx::query_as(
        "SELECT source, id, stage, value FROM stage_results
         WHERE vectors IS NULL AND value::text LIKE '%\"embedding\": [%'",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut moved = 0usize;
    for (source, id, stage, value) in rows {
        let (json, blob) = split_vectors(&value);
        if blob.is_none() {
            continue;
        }
        sqlx::query("UPDATE stage_results SET value = $4, vectors = $5 WHERE source = $1 AND id = $2 AND stage = $3")
            .bind(&source)
            .bind(&id)
            .bind(&stage)
            .bind(sqlx::types::Json(&json))
            .bind(blob)
            .execute(&mut *tx)
            .await?;
        moved += 1;
    }
    if moved > 0 {
        tracing::info!(rows = moved, "PostgreSQL migration 0004: stage result vectors moved to binary");
    }
    Ok(())
}
