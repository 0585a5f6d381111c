//! `existing`: an existing matrix-sdk-crypto.sqlite3 read by the genuine 0.9 code, never written,
//! and classified against the Sled store's account.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use matrix_sdk_common::ruma::{OwnedDeviceId, OwnedUserId};
use matrix_sdk_crypto::olm::Account;
use matrix_sdk_crypto::store::{CryptoStore, PendingChanges};
use matrix_sdk_sqlite::SqliteCryptoStore;
use sled_store::{OpenOptions, SledStore, StoreLocation};
use sqlite_convert::existing::{
    read_existing, sled_account_keys, AccountKeys, ExistingStore, ReadableStore, Relation,
    Unreadable,
};
use sqlite_convert::{convert_async, ConvertOptions};

mod common;

use common::copy_fixture as fixture;

/// Every file under `dir`: the SQLite store, its -wal/-shm if any, the Sled store, bot-sdk.json.
fn hash_tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    common::hash_files(&[dir.to_owned()])
}

fn sled_keys(store: &Path, passphrase: &str) -> AccountKeys {
    let sled = SledStore::open(
        &StoreLocation::new(store),
        OpenOptions {
            passphrase: passphrase.to_owned(),
        },
    )
    .unwrap();
    sled_account_keys(&sled).expect("the fixture has an account")
}

fn readable(existing: &ExistingStore) -> &ReadableStore {
    match existing {
        ExistingStore::Readable(store) => store,
        other => panic!("expected a readable store, got {other:?}"),
    }
}

/// A store the upgraded bot would have made: its own new account, saved by the genuine 0.9 code.
async fn new_bot_store(dir: &Path, user: &str, device: &str) {
    let store = SqliteCryptoStore::open(dir, Some("")).await.unwrap();
    store
        .save_pending_changes(PendingChanges {
            account: Some(new_account(user, device)),
        })
        .await
        .unwrap();
}

fn new_account(user: &str, device: &str) -> Account {
    let user = OwnedUserId::try_from(user).unwrap();
    let device = OwnedDeviceId::from(device);
    Account::with_device_id(&user, &device)
}

#[tokio::test]
async fn a_converted_store_reads_as_converted_and_stays_byte_identical() {
    let (_tmp, store, expected) = fixture("passphrase");
    let passphrase = expected["passphrase"].as_str().unwrap().to_owned();
    let mut options = ConvertOptions::new(&store);
    options.sled_passphrase = passphrase.clone();
    let report = convert_async(&options, &mut |_| {}).await.unwrap();
    let sled = sled_keys(&store, &passphrase);

    let before = hash_tree(&store);
    let existing = read_existing(&store, Some("")).await;
    assert_eq!(
        hash_tree(&store),
        before,
        "no byte changed and no file (-wal, -shm) appeared"
    );

    let found = readable(&existing);
    assert_eq!(found.schema_version, 9);
    assert!(found.encrypted);
    assert_eq!(found.room_keys, report.distinct_room_keys);
    assert_eq!(found.account.as_ref(), Some(&sled));
    assert_eq!(sled.device_id, expected["device_id"].as_str().unwrap());
    assert_eq!(existing.relation(&sled), Relation::Converted);
    assert_eq!(existing.presence(), "with-account");

    let wrong = read_existing(&store, Some("not the passphrase")).await;
    assert!(
        matches!(
            wrong,
            ExistingStore::Unreadable {
                reason: Unreadable::WrongPassphrase,
                ..
            }
        ),
        "{wrong:?}"
    );
    let none = read_existing(&store, None).await;
    assert!(
        matches!(
            none,
            ExistingStore::Unreadable {
                reason: Unreadable::PassphraseNeeded,
                ..
            }
        ),
        "{none:?}"
    );
    assert_eq!(hash_tree(&store), before);
}

