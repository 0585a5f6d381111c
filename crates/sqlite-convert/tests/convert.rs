//! `convert` against the genuine fixture stores (written by matrix-sdk-crypto 0.6 / matrix-sdk-sled
//! 0.2), checked by what the upgraded bot runs: matrix-sdk-crypto 0.9.0's `OlmMachine` over
//! matrix-sdk-sqlite 0.9.0's `SqliteCryptoStore`, opened with the passphrase the bot passes.

use std::path::Path;
use std::sync::Arc;

use matrix_sdk_common::ruma::serde::Raw;
use matrix_sdk_common::ruma::{OwnedDeviceId, OwnedUserId, RoomId};
use matrix_sdk_crypto::store::CryptoStore;
use matrix_sdk_crypto::OlmMachine;
use matrix_sdk_sqlite::SqliteCryptoStore;
use serde_json::Value;
use sqlite_convert::{convert_async, ConvertError, ConvertOptions, ConvertReport};

mod common;

use common::olm::sync_to_device;
use common::{case, hash_tree, settings, Case};

async fn run(options: &ConvertOptions) -> Result<ConvertReport, ConvertError> {
    convert_async(options, &mut |_| {}).await
}

/// The device matrix-bot-sdk 0.8 starts as: `deviceId` in the crypto folder's bot-sdk.json.
fn bot_sdk_device(store: &Path) -> OwnedDeviceId {
    let json: Value =
        serde_json::from_slice(&std::fs::read(store.join("bot-sdk.json")).unwrap()).unwrap();
    json["deviceId"]
        .as_str()
        .expect("bot-sdk.json names the device")
        .into()
}

