//! An existing `matrix-sdk-crypto.sqlite3` beside the Sled store, looked at without writing to it:
//! whose account it holds (user, device, public identity keys), how many room keys, which schema
//! version, and how it relates to the Sled store's account — converted already, the upgraded bot's
//! new account under the old device ID, or another device altogether.
//!
//! The account is read by the genuine matrix-sdk-sqlite 0.9 code, the code the bot opens it with.
//! That code writes on open (schema migrations, `journal_mode = wal`, a new store cipher when the
//! store has none), and even a SQLite read-only connection creates `-wal` and `-shm` files beside a
//! WAL-mode database. So the bot's file is only ever opened read-only — `immutable` when no `-wal`
//! sits beside it (nothing has been written since the last checkpoint, and then SQLite creates no
//! file and takes no lock) — and the genuine code opens a private copy of its schema and its `kv`
//! table (the account, the cipher and the version live there: a few kilobytes, whatever the number
//! of room keys) in a temporary folder that is removed afterwards.

use std::path::{Path, PathBuf};

use matrix_sdk_crypto::olm::Account;
use matrix_sdk_crypto::store::CryptoStore;
use matrix_sdk_sqlite::{OpenStoreError, SqliteCryptoStore};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sled_store::locate::SQLITE_STORE_NAME;

/// The schema version matrix-sdk-sqlite 0.9 (matrix-bot-sdk 0.8) writes. Its open accepts a newer
/// store without a word, but reads it with the old code: we call such a store unreadable instead.
pub const KNOWN_SCHEMA_VERSION: u8 = 9;

/// The public half of an Olm account: who it is and the identity keys its device publishes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountKeys {
    pub user_id: String,
    pub device_id: String,
    pub curve25519: String,
    pub ed25519: String,
}

impl AccountKeys {
    pub fn of(account: &Account) -> Self {
        let keys = account.identity_keys();
        AccountKeys {
            user_id: account.user_id().to_string(),
            device_id: account.device_id().to_string(),
            curve25519: keys.curve25519.to_base64(),
            ed25519: keys.ed25519.to_base64(),
        }
    }
}

/// What sits where the converted store goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExistingStore {
    None,
    Readable(ReadableStore),
    Unreadable { path: PathBuf, reason: Unreadable },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadableStore {
    pub path: PathBuf,
    /// matrix-sdk-sqlite's own version number (the `version` row of `kv`).
    pub schema_version: u8,
    /// Whether its values are encrypted with a store cipher (matrix-bot-sdk 0.8 always does).
    pub encrypted: bool,
    /// Rows of `inbound_group_session`, as matrix-sdk-sqlite counts them.
    pub room_keys: u64,
    /// None: the new bot never got as far as creating its account.
    pub account: Option<AccountKeys>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The store cipher does not open with the passphrase given (or its entry is damaged).
    WrongPassphrase,
    /// The store is encrypted and no passphrase was given.
    PassphraseNeeded,
    /// Written by a newer matrix-sdk-sqlite than the one matrix-bot-sdk 0.8 runs.
    NewerSchema { version: u8 },
    /// Not a matrix-sdk-sqlite crypto store, or SQLite cannot read the file.
    NotACryptoStore(String),
    /// The genuine code opened it but refused the account.
    Account(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::WrongPassphrase => write!(f, "its store cipher does not open with the passphrase given"),
            Unreadable::PassphraseNeeded => write!(f, "it is encrypted and no passphrase was given"),
            Unreadable::NewerSchema { version } => write!(
                f,
                "schema version {version} is newer than the {KNOWN_SCHEMA_VERSION} of matrix-sdk-sqlite 0.9 (matrix-bot-sdk 0.8)"
            ),
            Unreadable::NotACryptoStore(detail) => write!(f, "not a matrix-sdk-sqlite crypto store ({detail})"),
            Unreadable::Account(detail) => write!(f, "matrix-sdk-sqlite 0.9 cannot read its account ({detail})"),
        }
    }
}

impl Unreadable {
    /// A stable name for machine-readable output.
    pub fn code(&self) -> &'static str {
        match self {
            Unreadable::WrongPassphrase => "wrong-passphrase",
            Unreadable::PassphraseNeeded => "passphrase-needed",
            Unreadable::NewerSchema { .. } => "newer-schema",
            Unreadable::NotACryptoStore(_) => "not-a-crypto-store",
            Unreadable::Account(_) => "account-unreadable",
        }
    }
}

