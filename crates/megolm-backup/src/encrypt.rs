//! Per-session encryption (spec: curve25519-aes-sha2): a fresh ephemeral X25519 key per session,
//! HKDF-SHA-256 → AES-256-CBC key, HMAC key and IV, and the MAC of libolm's bug — HMAC over the
//! EMPTY string, truncated to 8 bytes — which every implementation keeps.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::OsRng;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::agreement::Agreement;
use crate::recovery_key::{BackupDecryptionKey, BackupPublicKey};
use crate::{b64, unb64};
use base64::engine::{general_purpose::STANDARD_NO_PAD, Engine};
use std::fmt::Write;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// `session_data` of a backed-up key: all three fields unpadded base64.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionData {
    pub ephemeral: String,
    pub ciphertext: String,
    pub mac: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("a field is not base64")]
    Base64,
    #[error("the ephemeral key is not 32 bytes")]
    EphemeralKey,
    #[error("MAC mismatch (wrong key, or a MAC not over the empty string)")]
    Mac,
    #[error("the ciphertext does not decrypt (bad padding)")]
    Padding,
}

struct Keys {
    aes: Zeroizing<[u8; 32]>,
    mac: Zeroizing<[u8; 32]>,
    iv: [u8; 16],
}

fn derive(shared: &[u8; 32]) -> Keys {
    let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), shared);
    let mut okm = Zeroizing::new([0u8; 80]);
    hkdf.expand(&[], okm.as_mut())
        .expect("80 bytes is a valid HKDF-SHA-256 length");
    let mut keys = Keys {
        aes: Zeroizing::new([0; 32]),
        mac: Zeroizing::new([0; 32]),
        iv: [0; 16],
    };
    keys.aes.copy_from_slice(&okm[..32]);
    keys.mac.copy_from_slice(&okm[32..64]);
    keys.iv.copy_from_slice(&okm[64..80]);
    keys
}

fn empty_mac(mac_key: &[u8; 32]) -> [u8; 8] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key length");
    mac.update(b"");
    let full = mac.finalize().into_bytes();
    full[..8].try_into().expect("32 ≥ 8")
}

/// Encrypts one `BackedUpRoomKey` JSON for the backup's public key, with a fresh ephemeral key.
/// For many sessions, [`BackupEncryptor`] does the same work in less than half the time.
pub fn encrypt_session(public_key: &BackupPublicKey, plaintext: &[u8]) -> SessionData {
    encrypt_with(
        StaticSecret::random_from_rng(OsRng),
        &Agreement::generic(public_key.0),
        plaintext,
    )
}

/// Encrypts one room key for the backup: the plaintext JSON exists only in a wiped buffer.
pub fn encrypt_room_key(public_key: &BackupPublicKey, key: &crate::BackedUpRoomKey) -> SessionData {
    encrypt_session(public_key, &crate::to_json_wiped(key))
}

/// A backup's public key prepared for encrypting many sessions (a table of its multiples, built
/// once in about a millisecond, see `agreement.rs`). Same output format as [`encrypt_session`].
pub struct BackupEncryptor {
    agreement: Agreement,
}

impl BackupEncryptor {
    pub fn new(public_key: &BackupPublicKey) -> Self {
        BackupEncryptor {
            agreement: Agreement::precomputed(public_key.0),
        }
    }

    pub fn public_key(&self) -> BackupPublicKey {
        BackupPublicKey(*self.agreement.key())
    }

    /// [`encrypt_session`] with the prepared key.
    pub fn encrypt_session(&self, plaintext: &[u8]) -> SessionData {
        encrypt_with(
            StaticSecret::random_from_rng(OsRng),
            &self.agreement,
            plaintext,
        )
    }

