//! Walking a tree in key order, one leaf at a time, the way Sled's iterator does: find the leaf
//! holding a key by descending from the root (index nodes pick the child by key; a node whose
//! high bound is at or below the key hands over to its right sibling, which is how a split that
//! its parent has not yet heard of, or a merge, stays readable), read it, and go on from the end
//! of its range (its high bound, or the start of the next child in the index above it, if that
//! comes first). Sled itself finishes such half-done splits and merges while it reads (writing
//! to the store); reading around them gives the same keys and values.

use std::ops::Bound;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::PageError;
use crate::log::PageId;
use crate::node::{Kind, Node};
use crate::Db;

/// Index nodes kept between descents: the root and the few nodes on the way down are read for
/// every leaf otherwise. A tree of millions of entries has a few hundred index nodes; the scan
/// needs the ones on its current path.
const INDEX_CACHE_NODES: usize = 32;

/// How many leaves ahead of the one being read the scan asks the kernel to fetch.
const READ_AHEAD_LEAVES: usize = 64;

/// Index nodes recently read, most recent last.
#[derive(Default)]
pub(crate) struct IndexCache {
    nodes: Vec<(PageId, Arc<Node>)>,
    /// The index node the last descent left last, and the position of the child it took: where
    /// the following leaves are listed (see [`Scan::read_ahead`]).
    last_parent: Option<(PageId, Arc<Node>, usize)>,
}

impl IndexCache {
    fn get(&mut self, db: &Db, pid: PageId) -> Result<Arc<Node>, PageError> {
        if let Some(i) = self.nodes.iter().position(|(p, _)| *p == pid) {
            let hit = self.nodes.remove(i);
            let node = hit.1.clone();
            self.nodes.push(hit);
            return Ok(node);
        }
        let node = Arc::new(db.read_node(pid)?);
        if node.kind == Kind::Index {
            if self.nodes.len() == INDEX_CACHE_NODES {
                self.nodes.remove(0);
            }
            self.nodes.push((pid, node.clone()));
        }
        Ok(node)
    }
}

/// The leaf holding `key`, and the upper end of what the search knows that leaf's range to be
/// (from the separators of the index nodes passed; `None`: the end of the tree). On failure, the
/// error and that same bound: the range a caller must count as lost.
pub(crate) fn find_leaf(
    db: &Db,
    cache: &mut IndexCache,
    root: PageId,
    key: &[u8],
) -> Result<(Arc<Node>, Option<Vec<u8>>), (PageError, Option<Vec<u8>>)> {
    let mut pid = root;
    let mut upper: Option<Vec<u8>> = None;
    cache.last_parent = None;
    // Each step goes down a level or right along one: more steps than pages is a cycle.
    for _ in 0..=db.page_count() {
        let node = cache.get(db, pid).map_err(|e| (e, upper.clone()))?;
        let inconsistent = |detail: &str| PageError::Tree {
            pid,
            detail: detail.to_owned(),
        };
        if key < node.lo() {
            return Err((
                inconsistent("the search arrived at a node whose low bound is above the key"),
                upper,
            ));
        }
        if !node.hi().is_empty() && key >= node.hi() {
            pid = node.next.ok_or_else(|| {
                (
                    inconsistent("a bounded node has no right sibling"),
                    upper.clone(),
                )
            })?;
            continue;
        }
        match node.kind {
            Kind::Leaf => return Ok((node, upper)),
            Kind::Index => {
                let (position, end) = node
                    .child_for(key)
                    .map_err(|e| (inconsistent(&e.to_string()), upper.clone()))?;
                let child = node.children()[position];
                // The tightest bound known: the next separator, else this node's own high bound.
                match end {
                    Some(end) => upper = Some(end),
                    None if !node.hi().is_empty() => upper = Some(node.hi().to_vec()),
                    None => {}
                }
                cache.last_parent = Some((pid, node.clone(), position));
                pid = child;
            }
        }
    }
    Err((
        PageError::Tree {
            pid,
            detail: "the search for a key goes round in circles".into(),
        },
        upper,
    ))
}

/// A key range of a tree that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    /// The first key the range may hold.
    pub from: Vec<u8>,
    /// The end of the range (exclusive); `None`: the rest of the tree.
    pub to: Option<Vec<u8>>,
    pub error: PageError,
}

/// One leaf's entries from where the scan stood to where the leaf's range ends.
pub struct Leaf {
    node: Arc<Node>,
    start: usize,
    /// Past the last entry that belongs to this leaf's range (see `Scan::next_leaf`).
    end: usize,
}

