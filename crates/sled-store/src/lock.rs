//! The bot holds an exclusive `flock` on `matrix-sdk-crypto/db` while it runs (sled takes it in
//! `open`). We take a *shared* lock on a read-only handle: it fails while the bot runs, keeps the bot
//! from starting while we read, and lets several of our own readers run side by side.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::OpenError;

#[derive(Debug)]
pub struct SourceLock {
    _file: File,
    pub path: PathBuf,
}

impl SourceLock {
    pub fn acquire(db_file: &Path) -> Result<Self, OpenError> {
        let file = File::open(db_file)
            .map_err(|e| OpenError::io(format!("cannot open {}", db_file.display()), e))?;
        // SAFETY: flock on a descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                OpenError::Locked(db_file.to_owned())
            } else {
                OpenError::io(format!("cannot lock {}", db_file.display()), err)
            });
        }
        Ok(SourceLock {
            _file: file,
            path: db_file.to_owned(),
        })
    }

    /// A read-only handle on `db` that takes no lock at all: for `inspect`, which must never keep
    /// the bot from starting (or restarting) while it reads.
    pub fn without_locking(db_file: &Path) -> Result<Self, OpenError> {
        let file = File::open(db_file)
            .map_err(|e| OpenError::io(format!("cannot open {}", db_file.display()), e))?;
        Ok(SourceLock {
            _file: file,
            path: db_file.to_owned(),
        })
    }

    /// True when some process holds an exclusive lock (the bot), without keeping any lock.
    pub fn is_held_elsewhere(db_file: &Path) -> Result<bool, OpenError> {
        match SourceLock::acquire(db_file) {
            Ok(_) => Ok(false),
            Err(OpenError::Locked(_)) => Ok(true),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_holder_makes_us_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::write(&db, b"x").unwrap();
        let ours = SourceLock::acquire(&db).unwrap();
        let second = SourceLock::acquire(&db).unwrap(); // shared locks coexist
        drop((ours, second));
        let bot = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&db)
            .unwrap();
        assert_eq!(
            unsafe { libc::flock(bot.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
            0
        );
        assert!(matches!(
            SourceLock::acquire(&db),
            Err(OpenError::Locked(_))
        ));
        assert!(SourceLock::is_held_elsewhere(&db).unwrap());
    }
}
