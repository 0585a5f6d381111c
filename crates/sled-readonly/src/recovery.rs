//! What Sled's `open` recovers, computed without writing: the storage parameters from `conf`,
//! the page table from the newest snapshot, brought up to the log's tip by replaying every
//! message after it. Sled 0.34.7 (`config.rs`, `pagecache/snapshot.rs`, `pagecache/iterator.rs`)
//! does the same and then writes: it zeroes the log's torn tail and unusable segments and writes
//! a new snapshot. Those writes change what later opens see on disk, not what this open
//! recovers, so a reader can skip them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::buffer::SecretBuf;

use crate::error::Error;
use crate::log::{
    read_message, valid_entry_offset, LogOffset, LogRead, Lsn, MessageAt, ReadAt, SegmentBuf,
    SegmentHeader, MAX_MSG_HEADER_LEN, SEG_HEADER_LEN,
};
use crate::pages::{ApplyError, Fragment, PageTable};
use crate::snapshot::{read_snapshot, Snapshot};

/// The storage parameters Sled keeps in `conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageParameters {
    pub segment_size: u64,
    pub use_compression: bool,
    pub version: (u64, u64),
}

/// Reads `conf`: `key: value` lines followed by a CRC32 of them. Sled warns on a bad CRC and goes
/// on; so do we (the lines themselves are checked).
pub(crate) fn read_conf(dir: &Path) -> Result<StorageParameters, Error> {
    let path = dir.join("conf");
    let bad = |detail: &str| Error::Conf {
        path: path.clone(),
        detail: detail.to_owned(),
    };
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    if bytes.len() <= 8 {
        return Err(bad("the file is empty or truncated"));
    }
    let text = std::str::from_utf8(&bytes[..bytes.len() - 4])
        .map_err(|_| bad("it is not text (a Sled older than 0.29?)"))?;
    let mut lines = std::collections::HashMap::new();
    for line in text.lines() {
        let mut parts = line.split(": ");
        let (Some(k), Some(v)) = (parts.next(), parts.next()) else {
            return Err(bad(&format!("unreadable line {line:?}")));
        };
        lines.insert(k, v);
    }
    let segment_size: u64 = lines
        .get("segment_size")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no readable segment_size"))?;
    if !segment_size.is_power_of_two() || !(256..=1 << 24).contains(&segment_size) {
        return Err(bad(&format!(
            "segment_size {segment_size} is not one Sled accepts"
        )));
    }
    let use_compression: bool = lines
        .get("use_compression")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no readable use_compression"))?;
    let version = lines
        .get("version")
        .and_then(|v| {
            let mut parts = v.split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .ok_or_else(|| bad("no readable version"))?;
    Ok(StorageParameters {
        segment_size,
        use_compression,
        version,
    })
}

/// What recovery found, for the caller's report.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// The snapshot recovery started from, if there was one.
    pub snapshot: Option<PathBuf>,
    pub snapshot_stable_lsn: Option<Lsn>,
    /// Messages read after the snapshot and applied to the page table.
    pub messages_replayed: u64,
    /// Segments of the log whose headers were valid and recent enough to read.
    pub segments_read: u64,
    /// The last byte of the last message recovery accepted (Sled's stable tip).
    pub stable_tip: Lsn,
    /// Why Sled's own open would refuse (or panic on) this database, if it would: damage that
    /// leaves the trees readable where their pages are intact. The database is read anyway (a
    /// store Sled cannot open is the store whose keys most need saving), and the caller tells
    /// its user; each page that cannot be read is still reported as the key range it loses.
    pub sled_would_refuse: Vec<String>,
}

pub(crate) struct Recovered {
    pub pages: PageTable,
    pub report: RecoveryReport,
}

/// The log's segments by LSN, read one after another from a starting LSN; yields every page
/// message as Sled's `LogIter` does, with its rules for where the log ends.
struct LogIter<'a> {
    file: &'a File,
    blobs_dir: &'a Path,
    segment_size: u64,
    segments: BTreeMap<Lsn, LogOffset>,
    segment: Option<SegmentBuf>,
    /// Reading stops past this LSN (the end of the last message of the contiguous tail).
    max_lsn: Option<Lsn>,
    cur_lsn: Option<Lsn>,
    /// In the final pass a damaged message ends only its segment (the rest of a segment reused
    /// after being freed may be older data); in the tail check it ends the log.
    last_stage: bool,
    segments_read: u64,
}

struct PageMessage {
    effect: crate::log::PageEffect,
    pid: u64,
    fragment: Fragment,
}

