//! Backup-key and backup-entry functions for JavaScript: thin conversions around `megolm-backup`.

use megolm_backup::{
    decrypt_session, fingerprint, BackedUpRoomKey, BackupDecryptionKey, BackupEncryptor,
    ExportedRoomKey, SessionData as CoreSessionData,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use rayon::prelude::*;

use crate::errors::{coded, invalid_argument};

#[napi(object)]
pub struct BackupKey {
    /// The 32-byte private key (backup-private-key.bin).
    pub private_key: Buffer,
    /// 43-character unpadded base64: what `auth_data.public_key` must say.
    pub public_key: String,
    /// The spaced base58 recovery key ("EsXX XXXX ...").
    pub recovery_key: String,
    /// The same private key as unpadded base64, for older bot builds.
    pub private_key_base64: String,
}

fn backup_key(key: &BackupDecryptionKey) -> BackupKey {
    BackupKey {
        private_key: Buffer::from(key.as_bytes().to_vec()),
        public_key: key.public_key().to_base64(),
        recovery_key: key.to_recovery_key().to_string(),
        private_key_base64: key.to_base64().to_string(),
    }
}

/// A fresh backup key from the OS CSPRNG.
#[napi]
pub fn generate_backup_key() -> BackupKey {
    backup_key(&BackupDecryptionKey::generate())
}

#[napi]
pub fn backup_key_from_private_key(private_key: Buffer) -> Result<BackupKey> {
    let bytes: [u8; 32] = private_key
        .as_ref()
        .try_into()
        .map_err(|_| invalid_argument("a backup private key has 32 bytes"))?;
    Ok(backup_key(&BackupDecryptionKey::from_bytes(bytes)))
}

/// Either form a user may hand us: the spaced base58 recovery key or base64.
#[napi]
pub fn backup_key_from_text(text: String) -> Result<BackupKey> {
    let key = megolm_backup::parse_any(&text).map_err(|e| {
        coded(
            "BACKUP_KEY_MISMATCH",
            format!("not a valid recovery key: {e}"),
            "check the recovery key",
        )
    })?;
    Ok(backup_key(&key))
}

#[napi(object)]
#[derive(Clone)]
pub struct SessionData {
    pub ephemeral: String,
    pub ciphertext: String,
    pub mac: String,
}

/// One encrypted key as it goes into a request body, with the room it is filed under.
pub(crate) struct BackupEntry {
    pub room_id: String,
    /// `"<session ID>":{"first_message_index":…,"forwarded_count":…,"is_verified":false,"session_data":{…}}`:
    /// the session's member of the room's `sessions` object, made here on the encryption threads,
    /// so that JavaScript only splices text into request bodies.
    pub fragment: String,
}

/// `first_message_index` is the key's (bytes 1..5 of its session key), which the source already
/// knows: a key exported at index n starts at n. The key is consumed: its room ID moves into the
/// entry.
pub(crate) fn backup_entry(
    encryptor: &BackupEncryptor,
    k: ExportedRoomKey,
    forwarded: bool,
    first_message_index: u32,
) -> BackupEntry {
    let mut fragment = String::with_capacity(1024);
    encryptor.append_backup_member(&mut fragment, &k.session_id, first_message_index, u32::from(forwarded), &k.backed_up_json());
    BackupEntry { room_id: k.room_id, fragment }
}

pub(crate) fn key_digest(k: &ExportedRoomKey) -> String {
    hex::encode(key_digest_bytes(k))
}

pub(crate) fn key_digest_bytes(k: &ExportedRoomKey) -> [u8; 32] {
    fingerprint(&k.room_id, &k.session_id, &k.backed_up())
}

#[napi(object)]
pub struct BackupEntryIn {
    pub room_id: String,
    pub session_id: String,
    pub session_data: SessionData,
}

#[napi(object)]
pub struct ServerDigest {
    pub room_id: String,
    pub session_id: String,
    pub digest: Option<String>,
    pub error: Option<String>,
}

/// What a server entry decrypts to, as a fingerprint comparable with the store's, or why it does
/// not decrypt to a room key.
pub(crate) fn server_fingerprint(key: &BackupDecryptionKey, room_id: &str, session_id: &str, data: &CoreSessionData) -> std::result::Result<[u8; 32], String> {
    let plain = decrypt_session(key, data).map_err(|err| err.to_string())?;
    let k = serde_json::from_slice::<BackedUpRoomKey>(&plain).map_err(|_| "not a backed-up room key".to_owned())?;
    Ok(fingerprint(room_id, session_id, &k))
}

pub struct DecryptDigests {
    key: BackupDecryptionKey,
    entries: Vec<BackupEntryIn>,
}

impl Task for DecryptDigests {
    type Output = Vec<ServerDigest>;
    type JsValue = Vec<ServerDigest>;

    fn compute(&mut self) -> Result<Self::Output> {
        crate::pool::start_crypto_pool();
        let key = &self.key;
        Ok(std::mem::take(&mut self.entries)
            .into_par_iter()
            .map(|e| {
                let data = CoreSessionData {
                    ephemeral: e.session_data.ephemeral,
                    ciphertext: e.session_data.ciphertext,
                    mac: e.session_data.mac,
                };
                let outcome = server_fingerprint(key, &e.room_id, &e.session_id, &data).map(hex::encode);
                let (digest, error) = match outcome {
                    Ok(d) => (Some(d), None),
                    Err(err) => (None, Some(err)),
                };
                ServerDigest {
                    room_id: e.room_id,
                    session_id: e.session_id,
                    digest,
                    error,
                }
            })
            .collect())
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// Decrypts server entries off the main thread and returns digests comparable with the store's.
#[napi(ts_return_type = "Promise<Array<ServerDigest>>")]
pub fn decrypt_backup_digests(
    private_key: Buffer,
    entries: Vec<BackupEntryIn>,
) -> Result<AsyncTask<DecryptDigests>> {
    let bytes: [u8; 32] = private_key
        .as_ref()
        .try_into()
        .map_err(|_| invalid_argument("a backup private key has 32 bytes"))?;
    Ok(AsyncTask::new(DecryptDigests {
        key: BackupDecryptionKey::from_bytes(bytes),
        entries,
    }))
}

#[napi]
pub fn encrypt_megolm_export(plaintext: Buffer, passphrase: String, rounds: u32) -> String {
    megolm_backup::encrypt_export(&plaintext, &passphrase, rounds)
}

#[napi]
pub fn decrypt_megolm_export(text: String, passphrase: String) -> Result<Buffer> {
    megolm_backup::decrypt_export(&text, &passphrase)
        .map(|p| Buffer::from(p.to_vec()))
        .map_err(|e| {
            coded(
                "WRONG_PASSPHRASE",
                format!("cannot read the key export: {e}"),
                "check the export passphrase",
            )
        })
}
