//! Two kinds of failure, kept apart on purpose: an `OpenError` stops the whole run (wrong path,
//! wrong passphrase, bot still running); a `Damage` concerns one entry, is reported, and the scan
//! goes on. Every `OpenError` has a stable code (mapped to an exit code in one place, in TypeScript)
//! and a hint that tells the operator what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the crypto store folder {0} does not exist")]
    NotFound(PathBuf),
    #[error("{0} holds no Sled database (expected a matrix-sdk-crypto/ folder with the files conf and db)")]
    NotASledStore(PathBuf),
    #[error("{path} is a Sled database of an unsupported version ({found})")]
    UnsupportedSledVersion { path: PathBuf, found: String },
    #[error("the Sled store {0} is in use by another process")]
    Locked(PathBuf),
    #[error("the store passphrase is wrong: it does not unlock the store cipher of {0}")]
    WrongPassphrase(PathBuf),
    #[error("{0} is a Sled database, but not a matrix-sdk crypto store (no inbound_group_sessions tree)")]
    NotACryptoStore(PathBuf),
    #[error("{path} is a pre-0.6 crypto store (store version {version}, libolm pickles)")]
    LegacyStore { path: PathBuf, version: u8 },
    #[error("the store cipher of {path} is damaged: {detail}")]
    CorruptCipher { path: PathBuf, detail: String },
    #[error("the Sled database {path} cannot be recovered: {detail}")]
    Sled { path: PathBuf, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid bot-sdk.json: {detail}")]
    InvalidBotSdkJson { path: PathBuf, detail: String },
}

impl OpenError {
    /// Stable identifier for the TypeScript side (exit codes, docs/exit-codes.md).
    pub fn code(&self) -> &'static str {
        match self {
            OpenError::NotFound(_) => "STORE_NOT_FOUND",
            OpenError::NotASledStore(_) => "NOT_A_SLED_STORE",
            OpenError::UnsupportedSledVersion { .. } => "NOT_A_SLED_STORE",
            OpenError::Locked(_) => "STORE_LOCKED",
            OpenError::WrongPassphrase(_) => "WRONG_PASSPHRASE",
            OpenError::NotACryptoStore(_) => "NOT_A_CRYPTO_STORE",
            OpenError::LegacyStore { .. } => "LEGACY_STORE",
            OpenError::CorruptCipher { .. } => "STORE_CORRUPT",
            OpenError::Sled { .. } => "STORE_CORRUPT",
            OpenError::Io { .. } => "IO_ERROR",
            OpenError::InvalidBotSdkJson { .. } => "INVALID_BOT_SDK_JSON",
        }
    }

    /// What the operator should do about it, in one sentence.
    pub fn hint(&self) -> &'static str {
        match self {
            OpenError::NotFound(_) => "set CRYPTO_STORE_PATH (or STORAGE_PATH, whose encrypted/ folder is the default) to the bot's crypto store folder",
            OpenError::NotASledStore(_) | OpenError::UnsupportedSledVersion { .. } => "point CRYPTO_STORE_PATH at the folder that contains matrix-sdk-crypto/ and bot-sdk.json",
            OpenError::Locked(_) => "stop the bot (it holds Sled's lock on matrix-sdk-crypto/db), then run this again",
            OpenError::WrongPassphrase(_) => "set STORE_PASSPHRASE (or --store-passphrase) to the passphrase the bot used; matrix-bot-sdk 0.6.6+ uses the empty passphrase, the default",
            OpenError::NotACryptoStore(_) => "point CRYPTO_STORE_PATH at the bot's crypto store (STORAGE_PATH/encrypted), not at another Sled database",
            OpenError::LegacyStore { .. } => "this store predates matrix-bot-sdk 0.6 (libolm); its keys cannot be read by this tool",
            OpenError::CorruptCipher { .. } | OpenError::Sled { .. } => "restore the store from a backup (see docs/troubleshooting.md), or report the damage",
            OpenError::Io { .. } => "check that the path exists and is readable by this user",
            OpenError::InvalidBotSdkJson { .. } => "fix bot-sdk.json or pass the device ID with OLD_DEVICE_ID",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        OpenError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why one entry could not be turned into a room key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The AEAD check failed: a flipped bit, or a value written under another cipher.
    DecryptionFailed,
    /// Not JSON at all, or cut short.
    InvalidJson,
    /// JSON, but a field the pickle needs is absent or of the wrong type.
    MissingField,
    /// The room ID lacks its `!` sigil or server name ("leading sigil is incorrect or missing").
    InvalidRoomId,
    /// The Megolm ratchet or signing key in the pickle is malformed.
    InvalidPickle,
    /// A libolm pickle (pre-0.6 store): not readable without the old pickle key.
    LegacyPickle,
    /// This part of the tree could not be read (a damaged or missing page of the log).
    ReadError,
}

impl DamageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::DecryptionFailed => "decryption_failed",
            DamageKind::InvalidJson => "invalid_json",
            DamageKind::MissingField => "missing_field",
            DamageKind::InvalidRoomId => "invalid_room_id",
            DamageKind::InvalidPickle => "invalid_pickle",
            DamageKind::LegacyPickle => "legacy_pickle",
            DamageKind::ReadError => "read_error",
        }
    }
}

/// A classified per-entry error. The message never quotes key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub kind: DamageKind,
    pub message: String,
}

impl Damage {
    pub fn new(kind: DamageKind, message: impl Into<String>) -> Self {
        Damage {
            kind,
            message: message.into(),
        }
    }

    /// serde_json's messages can quote the offending value (`invalid type: string "..."`), and a
    /// value here may be key material: keep only the category and the position.
    pub fn from_json(kind: DamageKind, what: &str, err: &serde_json::Error) -> Self {
        let category = match err.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected type",
            serde_json::error::Category::Eof => "cut short",
        };
        Damage::new(
            kind,
            format!(
                "{what}: {category} at line {} column {}",
                err.line(),
                err.column()
            ),
        )
    }
}
