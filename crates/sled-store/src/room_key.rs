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
use crate::fast_json::{once, Cursor};

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
    if let Some(cipher) = cipher {
        let mut buffer = Zeroizing::new(Vec::new());
        if open_envelope_fast(value, cipher, &mut buffer) {
            return Ok(Plaintext::Decrypted(buffer));
        }
    }
    open_value_serde(value, cipher)
}

/// [`open_value`] through serde: the path that names the damage of a value the fast path refused.
fn open_value_serde<'a>(value: &'a [u8], cipher: Option<&StoreCipher>) -> Result<Plaintext<'a>, Damage> {
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
///
/// Fast path first: the envelope's integers go straight into a reused per-thread buffer, which is
/// decrypted in place and wiped after use, and the pickle is read without building serde values.
/// Anything the fast path does not accept goes the serde way, which classifies the damage.
pub fn decode_value(value: &[u8], cipher: Option<&StoreCipher>) -> Result<RoomKey, Damage> {
    if let Some(key) = decode_value_fast(value, cipher) {
        return Ok(key);
    }
    decode_pickle_serde(&open_value_serde(value, cipher)?)
}

fn decode_value_fast(value: &[u8], cipher: Option<&StoreCipher>) -> Option<RoomKey> {
    if !looks_encrypted(value) {
        return decode_pickle_fast(value);
    }
    let cipher = cipher?;
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.try_borrow_mut().ok()?;
        let buffer = Wiped(&mut *scratch);
        if !open_envelope_fast(value, cipher, buffer.0) {
            return None;
        }
        decode_pickle_fast(buffer.0)
    })
}

thread_local! {
    /// The reader's buffer for ciphertext turned plaintext: allocated once per thread.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Wipes the plaintext in the scratch buffer however the decoding ends (a panic included).
struct Wiped<'b>(&'b mut Vec<u8>);

impl Drop for Wiped<'_> {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.0.as_mut_slice());
        self.0.clear();
    }
}

/// The envelope `{"version":1,"ciphertext":[…],"nonce":[…]}` read strictly (fields in any order,
/// each once, unknown ones skipped), the ciphertext decoded into `buffer` and decrypted in place.
/// `false` for anything else, including a failed authentication check: the serde path then
/// names the damage.
fn open_envelope_fast(value: &[u8], cipher: &StoreCipher, buffer: &mut Vec<u8>) -> bool {
    buffer.clear();
    // Sized once, so that the buffer does not reallocate while it is filled (the ciphertext takes
    // about a quarter of its JSON).
    buffer.reserve(value.len() / 3);
    let mut c = Cursor::new(value);
    let (mut version, mut nonce, mut ciphertext) = (None, None, None);
    let parsed = c.object(|c, field| match field {
        "version" => once(&mut version, c.uint(255)),
        "ciphertext" => once(&mut ciphertext, c.byte_array_into(buffer)),
        "nonce" => {
            let mut n = [0u8; 24];
            once(&mut nonce, c.byte_array_exact(&mut n).map(|_| n))
        }
        _ => c.skip_value(),
    });
    match (parsed, version, nonce, ciphertext) {
        (Some(()), Some(1), Some(nonce), Some(())) if c.at_end() => cipher.decrypt_in_place(&nonce, buffer),
        _ => false,
    }
}

/// [`decode_value`] as a scanner's decoder (the Sled key plays no part: room and session come from
/// the value).
pub(crate) fn decode_entry(_key: &[u8], value: &[u8], cipher: Option<&StoreCipher>) -> Result<RoomKey, Damage> {
    decode_value(value, cipher)
}

/// An encrypted value is a JSON object whose fields are `version`, `ciphertext` and `nonce`; a plain
/// pickle starts with `{"pickle":`. Looking at the first key avoids parsing the value twice.
pub(crate) fn looks_encrypted(value: &[u8]) -> bool {
    // On bytes: every character that matters here is ASCII, so no UTF-8 check is needed first.
    let first_key = value
        .trim_ascii_start()
        .strip_prefix(b"{")
        .map(|rest| rest.trim_ascii_start());
    matches!(first_key, Some(rest) if rest.starts_with(b"\"version\"") || rest.starts_with(b"\"ciphertext\"") || rest.starts_with(b"\"nonce\""))
}

