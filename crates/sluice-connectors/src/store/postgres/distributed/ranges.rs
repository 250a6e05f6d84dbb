//! Id ranges of a source's stored documents, for a later per-document phase
//! split between workers: K ranges of about equal size in the scan's order
//! (ids by byte order, tombstones left out), each named by its last id.

use sluice_core::StoreError;

use super::super::PostgresStore;

/// The last id of each of at most `k` ranges of `source`'s stored documents,
/// in order; the last range is open (`None`), so it also covers ids after
/// the last one seen. Fewer documents than `k` make fewer ranges; none make
/// one open range.
pub(crate) async fn id_range_bounds<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    source: &str,
    k: usize,
) -> Result<Vec<Option<String>>, sqlx::Error> {
    let k = i32::try_from(k.max(1)).unwrap_or(i32::MAX);
    let mut bounds: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT max(id COLLATE \"C\") FROM (
             SELECT id, ntile($2) OVER (ORDER BY id COLLATE \"C\") AS tile
             FROM documents d WHERE source = $1
               AND NOT EXISTS (SELECT 1 FROM deleted_documents t WHERE t.source = d.source AND t.id = d.id)
         ) ranked GROUP BY tile ORDER BY tile",
    )
    .bind(source)
    .bind(k)
    .fetch_all(executor)
    .await?;
    match bounds.last_mut() {
        Some(last) => *last = None,
        None => bounds.push(None),
    }
    Ok(bounds)
}

impl PostgresStore {
    /// [`id_range_bounds`] on the store's pool.
    pub async fn document_id_ranges(&self, source: &str, k: usize) -> Result<Vec<Option<String>>, StoreError> {
        self.ready().await?;
        let db = self.db();
        id_range_bounds(db.pool(), source, k).await.map_err(db.sql(format!("splitting the documents of {source}")))
    }
}
