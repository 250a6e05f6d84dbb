//! Documents gone at their source: tombstones in `deleted_documents`
//! (migration 0008) for `on_delete = "mark"`, or the row deleted (its chunks
//! go with it, by trigger) for `on_delete = "remove"`; and the tombstones of
//! documents stored again lifted, in the commit's transaction.

use rusqlite::{Connection, params};
use sluice_core::store::{Deletion, OnDelete, RunId};

use super::commit::DocRow;

/// The clause reads use to leave marked documents out (`d` is the documents row).
pub(super) const NOT_DELETED: &str =
    "NOT EXISTS (SELECT 1 FROM deleted_documents t WHERE t.source = d.source AND t.id = d.id)";

/// Marks or removes each document; a mark for a document the store does not have is not kept.
pub(super) fn apply_deletions(
    conn: &Connection,
    run: RunId,
    deletions: &[Deletion],
    now: &str,
) -> rusqlite::Result<()> {
    if deletions.is_empty() {
        return Ok(());
    }
    let mut mark = conn.prepare_cached(
        "INSERT INTO deleted_documents (source, id, run_id, deleted_at)
         SELECT source, id, ?3, ?4 FROM documents WHERE source = ?1 AND id = ?2
         ON CONFLICT (source, id) DO NOTHING",
    )?;
    let mut remove = conn.prepare_cached("DELETE FROM documents WHERE source = ?1 AND id = ?2")?;
    let mut unmark = conn.prepare_cached("DELETE FROM deleted_documents WHERE source = ?1 AND id = ?2")?;
    for d in deletions {
        match d.action {
            OnDelete::Mark => {
                mark.execute(params![d.source, d.id, run, now])?;
            }
            OnDelete::Remove => {
                remove.execute(params![d.source, d.id])?;
                unmark.execute(params![d.source, d.id])?;
            }
        }
    }
    Ok(())
}

/// A document stored again is no longer deleted. Costs one query per commit
/// while no document is marked.
pub(super) fn lift_tombstones(conn: &Connection, docs: &[DocRow]) -> rusqlite::Result<()> {
    if docs.is_empty() {
        return Ok(());
    }
    let any: bool =
        conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM deleted_documents)")?.query_row([], |r| r.get(0))?;
    if !any {
        return Ok(());
    }
    let mut unmark = conn.prepare_cached("DELETE FROM deleted_documents WHERE source = ?1 AND id = ?2")?;
    for d in docs {
        unmark.execute(params![d.source(), d.id()])?;
    }
    Ok(())
}

/// The ids of the marked documents of `source`, in order.
pub(super) fn deleted_ids(conn: &Connection, source: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM deleted_documents WHERE source = ?1 ORDER BY id")?;
    stmt.query_map(params![source], |r| r.get(0))?.collect()
}