/// The room key in a session pickle's JSON, every field checked (each kind of damage named).
pub fn decode_pickle(json: &[u8]) -> Result<RoomKey, Damage> {
    match decode_pickle_fast(json) {
        Some(key) => Ok(key),
        None => decode_pickle_serde(json),
    }
}

/// The fields of a Megolm pickle that make the exported key, written straight into its bytes.
struct FastMegolm {
    /// version byte ‖ counter ‖ ratchet ‖ signing key: the exported session key.
    key: Zeroizing<Vec<u8>>,
    counter: u32,
}

fn megolm_fast(c: &mut Cursor<'_>) -> Option<FastMegolm> {
    let mut key = Zeroizing::new(vec![0u8; EXPORTED_SESSION_KEY_LEN]);
    key[0] = 0x01;
    let (mut ratchet, mut counter, mut signing_key, mut config) = (None, None, None, None);
    c.object(|c, field| match field {
        "initial_ratchet" => {
            let (mut inner, mut n) = (None, None);
            let parsed = c.object(|c, field| match field {
                "inner" => once(&mut inner, c.byte_array_exact(&mut key[5..5 + RATCHET_LEN])),
                "counter" => once(&mut n, c.uint(u64::from(u32::MAX)).map(|v| v as u32)),
                _ => c.skip_value(),
            });
            once(&mut ratchet, parsed.and(inner))?;
            once(&mut counter, n)
        }
        "signing_key" => once(&mut signing_key, c.byte_array_exact(&mut key[5 + RATCHET_LEN..])),
        "config" => {
            let mut version = None;
            let parsed = c.object(|c, field| match field {
                "version" => once(&mut version, c.string()),
                _ => c.skip_value(),
            });
            once(&mut config, parsed.and(version).filter(|v| *v == "V1"))
        }
        _ => c.skip_value(),
    })?;
    let counter = counter?;
    ratchet?;
    signing_key?;
    key[1..5].copy_from_slice(&counter.to_be_bytes());
    Some(FastMegolm { key, counter })
}

fn string_map_fast(c: &mut Cursor<'_>) -> Option<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    c.object(|c, field| {
        let value = c.string()?;
        // A repeated key is for serde to judge.
        map.insert(field.to_owned(), value.to_owned()).is_none().then_some(())
    })?;
    Some(map)
}

/// The room key when the pickle is well-formed and plain (see `fast_json`); `None` sends it to
/// [`decode_pickle_serde`], which accepts the same values and names whatever is wrong.
fn decode_pickle_fast(json: &[u8]) -> Option<RoomKey> {
    let mut c = Cursor::new(json);
    let (mut pickle, mut sender_key, mut signing_key, mut room_id) = (None, None, None, None);
    let (mut imported, mut algorithm, mut chains) = (None, None, None);
    c.object(|c, field| match field {
        "pickle" => once(&mut pickle, megolm_fast(c)),
        "sender_key" => once(&mut sender_key, c.string()),
        "signing_key" => once(&mut signing_key, string_map_fast(c)),
        "room_id" => once(&mut room_id, c.string()),
        "imported" => once(&mut imported, c.bool()),
        "algorithm" => once(&mut algorithm, c.string()),
        "forwarding_chains" => once(&mut chains, c.string_array()),
        _ => c.skip_value(),
    })?;
    if !c.at_end() {
        return None;
    }
    let pickle = pickle?;
    let room_id = room_id?;
    validate_room_id(room_id).ok()?;
    let sender_key = sender_key?;
    check_key32("sender_key", sender_key).ok()?;
    let sender_claimed_keys = signing_key?;
    check_key32("signing_key.ed25519", sender_claimed_keys.get("ed25519")?).ok()?;
    let imported = imported?;
    let algorithm = algorithm.unwrap_or(MEGOLM_V1);
    if algorithm != MEGOLM_V1 {
        return None;
    }
    let session_id = STANDARD_NO_PAD.encode(&pickle.key[5 + RATCHET_LEN..]);
    Some(RoomKey {
        algorithm: algorithm.to_owned(),
        room_id: room_id.to_owned(),
        sender_key: sender_key.to_owned(),
        session_id,
        session_key: SessionKey(pickle.key),
        sender_claimed_keys,
        forwarding_curve25519_key_chain: chains.unwrap_or_default(),
        first_message_index: pickle.counter,
        imported,
    })
}

