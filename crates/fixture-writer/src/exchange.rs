//! A real Olm exchange with the genuine 0.6 `OlmMachine`, without a homeserver.
//!
//! The bot's machine runs over the case's Sled store (so the genuine Sled code persists everything
//! it does: the published account, tracked users, the peers' devices, its Olm session, the room
//! keys); the peers' machines are in memory. A tiny in-process "server" answers the machines' own
//! requests (`/keys/upload`, `/keys/query`, `/keys/claim`) and to-device messages are handed over
//! as a sync would. What is recorded:
//!
//! - Dave claims one of the bot's one-time keys and shares a room key: the bot receives that
//!   pre-key message (an Olm session and the room key land in its store; the key and two events
//!   go to the top-level `keys` / `events`).
//! - The bot replies (shares its own room key with Dave over that session), so Dave's side of the
//!   session has seen a reply and his next Olm messages are normal (type 1) messages. The bot's
//!   own room key and one event it encrypts go to `keys` / `events` too.
//! - Dave rotates his room key and shares the new one: a type-1 message over the existing Olm
//!   session, never given to the bot (`"kind": "existing-session"`).
//! - Erin claims a different one of the bot's one-time keys and shares a room key: a pre-key
//!   message the bot never received (`"kind": "one-time-key"`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use matrix_sdk_crypto::olm::IdentityKeys;
use matrix_sdk_crypto::store::CryptoStore;
use matrix_sdk_crypto::types::events::room::encrypted::EncryptedEvent;
use matrix_sdk_crypto::{EncryptionSettings, OlmMachine, OutgoingRequests, ToDeviceRequest};
use matrix_sdk_sled::SledCryptoStore;
use ruma::api::client::keys::{claim_keys, get_keys, upload_keys};
use ruma::api::client::sync::sync_events::v3::{DeviceLists, ToDevice};
use ruma::api::client::to_device::send_event_to_device;
use ruma::encryption::{DeviceKeys, OneTimeKey};
use ruma::events::room::message::RoomMessageEventContent;
use ruma::events::AnyToDeviceEvent;
use ruma::serde::Raw;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{device_id, user_id, DeviceKeyAlgorithm, OwnedDeviceId, OwnedDeviceKeyId, OwnedUserId, RoomId, UInt, UserId};
use serde_json::{json, Value};

use crate::write::{expected_key, open_store, BOT_DEVICE, BOT_USER};

pub const OLM_ROOM: &str = "!olmexchange:example.org";

/// What the exchange adds to expected.json.
pub struct Recorded {
    /// The header's `olm` object.
    pub olm: Value,
    /// Exports of the inbound sessions the exchange put in the bot's store.
    pub keys: Vec<Value>,
    /// Megolm events that decrypt with those sessions.
    pub events: Vec<Value>,
}

/// Stands in for the homeserver: device keys and one-time keys, as uploaded.
#[derive(Default)]
struct Server {
    device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>,
    one_time_keys: BTreeMap<(OwnedUserId, OwnedDeviceId), BTreeMap<OwnedDeviceKeyId, Raw<OneTimeKey>>>,
}

impl Server {
    fn otk_counts(&self, m: &OlmMachine) -> BTreeMap<DeviceKeyAlgorithm, UInt> {
        let n = self.one_time_keys.get(&(m.user_id().to_owned(), m.device_id().to_owned())).map_or(0, |k| k.len());
        BTreeMap::from([(DeviceKeyAlgorithm::SignedCurve25519, UInt::new(n as u64).unwrap())])
    }

