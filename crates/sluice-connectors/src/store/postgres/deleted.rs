//! Documents gone at their source: tombstones in `deleted_documents`
//! (migration 0008) for `on_delete = "mark"`, or the row deleted (its chunks
//! go with it, by the foreign key) for `on_delete = "remove"`; and the
//! tombstones of documents stored again lifted, in the commit's transaction.
//! Reads (the document count, later phases' scans) leave marked documents out.

use sluice_core::store::{Deletion, OnDelete, RunId};

use super::encode::DocColumns;

/// The `source` and `id` columns of the deletions with `action`.
fn keys(deletions: &[Deletion], action: OnDelete) -> (Vec<String>, Vec<String>) {
    deletions.iter().filter(|d| d.action == action).map(|d| (d.source.clone(), d.id.clone())).unzip()
}

/// Lifts the tombstones of the documents written, then marks or removes the deleted ones.
pub(super) async fn write_deletions(
    tx: &mut sqlx::PgTransaction<'_>,
    run: RunId,
    docs: &DocColumns,
    deletions: &[Deletion],
) -> Result<(), sqlx::Error> {
    if !docs.source.is_empty() {
        delete_by_key(tx, "deleted_documents", "id", &docs.source, &docs.id).await?;
    }
    let (source, id) = keys(deletions, OnDelete::Mark);
    if !source.is_empty() {
        sqlx::query(
            "INSERT INTO deleted_documents (source, id, run_id, deleted_at)
             SELECT d.source, d.id, $3, now() FROM documents d
             JOIN UNNEST($1::text[], $2::text[]) AS u(source, id) ON d.source = u.source AND d.id = u.id
             ON CONFLICT (source, id) DO NOTHING",
        )
        .bind(&source)
        .bind(&id)
        .bind(run)
        .execute(&mut **tx)
        .await?;
    }
    let (source, id) = keys(deletions, OnDelete::Remove);
    if !source.is_empty() {
        for table in ["documents", "deleted_documents"] {
            delete_by_key(tx, table, "id", &source, &id).await?;
        }
    }
    Ok(())
}

/// Deletes the rows of `table` whose `source` and `id_column` pair is one of
/// `source[i]`, `id[i]`: one statement, whatever the number of keys.
pub(super) async fn delete_by_key(
    tx: &mut sqlx::PgTransaction<'_>,
    table: &'static str,
    id_column: &'static str,
    source: &[String],
    id: &[String],
) -> Result<(), sqlx::Error> {
    // Both names are compile-time constants of this module's callers, never input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} t USING UNNEST($1::text[], $2::text[]) AS u(source, id)
         WHERE t.source = u.source AND t.{id_column} = u.id"
    )))
    .bind(source)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
