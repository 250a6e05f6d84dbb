//! The run slot: a session-level advisory lock held on a connection of its
//! own (never a pooled one) for the life of the guard, taken back after a
//! lost connection, and released (then the connection closed) when the
//! guard is dropped.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_core::StoreError;
use sluice_core::store::{ActiveRunGuard, RunId};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{Notify, oneshot};

use super::pool::Db;
use super::runs::active_run_id;
use crate::store::{ORPHANED_EMPTY_RUN_ERROR, ORPHANED_RUN_ERROR};

/// First key of the advisory lock that is the run slot ("sluc"); the second
/// is a hash of the schema, so two sluice schemas in one database do not
/// share a slot.
const RUN_LOCK_CLASS: i32 = 0x736c_7563;
/// How often the run-slot connection is checked, so a lost lock is taken back.
const LOCK_KEEPALIVE: Duration = Duration::from_secs(2);
/// A lock released by a connection that is closing is free a moment later:
/// `acquire_active` tries this many times, this far apart, before answering Busy.
const BUSY_TRIES: u32 = 5;
const BUSY_PAUSE: Duration = Duration::from_millis(50);

/// The run slot while it is held. Dropping it unlocks and closes the
/// connection that holds the advisory lock (a moment later, on the runtime;
/// the same store's `acquire_active` and `active_run` wait for that).
pub struct PostgresRunLock {
    release: Option<oneshot::Sender<()>>,
    releasing: Arc<Releasing>,
    pub store: String,
}

impl Drop for PostgresRunLock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            self.releasing.pending.fetch_add(1, Ordering::SeqCst);
            if release.send(()).is_err() {
                // The task holding the lock is gone (its runtime ended): so is its connection.
                self.releasing.finished();
            }
        }
    }
}

/// Run-slot releases under way in this store.
#[derive(Default)]
pub(super) struct Releasing {
    pending: AtomicUsize,
    done: Notify,
}

impl Releasing {
    pub(super) fn finished(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.done.notify_waiters();
    }

    /// Waits (a second at most) until the guards this store dropped have released the lock.
    pub(super) async fn wait(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while self.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            let notified = self.done.notified();
            if self.pending.load(Ordering::SeqCst) == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
        }
    }
}

impl fmt::Debug for PostgresRunLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresRunLock").field("store", &self.store).finish_non_exhaustive()
    }
}

/// Takes the run slot on a connection of its own. Nobody held it, so runs
/// still marked `running`/`stopping` lost their process: they are marked
/// failed (resumable). The lock stays held until the guard is dropped.
pub(super) async fn acquire(db: &Db, releasing: &Arc<Releasing>) -> Result<ActiveRunGuard, StoreError> {
    releasing.wait().await;
    let what = "taking the run slot";
    let mut conn = PgConnection::connect_with(&db.options).await.map_err(db.sql(what))?;
    let mut tries = 0;
    loop {
        if try_lock(&mut conn).await.map_err(db.sql(what))? {
            break;
        }
        tries += 1;
        if tries >= BUSY_TRIES {
            let _ = conn.close().await;
            return Err(StoreError::Busy { active_run_id: active_run_id(db).await? });
        }
        tokio::time::sleep(BUSY_PAUSE).await;
    }
    // Nobody held the lock, so a run still marked running/stopping lost its process.
    let orphans: Result<Vec<RunId>, _> = sqlx::query_scalar(
        "UPDATE pipeline_runs
         SET status = 'failed', finished_at = now(), updated_at = now(),
             error = CASE WHEN checkpoint IS NULL
                            OR (COALESCE(checkpoint->>'batches', '0') = '0'
                                AND COALESCE(checkpoint->>'phases_done', '[]') = '[]')
                          THEN $2 ELSE $1 END
         WHERE status IN ('running', 'stopping') AND NOT distributed -- leased by workers, not this slot
         RETURNING id",
    )
    .bind(ORPHANED_RUN_ERROR)
    .bind(ORPHANED_EMPTY_RUN_ERROR)
    .fetch_all(&mut conn)
    .await;
    let orphans = match orphans {
        Ok(ids) => ids,
        Err(e) => {
            let _ = conn.close().await;
            return Err(db.sql("marking runs left by a dead process as failed")(e));
        }
    };
    for id in orphans {
        tracing::warn!(run_id = id, "run {id} was left running by a process that ended; marked failed (resumable)");
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(keep_lock(db.describe.clone(), db.options.clone(), Arc::clone(releasing), conn, rx));
    let guard: ActiveRunGuard =
        Box::new(PostgresRunLock { release: Some(tx), releasing: Arc::clone(releasing), store: db.describe.clone() });
    Ok(guard)
}

/// Whether some session holds the run slot right now (after this store's
/// own released guards have let go of it).
pub(super) async fn held(db: &Db, releasing: &Releasing) -> Result<bool, StoreError> {
    releasing.wait().await;
    // One statement, so the shared lock taken to probe is released in
    // the same breath and never stays on a pooled connection.
    sqlx::query_scalar(
        "SELECT CASE WHEN pg_try_advisory_lock_shared($1, hashtext(coalesce(current_schema(), '')))
                     THEN NOT pg_advisory_unlock_shared($1, hashtext(coalesce(current_schema(), '')))
                     ELSE true END",
    )
    .bind(RUN_LOCK_CLASS)
    .fetch_one(db.pool())
    .await
    .map_err(db.sql("checking the run lock"))
}

/// Holds the advisory lock on its own connection until the guard is
/// dropped, then unlocks and closes it. If the connection is lost, the lock
/// is gone with it: reconnects and takes it again.
async fn keep_lock(
    describe: String,
    options: PgConnectOptions,
    releasing: Arc<Releasing>,
    mut conn: PgConnection,
    mut release: oneshot::Receiver<()>,
) {
    let mut lost = false;
    let mut taken_over = false;
    let signalled = loop {
        tokio::select! {
            signal = &mut release => break signal.is_ok(),
            _ = tokio::time::sleep(LOCK_KEEPALIVE) => {}
        }
        if !lost {
            // Bounded: a connection cut without a FIN must not hold up the release.
            let ping = tokio::time::timeout(LOCK_KEEPALIVE * 2, sqlx::query("SELECT 1").execute(&mut conn)).await;
            if matches!(ping, Ok(Ok(_))) {
                continue;
            }
            lost = true;
            tracing::warn!(store = %describe, "lost the connection holding the run slot; taking it again");
        }
        match PgConnection::connect_with(&options).await {
            Ok(mut fresh) => match try_lock(&mut fresh).await {
                Ok(true) => {
                    tracing::info!(store = %describe, "run slot taken again after reconnecting");
                    conn = fresh;
                    lost = false;
                }
                Ok(false) => {
                    if !taken_over {
                        taken_over = true;
                        tracing::error!(
                            store = %describe,
                            "another process took the run slot while the connection was lost; \
                             this run's next commit will fail"
                        );
                    }
                    let _ = fresh.close().await;
                }
                Err(e) => tracing::debug!(store = %describe, error = %e, "cannot take the run slot yet"),
            },
            Err(e) => tracing::debug!(store = %describe, error = %e, "cannot reconnect yet"),
        }
    };
    if !lost {
        // Unlock first (answered: the lock is free when this returns), then close.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext(coalesce(current_schema(), '')))")
            .bind(RUN_LOCK_CLASS)
            .execute(&mut conn)
            .await;
    }
    let _ = conn.close().await;
    if signalled {
        releasing.finished();
    }
}

async fn try_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(coalesce(current_schema(), '')))")
        .bind(RUN_LOCK_CLASS)
        .fetch_one(conn)
        .await
}