    /// Answers the machine's outgoing requests until it has none left.
    async fn serve(&mut self, m: &OlmMachine) -> Result<()> {
        for _ in 0..10 {
            let requests = m.outgoing_requests().await?;
            if requests.is_empty() {
                return Ok(());
            }
            for r in requests {
                match r.request() {
                    OutgoingRequests::KeysUpload(upload) => {
                        if let Some(keys) = &upload.device_keys {
                            self.device_keys.entry(m.user_id().to_owned()).or_default().insert(m.device_id().to_owned(), keys.clone());
                        }
                        let pool = self.one_time_keys.entry((m.user_id().to_owned(), m.device_id().to_owned())).or_default();
                        pool.extend(upload.one_time_keys.iter().map(|(id, key)| (id.clone(), key.clone())));
                        let response = upload_keys::v3::Response::new(self.otk_counts(m));
                        m.mark_request_as_sent(r.request_id(), &response).await?;
                    }
                    OutgoingRequests::KeysQuery(query) => {
                        let mut response = get_keys::v3::Response::new();
                        for user in query.device_keys.keys() {
                            response.device_keys.insert(user.clone(), self.device_keys.get(user).cloned().unwrap_or_default());
                        }
                        m.mark_request_as_sent(r.request_id(), &response).await?;
                    }
                    other => bail!("{} sent an unexpected request: {other:?}", m.user_id()),
                }
            }
        }
        bail!("{} never ran out of requests", m.user_id())
    }

    /// `/keys/claim`: hands out (and removes) one one-time key per requested device.
    fn claim(&mut self, request: &claim_keys::v3::Request) -> claim_keys::v3::Response {
        let mut out: BTreeMap<OwnedUserId, claim_keys::v3::OneTimeKeys> = BTreeMap::new();
        for (user, devices) in &request.one_time_keys {
            for device in devices.keys() {
                if let Some((id, key)) = self.one_time_keys.get_mut(&(user.clone(), device.clone())).and_then(|pool| pool.pop_first()) {
                    out.entry(user.clone()).or_default().insert(device.clone(), BTreeMap::from([(id, key)]));
                }
            }
        }
        claim_keys::v3::Response::new(out)
    }

    /// `from` shares its room key for `room` with `to`'s user, claiming a one-time key first if it
    /// has no Olm session with `to` yet. Returns the to-device event as `to` would get it in a sync,
    /// and whether a one-time key was claimed.
    async fn share(&mut self, from: &OlmMachine, to: &OlmMachine, room: &RoomId) -> Result<(Value, bool)> {
        let mut claimed = false;
        if let Some((txn, request)) = from.get_missing_sessions(std::iter::once(to.user_id())).await? {
            let response = self.claim(&request);
            ensure!(!response.one_time_keys.is_empty(), "no one-time key left for {}", to.user_id());
            from.mark_request_as_sent(&txn, &response).await?;
            claimed = true;
        }
        let requests = from.share_room_key(room, std::iter::once(to.user_id()), EncryptionSettings::default()).await?;
        let event = to_device_event(from.user_id(), &requests, to.user_id(), to.device_id())?;
        for r in &requests {
            from.mark_request_as_sent(&r.txn_id, &send_event_to_device::v3::Response::new()).await?;
        }
        Ok((event, claimed))
    }
}

/// The single encrypted to-device message `requests` carry for `user`'s `device`, as a sync event.
fn to_device_event(sender: &UserId, requests: &[Arc<ToDeviceRequest>], user: &UserId, device: &ruma::DeviceId) -> Result<Value> {
    ensure!(requests.len() == 1, "expected one to-device request, got {}", requests.len());
    let request = &requests[0];
    ensure!(request.event_type.to_string() == "m.room.encrypted", "to-device type {}", request.event_type);
    ensure!(request.message_count() == 1, "expected one message, got {}", request.message_count());
    let content = request
        .messages
        .get(user)
        .and_then(|m| m.get(&DeviceIdOrAllDevices::DeviceId(device.to_owned())))
        .context("no to-device message for the recipient device")?;
    Ok(json!({ "sender": sender, "type": "m.room.encrypted", "content": serde_json::to_value(content)? }))
}