impl<'a> LogIter<'a> {
    /// The next page message; `Ok(None)` where Sled's iterator ends (its log tip); `Err` only
    /// for what Sled would refuse to open or panic on.
    fn next(&mut self) -> Result<Option<PageMessage>, Error> {
        loop {
            if !valid_entry_offset(self.cur_lsn.unwrap_or(0), self.segment_size) {
                self.segment = None;
            }
            if self.segment.is_none() && !self.read_segment()? {
                return Ok(None);
            }
            let lsn = self.cur_lsn.expect("set by read_segment");
            if let (Some(max), Some(cur)) = (self.max_lsn, self.cur_lsn) {
                if cur > max {
                    return Ok(None);
                }
            }
            let segment = self.segment.as_ref().expect("read above");
            let lid = segment.offset + (lsn as u64 % self.segment_size);
            let expected_segment_number = lsn as u64 / self.segment_size;
            let at = MessageAt {
                lid,
                expected_segment_number,
                segment_size: self.segment_size,
                blobs_dir: self.blobs_dir,
                len_hint: 0,
                keep_body: false,
            };
            let read = match read_message(segment, &at) {
                Ok(read) => read,
                // Sled's iterator stops at any read error: the log ends here.
                Err(_) => return Ok(None),
            };
            match read {
                LogRead::Page {
                    header,
                    blob,
                    inline_len,
                    ..
                } => {
                    self.cur_lsn = Some(lsn + i64::from(inline_len));
                    let Some(effect) = header.kind.page_effect() else {
                        return Err(Error::Log {
                            lsn,
                            detail: format!(
                                "a {:?} message where a page message belongs",
                                header.kind
                            ),
                        });
                    };
                    return Ok(Some(PageMessage {
                        effect,
                        pid: header.pid,
                        fragment: Fragment {
                            lsn,
                            lid,
                            blob,
                            len: inline_len,
                        },
                    }));
                }
                LogRead::BatchManifest {
                    last_lsn_in_batch,
                    inline_len,
                } => {
                    // A batch whose end never reached the disk: recovery stops before it.
                    if self.max_lsn.is_some_and(|max| last_lsn_in_batch > max) {
                        return Ok(None);
                    }
                    self.cur_lsn = Some(lsn + i64::from(inline_len));
                }
                LogRead::Canceled(inline_len) | LogRead::DanglingBlob(inline_len) => {
                    self.cur_lsn = Some(lsn + i64::from(inline_len));
                }
                LogRead::Corrupted if !self.last_stage => return Ok(None),
                LogRead::Corrupted | LogRead::Cap => self.segment = None,
            }
        }
    }

    /// Loads the next segment; `false` where Sled's iterator would end.
    fn read_segment(&mut self) -> Result<bool, Error> {
        let Some((&lsn, &offset)) = self.segments.iter().next() else {
            return Ok(false);
        };
        if self.max_lsn.is_some_and(|max| lsn > max) {
            return Ok(false);
        }
        let header = match SegmentHeader::read(self.file, offset) {
            Ok(h) => h,
            Err(_) => return Ok(false),
        };
        if offset % self.segment_size != 0
            || header.lsn % self.segment_size as i64 != 0
            || header.lsn != lsn
        {
            return Ok(false);
        }
        let mut buf = SecretBuf::new();
        if self
            .file
            .view(offset, self.segment_size as usize, &mut buf)
            .is_none()
        {
            return Ok(false);
        }
        self.cur_lsn = Some(header.lsn + SEG_HEADER_LEN as i64);
        self.segment = Some(SegmentBuf { buf, offset });
        self.segments.remove(&lsn);
        self.segments_read += 1;
        Ok(true)
    }
}

/// Sled's `scan_segment_headers_and_tail`: the valid segment headers at or above `min` by LSN,
/// and the end of the last message of the log's contiguous tail (the segments above the highest
/// stable LSN any header records must follow each other without a gap; the first gap or damaged
/// message there is where the log ends).
/// Every segment's header, in file order; `None` where it cannot be read.
fn read_segment_headers(file: &File, segment_size: u64) -> Result<Vec<Option<SegmentHeader>>, Error> {
    let file_len = file
        .metadata()
        .map_err(|e| Error::io("cannot read the log's size".into(), e))?
        .len();
    let count =
        file_len / segment_size + u64::from(file_len % segment_size >= SEG_HEADER_LEN as u64);
    Ok((0..count)
        .map(|index| SegmentHeader::read(file, index * segment_size).ok())
        .collect())
}

fn scan_segments(
    file: &File,
    blobs_dir: &Path,
    segment_size: u64,
    min: Lsn,
    headers: &[Option<SegmentHeader>],
) -> Result<(BTreeMap<Lsn, LogOffset>, Lsn), Error> {
    let mut ordering = BTreeMap::new();
    let mut max_header_stable_lsn = min;
    for (index, header) in headers.iter().enumerate() {
        let offset = index as u64 * segment_size;
        let Some(header) = header else {
            continue;
        };
        if !header.ok || header.lsn < min {
            continue;
        }
        max_header_stable_lsn = max_header_stable_lsn.max(header.max_stable_lsn);
        if let Some(other) = ordering.insert(header.lsn, offset) {
            // Sled asserts this never happens: recovery zeroes one of the two.
            return Err(Error::Log {
                lsn: header.lsn,
                detail: format!("two segments claim this LSN, at offsets {other} and {offset}"),
            });
        }
    }

    let lowest_in_tail = (max_header_stable_lsn / segment_size as i64 * segment_size as i64).max(0);
    let mut expected = lowest_in_tail;
    let mut missing = None;
    let mut tail = BTreeMap::new();
    for (&lsn, &offset) in ordering.range(lowest_in_tail..) {
        if lsn != expected {
            missing = Some(expected);
            break;
        }
        tail.insert(lsn, offset);
        expected += segment_size as i64;
    }
    let mut iter = LogIter {
        file,
        blobs_dir,
        segment_size,
        segments: tail,
        segment: None,
        max_lsn: missing,
        cur_lsn: None,
        last_stage: false,
        segments_read: 0,
    };
    while iter.next()?.is_some() {}
    let end_of_last_message = iter.cur_lsn.unwrap_or(0) - 1;
    Ok((ordering, end_of_last_message))
}

