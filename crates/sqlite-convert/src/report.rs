//! What a conversion found and did, tree by tree: the numbers `convert` prints, and the damaged
//! entries `--failed-output` lists.

use serde::Serialize;
use sled_store::DamagedEntry;

use crate::error::ConvertError;
use crate::existing::ExistingStore;

#[derive(Debug, Clone, Serialize)]
pub struct TreeCount {
    pub tree: &'static str,
    /// Entries carried into the SQLite store (or, in a dry run, that would be).
    pub converted: u64,
    pub damaged: u64,
    /// Entries of a tree the SQLite store does not take (see `reason`).
    pub left_behind: u64,
    pub reason: Option<String>,
    #[serde(skip)]
    records: Vec<DamagedRecord>,
}

impl TreeCount {
    pub(crate) fn new(tree: &'static str) -> Self {
        TreeCount {
            tree,
            converted: 0,
            damaged: 0,
            left_behind: 0,
            reason: None,
            records: Vec::new(),
        }
    }

    /// The damaged entries recorded so far, moved out.
    pub(crate) fn take_records(&mut self) -> Vec<DamagedRecord> {
        std::mem::take(&mut self.records)
    }

    /// Records a damaged entry, or, when not skipping errors, stops the run on it.
    pub fn damaged(
        &mut self,
        entry: DamagedEntry,
        skip_errors: bool,
        tree: &'static str,
    ) -> Result<(), ConvertError> {
        if !skip_errors {
            return Err(ConvertError::Damaged {
                tree,
                entry: Box::new(entry),
            });
        }
        self.damaged += 1;
        self.records.push(DamagedRecord {
            tree,
            position: entry.position,
            key_hex: hex(&entry.sled_key),
            kind: entry.damage.kind.as_str(),
            message: entry.damage.message,
        });
        Ok(())
    }
}

/// One entry left behind; never holds key material (damage messages never quote values).
#[derive(Debug, Clone, Serialize)]
pub struct DamagedRecord {
    pub tree: &'static str,
    pub position: u64,
    pub key_hex: String,
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConvertReport {
    pub dry_run: bool,
    pub user_id: String,
    pub device_id: String,
    /// The device ID in bot-sdk.json, when it has one (it should equal `device_id`).
    pub bot_sdk_device_id: Option<String>,
    pub curve25519: String,
    pub ed25519: String,
    /// `none`, `without-account`, `with-account`, `unreadable`: what sat where the store goes.
    pub existing_sqlite_store: &'static str,
    pub trees: Vec<TreeCount>,
    pub damaged: Vec<DamagedRecord>,
    /// Room keys by (room, session): what the SQLite store holds afterwards.
    pub distinct_room_keys: u64,
    pub backup_version: Option<String>,
    pub has_backup_key: bool,
    pub has_cross_signing_identity: bool,
    pub written: Option<std::path::PathBuf>,
    pub moved_aside: Option<std::path::PathBuf>,
    /// When the store moved aside was a new account under the same device ID (the upgraded bot's
    /// first start): its room keys merged into the restored account, which republishes its keys.
    pub same_device_repair: Option<crate::MergeReport>,
    /// Why Sled's own open would refuse the store that was converted anyway.
    pub sled_would_refuse: Vec<String>,
}

impl ConvertReport {
    pub(crate) fn new(
        dry_run: bool,
        existing: &ExistingStore,
        bot_sdk_device_id: Option<String>,
        sled_would_refuse: Vec<String>,
    ) -> Self {
        ConvertReport {
            dry_run,
            user_id: String::new(),
            device_id: String::new(),
            bot_sdk_device_id,
            curve25519: String::new(),
            ed25519: String::new(),
            existing_sqlite_store: existing.presence(),
            trees: Vec::new(),
            damaged: Vec::new(),
            distinct_room_keys: 0,
            backup_version: None,
            has_backup_key: false,
            has_cross_signing_identity: false,
            written: None,
            moved_aside: None,
            same_device_repair: None,
            sled_would_refuse,
        }
    }

    pub(crate) fn set_account(&mut self, account: &matrix_sdk_crypto::olm::Account) {
        self.user_id = account.user_id().to_string();
        self.device_id = account.device_id().to_string();
        let keys = account.identity_keys();
        self.curve25519 = keys.curve25519.to_base64();
        self.ed25519 = keys.ed25519.to_base64();
    }

    pub(crate) fn tree(&self, tree: &'static str) -> TreeCount {
        TreeCount::new(tree)
    }

    pub(crate) fn put(&mut self, mut count: TreeCount) {
        self.damaged.append(&mut count.records);
        self.trees.push(count);
    }

    pub fn count(&self, tree: &str) -> Option<&TreeCount> {
        self.trees.iter().find(|t| t.tree == tree)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `YYYYMMDD-HHMMSS` in UTC, as the backup folders are named.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_look_like_backup_folder_names() {
        let t = super::timestamp();
        assert_eq!(t.len(), 15, "{t}");
        assert_eq!(&t[8..9], "-");
        assert!(t[..4].parse::<u32>().unwrap() >= 2024);
    }
}