/// The Olm message type (0 pre-key, 1 normal) of the ciphertext for `recipient_curve25519`.
fn olm_type(event: &Value, recipient_curve25519: &str) -> Option<u64> {
    event["content"]["ciphertext"][recipient_curve25519]["type"].as_u64()
}

/// Feeds to-device events to `m` as a sync would; returns the decrypted events' types.
async fn deliver(m: &OlmMachine, events: &[Value], otk_counts: &BTreeMap<DeviceKeyAlgorithm, UInt>) -> Result<Vec<String>> {
    let mut to_device = ToDevice::new();
    for e in events {
        to_device.events.push(serde_json::from_value::<Raw<AnyToDeviceEvent>>(e.clone())?);
    }
    let out = m.receive_sync_changes(to_device, &DeviceLists::default(), otk_counts, None).await?;
    Ok(out.events.iter().map(|e| e.get_field::<String>("type").ok().flatten().unwrap_or_default()).collect())
}

/// `n` Megolm events `m` encrypts in `room` with its current outbound session (same shape as the
/// top-level `events`).
async fn room_events(m: &OlmMachine, room: &RoomId, tag: &str, n: usize, serial: &mut u64) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for k in 0..n {
        let content = RoomMessageEventContent::text_plain(format!("{tag} message {k} from {}", m.user_id()));
        let plaintext = serde_json::to_value(&content)?;
        let encrypted: Value = serde_json::to_value(m.encrypt_room_event(room, content).await?)?;
        *serial += 1;
        out.push(json!({
            "room_id": room,
            "session_id": encrypted["session_id"],
            "event_type": "m.room.message",
            "plaintext": plaintext,
            "event": {
                "type": "m.room.encrypted",
                "content": encrypted,
                "sender": m.user_id(),
                "event_id": format!("${tag}m{k}:example.org"),
                "origin_server_ts": 1_700_100_000_000u64 + *serial,
                "room_id": room,
            }
        }));
    }
    Ok(out)
}

fn session_of(events: &[Value]) -> Result<String> {
    let id = events.first().and_then(|e| e["session_id"].as_str()).context("no events")?.to_owned();
    ensure!(events.iter().all(|e| e["session_id"] == id), "events from more than one session");
    Ok(id)
}

fn device_record(m: &OlmMachine) -> Value {
    let k = m.identity_keys();
    json!({ "user_id": m.user_id(), "device_id": m.device_id(), "curve25519": k.curve25519.to_base64(), "ed25519": k.ed25519.to_base64() })
}

