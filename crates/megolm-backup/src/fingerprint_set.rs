//! The store's side of `verify`: every room key's fingerprint, held in 28 bytes a key, and checked
//! against the server's entries room by room.
//!
//! Why not a map of session IDs: `verify` must hold the whole store while it downloads the backup,
//! and a JavaScript `Map` of session IDs to hex digests cost about 1 KB a key in heap (measured:
//! 224 MB peak RSS for 100k keys), which an 80 GB store of ten million keys cannot afford. Here a
//! key is its room's index, the first 8 bytes of SHA-256 over its session ID (two sessions of one
//! room sharing them: about n²/2⁶⁵, 3·10⁻⁹ for a room of 100k sessions), the first 12 bytes of
//! its fingerprint ([`crate::fingerprint`]; a different key passing for the stored one: 2⁻⁹⁶) and
//! its place in the order the keys came in. That place makes every entry's sort key unique, so
//! sealing sorts in place: a stable sort, which keeps the order among equal keys by itself,
//! borrows half the array again as scratch (70 MB at 5M keys).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

#[derive(Clone, Copy)]
struct Entry {
    room: u32,
    session: [u8; 8],
    fingerprint: [u8; FINGERPRINT_BYTES],
    /// Which insert this was: among keys of the same room and session, the last one counts.
    order: u32,
}

const FINGERPRINT_BYTES: usize = 12;

/// What one room's check found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RoomCheck {
    /// The store's keys of this room.
    pub checked: u32,
    /// Those the server has no entry for.
    pub missing: u32,
    /// Session IDs whose server entry differs from the store, with why.
    pub different: Vec<(String, String)>,
}

/// A server entry as the check takes it: its session ID and its fingerprint, or why it has none
/// (it cannot be decrypted with our key).
pub struct ServerEntry<'a> {
    pub session_id: &'a str,
    pub fingerprint: Result<[u8; 32], &'a str>,
}

#[derive(Default)]
pub struct FingerprintSet {
    rooms: Vec<String>,
    room_index: HashMap<String, u32>,
    entries: Vec<Entry>,
    /// Once sealed: room `r`'s entries are `entries[starts[r]..starts[r + 1]]`, sorted by session.
    starts: Vec<usize>,
    /// One bit a key: found on the server.
    found: Vec<u64>,
}

fn session_hash(session_id: &str) -> [u8; 8] {
    let digest = Sha256::digest(session_id.as_bytes());
    digest[..8].try_into().expect("8 of 32 bytes")
}

impl FingerprintSet {
    /// `expected` keys (the backup's count, say) are reserved for at once: growing by doubling
    /// would hold the old and the new array together.
    pub fn with_capacity(expected: usize) -> Self {
        FingerprintSet {
            // Bounded: the count comes from the server.
            entries: Vec::with_capacity(expected.min(1 << 24)),
            ..Default::default()
        }
    }

    /// Adds a store key. Sealing keeps the last of keys with the same room and session, as the
    /// backup (keyed by room and session) can hold only one of them.
    pub fn insert(&mut self, room_id: &str, session_id: &str, fingerprint: &[u8; 32]) {
        let room = match self.room_index.get(room_id) {
            Some(&r) => r,
            None => {
                let r = self.rooms.len() as u32;
                self.rooms.push(room_id.to_owned());
                self.room_index.insert(room_id.to_owned(), r);
                r
            }
        };
        // Saturates past 4 billion keys (no store comes near): order among those is lost only.
        let order = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.entries.push(Entry {
            room,
            session: session_hash(session_id),
            fingerprint: fingerprint[..FINGERPRINT_BYTES].try_into().expect("12 of 32 bytes"),
            order,
        });
    }

