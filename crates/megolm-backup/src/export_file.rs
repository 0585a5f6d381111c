//! Element's "Export E2E room keys" file: a passphrase-encrypted JSON array of exported keys.
//! PBKDF2-HMAC-SHA-512 → AES-256-CTR key ‖ HMAC-SHA-256 key; body `0x01 ‖ salt ‖ iv ‖ rounds ‖
//! ciphertext ‖ mac`, base64 in lines between the BEGIN/END markers.

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::{Sha256, Sha512};
use zeroize::Zeroizing;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

const HEADER: &str = "-----BEGIN MEGOLM SESSION DATA-----";
const FOOTER: &str = "-----END MEGOLM SESSION DATA-----";
/// What Element uses; the spec asks for at least 100 000.
pub const DEFAULT_EXPORT_ROUNDS: u32 = 500_000;
const MAX_ROUNDS: u32 = 50_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("not a MEGOLM SESSION DATA file")]
    NotAnExport,
    #[error("the file is too short or of an unknown version")]
    Malformed,
    #[error("wrong passphrase, or the file was altered")]
    WrongPassphrase,
}

fn derive(passphrase: &str, salt: &[u8], rounds: u32) -> Zeroizing<[u8; 64]> {
    let mut keys = Zeroizing::new([0u8; 64]);
    pbkdf2::pbkdf2_hmac::<Sha512>(passphrase.as_bytes(), salt, rounds, keys.as_mut());
    keys
}

pub fn encrypt_export(plaintext: &[u8], passphrase: &str, rounds: u32) -> String {
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut iv);
    iv[8] &= 0x7f; // keeps the 64-bit counter half from wrapping, as the format requires
    let keys = derive(passphrase, &salt, rounds);
    let mut body = Vec::with_capacity(1 + 16 + 16 + 4 + plaintext.len() + 32);
    body.push(1);
    body.extend_from_slice(&salt);
    body.extend_from_slice(&iv);
    body.extend_from_slice(&rounds.to_be_bytes());
    let start = body.len();
    body.extend_from_slice(plaintext);
    Aes256Ctr::new(keys[..32].into(), (&iv).into()).apply_keystream(&mut body[start..]);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&keys[32..]).expect("any key length");
    mac.update(&body);
    body.extend_from_slice(&mac.finalize().into_bytes());
    let encoded = STANDARD.encode(&body);
    let mut out =
        String::with_capacity(encoded.len() + encoded.len() / 96 + HEADER.len() + FOOTER.len() + 4);
    out.push_str(HEADER);
    out.push('\n');
    for line in encoded.as_bytes().chunks(96) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(FOOTER);
    out.push('\n');
    out
}

pub fn decrypt_export(text: &str, passphrase: &str) -> Result<Zeroizing<Vec<u8>>, ExportError> {
    let start = text.find(HEADER).ok_or(ExportError::NotAnExport)? + HEADER.len();
    let end = text[start..].find(FOOTER).ok_or(ExportError::NotAnExport)? + start;
    let compact: String = text[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let body = STANDARD
        .decode(compact.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(&compact))
        .map_err(|_| ExportError::Malformed)?;
    if body.len() < 1 + 16 + 16 + 4 + 32 || body[0] != 1 {
        return Err(ExportError::Malformed);
    }
    let (signed, tag) = body.split_at(body.len() - 32);
    let salt = &signed[1..17];
    let iv: [u8; 16] = signed[17..33].try_into().expect("length checked");
    let rounds = u32::from_be_bytes(signed[33..37].try_into().expect("length checked"));
    if rounds == 0 || rounds > MAX_ROUNDS {
        return Err(ExportError::Malformed);
    }
    let keys = derive(passphrase, salt, rounds);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&keys[32..]).expect("any key length");
    mac.update(signed);
    mac.verify_slice(tag)
        .map_err(|_| ExportError::WrongPassphrase)?;
    let mut plaintext = Zeroizing::new(signed[37..].to_vec());
    Aes256Ctr::new(keys[..32].into(), (&iv).into()).apply_keystream(&mut plaintext);
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_wrong_passphrase_and_tampering() {
        let text = encrypt_export(b"[{\"room_id\":\"!r:s\"}]", "pw", 1000);
        assert!(text.starts_with(HEADER));
        assert_eq!(
            &*decrypt_export(&text, "pw").unwrap(),
            b"[{\"room_id\":\"!r:s\"}]"
        );
        assert_eq!(
            decrypt_export(&text, "other").unwrap_err(),
            ExportError::WrongPassphrase
        );
        let lines: Vec<&str> = text.lines().collect();
        let mut body = STANDARD.decode(lines[1..lines.len() - 1].concat()).unwrap();
        let n = body.len();
        body[n - 40] ^= 1;
        let tampered = format!("{HEADER}\n{}\n{FOOTER}\n", STANDARD.encode(&body));
        assert_eq!(
            decrypt_export(&tampered, "pw").unwrap_err(),
            ExportError::WrongPassphrase
        );
        assert_eq!(
            decrypt_export("hello", "pw").unwrap_err(),
            ExportError::NotAnExport
        );
        assert_eq!(
            decrypt_export(&format!("{HEADER}\nAAAA\n{FOOTER}"), "pw").unwrap_err(),
            ExportError::Malformed
        );
    }

    #[test]
    fn the_counter_bit_is_cleared() {
        for _ in 0..20 {
            let text = encrypt_export(b"x", "", 1);
            let lines: Vec<&str> = text.lines().collect();
            let body = STANDARD.decode(lines[1..lines.len() - 1].concat()).unwrap();
            assert_eq!(body[17 + 8] & 0x80, 0);
        }
    }
}
