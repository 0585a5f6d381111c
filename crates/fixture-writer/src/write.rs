//! Building blocks: accounts, session pairs, recorded events, saving through the genuine store.

use anyhow::Result;
use matrix_sdk_crypto::olm::{InboundGroupSession, OutboundGroupSession, ReadOnlyAccount};
use matrix_sdk_crypto::store::{Changes, CryptoStore};
use matrix_sdk_crypto::EncryptionSettings;
use matrix_sdk_sled::SledCryptoStore;
use ruma::{OwnedRoomId, RoomId};
use serde_json::{json, Value};
use std::path::Path;

pub const BOT_USER: &str = "@bot:example.org";
pub const BOT_DEVICE: &str = "BOTDEVICE";

pub fn bot_account() -> ReadOnlyAccount {
    ReadOnlyAccount::new(BOT_USER.try_into().unwrap(), BOT_DEVICE.into())
}

pub fn peers() -> Vec<ReadOnlyAccount> {
    [("@alice:example.org", "ALICEPHONE"), ("@bob:example.org", "BOBLAPTOP"), ("@carol:example.net", "CAROLWEB")]
        .iter()
        .map(|(u, d)| ReadOnlyAccount::new((*u).try_into().unwrap(), (*d).into()))
        .collect()
}

pub fn room_ids(n: usize) -> Vec<OwnedRoomId> {
    (0..n).map(|i| RoomId::parse(format!("!room{i}abcdefgh:example.org")).unwrap()).collect()
}

/// One inbound session as the bot would hold it, with its genuine export and events to decrypt.
pub struct Made {
    pub inbound: InboundGroupSession,
    pub events: Vec<Value>,
}

/// How a session reached the bot.
#[derive(Clone, Copy)]
pub enum Origin {
    /// Sent directly by its creator (`m.room_key`): index 0, not imported.
    Direct,
    /// Imported from an export taken after `skip` messages: first known index `skip`, imported.
    ImportedAt(u32),
}

pub async fn make_session(peer: &ReadOnlyAccount, room: &RoomId, origin: Origin, n_events: usize, serial: usize) -> Result<Made> {
    let (outbound, inbound) = peer.create_group_session_pair(room, EncryptionSettings::default()).await?;
    let mut events = Vec::new();
    let inbound = match origin {
        Origin::Direct => inbound,
        Origin::ImportedAt(skip) => {
            for k in 0..skip {
                // messages sent before the bot got the key: it cannot decrypt these
                let _ = encrypt_event(&outbound, peer, room, serial, 1000 + k as usize).await;
            }
            let export = inbound.export_at_index(skip).await;
            InboundGroupSession::from_export(&export)?
        }
    };
    for k in 0..n_events {
        events.push(encrypt_event(&outbound, peer, room, serial, k).await);
    }
    Ok(Made { inbound, events })
}

async fn encrypt_event(outbound: &OutboundGroupSession, peer: &ReadOnlyAccount, room: &RoomId, serial: usize, k: usize) -> Value {
    let plaintext = json!({ "msgtype": "m.text", "body": format!("message {k} in session {serial} from {}", peer.user_id()) });
    let content = outbound.encrypt(plaintext.clone(), "m.room.message").await;
    json!({
        "room_id": room,
        "session_id": outbound.session_id(),
        "event_type": "m.room.message",
        "plaintext": plaintext,
        "event": {
            "type": "m.room.encrypted",
            "content": content,
            "sender": peer.user_id(),
            "event_id": format!("$s{serial}m{k}:example.org"),
            "origin_server_ts": 1_700_000_000_000u64 + (serial * 100 + k) as u64,
            "room_id": room,
        }
    })
}

pub async fn expected_key(inbound: &InboundGroupSession) -> Value {
    let mut v = serde_json::to_value(inbound.export().await).unwrap();
    v["first_message_index"] = json!(inbound.first_known_index());
    let pickle = inbound.pickle().await;
    v["imported"] = json!(pickle.imported);
    v
}

pub fn open_store(dir: &Path, passphrase: Option<&str>) -> Result<SledCryptoStore> {
    Ok(SledCryptoStore::open_with_passphrase(dir, passphrase)?)
}

/// Saves through the genuine store, in chunks (one Sled transaction per chunk).
pub async fn save(store: &SledCryptoStore, account: Option<ReadOnlyAccount>, sessions: Vec<InboundGroupSession>) -> Result<()> {
    let mut account = account;
    let mut sessions = sessions.into_iter().peekable();
    loop {
        let chunk: Vec<_> = sessions.by_ref().take(5000).collect();
        if chunk.is_empty() && account.is_none() {
            break;
        }
        store.save_changes(Changes { account: account.take(), inbound_group_sessions: chunk, ..Default::default() }).await?;
        if sessions.peek().is_none() {
            break;
        }
    }
    Ok(())
}

pub fn write_bot_sdk_json(store_dir: &Path) -> Result<()> {
    std::fs::write(store_dir.join("bot-sdk.json"), format!("{{\"deviceId\":\"{BOT_DEVICE}\",\"rooms\":{{}}}}"))?;
    Ok(())
}
