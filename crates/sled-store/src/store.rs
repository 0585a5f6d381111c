//! Opening a store: check the folder, take the shared lock on the source, make the private working
//! copy, unlock the store cipher, and learn what kind of store it is. Nothing here ever opens a
//! file of the source store for writing.

use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::cipher::{CipherError, CipherFormat, StoreCipher};
use crate::error::OpenError;
use crate::locate::StoreLocation;
use crate::lock::SourceLock;
use crate::room_key::{decode_entry, open_value};
use crate::scan::{open_sled, release_freed_memory, Decoder, SessionScanner, TreeScanner};
use crate::working_copy::{CopyProgress, WorkingCopy};

pub const INBOUND_GROUP_SESSIONS: &str = "inbound_group_sessions";

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// matrix-bot-sdk 0.6.6+ passes the empty passphrase.
    pub passphrase: String,
    /// Parent folder of the private working copy.
    pub work_dir: PathBuf,
    /// Sled's page cache; its default (1 GB) is far more than a streaming read needs.
    pub cache_capacity: u64,
    /// Reopen the working copy after this many bytes read (dropping the `Db` drops its whole page
    /// cache). Not needed for memory (the scanner keeps Sled's cache within `cache_capacity`, see
    /// `LRU_FEED_LOOKUPS` in scan.rs), and each open rebuilds the page table, so off unless asked.
    pub reopen_after_bytes: Option<u64>,
}

impl OpenOptions {
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        OpenOptions {
            passphrase: String::new(),
            work_dir: work_dir.into(),
            cache_capacity: 16 << 20,
            reopen_after_bytes: None,
        }
    }
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
    pub working_copy_cloned: bool,
    pub store_bytes: u64,
}

pub struct SledStore {
    info: StoreInfo,
    cipher: Option<Arc<StoreCipher>>,
    options: OpenOptions,
    // Field order matters: the copy is removed after the lock is released... either order is safe,
    // but keep the lock for as long as anything reads.
    copy: Arc<WorkingCopy>,
    _lock: Arc<SourceLock>,
}

impl SledStore {
    pub fn open(
        location: &StoreLocation,
        options: OpenOptions,
        progress: &mut dyn FnMut(CopyProgress),
    ) -> Result<Self, OpenError> {
        location.check()?;
        let device_id = location.device_id()?;
        let lock = SourceLock::acquire(&location.sled_db_file())?;
        let copy = WorkingCopy::create(&location.sled_dir(), &options.work_dir, progress)?;
        let db = open_sled(copy.sled_dir(), options.cache_capacity)?;

        let sled_err = |e: sled::Error| OpenError::Sled {
            path: location.sled_dir(),
            detail: e.to_string(),
        };
        let store_version = db
            .get("store_version")
            .map_err(sled_err)?
            .and_then(|v| v.first().copied());
        let has_inbound_tree = db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == INBOUND_GROUP_SESSIONS.as_bytes());
        if let Some(version) = store_version {
            if version <= 3 {
                return Err(OpenError::LegacyStore {
                    path: location.sled_dir(),
                    version,
                });
            }
        }
        if !has_inbound_tree {
            return Err(OpenError::NotACryptoStore(location.sled_dir()));
        }

        let cipher = match db.get(b"store_cipher\xff").map_err(sled_err)? {
            None => None,
            Some(exported) => Some(Arc::new(
                StoreCipher::unlock(&exported, &options.passphrase).map_err(|e| match e {
                    CipherError::WrongPassphrase => OpenError::WrongPassphrase(location.sled_dir()),
                    CipherError::Malformed(detail) => OpenError::CorruptCipher {
                        path: location.sled_dir(),
                        detail,
                    },
                })?,
            )),
        };

        let (account_user_id, account_device_id) = read_account_identity(&db, cipher.as_deref());
        // Not kept for the scanners: they run on other threads, and a page table built here would
        // be freed into this thread's arena piece by piece as they page nodes in and out (measured:
        // 20 MB more at 1M sessions than dropping it now and letting the reader thread open its own).
        drop(db);
        release_freed_memory();

        Ok(SledStore {
            info: StoreInfo {
                crypto_store_dir: location.crypto_store_dir.clone(),
                store_version,
                cipher_format: cipher.as_ref().map(|c| c.format()),
                device_id,
                account_user_id,
                account_device_id,
                working_copy_cloned: copy.cloned,
                store_bytes: copy.bytes,
            },
            cipher,
            options,
            copy: Arc::new(copy),
            _lock: Arc::new(lock),
        })
    }

    pub fn info(&self) -> &StoreInfo {
        &self.info
    }

    /// Streams the room keys in Sled key order, starting after `start_after` (a resume point).
    pub fn sessions(&self, start_after: Option<Vec<u8>>) -> SessionScanner {
        self.entries(INBOUND_GROUP_SESSIONS, decode_entry, start_after)
    }

    /// The `inbound_group_sessions` values undecoded, each in a buffer wiped when dropped, for a
    /// caller that decodes them on other threads with [`crate::decode_value`] and [`Self::cipher`]
    /// (the stream spreads decoding over the cores with encryption, leaving the reader thread
    /// only Sled's iteration). Read errors come as `ScanItem::Damaged` as in [`Self::sessions`].
    pub fn raw_sessions(&self, start_after: Option<Vec<u8>>) -> TreeScanner<Zeroizing<Vec<u8>>> {
        self.entries(INBOUND_GROUP_SESSIONS, raw_entry, start_after)
    }

    /// The store cipher, if the store has one: what [`crate::decode_value`] needs.
    pub fn cipher(&self) -> Option<Arc<StoreCipher>> {
        self.cipher.clone()
    }

    /// Streams the entries of any tree, each decoded by `decode`, in Sled key order. A tree the
    /// store lacks yields nothing (Sled creates it in the private working copy, never in the source).
    pub fn entries<T>(&self, tree: &'static str, decode: Decoder<T>, start_after: Option<Vec<u8>>) -> TreeScanner<T> {
        TreeScanner::new(
            self.copy.sled_dir().to_owned(),
            tree,
            decode,
            self.cipher.clone(),
            start_after,
            self.options.cache_capacity,
            self.options.reopen_after_bytes,
            KeepAlive {
                _copy: self.copy.clone(),
                _lock: self._lock.clone(),
            },
        )
    }
}

fn raw_entry(_key: &[u8], value: &[u8], _cipher: Option<&StoreCipher>) -> Result<Zeroizing<Vec<u8>>, crate::Damage> {
    Ok(Zeroizing::new(value.to_vec()))
}

/// A scanner may outlive the `SledStore` handle (it moves to a reader thread): it keeps the working
/// copy and the source lock alive until it is dropped.
pub struct KeepAlive {
    _copy: Arc<WorkingCopy>,
    _lock: Arc<SourceLock>,
}

fn read_account_identity(
    db: &sled::Db,
    cipher: Option<&StoreCipher>,
) -> (Option<String>, Option<String>) {
    let account = (|| {
        let tree = db
            .tree_names()
            .into_iter()
            .find(|n| n.as_ref() == b"account")?;
        let tree = db.open_tree(tree).ok()?;
        let value = tree.get(b"account\xff").ok()??;
        let json: serde_json::Value =
            serde_json::from_slice(&open_value(&value, cipher).ok()?).ok()?;
        Some((
            json.get("user_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            json.get("device_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        ))
    })();
    account.unwrap_or((None, None))
}
