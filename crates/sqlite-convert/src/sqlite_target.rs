//! The SQLite side of `convert`: the store is built under a temporary folder beside the bot's crypto
//! store (same filesystem, so the final rename is atomic), checked by reopening it as the bot would,
//! and only then renamed to `matrix-sdk-crypto.sqlite3`. A run that dies leaves only the temporary
//! folder, which the next run removes; the bot never sees half a store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use matrix_sdk_common::ruma::{OwnedDeviceId, UserId};
use matrix_sdk_crypto::olm::Account;
use matrix_sdk_crypto::store::{Changes, CryptoStore, PendingChanges, RoomKeyCounts};
use matrix_sdk_crypto::{OlmMachine, TrackedUser};
use matrix_sdk_sqlite::SqliteCryptoStore;
use sled_store::locate::SQLITE_STORE_NAME;

use crate::error::ConvertError;

const TEMP_PREFIX: &str = ".sqlite-convert-";
const TEMP_SUFFIX: &str = ".incomplete";

/// The store being written: a matrix-sdk-sqlite 0.9 store in a temporary folder, removed on drop
/// unless [`TempStore::finish`] moved it into place.
pub struct TempStore {
    dir: PathBuf,
    store: Option<Arc<SqliteCryptoStore>>,
    passphrase: Option<String>,
}

impl TempStore {
    /// A new, empty store (convert).
    pub async fn create(
        crypto_store_dir: &Path,
        passphrase: Option<&str>,
    ) -> Result<Self, ConvertError> {
        let mut temp = Self::folder(crypto_store_dir, passphrase)?;
        temp.store = Some(Arc::new(temp.open().await?));
        Ok(temp)
    }

    /// A copy of an existing store (merge): its file `original`, and its write-ahead log where
    /// one holds frames (only with --force: the bot may be writing), copied into a temporary folder
    /// in `crypto_store_dir`. The original is only read. The copy is opened by
    /// [`TempStore::open_copy`].
    pub fn copy_of(
        crypto_store_dir: &Path,
        original: &Path,
        passphrase: Option<&str>,
    ) -> Result<Self, ConvertError> {
        let temp = Self::folder(crypto_store_dir, passphrase)?;
        let copy = temp.db_path();
        for suffix in ["", "-wal"] {
            let from = with_suffix(original, suffix);
            if suffix.is_empty() || std::fs::metadata(&from).is_ok_and(|m| m.len() > 0) {
                std::fs::copy(&from, with_suffix(&copy, suffix))
                    .map_err(|e| ConvertError::io(format!("cannot copy {}", from.display()), e))?;
            }
        }
        Ok(temp)
    }

    /// Opens the copy made by [`TempStore::copy_of`] with the genuine 0.9 code (which migrates an
    /// older schema forward, on the copy); its error is the caller's to name.
    pub async fn open_copy(
        &mut self,
    ) -> Result<Arc<SqliteCryptoStore>, matrix_sdk_sqlite::OpenStoreError> {
        let store = Arc::new(SqliteCryptoStore::open(&self.dir, self.passphrase.as_deref()).await?);
        self.store = Some(store.clone());
        Ok(store)
    }