/// Opens the converted store as matrix-bot-sdk 0.8.0 does at start — `SqliteCryptoStore::open` with
/// the passphrase `""` it hard-codes, `OlmMachine` for the store's user and the device in
/// bot-sdk.json — and checks it is the same bot: same device, same identity keys, every room key
/// (flags included), every recorded event decrypts, and the recorded Olm to-device messages decrypt
/// through the carried Olm sessions and one-time keys.
async fn check_as_the_bot(c: &Case, report: &ConvertReport) {
    let e = &c.expected;
    let store = Arc::new(SqliteCryptoStore::open(&c.store, Some("")).await.unwrap());
    let user = store
        .load_account()
        .await
        .unwrap()
        .expect("the store holds an account")
        .user_id()
        .to_owned();
    assert_eq!(user.as_str(), e["user_id"].as_str().unwrap());
    let device = bot_sdk_device(&c.store);
    assert_eq!(device.as_str(), e["device_id"].as_str().unwrap());

    let keys = e["keys"].as_array().unwrap();
    let counts = store.inbound_group_session_counts(None).await.unwrap();
    assert_eq!(counts.total, keys.len(), "room keys in the SQLite store");
    assert_eq!(report.distinct_room_keys as usize, keys.len());
    for k in keys {
        let room = RoomId::parse(k["room_id"].as_str().unwrap()).unwrap();
        let session = store
            .get_inbound_group_session(&room, k["session_id"].as_str().unwrap())
            .await
            .unwrap()
            .expect("every key is in the store");
        assert_eq!(
            session.has_been_imported(),
            k["imported"].as_bool().unwrap(),
            "imported flag of {}",
            k["session_id"]
        );
        assert_eq!(
            session.first_known_index(),
            k["first_message_index"].as_u64().unwrap() as u32
        );
        assert_eq!(
            session.sender_key().to_base64(),
            k["sender_key"].as_str().unwrap()
        );
    }

    let machine = OlmMachine::with_store(&user, &device, store.clone(), None)
        .await
        .expect("the bot adopts the converted account");
    assert_eq!(machine.device_id(), device);
    let ids = machine.identity_keys();
    assert_eq!(
        ids.curve25519.to_base64(),
        e["identity_keys"]["curve25519"].as_str().unwrap()
    );
    assert_eq!(
        ids.ed25519.to_base64(),
        e["identity_keys"]["ed25519"].as_str().unwrap()
    );

    let decrypt_all = |events: Vec<Value>| {
        let machine = &machine;
        async move {
            let mut n = 0;
            for ev in events {
                let room = RoomId::parse(ev["room_id"].as_str().unwrap()).unwrap();
                let raw = Raw::from_json_string(ev["event"].to_string()).unwrap();
                let decrypted = machine
                    .decrypt_room_event(&raw, &room, &settings())
                    .await
                    .unwrap_or_else(|err| {
                        panic!("event {} does not decrypt: {err}", ev["event"]["event_id"])
                    });
                let clear: Value = decrypted.event.deserialize_as().unwrap();
                assert_eq!(clear["content"], ev["plaintext"]);
                n += 1;
            }
            n
        }
    };
    let events = e["events"].as_array().unwrap().clone();
    let n = events.len();
    assert_eq!(decrypt_all(events).await, n);

    if let Some(secrets) = e["backup_and_cross_signing"].as_object() {
        // A bot that had enabled key backup and cross-signing keeps both.
        let backup = machine.backup_machine().get_backup_keys().await.unwrap();
        assert_eq!(
            backup.backup_version.as_deref(),
            secrets["backup_version"].as_str()
        );
        assert_eq!(
            backup
                .decryption_key
                .expect("the backup key is carried")
                .to_base64(),
            secrets["recovery_key"].as_str().unwrap()
        );
        let status = machine.cross_signing_status().await;
        assert!(
            status.has_master && status.has_self_signing && status.has_user_signing,
            "the private cross-signing identity is carried: {status:?}"
        );
        assert!(report.has_backup_key && report.has_cross_signing_identity);
        assert!(
            machine.get_identity(&user, None).await.unwrap().is_some(),
            "the bot's own public identity is known"
        );
    }

    if let Some(olm) = e["olm"].as_object() {
        // What the Sled store held besides room keys came across too.
        assert_eq!(
            report.count("session").unwrap().converted,
            olm["olm_sessions"].as_u64().unwrap(),
            "Olm sessions"
        );
        assert_eq!(
            report.count("tracked_users").unwrap().converted as usize,
            olm["tracked_users"].as_array().unwrap().len(),
            "tracked users"
        );
        assert!(
            report.count("devices").unwrap().converted >= olm["devices"].as_u64().unwrap(),
            "devices"
        );
        for peer in olm["peer_devices"].as_array().unwrap().iter().take(1) {
            let user: OwnedUserId = peer["user_id"].as_str().unwrap().try_into().unwrap();
            let device: OwnedDeviceId = peer["device_id"].as_str().unwrap().into();
            let known = machine
                .get_device(&user, &device, None)
                .await
                .unwrap()
                .expect("the peer's device is known without a key query");
            assert_eq!(
                known.curve25519_key().unwrap().to_base64(),
                peer["curve25519"].as_str().unwrap()
            );
        }
        for message in olm["to_device"].as_array().unwrap() {
            let (decrypted, room_keys) = sync_to_device(&machine, &message["event"]).await;
            let kind = message["kind"].as_str().unwrap();
            let clear = decrypted
                .first()
                .unwrap_or_else(|| panic!("{kind} to-device message not decrypted"));
            assert_eq!(clear["type"], "m.room_key", "{kind}: {clear}");
            assert!(
                room_keys
                    .iter()
                    .any(|k| k == message["session_id"].as_str().unwrap()),
                "{kind}: the room key it carries is imported"
            );
            let events = message["events"].as_array().unwrap().clone();
            let n = events.len();
            assert!(n > 0);
            assert_eq!(
                decrypt_all(events).await,
                n,
                "{kind}: events in the new session decrypt"
            );
        }
    }
}