/// How an existing SQLite store relates to the Sled store's account: what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// No SQLite store: `convert` writes one.
    NoStore,
    /// A store without an account: the new bot stopped before creating one; `convert` replaces it.
    NoAccount,
    /// Same user, device and identity keys: converted already.
    Converted,
    /// The same device ID with other identity keys: the upgraded bot made a new account under the
    /// old device ID (→ the already-upgraded repair).
    SameDeviceOtherKeys,
    /// Another device ID of the same user: the bot was upgraded as a new device (→ `merge`).
    OtherDevice,
    /// Another user's store: the wrong folder, or the bot's account changed.
    OtherUser,
    /// It cannot be read (see [`Unreadable`]).
    Unreadable,
}

impl Relation {
    /// How a store's account relates to the Sled store's (or to any account the store should be).
    pub fn between(account: &AccountKeys, sled_account: &AccountKeys) -> Relation {
        if account.user_id != sled_account.user_id {
            Relation::OtherUser
        } else if account.device_id != sled_account.device_id {
            Relation::OtherDevice
        } else if account.curve25519 == sled_account.curve25519
            && account.ed25519 == sled_account.ed25519
        {
            Relation::Converted
        } else {
            Relation::SameDeviceOtherKeys
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Relation::NoStore => "none",
            Relation::NoAccount => "without-account",
            Relation::Converted => "converted",
            Relation::SameDeviceOtherKeys => "same-device-other-keys",
            Relation::OtherDevice => "other-device",
            Relation::OtherUser => "other-user",
            Relation::Unreadable => "unreadable",
        }
    }
}

impl ExistingStore {
    /// Compares the store's account with the Sled store's.
    pub fn relation(&self, sled_account: &AccountKeys) -> Relation {
        let store = match self {
            ExistingStore::None => return Relation::NoStore,
            ExistingStore::Unreadable { .. } => return Relation::Unreadable,
            ExistingStore::Readable(store) => store,
        };
        let Some(account) = &store.account else {
            return Relation::NoAccount;
        };
        Relation::between(account, sled_account)
    }

    /// `none`, `without-account`, `with-account`, `unreadable`: what `convert` reports it found.
    pub fn presence(&self) -> &'static str {
        match self {
            ExistingStore::None => "none",
            ExistingStore::Readable(ReadableStore { account: None, .. }) => "without-account",
            ExistingStore::Readable(_) => "with-account",
            ExistingStore::Unreadable { .. } => "unreadable",
        }
    }
}

/// Reads `crypto_store_dir/matrix-sdk-crypto.sqlite3` without writing to it or beside it.
/// `passphrase`: what the bot opens it with (matrix-bot-sdk 0.8: `""`); only used when the store
/// has a cipher.
pub async fn read_existing(crypto_store_dir: &Path, passphrase: Option<&str>) -> ExistingStore {
    let path = crypto_store_dir.join(SQLITE_STORE_NAME);
    if !path.exists() {
        return ExistingStore::None;
    }
    match read(&path, passphrase).await {
        Ok(store) => ExistingStore::Readable(store),
        Err(reason) => ExistingStore::Unreadable { path, reason },
    }
}

/// [`read_existing`] on the calling thread (its own single-threaded runtime).
pub fn read_existing_blocking(crypto_store_dir: &Path, passphrase: Option<&str>) -> ExistingStore {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(read_existing(crypto_store_dir, passphrase)),
        Err(e) => ExistingStore::Unreadable {
            path: crypto_store_dir.join(SQLITE_STORE_NAME),
            reason: Unreadable::NotACryptoStore(format!("cannot start the async runtime: {e}")),
        },
    }
}

