//! One run per folder: thin face over `run-lock`. A refusal is not an error here: the caller
//! names the holder in its own words, so `tryAcquire` says who holds the lock instead.

use std::path::Path;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use run_lock::{LockError, RunLock};

use crate::errors::coded;

#[napi]
pub struct FolderLock {
    lock: Option<RunLock>,
    other: Option<String>,
}

#[napi]
impl FolderLock {
    /// Takes the lock on `path` and writes `holder` into it, or (`acquired` false) leaves it to
    /// the live run that holds it.
    #[napi(factory)]
    pub fn try_acquire(path: String, holder: String) -> Result<FolderLock> {
        match RunLock::acquire(Path::new(&path), &holder) {
            Ok(taken) => Ok(FolderLock {
                lock: Some(taken.lock),
                other: taken.previous,
            }),
            Err(LockError::Held { holder, .. }) => Ok(FolderLock {
                lock: None,
                other: holder,
            }),
            Err(e @ LockError::Io { .. }) => Err(coded(
                "MIGRATION_DIR",
                &e,
                "check that this user can write the folder",
            )),
        }
    }

    #[napi(getter)]
    pub fn acquired(&self) -> bool {
        self.lock.is_some()
    }

    /// Refused: what the live holder wrote about itself. Acquired: what a run that died without
    /// releasing left behind (none after a clean release).
    #[napi(getter)]
    pub fn other(&self) -> Option<String> {
        self.other.clone()
    }

    /// Removes the lock file and lets the lock go; a second call does nothing.
    #[napi]
    pub fn release(&mut self) {
        if let Some(mut lock) = self.lock.take() {
            lock.release();
        }
    }
}
