//! The bot's side of the State 1 end-to-end test (test/state1.test.ts): the genuine
//! matrix-sdk-crypto 0.9 `OlmMachine` over the SQLite store, opened as matrix-bot-sdk 0.8 opens
//! it (passphrase "", the device bot-sdk.json names; a store with no account gets a new one, as
//! on bot-sdk 0.8's first start). The test does the HTTP: this only turns the machine's requests
//! into JSON bodies and the server's answers back into responses, over JSON lines:
//!
//!     cargo run --release -p sqlite-convert --example bot_machine -- DIR USER
//!
//! stdin, one command a line; stdout, one answer a line (`{"error": …}` on failure):
//! - `{"op":"keys"}` → the account's public identity keys
//! - `{"op":"device_keys"}` → the account's signed device keys
//! - `{"op":"requests"}` → `[{id, kind: "keys_upload"|"keys_query", body}]` (nothing else is needed)
//! - `{"op":"sent","id","kind","response"}` → the server's answer handed to the machine
//! - `{"op":"own_room_key","room","text"}` → a room key of its own (an outbound session nobody is
//!   sent) and a message encrypted in it: `{session_id, event}`
//! - `{"op":"sync","to_device":[…]}` → the session IDs of the room keys the events carried
//! - `{"op":"decrypt","room","event"}` → `{plaintext}` (the decrypted event's content)

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

use matrix_sdk_common::ruma::api::client::keys::{get_keys, upload_keys};
use matrix_sdk_common::ruma::api::client::sync::sync_events::DeviceLists;
use matrix_sdk_common::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk_common::ruma::serde::Raw;
use matrix_sdk_common::ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, TransactionId};
use matrix_sdk_crypto::types::requests::AnyOutgoingRequest;
use matrix_sdk_crypto::{DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine, TrustRequirement};
use matrix_sdk_sqlite::SqliteCryptoStore;
use serde_json::{json, Value};

type Answer = Result<Value, String>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, user] = &args[..] else {
        eprintln!("usage: bot_machine DIR USER");
        std::process::exit(2);
    };
    let machine = match open(dir, user).await {
        Ok(m) => m,
        Err(e) => {
            println!("{}", json!({ "error": e }));
            std::process::exit(1);
        }
    };
    println!("{}", json!({ "ready": true }));
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(command) => run(&machine, &command).await,
            Err(e) => Err(e.to_string()),
        };
        println!("{}", answer.unwrap_or_else(|e| json!({ "error": e })));
    }
    // stdin closed: the test is done with this bot (exit without waiting on the store's pool).
    std::process::exit(0);
}

