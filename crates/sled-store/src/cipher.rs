//! The store cipher: a random 64-byte key pair wrapped under a passphrase, kept in the default tree.
//! Only the first half (the value encryption key) is needed to read values; the second half seeds
//! the keyed hashes of the Sled keys, which a reader never has to reverse.

use chacha20poly1305::{aead::Aead, AeadInPlace, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Real stores use 200 000 rounds; anything far beyond is damage, not a setting (and would hang us).
const MAX_KDF_ROUNDS: u32 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherFormat {
    /// matrix-sdk-store-encryption 0.2 (bot-sdk 0.6.0–0.6.5): `serde_json`.
    Json,
    /// bot-sdk 0.6.6–0.7.1: `rmp_serde::to_vec_named`.
    MessagePack,
}

impl CipherFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            CipherFormat::Json => "json",
            CipherFormat::MessagePack => "msgpack",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CipherError {
    #[error("the passphrase does not unlock the store cipher")]
    WrongPassphrase,
    #[error("{0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct EncryptedStoreCipher {
    kdf_info: KdfInfo,
    ciphertext_info: CipherTextInfo,
}

#[derive(Deserialize)]
enum KdfInfo {
    Pbkdf2ToChaCha20Poly1305 { rounds: u32, kdf_salt: Vec<u8> },
}

#[derive(Deserialize)]
enum CipherTextInfo {
    ChaCha20Poly1305 { nonce: Vec<u8>, ciphertext: Vec<u8> },
}

/// An encrypted value as the store writes it: `{"version":1,"ciphertext":[..],"nonce":[..]}`.
#[derive(Deserialize)]
pub struct EncryptedValue {
    pub version: u8,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

pub struct StoreCipher {
    encryption_key: Zeroizing<[u8; 32]>,
    format: CipherFormat,
}

impl std::fmt::Debug for StoreCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCipher")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl StoreCipher {
    /// Unwraps the exported cipher with the passphrase (PBKDF2-HMAC-SHA256, then XChaCha20-Poly1305).
    pub fn unlock(exported: &[u8], passphrase: &str) -> Result<Self, CipherError> {
        let (parsed, format) = match exported.first() {
            Some(b'{') => (
                serde_json::from_slice::<EncryptedStoreCipher>(exported)
                    .map_err(|e| CipherError::Malformed(format!("JSON store cipher: {e}")))?,
                CipherFormat::Json,
            ),
            Some(_) => (
                rmp_serde::from_slice::<EncryptedStoreCipher>(exported).map_err(|e| {
                    CipherError::Malformed(format!("MessagePack store cipher: {e}"))
                })?,
                CipherFormat::MessagePack,
            ),
            None => return Err(CipherError::Malformed("empty store cipher".into())),
        };
        let KdfInfo::Pbkdf2ToChaCha20Poly1305 { rounds, kdf_salt } = parsed.kdf_info;
        let CipherTextInfo::ChaCha20Poly1305 { nonce, ciphertext } = parsed.ciphertext_info;
        if rounds == 0 || rounds > MAX_KDF_ROUNDS {
            return Err(CipherError::Malformed(format!(
                "implausible KDF round count {rounds}"
            )));
        }
        if nonce.len() != 24 {
            return Err(CipherError::Malformed(format!(
                "nonce of {} bytes, expected 24",
                nonce.len()
            )));
        }
        let mut wrapping_key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            passphrase.as_bytes(),
            &kdf_salt,
            rounds,
            wrapping_key.as_mut(),
        );
        let aead = XChaCha20Poly1305::new(wrapping_key.as_ref().into());
        let keys = Zeroizing::new(
            aead.decrypt(XNonce::from_slice(&nonce), ciphertext.as_slice())
                .map_err(|_| CipherError::WrongPassphrase)?,
        );
        if keys.len() != 64 {
            return Err(CipherError::Malformed(format!(
                "unwrapped key of {} bytes, expected 64",
                keys.len()
            )));
        }
        let mut encryption_key = Zeroizing::new([0u8; 32]);
        encryption_key.copy_from_slice(&keys[..32]);
        Ok(StoreCipher {
            encryption_key,
            format,
        })
    }

    pub fn format(&self) -> CipherFormat {
        self.format
    }

    /// Decrypts one value. `None` means the AEAD check failed.
    pub fn decrypt(&self, value: &EncryptedValue) -> Option<Zeroizing<Vec<u8>>> {
        if value.nonce.len() != 24 {
            return None;
        }
        let aead = XChaCha20Poly1305::new(self.encryption_key.as_ref().into());
        aead.decrypt(
            XNonce::from_slice(&value.nonce),
            value.ciphertext.as_slice(),
        )
        .ok()
        .map(Zeroizing::new)
    }

    /// Decrypts `buffer` (ciphertext ‖ 16-byte tag) in place: on success it holds the plaintext
    /// and nothing else, on failure (`false`) it is left as it was. No copy of the plaintext is
    /// made and the buffer never grows, so wiping it wipes the only copy.
    pub(crate) fn decrypt_in_place(&self, nonce: &[u8; 24], buffer: &mut Vec<u8>) -> bool {
        let Some(tag_at) = buffer.len().checked_sub(16) else {
            return false;
        };
        let tag = *Tag::from_slice(&buffer[tag_at..]);
        let aead = XChaCha20Poly1305::new(self.encryption_key.as_ref().into());
        let ok = aead
            .decrypt_in_place_detached(XNonce::from_slice(nonce), b"", &mut buffer[..tag_at], &tag)
            .is_ok();
        if ok {
            buffer.truncate(tag_at);
        }
        ok
    }

    #[cfg(test)]
    pub(crate) fn from_key(key: [u8; 32]) -> Self {
        StoreCipher {
            encryption_key: Zeroizing::new(key),
            format: CipherFormat::Json,
        }
    }

    #[cfg(test)]
    pub(crate) fn encrypt_for_test(&self, plaintext: &[u8], nonce: [u8; 24]) -> Vec<u8> {
        let aead = XChaCha20Poly1305::new(self.encryption_key.as_ref().into());
        let ciphertext = aead.encrypt(XNonce::from_slice(&nonce), plaintext).unwrap();
        serde_json::to_vec(
            &serde_json::json!({"version": 1, "ciphertext": ciphertext, "nonce": nonce.to_vec()}),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(passphrase: &str, keys: &[u8; 64], rounds: u32) -> serde_json::Value {
        let salt = [7u8; 32];
        let nonce = [9u8; 24];
        let mut k = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), &salt, rounds, &mut k);
        let ct = XChaCha20Poly1305::new((&k).into())
            .encrypt(XNonce::from_slice(&nonce), keys.as_slice())
            .unwrap();
        serde_json::json!({
            "kdf_info": {"Pbkdf2ToChaCha20Poly1305": {"rounds": rounds, "kdf_salt": salt.to_vec()}},
            "ciphertext_info": {"ChaCha20Poly1305": {"nonce": nonce.to_vec(), "ciphertext": ct}},
        })
    }

    #[test]
    fn unlocks_json_and_msgpack_and_rejects_a_wrong_passphrase() {
        let keys = [42u8; 64];
        let json = serde_json::to_vec(&wrap("", &keys, 10)).unwrap();
        let cipher = StoreCipher::unlock(&json, "").unwrap();
        assert_eq!(cipher.format(), CipherFormat::Json);
        assert_eq!(*cipher.encryption_key, [42u8; 32]);
        assert_eq!(
            StoreCipher::unlock(&json, "nope").unwrap_err(),
            CipherError::WrongPassphrase
        );

        let msgpack = rmp_serde::to_vec_named(&wrap("pw", &keys, 10)).unwrap();
        let cipher = StoreCipher::unlock(&msgpack, "pw").unwrap();
        assert_eq!(cipher.format(), CipherFormat::MessagePack);
    }

    #[test]
    fn damaged_ciphers_are_classified_not_panics() {
        assert!(matches!(
            StoreCipher::unlock(b"", ""),
            Err(CipherError::Malformed(_))
        ));
        assert!(matches!(
            StoreCipher::unlock(b"{\"kdf_info\":", ""),
            Err(CipherError::Malformed(_))
        ));
        assert!(matches!(
            StoreCipher::unlock(&[0x82, 0xff, 0x00], ""),
            Err(CipherError::Malformed(_))
        ));
        let absurd = serde_json::to_vec(&wrap("", &[1u8; 64], 10)).unwrap();
        let absurd = String::from_utf8(absurd)
            .unwrap()
            .replace("\"rounds\":10", "\"rounds\":4000000000");
        assert!(matches!(
            StoreCipher::unlock(absurd.as_bytes(), ""),
            Err(CipherError::Malformed(_))
        ));
    }
}