    /// Encrypts one session and appends its member of a room's `sessions` object in an upload
    /// body, `"<session ID>":{KeyBackupData}`, to `out`: the same text serde_json writes for
    /// [`KeyBackupData`](crate::KeyBackupData), written directly (a backup of a million keys
    /// would otherwise build and escape three base64 strings per key only to copy them).
    pub fn append_backup_member(&self, out: &mut String, session_id: &str, first_message_index: u32, forwarded_count: u32, plaintext: &[u8]) {
        let e = encrypt_raw(StaticSecret::random_from_rng(OsRng), &self.agreement, plaintext);
        crate::backup_data::append_json_string(out, session_id);
        // Writing into a String cannot fail.
        let _ = write!(out, ":{{\"first_message_index\":{first_message_index},\"forwarded_count\":{forwarded_count}");
        out.push_str(",\"is_verified\":false,\"session_data\":{\"ephemeral\":\"");
        // Base64 needs no escaping in JSON.
        STANDARD_NO_PAD.encode_string(e.ephemeral.as_bytes(), out);
        out.push_str("\",\"ciphertext\":\"");
        STANDARD_NO_PAD.encode_string(&e.ciphertext, out);
        out.push_str("\",\"mac\":\"");
        STANDARD_NO_PAD.encode_string(e.mac, out);
        out.push_str("\"}}");
    }
}

/// One session's `session_data` before its base64.
struct Encrypted {
    ephemeral: PublicKey,
    ciphertext: Vec<u8>,
    mac: [u8; 8],
}

