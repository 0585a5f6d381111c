//! `merge` (state 2: the bot was upgraded and runs on a new device) on the genuine 0.9 crates: the
//! bot's store is made by a matrix-sdk-crypto 0.9 `OlmMachine` over matrix-sdk-sqlite 0.9 for the
//! fixture's user and a NEW device, with room keys of its own (one the same session as a fixture key
//! at a worse index, one at the same index); after the merge it is opened as matrix-bot-sdk 0.8
//! opens it and must be the same device holding both sets of keys, each at its best.

mod common;

use std::sync::Arc;

use common::olm::{deliver, room_message, KeyServer};
use common::upgraded::{closed, fixture_key, upgraded_bot_store, NEW_DEVICE, ROOM};
use common::{case, hash_tree, settings, Case};
use matrix_sdk_common::ruma::serde::Raw;
use matrix_sdk_common::ruma::{OwnedUserId, RoomId};
use matrix_sdk_crypto::olm::InboundGroupSession;
use matrix_sdk_crypto::store::CryptoStore;
use matrix_sdk_crypto::OlmMachine;
use matrix_sdk_sqlite::SqliteCryptoStore;
use serde_json::Value;
use sqlite_convert::{merge_async, ConvertError, MergeOptions, MergeReport, MergeSource};

async fn run(options: &MergeOptions) -> Result<MergeReport, ConvertError> {
    merge_async(options, &mut |_| {}).await
}

fn options(c: &Case) -> MergeOptions {
    let mut o = MergeOptions::new(&c.store);
    if let Some(p) = c.expected["passphrase"].as_str() {
        o.sled_passphrase = p.to_owned();
    }
    o
}

async fn decrypts(machine: &OlmMachine, room: &str, event: &Value) -> Value {
    let room = RoomId::parse(room).unwrap();
    let raw = Raw::from_json_string(event.to_string()).unwrap();
    let decrypted = machine
        .decrypt_room_event(&raw, &room, &settings())
        .await
        .unwrap_or_else(|e| panic!("event {} does not decrypt: {e}", event["event_id"]));
    decrypted.event.deserialize_as::<Value>().unwrap()["content"].clone()
}

const PEER_ROOM: &str = "!peer:example.org";

/// A peer starts an Olm session with the upgraded bot and shares a room key over it, as happens
/// once the bot runs: the bot's store then holds an Olm session and one more key of its own.
async fn olm_with_a_peer(dir: &std::path::Path, user: &str) -> (KeyServer, OlmMachine) {
    let user: OwnedUserId = user.try_into().unwrap();
    let mut server = KeyServer::default();
    let peer_user: OwnedUserId = "@peer:example.org".try_into().unwrap();
    let peer = OlmMachine::new(&peer_user, "PEERDEVICE".into()).await;
    let store = Arc::new(SqliteCryptoStore::open(dir, Some("")).await.unwrap());
    let bot = OlmMachine::with_store(&user, NEW_DEVICE.into(), store, None)
        .await
        .unwrap();
    server.serve(&bot).await;
    server.serve(&peer).await;
    peer.update_tracked_users([bot.user_id()]).await.unwrap();
    server.serve(&peer).await;
    let (event, claimed) = server
        .share(&peer, &bot, &RoomId::parse(PEER_ROOM).unwrap())
        .await;
    assert!(
        claimed,
        "a new Olm session, on one of the bot's one-time keys"
    );
    assert_eq!(
        deliver(&bot, &event).await.len(),
        1,
        "the bot takes the room key"
    );
    drop(bot);
    closed(dir).await;
    (server, peer)
}

