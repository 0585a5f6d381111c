//! What can go wrong: opening (the database as a whole cannot be recovered) and reading a page
//! (one node cannot be read; the rest of the tree still can).

use std::path::PathBuf;

use crate::log::{Lsn, PageId};

/// The database cannot be opened: Sled's own open would refuse it (or panic) too.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Sled configuration this reader understands: {detail}")]
    Conf { path: PathBuf, detail: String },
    #[error("this database was written by Sled {0}.{1}; only Sled 0.34 databases can be read")]
    Version(u64, u64),
    #[error("this database stores compressed pages (Sled's `use_compression`), which matrix-rust-sdk never enabled")]
    Compressed,
    #[error(
        "the snapshot {path} is damaged ({detail}); Sled would refuse to open this database too"
    )]
    Snapshot { path: PathBuf, detail: String },
    #[error("the log is damaged at LSN {lsn}: {detail}")]
    Log { lsn: Lsn, detail: String },
    #[error("the database's table of trees (page 0) cannot be read: {0}")]
    Meta(PageError),
}

impl Error {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        Error::Io { context, source }
    }
}

/// One page cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("page {pid} was never written or is not in the log")]
    Missing { pid: PageId },
    #[error("page {pid} was freed")]
    Freed { pid: PageId },
    #[error("page {pid}'s message at log offset {lid} (LSN {lsn}) is damaged: {detail}")]
    Damaged {
        pid: PageId,
        lsn: Lsn,
        lid: u64,
        detail: String,
    },
    #[error("page {pid}'s state cannot be read again from the snapshot: {detail}")]
    Snapshot { pid: PageId, detail: String },
    #[error("page {pid} does not decode: {detail}")]
    Undecodable { pid: PageId, detail: String },
    #[error("the tree is inconsistent at page {pid}: {detail}")]
    Tree { pid: PageId, detail: String },
}
