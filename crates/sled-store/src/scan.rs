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

pub struct TreeScanner<T> {
    scan: Scan,
    decode: Decoder<T>,
    cipher: Option<Arc<StoreCipher>>,
    /// The leaf being handed out, and the next entry of it.
    leaf: Option<(Leaf, usize)>,
    position: u64,
    /// A scanner may outlive the `SledStore` handle (it moves to a reader thread): the bot stays
    /// locked out until the last one is dropped.
    _lock: Arc<SourceLock>,
}

impl<T> TreeScanner<T> {
    pub(crate) fn new(scan: Scan, decode: Decoder<T>, cipher: Option<Arc<StoreCipher>>, lock: Arc<SourceLock>) -> Self {
        TreeScanner { scan, decode, cipher, leaf: None, position: 0, _lock: lock }
    }

    /// Entries visited so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn lost(&mut self, lost: LostRange) -> ScanItem<T> {
        let range = match &lost.to {
            Some(to) => format!("from key {} to key {}", hex::encode(&lost.from), hex::encode(to)),
            None => format!("from key {} to the end of the tree", hex::encode(&lost.from)),
        };
        let item = ScanItem::Damaged(DamagedEntry {
            position: self.position,
            sled_key: lost.from,
            damage: Damage::new(DamageKind::ReadError, format!("the entries {range} could not be read: {}", lost.error)),
        });
        self.position += 1;
        item
    }
}

impl<T> Iterator for TreeScanner<T> {
    type Item = ScanItem<T>;

    fn next(&mut self) -> Option<ScanItem<T>> {
        loop {
            if let Some((leaf, index)) = &mut self.leaf {
                if let Some((sled_key, value)) = leaf.entry(*index) {
                    *index += 1;
                    let position = self.position;
                    self.position += 1;
                    return Some(match (self.decode)(&sled_key, value, self.cipher.as_deref()) {
                        Ok(key) => ScanItem::Key(ScannedKey { position, sled_key, key }),
                        Err(damage) => ScanItem::Damaged(DamagedEntry { position, sled_key, damage }),
                    });
                }
                self.leaf = None;
            }
            match self.scan.next_leaf()? {
                Ok(leaf) => self.leaf = Some((leaf, 0)),
                Err(lost) => return Some(self.lost(lost)),
            }
        }
    }
}
