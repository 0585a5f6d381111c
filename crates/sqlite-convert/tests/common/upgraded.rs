//! The upgraded bot's store as matrix-bot-sdk 0.8 leaves it: made by a matrix-sdk-crypto 0.9
//! `OlmMachine` over a fresh matrix-sdk-sqlite 0.9 store. Shared by tests/merge.rs and the
//! `upgraded-bot-store` example (which the CLI tests run).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use matrix_sdk_common::ruma::OwnedUserId;
use matrix_sdk_crypto::olm::{ExportedRoomKey, InboundGroupSession};
use matrix_sdk_crypto::vodozemac::megolm::{GroupSession, SessionConfig};
use matrix_sdk_crypto::vodozemac::{Curve25519SecretKey, Ed25519SecretKey};
use matrix_sdk_crypto::OlmMachine;
use matrix_sdk_sqlite::SqliteCryptoStore;
use serde_json::{json, Value};

pub const NEW_DEVICE: &str = "NEWDEVICE";
pub const ROOM: &str = "!own:example.org";

pub fn fixture_key(k: &Value) -> ExportedRoomKey {
    serde_json::from_value(k.clone()).expect("0.9 reads the fixture's exported keys")
}

/// What the upgraded bot holds of its own: a room key it received (with an event in it), and its
/// identity keys.
pub struct OwnRoomKey {
    pub session_id: String,
    pub event: Value,
    pub plaintext: Value,
}

/// The upgraded bot's store: a 0.9 `OlmMachine` for `user`/`device` over a fresh SQLite store, with
/// one room key of its own, the fixture's `worse` key held from message index 3 and its `same` key
/// held as the fixture holds it.
pub async fn upgraded_bot_store(
    dir: &Path,
    user: &str,
    device: &str,
    worse: Option<&Value>,
    same: Option<&Value>,
) -> (String, OwnRoomKey) {
    let user: OwnedUserId = user.try_into().unwrap();
    let store = Arc::new(SqliteCryptoStore::open(dir, Some("")).await.unwrap());
    let machine = OlmMachine::with_store(&user, device.into(), store, None)
        .await
        .unwrap();
    let ed25519 = machine.identity_keys().ed25519.to_base64();

    // A room key from a peer, as it would arrive, and one event encrypted with it.
    let sender = Curve25519SecretKey::new();
    let signer = Ed25519SecretKey::new();
    let mut outbound = GroupSession::new(SessionConfig::version_1());
    let session_key = matrix_sdk_crypto::vodozemac::megolm::InboundGroupSession::new(
        &outbound.session_key(),
        SessionConfig::version_1(),
    )
    .export_at(0)
    .unwrap();
    let own: ExportedRoomKey = serde_json::from_value(json!({
        "algorithm": "m.megolm.v1.aes-sha2",
        "room_id": ROOM,
        "sender_key": matrix_sdk_crypto::vodozemac::Curve25519PublicKey::from(&sender).to_base64(),
        "session_id": outbound.session_id(),
        "session_key": session_key.to_base64(),
        "sender_claimed_keys": {"ed25519": signer.public_key().to_base64()},
        "forwarding_curve25519_key_chain": [],
    }))
    .unwrap();
    let plaintext = json!({"body": "said after the upgrade", "msgtype": "m.text"});
    let message = outbound.encrypt(
        json!({"type": "m.room.message", "room_id": ROOM, "content": plaintext}).to_string(),
    );
    let event = json!({
        "type": "m.room.encrypted",
        "event_id": "$after-upgrade",
        "room_id": ROOM,
        "sender": "@peer:example.org",
        "origin_server_ts": 1_700_000_000_000u64,
        "content": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "ciphertext": message.to_base64(),
            "sender_key": own.sender_key.to_base64(),
            "device_id": "PEERDEVICE",
            "session_id": outbound.session_id(),
        },
    });

    let mut keys = vec![own];
    if let Some(k) = worse {
        let s = InboundGroupSession::from_export(&fixture_key(k)).unwrap();
        keys.push(s.export_at_index(3).await);
    }
    if let Some(k) = same {
        keys.push(fixture_key(k));
    }
    let n = keys.len();
    let imported = machine
        .store()
        .import_exported_room_keys(keys, |_, _| {})
        .await
        .unwrap();
    assert_eq!(imported.imported_count, n);
    drop(machine);
    closed(dir).await;
    (
        ed25519,
        OwnRoomKey {
            session_id: outbound.session_id(),
            event,
            plaintext,
        },
    )
}

/// Waits until the store's connections, which close on their own threads after it is dropped, have
/// folded the write-ahead log into the file (what a bot that stops cleanly leaves).
pub async fn closed(dir: &Path) {
    let wal = dir.join("matrix-sdk-crypto.sqlite3-wal");
    for _ in 0..200 {
        if std::fs::metadata(&wal)
            .map(|m| m.len() == 0)
            .unwrap_or(true)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the store's write-ahead log stayed: a connection is still open");
}
