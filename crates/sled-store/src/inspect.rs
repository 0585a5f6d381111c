//! `inspect`: what a Sled crypto store is, in one full read and without ever keeping the bot out.
//!
//! The bot's lock is only probed (a shared `flock` taken and dropped at once, before and after the
//! read): the read itself holds no lock, so a bot that starts meanwhile starts. Counts read while
//! the bot writes may be off; the summary says when that may have happened.
//!
//! Which generation wrote the store follows from three things the reference's table names (DB
//! version, store cipher serialization, values plaintext or encrypted): see [`Generation`].

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::cipher::{CipherFormat, StoreCipher};
use crate::error::OpenError;
use crate::locate::StoreLocation;
use crate::lock::SourceLock;
use crate::room_key::{decode_value, looks_encrypted, open_value};
use crate::scan::LeafItem;
use crate::store::{recover, OpenOptions, SledStore, INBOUND_GROUP_SESSIONS};

/// Sled's default tree: the store version and the exported cipher, no pickles.
const DEFAULT_TREE: &str = "__sled__default";
/// matrix-sdk-sled keeps an Olm message hash as JSON in the key; the value is a placeholder.
const OLM_HASHES: &str = "olm_hashes";
/// Damaged entries listed one by one (all are counted).
const LISTED_DAMAGE: usize = 20;

/// Whether the values of the pickle trees are stored in the clear, encrypted, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueKind {
    /// No value to tell by.
    None,
    Plaintext,
    Encrypted,
    Mixed,
    /// The passphrase did not open the store: nothing was read.
    Unknown,
}

impl ValueKind {
    fn of(plaintext: u64, encrypted: u64) -> Self {
        match (plaintext, encrypted) {
            (0, 0) => ValueKind::None,
            (_, 0) => ValueKind::Plaintext,
            (0, _) => ValueKind::Encrypted,
            _ => ValueKind::Mixed,
        }
    }
}

/// Which code wrote the store, as the reference's table of matrix-bot-sdk versions tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Generation {
    /// DB version 4/5, no store cipher, plaintext values.
    #[serde(rename = "bot-sdk-0.6.0-0.6.2")]
    BotSdk060To062,
    /// DB version 6, no store cipher, plaintext values.
    #[serde(rename = "bot-sdk-0.6.3-0.6.5")]
    BotSdk063To065,
    /// DB version 7, MessagePack store cipher, encrypted values.
    #[serde(rename = "bot-sdk-0.6.6-0.7.1")]
    BotSdk066To071,
    /// DB version 7, MessagePack store cipher, plaintext values of 0.6.5 beside encrypted ones.
    #[serde(rename = "bot-sdk-0.6.6-0.7.1-upgraded")]
    BotSdk066To071Upgraded,
    /// DB version below 7, a MessagePack store cipher, no encrypted value: bot-sdk 0.6.6 created its
    /// cipher in an unencrypted 0.6.5 store and its migration failed (`Json("missing field
    /// version")`): the old bot cannot start on it any more.
    #[serde(rename = "half-upgraded")]
    HalfUpgraded,
    /// A JSON store cipher with encrypted values: matrix-sdk-sled 0.2 opened with a passphrase
    /// (bot-sdk 0.6.0–0.6.5 passed none).
    #[serde(rename = "sled-0.2-passphrase")]
    Sled02WithPassphrase,
    /// A JSON store cipher over plaintext values too: a passphrase given to a store written without.
    #[serde(rename = "sled-0.2-cipher-added")]
    Sled02CipherAdded,
    #[serde(rename = "unknown")]
    Unknown,
}

