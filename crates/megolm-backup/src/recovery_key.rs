//! The backup decryption key and its two written forms: the spaced base58 "recovery key"
//! (`0x8B 0x01 ‖ key ‖ parity`) and plain base64 (what older bot builds read).

use rand_core::{OsRng, RngCore};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::{b64, unb64};

const PREFIX: [u8; 2] = [0x8B, 0x01];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFormatError {
    #[error("not base58")]
    NotBase58,
    #[error("decodes to {0} bytes, a recovery key has 35")]
    WrongLength(usize),
    #[error("does not start with the recovery key prefix")]
    WrongPrefix,
    #[error("parity check failed (a mistyped character?)")]
    Parity,
    #[error("not base64 of a 32-byte key")]
    NotBase64Key,
}

/// The 32-byte X25519 secret of a backup. Wiped on drop; never printed by `Debug`.
pub struct BackupDecryptionKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for BackupDecryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupDecryptionKey(..)")
    }
}

impl BackupDecryptionKey {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(bytes.as_mut());
        BackupDecryptionKey { bytes }
    }

    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        let key = BackupDecryptionKey {
            bytes: Zeroizing::new(bytes),
        };
        bytes.zeroize();
        key
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyFormatError> {
        let decoded = Zeroizing::new(unb64(text.trim()).map_err(|_| KeyFormatError::NotBase64Key)?);
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KeyFormatError::NotBase64Key)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Whitespace anywhere is ignored (keys are shown in groups of four).
    pub fn from_recovery_key(text: &str) -> Result<Self, KeyFormatError> {
        let compact: Zeroizing<String> =
            Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
        let decoded = Zeroizing::new(
            bs58::decode(compact.as_bytes())
                .into_vec()
                .map_err(|_| KeyFormatError::NotBase58)?,
        );
        if decoded.len() != 35 {
            return Err(KeyFormatError::WrongLength(decoded.len()));
        }
        if decoded[..2] != PREFIX {
            return Err(KeyFormatError::WrongPrefix);
        }
        if decoded.iter().fold(0u8, |acc, b| acc ^ b) != 0 {
            return Err(KeyFormatError::Parity);
        }
        let bytes: [u8; 32] = decoded[2..34].try_into().expect("length checked");
        Ok(Self::from_bytes(bytes))
    }

    pub fn to_recovery_key(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(35));
        raw.extend_from_slice(&PREFIX);
        raw.extend_from_slice(self.bytes.as_ref());
        let parity = raw.iter().fold(0u8, |acc, b| acc ^ b);
        raw.push(parity);
        let encoded = Zeroizing::new(bs58::encode(raw.as_slice()).into_string());
        let mut spaced = String::with_capacity(encoded.len() + encoded.len() / 4);
        for (i, c) in encoded.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                spaced.push(' ');
            }
            spaced.push(c);
        }
        Zeroizing::new(spaced)
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(b64(self.bytes.as_ref()))
    }

    pub fn public_key(&self) -> BackupPublicKey {
        BackupPublicKey(PublicKey::from(&self.secret()))
    }

    pub(crate) fn secret(&self) -> StaticSecret {
        StaticSecret::from(*self.bytes)
    }
}

/// A text a user hands us: the recovery key (base58, with or without spaces) or base64.
pub fn parse_any(text: &str) -> Result<BackupDecryptionKey, KeyFormatError> {
    let trimmed = text.trim();
    match BackupDecryptionKey::from_recovery_key(trimmed) {
        Ok(k) => Ok(k),
        Err(base58_err) => BackupDecryptionKey::from_base64(trimmed).map_err(|_| base58_err),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BackupPublicKey(pub(crate) PublicKey);

impl std::fmt::Debug for BackupPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackupPublicKey({})", self.to_base64())
    }
}

