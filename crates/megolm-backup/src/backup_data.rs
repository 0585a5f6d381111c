//! What goes inside and around an encrypted backup entry, and the checks an entry passes before it
//! leaves: the migrated bot files each key under the session ID we send and does not check it.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::encrypt::SessionData;
use crate::unb64;

/// The plaintext of a backed-up key: all five fields always present (a restore silently skips an
/// entry without `sender_claimed_keys`).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct BackedUpRoomKey {
    pub algorithm: String,
    pub sender_key: String,
    pub session_key: Zeroizing<String>,
    pub sender_claimed_keys: BTreeMap<String, String>,
    #[serde(default)]
    pub forwarding_curve25519_key_chain: Vec<String>,
}

/// Text that JSON is written into directly (an upload member's `String`, a plaintext's wiped
/// `Vec<u8>`).
pub(crate) trait JsonOut {
    fn push_str(&mut self, text: &str);
}

impl JsonOut for String {
    fn push_str(&mut self, text: &str) {
        String::push_str(self, text);
    }
}

impl JsonOut for Vec<u8> {
    fn push_str(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }
}

/// `text` as a JSON string, as serde_json writes it, appended to `out`: copied as it is when
/// nothing in it needs escaping (IDs and keys are base64 or plain ASCII), else through serde_json.
pub(crate) fn append_json_string(out: &mut impl JsonOut, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push_str("\"");
        out.push_str(text);
        out.push_str("\"");
    } else {
        out.push_str(&serde_json::to_string(text).expect("a string serializes"));
    }
}

/// The upload wrapper.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyBackupData {
    pub first_message_index: u32,
    pub forwarded_count: u32,
    pub is_verified: bool,
    pub session_data: SessionData,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the session key is not base64")]
    SessionKeyBase64,
    #[error("the session key has {0} bytes, an exported Megolm key has 165")]
    SessionKeyLength(usize),
    #[error("the session key has version byte {0}, expected 1")]
    SessionKeyVersion(u8),
    #[error("the session ID does not match the session key (it is {0})")]
    SessionIdMismatch(String),
    #[error("{0} is not base64 of a 32-byte key")]
    BadKey(&'static str),
    #[error("the room ID is malformed")]
    RoomId,
}

const EXPORTED_LEN: usize = 165;

fn decode_session_key(session_key: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let bytes = Zeroizing::new(unb64(session_key).map_err(|_| KeyError::SessionKeyBase64)?);
    if bytes.len() != EXPORTED_LEN {
        return Err(KeyError::SessionKeyLength(bytes.len()));
    }
    if bytes[0] != 1 {
        return Err(KeyError::SessionKeyVersion(bytes[0]));
    }
    Ok(bytes)
}

/// The u32 big-endian at bytes 1..5 of an exported session key.
pub fn first_message_index_of(session_key: &str) -> Result<u32, KeyError> {
    let bytes = decode_session_key(session_key)?;
    Ok(u32::from_be_bytes(
        bytes[1..5].try_into().expect("length checked"),
    ))
}

/// The true session ID: the Ed25519 key in bytes 133..165, unpadded base64.
pub fn session_id_of(session_key: &str) -> Result<String, KeyError> {
    let bytes = decode_session_key(session_key)?;
    Ok(crate::b64(&bytes[133..165]))
}

fn check_key32(what: &'static str, b64: &str) -> Result<(), KeyError> {
    match unb64(b64) {
        Ok(b) if b.len() == 32 => Ok(()),
        _ => Err(KeyError::BadKey(what)),
    }
}