/// [`decode_pickle`] through serde: loose types first, so that each kind of damage can be named.
fn decode_pickle_serde(json: &[u8]) -> Result<RoomKey, Damage> {
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
    let mut bytes = [0u8; 64];
    let decoded = STANDARD_NO_PAD.decode_slice(b64.trim_end_matches('='), &mut bytes);
    match decoded {
        Ok(32) => Ok(()),
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

    fn assert_same_key(a: &RoomKey, b: &RoomKey) {
        assert_eq!(a.algorithm, b.algorithm);
        assert_eq!(a.room_id, b.room_id);
        assert_eq!(a.sender_key, b.sender_key);
        assert_eq!(a.session_id, b.session_id);
        assert_eq!(a.session_key.as_bytes(), b.session_key.as_bytes());
        assert_eq!(a.sender_claimed_keys, b.sender_claimed_keys);
        assert_eq!(a.forwarding_curve25519_key_chain, b.forwarding_curve25519_key_chain);
        assert_eq!(a.first_message_index, b.first_message_index);
        assert_eq!(a.imported, b.imported);
    }

    /// The genuine shapes take the fast path, and it gives what serde gives; variants serde accepts
    /// but the fast path leaves to it (escapes, nulls, other field orders) still decode.
    #[test]
    fn fast_path_matches_serde() {
        let cipher = StoreCipher::from_key([4u8; 32]);
        let mut with_chain = pickle_json("!r:example.org", 9);
        with_chain["forwarding_chains"] = serde_json::json!(["hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"]);
        with_chain["algorithm"] = serde_json::json!(MEGOLM_V1);
        with_chain["signing_key"]["curve25519"] = serde_json::json!("x");
        for v in [pickle_json("!a:b", 0), pickle_json("!a:b", u32::MAX), with_chain] {
            let plain = serde_json::to_vec(&v).unwrap();
            let pretty = serde_json::to_vec_pretty(&v).unwrap();
            for value in [plain.clone(), pretty, cipher.encrypt_for_test(&plain, [2u8; 24])] {
                let fast = decode_value_fast(&value, Some(&cipher)).expect("fast path");
                let slow = decode_pickle_serde(&open_value_serde(&value, Some(&cipher)).unwrap()).unwrap();
                assert_same_key(&fast, &slow);
                assert_eq!(&*open_value(&value, Some(&cipher)).unwrap(), &*open_value_serde(&value, Some(&cipher)).unwrap());
            }
        }
        let plain = String::from_utf8(serde_json::to_vec(&pickle_json("!a:b", 1)).unwrap()).unwrap();
        for variant in [
            plain.replace("\"room_id\":\"!a:b\"", "\"room_id\":\"\\u0021a:b\""),
            plain.replace("\"room_id\"", "\"r\\u006fom_id\""),
            plain.replace("\"config\":{\"version\":\"V1\"}", "\"config\":null"),
            plain.replace("\"imported\":false", "\"algorithm\":null,\"imported\":false"),
        ] {
            assert!(decode_pickle_fast(variant.as_bytes()).is_none(), "{variant}");
            assert_eq!(decode_value(variant.as_bytes(), None).unwrap().room_id, "!a:b");
        }
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
            // Whatever the fast path accepts, serde accepts with the same key.
            if let Some(fast) = decode_value_fast(&v, Some(&cipher)) {
                let slow = open_value_serde(&v, Some(&cipher))
                    .and_then(|p| decode_pickle_serde(&p))
                    .unwrap_or_else(|d| panic!("fast path accepted what serde calls {:?} (round {round})", d.kind));
                assert_same_key(&fast, &slow);
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
