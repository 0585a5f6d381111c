//! Sled's snapshot file (`snap.<lsn>`): the page table as an open left it. A stable LSN, the
//! active segment, then one page state after another in page ID order (a freed page, or a base
//! and its fragments: LSN, disk pointer, length each), then the length of all that (8 bytes) and
//! its CRC32 (4 bytes). Sled 0.34.7, `pagecache/snapshot.rs`.
//!
//! The file is read whole once at open, for its checksum and to check every state decodes; the
//! page table then keeps only where each page's state starts, and reads it again from the file
//! when the page is read. The states are what the table would otherwise hold in memory, about
//! 9 bytes a session of a long-lived store (54 MB at 5M sessions, against 4 bytes a page now:
//! the reader alone peaks at 10 MB there), and the file is part of the store, opened read-only
//! like the rest.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::codec::{Cursor, Malformed};
use crate::error::Error;
use crate::log::{LogOffset, Lsn, ReadAt};
use crate::pages::{Fragment, PageTable};

/// A snapshot: the stable LSN it covers, and the page table at that point.
pub(crate) struct Snapshot {
    pub stable_lsn: Option<Lsn>,
    pub pages: PageTable,
}

/// The snapshot to start from, and what Sled would have refused about the choice.
///
/// Sled loads the last file named `snap.*` in byte order (its own `.generating` leftovers
/// included, only `.in___motion` excluded) and refuses a damaged one. A `.generating` file is
/// one an open was writing when it was killed; the log is as that open found it, so the snapshot
/// before it, replayed onward, recovers the same pages: it is read instead (and noted). A
/// damaged finished snapshot stays an error, as in Sled: an older one may point into segments
/// reused since.
pub(crate) fn read_snapshot(
    dir: &Path,
    segment_lsns: &[Option<Lsn>],
    segment_size: u64,
) -> Result<(Option<(PathBuf, Snapshot)>, Vec<String>), Error> {
    let mut notes = Vec::new();
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("snap.") && !name.ends_with(".in___motion")
        })
        .collect();
    candidates.sort();
    while let Some(path) = candidates.pop() {
        match read_snapshot_file(&path, segment_lsns, segment_size) {
            Ok(snapshot) => return Ok((Some((path, snapshot)), notes)),
            Err(Error::Snapshot { path, detail })
                if path.to_string_lossy().ends_with(".generating") =>
            {
                notes.push(format!("the unfinished snapshot {} is damaged ({detail}): recovered from the one before it", path.display()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((None, notes))
}

/// The most bytes one page state of a snapshot takes: a tag and up to 255 fragments of an LSN,
/// a disk pointer (tag, varint, blob LSN) and a varint length.
const MAX_PAGE_STATE: usize = 1 + 255 * (8 + 1 + 9 + 8 + 9);
/// What a page state read again is read with first: a base and a few links (Sled consolidates
/// a page after a handful) take well under this; a longer one is read again whole.
const TYPICAL_PAGE_STATE: usize = 512;
/// How much of a snapshot is read at a time.
const SNAPSHOT_READ: usize = 1 << 20;

/// A snapshot's body read a megabyte at a time, its CRC computed on the way: a 5M-session
/// store's snapshot is 49 MB, which a whole read would hold next to the table built from it.
struct SnapshotBody {
    file: File,
    /// Body bytes not read yet.
    left: u64,
    window: Vec<u8>,
    start: usize,
    /// Where `window[start]` lies in the file.
    position: u64,
    crc: crc32fast::Hasher,
}

impl SnapshotBody {
    /// Makes the window hold at least `want` bytes, or all the body has left.
    fn fill(&mut self, want: usize) -> std::io::Result<&[u8]> {
        if self.window.len() - self.start < want && self.left > 0 {
            self.window.drain(..self.start);
            self.start = 0;
            let take = self.left.min((SNAPSHOT_READ + want) as u64) as usize;
            let had = self.window.len();
            self.window.resize(had + take, 0);
            self.file.read_exact(&mut self.window[had..])?;
            self.crc.update(&self.window[had..]);
            self.left -= take as u64;
        }
        Ok(&self.window[self.start..])
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.position += n as u64;
    }

    /// Reads the rest of the body (for its CRC) and the trailer; whether the CRC matches.
    fn crc_matches(&mut self) -> std::io::Result<bool> {
        while self.left > 0 {
            self.consume(self.window.len() - self.start);
            self.fill(1)?;
        }
        // The body's length (8 bytes), then its CRC32 (4 bytes).
        let mut trailer = [0u8; 12];
        self.file.read_exact(&mut trailer)?;
        let stored = u32::from_le_bytes(trailer[8..].try_into().unwrap());
        Ok(self.crc.clone().finalize() == stored)
    }
}

fn read_snapshot_file(
    path: &Path,
    segment_lsns: &[Option<Lsn>],
    segment_size: u64,
) -> Result<Snapshot, Error> {
    let path = path.to_owned();
    let io_error = |e| Error::io(format!("cannot read {}", path.display()), e);
    let damaged = |detail: String| Error::Snapshot {
        path: path.clone(),
        detail,
    };
    let file = File::open(&path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    // The serialized snapshot, its length (8 bytes) and a CRC32 of it (4 bytes).
    if file_len <= 12 {
        return Err(damaged("the file is empty or truncated".into()));
    }
    let mut body = SnapshotBody {
        file,
        left: file_len - 12,
        window: Vec::with_capacity(SNAPSHOT_READ + MAX_PAGE_STATE),
        start: 0,
        position: 0,
        crc: crc32fast::Hasher::new(),
    };
    let parsed = parse_snapshot(&mut body, segment_lsns, segment_size);
    // A damaged file is named for its checksum first, as when the whole file was checked
    // before parsing.
    if !body.crc_matches().map_err(io_error)? {
        return Err(damaged("its checksum does not match".into()));
    }
    match parsed {
        Ok(mut snapshot) => {
            snapshot.pages.attach_snapshot(SnapshotFile {
                file: body.file,
                path: path.clone(),
                body_len: file_len - 12,
            });
            Ok(snapshot)
        }
        Err(SnapshotError::Io(e)) => Err(io_error(e)),
        Err(SnapshotError::Malformed(e)) => Err(damaged(e.to_string())),
    }
}

enum SnapshotError {
    Io(std::io::Error),
    Malformed(Malformed),
}

impl From<Malformed> for SnapshotError {
    fn from(e: Malformed) -> Self {
        SnapshotError::Malformed(e)
    }
}

fn parse_snapshot(
    body: &mut SnapshotBody,
    segment_lsns: &[Option<Lsn>],
    segment_size: u64,
) -> Result<Snapshot, SnapshotError> {
    let mut c = Cursor::new(body.fill(MAX_PAGE_STATE).map_err(SnapshotError::Io)?);
    let stable_lsn = c.i64_option("snapshot stable LSN")?;
    let _active_segment = c.varint_option("snapshot active segment")?;
    let header_len = c.position();
    body.consume(header_len);
    let mut pages = PageTable::new(segment_size, segment_lsns);
    let table_error = |_| Malformed("snapshot page table");
    let mut pid = 0u64;
    // One page state after another until the bytes end (Sled's `deserialize_sequence`).
    loop {
        let at = body.position;
        let window = body.fill(MAX_PAGE_STATE).map_err(SnapshotError::Io)?;
        if window.is_empty() {
            break;
        }
        let mut c = Cursor::new(window);
        let mut kept = Vec::new();
        let present = decode_page_state(&mut c, |fragment| kept.push(fragment))?;
        if !present {
            pages.free(pid).map_err(table_error)?;
        } else if !pages.in_snapshot(pid, at).map_err(table_error)? {
            // Past where the table can point into the file (a snapshot of gigabytes): held.
            let mut fragments = kept.into_iter();
            pages.replace(pid, fragments.next().expect("a present state has a base")).map_err(table_error)?;
            for fragment in fragments {
                pages.append(pid, fragment).map_err(table_error)?;
            }
        }
        let state_len = c.position();
        body.consume(state_len);
        pid += 1;
    }
    Ok(Snapshot { stable_lsn, pages })
}

/// One page state: calls `fragment` for the base and each link of a present page, in order;
/// `false` for a freed page.
fn decode_page_state(
    c: &mut Cursor<'_>,
    mut fragment: impl FnMut(Fragment),
) -> Result<bool, Malformed> {
    let tag = c.u8("snapshot page state")?;
    if tag == 0 {
        let _lsn = c.i64_le("freed page")?;
        disk_pointer(c)?;
        return Ok(false);
    }
    // `tag - 1` fragments follow the base.
    for _ in 0..tag {
        let lsn = c.i64_le("page fragment")?;
        let (lid, blob) = disk_pointer(c)?;
        let len = c.varint("page fragment")?;
        fragment(Fragment {
            lsn,
            lid,
            blob,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        });
    }
    Ok(true)
}

fn disk_pointer(c: &mut Cursor<'_>) -> Result<(LogOffset, Option<Lsn>), Malformed> {
    match c.u8("disk pointer")? {
        0 => Ok((c.varint("disk pointer")?, None)),
        1 => Ok((c.varint("disk pointer")?, Some(c.i64_le("blob pointer")?))),
        _ => Err(Malformed("disk pointer")),
    }
}

/// The snapshot recovery started from, kept open to read its pages' states again.
#[derive(Debug)]
pub(crate) struct SnapshotFile {
    file: File,
    path: PathBuf,
    /// Where the page states end (the trailer follows).
    body_len: u64,
}

impl SnapshotFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fragments of the present page whose state starts `offset` bytes into the file, base
    /// first. The whole file was checked at open; an error here means it changed or cannot be
    /// read now.
    pub fn fragments(&self, offset: u64) -> Result<Vec<Fragment>, String> {
        let mut scratch = Vec::new();
        let left = usize::try_from(self.body_len.saturating_sub(offset)).unwrap_or(usize::MAX);
        for want in [TYPICAL_PAGE_STATE.min(left), MAX_PAGE_STATE.min(left)] {
            let bytes = self
                .file
                .view(offset, want, &mut scratch)
                .ok_or_else(|| format!("cannot read {} bytes at offset {offset}", want))?;
            let mut fragments = Vec::new();
            match decode_page_state(&mut Cursor::new(bytes), |f| fragments.push(f)) {
                Ok(true) => return Ok(fragments),
                Ok(false) => return Err(format!("the state at offset {offset} is now a freed page's")),
                // Cut short by the first read: read it whole.
                Err(_) if want < MAX_PAGE_STATE.min(left) => continue,
                Err(e) => return Err(format!("the state at offset {offset} no longer decodes: {e}")),
            }
        }
        unreachable!("the second read is whole")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A page state as Sled writes it (every integer in its longest varint form, which decodes
    /// the same): `None` for a freed page.
    pub fn encode_page_state(fragments: Option<&[Fragment]>) -> Vec<u8> {
        let varint = |out: &mut Vec<u8>, v: u64| {
            out.push(255);
            out.extend_from_slice(&v.to_le_bytes());
        };
        let pointer = |out: &mut Vec<u8>, f: &Fragment| match f.blob {
            None => {
                out.push(0);
                varint(out, f.lid);
            }
            Some(blob) => {
                out.push(1);
                varint(out, f.lid);
                out.extend_from_slice(&blob.to_le_bytes());
            }
        };
        let mut out = Vec::new();
        match fragments {
            None => {
                out.push(0);
                out.extend_from_slice(&7i64.to_le_bytes());
                pointer(&mut out, &Fragment { lsn: 7, lid: 7, blob: None, len: 0 });
            }
            Some(fragments) => {
                out.push(u8::try_from(fragments.len()).unwrap());
                for f in fragments {
                    out.extend_from_slice(&f.lsn.to_le_bytes());
                    pointer(&mut out, f);
                    varint(&mut out, u64::from(f.len));
                }
            }
        }
        out
    }

    /// A file of page states (no header or trailer: offsets are what the table is given).
    pub fn snapshot_file(states: &[u8]) -> SnapshotFile {
        let path = std::env::temp_dir().join(format!("sled-readonly-snapshot-{}-{}", std::process::id(), rand_suffix()));
        std::fs::write(&path, states).unwrap();
        let file = File::open(&path).unwrap();
        // The open handle keeps the bytes; the name is not needed.
        std::fs::remove_file(&path).unwrap();
        SnapshotFile { file, path, body_len: states.len() as u64 }
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn page_states_read_again_short_and_long() {
        let fragment = |i: i64| Fragment { lsn: 1000 + i, lid: 5_000_000 + i as u64 * 100, blob: (i % 3 == 0).then_some(i), len: 90 };
        let short: Vec<Fragment> = (0..3).map(fragment).collect();
        // 200 fragments: far past the first read.
        let long: Vec<Fragment> = (0..200).map(fragment).collect();
        let mut bytes = encode_page_state(Some(&short));
        let long_at = bytes.len() as u64;
        bytes.extend(encode_page_state(Some(&long)));
        let freed_at = bytes.len() as u64;
        bytes.extend(encode_page_state(None));
        let file = snapshot_file(&bytes);
        assert_eq!(file.fragments(0).unwrap(), short);
        assert_eq!(file.fragments(long_at).unwrap(), long);
        assert!(file.fragments(freed_at).unwrap_err().contains("freed"));
        assert!(file.fragments(long_at + 1).is_err());
        assert!(file.fragments(bytes.len() as u64 + 10).is_err());
    }
}
