//! Walking a tree: Sled key order, one leaf in memory at a time, and a part of the tree that
//! cannot be read reported (with the key range it covers) and stepped over rather than ending
//! the run. One scanner for every tree; what an entry becomes is the decoder's business
//! ([`SessionScanner`] turns `inbound_group_sessions` entries into room keys).

use std::sync::Arc;

use sled_readonly::{Leaf, LostRange, Scan};

use crate::cipher::StoreCipher;
use crate::error::{Damage, DamageKind};
use crate::lock::SourceLock;
use crate::room_key::RoomKey;

#[derive(Debug)]
pub struct ScannedKey<T = RoomKey> {
    /// Ordinal of the entry in this scan (damaged entries count too).
    pub position: u64,
    /// The entry's Sled key: the resume point after this entry.
    pub sled_key: Vec<u8>,
    /// What the decoder made of the entry (for the session scanner: the room key).
    pub key: T,
}

#[derive(Debug, Clone)]
pub struct DamagedEntry {
    pub position: u64,
    /// The entry's Sled key; for a range that could not be read, its first key.
    pub sled_key: Vec<u8>,
    pub damage: Damage,
}

#[derive(Debug)]
pub enum ScanItem<T = RoomKey> {
    Key(ScannedKey<T>),
    Damaged(DamagedEntry),
}

/// Turns one entry (Sled key, value) into `T`, or names its damage. Values are plaintext or
/// encrypted with the store cipher, decided per entry.
pub type Decoder<T> = fn(&[u8], &[u8], Option<&StoreCipher>) -> Result<T, Damage>;

/// The room keys of `inbound_group_sessions`.
pub type SessionScanner = TreeScanner<RoomKey>;

/// A tree leaf by leaf: each leaf's values stay in the buffers they were read into, for a caller
/// that decodes them elsewhere without copying them (the stream's reader thread hands leaves to
/// the threads that decode and encrypt).
pub struct LeafScanner {
    scan: Scan,
    /// Entries (and unreadable ranges) handed out so far.
    position: u64,
    /// A scanner may outlive the `SledStore` handle (it moves to a reader thread): the bot stays
    /// locked out until the last one is dropped.
    _lock: Arc<SourceLock>,
}

pub enum LeafItem {
    /// A leaf's entries, the first of them the `position`-th of the scan.
    Leaf { position: u64, leaf: Arc<Leaf> },
    /// A range of the tree that could not be read.
    Lost(DamagedEntry),
}

impl LeafScanner {
    pub(crate) fn new(scan: Scan, lock: Arc<SourceLock>) -> Self {
        LeafScanner { scan, position: 0, _lock: lock }
    }
}

impl Iterator for LeafScanner {
    type Item = LeafItem;

    fn next(&mut self) -> Option<LeafItem> {
        let position = self.position;
        match self.scan.next_leaf()? {
            Ok(leaf) => {
                self.position += leaf.len() as u64;
                Some(LeafItem::Leaf { position, leaf: Arc::new(leaf) })
            }
            Err(lost) => {
                self.position += 1;
                Some(LeafItem::Lost(lost_range(position, lost)))
            }
        }
    }
}

/// An unreadable range as a damaged entry: its first key, and both ends in the message.
fn lost_range(position: u64, lost: LostRange) -> DamagedEntry {
    let range = match &lost.to {
        Some(to) => format!("from key {} to key {}", hex::encode(&lost.from), hex::encode(to)),
        None => format!("from key {} to the end of the tree", hex::encode(&lost.from)),
    };
    DamagedEntry {
        position,
        sled_key: lost.from,
        damage: Damage::new(DamageKind::ReadError, format!("the entries {range} could not be read: {}", lost.error)),
    }
}

/// A tree entry by entry, each decoded by `decode`.
pub struct TreeScanner<T> {
    leaves: LeafScanner,
    decode: Decoder<T>,
    cipher: Option<Arc<StoreCipher>>,
    /// The leaf being handed out, its first entry's position, and the next entry of it.
    leaf: Option<(Arc<Leaf>, u64, usize)>,
}

impl<T> TreeScanner<T> {
    pub(crate) fn new(leaves: LeafScanner, decode: Decoder<T>, cipher: Option<Arc<StoreCipher>>) -> Self {
        TreeScanner { leaves, decode, cipher, leaf: None }
    }
}

impl<T> Iterator for TreeScanner<T> {
    type Item = ScanItem<T>;

    fn next(&mut self) -> Option<ScanItem<T>> {
        loop {
            if let Some((leaf, first, index)) = &mut self.leaf {
                if let Some((sled_key, value)) = leaf.entry(*index) {
                    let position = *first + *index as u64;
                    *index += 1;
                    return Some(match (self.decode)(&sled_key, value, self.cipher.as_deref()) {
                        Ok(key) => ScanItem::Key(ScannedKey { position, sled_key, key }),
                        Err(damage) => ScanItem::Damaged(DamagedEntry { position, sled_key, damage }),
                    });
                }
                self.leaf = None;
            }
            match self.leaves.next()? {
                LeafItem::Leaf { position, leaf } => self.leaf = Some((leaf, position, 0)),
                LeafItem::Lost(damaged) => return Some(ScanItem::Damaged(damaged)),
            }
        }
    }
}