#[tokio::test]
async fn merge_adds_every_sled_key_to_the_new_device_and_keeps_the_better_copy() {
    for name in [
        "plain",
        "passphrase",
        "mixed-upgrade",
        "msgpack-cipher",
        "empty-passphrase",
    ] {
        let c = case(name);
        let e = &c.expected;
        let keys = e["keys"].as_array().unwrap();
        let at_zero: Vec<&Value> = keys
            .iter()
            .filter(|k| k["first_message_index"] == 0)
            .collect();
        let (worse, same) = (at_zero[0], at_zero[1]);
        let user = e["user_id"].as_str().unwrap();
        let (ed25519, own) =
            upgraded_bot_store(&c.store, user, NEW_DEVICE, Some(worse), Some(same)).await;
        let (mut server, peer) = olm_with_a_peer(&c.store, user).await;
        let sled_before = hash_tree(&c.store);
        let sqlite_before = std::fs::read(c.sqlite()).unwrap();

        let dry = {
            let mut o = options(&c);
            o.dry_run = true;
            run(&o).await.unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert_eq!(
            std::fs::read(c.sqlite()).unwrap(),
            sqlite_before,
            "{name}: a dry run writes nothing"
        );
        let report = run(&options(&c))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            hash_tree(&c.store),
            sled_before,
            "{name}: the Sled store is unchanged"
        );
        for r in [&dry, &report] {
            assert_eq!(r.read as usize, keys.len(), "{name}");
            assert_eq!(r.added as usize, keys.len() - 2, "{name}: added");
            assert_eq!(
                r.improved, 1,
                "{name}: the copy held from index 3 is replaced"
            );
            assert_eq!(
                r.already_present, 1,
                "{name}: the copy held as well is kept"
            );
            assert_eq!(r.room_keys_before, 4, "{name}");
            assert_eq!(r.room_keys_after as usize, keys.len() + 2, "{name}");
        }
        assert_eq!(report.device_id, NEW_DEVICE);
        assert_eq!(
            report.sled_account.as_ref().unwrap().device_id,
            e["device_id"].as_str().unwrap()
        );
        let kept = report.kept_as.clone().expect("the previous store is kept");
        assert!(kept
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("matrix-sdk-crypto.sqlite3.before-merge-"));
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            sqlite_before,
            "{name}: kept byte for byte"
        );
        let leftovers: Vec<_> = std::fs::read_dir(&c.store)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.') || n.ends_with("-wal") || n.ends_with("-shm"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");

        // As matrix-bot-sdk 0.8 opens it: passphrase "", the device of bot-sdk.json (the new one).
        let store = Arc::new(SqliteCryptoStore::open(&c.store, Some("")).await.unwrap());
        let user: OwnedUserId = user.try_into().unwrap();
        let machine = OlmMachine::with_store(&user, NEW_DEVICE.into(), store.clone(), None)
            .await
            .expect("the new device's account is still there");
        assert_eq!(
            machine.identity_keys().ed25519.to_base64(),
            ed25519,
            "{name}: same identity keys"
        );
        assert_eq!(
            store
                .inbound_group_session_counts(None)
                .await
                .unwrap()
                .total,
            keys.len() + 2
        );
        for k in keys {
            let room = RoomId::parse(k["room_id"].as_str().unwrap()).unwrap();
            let held = store
                .get_inbound_group_session(&room, k["session_id"].as_str().unwrap())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: key {} merged", k["session_id"]));
            assert_eq!(
                held.first_known_index(),
                k["first_message_index"].as_u64().unwrap() as u32,
                "{name}: the better copy of {}",
                k["session_id"]
            );
            assert!(
                held.has_been_imported(),
                "{name}: merged keys are marked imported"
            );
        }
        for ev in e["events"].as_array().unwrap() {
            assert_eq!(
                decrypts(&machine, ev["room_id"].as_str().unwrap(), &ev["event"]).await,
                ev["plaintext"],
                "{name}"
            );
        }
        assert!(store
            .get_inbound_group_session(&RoomId::parse(ROOM).unwrap(), &own.session_id)
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            decrypts(&machine, ROOM, &own.event).await,
            own.plaintext,
            "{name}: its own key"
        );
        // Its Olm session with the peer came through: a new room key arrives over it (no one-time
        // key claimed) and decrypts, and so does a message in it.
        let room = RoomId::parse(PEER_ROOM).unwrap();
        peer.discard_room_key(&room).await.unwrap();
        let (event, claimed) = server.share(&peer, &machine, &room).await;
        assert!(!claimed, "{name}: the peer reuses its Olm session");
        assert_eq!(
            deliver(&machine, &event).await.len(),
            1,
            "{name}: the Olm session decrypts"
        );
        let (message, plaintext) =
            room_message(&peer, &room, "after the merge", "$after-merge").await;
        assert_eq!(
            decrypts(&machine, PEER_ROOM, &message).await,
            plaintext,
            "{name}"
        );
        drop(machine);
        drop(store);
        closed(&c.store).await;

        // Merging again adds nothing; a key file holding every key from a worse index replaces none.
        let again = run(&options(&c)).await.unwrap();
        assert_eq!(
            again.room_keys_before as usize,
            keys.len() + 3,
            "{name}: with the peer's new key"
        );
        assert_eq!(
            (again.added, again.improved, again.already_present as usize),
            (0, 0, keys.len())
        );
        if name == "plain" {
            let mut worse_keys = Vec::new();
            for k in keys {
                let s = InboundGroupSession::from_export(&fixture_key(k)).unwrap();
                worse_keys.push(serde_json::to_value(s.export_at_index(5).await).unwrap());
            }
            let file = c.store.join("../worse.json");
            std::fs::write(&file, serde_json::to_vec(&worse_keys).unwrap()).unwrap();
            let mut o = options(&c);
            o.source = MergeSource::KeyFile {
                path: file,
                export_passphrase: None,
            };
            let r = run(&o).await.unwrap();
            assert_eq!(
                (r.added, r.improved, r.already_present as usize),
                (0, 0, keys.len())
            );
        }
    }
}

