//! Reads a Sled 0.34 database from its files without ever writing to them.
//!
//! Sled has no read-only mode: its `open` takes an exclusive lock, zeroes the log's torn tail,
//! writes a new snapshot and starts a flusher; and it builds a page table of every page with
//! boxed fragment lists (tens of MB for a store of a million entries) before the first read. A
//! migration tool must not touch the store it migrates, so this crate recovers what Sled's open
//! would recover, and reads the trees, with read-only file handles:
//!
//! [`recovery`]: `conf` → the newest snapshot → every log message after it, checked as Sled checks
//! them (CRC, segment number, torn tails, half-written batches) → the page table;
//! [`Db::open`] then reads the table of trees (page 0); [`Scan`] walks one tree leaf by leaf, as
//! Sled's own iterator does (down from the root by key, right along siblings), materializing each
//! node from its base and linked fragments. A node that cannot be read costs the key range it
//! covers, reported as a [`LostRange`], not the rest of the tree.
//!
//! Nothing here writes: `db` and the blobs are opened read-only, and nothing is locked (the
//! caller decides how to keep the database's owner away while it reads).

mod buffer;
mod codec;
mod error;
mod log;
mod node;
mod pages;
mod recovery;
mod scan;
mod snapshot;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

pub use codec::Malformed;
pub use error::{Error, PageError};
pub use log::{Lsn, PageId};
pub use recovery::{RecoveryReport, StorageParameters};
pub use scan::{Entries, Leaf, LostRange, Scan};

use crate::buffer::MessageBody;
use crate::codec::Cursor;
use crate::log::{read_blob, read_message, Body, LogRead, MessageAt, COUNTER_PID, META_PID};
use crate::node::Node;
use crate::pages::{Fragment, PageTable, PageView};

/// Sled's default tree: what `Db::get` and `Db::insert` use.
pub const DEFAULT_TREE: &[u8] = b"__sled__default";

/// Messages at most this far apart in the log are read ahead as one stretch.
#[cfg(target_os = "linux")]
const WILL_NEED_GAP: u64 = 16 * 1024;

/// Byte ranges `[start, end)` as the fewest stretches of the file that cover them, joining those
/// less than `gap` bytes apart: one read-ahead call per stretch (on a warm page cache each call
/// costs about what its lookup of the pages costs, so many small ones add up).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn stretches(mut ranges: Vec<(u64, u64)>, gap: u64) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut joined: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match joined.last_mut() {
            Some(last) if start <= last.1.saturating_add(gap) => last.1 = last.1.max(end),
            _ => joined.push((start, end)),
        }
    }
    joined
}

/// A Sled database recovered from its files.
pub struct Db {
    dir: PathBuf,
    blobs_dir: PathBuf,
    file: File,
    params: StorageParameters,
    pages: PageTable,
    trees: BTreeMap<Vec<u8>, PageId>,
    report: RecoveryReport,
}

