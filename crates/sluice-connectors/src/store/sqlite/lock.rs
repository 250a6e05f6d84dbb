//! The run slot: an OS file lock on `<db path>.lock`, so the kernel frees
//! it when the holding process dies, however it dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use sluice_core::StoreError;

use crate::store::database_error;

/// The run slot while it is held: the locked `<db>.lock` file. Dropping it
/// (or the death of the process) releases the lock.
#[derive(Debug)]
pub struct SqliteRunLock {
    pub(super) _file: File,
    pub path: PathBuf,
}

pub(super) fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| database_error(format!("cannot open the run lock file {}: {e}", path.display()), e))
}

/// Whether some process holds the run lock of `path` now. The check takes a
/// shared lock for an instant; an `acquire_active` racing with it in that
/// instant answers `Busy`.
pub(super) fn held(path: &Path) -> Result<bool, StoreError> {
    match open_lock_file(path)?.try_lock_shared() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => {
            Err(database_error(format!("cannot check the run lock {}: {e}", path.display()), e))
        }
    }
}
