//! The store cipher: a random 64-byte key pair wrapped under a passphrase, kept in the default tree.
//! Only the first half (the value encryption key) is needed to read values; the second half seeds
//! the keyed hashes of the Sled keys, which a reader never has to reverse.

use std::mem::MaybeUninit;

use chacha20::cipher::consts::U10;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

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
    /// How an exported cipher was serialized: a JSON object starts with `{`, a MessagePack map of
    /// named fields does not.
    pub fn of_export(exported: &[u8]) -> Option<CipherFormat> {
        match exported.first()? {
            b'{' => Some(CipherFormat::Json),
            _ => Some(CipherFormat::MessagePack),
        }
    }

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
        let (parsed, format) = match CipherFormat::of_export(exported) {
            Some(CipherFormat::Json) => (
                serde_json::from_slice::<EncryptedStoreCipher>(exported)
                    .map_err(|e| CipherError::Malformed(format!("JSON store cipher: {e}")))?,
                CipherFormat::Json,
            ),
            Some(CipherFormat::MessagePack) => (
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
        let nonce: [u8; 24] = nonce.as_slice().try_into().expect("checked above");
        let keys = open_copy(&wrapping_key, &nonce, &ciphertext).ok_or(CipherError::WrongPassphrase)?;
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
        open_copy(&self.encryption_key, value.nonce.as_slice().try_into().ok()?, &value.ciphertext)
    }

    /// Decrypts `buffer` (ciphertext ‖ 16-byte tag) in place: on success it holds the plaintext
    /// and nothing else; on failure (`false`) its bytes are unspecified (ring overwrites them). No
    /// copy of the plaintext is made and the buffer never grows, so wiping it wipes the only copy.
    pub(crate) fn decrypt_in_place(&self, nonce: &[u8; 24], buffer: &mut Vec<u8>) -> bool {
        match open_in_place(&self.encryption_key, nonce, buffer) {
            Some(len) => {
                buffer.truncate(len);
                true
            }
            None => false,
        }
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
        use chacha20poly1305::{aead::Aead, KeyInit, XChaCha20Poly1305, XNonce};
        let aead = XChaCha20Poly1305::new(self.encryption_key.as_ref().into());
        let ciphertext = aead.encrypt(XNonce::from_slice(&nonce), plaintext).unwrap();
        serde_json::to_vec(
            &serde_json::json!({"version": 1, "ciphertext": ciphertext, "nonce": nonce.to_vec()}),
        )
        .unwrap()
    }
}

/// XChaCha20-Poly1305, what matrix-sdk-store-encryption seals the cipher and every value with,
/// opened in place: `sealed` is ciphertext ‖ 16-byte tag. Returns the plaintext's length (the
/// plaintext then starts `sealed`), or `None` when the tag does not match.
///
/// Through ring's ChaCha20-Poly1305 (assembly): 0.76 µs for a 1.2 KB store value against 1.81 µs
/// with RustCrypto's chacha20poly1305, whose Poly1305 is the larger part of decoding a value.
/// XChaCha20 is ChaCha20 under the subkey HChaCha20(key, nonce[..16]) with the nonce
/// 0⁴ ‖ nonce[16..]; RustCrypto's XChaCha20Poly1305 is the tests' oracle.
fn open_in_place(key: &[u8; 32], nonce: &[u8; 24], sealed: &mut [u8]) -> Option<usize> {
    let mut block = chacha20::hchacha::<U10>(key.into(), nonce[..16].into());
    let subkey = Zeroizing::new(<[u8; 32]>::from(block));
    block.as_mut_slice().zeroize();
    // ring keeps its keys without wiping them: the key lives in a MaybeUninit (never dropped, may
    // hold any bytes), whose bytes are overwritten after use. As for any Rust value, the moves on
    // the way there may leave copies on the stack, which later calls overwrite.
    let mut ring_key = MaybeUninit::new(LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &*subkey).ok()?));
    let mut ietf_nonce = [0u8; 12];
    ietf_nonce[4..].copy_from_slice(&nonce[16..]);
    // SAFETY: initialized on the line above, not yet wiped.
    let opened = unsafe { ring_key.assume_init_ref() }
        .open_in_place(Nonce::assume_unique_for_key(ietf_nonce), Aad::empty(), sealed)
        .map(|plaintext| plaintext.len())
        .ok();
    // SAFETY: the slice covers exactly the MaybeUninit's own bytes, which it may hold in any state.
    unsafe {
        std::slice::from_raw_parts_mut(ring_key.as_mut_ptr().cast::<MaybeUninit<u8>>(), std::mem::size_of::<LessSafeKey>())
    }
    .zeroize();
    opened
}

/// [`open_in_place`] on a wiped copy of `sealed`.
fn open_copy(key: &[u8; 32], nonce: &[u8; 24], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(sealed.to_vec());
    let len = open_in_place(key, nonce, &mut buffer)?;
    buffer.truncate(len);
    Some(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::{aead::Aead, KeyInit, XChaCha20Poly1305, XNonce};

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

    /// A small deterministic generator: the cases are the same on every run.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn fill(&mut self, bytes: &mut [u8]) {
            for b in bytes {
                *b = self.next() as u8;
            }
        }
    }

    #[test]
    fn opening_agrees_with_rustcrypto_xchacha20_poly1305() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for len in (0..300).chain([1024, 1200, 1201, 4096, 5000]) {
            let (mut key, mut nonce) = ([0u8; 32], [0u8; 24]);
            rng.fill(&mut key);
            rng.fill(&mut nonce);
            let mut plaintext = vec![0u8; len];
            rng.fill(&mut plaintext);
            let sealed = XChaCha20Poly1305::new((&key).into()).encrypt(XNonce::from_slice(&nonce), plaintext.as_slice()).unwrap();
            let cipher = StoreCipher::from_key(key);

            let mut buffer = sealed.clone();
            assert!(cipher.decrypt_in_place(&nonce, &mut buffer), "length {len}");
            assert_eq!(buffer, plaintext, "length {len}");
            let value = EncryptedValue { version: 1, ciphertext: sealed.clone(), nonce: nonce.to_vec() };
            assert_eq!(cipher.decrypt(&value).as_deref(), Some(&plaintext), "length {len}");

            // Any flipped bit (ciphertext or tag), the other half of the nonce, or another key fails.
            let mut flipped = sealed.clone();
            let bit = rng.next() as usize % (8 * flipped.len());
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(!cipher.decrypt_in_place(&nonce, &mut flipped), "length {len}, bit {bit}");
            for at in [0, 23] {
                let mut other_nonce = nonce;
                other_nonce[at] ^= 0x80;
                assert!(!cipher.decrypt_in_place(&other_nonce, &mut sealed.clone()), "length {len}, nonce byte {at}");
            }
            key[31] ^= 1;
            assert!(!StoreCipher::from_key(key).decrypt_in_place(&nonce, &mut sealed.clone()), "length {len}");
        }
        // Shorter than a tag, and a nonce of the wrong length.
        let cipher = StoreCipher::from_key([1; 32]);
        assert!(!cipher.decrypt_in_place(&[0; 24], &mut vec![0u8; 15]));
        assert!(cipher.decrypt(&EncryptedValue { version: 1, ciphertext: vec![0; 40], nonce: vec![0; 12] }).is_none());
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