async fn open(dir: &str, user: &str) -> Result<OlmMachine, String> {
    let bot_sdk: Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(dir).join("bot-sdk.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let device: OwnedDeviceId = bot_sdk["deviceId"].as_str().ok_or("bot-sdk.json names no deviceId")?.into();
    let user: OwnedUserId = user.try_into().map_err(|e: matrix_sdk_common::ruma::IdParseError| e.to_string())?;
    let store = SqliteCryptoStore::open(dir, Some("")).await.map_err(|e| e.to_string())?;
    OlmMachine::with_store(&user, &device, Arc::new(store), None).await.map_err(|e| e.to_string())
}

fn field<T: serde::de::DeserializeOwned>(v: &Value, name: &str) -> Result<T, String> {
    serde_json::from_value(v.get(name).cloned().unwrap_or(Value::Null)).map_err(|e| format!("{name}: {e}"))
}

async fn run(m: &OlmMachine, c: &Value) -> Answer {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match c["op"].as_str().unwrap_or_default() {
        "keys" => {
            let k = m.identity_keys();
            Ok(json!({ "device_id": m.device_id(), "ed25519": k.ed25519.to_base64(), "curve25519": k.curve25519.to_base64() }))
        }
        // The account's signed device keys, to publish as the old bot had (a converted account
        // believes it already did, so its machine does not upload them by itself).
        "device_keys" => {
            let own = m.get_device(m.user_id(), m.device_id(), None).await.map_err(|x| e(&x))?.ok_or("no own device")?;
            serde_json::to_value(own.as_device_keys()).map_err(|x| e(&x))
        }
        "requests" => {
            let mut out = Vec::new();
            for r in m.outgoing_requests().await.map_err(|x| e(&x))? {
                match r.request() {
                    AnyOutgoingRequest::KeysUpload(u) => {
                        let mut body = json!({ "one_time_keys": u.one_time_keys, "fallback_keys": u.fallback_keys });
                        if let Some(d) = &u.device_keys {
                            body["device_keys"] = serde_json::to_value(d).map_err(|x| e(&x))?;
                        }
                        out.push(json!({ "id": r.request_id().to_string(), "kind": "keys_upload", "body": body }));
                    }
                    AnyOutgoingRequest::KeysQuery(q) => {
                        out.push(json!({ "id": r.request_id().to_string(), "kind": "keys_query", "body": { "device_keys": q.device_keys } }));
                    }
                    // The bot sends nothing else in this test (no cross-signing, no room messages).
                    _ => {}
                }
            }
            Ok(Value::Array(out))
        }
        "sent" => {
            let id: String = field(c, "id")?;
            let id = <&TransactionId>::from(id.as_str());
            let r = &c["response"];
            match c["kind"].as_str().unwrap_or_default() {
                "keys_upload" => {
                    let response = upload_keys::v3::Response::new(field(r, "one_time_key_counts")?);
                    m.mark_request_as_sent(id, &response).await.map_err(|x| e(&x))?;
                }
                "keys_query" => {
                    let mut response = get_keys::v3::Response::new();
                    response.device_keys = field(r, "device_keys")?;
                    response.master_keys = field::<Option<_>>(r, "master_keys")?.unwrap_or_default();
                    response.self_signing_keys = field::<Option<_>>(r, "self_signing_keys")?.unwrap_or_default();
                    response.user_signing_keys = field::<Option<_>>(r, "user_signing_keys")?.unwrap_or_default();
                    m.mark_request_as_sent(id, &response).await.map_err(|x| e(&x))?;
                }
                other => return Err(format!("unknown request kind {other}")),
            }
            Ok(json!({ "ok": true }))
        }
        "own_room_key" => {
            let room: OwnedRoomId = field(c, "room")?;
            m.share_room_key(&room, std::iter::empty(), EncryptionSettings::default()).await.map_err(|x| e(&x))?;
            let content = RoomMessageEventContent::text_plain(c["text"].as_str().unwrap_or_default());
            let plaintext = serde_json::to_value(&content).map_err(|x| e(&x))?;
            let encrypted = m.encrypt_room_event(&room, content).await.map_err(|x| e(&x))?;
            let encrypted = serde_json::to_value(encrypted).map_err(|x| e(&x))?;
            let event = json!({
                "type": "m.room.encrypted", "content": encrypted, "sender": m.user_id(),
                "event_id": "$own", "origin_server_ts": 1_700_300_000_000u64, "room_id": room,
            });
            Ok(json!({ "session_id": encrypted["session_id"], "event": event, "plaintext": plaintext }))
        }
        "sync" => {
            let events: Vec<Raw<_>> = field(c, "to_device")?;
            let (_, keys) = m
                .receive_sync_changes(EncryptionSyncChanges {
                    to_device_events: events,
                    changed_devices: &DeviceLists::default(),
                    one_time_keys_counts: &BTreeMap::new(),
                    unused_fallback_keys: None,
                    next_batch_token: None,
                })
                .await
                .map_err(|x| e(&x))?;
            Ok(json!({ "room_keys": keys.into_iter().map(|k| k.session_id).collect::<Vec<_>>() }))
        }
        "decrypt" => {
            let room: OwnedRoomId = field(c, "room")?;
            let event = Raw::from_json_string(c["event"].to_string()).map_err(|x| e(&x))?;
            let settings = DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted };
            let d = m.decrypt_room_event(&event, &room, &settings).await.map_err(|x| e(&x))?;
            let v: Value = d.event.deserialize_as().map_err(|x| e(&x))?;
            Ok(json!({ "plaintext": v["content"] }))
        }
        other => Err(format!("unknown op {other}")),
    }
}
