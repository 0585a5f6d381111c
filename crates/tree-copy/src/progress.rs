use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared with the caller, who reads it while the work runs (a progress bar) and may cancel.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub files_total: AtomicU64,
    pub cancelled: AtomicBool,
}

impl Progress {
    pub(crate) fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn check(&self) -> Result<(), crate::TreeError> {
        if self.cancelled.load(Ordering::Relaxed) {
            Err(crate::TreeError::Cancelled)
        } else {
            Ok(())
        }
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}