fn encrypt_raw(ephemeral: StaticSecret, agreement: &Agreement, plaintext: &[u8]) -> Encrypted {
    let ephemeral_public = PublicKey::from(&ephemeral);
    let shared = agreement.shared_secret(&ephemeral);
    let keys = derive(&shared);
    let ciphertext = Aes256CbcEnc::new(keys.aes.as_ref().into(), (&keys.iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    Encrypted {
        ephemeral: ephemeral_public,
        ciphertext,
        mac: empty_mac(&keys.mac),
    }
}

fn encrypt_with(ephemeral: StaticSecret, agreement: &Agreement, plaintext: &[u8]) -> SessionData {
    let e = encrypt_raw(ephemeral, agreement, plaintext);
    SessionData {
        ephemeral: b64(e.ephemeral.as_bytes()),
        ciphertext: b64(&e.ciphertext),
        mac: b64(&e.mac),
    }
}

pub fn decrypt_session(
    key: &BackupDecryptionKey,
    data: &SessionData,
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let ephemeral: [u8; 32] = unb64(&data.ephemeral)
        .map_err(|_| DecryptError::Base64)?
        .try_into()
        .map_err(|_| DecryptError::EphemeralKey)?;
    let ciphertext = unb64(&data.ciphertext).map_err(|_| DecryptError::Base64)?;
    let mac = unb64(&data.mac).map_err(|_| DecryptError::Base64)?;
    let shared = Zeroizing::new(
        key.secret()
            .diffie_hellman(&PublicKey::from(ephemeral))
            .to_bytes(),
    );
    let keys = derive(&shared);
    let expected = empty_mac(&keys.mac);
    // constant-time comparison of the truncated MAC
    if mac.len() != expected.len()
        || mac
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return Err(DecryptError::Mac);
    }
    Aes256CbcDec::new(keys.aes.as_ref().into(), (&keys.iv).into())
        .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| DecryptError::Padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/vectors/backup-vector.json")).unwrap()
    }

    #[test]
    fn decrypts_the_reference_vector() {
        let v = vector();
        let key =
            BackupDecryptionKey::from_base64(v["private_key_base64"].as_str().unwrap()).unwrap();
        let data: SessionData = serde_json::from_value(v["session_data"].clone()).unwrap();
        let plain = decrypt_session(&key, &data).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(json["algorithm"], "m.megolm.v1.aes-sha2");
        let session_key = json["session_key"].as_str().unwrap();
        assert_eq!(
            crate::session_id_of(session_key).unwrap(),
            v["session_id"].as_str().unwrap()
        );
    }

    #[test]
    fn hkdf_intermediates_match_the_reference() {
        let v = vector();
        let key =
            BackupDecryptionKey::from_base64(v["private_key_base64"].as_str().unwrap()).unwrap();
        let eph: [u8; 32] = unb64(v["session_data"]["ephemeral"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let shared = key
            .secret()
            .diffie_hellman(&PublicKey::from(eph))
            .to_bytes();
        let keys = derive(&shared);
        assert!(hex(&keys.aes[..]).starts_with("b03d3eda5978b4f5"));
        assert_eq!(hex(&keys.iv), "4e8edbea043ee0d34da713a3a85c9c23");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn round_trip_with_a_fresh_ephemeral_each_time() {
        let key = BackupDecryptionKey::generate();
        let a = encrypt_session(&key.public_key(), b"{\"x\":1}");
        let b = encrypt_session(&key.public_key(), b"{\"x\":1}");
        assert_ne!(a.ephemeral, b.ephemeral);
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(&*decrypt_session(&key, &a).unwrap(), b"{\"x\":1}");
        assert_eq!(a.mac.len(), 11);
        assert!(!a.ciphertext.ends_with('='));
        let other = BackupDecryptionKey::generate();
        assert_eq!(decrypt_session(&other, &a).unwrap_err(), DecryptError::Mac);
    }

    #[test]
    fn the_encryptor_writes_what_the_generic_path_writes() {
        let v = vector();
        let key =
            BackupDecryptionKey::from_base64(v["private_key_base64"].as_str().unwrap()).unwrap();
        let public_key =
            BackupPublicKey::from_base64(v["public_key_base64"].as_str().unwrap()).unwrap();
        let encryptor = BackupEncryptor::new(&public_key);
        assert_eq!(encryptor.public_key(), public_key);
        for _ in 0..20 {
            // The same ephemeral key through both agreements: byte-identical session data.
            let ephemeral = StaticSecret::random_from_rng(OsRng);
            let generic = encrypt_with(
                ephemeral.clone(),
                &Agreement::generic(public_key.0),
                b"{\"x\":1}",
            );
            let fast = encrypt_with(ephemeral, &encryptor.agreement, b"{\"x\":1}");
            assert_eq!(generic, fast);
        }
        let data = encryptor.encrypt_session(b"{\"x\":2}");
        assert_eq!(&*decrypt_session(&key, &data).unwrap(), b"{\"x\":2}");
    }

    /// The member written directly is the text serde_json writes for the same entry, and its
    /// session data decrypts to the plaintext; session IDs that need escaping are escaped.
    #[test]
    fn backup_members_are_what_serde_json_writes() {
        let key = BackupDecryptionKey::generate();
        let encryptor = BackupEncryptor::new(&key.public_key());
        for (session_id, index, forwarded) in [("AbC+/09", 0, 0), ("", 4_294_967_295, 1), ("a\"b\\c\nd\u{7f}é", 10, 0)] {
            let mut out = String::from("{");
            encryptor.append_backup_member(&mut out, session_id, index, forwarded, b"{\"k\":3}");
            out.push('}');
            let parsed: std::collections::BTreeMap<String, crate::KeyBackupData> = serde_json::from_str(&out).unwrap();
            let data = &parsed[session_id];
            assert_eq!((data.first_message_index, data.forwarded_count, data.is_verified), (index, forwarded, false));
            assert_eq!(&*decrypt_session(&key, &data.session_data).unwrap(), b"{\"k\":3}");
            assert_eq!(out, serde_json::to_string(&parsed).unwrap());
        }
    }

    #[test]
    fn a_mac_over_the_ciphertext_is_rejected() {
        let key = BackupDecryptionKey::generate();
        let mut data = encrypt_session(&key.public_key(), b"secret");
        // what a "fixed" implementation would send: HMAC over the ciphertext
        let eph: [u8; 32] = unb64(&data.ephemeral).unwrap().try_into().unwrap();
        let keys = derive(
            &key.secret()
                .diffie_hellman(&PublicKey::from(eph))
                .to_bytes(),
        );
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(keys.mac.as_ref()).unwrap();
        mac.update(&unb64(&data.ciphertext).unwrap());
        data.mac = b64(&mac.finalize().into_bytes()[..8]);
        assert_eq!(decrypt_session(&key, &data).unwrap_err(), DecryptError::Mac);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let key = BackupDecryptionKey::generate();
        for (e, c, m) in [
            ("", "", ""),
            ("!!", "AAAA", "AAAA"),
            ("AAAA", "AAAA", "AAAAAAAAAAA"),
        ] {
            let data = SessionData {
                ephemeral: e.into(),
                ciphertext: c.into(),
                mac: m.into(),
            };
            assert!(decrypt_session(&key, &data).is_err());
        }
    }
}