/// Every committed fixture, each with its own Sled passphrase and no SQLite option: the store is
/// written with "" (what the bot passes) whatever the Sled passphrase was, and opens as the bot.
/// The damaged ones convert with --skip-errors; the pre-0.6 libolm store is refused.
#[tokio::test]
async fn converted_stores_open_as_the_same_bot_with_every_key() {
    let mut names: Vec<String> = std::fs::read_dir(common::fixtures_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("expected.json").is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 9, "{names:?}");
    let mut converted = 0;
    for name in &names {
        let name = name.as_str();
        let c = case(name);
        let damaged = c.expected["damaged"].as_array().map_or(0, |d| d.len());
        let mut options = c.options();
        options.skip_errors = damaged > 0;
        if name == "legacy-libolm" {
            let err = run(&options).await.unwrap_err();
            assert_eq!(err.code(), "LEGACY_STORE", "{err}");
            assert!(!c.sqlite().exists());
            continue;
        }
        if ["plain", "empty-passphrase", "passphrase"].contains(&name) {
            assert!(
                c.expected["olm"].is_object(),
                "{name}: the fixture records an Olm exchange"
            );
        }
        if name == "passphrase" {
            assert!(
                c.expected["backup_and_cross_signing"].is_object(),
                "{name}: the fixture holds a backup key and a cross-signing identity"
            );
        }
        let before = hash_tree(&c.store);
        let report = run(&options)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            hash_tree(&c.store),
            before,
            "{name}: the Sled store is unchanged"
        );
        assert!(c.sqlite().is_file(), "{name}");
        assert_eq!(report.damaged.len(), damaged, "{name}");
        assert_eq!(report.device_id, c.expected["device_id"].as_str().unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(&c.store)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.') || n.ends_with("-wal") || n.ends_with("-shm"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{name}: one file, nothing beside it: {leftovers:?}"
        );
        check_as_the_bot(&c, &report).await;
        converted += 1;
    }
    assert_eq!(converted, names.len() - 1);
}

/// A non-empty SQLite passphrase (for bots that pass their own) gives a store that the upstream
/// bot's `""` cannot open: the failure matrix-bot-sdk 0.8 reports as "Failed to initialize the
/// store cipher".
#[tokio::test]
async fn a_chosen_sqlite_passphrase_locks_out_the_upstream_bot() {
    let c = case("passphrase");
    let mut o = c.options();
    o.sqlite_passphrase = Some("x".into());
    run(&o).await.unwrap();
    assert!(SqliteCryptoStore::open(&c.store, Some("")).await.is_err());
    let store = SqliteCryptoStore::open(&c.store, Some("x")).await.unwrap();
    assert!(store.load_account().await.unwrap().is_some());
}

/// bot-sdk 0.8 starts as the device in bot-sdk.json and, without one, as its token's device: either
/// being another device than the account's is refused before anything is written.
#[tokio::test]
async fn another_device_in_bot_sdk_json_or_the_token_is_refused_with_nothing_written() {
    let c = case("plain");
    std::fs::write(
        c.store.join("bot-sdk.json"),
        r#"{"deviceId":"OTHERDEVICE","rooms":{}}"#,
    )
    .unwrap();
    let err = run(&c.options()).await.unwrap_err();
    assert_eq!(err.code(), "WRONG_DEVICE", "{err}");
    assert!(
        err.to_string().contains("OTHERDEVICE") && err.to_string().contains("BOTDEVICE"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&c.store).unwrap().count(),
        2,
        "nothing written"
    );

    let c = case("plain");
    let user = c.expected["user_id"].as_str().unwrap().to_owned();
    for (token_user, token_device) in [
        (user.clone(), Some("OTHERDEVICE")),
        ("@someone-else:example.org".to_owned(), Some("BOTDEVICE")),
    ] {
        let mut o = c.options();
        o.token_owner = Some(sqlite_convert::TokenOwner {
            user_id: token_user,
            device_id: token_device.map(str::to_owned),
        });
        let err = run(&o).await.unwrap_err();
        assert_eq!(err.code(), "WRONG_DEVICE", "{err}");
        assert_eq!(
            std::fs::read_dir(&c.store).unwrap().count(),
            2,
            "nothing written"
        );
    }
    let mut o = c.options();
    o.token_owner = Some(sqlite_convert::TokenOwner {
        user_id: user,
        device_id: Some("BOTDEVICE".into()),
    });
    let report = run(&o).await.unwrap();
    check_as_the_bot(&c, &report).await;
}