/// Runs the exchange over the bot's store (whose account is already saved), drops the bot's
/// machine and the store, then reopens the store to read back what it holds.
pub async fn run(store: Arc<SledCryptoStore>, store_dir: &Path, passphrase: Option<&str>, identity: &IdentityKeys, copy_check: bool) -> Result<Recorded> {
    let room = RoomId::parse(OLM_ROOM)?;
    let room = room.as_ref();
    let bot_user = UserId::parse(BOT_USER)?;
    let bot = OlmMachine::with_store(&bot_user, BOT_DEVICE.into(), store.clone()).await?;
    ensure!(bot.identity_keys().curve25519 == identity.curve25519 && bot.identity_keys().ed25519 == identity.ed25519, "the machine did not load the saved account");
    let bot_curve = identity.curve25519.to_base64();
    let dave = OlmMachine::new(user_id!("@dave:example.org"), device_id!("DAVEPHONE")).await;
    let erin = OlmMachine::new(user_id!("@erin:example.org"), device_id!("ERINLAPTOP")).await;
    let mut server = Server::default();
    let mut serial = 0u64;

    // Everyone publishes its keys, then learns the others' devices.
    for m in [&bot, &dave, &erin] {
        server.serve(m).await?;
    }
    bot.update_tracked_users([dave.user_id(), erin.user_id()]).await;
    dave.update_tracked_users([bot.user_id()]).await;
    erin.update_tracked_users([bot.user_id()]).await;
    for m in [&bot, &dave, &erin] {
        server.serve(m).await?;
    }

    // Dave → bot: a pre-key message on one of the bot's one-time keys, delivered.
    let (first, claimed) = server.share(&dave, &bot, room).await?;
    ensure!(claimed && olm_type(&first, &bot_curve) == Some(0), "Dave's first message should be a pre-key message");
    let dave_events = room_events(&dave, room, "olm-dave-delivered", 2, &mut serial).await?;
    let dave_session = session_of(&dave_events)?;
    let got = deliver(&bot, &[first], &server.otk_counts(&bot)).await?;
    ensure!(got == ["m.room_key"], "the bot did not decrypt Dave's room key: {got:?}");
    server.serve(&bot).await?; // replaces the used one-time key, as after a sync

    // Bot → Dave over that session (the bot speaks in the room), so Dave's side has seen a reply.
    let (reply, claimed) = server.share(&bot, &dave, room).await?;
    ensure!(!claimed && olm_type(&reply, &dave.identity_keys().curve25519.to_base64()) == Some(1), "the bot's reply should use the existing session");
    let bot_events = room_events(&bot, room, "olm-bot", 1, &mut serial).await?;
    let bot_session = session_of(&bot_events)?;
    let got = deliver(&dave, &[reply], &BTreeMap::new()).await?;
    ensure!(got == ["m.room_key"], "Dave did not decrypt the bot's room key: {got:?}");

    // Dave rotates his room key: the new one goes over the existing session; the bot never gets it.
    ensure!(dave.invalidate_group_session(room).await?, "Dave had no outbound session to invalidate");
    let (rotated, claimed) = server.share(&dave, &bot, room).await?;
    ensure!(!claimed && olm_type(&rotated, &bot_curve) == Some(1), "the rotated key should go over the existing session as a normal message");
    let rotated_events = room_events(&dave, room, "olm-dave-rotated", 2, &mut serial).await?;
    let rotated_session = session_of(&rotated_events)?;
    ensure!(rotated_session != dave_session);

    // Erin: another of the bot's one-time keys, a pre-key message the bot never gets.
    let (erin_msg, claimed) = server.share(&erin, &bot, room).await?;
    ensure!(claimed && olm_type(&erin_msg, &bot_curve) == Some(0), "Erin's message should be a pre-key message");
    let erin_events = room_events(&erin, room, "olm-erin", 2, &mut serial).await?;
    let erin_session = session_of(&erin_events)?;

    let peer_devices = vec![device_record(&dave), device_record(&erin)];
    let dave_curve = dave.identity_keys().curve25519.to_base64();
    let erin_curve = erin.identity_keys().curve25519.to_base64();
    // The bot's machine goes first: its store is then only ours; dropping the last reference to the
    // Sled trees flushes them (every save_changes has flushed already).
    drop(bot);
    drop((dave, erin));
    ensure!(Arc::strong_count(&store) == 1, "something still holds the bot's store");
    drop(store);

    // Read back what the genuine store now holds (opening it again also proves it was released).
    let store = open_store(store_dir, passphrase)?;
    let account = store.load_account().await?.context("no account after the exchange")?;
    ensure!(account.shared(), "the account was not marked as published");
    ensure!(account.identity_keys().curve25519 == identity.curve25519, "the account changed");
    let mut tracked_users: Vec<String> = store.tracked_users().iter().map(|u| u.to_string()).collect();
    tracked_users.sort();
    let mut devices = 0;
    let mut olm_sessions = 0;
    for user in store.tracked_users() {
        for (_, device) in store.get_user_devices(&user).await? {
            if user.as_str() != BOT_USER {
                devices += 1;
            }
            if let Some(curve) = device.curve25519_key() {
                if let Some(sessions) = store.get_sessions(&curve.to_base64()).await? {
                    olm_sessions += sessions.lock().await.len();
                }
            }
        }
    }
    let mut keys = Vec::new();
    for (sender_key, session_id) in [(&dave_curve, &dave_session), (&bot_curve, &bot_session)] {
        let s = store.get_inbound_group_session(room, sender_key, session_id).await?.with_context(|| format!("session {session_id} is not in the store"))?;
        keys.push(expected_key(&s).await);
    }
    for (sender_key, session_id) in [(&dave_curve, &rotated_session), (&erin_curve, &erin_session)] {
        ensure!(store.get_inbound_group_session(room, sender_key, session_id).await?.is_none(), "the bot's store holds {session_id}, which it never received");
    }
    drop(store);

    // The same counts straight from the Sled trees.
    let db = sled::Config::new().path(store_dir.join("matrix-sdk-crypto")).open()?;
    let raw_sessions = db.open_tree("session")?.len();
    let raw_devices = db.open_tree("devices")?.len();
    let raw_tracked = db.open_tree("tracked_users")?.len();
    drop(db);
    ensure!(raw_sessions == olm_sessions, "Sled holds {raw_sessions} Olm sessions, the store API found {olm_sessions}");
    let own_device = tracked_users.iter().any(|u| u == BOT_USER) as usize;
    ensure!(raw_devices == devices + own_device, "Sled holds {raw_devices} devices");
    ensure!(raw_tracked == tracked_users.len(), "Sled holds {raw_tracked} tracked users");

    let entry = |kind: &str, event: Value, session_id: &str, events: Vec<Value>| {
        json!({ "kind": kind, "event": event, "room_id": room, "session_id": session_id, "events": events })
    };
    let olm = json!({
        "checked_on_a_copy": copy_check,
        "peer_devices": peer_devices,
        "olm_sessions": olm_sessions,
        "tracked_users": tracked_users,
        "devices": devices,
        "to_device": [
            entry("existing-session", rotated, &rotated_session, rotated_events),
            entry("one-time-key", erin_msg, &erin_session, erin_events),
        ],
    });
    let mut events = dave_events;
    events.extend(bot_events);
    if copy_check {
        check_on_a_copy(store_dir, passphrase, &olm, &events).await?;
    }
    Ok(Recorded { olm, keys, events })
}

