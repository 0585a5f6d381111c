//! Folder copies for `backup` and `restore`: thin face over `tree-copy`. The work runs on its own
//! thread; JavaScript polls `progress()` for its progress bar and awaits `wait()`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use sled_store::lock::SourceLock;
use sled_store::StoreLocation;
use tree_copy::{ChecksumLine, MismatchKind, Progress, TreeError};

use crate::errors::{coded, open_error};
use crate::job::Outcome;

#[napi(object)]
pub struct TreeProgress {
    pub bytes_done: i64,
    pub bytes_total: i64,
    pub files_done: u32,
    pub files_total: u32,
}

#[napi(object)]
pub struct FileChecksum {
    /// Relative, `/`-separated.
    pub path: String,
    pub sha256: String,
    pub bytes: i64,
}

#[napi(object)]
pub struct ChecksumMismatch {
    pub path: String,
    /// `missing`, `differs` or `unexpected`.
    pub kind: String,
}

#[napi(object)]
pub struct TreeJobResult {
    pub files: Vec<FileChecksum>,
    pub bytes: i64,
    pub cloned_files: u32,
    pub mismatches: Vec<ChecksumMismatch>,
}

#[napi]
pub struct TreeJob {
    progress: Arc<Progress>,
    done: Outcome<TreeJobResult>,
}

fn tree_error(e: TreeError) -> Error {
    match e.os_error() {
        // ENOSPC, EDQUOT
        Some(28 | 122) => coded(
            "MIGRATION_DIR",
            &e,
            "free space there or choose a folder with room",
        ),
        // EPERM, EACCES, EROFS
        Some(1 | 13 | 30) => coded("MIGRATION_DIR", &e, "choose a folder this user can write"),
        _ if matches!(e, TreeError::Cancelled) => coded("INTERRUPTED", &e, "rerun to start again"),
        _ => coded("IO_ERROR", &e, "check the path and the disk"),
    }
}

fn checksums_of(files: Vec<tree_copy::FileDigest>) -> Vec<FileChecksum> {
    files
        .into_iter()
        .map(|f| FileChecksum {
            path: f.relative,
            sha256: hex::encode(f.sha256),
            bytes: f.bytes as i64,
        })
        .collect()
}

impl TreeJob {
    fn spawn(
        work: impl FnOnce(&Progress) -> Result<TreeJobResult> + Send + 'static,
    ) -> Result<TreeJob> {
        let progress = Arc::new(Progress::default());
        let shared = progress.clone();
        let done = Outcome::spawn("tree-copy", move || work(&shared))?;
        Ok(TreeJob { progress, done })
    }
}

#[napi]
impl TreeJob {
    #[napi]
    pub fn progress(&self) -> TreeProgress {
        let p = &self.progress;
        TreeProgress {
            bytes_done: p.bytes_done.load(Ordering::Relaxed) as i64,
            bytes_total: p.bytes_total.load(Ordering::Relaxed) as i64,
            files_done: p.files_done.load(Ordering::Relaxed) as u32,
            files_total: p.files_total.load(Ordering::Relaxed) as u32,
        }
    }

    /// Asks the work to stop at the next chunk; `wait()` then fails with INTERRUPTED.
    #[napi]
    pub fn cancel(&self) {
        self.progress.cancel();
    }

    #[napi]
    pub async fn wait(&self) -> Result<TreeJobResult> {
        self.done.wait().await
    }
}

/// Copies `source` to `destination` (which must not exist), hashing every byte in the same pass.
#[napi]
pub fn start_tree_copy(source: String, destination: String) -> Result<TreeJob> {
    TreeJob::spawn(move |progress| {
        let report = tree_copy::copy_tree(
            &PathBuf::from(source),
            &PathBuf::from(destination),
            progress,
        )
        .map_err(tree_error)?;
        Ok(TreeJobResult {
            bytes: report.bytes as i64,
            cloned_files: report.cloned_files as u32,
            files: checksums_of(report.files),
            mismatches: vec![],
        })
    })
}

/// Checks `root` against a `sha256sum` list; names in `ignore` (the list itself) may be extra.
/// With `under`, only the list's lines for that folder count, relative to it.
#[napi]
pub fn start_tree_verify(
    root: String,
    checksums: String,
    ignore: Vec<String>,
    under: Option<String>,
) -> Result<TreeJob> {
    let mut lines = tree_copy::parse_checksums(&checksums).map_err(|e| {
        coded(
            "BACKUP_INVALID",
            format!("checksums.sha256: {e}"),
            "this backup cannot be trusted: use another one",
        )
    })?;
    if let Some(folder) = under {
        lines = tree_copy::lines_under(&lines, &folder);
    }
    TreeJob::spawn(move |progress| {
        let ignore: Vec<&str> = ignore.iter().map(String::as_str).collect();
        let found = tree_copy::verify_tree(&PathBuf::from(root), &lines, &ignore, progress)
            .map_err(tree_error)?;
        let mismatches = found
            .into_iter()
            .map(|m| ChecksumMismatch {
                path: m.path,
                kind: match m.kind {
                    MismatchKind::Missing => "missing",
                    MismatchKind::Differs => "differs",
                    MismatchKind::Unexpected => "unexpected",
                }
                .into(),
            })
            .collect();
        Ok(TreeJobResult {
            files: vec![],
            bytes: progress.bytes_total.load(Ordering::Relaxed) as i64,
            cloned_files: 0,
            mismatches,
        })
    })
}

/// The text of a `sha256sum`-compatible list.
#[napi]
pub fn format_checksums(files: Vec<FileChecksum>) -> Result<String> {
    let lines = files
        .into_iter()
        .map(|f| {
            let sha256 = hex::decode(&f.sha256)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| Error::from_reason("sha256 is not 64 hex digits"))?;
            Ok(ChecksumLine {
                sha256,
                path: f.path,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(tree_copy::format_checksums(&lines))
}

/// Held while a backup or restore runs: refuses while the bot runs (it holds Sled's exclusive
/// lock) and keeps the bot from starting until `release()`.
#[napi]
pub struct StoreLock {
    lock: Mutex<Option<SourceLock>>,
}

#[napi]
impl StoreLock {
    #[napi]
    pub fn release(&self) {
        if let Ok(mut l) = self.lock.lock() {
            l.take();
        }
    }
}

#[napi]
pub fn lock_store(crypto_store_path: String) -> Result<StoreLock> {
    let db = StoreLocation::new(&crypto_store_path).sled_db_file();
    let lock = SourceLock::acquire(&db).map_err(open_error)?;
    Ok(StoreLock {
        lock: Mutex::new(Some(lock)),
    })
}

/// Bytes free for this user where `dir` lives (null when the system cannot say).
#[napi]
pub fn available_space(dir: String) -> Option<i64> {
    tree_copy::available_space(&PathBuf::from(dir)).map(|b| b as i64)
}
