//! Folder copies for `backup` and `restore`: every source byte is read once, written and hashed
//! in the same pass (hashing on a second thread, overlapped with the I/O), or cloned where the
//! filesystem supports reflinks and then hashed. Modes and times are preserved, files and folders
//! fsynced. Checksum lists are in `sha256sum` format so that `sha256sum -c` can check them.

mod checksums;
mod copy;
mod fs_ops;
mod progress;
mod tree;

pub use checksums::{format_checksums, lines_under, parse_checksums, ChecksumError, ChecksumLine};
pub use copy::{copy_tree, kernel_copy, hash_tree, verify_tree, CopyReport, FileDigest, Mismatch, MismatchKind};
pub use fs_ops::{available_space, try_clone};
pub use progress::Progress;
pub use tree::{list_tree, Tree, TreeEntry};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists")]
    Exists(std::path::PathBuf),
    #[error(
        "{0} is a symbolic link or special file; a Sled store holds only folders and regular files"
    )]
    Unsupported(std::path::PathBuf),
    #[error("cancelled")]
    Cancelled,
}

impl TreeError {
    pub(crate) fn io<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> TreeError + 'a {
        move |source| TreeError::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }

    /// The errno behind an I/O failure (ENOSPC, EACCES...), for error codes upstream.
    pub fn os_error(&self) -> Option<i32> {
        match self {
            TreeError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
