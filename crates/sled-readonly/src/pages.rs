//! The page table recovery builds: for every page, where its current version lies in the log (a
//! base and the fragments linked onto it since), or that it was freed. Sled's `PageState`.
//!
//! The table is held for the whole read and grows with the store (a 5M-session store has about
//! 850k pages and 2.8M fragments), so it is kept compact: one `u32` a page. A page the snapshot
//! holds and the log has not changed since is only where its state starts in the snapshot file,
//! read again when the page is read (most pages of a store: an open writes a new snapshot). The
//! others' fragments are 16 bytes each in an arena of fixed-size chunks, each page's chained from
//! its slot. A `Vec` of full fragments per page cost about 37 bytes a session (its slot, its heap
//! block, its spare capacity and 40-byte fragments); the arena alone about 9; this, where the
//! snapshot is recent, under 1.

use std::collections::HashMap;

use crate::error::PageError;
use crate::log::{LogOffset, Lsn, PageEffect, PageId, MAX_PID};
use crate::snapshot::SnapshotFile;

/// Where one message of a page lies: its LSN, its offset in the log, and its blob if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub lsn: Lsn,
    pub lid: LogOffset,
    pub blob: Option<Lsn>,
    /// The bytes the message takes in the log (header and inline body).
    pub len: u32,
}

/// A page as the table holds it.
pub(crate) enum PageView<'a> {
    /// Never written, or only linked to before any base (Sled leaves such holes uninitialized).
    Absent,
    /// The base and the links on top of it, in LSN order (never empty).
    Present(Fragments<'a>),
    Freed,
}

/// A page's slot: the index of its first fragment in the arena (below `IN_SNAPSHOT`), where its
/// state starts in the snapshot file (`IN_SNAPSHOT` + the offset, below `FREED`), or one of these.
const ABSENT: u32 = u32::MAX;
const FREED: u32 = u32::MAX - 1;
const IN_SNAPSHOT: u32 = 1 << 31;
/// The `next` of a page's last fragment (and of the free list's last entry).
const END: u32 = u32::MAX;
/// In `Packed::len`: the fragment did not fit the packed form and is kept whole in `unusual`.
const UNUSUAL: u32 = u32::MAX;

/// In `PageTable::segment_numbers`: no intact header.
const NO_SEGMENT: u32 = u32::MAX;

const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;

/// One fragment in the arena. Every message Sled writes lies at the same offset in its segment
/// as its LSN does in the LSN's segment (`lid = segment start + lsn % segment_size`), and the
/// LSN's segment is the one the segment's header names while the segment is not reused. So a
/// fragment is its segment's place in the file and its offset there; anything else (a blob, a
/// fragment in a segment reused since, which reading must find stale) is kept whole beside.
#[derive(Debug, Clone, Copy)]
struct Packed {
    /// `lid / segment_size`: the segment's place in the file.
    file_segment: u32,
    /// `lid % segment_size`, equal to `lsn % segment_size`.
    offset: u32,
    len: u32,
    /// The page's next fragment, or `END`.
    next: u32,
}

#[derive(Debug)]
pub(crate) struct PageTable {
    segment_size: u64,
    /// For each segment of the file, the LSN segment its header names (`lsn / segment_size`),
    /// or `NO_SEGMENT` where the header is unreadable.
    segment_numbers: Vec<u32>,
    /// One slot a page: the index of its base in the arena, `ABSENT` or `FREED`.
    slots: Vec<u32>,
    /// Fixed-size chunks, so the arena never copies itself to grow (a doubling `Vec` would
    /// hold three times its size for a moment).
    chunks: Vec<Vec<Packed>>,
    /// Entries taken so far (used or free).
    used: u32,
    /// Entries of replaced or freed pages, chained through `next`, taken again first: the arena
    /// stays the size of the most fragments live at once, however long the replayed log.
    free: u32,
    unusual: HashMap<u32, Fragment>,
    /// Where the states of `IN_SNAPSHOT` slots are read from.
    snapshot: Option<SnapshotFile>,
    /// How far a link to a page past the end would have grown Sled's own table: Sled grows it to
    /// hold the page, finds no base there and pops the page alone, so the pages between the old
    /// end and it stay in its table, never initialized.
    dangling_end: PageId,
}