impl Generation {
    pub fn of(store_version: Option<u8>, cipher: Option<CipherFormat>, values: ValueKind) -> Self {
        use CipherFormat::{Json, MessagePack};
        use ValueKind as V;
        let version = store_version.unwrap_or(0);
        match (cipher, values) {
            (None, V::None | V::Plaintext) if matches!(version, 4 | 5) => Generation::BotSdk060To062,
            (None, V::None | V::Plaintext) if version == 6 => Generation::BotSdk063To065,
            (Some(MessagePack), V::None | V::Encrypted) if version == 7 => Generation::BotSdk066To071,
            (Some(MessagePack), V::Mixed) if version == 7 => Generation::BotSdk066To071Upgraded,
            (Some(MessagePack), V::None | V::Plaintext | V::Mixed) if (4..7).contains(&version) => Generation::HalfUpgraded,
            (Some(Json), V::None | V::Encrypted) if (4..7).contains(&version) => Generation::Sled02WithPassphrase,
            (Some(Json), V::Plaintext | V::Mixed) if (4..7).contains(&version) => Generation::Sled02CipherAdded,
            _ => Generation::Unknown,
        }
    }

    /// The versions of matrix-bot-sdk that write this layout, or what happened to it.
    pub fn describe(self) -> &'static str {
        match self {
            Generation::BotSdk060To062 => "matrix-bot-sdk 0.6.0–0.6.2 (no passphrase, values in the clear)",
            Generation::BotSdk063To065 => "matrix-bot-sdk 0.6.3–0.6.5 (no passphrase, values in the clear)",
            Generation::BotSdk066To071 => "matrix-bot-sdk 0.6.6–0.7.1 (passphrase \"\", values encrypted)",
            Generation::BotSdk066To071Upgraded => "matrix-bot-sdk 0.6.6–0.7.1, upgraded from 0.6.5: older values in the clear, newer ones encrypted",
            Generation::HalfUpgraded => "half-upgraded by matrix-bot-sdk 0.6.6: it added its store cipher to an unencrypted 0.6.5 store and its migration failed (Json(\"missing field version\")); the old bot can no longer start on it, this tool reads it",
            Generation::Sled02WithPassphrase => "matrix-sdk-sled 0.2 opened with a passphrase (JSON store cipher, values encrypted); matrix-bot-sdk 0.6.0–0.6.5 passed none",
            Generation::Sled02CipherAdded => "matrix-sdk-sled 0.2: a store cipher added to a store written without one (values in the clear and encrypted)",
            Generation::Unknown => "a layout no known matrix-bot-sdk version writes",
        }
    }
}

/// One tree, read entry by entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TreeSummary {
    pub name: String,
    pub entries: u64,
    /// Entries (or unreadable ranges) that do not decode: counted in `entries` too.
    pub damaged: u64,
    pub plaintext_values: u64,
    pub encrypted_values: u64,
    /// Bytes of keys and values.
    pub live_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DamagedSummary {
    pub tree: String,
    pub position: u64,
    pub kind: &'static str,
    /// Never quotes key material.
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    pub crypto_store_dir: PathBuf,
    pub sled_dir: PathBuf,
    /// From Sled's `conf`, e.g. `0.34`.
    pub sled_format_version: String,
    /// Some process (the bot) held Sled's exclusive lock when probed before or after the read.
    pub bot_holds_lock: bool,
    pub store_version: Option<u8>,
    pub cipher_format: Option<CipherFormat>,
    /// `None` when the store has no cipher (nothing to open).
    pub passphrase_opens: Option<bool>,
    pub value_kind: ValueKind,
    pub generation: Generation,
    pub generation_description: &'static str,
    /// The Sled folder's files on disk, against the bytes of every live key and value.
    pub disk_bytes: u64,
    pub live_bytes: u64,
    pub trees: Vec<TreeSummary>,
    pub damaged: u64,
    /// The first damaged entries, in tree and key order.
    pub damaged_entries: Vec<DamagedSummary>,
    /// From the account's JSON (the identity keys need the genuine Olm code: `sqlite-convert`).
    pub account_user_id: Option<String>,
    pub account_device_id: Option<String>,
    /// From bot-sdk.json.
    pub bot_sdk_device_id: Option<String>,
    pub sled_would_refuse: Vec<String>,
    pub read_seconds: f64,
}

impl StoreSummary {
    pub fn tree(&self, name: &str) -> Option<&TreeSummary> {
        self.trees.iter().find(|t| t.name == name)
    }

    /// Entries of `name`, 0 for a tree the store lacks.
    pub fn entries(&self, name: &str) -> u64 {
        self.tree(name).map_or(0, |t| t.entries)
    }
}