#[tokio::test]
async fn dry_run_counts_and_writes_nothing() {
    let c = case("empty-passphrase");
    let mut o = c.options();
    o.dry_run = true;
    let report = run(&o).await.unwrap();
    assert_eq!(
        report.count("inbound_group_sessions").unwrap().converted as usize,
        c.expected["keys"].as_array().unwrap().len()
    );
    assert_eq!(report.count("account").unwrap().converted, 1);
    assert!(!c.sqlite().exists());
    assert_eq!(
        std::fs::read_dir(&c.store).unwrap().count(),
        2,
        "only matrix-sdk-crypto/ and bot-sdk.json"
    );
}

#[tokio::test]
async fn refuses_an_existing_account_unless_forced_and_then_keeps_it_aside() {
    let c = case("plain");
    run(&c.options()).await.unwrap();
    let first = std::fs::read(c.sqlite()).unwrap();
    let err = run(&c.options()).await.unwrap_err();
    assert_eq!(err.code(), "SQLITE_STORE_EXISTS", "{err}");
    assert_eq!(std::fs::read(c.sqlite()).unwrap(), first, "nothing written");
    let mut o = c.options();
    o.force = true;
    let report = run(&o).await.unwrap();
    let aside = report
        .moved_aside
        .clone()
        .expect("the old store is moved aside");
    assert!(aside
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("matrix-sdk-crypto.sqlite3.before-convert-"));
    assert_eq!(std::fs::read(&aside).unwrap(), first, "kept byte for byte");
    check_as_the_bot(&c, &report).await;
}

#[tokio::test]
async fn wrong_passphrase_and_locked_store_write_nothing() {
    let c = case("passphrase");
    let mut o = c.options();
    o.sled_passphrase = String::new();
    let err = run(&o).await.unwrap_err();
    assert_eq!(err.code(), "WRONG_PASSPHRASE", "{err}");
    assert!(!c.sqlite().exists());
    assert_eq!(std::fs::read_dir(&c.store).unwrap().count(), 2);

    let c = case("plain");
    let db = std::fs::File::open(c.store.join("matrix-sdk-crypto/db")).unwrap();
    // What Sled takes while the bot runs: an exclusive lock on db.
    use std::os::fd::AsRawFd;
    assert_eq!(
        unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let err = run(&c.options()).await.unwrap_err();
    assert_eq!(err.code(), "STORE_LOCKED", "{err}");
    assert!(!c.sqlite().exists());
}

#[tokio::test]
async fn damaged_entries_stop_a_strict_run_and_are_listed_with_skip_errors() {
    let c = case("damaged");
    let err = run(&c.options()).await.unwrap_err();
    assert_eq!(err.code(), "DAMAGED_ENTRIES", "{err}");
    assert!(!c.sqlite().exists(), "a strict run writes nothing");
    assert_eq!(
        std::fs::read_dir(&c.store).unwrap().count(),
        2,
        "no temporary store left"
    );

    let mut o = c.options();
    o.skip_errors = true;
    let report = run(&o).await.unwrap();
    let damaged = c.expected["damaged"].as_array().unwrap();
    assert_eq!(report.damaged.len(), damaged.len());
    assert!(report
        .damaged
        .iter()
        .all(|d| d.tree == "inbound_group_sessions"));
    check_as_the_bot(&c, &report).await;
}