impl BackupPublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyFormatError> {
        let bytes: [u8; 32] = unb64(text.trim())
            .map_err(|_| KeyFormatError::NotBase64Key)?
            .try_into()
            .map_err(|_| KeyFormatError::NotBase64Key)?;
        Ok(BackupPublicKey(PublicKey::from(bytes)))
    }

    /// Unpadded: exactly 43 characters, what bots compare as a string.
    pub fn to_base64(&self) -> String {
        b64(self.0.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [(&str, &str); 2] = [
        (
            "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo",
            "EsTc LW2K PGiF wKEA 3As5 g5c4 BXwk qeeJ ZJV8 Q9fu gUMN UE4d",
        ),
        (
            "DwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo",
            "EsT5 Sd5m mEXs NQYE ibRe 3q9E 4aXW rHih 5f9J 6rU6 AfwY mASR",
        ),
    ];

    #[test]
    fn known_recovery_keys_both_ways() {
        for (b64key, recovery) in KNOWN {
            let key = BackupDecryptionKey::from_base64(b64key).unwrap();
            assert_eq!(*key.to_recovery_key(), recovery);
            assert_eq!(
                *BackupDecryptionKey::from_recovery_key(recovery)
                    .unwrap()
                    .to_base64(),
                b64key
            );
        }
        let counting: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            *BackupDecryptionKey::from_bytes(counting).to_recovery_key(),
            "EsSz ykH7 LCZx 7Cae cmKD wcmY JRXi Ybtu 8iQ3 t8Ez nRwK pUY1"
        );
        assert_eq!(
            *BackupDecryptionKey::from_bytes([0; 32]).to_recovery_key(),
            "EsSz ygLv VP1b xF1C v7kE eBQx MxDP buG5 w25T L3b6 hfyG Kkrd"
        );
        assert_eq!(
            *BackupDecryptionKey::from_bytes([0xff; 32]).to_recovery_key(),
            "EsUK 2TRo ZKTB CKmv wEDA o6rq tTYu aKzp eJ9f 95nM 3VHk Xbnq"
        );
    }

    #[test]
    fn known_public_key_and_parity_failure() {
        let key = BackupDecryptionKey::from_base64(KNOWN[0].0).unwrap();
        assert_eq!(
            key.public_key().to_base64(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"
        );
        assert_eq!(key.public_key().to_base64().len(), 43);
        let broken = "EsTc LW2K PGiF wKEA 3As5 g5c4 BXwk qeeJ ZJV8 Q9fu gUMN UE4e";
        assert_eq!(
            BackupDecryptionKey::from_recovery_key(broken).unwrap_err(),
            KeyFormatError::Parity
        );
    }

    #[test]
    fn whitespace_is_ignored_and_either_form_parses() {
        let compact: String = KNOWN[0].1.split_whitespace().collect();
        assert_eq!(
            *BackupDecryptionKey::from_recovery_key(&format!("\n{compact}\t"))
                .unwrap()
                .to_base64(),
            KNOWN[0].0
        );
        assert_eq!(*parse_any(KNOWN[0].1).unwrap().to_base64(), KNOWN[0].0);
        assert_eq!(*parse_any(KNOWN[0].0).unwrap().to_base64(), KNOWN[0].0);
        assert_eq!(
            *parse_any(&format!("{}=", KNOWN[0].0)).unwrap().to_base64(),
            KNOWN[0].0
        );
        assert!(parse_any("EsTc").is_err());
        assert_eq!(
            BackupDecryptionKey::from_recovery_key("1111").unwrap_err(),
            KeyFormatError::WrongLength(4)
        );
    }

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let a = BackupDecryptionKey::generate();
        let b = BackupDecryptionKey::generate();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let rk = a.to_recovery_key();
        assert_eq!(rk.len(), 59);
        assert!(rk.starts_with("Es"));
        assert_eq!(
            BackupDecryptionKey::from_recovery_key(&rk)
                .unwrap()
                .as_bytes(),
            a.as_bytes()
        );
        assert_eq!(format!("{a:?}"), "BackupDecryptionKey(..)");
    }
}
