//! One run per folder. A run holds an exclusive `flock` on a lock file in the folder and writes
//! who it is into the file (an opaque text: the caller's JSON). The kernel drops the lock when the
//! holder's process ends, however it ends (SIGKILL, OOM, a pod deleted), so a stale lock is never
//! mistaken for a live one. A pid file checked with `kill(pid, 0)` would be: in a container every
//! restart is pid 1 again, and the dead run's pid names the live process that reads it.
//!
//! The protocol:
//! - open (creating) the file, then `flock(LOCK_EX | LOCK_NB)`: a live holder makes it fail at once;
//! - having the lock, check that the path still names the inode we locked: a holder that was
//!   releasing may have unlinked it between our open and our lock, and a lock on an unlinked file
//!   excludes nobody (then start over);
//! - what the file holds then was left by a holder that died without releasing: returned as
//!   `previous`, so the caller can say it took the lock over;
//! - write our own description in place (never by rename: the lock belongs to the inode);
//! - release: unlink the file while still holding the lock, then close it. A clean folder is
//!   left as it was, and a file found with content always means a run that died.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug)]
pub enum LockError {
    /// Another live process holds the lock; what it wrote about itself, if it has yet.
    Held {
        path: PathBuf,
        holder: Option<String>,
    },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { path, .. } => write!(f, "{} is held by another run", path.display()),
            LockError::Io { path, error } => write!(f, "cannot lock {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for LockError {}

#[derive(Debug)]
pub struct RunLock {
    file: Option<File>,
    path: PathBuf,
}

/// A lock taken, and what a dead holder had left in the file (None after a clean release).
#[derive(Debug)]
pub struct Acquired {
    pub lock: RunLock,
    pub previous: Option<String>,
}

/// How long a refused run waits for a holder that has just locked to write its description.
const HOLDER_WRITE_WAIT: Duration = Duration::from_millis(200);

impl RunLock {
    pub fn acquire(path: &Path, holder: &str) -> Result<Acquired, LockError> {
        let io = |error| LockError::Io {
            path: path.to_owned(),
            error,
        };
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            // SAFETY: flock on a descriptor we own; no memory is shared.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let error = std::io::Error::last_os_error();
                if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(io(error));
                }
                return Err(LockError::Held {
                    path: path.to_owned(),
                    holder: wait_for_holder(&mut file),
                });
            }
            if !still_named(&file, path).map_err(io)? {
                continue; // locked a file its holder had just unlinked: open the new one
            }
            let previous = read_all(&mut file).map_err(io)?;
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            file.write_all(holder.as_bytes()).map_err(io)?;
            file.sync_data().map_err(io)?;
            let previous = (!previous.trim().is_empty()).then_some(previous);
            return Ok(Acquired {
                lock: RunLock {
                    file: Some(file),
                    path: path.to_owned(),
                },
                previous,
            });
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file, then lets the lock go. The file is removed only while the path
    /// still names it: a folder renamed meanwhile (restore moves the store aside) took the file
    /// along, and whatever the path names now is not ours to delete. Errors are ignored: the
    /// kernel releases the lock with the descriptor whatever happens, and a file left behind only
    /// makes the next run say it took a lock over.
    pub fn release(&mut self) {
        if let Some(file) = self.file.take() {
            if still_named(&file, &self.path).unwrap_or(false) {
                let _ = std::fs::remove_file(&self.path);
            }
            drop(file);
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.release();
    }
}

fn still_named(file: &File, path: &Path) -> std::io::Result<bool> {
    let ours = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == ours.dev() && named.ino() == ours.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn read_all(file: &mut File) -> std::io::Result<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// The holder's description; a holder that locked a moment ago may not have written it yet.
fn wait_for_holder(file: &mut File) -> Option<String> {
    let deadline = std::time::Instant::now() + HOLDER_WRITE_WAIT;
    loop {
        match read_all(file) {
            Ok(text) if !text.trim().is_empty() => return Some(text),
            Err(_) => return None,
            _ if std::time::Instant::now() >= deadline => return None,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        (dir, path)
    }

    #[test]
    fn a_second_run_is_refused_and_told_who_holds_it() {
        let (_dir, path) = lock_path();
        let first = RunLock::acquire(&path, "first").unwrap();
        assert_eq!(first.previous, None);
        match RunLock::acquire(&path, "second") {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder.as_deref(), Some("first")),
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_clean_release_leaves_no_file_and_the_next_run_finds_no_previous_holder() {
        let (dir, path) = lock_path();
        let mut first = RunLock::acquire(&path, "first").unwrap();
        first.lock.release();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let second = RunLock::acquire(&path, "second").unwrap();
        assert_eq!(second.previous, None);
    }

    #[test]
    fn a_file_left_by_a_dead_holder_is_taken_over_whatever_pid_it_names() {
        // What a killed run leaves: the file with its description, and no lock (the kernel
        // dropped it). The pid in it may well be alive now (pid 1 in a restarted container).
        let (_dir, path) = lock_path();
        std::fs::write(&path, r#"{"pid":1,"command":"all"}"#).unwrap();
        let taken = RunLock::acquire(&path, "new").unwrap();
        assert_eq!(
            taken.previous.as_deref(),
            Some(r#"{"pid":1,"command":"all"}"#)
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_lock_on_a_file_unlinked_meanwhile_is_not_kept() {
        // A run that opened the file just before the holder's release unlinked it must not
        // believe it holds the lock: it opens the file that the path names now.
        let (_dir, path) = lock_path();
        let stale = File::open({
            std::fs::write(&path, "").unwrap();
            &path
        })
        .unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!still_named(&stale, &path).unwrap());
        let mut taken = RunLock::acquire(&path, "new").unwrap();
        assert!(still_named(taken.lock.file.as_ref().unwrap(), &path).unwrap());
        taken.lock.release();
    }

    #[test]
    fn a_release_after_the_folder_was_renamed_deletes_nothing_that_is_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("store");
        std::fs::create_dir(&folder).unwrap();
        let path = folder.join(".lock");
        let mut ours = RunLock::acquire(&path, "ours").unwrap();
        std::fs::rename(&folder, dir.path().join("store.aside")).unwrap();
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        ours.lock.release();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    }

    #[test]
    fn the_kernel_releases_the_lock_of_a_dropped_descriptor() {
        let (_dir, path) = lock_path();
        let first = RunLock::acquire(&path, "first").unwrap();
        // Dropping the descriptor without unlinking is what a killed process amounts to.
        let mut lock = first.lock;
        let file = lock.file.take().unwrap();
        drop(file);
        let second = RunLock::acquire(&path, "second").unwrap();
        assert_eq!(second.previous.as_deref(), Some("first"));
    }
}