#[tokio::test]
async fn refusals_write_nothing() {
    let c = case("plain");
    let o = options(&c);
    let err = run(&o).await.unwrap_err();
    assert_eq!(err.code(), "SQLITE_STORE_MISSING", "{err}");

    // Another user's store.
    upgraded_bot_store(&c.store, "@someone:example.org", NEW_DEVICE, None, None).await;
    let listing = |c: &Case| {
        let mut v: Vec<_> = std::fs::read_dir(&c.store)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        v.sort();
        v
    };
    let before = (listing(&c), std::fs::read(c.sqlite()).unwrap());
    let err = run(&o).await.unwrap_err();
    assert_eq!(err.code(), "SQLITE_STORE_UNUSABLE", "{err}");
    assert!(
        err.to_string().contains("belongs to @someone:example.org"),
        "{err}"
    );
    assert_eq!((listing(&c), std::fs::read(c.sqlite()).unwrap()), before);

    // The right user, the wrong passphrase.
    let c = case("plain");
    upgraded_bot_store(&c.store, "@bot:example.org", NEW_DEVICE, None, None).await;
    let before = (listing(&c), std::fs::read(c.sqlite()).unwrap());
    let mut o = options(&c);
    o.sqlite_passphrase = Some("not it".into());
    let err = run(&o).await.unwrap_err();
    assert_eq!(err.code(), "SQLITE_STORE_UNUSABLE", "{err}");
    assert!(err.to_string().contains("SQLITE_PASSPHRASE"), "{err}");
    assert_eq!((listing(&c), std::fs::read(c.sqlite()).unwrap()), before);

    // In use: the bot's connection holds frames in the write-ahead log.
    let conn = rusqlite::Connection::open(c.sqlite()).unwrap();
    conn.execute_batch(
        "PRAGMA wal_autocheckpoint = 0; INSERT INTO kv VALUES ('merge-test', x'00');",
    )
    .unwrap();
    let err = run(&options(&c)).await.unwrap_err();
    assert_eq!(err.code(), "SQLITE_IN_USE", "{err}");
    conn.execute_batch("DELETE FROM kv WHERE key = 'merge-test';")
        .unwrap();
    drop(conn);

    // A schema newer than 0.9 knows.
    let conn = rusqlite::Connection::open(c.sqlite()).unwrap();
    conn.execute_batch("UPDATE kv SET value = x'0a' WHERE key = 'version';")
        .unwrap();
    drop(conn);
    let before = (listing(&c), std::fs::read(c.sqlite()).unwrap());
    let err = run(&options(&c)).await.unwrap_err();
    assert_eq!(err.code(), "SQLITE_STORE_UNUSABLE", "{err}");
    assert!(err.to_string().contains("schema is version 10"), "{err}");
    assert_eq!((listing(&c), std::fs::read(c.sqlite()).unwrap()), before);

    // State 1: the Sled device ID with other identity keys.
    let c = case("plain");
    upgraded_bot_store(
        &c.store,
        "@bot:example.org",
        c.expected["device_id"].as_str().unwrap(),
        None,
        None,
    )
    .await;
    let before = std::fs::read(c.sqlite()).unwrap();
    let err = run(&options(&c)).await.unwrap_err();
    assert_eq!(err.code(), "SQLITE_STORE_UNUSABLE", "{err}");
    let line = err.to_string();
    assert!(
        line.contains(c.expected["identity_keys"]["ed25519"].as_str().unwrap()),
        "{line}"
    );
    assert!(
        line.contains(c.expected["device_id"].as_str().unwrap()),
        "{line}"
    );
    assert_eq!(std::fs::read(c.sqlite()).unwrap(), before);
}

