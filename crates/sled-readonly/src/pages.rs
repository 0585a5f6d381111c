//! The page table recovery builds: for every page, where its current version lies in the log (a
//! base and the fragments linked onto it since), or that it was freed. Sled's `PageState`.

use crate::log::{LogOffset, Lsn, PageEffect, PageId, MAX_PID};

/// Where one message of a page lies: its LSN, its offset in the log, and its blob if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub lsn: Lsn,
    pub lid: LogOffset,
    pub blob: Option<Lsn>,
    /// The bytes the message takes in the log (header and inline body).
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum PageState {
    /// Never written, or only linked to before any base (Sled leaves such holes uninitialized).
    #[default]
    Absent,
    /// The base (`fragments[0]`) and the links on top of it, in LSN order.
    Present(Vec<Fragment>),
    Freed,
}

#[derive(Debug, Default)]
pub(crate) struct PageTable {
    pages: Vec<PageState>,
    /// How far a link to a page past the end would have grown Sled's own table: Sled grows it to
    /// hold the page, finds no base there and pops the page alone, so the pages between the old
    /// end and it stay in its table, never initialized.
    dangling_end: PageId,
}

/// A page ID past what Sled can allocate: the message is not what it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidOutOfRange(pub PageId);

impl PageTable {
    pub fn get(&self, pid: PageId) -> &PageState {
        usize::try_from(pid)
            .ok()
            .and_then(|i| self.pages.get(i))
            .unwrap_or(&PageState::Absent)
    }

    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Sets a page's state as a snapshot recorded it.
    pub fn set(&mut self, pid: PageId, state: PageState) -> Result<(), PidOutOfRange> {
        *self.slot(pid)? = state;
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
    ) -> Result<(), PidOutOfRange> {
        if pid > MAX_PID {
            return Err(PidOutOfRange(pid));
        }
        match effect {
            PageEffect::Replace => *self.slot(pid)? = PageState::Present(vec![fragment]),
            PageEffect::Free => *self.slot(pid)? = PageState::Freed,
            PageEffect::Link => {
                // Read without growing the table: a dangling link leaves no fragment, only
                // (past the end) the pages Sled's table would have grown by.
                match usize::try_from(pid)
                    .ok()
                    .and_then(|i| self.pages.get_mut(i))
                {
                    Some(PageState::Present(fragments)) => {
                        if fragments.last().is_some_and(|last| last.lsn < fragment.lsn) {
                            fragments.push(fragment);
                        }
                    }
                    Some(_) => {}
                    None => self.dangling_end = self.dangling_end.max(pid),
                }
            }
        }
        Ok(())
    }

    /// The first page below the end of Sled's table that has no state: Sled allocates pages in
    /// log order, so a sound log recovers them without gaps.
    pub fn first_hole(&self) -> Option<PageId> {
        if let Some(i) = self
            .pages
            .iter()
            .position(|page| *page == PageState::Absent)
        {
            return Some(i as PageId);
        }
        let len = self.pages.len() as PageId;
        (self.dangling_end > len).then_some(len)
    }

    fn slot(&mut self, pid: PageId) -> Result<&mut PageState, PidOutOfRange> {
        if pid > MAX_PID {
            return Err(PidOutOfRange(pid));
        }
        let i = pid as usize;
        if self.pages.len() <= i {
            self.pages.resize(i + 1, PageState::Absent);
        }
        Ok(&mut self.pages[i])
    }

    /// Hands memory the table grew into but does not use back to the allocator.
    pub fn shrink(&mut self) {
        self.pages.shrink_to_fit();
        for page in &mut self.pages {
            if let PageState::Present(fragments) = page {
                fragments.shrink_to_fit();
            }
        }
    }
}