impl Serialize for CipherFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Reads the whole store once and summarizes it. Returns the opened store too (for the genuine
/// account decoding a caller may add), or `None` when the passphrase does not open it: the summary
/// then holds what the store says before its cipher (version, cipher format, size).
pub fn inspect(
    location: &StoreLocation,
    passphrase: &str,
) -> Result<(StoreSummary, Option<SledStore>), OpenError> {
    location.check()?;
    let started = Instant::now();
    let db_file = location.sled_db_file();
    let held_before = SourceLock::is_held_elsewhere(&db_file)?;
    let options = OpenOptions { passphrase: passphrase.to_owned() };
    let opened = SledStore::open_with(location, options, SourceLock::without_locking(&db_file)?);
    let (mut summary, store) = match opened {
        Ok(store) => (read_all(&store), Some(store)),
        Err(OpenError::WrongPassphrase(_)) => (header_only(location)?, None),
        Err(e) => return Err(e),
    };
    summary.bot_holds_lock = held_before || SourceLock::is_held_elsewhere(&db_file)?;
    summary.read_seconds = started.elapsed().as_secs_f64();
    Ok((summary, store))
}

fn read_all(store: &SledStore) -> StoreSummary {
    let info = store.info();
    let cipher = store.cipher();
    let names: Vec<Vec<u8>> = store.db().tree_names().map(<[u8]>::to_vec).collect();
    let mut trees = Vec::with_capacity(names.len());
    let mut damaged_entries = Vec::new();
    for name in names {
        let tree = read_tree(store, &name, cipher.as_deref(), &mut damaged_entries);
        trees.push(tree);
    }
    let pickles = trees.iter().filter(|t| t.name != DEFAULT_TREE && t.name != OLM_HASHES);
    let (plaintext, encrypted) =
        pickles.fold((0, 0), |(p, e), t| (p + t.plaintext_values, e + t.encrypted_values));
    let value_kind = ValueKind::of(plaintext, encrypted);
    let generation = Generation::of(info.store_version, info.cipher_format, value_kind);
    StoreSummary {
        crypto_store_dir: info.crypto_store_dir.clone(),
        sled_dir: store.db().dir().to_owned(),
        sled_format_version: format_version(store.db()),
        bot_holds_lock: false,
        store_version: info.store_version,
        cipher_format: info.cipher_format,
        passphrase_opens: info.cipher_format.map(|_| true),
        value_kind,
        generation,
        generation_description: generation.describe(),
        disk_bytes: info.store_bytes,
        live_bytes: trees.iter().map(|t| t.live_bytes).sum(),
        damaged: trees.iter().map(|t| t.damaged).sum(),
        trees,
        damaged_entries,
        account_user_id: info.account_user_id.clone(),
        account_device_id: info.account_device_id.clone(),
        bot_sdk_device_id: info.device_id.clone(),
        sled_would_refuse: info.sled_would_refuse.clone(),
        read_seconds: 0.0,
    }
}

/// Every entry of one tree: counted, its value classified, and decoded as far as needed to know
/// it is whole (room keys all the way, as `extract` decodes them; other pickles to their JSON).
fn read_tree(
    store: &SledStore,
    name: &[u8],
    cipher: Option<&StoreCipher>,
    damaged_entries: &mut Vec<DamagedSummary>,
) -> TreeSummary {
    let name_text = String::from_utf8_lossy(name).into_owned();
    let mut tree = TreeSummary { name: name_text.clone(), ..Default::default() };
    let mut damaged = |tree: &mut TreeSummary, position: u64, kind: &'static str, message: String| {
        tree.damaged += 1;
        if damaged_entries.len() < LISTED_DAMAGE {
            damaged_entries.push(DamagedSummary { tree: name_text.clone(), position, kind, message });
        }
    };
    for item in store.leaves(name, None) {
        let (first, leaf) = match item {
            LeafItem::Leaf { position, leaf } => (position, leaf),
            LeafItem::Lost(lost) => {
                tree.entries += 1;
                damaged(&mut tree, lost.position, lost.damage.kind.as_str(), lost.damage.message);
                continue;
            }
        };
        for (i, (key, value)) in leaf.entries().enumerate() {
            tree.entries += 1;
            tree.live_bytes += (key.len() + value.len()) as u64;
            if tree.name == DEFAULT_TREE {
                continue;
            }
            let check = if tree.name == OLM_HASHES {
                serde_json::from_slice::<serde::de::IgnoredAny>(&key)
                    .map(|_| ())
                    .map_err(|e| crate::Damage::from_json(crate::DamageKind::InvalidJson, "Olm message hash", &e))
            } else {
                if tree.name == INBOUND_GROUP_SESSIONS {
                    decode_value(value, cipher).map(drop)
                } else {
                    open_value(value, cipher).and_then(|json| {
                        serde_json::from_slice::<serde::de::IgnoredAny>(&json).map(|_| ()).map_err(|e| {
                            crate::Damage::from_json(crate::DamageKind::InvalidJson, "value", &e)
                        })
                    })
                }
            };
            match check {
                // Only whole values tell how the store keeps them (random bytes are no plaintext).
                Ok(()) if tree.name == OLM_HASHES => {}
                Ok(()) if looks_encrypted(value) => tree.encrypted_values += 1,
                Ok(()) => tree.plaintext_values += 1,
                Err(damage) => damaged(&mut tree, first + i as u64, damage.kind.as_str(), damage.message),
            }
        }
    }
    tree
}