#[tokio::test]
async fn the_upgraded_bots_own_account_is_told_apart_by_device_and_keys() {
    let (_tmp, store, _) = fixture("plain");
    let sled = sled_keys(&store, "");
    assert_eq!(read_existing(&store, Some("")).await, ExistingStore::None);
    assert_eq!(ExistingStore::None.relation(&sled), Relation::NoStore);

    // Same device ID, new identity keys: what matrix-bot-sdk 0.8 does when it finds no SQLite store.
    new_bot_store(&store, &sled.user_id, &sled.device_id).await;
    let existing = read_existing(&store, Some("")).await;
    let found = readable(&existing);
    assert_eq!(found.account.as_ref().unwrap().device_id, sled.device_id);
    assert_ne!(found.account.as_ref().unwrap().ed25519, sled.ed25519);
    assert_eq!(found.room_keys, 0);
    assert_eq!(existing.relation(&sled), Relation::SameDeviceOtherKeys);

    let (_tmp2, other, _) = fixture("plain");
    new_bot_store(&other, &sled.user_id, "NEWDEVICE").await;
    assert_eq!(
        read_existing(&other, Some("")).await.relation(&sled),
        Relation::OtherDevice
    );

    let (_tmp3, stranger, _) = fixture("plain");
    new_bot_store(&stranger, "@someone-else:example.org", &sled.device_id).await;
    assert_eq!(
        read_existing(&stranger, Some("")).await.relation(&sled),
        Relation::OtherUser
    );
}

#[tokio::test]
async fn a_store_the_bot_has_open_is_read_through_its_log() {
    let (_tmp, store, _) = fixture("plain");
    let sled = sled_keys(&store, "");
    // The bot runs: its store stays open, the account only in the write-ahead log so far.
    let open = SqliteCryptoStore::open(&store, Some("")).await.unwrap();
    let account = new_account(&sled.user_id, &sled.device_id);
    open.save_pending_changes(PendingChanges {
        account: Some(account),
    })
    .await
    .unwrap();
    assert!(store.join("matrix-sdk-crypto.sqlite3-wal").exists());

    let main_file = std::fs::read(store.join("matrix-sdk-crypto.sqlite3")).unwrap();
    let wal = std::fs::read(store.join("matrix-sdk-crypto.sqlite3-wal")).unwrap();
    let existing = read_existing(&store, Some("")).await;
    assert_eq!(existing.relation(&sled), Relation::SameDeviceOtherKeys);
    assert_eq!(
        std::fs::read(store.join("matrix-sdk-crypto.sqlite3")).unwrap(),
        main_file
    );
    assert_eq!(
        std::fs::read(store.join("matrix-sdk-crypto.sqlite3-wal")).unwrap(),
        wal
    );
    drop(open);
}

#[tokio::test]
async fn newer_schemas_and_foreign_files_are_unreadable_and_say_why() {
    let (_tmp, store, _) = fixture("plain");
    new_bot_store(&store, "@bot:example.org", "DEVICE").await;
    let db = store.join("matrix-sdk-crypto.sqlite3");
    // Settle the log into the main file, then mark the schema as one from a later matrix-sdk-sqlite.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE kv SET value = x'0A' WHERE key = 'version'", [])
        .unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    match read_existing(&store, Some("")).await {
        ExistingStore::Unreadable {
            reason: reason @ Unreadable::NewerSchema { version: 10 },
            ..
        } => {
            assert!(reason.to_string().contains("newer than the 9"), "{reason}")
        }
        other => panic!("expected a newer schema, got {other:?}"),
    }

    std::fs::remove_file(&db).unwrap();
    std::fs::write(
        &db,
        b"not a database at all, just some bytes long enough to be looked at",
    )
    .unwrap();
    let before = hash_tree(&store);
    let existing = read_existing(&store, Some("")).await;
    assert!(
        matches!(
            existing,
            ExistingStore::Unreadable {
                reason: Unreadable::NotACryptoStore(_),
                ..
            }
        ),
        "{existing:?}"
    );
    assert_eq!(existing.presence(), "unreadable");
    assert_eq!(hash_tree(&store), before);
}