impl Leaf {
    /// The entries in key order: whole key (the node's prefix put back) and value.
    pub fn entries(&self) -> impl Iterator<Item = (Vec<u8>, &[u8])> + '_ {
        let prefix = self.node.prefix();
        self.node
            .entries_from(self.start)
            .take(self.len())
            .map(move |(suffix, value)| {
                let mut key = Vec::with_capacity(prefix.len() + suffix.len());
                key.extend_from_slice(prefix);
                key.extend_from_slice(suffix);
                (key, value)
            })
    }

    /// The `i`-th entry of [`Self::entries`], by position.
    pub fn entry(&self, i: usize) -> Option<(Vec<u8>, &[u8])> {
        let (suffix, value) = self.stored(i)?;
        Some(([self.node.prefix(), suffix].concat(), value))
    }

    /// The `i`-th entry's value alone (no key to build).
    pub fn value(&self, i: usize) -> Option<&[u8]> {
        self.stored(i).map(|(_, value)| value)
    }

    /// The `i`-th entry as the node stores it: (key suffix, value).
    fn stored(&self, i: usize) -> Option<(&[u8], &[u8])> {
        if i >= self.len() {
            return None;
        }
        self.node.entries_from(self.start + i).next()
    }

    pub fn len(&self) -> usize {
        self.end.min(self.node.len()).saturating_sub(self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tree read leaf by leaf in key order from a starting bound. Owns a handle on the database,
/// so it can move to another thread.
pub struct Scan {
    db: Arc<Db>,
    root: Option<PageId>,
    /// Where the next leaf starts; `None` once the tree is done.
    next: Option<Vec<u8>>,
    /// Whether an entry equal to `next` is skipped (an excluded starting bound).
    skip_equal: bool,
    cache: IndexCache,
    /// The parent whose children are being read ahead, and the position up to which they have
    /// been (exclusive).
    ahead: (PageId, usize),
}

impl Scan {
    /// Scans `tree` from `start` on. A tree the database does not have yields nothing.
    pub fn new(db: Arc<Db>, tree: &[u8], start: Bound<&[u8]>) -> Scan {
        let root = db.root(tree);
        let (next, skip_equal) = match start {
            Bound::Unbounded => (Vec::new(), false),
            Bound::Included(k) => (k.to_vec(), false),
            Bound::Excluded(k) => (k.to_vec(), true),
        };
        Scan {
            db,
            root,
            next: Some(next),
            skip_equal,
            cache: IndexCache::default(),
            ahead: (PageId::MAX, 0),
        }
    }

    /// The next leaf with entries, or the range that could not be read; `None` at the end.
    pub fn next_leaf(&mut self) -> Option<Result<Leaf, LostRange>> {
        loop {
            let root = self.root?;
            let key = self.next.take()?;
            match find_leaf(&self.db, &mut self.cache, root, &key) {
                Ok((node, upper)) => {
                    self.read_ahead();
                    // The leaf's range ends at its high bound, or where the index nodes above
                    // it say the next child begins, whichever comes first. In a sound tree
                    // they agree, or the leaf holds a merged sibling's entries while its parent
                    // still lists that sibling (a merge Sled had not confirmed): the sibling,
                    // capped, holds the same entries. They disagree otherwise only where a
                    // page lost its newest version (its blob gone, or the rest of its segment
                    // unreadable) and went back to one from before a split: the entries past
                    // the separator are stale, and the child the index names for them has the
                    // current ones, the ones Sled's `get` (and `Db::get` here) finds. Sled's
                    // iterator finds them too when the stale leaf has more than 16 entries: it
                    // splits the leaf on its way, at the point it split it the first time, and
                    // goes on through the index; a smaller stale leaf it reads to its stale end.
                    let end = match (node.hi(), upper) {
                        (hi, None) if hi.is_empty() => None,
                        (hi, None) => Some(hi.to_vec()),
                        (hi, Some(upper)) if hi.is_empty() || upper.as_slice() < hi => Some(upper),
                        (hi, Some(_)) => Some(hi.to_vec()),
                    };
                    let end_index = end.as_ref().map_or(node.len(), |end| node.position_of(end));
                    let mut start = node.position_of(&key);
                    if self.skip_equal {
                        self.skip_equal = false;
                        let leaf = Leaf {
                            node: node.clone(),
                            start,
                            end: end_index,
                        };
                        if leaf.entries().next().is_some_and(|(k, _)| k == key) {
                            start += 1;
                        }
                    }
                    self.next = end;
                    let leaf = Leaf {
                        node,
                        start,
                        end: end_index,
                    };
                    if !leaf.is_empty() {
                        return Some(Ok(leaf));
                    }
                }
                Err((error, upper)) => {
                    self.skip_equal = false;
                    // Go on after the lost range, if it ends, and ends after where it began.
                    self.next = upper.clone().filter(|to| *to > key);
                    return Some(Err(LostRange {
                        from: key,
                        to: upper,
                        error,
                    }));
                }
            }
        }
    }

    /// Asks the kernel to fetch the pages of the leaves after the one just found (the next
    /// children of its parent), a window kept between half and all of [`READ_AHEAD_LEAVES`]
    /// ahead: a cold store is then read with many requests in flight instead of one leaf after
    /// another (Sled writes leaves in the order they changed, not in key order, so the kernel's
    /// own read-ahead of the file does not find them).
    fn read_ahead(&mut self) {
        let Some((parent_pid, parent, position)) = self.cache.last_parent.take() else {
            return;
        };
        let (pid, upto) = &mut self.ahead;
        if *pid != parent_pid {
            (*pid, *upto) = (parent_pid, position + 1);
        }
        let children = parent.children();
        if *upto < (position + 1 + READ_AHEAD_LEAVES / 2).min(children.len()) {
            let from = (*upto).max(position + 1);
            let to = (position + 1 + READ_AHEAD_LEAVES).min(children.len());
            self.db.will_need(&children[from..to]);
            *upto = to;
        }
    }

    /// The scan as single entries.
    pub fn entries(self) -> Entries {
        Entries {
            scan: self,
            leaf: None,
        }
    }
}

/// A [`Scan`] one entry at a time: whole key and value (wiped when dropped), or a lost range.
pub struct Entries {
    scan: Scan,
    leaf: Option<std::vec::IntoIter<(Vec<u8>, Zeroizing<Vec<u8>>)>>,
}

impl Iterator for Entries {
    type Item = Result<(Vec<u8>, Zeroizing<Vec<u8>>), LostRange>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.leaf.as_mut().and_then(Iterator::next) {
                return Some(Ok(entry));
            }
            match self.scan.next_leaf()? {
                Ok(leaf) => {
                    let entries: Vec<_> = leaf
                        .entries()
                        .map(|(k, v)| (k, Zeroizing::new(v.to_vec())))
                        .collect();
                    self.leaf = Some(entries.into_iter());
                }
                Err(lost) => return Some(Err(lost)),
            }
        }
    }
}
