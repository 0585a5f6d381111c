//! The Sled side of `convert`: one decoder per tree, each turning an entry into the matrix-sdk-crypto
//! 0.9 type the SQLite store saves. No field-by-field mapping of our own: 0.9 still deserializes the
//! 0.6 formats (its stores were migrated forward the same way), so every value goes through the
//! genuine 0.9 serde code and `from_pickle`, and whatever that code refuses is reported as damage.

use matrix_sdk_crypto::olm::{
    Account, InboundGroupSession, OlmMessageHash, PickledAccount, PickledCrossSigningIdentity,
    PickledInboundGroupSession, PickledSession, PrivateCrossSigningIdentity,
};
use matrix_sdk_crypto::store::BackupDecryptionKey;
use matrix_sdk_crypto::{DeviceData, TrackedUser, UserIdentityData};
use serde::de::DeserializeOwned;
use sled_store::{decode_pickle, open_value, Damage, DamageKind, StoreCipher};

/// The trees a bot's store holds, and what `convert` does with each.
pub const ACCOUNT: &str = "account";
pub const PRIVATE_IDENTITY: &str = "private_identity";
pub const OLM_SESSIONS: &str = "session";
pub const INBOUND_GROUP_SESSIONS: &str = "inbound_group_sessions";
pub const DEVICES: &str = "devices";
pub const IDENTITIES: &str = "identities";
pub const TRACKED_USERS: &str = "tracked_users";
pub const OLM_HASHES: &str = "olm_hashes";
/// Not carried over, and why (reported with their entry counts).
pub const LEFT_BEHIND: &[(&str, &str)] = &[
    ("outbound_group_sessions", "the bot starts new outbound room keys; its old ones stay readable through the inbound copies"),
    ("room_settings", "in an encrypted store their room IDs are hashed; the bot reads each room's encryption settings again"),
    ("outgoing_secret_requests", "pending key requests are resent when needed"),
    ("unsent_secret_requests", "pending key requests are resent when needed"),
    ("secret_requests_by_info", "pending key requests are resent when needed"),
    ("direct_withheld_info", "withheld notices are received again"),
    ("no_olm_sent", "bookkeeping of withheld notices sent"),
];

/// The singletons of the `account` tree.
pub enum AccountEntry {
    Account(Box<Account>),
    BackupVersion(String),
    BackupKey(BackupDecryptionKey),
    /// A key this version of the format does not know; counted, not converted.
    Unknown,
}

/// `what`'s JSON, through the genuine 0.9 deserializer. serde's message can quote the value (key
/// material), so only its category and position are kept.
fn from_json<T: DeserializeOwned>(json: &[u8], what: &str) -> Result<T, Damage> {
    serde_json::from_slice(json).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => DamageKind::InvalidPickle,
            _ => DamageKind::InvalidJson,
        };
        Damage::from_json(
            kind,
            &format!("{what} (as matrix-sdk-crypto 0.9 reads it)"),
            &e,
        )
    })
}

fn value_as<T: DeserializeOwned>(
    value: &[u8],
    cipher: Option<&StoreCipher>,
    what: &str,
) -> Result<T, Damage> {
    from_json(&open_value(value, cipher)?, what)
}

fn rejected(what: &str, err: impl std::fmt::Display) -> Damage {
    Damage::new(
        DamageKind::InvalidPickle,
        format!("matrix-sdk-crypto 0.9 rejects the {what}: {err}"),
    )
}

pub fn account_entry(
    key: &[u8],
    value: &[u8],
    cipher: Option<&StoreCipher>,
) -> Result<AccountEntry, Damage> {
    Ok(match key {
        b"account\xff" => {
            let pickle: PickledAccount = value_as(value, cipher, "Olm account")?;
            AccountEntry::Account(Box::new(
                Account::from_pickle(pickle).map_err(|e| rejected("Olm account", e))?,
            ))
        }
        b"backup_version_v1\xff" => {
            AccountEntry::BackupVersion(value_as(value, cipher, "backup version")?)
        }
        b"recovery_key_v1\xff" => {
            AccountEntry::BackupKey(value_as(value, cipher, "backup recovery key")?)
        }
        _ => AccountEntry::Unknown,
    })
}

pub fn private_identity(
    _key: &[u8],
    value: &[u8],
    cipher: Option<&StoreCipher>,
) -> Result<PrivateCrossSigningIdentity, Damage> {
    let pickle: PickledCrossSigningIdentity =
        value_as(value, cipher, "private cross-signing identity")?;
    PrivateCrossSigningIdentity::from_pickle(pickle)
        .map_err(|e| rejected("private cross-signing identity", e))
}

/// A room key: checked by our own decoder first (so damage is named as `extract` names it), then
/// unpickled by 0.9 with its flags (`imported`, `backed_up`, history visibility) as stored.
pub fn inbound_group_session(
    _key: &[u8],
    value: &[u8],
    cipher: Option<&StoreCipher>,
) -> Result<InboundGroupSession, Damage> {
    let json = open_value(value, cipher)?;
    decode_pickle(&json)?;
    let pickle: PickledInboundGroupSession = from_json(&json, "room key pickle")?;
    InboundGroupSession::from_pickle(pickle).map_err(|e| rejected("room key pickle", e))
}

/// An Olm session's pickle; 0.9 unpickles it against the account's device keys, which the caller has.
pub fn olm_session(
    _key: &[u8],
    value: &[u8],
    cipher: Option<&StoreCipher>,
) -> Result<PickledSession, Damage> {
    value_as(value, cipher, "Olm session pickle")
}

pub fn device(
    _key: &[u8],
    value: &[u8],
    cipher: Option<&StoreCipher>,
) -> Result<DeviceData, Damage> {
    value_as(value, cipher, "device")
}

pub fn identity(
    _key: &[u8],
    value: &[u8],
    cipher: Option<&StoreCipher>,
) -> Result<UserIdentityData, Damage> {
    value_as(value, cipher, "user identity")
}

pub fn tracked_user(
    _key: &[u8],
    value: &[u8],
    cipher: Option<&StoreCipher>,
) -> Result<TrackedUser, Damage> {
    value_as(value, cipher, "tracked user")
}

/// The hashes of Olm messages already decrypted (replay protection). matrix-sdk-sled keeps the
/// hash itself, as JSON, in the Sled key (never encrypted); the value is a placeholder.
pub fn olm_hash(
    key: &[u8],
    _value: &[u8],
    _cipher: Option<&StoreCipher>,
) -> Result<OlmMessageHash, Damage> {
    from_json(key, "Olm message hash")
}

/// For the trees that are left behind: only their entries are counted.
pub fn count_only(_key: &[u8], _value: &[u8], _cipher: Option<&StoreCipher>) -> Result<(), Damage> {
    Ok(())
}