/// Everything a restoring client relies on without checking it.
pub fn validate_exported_key(
    room_id: &str,
    session_id: &str,
    sender_key: &str,
    session_key: &str,
    sender_claimed_keys: &BTreeMap<String, String>,
) -> Result<(), KeyError> {
    if !room_id.starts_with('!') || !room_id.contains(':') {
        return Err(KeyError::RoomId);
    }
    let true_id = session_id_of(session_key)?;
    if true_id != session_id {
        return Err(KeyError::SessionIdMismatch(true_id));
    }
    check_key32("sender_key", sender_key)?;
    check_key32(
        "sender_claimed_keys.ed25519",
        sender_claimed_keys
            .get("ed25519")
            .map(String::as_str)
            .unwrap_or(""),
    )
}

/// SHA-256 over every field of a key, so that equal fingerprints mean equal keys. Lets `verify`
/// compare the store with the backup without plaintext keys leaving native code.
pub fn fingerprint(room_id: &str, session_id: &str, key: &BackedUpRoomKey) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(room_id.as_bytes());
    field(session_id.as_bytes());
    field(key.algorithm.as_bytes());
    field(key.sender_key.trim_end_matches('=').as_bytes());
    field(key.session_key.trim_end_matches('=').as_bytes());
    for (k, v) in &key.sender_claimed_keys {
        field(k.as_bytes());
        field(v.trim_end_matches('=').as_bytes());
    }
    field(b"chain");
    for k in &key.forwarding_curve25519_key_chain {
        field(k.as_bytes());
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_key(index: u32, signing: [u8; 32]) -> String {
        let mut b = vec![1u8];
        b.extend_from_slice(&index.to_be_bytes());
        b.extend_from_slice(&[7u8; 128]);
        b.extend_from_slice(&signing);
        crate::b64(&b)
    }

    #[test]
    fn index_and_session_id_come_from_the_key() {
        let sk = session_key(42, [9u8; 32]);
        assert_eq!(first_message_index_of(&sk).unwrap(), 42);
        assert_eq!(session_id_of(&sk).unwrap(), crate::b64(&[9u8; 32]));
        assert_eq!(
            first_message_index_of("AAAA").unwrap_err(),
            KeyError::SessionKeyLength(3)
        );
    }

    #[test]
    fn validation_catches_what_a_restore_would_not() {
        let sk = session_key(0, [9u8; 32]);
        let claimed: BTreeMap<String, String> =
            [("ed25519".to_owned(), crate::b64(&[1u8; 32]))].into();
        let sender = crate::b64(&[2u8; 32]);
        let sid = crate::b64(&[9u8; 32]);
        validate_exported_key("!r:s", &sid, &sender, &sk, &claimed).unwrap();
        assert!(matches!(
            validate_exported_key("!r:s", "wrong", &sender, &sk, &claimed),
            Err(KeyError::SessionIdMismatch(_))
        ));
        assert_eq!(
            validate_exported_key("r:s", &sid, &sender, &sk, &claimed),
            Err(KeyError::RoomId)
        );
        assert_eq!(
            validate_exported_key("!r:s", &sid, "short", &sk, &claimed),
            Err(KeyError::BadKey("sender_key"))
        );
        assert!(validate_exported_key("!r:s", &sid, &sender, &sk, &BTreeMap::new()).is_err());
    }

    #[test]
    fn fingerprints_see_every_field() {
        let key = |sk: &str, chain: Vec<String>| BackedUpRoomKey {
            algorithm: "m.megolm.v1.aes-sha2".into(),
            sender_key: "s".into(),
            session_key: Zeroizing::new(sk.into()),
            sender_claimed_keys: [("ed25519".to_owned(), "e".to_owned())].into(),
            forwarding_curve25519_key_chain: chain,
        };
        let a = fingerprint("!r:s", "id", &key("k1", vec![]));
        assert_eq!(a, fingerprint("!r:s", "id", &key("k1", vec![])));
        assert_ne!(a, fingerprint("!r:s", "id", &key("k2", vec![])));
        assert_ne!(a, fingerprint("!r:t", "id", &key("k1", vec![])));
        assert_ne!(a, fingerprint("!r:s", "id", &key("k1", vec!["c".into()])));
    }
}