/// Proves the record against the genuine 0.6 code, on a throw-away copy of the store: the bot's
/// machine decrypts both withheld to-device messages and then every recorded Megolm event.
async fn check_on_a_copy(store_dir: &Path, passphrase: Option<&str>, olm: &Value, delivered_events: &[Value]) -> Result<()> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let copy = std::env::temp_dir().join(format!("fixture-writer-check-{}-{nanos}", std::process::id()));
    copy_dir(&store_dir.join("matrix-sdk-crypto"), &copy.join("matrix-sdk-crypto"))?;
    let result = async {
        let store = Arc::new(open_store(&copy, passphrase)?);
        let bot = OlmMachine::with_store(&UserId::parse(BOT_USER)?, BOT_DEVICE.into(), store).await?;
        let mut events: Vec<&Value> = delivered_events.iter().collect();
        for entry in olm["to_device"].as_array().context("to_device")? {
            let got = deliver(&bot, std::slice::from_ref(&entry["event"]), &BTreeMap::new()).await?;
            ensure!(got == ["m.room_key"], "the {} message did not decrypt on a copy of the store: {got:?}", entry["kind"]);
            events.extend(entry["events"].as_array().context("events")?);
        }
        for e in events {
            let raw: Raw<EncryptedEvent> = serde_json::from_value(e["event"].clone())?;
            let decrypted = bot.decrypt_room_event(&raw, &RoomId::parse(e["room_id"].as_str().context("room_id")?)?).await?;
            let decrypted: Value = serde_json::to_value(&decrypted.event)?;
            ensure!(decrypted["content"] == e["plaintext"], "event {} decrypted to {decrypted}", e["event"]["event_id"]);
        }
        Ok(())
    }
    .await;
    std::fs::remove_dir_all(&copy)?;
    result
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