    /// Sorts the keys by room and session for the checks; call once, after the last insert.
    pub fn seal(&mut self) {
        // In place; among equal rooms and sessions the last inserted sorts last, and is kept.
        self.entries.sort_unstable_by_key(|e| (e.room, e.session, e.order));
        let mut kept: Vec<Entry> = Vec::new();
        std::mem::swap(&mut kept, &mut self.entries);
        let mut write = 0;
        for i in 0..kept.len() {
            let same_as_next = kept
                .get(i + 1)
                .is_some_and(|n| (n.room, n.session) == (kept[i].room, kept[i].session));
            if !same_as_next {
                kept[write] = kept[i];
                write += 1;
            }
        }
        kept.truncate(write);
        kept.shrink_to_fit();
        self.entries = kept;
        self.starts = vec![0; self.rooms.len() + 1];
        for e in &self.entries {
            self.starts[e.room as usize + 1] += 1;
        }
        for r in 0..self.rooms.len() {
            self.starts[r + 1] += self.starts[r];
        }
        self.found = vec![0; self.entries.len().div_ceil(64)];
    }

    /// Distinct keys (after sealing).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each room with its number of distinct keys (after sealing), in the order first seen.
    pub fn rooms(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.rooms
            .iter()
            .enumerate()
            .map(|(r, id)| (id.as_str(), (self.starts[r + 1] - self.starts[r]) as u32))
    }

    fn range(&self, room_id: &str) -> Option<std::ops::Range<usize>> {
        let r = *self.room_index.get(room_id)? as usize;
        Some(self.starts[r]..self.starts[r + 1])
    }

    fn position(&self, room_id: &str, session_id: &str) -> Option<usize> {
        let range = self.range(room_id)?;
        let session = session_hash(session_id);
        self.entries[range.clone()]
            .binary_search_by_key(&session, |e| e.session)
            .ok()
            .map(|i| range.start + i)
    }