/// A page ID past what Sled can allocate: the message is not what it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidOutOfRange(pub PageId);

/// Why replaying a message failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApplyError {
    PidOutOfRange(PageId),
    /// A page's state could not be read again from the snapshot (to link a fragment onto it).
    Snapshot(String),
}

impl From<PidOutOfRange> for ApplyError {
    fn from(e: PidOutOfRange) -> Self {
        ApplyError::PidOutOfRange(e.0)
    }
}

/// A page's fragments, base first.
#[derive(Clone)]
pub(crate) struct Fragments<'a>(Source<'a>);

#[derive(Clone)]
enum Source<'a> {
    Arena { table: &'a PageTable, next: u32 },
    Snapshot(std::vec::IntoIter<Fragment>),
}

impl Iterator for Fragments<'_> {
    type Item = Fragment;

    fn next(&mut self) -> Option<Fragment> {
        match &mut self.0 {
            Source::Arena { table, next } => {
                if *next == END {
                    return None;
                }
                let index = *next;
                *next = table.entry(index).next;
                Some(table.fragment(index))
            }
            Source::Snapshot(fragments) => fragments.next(),
        }
    }
}

impl PageTable {
    /// `segment_lsns`: each of the file's segments' header LSN, where it has an intact one.
    pub fn new(segment_size: u64, segment_lsns: &[Option<Lsn>]) -> Self {
        let segment_numbers = segment_lsns
            .iter()
            .map(|lsn| {
                lsn.and_then(|lsn| u64::try_from(lsn).ok())
                    .and_then(|lsn| u32::try_from(lsn / segment_size).ok())
                    .filter(|&n| n != NO_SEGMENT)
                    .unwrap_or(NO_SEGMENT)
            })
            .collect();
        PageTable {
            segment_size,
            segment_numbers,
            slots: Vec::new(),
            chunks: Vec::new(),
            used: 0,
            free: END,
            unusual: HashMap::new(),
            snapshot: None,
            dangling_end: 0,
        }
    }

    /// Where `IN_SNAPSHOT` pages are read from; given once the snapshot was read whole.
    pub fn attach_snapshot(&mut self, snapshot: SnapshotFile) {
        self.snapshot = Some(snapshot);
    }

