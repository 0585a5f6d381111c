//! One `inbound_group_sessions` value → one exported room key, without the old crates: the
//! vodozemac pickle holds the Megolm ratchet and the signing key, and an exported session key is
//! just those bytes in a fixed layout.

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use crate::cipher::{EncryptedValue, StoreCipher};
use crate::error::{Damage, DamageKind};

pub const MEGOLM_V1: &str = "m.megolm.v1.aes-sha2";
const RATCHET_LEN: usize = 128;
const ED25519_LEN: usize = 32;
/// version byte ‖ u32 index ‖ ratchet ‖ signing key
pub const EXPORTED_SESSION_KEY_LEN: usize = 1 + 4 + RATCHET_LEN + ED25519_LEN;

/// The 165 bytes of an exported Megolm session key; wiped when dropped.
pub struct SessionKey(Zeroizing<Vec<u8>>);

impl SessionKey {
    fn new(counter: u32, ratchet: &[u8], signing_key: &[u8]) -> Self {
        let mut bytes = Zeroizing::new(Vec::with_capacity(EXPORTED_SESSION_KEY_LEN));
        bytes.push(0x01);
        bytes.extend_from_slice(&counter.to_be_bytes());
        bytes.extend_from_slice(ratchet);
        bytes.extend_from_slice(signing_key);
        SessionKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD_NO_PAD.encode(&*self.0))
    }
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// A room key as `InboundGroupSession::export()` reports it, plus the flags a backup needs.
#[derive(Debug)]
pub struct RoomKey {
    pub algorithm: String,
    pub room_id: String,
    pub sender_key: String,
    pub session_id: String,
    pub session_key: SessionKey,
    pub sender_claimed_keys: BTreeMap<String, String>,
    pub forwarding_curve25519_key_chain: Vec<String>,
    pub first_message_index: u32,
    /// Received through a key import or forward rather than from its sender.
    pub imported: bool,
}

// The pickle is parsed into loose types first so that each kind of damage can be named.
#[derive(Deserialize)]
struct LoosePickledSession<'a> {
    #[serde(borrow)]
    pickle: Option<&'a RawValue>,
    sender_key: Option<String>,
    signing_key: Option<BTreeMap<String, String>>,
    room_id: Option<String>,
    imported: Option<bool>,
    algorithm: Option<String>,
    /// Only in crypto-nodejs beta.1 stores.
    forwarding_chains: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct MegolmPickle {
    initial_ratchet: RatchetPickle,
    signing_key: Vec<u8>,
    config: Option<SessionConfig>,
}

#[derive(Deserialize)]
struct RatchetPickle {
    inner: Vec<u8>,
    counter: u32,
}

#[derive(Deserialize)]
struct SessionConfig {
    version: String,
}

/// The JSON bytes a value holds: a plaintext value as it is, an encrypted one opened with the store
/// cipher (decided per entry: a store upgraded from bot-sdk 0.6.5 holds both). Every tree of the
/// store stores its values this way.
pub fn open_value<'a>(value: &'a [u8], cipher: Option<&StoreCipher>) -> Result<Plaintext<'a>, Damage> {
    if !looks_encrypted(value) {
        return Ok(Plaintext::Stored(value));
    }
    let envelope: EncryptedValue = serde_json::from_slice(value)
        .map_err(|e| Damage::from_json(DamageKind::InvalidJson, "encrypted value", &e))?;
    let cipher = cipher.ok_or_else(|| {
        Damage::new(
            DamageKind::DecryptionFailed,
            "the value is encrypted but the store has no store cipher",
        )
    })?;
    if envelope.version != 1 {
        return Err(Damage::new(
            DamageKind::DecryptionFailed,
            format!("unknown encrypted value version {}", envelope.version),
        ));
    }
    let plaintext = cipher.decrypt(&envelope).ok_or_else(|| {
        Damage::new(
            DamageKind::DecryptionFailed,
            "the encrypted value fails its authentication check",
        )
    })?;
    Ok(Plaintext::Decrypted(plaintext))
}

/// A value's JSON: borrowed from Sled when it was stored in the clear, else decrypted and wiped
/// when dropped.
pub enum Plaintext<'a> {
    Stored(&'a [u8]),
    Decrypted(Zeroizing<Vec<u8>>),
}