    /// Checks one room against the server's entries for it. Entries the store does not have are
    /// not the store's concern and are passed over.
    pub fn check_room<'a>(&mut self, room_id: &str, server: impl IntoIterator<Item = ServerEntry<'a>>) -> RoomCheck {
        let mut check = RoomCheck { different: self.mark_entries(room_id, server), ..Default::default() };
        (check.checked, check.missing) = self.room_outcome(room_id);
        check
    }

    /// Some of a room's server entries (a room's answer is checked as it streams in): marks those
    /// found, returns those that differ from the store, with why.
    pub fn mark_entries<'a>(&mut self, room_id: &str, server: impl IntoIterator<Item = ServerEntry<'a>>) -> Vec<(String, String)> {
        let mut different = Vec::new();
        if self.range(room_id).is_none() {
            return different;
        }
        for entry in server {
            let Some(i) = self.position(room_id, entry.session_id) else {
                continue;
            };
            self.found[i / 64] |= 1 << (i % 64);
            match entry.fingerprint {
                Err(why) => different.push((entry.session_id.to_owned(), format!("cannot be decrypted with our key: {why}"))),
                Ok(f) if f[..FINGERPRINT_BYTES] != self.entries[i].fingerprint => different.push((entry.session_id.to_owned(), "differs from the store".to_owned())),
                Ok(_) => {}
            }
        }
        different
    }

    /// After all of a room's server entries were marked: its store keys, and those not found.
    pub fn room_outcome(&self, room_id: &str) -> (u32, u32) {
        match self.range(room_id) {
            Some(range) => (range.len() as u32, range.filter(|&i| !self.was_found(i)).count() as u32),
            None => (0, 0),
        }
    }

    /// Whether a store key was checked and not found on the server: for naming the missing keys
    /// in a second read of the store, which only a failed check needs.
    pub fn is_missing(&self, room_id: &str, session_id: &str) -> bool {
        self.position(room_id, session_id).is_some_and(|i| !self.was_found(i))
    }

    fn was_found(&self, i: usize) -> bool {
        self.found[i / 64] & (1 << (i % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn a_room_checks_found_missing_and_different_keys() {
        let mut set = FingerprintSet::with_capacity(4);
        set.insert("!a:s", "s1", &fp(1));
        set.insert("!b:s", "s2", &fp(2));
        set.insert("!a:s", "s3", &fp(3));
        set.insert("!a:s", "s4", &fp(4));
        set.seal();
        assert_eq!(set.rooms().collect::<Vec<_>>(), vec![("!a:s", 3), ("!b:s", 1)]);

        let check = set.check_room(
            "!a:s",
            [
                ServerEntry { session_id: "s1", fingerprint: Ok(fp(1)) },
                ServerEntry { session_id: "s3", fingerprint: Ok(fp(9)) },
                ServerEntry { session_id: "extra", fingerprint: Ok(fp(5)) },
            ],
        );
        assert_eq!(
            check,
            RoomCheck { checked: 3, missing: 1, different: vec![("s3".into(), "differs from the store".into())] }
        );
        assert!(set.is_missing("!a:s", "s4"));
        assert!(!set.is_missing("!a:s", "s1"));
        assert!(!set.is_missing("!a:s", "s3"), "found, though different");

        let check = set.check_room("!b:s", [ServerEntry { session_id: "s2", fingerprint: Err("bad MAC") }]);
        assert_eq!(check.missing, 0);
        assert_eq!(check.different, vec![("s2".into(), "cannot be decrypted with our key: bad MAC".into())]);
        assert_eq!(set.check_room("!unknown:s", []), RoomCheck::default());
    }

    #[test]
    fn a_key_costs_28_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 28);
    }

    #[test]
    fn the_last_of_duplicates_wins_among_many_keys() {
        let mut set = FingerprintSet::with_capacity(0);
        for round in 0..3u8 {
            for i in 0..500u32 {
                set.insert("!a:s", &format!("s{i}"), &fp(round));
            }
        }
        set.seal();
        assert_eq!(set.len(), 500);
        let ids: Vec<String> = (0..500).map(|i| format!("s{i}")).collect();
        let check = set.check_room("!a:s", ids.iter().map(|id| ServerEntry { session_id: id, fingerprint: Ok(fp(2)) }));
        assert_eq!(check, RoomCheck { checked: 500, missing: 0, different: vec![] });
    }

    #[test]
    fn the_last_of_duplicate_keys_is_the_one_checked() {
        let mut set = FingerprintSet::with_capacity(0);
        set.insert("!a:s", "s1", &fp(1));
        set.insert("!a:s", "s1", &fp(2));
        set.seal();
        assert_eq!(set.len(), 1);
        let check = set.check_room("!a:s", [ServerEntry { session_id: "s1", fingerprint: Ok(fp(2)) }]);
        assert_eq!(check, RoomCheck { checked: 1, missing: 0, different: vec![] });
    }

    #[test]
    fn many_keys_each_found_where_they_were_put() {
        let mut set = FingerprintSet::with_capacity(10_000);
        for i in 0..10_000u32 {
            let mut f = [0u8; 32];
            f[..4].copy_from_slice(&i.to_le_bytes());
            set.insert(&format!("!r{}:s", i % 7), &format!("session{i}"), &f);
        }
        set.seal();
        assert_eq!(set.len(), 10_000);
        for r in 0..7u32 {
            let room = format!("!r{r}:s");
            let ids: Vec<(String, [u8; 32])> = (0..10_000u32)
                .filter(|i| i % 7 == r && i % 100 != 0)
                .map(|i| {
                    let mut f = [0u8; 32];
                    f[..4].copy_from_slice(&i.to_le_bytes());
                    (format!("session{i}"), f)
                })
                .collect();
            let check = set.check_room(&room, ids.iter().map(|(s, f)| ServerEntry { session_id: s, fingerprint: Ok(*f) }));
            assert!(check.different.is_empty());
            let expected_missing = (0..10_000u32).filter(|i| i % 7 == r && i % 100 == 0).count() as u32;
            assert_eq!(check.missing, expected_missing);
        }
    }
}
