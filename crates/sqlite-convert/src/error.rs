//! What stops a conversion. Like `sled_store::OpenError`, each has a stable code (mapped to an exit
//! code in one place, `src/errors.ts`) and a one-sentence fix. Nothing is written when any of these
//! is returned: the temporary store is removed.

use std::path::PathBuf;

use sled_store::{DamagedEntry, OpenError};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("{path} already holds a SQLite crypto store with an Olm account (the upgraded bot ran, or a conversion finished)")]
    SqliteAccountExists { path: PathBuf },
    #[error("{path} exists but cannot be read as a SQLite crypto store ({detail})")]
    SqliteUnreadable { path: PathBuf, detail: String },
    #[error("the Sled store holds no Olm account: there is no device to keep")]
    NoAccount,
    #[error("the Olm account in the Sled store cannot be read: {0}")]
    AccountUnreadable(String),
    #[error("a damaged entry in the Sled tree {tree} ({}: {})", .entry.damage.kind.as_str(), .entry.damage.message)]
    Damaged {
        tree: &'static str,
        entry: Box<DamagedEntry>,
    },
    #[error("{0}")]
    Write(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the converted store does not read back as written: {0}")]
    CheckFailed(String),
    /// matrix-bot-sdk 0.8 opens the store as the device `bot-sdk.json` names: another device than
    /// the account's, and matrix-sdk-crypto refuses the account at start.
    #[error("bot-sdk.json names device {bot_sdk}, but the Olm account in the Sled store is device {account}: matrix-bot-sdk 0.8 would open the converted store as {bot_sdk} and refuse the account")]
    BotSdkDevice { bot_sdk: String, account: String },
    /// The bot's access token (whoami) is another user's or another device's: the bot would run
    /// the kept account under that device, and live encryption to it would break.
    #[error("the access token belongs to {token_user}, device {token_device}, but the store is {user}, device {device}: the upgraded bot would run this Olm account under {token_device}")]
    TokenDevice {
        token_user: String,
        token_device: String,
        user: String,
        device: String,
    },
    #[error("there is no SQLite crypto store at {path} to merge into")]
    SqliteMissing { path: PathBuf },
    #[error("{path} cannot be merged into: {detail}")]
    SqliteUnusable { path: PathBuf, detail: String },
    #[error("{path} is in use: {detail}")]
    SqliteInUse { path: PathBuf, detail: String },
    #[error("the SQLite store's account is device {device} with other identity keys than the Sled store's (ed25519 {sqlite_ed25519} there, {sled_ed25519} in the Sled store): the upgraded bot made a new account under the old device ID")]
    SameDeviceOtherKeys {
        device: String,
        sled_ed25519: String,
        sqlite_ed25519: String,
    },
    #[error("the merged store does not read back as merged: {0}")]
    MergeCheckFailed(String),
    #[error("{0}")]
    KeyFile(String),
    #[error("{0}")]
    ExportPassphrase(String),
}

impl ConvertError {
    pub fn code(&self) -> &'static str {
        match self {
            ConvertError::Open(e) => e.code(),
            ConvertError::SqliteAccountExists { .. } | ConvertError::SqliteUnreadable { .. } => {
                "SQLITE_STORE_EXISTS"
            }
            ConvertError::NoAccount | ConvertError::AccountUnreadable(_) => "NO_ACCOUNT",
            ConvertError::Damaged { .. } => "DAMAGED_ENTRIES",
            ConvertError::Write(_) | ConvertError::Io { .. } => "IO_ERROR",
            ConvertError::CheckFailed(_) => "CONVERT_CHECK_FAILED",
            ConvertError::BotSdkDevice { .. } | ConvertError::TokenDevice { .. } => "WRONG_DEVICE",
            ConvertError::SqliteMissing { .. } => "SQLITE_STORE_MISSING",
            ConvertError::SqliteUnusable { .. } | ConvertError::SameDeviceOtherKeys { .. } => {
                "SQLITE_STORE_UNUSABLE"
            }
            ConvertError::SqliteInUse { .. } => "SQLITE_IN_USE",
            ConvertError::MergeCheckFailed(_) => "MERGE_CHECK_FAILED",
            ConvertError::KeyFile(_) => "KEY_FILE",
            ConvertError::ExportPassphrase(_) => "WRONG_PASSPHRASE",
        }
    }

    pub fn hint(&self) -> &'static str {
        match self {
            ConvertError::Open(e) => e.hint(),
            ConvertError::SqliteAccountExists { .. } => "if that store is not the one you want to keep, rerun with --force: it is renamed to matrix-sdk-crypto.sqlite3.before-convert-<time>, never deleted",
            ConvertError::SqliteUnreadable { .. } => "check --sqlite-passphrase, or rerun with --force to rename that file aside (never deleted) and write a new store",
            ConvertError::NoAccount | ConvertError::AccountUnreadable(_) => "use the server-side backup path instead (sled-migration-tool all): it needs only the room keys",
            ConvertError::Damaged { .. } => "rerun with --skip-errors to convert everything else (--failed-output FILE lists what is left behind), or restore the store from a backup",
            ConvertError::Write(_) | ConvertError::Io { .. } => "check free space and permissions in the crypto store folder (the new store needs about the size of the room keys), then run convert again",
            ConvertError::CheckFailed(_) => "nothing was put in place; report this with the output of convert --dry-run",
            ConvertError::BotSdkDevice { .. } => "set \"deviceId\" in bot-sdk.json to the account's device (the one the old bot ran as) and give the bot an access token of that device, or use the server-side backup path (sled-migration-tool all); nothing was written",
            ConvertError::TokenDevice { .. } => "log in for the store's device (POST /_matrix/client/v3/login with \"device_id\" set to it, docs/convert.md) and give the bot and ACCESS_TOKEN that token; nothing was written",
            ConvertError::SqliteMissing { .. } => "merge is for a bot already running matrix-bot-sdk 0.8: check CRYPTO_STORE_PATH; a bot not upgraded yet takes convert instead",
            ConvertError::SqliteUnusable { .. } => "check SQLITE_PASSPHRASE (matrix-bot-sdk 0.8 uses \"\") and CRYPTO_STORE_PATH; nothing was written",
            ConvertError::SameDeviceOtherKeys { .. } => "peers know the device by the Sled store's keys and reject the new ones: run convert --force, which brings the old account back, merges this store's room keys into it and has the bot publish the old keys again (docs/convert.md); merge --force merges into the new account instead",
            ConvertError::SqliteInUse { .. } => "stop the bot and run merge again; if it is stopped and only its log is left, --force merges with the log (never while the bot runs: what it writes meanwhile is lost)",
            ConvertError::MergeCheckFailed(_) => "nothing was put in place; report this with the output of merge --dry-run",
            ConvertError::KeyFile(_) => "give --from an extracted-keys.json, a JSON array of exported keys, or an Element key export",
            ConvertError::ExportPassphrase(_) => "give the export's passphrase (EXPORT_PASSPHRASE or --export-passphrase-file)",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ConvertError::Io {
            context: context.into(),
            source,
        }
    }
}