impl std::ops::Deref for Plaintext<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Plaintext::Stored(bytes) => bytes,
            Plaintext::Decrypted(bytes) => bytes,
        }
    }
}

/// Decodes a value of the `inbound_group_sessions` tree into the room key it holds.
pub fn decode_value(value: &[u8], cipher: Option<&StoreCipher>) -> Result<RoomKey, Damage> {
    decode_pickle(&open_value(value, cipher)?)
}

/// [`decode_value`] as a scanner's decoder (the Sled key plays no part: room and session come from
/// the value).
pub(crate) fn decode_entry(_key: &[u8], value: &[u8], cipher: Option<&StoreCipher>) -> Result<RoomKey, Damage> {
    decode_value(value, cipher)
}

/// An encrypted value is a JSON object whose fields are `version`, `ciphertext` and `nonce`; a plain
/// pickle starts with `{"pickle":`. Looking at the first key avoids parsing the value twice.
fn looks_encrypted(value: &[u8]) -> bool {
    let head = &value[..value.len().min(64)];
    let text = String::from_utf8_lossy(head);
    let first_key = text
        .trim_start()
        .strip_prefix('{')
        .map(|rest| rest.trim_start());
    matches!(first_key, Some(rest) if rest.starts_with("\"version\"") || rest.starts_with("\"ciphertext\"") || rest.starts_with("\"nonce\""))
}

/// The room key in a session pickle's JSON, every field checked (each kind of damage named).
pub fn decode_pickle(json: &[u8]) -> Result<RoomKey, Damage> {
    let loose: LoosePickledSession = serde_json::from_slice(json).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => DamageKind::MissingField,
            _ => DamageKind::InvalidJson,
        };
        Damage::from_json(kind, "session pickle", &e)
    })?;
    let missing = |field: &str| {
        Damage::new(
            DamageKind::MissingField,
            format!("the pickle has no `{field}`"),
        )
    };

    let pickle_raw = loose.pickle.ok_or_else(|| missing("pickle"))?;
    if pickle_raw.get().trim_start().starts_with('"') {
        return Err(Damage::new(
            DamageKind::LegacyPickle,
            "a libolm pickle (pre-0.6 store): it cannot be read without libolm's pickle key",
        ));
    }
    let pickle: MegolmPickle = serde_json::from_str(pickle_raw.get())
        .map_err(|e| Damage::from_json(DamageKind::InvalidPickle, "Megolm pickle", &e))?;
    if pickle.initial_ratchet.inner.len() != RATCHET_LEN {
        return Err(Damage::new(
            DamageKind::InvalidPickle,
            format!(
                "Megolm ratchet of {} bytes, expected {RATCHET_LEN}",
                pickle.initial_ratchet.inner.len()
            ),
        ));
    }
    if pickle.signing_key.len() != ED25519_LEN {
        return Err(Damage::new(
            DamageKind::InvalidPickle,
            format!(
                "session signing key of {} bytes, expected {ED25519_LEN}",
                pickle.signing_key.len()
            ),
        ));
    }
    if let Some(config) = &pickle.config {
        if config.version != "V1" {
            return Err(Damage::new(
                DamageKind::InvalidPickle,
                format!(
                    "Megolm session config {} (only V1 sessions can be backed up)",
                    config.version
                ),
            ));
        }
    }

    let room_id = loose.room_id.ok_or_else(|| missing("room_id"))?;
    validate_room_id(&room_id)?;
    let sender_key = loose.sender_key.ok_or_else(|| missing("sender_key"))?;
    check_key32("sender_key", &sender_key)?;
    let sender_claimed_keys = loose.signing_key.ok_or_else(|| missing("signing_key"))?;
    let ed25519 = sender_claimed_keys
        .get("ed25519")
        .ok_or_else(|| missing("signing_key.ed25519"))?;
    check_key32("signing_key.ed25519", ed25519)?;
    let imported = loose.imported.ok_or_else(|| missing("imported"))?;
    let algorithm = loose.algorithm.unwrap_or_else(|| MEGOLM_V1.to_owned());
    if algorithm != MEGOLM_V1 {
        return Err(Damage::new(
            DamageKind::InvalidPickle,
            format!("algorithm {algorithm} (only {MEGOLM_V1} sessions can be backed up)"),
        ));
    }

    let session_key = SessionKey::new(
        pickle.initial_ratchet.counter,
        &pickle.initial_ratchet.inner,
        &pickle.signing_key,
    );
    Ok(RoomKey {
        algorithm,
        room_id,
        sender_key,
        session_id: STANDARD_NO_PAD.encode(&pickle.signing_key),
        session_key,
        sender_claimed_keys,
        forwarding_curve25519_key_chain: loose.forwarding_chains.unwrap_or_default(),
        first_message_index: pickle.initial_ratchet.counter,
        imported,
    })
}

