//! Sled has no read-only mode: its `open` takes a write handle on `db`, may write a new snapshot,
//! may truncate free segments at the log's tail, and may create `blobs/`. So Sled never opens the
//! source store; it opens a private copy. On filesystems with reflinks (btrfs, XFS) the copy is a
//! clone that costs no time and no space; elsewhere it is a kernel-side copy (`copy_file_range`).
//! The copy lives in a 0700 folder and is removed when the run ends (or by the next run, if this
//! one was killed).

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::OpenError;

const PREFIX: &str = ".sled-working-copy-";

#[derive(Debug, Clone, Copy, Default)]
pub struct CopyProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub cloned: bool,
}

#[derive(Debug)]
pub struct WorkingCopy {
    root: PathBuf,
    sled_dir: PathBuf,
    pub cloned: bool,
    pub bytes: u64,
}

impl WorkingCopy {
    pub fn create(
        source_sled_dir: &Path,
        work_parent: &Path,
        progress: &mut dyn FnMut(CopyProgress),
    ) -> Result<Self, OpenError> {
        create_private_dir(work_parent)?;
        remove_stale_copies(work_parent);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = work_parent.join(format!("{PREFIX}{}-{nanos:08x}", std::process::id()));
        create_private_dir(&root)?;
        let mut copy = WorkingCopy {
            sled_dir: root.join("matrix-sdk-crypto"),
            root,
            cloned: true,
            bytes: 0,
        };

        let files = list_files(source_sled_dir)?;
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        let mut state = CopyProgress {
            bytes_done: 0,
            bytes_total: total,
            cloned: true,
        };
        progress(state);
        // The biggest file first: whether it clones decides whether we need the space at all.
        let mut files = files;
        files.sort_by_key(|(_, len)| std::cmp::Reverse(*len));
        let mut space_checked = false;
        for (relative, len) in &files {
            let src = source_sled_dir.join(relative);
            let dst = copy.sled_dir.join(relative);
            if let Some(parent) = dst.parent() {
                create_private_dir(parent)?;
            }
            let src_file = File::open(&src)
                .map_err(|e| OpenError::io(format!("cannot read {}", src.display()), e))?;
            let dst_file = create_private_file(&dst)?;
            if tree_copy::try_clone(&src_file, &dst_file) {
                state.bytes_done += len;
                progress(state);
                continue;
            }
            state.cloned = false;
            if !space_checked {
                check_space(work_parent, total - state.bytes_done)?;
                space_checked = true;
            }
            copy_contents(&src_file, &dst_file, *len, &mut |n| {
                state.bytes_done += n;
                progress(state);
            })
            .map_err(|e| {
                OpenError::io(
                    format!("cannot copy {} into {}", src.display(), dst.display()),
                    e,
                )
            })?;
        }
        copy.cloned = state.cloned;
        copy.bytes = total;
        Ok(copy)
    }

    pub fn sled_dir(&self) -> &Path {
        &self.sled_dir
    }
}

impl Drop for WorkingCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn create_private_dir(dir: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(OpenError::io(
            format!("cannot create the working folder {}", dir.display()),
            e,
        )),
    }
}

fn create_private_file(path: &Path) -> Result<File, OpenError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| OpenError::io(format!("cannot create {}", path.display()), e))
}

fn list_files(dir: &Path) -> Result<Vec<(PathBuf, u64)>, OpenError> {
    let tree = tree_copy::list_tree(dir).map_err(|e| {
        OpenError::io(
            format!("cannot list {}", dir.display()),
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(tree
        .files
        .into_iter()
        .map(|f| (f.relative, f.metadata.len()))
        .collect())
}

/// Removes copies left by runs that were killed (their process is gone).
fn remove_stale_copies(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn check_space(dir: &Path, needed: u64) -> Result<(), OpenError> {
    // Unknown free space: let the copy itself fail with ENOSPC.
    let Some(available) = tree_copy::available_space(dir) else {
        return Ok(());
    };
    // Sled appends a snapshot to the copy when it opens it: keep a margin.
    let needed_with_margin = needed + needed / 50 + (16 << 20);
    if available < needed_with_margin {
        return Err(OpenError::NoSpace {
            dir: dir.to_owned(),
            needed: needed_with_margin,
            available,
        });
    }
    Ok(())
}

const CHUNK: usize = 64 << 20;

fn copy_contents(
    src: &File,
    dst: &File,
    len: u64,
    done: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let mut copied = 0u64;
    while copied < len {
        let want = CHUNK.min((len - copied) as usize);
        match tree_copy::kernel_copy(src, dst, copied, want)? {
            None if copied == 0 => return copy_by_reading(src, dst, done),
            None => return Err(std::io::Error::other("copy_file_range stopped working mid-file")),
            Some(0) => break, // the file shrank under us: copy what is there
            Some(n) => {
                copied += n as u64;
                done(n as u64);
            }
        }
    }
    dst.sync_all()
}

fn copy_by_reading(
    mut src: &File,
    mut dst: &File,
    done: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        dst.write_all(&buf[..n])?;
        done(n as u64);
    }
    dst.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_every_file_privately_and_cleans_up() {
        let src = tempfile::tempdir().unwrap();
        fs::write(src.path().join("conf"), b"version: 0.34\n").unwrap();
        fs::write(src.path().join("db"), vec![5u8; 3 << 20]).unwrap();
        fs::create_dir(src.path().join("blobs")).unwrap();
        fs::write(src.path().join("blobs").join("1"), b"blob").unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut last = CopyProgress::default();
        let copy = WorkingCopy::create(src.path(), work.path(), &mut |p| last = p).unwrap();
        assert_eq!(last.bytes_done, last.bytes_total);
        assert_eq!(
            fs::read(copy.sled_dir().join("db")).unwrap(),
            vec![5u8; 3 << 20]
        );
        assert_eq!(fs::read(copy.sled_dir().join("blobs/1")).unwrap(), b"blob");
        let mode = fs::metadata(copy.sled_dir().join("db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let root = copy.root.clone();
        drop(copy);
        assert!(!root.exists());
    }

    #[test]
    fn stale_copies_of_dead_processes_are_removed() {
        let work = tempfile::tempdir().unwrap();
        let stale = work.path().join(format!("{PREFIX}999999999-0"));
        fs::create_dir(&stale).unwrap();
        remove_stale_copies(work.path());
        assert!(!stale.exists());
    }
}
