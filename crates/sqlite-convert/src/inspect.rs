//! `inspect`'s whole local report: the Sled store's summary (`sled_store::inspect`), its account's
//! public identity keys as the genuine 0.9 code reads them, and an existing SQLite store beside it
//! with how the two accounts relate. Nothing here writes to either store.

use std::path::Path;

use serde::Serialize;
use sled_store::inspect::StoreSummary;
use sled_store::{OpenError, StoreLocation};

use crate::existing::{
    read_existing_blocking, sled_account_keys, AccountKeys, ExistingStore, Relation,
};

#[derive(Debug, Serialize)]
pub struct Inspection {
    pub sled: StoreSummary,
    /// The Sled store's account (public keys only); `None` when the passphrase does not open the
    /// store or the account cannot be read.
    pub account: Option<AccountKeys>,
    pub sqlite: SqliteStoreReport,
}

/// An existing `matrix-sdk-crypto.sqlite3`, as JSON for the command.
#[derive(Debug, Serialize)]
pub struct SqliteStoreReport {
    pub path: String,
    /// `none`, `without-account`, `converted`, `same-device-other-keys`, `other-device`,
    /// `other-user`, `unreadable`; `unknown` when the Sled account could not be read to compare.
    pub state: &'static str,
    pub schema_version: Option<u8>,
    pub encrypted: Option<bool>,
    pub room_keys: Option<u64>,
    pub account: Option<AccountKeys>,
    /// Why it cannot be read: a stable code and a sentence.
    pub unreadable: Option<(&'static str, String)>,
}

pub fn inspect(
    crypto_store_dir: &Path,
    sled_passphrase: &str,
    sqlite_passphrase: Option<&str>,
) -> Result<Inspection, OpenError> {
    let location = StoreLocation::new(crypto_store_dir);
    let (sled, store) = sled_store::inspect::inspect(&location, sled_passphrase)?;
    let account = store.as_ref().and_then(sled_account_keys);
    drop(store);
    let existing = read_existing_blocking(crypto_store_dir, sqlite_passphrase);
    let state = match (&existing, &account) {
        (ExistingStore::None, _) => Relation::NoStore.as_str(),
        (ExistingStore::Unreadable { .. }, _) => Relation::Unreadable.as_str(),
        (_, Some(sled_account)) => existing.relation(sled_account).as_str(),
        (ExistingStore::Readable(found), None) if found.account.is_none() => {
            Relation::NoAccount.as_str()
        }
        (ExistingStore::Readable(_), None) => "unknown",
    };
    let sqlite = match existing {
        ExistingStore::None => {
            SqliteStoreReport::empty(location.sqlite_store().display().to_string(), state)
        }
        ExistingStore::Readable(found) => SqliteStoreReport {
            path: found.path.display().to_string(),
            state,
            schema_version: Some(found.schema_version),
            encrypted: Some(found.encrypted),
            room_keys: Some(found.room_keys),
            account: found.account,
            unreadable: None,
        },
        ExistingStore::Unreadable { path, reason } => SqliteStoreReport {
            unreadable: Some((reason.code(), reason.to_string())),
            ..SqliteStoreReport::empty(path.display().to_string(), state)
        },
    };
    Ok(Inspection {
        sled,
        account,
        sqlite,
    })
}

impl SqliteStoreReport {
    fn empty(path: String, state: &'static str) -> Self {
        SqliteStoreReport {
            path,
            state,
            schema_version: None,
            encrypted: None,
            room_keys: None,
            account: None,
            unreadable: None,
        }
    }
}