#[tokio::test]
async fn damaged_sled_entries_stop_a_strict_merge_and_are_listed_with_skip_errors() {
    let c = case("damaged");
    upgraded_bot_store(
        &c.store,
        c.expected["user_id"].as_str().unwrap(),
        NEW_DEVICE,
        None,
        None,
    )
    .await;
    let before = std::fs::read(c.sqlite()).unwrap();
    let err = run(&options(&c)).await.unwrap_err();
    assert_eq!(err.code(), "DAMAGED_ENTRIES", "{err}");
    assert_eq!(std::fs::read(c.sqlite()).unwrap(), before);
    let mut o = options(&c);
    o.skip_errors = true;
    let r = run(&o).await.unwrap();
    assert_eq!(
        r.damaged.len(),
        c.expected["damaged"].as_array().unwrap().len()
    );
    assert_eq!(
        r.added as usize,
        c.expected["keys"].as_array().unwrap().len()
    );
}

/// State 1: the upgraded bot made a NEW account under the OLD device ID (bot-sdk.json kept it) and
/// received a room key on it. `convert --force` brings the old account back, merges the replaced
/// store's keys into it and has it publish its old keys again on the bot's next start.
#[tokio::test]
async fn convert_force_repairs_a_new_account_under_the_same_device() {
    let c = case("plain");
    let e = &c.expected;
    let user = e["user_id"].as_str().unwrap();
    let device = e["device_id"].as_str().unwrap();
    let old_ed25519 = e["identity_keys"]["ed25519"].as_str().unwrap();
    let (new_ed25519, own) = upgraded_bot_store(&c.store, user, device, None, None).await;
    assert_ne!(new_ed25519, old_ed25519);

    let mut o = sqlite_convert::ConvertOptions::new(&c.store);
    o.force = true;
    let report = sqlite_convert::convert_async(&o, &mut |_| {})
        .await
        .unwrap();
    let repair = report
        .same_device_repair
        .as_ref()
        .expect("the replaced store was a new account under the same device");
    assert_eq!((repair.read, repair.added), (1, 1), "its own room key");
    assert!(repair.republishes_device_keys);
    assert_eq!(repair.ed25519, old_ed25519, "merged into the old account");
    assert!(
        report.moved_aside.as_ref().unwrap().exists(),
        "the new account's store is kept"
    );

    let store = Arc::new(SqliteCryptoStore::open(&c.store, Some("")).await.unwrap());
    let user: OwnedUserId = user.try_into().unwrap();
    let machine = OlmMachine::with_store(&user, device.into(), store.clone(), None)
        .await
        .unwrap();
    assert_eq!(machine.identity_keys().ed25519.to_base64(), old_ed25519);
    let keys = e["keys"].as_array().unwrap();
    assert_eq!(
        store
            .inbound_group_session_counts(None)
            .await
            .unwrap()
            .total,
        keys.len() + 1
    );
    for ev in e["events"].as_array().unwrap() {
        assert_eq!(
            decrypts(&machine, ev["room_id"].as_str().unwrap(), &ev["event"]).await,
            ev["plaintext"]
        );
    }
    assert_eq!(decrypts(&machine, ROOM, &own.event).await, own.plaintext);
    // On start the bot uploads its device keys: the old ones, which the server then publishes again.
    let upload = machine
        .outgoing_requests()
        .await
        .unwrap()
        .into_iter()
        .find_map(|r| match r.request() {
            matrix_sdk_crypto::types::requests::AnyOutgoingRequest::KeysUpload(u) => {
                u.device_keys.clone()
            }
            _ => None,
        })
        .expect("the restored account uploads its device keys");
    let keys: Value = upload.deserialize_as().unwrap();
    assert_eq!(keys["keys"][format!("ed25519:{device}")], old_ed25519);
}