/// What the store says before its cipher is opened (the passphrase did not open it).
fn header_only(location: &StoreLocation) -> Result<StoreSummary, OpenError> {
    let (db, header) = recover(location)?;
    let cipher_format = header.exported_cipher.as_deref().and_then(|c| CipherFormat::of_export(c));
    let generation = Generation::Unknown;
    Ok(StoreSummary {
        crypto_store_dir: location.crypto_store_dir.clone(),
        sled_dir: db.dir().to_owned(),
        sled_format_version: format_version(&db),
        bot_holds_lock: false,
        store_version: header.store_version,
        cipher_format,
        passphrase_opens: Some(false),
        value_kind: ValueKind::Unknown,
        generation,
        generation_description: generation.describe(),
        disk_bytes: crate::store::folder_bytes(&location.sled_dir()),
        live_bytes: 0,
        trees: Vec::new(),
        damaged: 0,
        damaged_entries: Vec::new(),
        account_user_id: None,
        account_device_id: None,
        bot_sdk_device_id: location.device_id()?,
        sled_would_refuse: db.recovery().sled_would_refuse.clone(),
        read_seconds: 0.0,
    })
}

fn format_version(db: &sled_readonly::Db) -> String {
    let (major, minor) = db.parameters().version;
    format!("{major}.{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_follow_the_reference_table() {
        use CipherFormat::{Json, MessagePack};
        use ValueKind as V;
        let cases = [
            (Some(5), None, V::Plaintext, Generation::BotSdk060To062),
            (Some(4), None, V::None, Generation::BotSdk060To062),
            (Some(6), None, V::Plaintext, Generation::BotSdk063To065),
            (Some(7), Some(MessagePack), V::Encrypted, Generation::BotSdk066To071),
            (Some(7), Some(MessagePack), V::Mixed, Generation::BotSdk066To071Upgraded),
            (Some(5), Some(MessagePack), V::Plaintext, Generation::HalfUpgraded),
            (Some(6), Some(MessagePack), V::Plaintext, Generation::HalfUpgraded),
            (Some(5), Some(Json), V::Encrypted, Generation::Sled02WithPassphrase),
            (Some(5), Some(Json), V::Mixed, Generation::Sled02CipherAdded),
            (Some(7), None, V::Plaintext, Generation::Unknown),
            (Some(5), None, V::Encrypted, Generation::Unknown),
            (Some(5), Some(MessagePack), V::Unknown, Generation::Unknown),
            (None, None, V::Plaintext, Generation::Unknown),
        ];
        for (version, cipher, values, expected) in cases {
            assert_eq!(Generation::of(version, cipher, values), expected, "{version:?} {cipher:?} {values:?}");
        }
    }
}