/// What ruma's `RoomId` demands of a room ID (the check behind "leading sigil is incorrect or missing").
fn validate_room_id(room_id: &str) -> Result<(), Damage> {
    let bad = |why: &str| {
        Damage::new(
            DamageKind::InvalidRoomId,
            format!("room_id {room_id:?} {why}"),
        )
    };
    if !room_id.starts_with('!') {
        return Err(bad(
            "lacks its leading '!' (leading sigil is incorrect or missing)",
        ));
    }
    match room_id.split_once(':') {
        Some((local, server)) if local.len() > 1 && !server.is_empty() => {}
        _ => return Err(bad("has no server name")),
    }
    if room_id.len() > 255 || room_id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("has forbidden characters or is too long"));
    }
    Ok(())
}

fn check_key32(field: &str, b64: &str) -> Result<(), Damage> {
    let decoded = STANDARD_NO_PAD.decode(b64.trim_end_matches('='));
    match decoded {
        Ok(bytes) if bytes.len() == 32 => Ok(()),
        _ => Err(Damage::new(
            DamageKind::InvalidPickle,
            format!("`{field}` is not a base64 32-byte key"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pickle_json(room_id: &str, counter: u32) -> serde_json::Value {
        // The upstream known answer: this signing key has session ID XbmrPa1kMwmdtNYng1B2gsfoo8UtF+NklzsTZiaVKyY.
        let signing_key = STANDARD_NO_PAD
            .decode("XbmrPa1kMwmdtNYng1B2gsfoo8UtF+NklzsTZiaVKyY")
            .unwrap();
        serde_json::json!({
            "pickle": {
                "initial_ratchet": {"inner": (0..128).map(|i| i as u8).collect::<Vec<_>>(), "counter": counter},
                "signing_key": signing_key,
                "signing_key_verified": true,
                "config": {"version": "V1"}
            },
            "sender_key": "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo",
            "signing_key": {"ed25519": "XbmrPa1kMwmdtNYng1B2gsfoo8UtF+NklzsTZiaVKyY"},
            "room_id": room_id,
            "imported": false,
            "backed_up": false,
            "history_visibility": null
        })
    }

    #[test]
    fn plaintext_pickle_becomes_an_exported_key() {
        let value = serde_json::to_vec(&pickle_json("!room:example.org", 7)).unwrap();
        let key = decode_value(&value, None).unwrap();
        assert_eq!(
            key.session_id,
            "XbmrPa1kMwmdtNYng1B2gsfoo8UtF+NklzsTZiaVKyY"
        );
        assert_eq!(key.first_message_index, 7);
        assert_eq!(key.algorithm, MEGOLM_V1);
        let bytes = key.session_key.as_bytes();
        assert_eq!(bytes.len(), EXPORTED_SESSION_KEY_LEN);
        assert_eq!(&bytes[..5], &[1, 0, 0, 0, 7]);
        assert_eq!(STANDARD_NO_PAD.encode(&bytes[133..]), key.session_id);
    }

    #[test]
    fn encrypted_values_are_decided_per_entry() {
        let cipher = StoreCipher::from_key([3u8; 32]);
        let plain = serde_json::to_vec(&pickle_json("!a:b", 0)).unwrap();
        let sealed = cipher.encrypt_for_test(&plain, [1u8; 24]);
        assert_eq!(
            decode_value(&sealed, Some(&cipher)).unwrap().room_id,
            "!a:b"
        );
        assert_eq!(decode_value(&plain, Some(&cipher)).unwrap().room_id, "!a:b");
        assert_eq!(
            decode_value(&sealed, None).unwrap_err().kind,
            DamageKind::DecryptionFailed
        );
        let mut flipped: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let first = flipped["ciphertext"][0].as_u64().unwrap();
        flipped["ciphertext"][0] = (first ^ 1).into();
        let flipped = serde_json::to_vec(&flipped).unwrap();
        assert_eq!(
            decode_value(&flipped, Some(&cipher)).unwrap_err().kind,
            DamageKind::DecryptionFailed
        );
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let kind = |v: serde_json::Value| {
            decode_value(&serde_json::to_vec(&v).unwrap(), None)
                .unwrap_err()
                .kind
        };
        assert_eq!(
            kind(pickle_json("room:example.org", 0)),
            DamageKind::InvalidRoomId
        );
        let mut v = pickle_json("!r:s", 0);
        v.as_object_mut().unwrap().remove("sender_key");
        assert_eq!(kind(v), DamageKind::MissingField);
        let mut v = pickle_json("!r:s", 0);
        v["pickle"]["initial_ratchet"]["inner"] = serde_json::json!([1, 2, 3]);
        assert_eq!(kind(v), DamageKind::InvalidPickle);
        let mut v = pickle_json("!r:s", 0);
        v["pickle"] = serde_json::json!("bGlib2xtIHBpY2tsZQ");
        assert_eq!(kind(v), DamageKind::LegacyPickle);
        let full = serde_json::to_vec(&pickle_json("!r:s", 0)).unwrap();
        assert_eq!(
            decode_value(&full[..full.len() / 2], None)
                .unwrap_err()
                .kind,
            DamageKind::InvalidJson
        );
        assert_eq!(
            decode_value(&[0xde, 0xad, 0xbe, 0xef], None)
                .unwrap_err()
                .kind,
            DamageKind::InvalidJson
        );
    }

    #[test]
    fn damage_messages_do_not_quote_values() {
        let mut v = pickle_json("!r:s", 0);
        v["pickle"]["initial_ratchet"]["inner"] = serde_json::json!("SECRETSECRET");
        let damage = decode_value(&serde_json::to_vec(&v).unwrap(), None).unwrap_err();
        assert!(!damage.message.contains("SECRET"), "{}", damage.message);
    }

    /// Random and mutated values, plaintext and encrypted: always Ok or a classified damage, never
    /// a panic (the scanner also catches panics, but a decoder should not rely on that).
    #[test]
    fn mutated_values_are_classified_never_panics() {
        let cipher = StoreCipher::from_key([9u8; 32]);
        let plain = serde_json::to_vec(&pickle_json("!a:b", 3)).unwrap();
        let encrypted = cipher.encrypt_for_test(&plain, [5u8; 24]);
        let mut state = 7u64;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let (mut ok, mut damaged) = (0, 0);
        for round in 0..20_000 {
            let base = if round % 2 == 0 { &plain } else { &encrypted };
            let mut v = base.clone();
            match next() % 5 {
                0 => {
                    let i = next() % v.len();
                    v[i] ^= 1 << (next() % 8);
                }
                1 => v.truncate(next() % v.len()),
                2 => {
                    let i = next() % v.len();
                    v.insert(i, (next() % 256) as u8);
                }
                3 => {
                    let (a, b) = (next() % v.len(), next() % v.len());
                    let (a, b) = (a.min(b), a.max(b));
                    let chunk = v[a..b].to_vec();
                    v.splice(a..a, chunk);
                }
                _ => v = (0..next() % 300).map(|_| (next() % 256) as u8).collect(),
            }
            let result = std::panic::catch_unwind(|| decode_value(&v, Some(&cipher)).map(|_| ()));
            match result {
                Ok(Ok(())) => ok += 1,
                Ok(Err(_)) => damaged += 1,
                Err(_) => panic!("decode_value panicked on round {round}"),
            }
        }
        assert!(damaged > 15_000 && ok > 0, "ok {ok}, damaged {damaged}");
    }
}