async fn read(path: &Path, passphrase: Option<&str>) -> Result<ReadableStore, Unreadable> {
    let not_a_store = |e: rusqlite::Error| Unreadable::NotACryptoStore(e.to_string());
    let source = open_read_only(path).map_err(not_a_store)?;
    let kv = |key: &str| {
        source
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |row| {
                row.get::<_, Vec<u8>>(0)
            })
            .optional()
            .map_err(not_a_store)
    };
    let schema_version = match kv("version")?.as_deref() {
        Some([v]) => *v,
        Some(_) => {
            return Err(Unreadable::NotACryptoStore(
                "its version entry is not one byte".into(),
            ))
        }
        None => {
            return Err(Unreadable::NotACryptoStore(
                "it has no version entry".into(),
            ))
        }
    };
    if schema_version > KNOWN_SCHEMA_VERSION {
        return Err(Unreadable::NewerSchema {
            version: schema_version,
        });
    }
    let encrypted = kv("cipher")?.is_some();
    let passphrase = match (encrypted, passphrase) {
        (false, _) => None,
        (true, Some(p)) => Some(p),
        (true, None) => return Err(Unreadable::PassphraseNeeded),
    };
    let room_keys: i64 = source
        .query_row("SELECT count(*) FROM inbound_group_session", [], |row| {
            row.get(0)
        })
        .map_err(not_a_store)?;

    let copy = tempfile::Builder::new()
        .prefix("sled-migration-tool-existing-")
        .tempdir()
        .map_err(|e| {
            Unreadable::NotACryptoStore(format!("cannot create a temporary folder: {e}"))
        })?;
    copy_schema_and_kv(&source, &copy.path().join(SQLITE_STORE_NAME)).map_err(not_a_store)?;
    drop(source);

    let store = SqliteCryptoStore::open(copy.path(), passphrase)
        .await
        .map_err(|e| match e {
            OpenStoreError::InitCipher(_) => Unreadable::WrongPassphrase,
            other => Unreadable::NotACryptoStore(other.to_string()),
        })?;
    let account = store
        .load_account()
        .await
        .map_err(|e| Unreadable::Account(e.to_string()))?;
    drop(store);
    Ok(ReadableStore {
        path: path.to_owned(),
        schema_version,
        encrypted,
        room_keys: room_keys as u64,
        account: account.as_ref().map(AccountKeys::of),
    })
}

/// Opens the bot's SQLite file so that nothing is written to it or beside it. Without a `-wal`
/// file the database is whole in its main file and `immutable=1` reads it with no lock and no new
/// file; with one (the bot runs, or died before its checkpoint) the log must be read too, through
/// the files that already exist.
pub fn open_read_only(db: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let parameters = if Path::new(&wal).exists() {
        "mode=ro"
    } else {
        "mode=ro&immutable=1"
    };
    Connection::open_with_flags(format!("file:{}?{parameters}", uri_path(db)?), flags)
}

/// `path` as the path of a `file:` URI: every byte that is not plainly safe is percent-encoded.
fn uri_path(path: &Path) -> rusqlite::Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let absolute = std::path::absolute(path).map_err(|e| {
        rusqlite::Error::InvalidPath(PathBuf::from(format!("{}: {e}", path.display())))
    })?;
    let mut out = String::new();
    for &b in absolute.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// A new database at `to` with `source`'s tables and indexes, empty but for `kv`: enough for
/// matrix-sdk-sqlite to open it (migrating an older schema forward if it must) and load the account.
fn copy_schema_and_kv(source: &Connection, to: &Path) -> rusqlite::Result<()> {
    let mut copy = Connection::open(to)?;
    let tx = copy.transaction()?;
    let mut schema = source.prepare(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' \
         ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, rowid",
    )?;
    for sql in schema.query_map([], |row| row.get::<_, String>(0))? {
        tx.execute_batch(&sql?)?;
    }
    let mut rows = source.prepare("SELECT key, value FROM kv")?;
    let mut insert = tx.prepare("INSERT INTO kv (key, value) VALUES (?1, ?2)")?;
    for row in rows.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
    })? {
        let (key, value) = row?;
        insert.execute(rusqlite::params![key, value])?;
    }
    drop(insert);
    tx.commit()
}

/// The Sled store's account, decoded by the genuine 0.9 code as `convert` decodes it.
pub fn sled_account_keys(sled: &sled_store::SledStore) -> Option<AccountKeys> {
    use crate::sled_entries::{account_entry, AccountEntry, ACCOUNT};
    sled.entries(ACCOUNT, account_entry, None)
        .find_map(|item| match item {
            sled_store::ScanItem::Key(entry) => match entry.key {
                AccountEntry::Account(account) => Some(AccountKeys::of(&account)),
                _ => None,
            },
            sled_store::ScanItem::Damaged(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths_escape_what_a_uri_would_read_as_syntax() {
        assert_eq!(
            uri_path(Path::new("/a b/c?d#e%f/x.sqlite3")).unwrap(),
            "/a%20b/c%3Fd%23e%25f/x.sqlite3"
        );
    }
}