    /// A page's state; reading one the snapshot holds can fail (the file changed since the open
    /// or cannot be read now).
    pub fn get(&self, pid: PageId) -> Result<PageView<'_>, PageError> {
        let slot = usize::try_from(pid)
            .ok()
            .and_then(|i| self.slots.get(i).copied())
            .unwrap_or(ABSENT);
        Ok(match slot {
            ABSENT => PageView::Absent,
            FREED => PageView::Freed,
            first if first < IN_SNAPSHOT => PageView::Present(Fragments(Source::Arena {
                table: self,
                next: first,
            })),
            at => {
                let fragments = self
                    .snapshot_fragments(at)
                    .map_err(|detail| PageError::Snapshot { pid, detail })?;
                PageView::Present(Fragments(Source::Snapshot(fragments.into_iter())))
            }
        })
    }

    /// Records a present page by where its state starts in the snapshot file; `false` (nothing
    /// recorded) when the offset is past what a slot holds.
    pub fn in_snapshot(&mut self, pid: PageId, offset: u64) -> Result<bool, PidOutOfRange> {
        let Some(slot) = u32::try_from(offset)
            .ok()
            .and_then(|offset| offset.checked_add(IN_SNAPSHOT))
            .filter(|&slot| slot < FREED)
        else {
            return Ok(false);
        };
        let old = std::mem::replace(self.slot(pid)?, slot);
        self.release(old);
        Ok(true)
    }

    fn snapshot_fragments(&self, slot: u32) -> Result<Vec<Fragment>, String> {
        let snapshot = self.snapshot.as_ref().ok_or("the snapshot is not open")?;
        let fragments = snapshot.fragments(u64::from(slot - IN_SNAPSHOT))?;
        if fragments.is_empty() {
            return Err(format!("{}: a present page without a base", snapshot.path().display()));
        }
        Ok(fragments)
    }

    /// Moves a page the snapshot holds into the arena, so the log's links can be chained on.
    fn materialize(&mut self, pid: PageId) -> Result<(), ApplyError> {
        let Some(&slot) = self.slots.get(pid as usize) else {
            return Ok(());
        };
        if !(IN_SNAPSHOT..FREED).contains(&slot) {
            return Ok(());
        }
        let mut fragments = self.snapshot_fragments(slot).map_err(ApplyError::Snapshot)?.into_iter();
        let base = fragments.next().expect("checked non-empty");
        self.replace(pid, base)?;
        for fragment in fragments {
            self.append(pid, fragment)?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Starts a page over with this base (a replacement, or a snapshot's first fragment).
    pub fn replace(&mut self, pid: PageId, base: Fragment) -> Result<(), PidOutOfRange> {
        let old = std::mem::replace(self.slot(pid)?, ABSENT);
        self.release(old);
        let index = self.store(base);
        *self.slot(pid)? = index;
        Ok(())
    }

    /// Adds a fragment after a present page's last one (a snapshot's later fragments); a page
    /// without a base is left as it is.
    pub fn append(&mut self, pid: PageId, fragment: Fragment) -> Result<(), PidOutOfRange> {
        let Some(last) = self.last_of(pid) else {
            return Ok(());
        };
        let index = self.store(fragment);
        self.entry_mut(last).next = index;
        Ok(())
    }

    pub fn free(&mut self, pid: PageId) -> Result<(), PidOutOfRange> {
        let slot = self.slot(pid)?;
        let old = std::mem::replace(slot, FREED);
        self.release(old);
        Ok(())
    }

    /// Applies one message found in the log, as Sled's `Snapshot::apply` does: a replacement
    /// starts the page over, a link is added to a present page when it is newer than the page's
    /// last fragment (a link to a page without a base is one Sled relocated or freed: skipped),
    /// a free marks the page freed.
    pub fn apply(
        &mut self,
        effect: PageEffect,
        pid: PageId,
        fragment: Fragment,
    ) -> Result<(), ApplyError> {
        if pid > MAX_PID {
            return Err(ApplyError::PidOutOfRange(pid));
        }
        match effect {
            PageEffect::Replace => Ok(self.replace(pid, fragment)?),
            PageEffect::Free => Ok(self.free(pid)?),
            PageEffect::Link => {
                // Read without growing the table: a dangling link leaves no fragment, only
                // (past the end) the pages Sled's table would have grown by.
                if pid >= self.slots.len() as PageId {
                    self.dangling_end = self.dangling_end.max(pid);
                    return Ok(());
                }
                self.materialize(pid)?;
                let Some(last) = self.last_of(pid) else {
                    return Ok(());
                };
                if self.fragment(last).lsn < fragment.lsn {
                    let index = self.store(fragment);
                    self.entry_mut(last).next = index;
                }
                Ok(())
            }
        }
    }

    /// The first page below the end of Sled's table that has no state: Sled allocates pages in
    /// log order, so a sound log recovers them without gaps.
    pub fn first_hole(&self) -> Option<PageId> {
        if let Some(i) = self.slots.iter().position(|&slot| slot == ABSENT) {
            return Some(i as PageId);
        }
        let len = self.slots.len() as PageId;
        (self.dangling_end > len).then_some(len)
    }

    /// Hands memory the table grew into but does not use back to the allocator.
    pub fn shrink(&mut self) {
        self.slots.shrink_to_fit();
        if let Some(last) = self.chunks.last_mut() {
            last.shrink_to_fit();
        }
        self.unusual.shrink_to_fit();
    }

    fn slot(&mut self, pid: PageId) -> Result<&mut u32, PidOutOfRange> {
        if pid > MAX_PID {
            return Err(PidOutOfRange(pid));
        }
        let i = pid as usize;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, ABSENT);
        }
        Ok(&mut self.slots[i])
    }

    /// The index of a present page's last fragment in the arena (`None` for a page the
    /// snapshot holds: see `materialize`).
    fn last_of(&self, pid: PageId) -> Option<u32> {
        let mut index = match self.slots.get(usize::try_from(pid).ok()?).copied()? {
            first if first < IN_SNAPSHOT => first,
            _ => return None,
        };
        // Sled consolidates a page after a handful of links, so chains stay short.
        loop {
            match self.entry(index).next {
                END => return Some(index),
                next => index = next,
            }
        }
    }

    /// Puts a fragment in the arena as the end of a chain; returns its index.
    fn store(&mut self, fragment: Fragment) -> u32 {
        let packed = self.pack(fragment);
        let index = if self.free != END {
            let index = self.free;
            self.free = self.entry(index).next;
            self.unusual.remove(&index);
            *self.entry_mut(index) = packed;
            index
        } else {
            let index = self.used;
            // Indexes stop below the snapshot's slots: 2 billion live fragments would be a store
            // of hundreds of terabytes.
            assert!(index < IN_SNAPSHOT, "the page table is full");
            if (index as usize).is_multiple_of(CHUNK) {
                self.chunks.push(Vec::with_capacity(CHUNK));
            }
            self.chunks.last_mut().expect("pushed above").push(packed);
            self.used += 1;
            index
        };
        if packed.len == UNUSUAL {
            self.unusual.insert(index, fragment);
        }
        index
    }

    /// Puts a replaced or freed page's fragments on the free list (a page the snapshot holds
    /// has none in the arena).
    fn release(&mut self, first: u32) {
        if first >= IN_SNAPSHOT {
            return;
        }
        let mut last = first;
        while self.entry(last).next != END {
            last = self.entry(last).next;
        }
        self.entry_mut(last).next = self.free;
        self.free = first;
    }

    fn pack(&self, fragment: Fragment) -> Packed {
        let size = self.segment_size;
        let lsn = u64::try_from(fragment.lsn).ok();
        let packed = match (lsn, fragment.blob) {
            (Some(lsn), None) if lsn % size == fragment.lid % size && fragment.len != UNUSUAL => {
                u32::try_from(fragment.lid / size)
                    .ok()
                    .filter(|&file_segment| {
                        self.segment_numbers.get(file_segment as usize).is_some_and(|&number| {
                            number != NO_SEGMENT && u64::from(number) == lsn / size
                        })
                    })
                    .map(|file_segment| Packed {
                        file_segment,
                        offset: (lsn % size) as u32,
                        len: fragment.len,
                        next: END,
                    })
            }
            _ => None,
        };
        packed.unwrap_or(Packed {
            file_segment: 0,
            offset: 0,
            len: UNUSUAL,
            next: END,
        })
    }

    fn fragment(&self, index: u32) -> Fragment {
        let packed = self.entry(index);
        if packed.len == UNUSUAL {
            return self.unusual[&index];
        }
        let size = self.segment_size;
        let offset = u64::from(packed.offset);
        let lsn_segment = self.segment_numbers[packed.file_segment as usize];
        Fragment {
            lsn: (u64::from(lsn_segment) * size + offset) as Lsn,
            lid: u64::from(packed.file_segment) * size + offset,
            blob: None,
            len: packed.len,
        }
    }

    fn entry(&self, index: u32) -> &Packed {
        &self.chunks[(index >> CHUNK_BITS) as usize][index as usize % CHUNK]
    }

    fn entry_mut(&mut self, index: u32) -> &mut Packed {
        &mut self.chunks[(index >> CHUNK_BITS) as usize][index as usize % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 512 * 1024;
    /// The file's first three segments have no intact header; segment `i` from there holds the
    /// LSNs of segment `i - 3`.
    const SHIFT: u64 = 3;

    fn table() -> PageTable {
        let lsns: Vec<Option<Lsn>> = (0..64u64)
            .map(|i| i.checked_sub(SHIFT).map(|n| (n * SIZE) as Lsn))
            .collect();
        PageTable::new(SIZE, &lsns)
    }

    /// A message where the log puts it: in the segment whose header names its LSN's segment.
    fn at(lsn: Lsn) -> Fragment {
        Fragment {
            lsn,
            lid: (lsn as u64 / SIZE + SHIFT) * SIZE + lsn as u64 % SIZE,
            blob: None,
            len: 100,
        }
    }

    fn fragments(table: &PageTable, pid: PageId) -> Option<Vec<Fragment>> {
        match table.get(pid).unwrap() {
            PageView::Present(fragments) => Some(fragments.collect()),
            _ => None,
        }
    }

    #[test]
    fn fragments_come_back_exactly_packed_or_not() {
        let mut table = table();
        let lsn = 5 * SIZE as Lsn + 40;
        let odd = [
            Fragment { blob: Some(77), ..at(lsn) },
            // An offset that disagrees with the LSN.
            Fragment { lid: at(lsn).lid + 1, ..at(lsn) },
            // In a segment reused since (its header names another LSN segment), in one without
            // an intact header, past the end of the file.
            Fragment { lid: at(lsn).lid + SIZE, ..at(lsn) },
            Fragment { lid: lsn as u64 % SIZE, ..at(lsn) },
            Fragment { lid: 100 * SIZE + lsn as u64 % SIZE, ..at(lsn) },
            Fragment { lsn: -1, lid: 0, blob: None, len: 1 },
            Fragment { len: u32::MAX, ..at(40) },
        ];
        let plain = at(9 * SIZE as Lsn + 1234);
        table.replace(0, plain).unwrap();
        for fragment in odd {
            table.append(0, fragment).unwrap();
        }
        table.append(0, at(40)).unwrap();
        let mut expected = vec![plain];
        expected.extend(odd);
        expected.push(at(40));
        assert_eq!(fragments(&table, 0).unwrap(), expected);
        assert_eq!(table.unusual.len(), odd.len());
    }

    #[test]
    fn replay_links_only_newer_fragments_and_reuses_what_pages_left() {
        let mut table = table();
        table.apply(PageEffect::Replace, 2, at(100)).unwrap();
        table.apply(PageEffect::Link, 2, at(200)).unwrap();
        // Older than the page's last fragment: Sled skips it.
        table.apply(PageEffect::Link, 2, at(150)).unwrap();
        table.apply(PageEffect::Link, 2, at(300)).unwrap();
        assert_eq!(fragments(&table, 2).unwrap(), vec![at(100), at(200), at(300)]);
        // Pages 0 and 1 were never written: holes below page 2.
        assert_eq!(table.first_hole(), Some(0));
        table.apply(PageEffect::Replace, 0, at(400)).unwrap();
        table.apply(PageEffect::Free, 1, at(410)).unwrap();
        assert_eq!(table.first_hole(), None);
        assert!(matches!(table.get(1).unwrap(), PageView::Freed));
        // A link to a page past the end leaves no fragment but a hole Sled's table would have.
        table.apply(PageEffect::Link, 9, at(500)).unwrap();
        assert!(matches!(table.get(9).unwrap(), PageView::Absent));
        assert_eq!(table.first_hole(), Some(3));

        // Replacing the page frees its three entries, and the next three stores take them.
        let used = table.used;
        let later = SIZE as Lsn;
        table.apply(PageEffect::Replace, 2, at(later + 600)).unwrap();
        table.apply(PageEffect::Link, 2, at(later + 700)).unwrap();
        table.apply(PageEffect::Link, 2, at(later + 800)).unwrap();
        assert_eq!(table.used, used);
        assert_eq!(fragments(&table, 2).unwrap(), vec![at(later + 600), at(later + 700), at(later + 800)]);
        assert_eq!(fragments(&table, 0).unwrap(), vec![at(400)]);
        // An unusual fragment's entry taken again drops the old whole copy.
        table.apply(PageEffect::Replace, 4, Fragment { blob: Some(1), ..at(later + 900) }).unwrap();
        table.apply(PageEffect::Replace, 4, at(later + 1000)).unwrap();
        table.apply(PageEffect::Link, 0, at(later + 1100)).unwrap();
        assert!(table.unusual.is_empty());
        assert_eq!(fragments(&table, 0).unwrap(), vec![at(400), at(later + 1100)]);
        assert_eq!(table.apply(PageEffect::Link, MAX_PID + 1, at(1)), Err(ApplyError::PidOutOfRange(MAX_PID + 1)));
    }

    #[test]
    fn the_arena_grows_across_chunks() {
        let mut table = table();
        let n = CHUNK as u64 * 2 + 10;
        let lsn = |pid: u64| (pid * 64) as Lsn;
        for pid in 0..n {
            table.replace(pid, at(lsn(pid))).unwrap();
        }
        table.append(n - 1, at(lsn(n))).unwrap();
        assert_eq!(table.chunks.len(), 3);
        assert!(table.unusual.is_empty());
        for pid in [0, CHUNK as u64 - 1, CHUNK as u64, n - 2] {
            assert_eq!(fragments(&table, pid).unwrap(), vec![at(lsn(pid))]);
        }
        assert_eq!(fragments(&table, n - 1).unwrap().len(), 2);
        assert_eq!(std::mem::size_of::<Packed>(), 16);
    }

    #[test]
    fn pages_the_snapshot_holds_are_read_from_it_until_the_log_changes_them() {
        use crate::snapshot::tests::{encode_page_state, snapshot_file};
        let mut table = table();
        let first = [at(100), at(200)];
        let second = [Fragment { blob: Some(9), ..at(300) }];
        let mut bytes = encode_page_state(Some(&first));
        let second_at = bytes.len() as u64;
        bytes.extend(encode_page_state(Some(&second)));
        let third_at = bytes.len() as u64;
        bytes.extend(encode_page_state(Some(&[at(400)])));
        assert!(table.in_snapshot(0, 0).unwrap());
        assert!(table.in_snapshot(1, second_at).unwrap());
        assert!(table.in_snapshot(2, third_at).unwrap());
        // Past what a slot can point to: the caller keeps the page in the arena instead.
        assert!(!table.in_snapshot(3, u64::from(FREED - IN_SNAPSHOT)).unwrap());
        table.attach_snapshot(snapshot_file(&bytes));
        assert_eq!(fragments(&table, 0).unwrap(), first);
        assert_eq!(fragments(&table, 1).unwrap(), second);
        assert_eq!(table.used, 0);
        assert_eq!(table.first_hole(), None);

        // A link moves the page into the arena (an older one still only reads it).
        table.apply(PageEffect::Link, 0, at(150)).unwrap();
        assert_eq!(table.used, 2);
        table.apply(PageEffect::Link, 0, at(500)).unwrap();
        assert_eq!(fragments(&table, 0).unwrap(), vec![at(100), at(200), at(500)]);
        // A replacement or a free needs nothing from the file.
        table.apply(PageEffect::Replace, 1, at(600)).unwrap();
        table.apply(PageEffect::Free, 2, at(700)).unwrap();
        assert_eq!(fragments(&table, 1).unwrap(), vec![at(600)]);
        assert!(matches!(table.get(2).unwrap(), PageView::Freed));
        assert_eq!(table.used, 4);

        // A state that no longer reads back is the page's error, or the replay's.
        let mut broken = PageTable::new(SIZE, &[]);
        assert!(broken.in_snapshot(0, 0).unwrap());
        assert!(broken.in_snapshot(1, 1).unwrap());
        broken.attach_snapshot(snapshot_file(&encode_page_state(None)));
        assert!(matches!(broken.get(0), Err(PageError::Snapshot { pid: 0, .. })));
        assert!(matches!(broken.apply(PageEffect::Link, 1, at(1)), Err(ApplyError::Snapshot(_))));
    }
}