/// Recovers the page table as Sled's open would.
pub(crate) fn recover(
    dir: &Path,
    file: &File,
    params: &StorageParameters,
) -> Result<Recovered, Error> {
    let segment_size = params.segment_size;
    let blobs_dir = dir.join("blobs");
    let headers = read_segment_headers(file, segment_size)?;
    // What the page table derives each packed fragment's LSN segment from.
    let segment_lsns: Vec<Option<Lsn>> = headers
        .iter()
        .map(|header| header.filter(|h| h.ok).map(|h| h.lsn))
        .collect();
    let (chosen, mut sled_would_refuse) = read_snapshot(dir, &segment_lsns, segment_size)?;
    let (snapshot_path, snapshot) = match chosen {
        Some((path, snapshot)) => (Some(path), snapshot),
        None => (
            None,
            Snapshot {
                stable_lsn: None,
                pages: PageTable::new(segment_size, &segment_lsns),
            },
        ),
    };
    let Snapshot {
        stable_lsn,
        mut pages,
    } = snapshot;
    let normalized = stable_lsn.unwrap_or(0) / segment_size as i64 * segment_size as i64;
    let (ordering, max_lsn) = scan_segments(file, &blobs_dir, segment_size, normalized, &headers)?;
    let segments = ordering
        .into_iter()
        .filter(|&(lsn, _)| lsn >= normalized)
        .collect();
    let mut iter = LogIter {
        file,
        blobs_dir: &blobs_dir,
        segment_size,
        segments,
        segment: None,
        max_lsn: Some(max_lsn),
        cur_lsn: None,
        last_stage: true,
        segments_read: 0,
    };
    let mut replayed = 0u64;
    while let Some(message) = iter.next()? {
        // The snapshot already holds everything before its stable LSN.
        if message.fragment.lsn < stable_lsn.unwrap_or(-1) {
            continue;
        }
        if message.fragment.lsn >= max_lsn {
            return Err(Error::Log {
                lsn: message.fragment.lsn,
                detail: "a message past the log's recovered tip".into(),
            });
        }
        pages
            .apply(message.effect, message.pid, message.fragment)
            .map_err(|e| match e {
                ApplyError::PidOutOfRange(pid) => Error::Log {
                    lsn: message.fragment.lsn,
                    detail: format!("page {pid} is out of range"),
                },
                ApplyError::Snapshot(detail) => Error::Snapshot {
                    path: snapshot_path.clone().unwrap_or_default(),
                    detail,
                },
            })?;
        replayed += 1;
    }
    // Sled's open then writes a snapshot of where the log ended, and refuses the database when
    // that is before the stable LSN of the snapshot it started from (the log lost messages the
    // snapshot's pages may point to: reading those pages fails their checks, and costs their
    // key ranges). Its stable LSN: where the log iterator stopped, or the next segment when no
    // message fits in what is left of that one.
    if let Some(iterated) = iter.cur_lsn {
        let progress = iterated % segment_size as Lsn;
        let recovered = if progress + MAX_MSG_HEADER_LEN as Lsn >= segment_size as Lsn {
            iterated - progress + segment_size as Lsn
        } else {
            iterated
        };
        if recovered < stable_lsn.unwrap_or(0) {
            sled_would_refuse.push(format!(
                "the log ends at LSN {recovered}, before LSN {}, which the snapshot says is stable",
                stable_lsn.unwrap_or(0)
            ));
        }
    }
    // Sled's open panics on a table with a gap (a page whose every version is lost, below
    // pages that survive): it can neither write it into its new snapshot nor load it.
    if let Some(pid) = pages.first_hole() {
        sled_would_refuse.push(format!(
            "page {pid} has no version left in the log, below pages that do"
        ));
    }
    pages.shrink();
    Ok(Recovered {
        pages,
        report: RecoveryReport {
            snapshot: snapshot_path,
            snapshot_stable_lsn: stable_lsn,
            messages_replayed: replayed,
            segments_read: iter.segments_read,
            stable_tip: iter.cur_lsn.map_or(max_lsn, |cur| cur - 1),
            sled_would_refuse,
        },
    })
}
