//! Opening a store: check the folder, take the shared lock on the source, recover the Sled
//! database read-only (`sled-readonly`: Sled's own open writes to the store it opens), unlock the
//! store cipher, and learn what kind of store it is. Nothing here opens a file of the source
//! store for writing.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use sled_readonly::Db;

use crate::cipher::{CipherError, CipherFormat, StoreCipher};
use crate::error::OpenError;
use crate::locate::StoreLocation;
use crate::lock::SourceLock;
use crate::room_key::{decode_entry, open_value};
use crate::scan::{Decoder, LeafScanner, SessionScanner, TreeScanner};

pub const INBOUND_GROUP_SESSIONS: &str = "inbound_group_sessions";

#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// matrix-bot-sdk 0.6.6+ passes the empty passphrase.
    pub passphrase: String,
}

#[derive(Debug, Clone)]
pub struct StoreInfo {
    pub crypto_store_dir: PathBuf,
    pub store_version: Option<u8>,
    pub cipher_format: Option<CipherFormat>,
    /// From bot-sdk.json.
    pub device_id: Option<String>,
    /// From the pickled Olm account, when it can be read.
    pub account_user_id: Option<String>,
    pub account_device_id: Option<String>,
    /// The Sled folder's size on disk (log, snapshot, blobs).
    pub store_bytes: u64,
    /// Why Sled's own open would refuse this store, which is read anyway (see sled-readonly's
    /// `RecoveryReport::sled_would_refuse`): the user must hear of it.
    pub sled_would_refuse: Vec<String>,
}

pub struct SledStore {
    info: StoreInfo,
    cipher: Option<Arc<StoreCipher>>,
    db: Arc<Db>,
    /// Held for as long as anything reads (scanners keep a clone): the bot cannot start meanwhile.
    lock: Arc<SourceLock>,
}

impl SledStore {
    pub fn open(location: &StoreLocation, options: OpenOptions) -> Result<Self, OpenError> {
        location.check()?;
        let lock = SourceLock::acquire(&location.sled_db_file())?;
        Self::open_with(location, options, lock)
    }

    /// [`SledStore::open`] with the lock the caller chose (`inspect` reads without holding one).
    pub(crate) fn open_with(location: &StoreLocation, options: OpenOptions, lock: SourceLock) -> Result<Self, OpenError> {
        let device_id = location.device_id()?;
        let sled_dir = location.sled_dir();
        let (db, header) = recover(location)?;
        let cipher = match &header.exported_cipher {
            None => None,
            Some(exported) => Some(Arc::new(StoreCipher::unlock(exported, &options.passphrase).map_err(|e| match e {
                CipherError::WrongPassphrase => OpenError::WrongPassphrase(sled_dir.clone()),
                CipherError::Malformed(detail) => OpenError::CorruptCipher { path: sled_dir.clone(), detail },
            })?)),
        };

        let (account_user_id, account_device_id) = read_account_identity(&db, cipher.as_deref());
        Ok(SledStore {
            info: StoreInfo {
                crypto_store_dir: location.crypto_store_dir.clone(),
                store_version: header.store_version,
                cipher_format: cipher.as_ref().map(|c| c.format()),
                device_id,
                account_user_id,
                account_device_id,
                store_bytes: folder_bytes(&sled_dir),
                sled_would_refuse: db.recovery().sled_would_refuse.clone(),
            },
            cipher,
            db,
            lock: Arc::new(lock),
        })
    }

    /// The Sled database as recovered (its format version, its tree names).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub fn info(&self) -> &StoreInfo {
        &self.info
    }

    /// Streams the room keys in Sled key order, starting after `start_after` (a resume point).
    pub fn sessions(&self, start_after: Option<Vec<u8>>) -> SessionScanner {
        self.entries(INBOUND_GROUP_SESSIONS, decode_entry, start_after)
    }

    /// The `inbound_group_sessions` leaves undecoded, for a caller that decodes their values on
    /// other threads with [`crate::decode_value`] and [`Self::cipher`] (the stream spreads
    /// decoding over the cores with encryption, leaving the reader thread only the walk through
    /// the tree, and no value is copied). Unreadable ranges come as `LeafItem::Lost`.
    pub fn session_leaves(&self, start_after: Option<Vec<u8>>) -> LeafScanner {
        self.leaves(INBOUND_GROUP_SESSIONS.as_bytes(), start_after)
    }

    /// The store cipher, if the store has one: what [`crate::decode_value`] needs.
    pub fn cipher(&self) -> Option<Arc<StoreCipher>> {
        self.cipher.clone()
    }

    /// Streams the entries of any tree, each decoded by `decode`, in Sled key order. A tree the
    /// store lacks yields nothing.
    pub fn entries<T>(&self, tree: &'static str, decode: Decoder<T>, start_after: Option<Vec<u8>>) -> TreeScanner<T> {
        TreeScanner::new(self.leaves(tree.as_bytes(), start_after), decode, self.cipher.clone())
    }

    pub(crate) fn leaves(&self, tree: &[u8], start_after: Option<Vec<u8>>) -> LeafScanner {
        let start = match &start_after {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Unbounded,
        };
        LeafScanner::new(sled_readonly::Scan::new(self.db.clone(), tree, start), self.lock.clone())
    }
}

/// What the default tree says about the store before its cipher is unlocked.
pub(crate) struct Header {
    pub store_version: Option<u8>,
    pub exported_cipher: Option<zeroize::Zeroizing<Vec<u8>>>,
}

/// Recovers the Sled database read-only and reads its header, refusing what is no crypto store of
/// ours (a pre-0.6 one, another Sled database).
pub(crate) fn recover(location: &StoreLocation) -> Result<(Arc<Db>, Header), OpenError> {
    let sled_dir = location.sled_dir();
    let db = Db::open(&sled_dir).map_err(|e| OpenError::Sled { path: sled_dir.clone(), detail: e.to_string() })?;
    let unreadable = |e: sled_readonly::PageError| OpenError::Sled { path: sled_dir.clone(), detail: e.to_string() };
    let store_version = db
        .get(sled_readonly::DEFAULT_TREE, b"store_version")
        .map_err(unreadable)?
        .and_then(|v| v.first().copied());
    if let Some(version) = store_version {
        if version <= 3 {
            return Err(OpenError::LegacyStore { path: sled_dir, version });
        }
    }
    if !db.has_tree(INBOUND_GROUP_SESSIONS.as_bytes()) {
        return Err(OpenError::NotACryptoStore(sled_dir));
    }
    let exported_cipher = db.get(sled_readonly::DEFAULT_TREE, b"store_cipher\xff").map_err(unreadable)?;
    Ok((db, Header { store_version, exported_cipher }))
}

/// Bytes of every file under `dir`: what reading the store means for the disk.
pub(crate) fn folder_bytes(dir: &std::path::Path) -> u64 {
    tree_copy::list_tree(dir)
        .map(|tree| tree.files.iter().map(|f| f.metadata.len()).sum())
        .unwrap_or(0)
}

fn read_account_identity(db: &Db, cipher: Option<&StoreCipher>) -> (Option<String>, Option<String>) {
    let account = (|| {
        let value = db.get(b"account", b"account\xff").ok()??;
        let json: serde_json::Value = serde_json::from_slice(&open_value(&value, cipher).ok()?).ok()?;
        let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        Some((field("user_id"), field("device_id")))
    })();
    account.unwrap_or((None, None))
}
