//! Olm between a peer and the upgraded bot, on matrix-sdk-crypto 0.9 machines: the keys the
//! homeserver would hold (uploaded device and one-time keys) kept in memory, requests answered as
//! the key endpoints answer them. Only the crypto under test is genuine; no HTTP is involved.

use std::collections::BTreeMap;

use matrix_sdk_common::ruma::api::client::keys::{claim_keys, get_keys, upload_keys};
use matrix_sdk_common::ruma::api::client::sync::sync_events::DeviceLists;
use matrix_sdk_common::ruma::api::client::to_device::send_event_to_device;
use matrix_sdk_common::ruma::encryption::{DeviceKeys, OneTimeKey};
use matrix_sdk_common::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk_common::ruma::serde::Raw;
use matrix_sdk_common::ruma::to_device::DeviceIdOrAllDevices;
use matrix_sdk_common::ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, RoomId, UInt,
};
use matrix_sdk_crypto::types::requests::AnyOutgoingRequest;
use matrix_sdk_crypto::{EncryptionSettings, EncryptionSyncChanges, OlmMachine};
use serde_json::{json, Value};

#[derive(Default)]
pub struct KeyServer {
    device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>,
    one_time_keys:
        BTreeMap<(OwnedUserId, OwnedDeviceId), BTreeMap<OwnedOneTimeKeyId, Raw<OneTimeKey>>>,
}

impl KeyServer {
    fn counts(&self, m: &OlmMachine) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
        let n = self
            .one_time_keys
            .get(&(m.user_id().to_owned(), m.device_id().to_owned()))
            .map_or(0, |k| k.len());
        BTreeMap::from([(
            OneTimeKeyAlgorithm::SignedCurve25519,
            UInt::new(n as u64).unwrap(),
        )])
    }

    /// Answers `m`'s key uploads and key queries until it has none left.
    pub async fn serve(&mut self, m: &OlmMachine) {
        for _ in 0..10 {
            let requests = m.outgoing_requests().await.unwrap();
            if requests.is_empty() {
                return;
            }
            for r in requests {
                match r.request() {
                    AnyOutgoingRequest::KeysUpload(upload) => {
                        if let Some(keys) = &upload.device_keys {
                            self.device_keys
                                .entry(m.user_id().to_owned())
                                .or_default()
                                .insert(m.device_id().to_owned(), keys.clone());
                        }
                        self.one_time_keys
                            .entry((m.user_id().to_owned(), m.device_id().to_owned()))
                            .or_default()
                            .extend(
                                upload
                                    .one_time_keys
                                    .iter()
                                    .map(|(i, k)| (i.clone(), k.clone())),
                            );
                        let response = upload_keys::v3::Response::new(self.counts(m));
                        m.mark_request_as_sent(r.request_id(), &response)
                            .await
                            .unwrap();
                    }
                    AnyOutgoingRequest::KeysQuery(query) => {
                        let mut response = get_keys::v3::Response::new();
                        for user in query.device_keys.keys() {
                            response.device_keys.insert(
                                user.clone(),
                                self.device_keys.get(user).cloned().unwrap_or_default(),
                            );
                        }
                        m.mark_request_as_sent(r.request_id(), &response)
                            .await
                            .unwrap();
                    }
                    // Nothing else matters here (no cross-signing, no verification).
                    _ => {}
                }
            }
        }
    }

    /// `from` shares its room key for `room` with `to` (claiming a one-time key only if it has no
    /// Olm session yet); returns the to-device event `to` receives and whether a key was claimed.
    pub async fn share(
        &mut self,
        from: &OlmMachine,
        to: &OlmMachine,
        room: &RoomId,
    ) -> (Value, bool) {
        let mut claimed = false;
        if let Some((txn, request)) = from
            .get_missing_sessions(std::iter::once(to.user_id()))
            .await
            .unwrap()
        {
            let mut out: BTreeMap<OwnedUserId, claim_keys::v3::OneTimeKeys> = BTreeMap::new();
            for (user, devices) in &request.one_time_keys {
                for device in devices.keys() {
                    if let Some((id, key)) = self
                        .one_time_keys
                        .get_mut(&(user.clone(), device.clone()))
                        .and_then(|pool| pool.pop_first())
                    {
                        out.entry(user.clone())
                            .or_default()
                            .insert(device.clone(), BTreeMap::from([(id, key)]));
                    }
                }
            }
            claimed = !out.is_empty();
            from.mark_request_as_sent(&txn, &claim_keys::v3::Response::new(out))
                .await
                .unwrap();
        }
        let requests = from
            .share_room_key(
                room,
                std::iter::once(to.user_id()),
                EncryptionSettings::default(),
            )
            .await
            .unwrap();
        assert_eq!(requests.len(), 1, "one to-device request");
        let content = requests[0]
            .messages
            .get(to.user_id())
            .and_then(|m| m.get(&DeviceIdOrAllDevices::DeviceId(to.device_id().to_owned())))
            .expect("a message for the bot's device");
        let event = json!({
            "sender": from.user_id(),
            "type": "m.room.encrypted",
            "content": serde_json::to_value(content).unwrap(),
        });
        for r in &requests {
            from.mark_request_as_sent(&r.txn_id, &send_event_to_device::v3::Response::new())
                .await
                .unwrap();
        }
        (event, claimed)
    }
}

/// Hands a to-device event to `m` as a sync would; returns the session IDs of the room keys it took.
pub async fn deliver(m: &OlmMachine, event: &Value) -> Vec<String> {
    let (_, keys) = sync_to_device(m, event).await;
    keys
}

/// Hands a to-device event to `m` as a sync would: the decrypted events, and the session IDs of
/// the room keys it took.
pub async fn sync_to_device(m: &OlmMachine, event: &Value) -> (Vec<Value>, Vec<String>) {
    let raw = Raw::from_json_string(event.to_string()).unwrap();
    let (decrypted, keys) = m
        .receive_sync_changes(EncryptionSyncChanges {
            to_device_events: vec![raw],
            changed_devices: &DeviceLists::default(),
            one_time_keys_counts: &BTreeMap::new(),
            unused_fallback_keys: None,
            next_batch_token: None,
        })
        .await
        .unwrap();
    (
        decrypted.iter().map(|e| e.deserialize_as().unwrap()).collect(),
        keys.into_iter().map(|k| k.session_id).collect(),
    )
}

/// A room message from `m`, as the room event the bot would receive, and its plaintext content.
pub async fn room_message(m: &OlmMachine, room: &RoomId, text: &str, id: &str) -> (Value, Value) {
    let content = RoomMessageEventContent::text_plain(text);
    let plaintext = serde_json::to_value(&content).unwrap();
    let encrypted = m.encrypt_room_event(room, content).await.unwrap();
    let event = json!({
        "type": "m.room.encrypted",
        "content": serde_json::to_value(encrypted).unwrap(),
        "sender": m.user_id(),
        "event_id": id,
        "origin_server_ts": 1_700_200_000_000u64,
        "room_id": room,
    });
    (event, plaintext)
}