    /// The database file inside the temporary folder.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join(SQLITE_STORE_NAME)
    }

    fn folder(crypto_store_dir: &Path, passphrase: Option<&str>) -> Result<Self, ConvertError> {
        remove_abandoned(crypto_store_dir);
        // One process can hold two (convert's store, then the copy a repair merges into).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = match n {
            0 => format!("{TEMP_PREFIX}{}{TEMP_SUFFIX}", std::process::id()),
            n => format!("{TEMP_PREFIX}{}-{n}{TEMP_SUFFIX}", std::process::id()),
        };
        let dir = crypto_store_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ConvertError::io(format!("cannot remove {}", dir.display()), e))?;
        }
        create_private_dir(&dir)?;
        Ok(TempStore {
            dir,
            store: None,
            passphrase: passphrase.map(str::to_owned),
        })
    }

    async fn open(&self) -> Result<SqliteCryptoStore, ConvertError> {
        SqliteCryptoStore::open(&self.dir, self.passphrase.as_deref())
            .await
            .map_err(|e| {
                ConvertError::Write(format!(
                    "matrix-sdk-sqlite could not create the store in {}: {e}",
                    self.dir.display()
                ))
            })
    }

    fn store(&self) -> &SqliteCryptoStore {
        self.store.as_ref().expect("the store is open until finish")
    }

    pub async fn save_account(&self, account: Account) -> Result<(), ConvertError> {
        self.store()
            .save_pending_changes(PendingChanges {
                account: Some(account),
            })
            .await
            .map_err(write_error)
    }

    pub async fn save(&self, changes: Changes) -> Result<(), ConvertError> {
        self.store()
            .save_changes(changes)
            .await
            .map_err(write_error)
    }

    pub async fn save_tracked_users(&self, users: &[TrackedUser]) -> Result<(), ConvertError> {
        let users: Vec<_> = users.iter().map(|u| (&*u.user_id, u.dirty)).collect();
        self.store()
            .save_tracked_users(&users)
            .await
            .map_err(write_error)
    }

    /// Closes the store and reopens it as the bot would (same passphrase, genuine 0.9 code).
    pub async fn reopen(&mut self) -> Result<Arc<SqliteCryptoStore>, ConvertError> {
        self.close();
        let store = Arc::new(self.open().await?);
        self.store = Some(store.clone());
        Ok(store)
    }

    /// Closes the store and reopens it as matrix-bot-sdk 0.8 does at start: the genuine 0.9
    /// `SqliteCryptoStore::open` with the passphrase the bot passes, then `OlmMachine::with_store`
    /// for the user and the device it will start as (the device `bot-sdk.json` names, checked equal
    /// to the account's before anything was written). Returns what that machine and store hold.
    pub async fn reopen_as_the_bot(
        &mut self,
        user_id: &str,
        device_id: &str,
    ) -> Result<WrittenStore, ConvertError> {
        let store = self.reopen().await?;
        self.close();
        let room_keys = store
            .inbound_group_session_counts(None)
            .await
            .map_err(write_error)?;
        let tracked_users = store.load_tracked_users().await.map_err(write_error)?.len() as u64;
        let backup = store.load_backup_keys().await.map_err(write_error)?;
        let refused = |e: String| {
            ConvertError::CheckFailed(format!(
                "matrix-sdk-crypto 0.9 does not open it as {user_id}, device {device_id}: {e}"
            ))
        };
        let user = UserId::parse(user_id).map_err(|e| refused(e.to_string()))?;
        let device: OwnedDeviceId = device_id.into();
        // An account for this user and device is adopted without a write; any other is refused
        // (MismatchedAccount), and no account at all would make a new one, with other keys.
        let machine = OlmMachine::with_store(&user, &device, store.clone(), None)
            .await
            .map_err(|e| refused(e.to_string()))?;
        let keys = machine.identity_keys();
        let bot = BotView {
            user_id: machine.user_id().to_string(),
            device_id: machine.device_id().to_string(),
            curve25519: keys.curve25519.to_base64(),
            ed25519: keys.ed25519.to_base64(),
        };
        drop(machine);
        drop(store);
        Ok(WrittenStore {
            bot,
            room_keys,
            tracked_users,
            backup_version: backup.backup_version,
            has_backup_key: backup.decryption_key.is_some(),
        })
    }

    /// Drops the store and with it the pool's connections (they close on their own threads a
    /// moment later: `checkpoint` waits for them).
    fn close(&mut self) {
        self.store = None;
    }

    /// Moves the finished store into `crypto_store_dir`. An existing store is first renamed to
    /// `matrix-sdk-crypto.sqlite3.<aside>-<stamp>` (`before-convert`, `before-merge`; with its
    /// `-wal`/`-shm`), never deleted. The store is given to the owner of `owner_of` (the bot's
    /// user: the Sled store, or the store it replaces).
    pub fn finish(
        mut self,
        crypto_store_dir: &Path,
        aside: &str,
        stamp: &str,
        owner_of: &Path,
    ) -> Result<Option<PathBuf>, ConvertError> {
        self.close();
        let written = self.db_path();
        checkpoint(&written)?;
        give_to_the_bot(&written, owner_of)?;
        fsync(&written)?;
        let target = crypto_store_dir.join(SQLITE_STORE_NAME);
        let mut moved_aside = None;
        if target.exists() {
            let aside = crypto_store_dir.join(format!("{SQLITE_STORE_NAME}.{aside}-{stamp}"));
            for suffix in ["-wal", "-shm"] {
                let side = with_suffix(&target, suffix);
                if side.exists() {
                    rename(&side, &with_suffix(&aside, suffix))?;
                }
            }
            rename(&target, &aside)?;
            moved_aside = Some(aside);
        }
        rename(&written, &target)?;
        fsync(crypto_store_dir)?;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.dir = PathBuf::new();
        Ok(moved_aside)
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        self.store = None;
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Who the bot is once it has opened the store.
pub struct BotView {
    pub user_id: String,
    pub device_id: String,
    pub curve25519: String,
    pub ed25519: String,
}

/// What the reopened store holds.
pub struct WrittenStore {
    pub bot: BotView,
    pub room_keys: RoomKeyCounts,
    pub tracked_users: u64,
    pub backup_version: Option<String>,
    pub has_backup_key: bool,
}

fn write_error(e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Write(format!("matrix-sdk-sqlite could not write the store: {e}"))
}

/// Folds the write-ahead log into the main file and empties it, so the main file alone holds the
/// whole store and can be renamed without its `-wal`. The pool's connections close on their own
/// threads a moment after the store is dropped: while one still reads, the checkpoint reports busy
/// and is retried.
fn checkpoint(db: &Path) -> Result<(), ConvertError> {
    let failed = |e: rusqlite::Error| {
        ConvertError::Write(format!("cannot checkpoint {}: {e}", db.display()))
    };
    let conn = rusqlite::Connection::open(db)
        .map_err(|e| ConvertError::Write(format!("cannot reopen {}: {e}", db.display())))?;
    for _ in 0..100 {
        let (busy, log_frames): (i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(failed)?;
        if busy == 0 && log_frames <= 0 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Err(ConvertError::Write(format!(
        "{} stayed busy: another process has it open",
        db.display()
    )))
}

/// The store holds the bot's keys: 0600, and owned by whoever owns `owner_of` (the bot's user), so
/// a run as root leaves a store the bot can open.
fn give_to_the_bot(file: &Path, owner_of: &Path) -> Result<(), ConvertError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ConvertError::io(format!("cannot restrict {}", file.display()), e))?;
    let owner = std::fs::metadata(owner_of).map_err(|e| {
        ConvertError::io(
            format!("cannot read the owner of {}", owner_of.display()),
            e,
        )
    })?;
    let me = std::fs::metadata(file)
        .map_err(|e| ConvertError::io(format!("cannot read {}", file.display()), e))?;
    if (me.uid(), me.gid()) != (owner.uid(), owner.gid()) {
        std::os::unix::fs::chown(file, Some(owner.uid()), Some(owner.gid())).map_err(|e| {
            ConvertError::io(
                format!(
                    "cannot give {} to the owner of {} (uid {})",
                    file.display(),
                    owner_of.display(),
                    owner.uid()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn rename(from: &Path, to: &Path) -> Result<(), ConvertError> {
    std::fs::rename(from, to).map_err(|e| {
        ConvertError::io(
            format!("cannot rename {} to {}", from.display(), to.display()),
            e,
        )
    })
}

fn fsync(path: &Path) -> Result<(), ConvertError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| ConvertError::io(format!("cannot fsync {}", path.display()), e))
}

fn create_private_dir(dir: &Path) -> Result<(), ConvertError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| ConvertError::io(format!("cannot create {}", dir.display()), e))
}

/// Temporary folders of runs that were killed: ours by name, and only once no process of that id
/// is alive.
fn remove_abandoned(crypto_store_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(crypto_store_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|r| r.strip_suffix(TEMP_SUFFIX))
        else {
            continue;
        };
        let alive = pid
            .split('-')
            .next()
            .unwrap_or_default()
            .parse::<i32>()
            .map(|pid| unsafe { libc::kill(pid, 0) } == 0)
            .unwrap_or(false);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
