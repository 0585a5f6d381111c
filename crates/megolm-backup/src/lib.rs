//! The server-side key backup algorithm `m.megolm_backup.v1.curve25519-aes-sha2`, its recovery key,
//! and Element's "MEGOLM SESSION DATA" export file. Plain Rust; the napi binding calls it.

pub mod agreement;
pub mod backup_data;
pub mod encrypt;
pub mod export_file;
pub mod exported_key;
pub mod fingerprint_set;
pub mod key_file;
pub mod recovery_key;
pub mod room_answer;

pub use backup_data::{
    fingerprint, first_message_index_of, session_id_of, validate_exported_key, BackedUpRoomKey,
    KeyBackupData, KeyError,
};
pub use encrypt::{
    decrypt_session, encrypt_room_key, encrypt_session, BackupEncryptor, DecryptError, SessionData,
};
pub use export_file::{decrypt_export, encrypt_export, ExportError, DEFAULT_EXPORT_ROUNDS};
pub use exported_key::{to_json_elements, ExportedRoomKey};
pub use fingerprint_set::{FingerprintSet, RoomCheck, ServerEntry};
pub use key_file::{for_each_key, KeyFileError, KeyFileItem, EXPORT_HEADER};
pub use recovery_key::{parse_any, BackupDecryptionKey, BackupPublicKey, KeyFormatError};
pub use room_answer::{AnswerError, RawEntry, RoomAnswerSplitter};

use base64::engine::general_purpose::{GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine;

/// Matrix uses unpadded standard base64; peers sometimes pad. Decode both.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// JSON of a value holding secrets, in a buffer wiped on drop and sized so that it never
/// reallocates for a room key (a reallocation would leave a copy behind in freed memory).
pub fn to_json_wiped<T: serde::Serialize>(value: &T) -> zeroize::Zeroizing<Vec<u8>> {
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer(&mut *buf, value).expect("serializing into memory cannot fail");
    buf
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

pub(crate) fn unb64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    LENIENT.decode(text)
}