impl Db {
    /// Recovers the database in `dir` (the folder holding `conf`, `db`, `snap.*`, `blobs/`).
    pub fn open(dir: &Path) -> Result<Arc<Db>, Error> {
        let params = recovery::read_conf(dir)?;
        if params.version != (0, 34) {
            return Err(Error::Version(params.version.0, params.version.1));
        }
        if params.use_compression {
            return Err(Error::Compressed);
        }
        let db_path = dir.join("db");
        let file = File::open(&db_path)
            .map_err(|e| Error::io(format!("cannot read {}", db_path.display()), e))?;
        let recovered = recovery::recover(dir, &file, &params)?;
        let mut db = Db {
            dir: dir.to_owned(),
            blobs_dir: dir.join("blobs"),
            file,
            params,
            pages: recovered.pages,
            trees: BTreeMap::new(),
            report: recovered.report,
        };
        db.trees = db.read_meta().map_err(Error::Meta)?;
        if let Err(e) = db.check_counter() {
            db.report
                .sled_would_refuse
                .push(format!("the ID counter (page 1) cannot be read: {e}"));
        }
        Ok(Arc::new(db))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn parameters(&self) -> &StorageParameters {
        &self.params
    }

    /// What recovery read and where the log ended.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// Pages in the recovered page table (freed and never-written ones included).
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The names of the trees, default tree included, in byte order.
    pub fn tree_names(&self) -> impl Iterator<Item = &[u8]> {
        self.trees.keys().map(Vec::as_slice)
    }

    pub fn has_tree(&self, name: &[u8]) -> bool {
        self.trees.contains_key(name)
    }

    pub(crate) fn root(&self, tree: &[u8]) -> Option<PageId> {
        self.trees.get(tree).copied()
    }

    /// The value of `key` in `tree`; `Ok(None)` when the tree or the key does not exist.
    pub fn get(&self, tree: &[u8], key: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, PageError> {
        let Some(root) = self.root(tree) else {
            return Ok(None);
        };
        let mut cache = scan::IndexCache::default();
        let (leaf, _) = scan::find_leaf(self, &mut cache, root, key).map_err(|(e, _)| e)?;
        Ok(leaf.get(key).map(|v| Zeroizing::new(v.to_vec())))
    }

    /// The table of trees: page 0's base, a sequence of (name, root page) pairs.
    fn read_meta(&self) -> Result<BTreeMap<Vec<u8>, PageId>, PageError> {
        // Sled creates it on first open; a database never opened has no trees.
        let Some(bytes) = self.read_special_page(META_PID, Body::Meta)? else {
            return Ok(BTreeMap::new());
        };
        let undecodable = |e: Malformed| PageError::Undecodable {
            pid: META_PID,
            detail: e.to_string(),
        };
        let mut trees = BTreeMap::new();
        let mut c = Cursor::new(&bytes);
        while !c.is_empty() {
            let name = c.bytes("tree name").map_err(undecodable)?;
            let root = c.varint("tree root").map_err(undecodable)?;
            trees.insert(bytes[name].to_vec(), root);
        }
        Ok(trees)
    }

    /// Sled's open reads the ID counter (page 1) along with the table of trees and fails when
    /// it cannot; nothing here needs its value, only to say where Sled would fail.
    fn check_counter(&self) -> Result<(), PageError> {
        // Sled creates it when the table ends before it.
        let Some(bytes) = self.read_special_page(COUNTER_PID, Body::Counter)? else {
            return Ok(());
        };
        Cursor::new(&bytes)
            .varint("ID counter")
            .map(drop)
            .map_err(|e| PageError::Undecodable {
                pid: COUNTER_PID,
                detail: e.to_string(),
            })
    }

    /// The base message of one of Sled's own pages (the table of trees, the ID counter), which
    /// must be of the kind `expected`; `None` when the page was never written.
    fn read_special_page(
        &self,
        pid: PageId,
        expected: Body,
    ) -> Result<Option<MessageBody>, PageError> {
        let base = match self.pages.get(pid)? {
            PageView::Present(mut fragments) => fragments.next().expect("a present page has a base"),
            PageView::Absent => return Ok(None),
            PageView::Freed => return Err(PageError::Freed { pid }),
        };
        let (body, bytes) = self.read_fragment(pid, &base)?;
        if body != expected {
            return Err(PageError::Undecodable {
                pid,
                detail: format!("its base is a {body:?} message"),
            });
        }
        Ok(Some(bytes))
    }

    /// Asks the kernel to read the pages' messages into its page cache now, in the background,
    /// for a read that will follow. Only a hint (`posix_fadvise`, which reads and never writes);
    /// it may be ignored, and is not given where there is no such call.
    pub(crate) fn will_need(&self, pids: &[PageId]) {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::io::AsRawFd;
            let ranges: Vec<(u64, u64)> = pids
                .iter()
                .filter_map(|&pid| match self.pages.get(pid) {
                    // Only a hint: a page that cannot be read is reported when it is read.
                    Ok(PageView::Present(fragments)) => Some(fragments),
                    _ => None,
                })
                .flatten()
                .filter(|f| f.blob.is_none())
                .map(|f| (f.lid, f.lid + u64::from(f.len)))
                .collect();
            for (start, end) in stretches(ranges, WILL_NEED_GAP) {
                let (Ok(offset), Ok(len)) = (libc::off_t::try_from(start), libc::off_t::try_from(end - start)) else {
                    continue;
                };
                // SAFETY: a plain system call on a file descriptor this value owns.
                unsafe { libc::posix_fadvise(self.file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = pids;
    }

    /// Reads one node: its base, then every fragment linked onto it, in order.
    pub(crate) fn read_node(&self, pid: PageId) -> Result<Node, PageError> {
        let mut fragments = match self.pages.get(pid)? {
            PageView::Present(fragments) => fragments,
            PageView::Absent => return Err(PageError::Missing { pid }),
            PageView::Freed => return Err(PageError::Freed { pid }),
        };
        let base = fragments.next().expect("a present page has a base");
        let undecodable = |e: node::NodeError| PageError::Undecodable {
            pid,
            detail: e.to_string(),
        };
        let (body, base) = self.read_fragment(pid, &base)?;
        if body != Body::Node {
            return Err(PageError::Undecodable {
                pid,
                detail: format!("its base is a {body:?} message, not a node"),
            });
        }
        let mut node = Node::decode(base).map_err(undecodable)?;
        for fragment in fragments {
            let (body, link) = self.read_fragment(pid, &fragment)?;
            if body != Body::Link {
                return Err(PageError::Undecodable {
                    pid,
                    detail: format!("a {body:?} message is linked onto it"),
                });
            }
            node.apply(link).map_err(undecodable)?;
        }
        Ok(node)
    }

    /// One message of a page, checked as Sled's page-in checks it (`PageCache::pull`): inline
    /// messages for their CRC, segment number and page ID, blobs for their CRC.
    fn read_fragment(
        &self,
        pid: PageId,
        fragment: &Fragment,
    ) -> Result<(Body, MessageBody), PageError> {
        let damaged = |detail: String| PageError::Damaged {
            pid,
            lsn: fragment.lsn,
            lid: fragment.lid,
            detail,
        };
        let (kind, body) =
            if let Some(blob) = fragment.blob {
                read_blob(&self.blobs_dir, blob)
                    .map_err(|e| damaged(log::ReadFailure::Blob(e).to_string()))?
            } else {
                let segment_size = self.params.segment_size;
                let at = MessageAt {
                    lid: fragment.lid,
                    expected_segment_number: fragment.lsn as u64 / segment_size,
                    segment_size,
                    blobs_dir: &self.blobs_dir,
                    len_hint: fragment.len as usize,
                    keep_body: true,
                };
                match read_message(&self.file, &at).map_err(|e| damaged(e.to_string()))? {
                    LogRead::Page {
                        header,
                        body: Some(body),
                        ..
                    } => {
                        if header.pid != pid {
                            return Err(damaged(format!(
                                "the message there belongs to page {}",
                                header.pid
                            )));
                        }
                        (header.kind, body)
                    }
                    _ => return Err(damaged(
                        "no intact page message there (torn, overwritten or not a page message)"
                            .into(),
                    )),
                }
            };
        let body_kind = kind
            .body()
            .ok_or_else(|| damaged(format!("a {kind:?} message is not page content")))?;
        Ok((body_kind, body))
    }
}

#[cfg(test)]
mod tests {
    use super::stretches;

    #[test]
    fn read_ahead_joins_nearby_messages_and_keeps_distant_ones_apart() {
        // Out of order, overlapping, adjacent, a small gap, and one far away.
        let ranges = vec![(5000, 6000), (0, 1000), (1000, 2000), (1500, 1800), (2100, 3000), (100_000, 100_500)];
        assert_eq!(stretches(ranges.clone(), 0), vec![(0, 2000), (2100, 3000), (5000, 6000), (100_000, 100_500)]);
        assert_eq!(stretches(ranges.clone(), 2000), vec![(0, 6000), (100_000, 100_500)]);
        assert_eq!(stretches(ranges, 1 << 20), vec![(0, 100_500)]);
        assert_eq!(stretches(Vec::new(), 16), Vec::<(u64, u64)>::new());
        // A range at the very end of the offsets does not overflow the gap.
        assert_eq!(stretches(vec![(u64::MAX - 10, u64::MAX), (u64::MAX - 5, u64::MAX)], 16), vec![(u64::MAX - 10, u64::MAX)]);
    }
}
