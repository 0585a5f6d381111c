//! `merge`, the already-upgraded path: the bot runs matrix-bot-sdk 0.8 on a SQLite store of its own
//! (a new device, or a new account) and lost its history. Every room key of the old Sled store (or
//! of a key file) is added to that store through the genuine 0.9 key import
//! (`import_exported_room_keys`: a key already held is replaced only by a better one, imported keys
//! are marked as imported), keeping everything else of the store as it is.
//!
//! Never in place: the store is copied into a [`TempStore`] beside it, the copy is opened as the bot
//! opens it (its own user and device, `SQLITE_PASSPHRASE`), keys go in batch by batch, the copy is
//! reopened and checked against a second read of the source, and only then does it replace the
//! store, which is kept as `matrix-sdk-crypto.sqlite3.before-merge-<time>`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

use std::sync::Arc;

use matrix_sdk_crypto::olm::{Account, ExportedRoomKey, InboundGroupSession};
use matrix_sdk_crypto::store::CryptoStore;
use matrix_sdk_crypto::store::PendingChanges;
use matrix_sdk_crypto::vodozemac::megolm::SessionOrdering;
use matrix_sdk_crypto::OlmMachine;
use matrix_sdk_sqlite::SqliteCryptoStore;
use megolm_backup::KeyFileItem;
use serde::Serialize;
use sled_store::locate::SQLITE_STORE_NAME;
use sled_store::{
    Damage, DamageKind, DamagedEntry, OpenOptions, SledStore, StoreLocation, TreeScanner,
};

use crate::existing::{sled_account_keys, AccountKeys, Relation, KNOWN_SCHEMA_VERSION};
use crate::report::{timestamp, DamagedRecord, TreeCount};
use crate::sled_entries;
use crate::sqlite_target::TempStore;
use crate::{next_chunk, ConvertError, Progress};

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum MergeSource {
    /// The Sled store in the crypto store folder.
    Sled,
    /// An `extracted-keys.json`, a JSON array of exported keys, or an Element key export (then
    /// with its passphrase).
    KeyFile {
        path: PathBuf,
        export_passphrase: Option<String>,
    },
    /// Another matrix-sdk-sqlite 0.9 store (same passphrase): the store a same-device repair
    /// replaced. Read from a copy, whole (it is the store of a bot that ran briefly).
    SqliteStore { path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// Holds `matrix-sdk-crypto.sqlite3` (and, for [`MergeSource::Sled`], `matrix-sdk-crypto/`).
    pub crypto_store_dir: PathBuf,
    pub source: MergeSource,
    /// Unlocks the Sled store cipher; matrix-bot-sdk 0.6.6+ uses "".
    pub sled_passphrase: String,
    /// The SQLite store's passphrase; matrix-bot-sdk 0.8 passes "".
    pub sqlite_passphrase: Option<String>,
    /// Count what would be added, improved or already present; put nothing in place.
    pub dry_run: bool,
    pub skip_errors: bool,
    /// Merge into a store that looks in use, or whose account has the Sled device ID with other
    /// identity keys.
    pub force: bool,
    /// Keys per import: memory is bounded by this, whatever the number of keys.
    pub chunk_size: usize,
    /// Mark the account as not having published its device keys, so that the bot uploads them on
    /// its next start: a restored account whose device the server now publishes with other keys
    /// (see `repair_same_device`) would not do it by itself.
    pub republish_device_keys: bool,
}

impl MergeOptions {
    pub fn new(crypto_store_dir: impl Into<PathBuf>) -> Self {
        MergeOptions {
            crypto_store_dir: crypto_store_dir.into(),
            source: MergeSource::Sled,
            sled_passphrase: String::new(),
            sqlite_passphrase: Some(String::new()),
            dry_run: false,
            skip_errors: false,
            force: false,
            chunk_size: 1000,
            republish_device_keys: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub dry_run: bool,
    /// The account of the SQLite store, which stays as it is.
    pub user_id: String,
    pub device_id: String,
    pub curve25519: String,
    pub ed25519: String,
    /// The account of the store the keys come from, when it has one (the Sled store's, or the
    /// replaced SQLite store's).
    pub sled_account: Option<AccountKeys>,
    /// The device keys will be uploaded again on the bot's next start.
    pub republishes_device_keys: bool,
    /// `sled` or the key file's path.
    pub source: String,
    /// Keys read from the source (damaged ones aside).
    pub read: u64,
    /// Not in the store before.
    pub added: u64,
    /// Held as well or better already: left as it was.
    pub already_present: u64,
    /// Held from a later message index: replaced by the better copy.
    pub improved: u64,
    pub damaged: Vec<DamagedRecord>,
    pub room_keys_before: u64,
    pub room_keys_after: u64,
    pub written: Option<PathBuf>,
    /// The store as it was before the merge.
    pub kept_as: Option<PathBuf>,
    pub sled_would_refuse: Vec<String>,
}

/// Runs a whole merge on the calling thread (its own single-threaded runtime).
pub fn merge(
    options: &MergeOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<MergeReport, ConvertError> {
    crate::on_this_thread(merge_async(options, progress))
}

pub async fn merge_async(
    options: &MergeOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<MergeReport, ConvertError> {
    let dir = &options.crypto_store_dir;
    let original = dir.join(SQLITE_STORE_NAME);
    if !original.is_file() {
        return Err(ConvertError::SqliteMissing { path: original });
    }
    if !options.force {
        if let Some(why) = in_use(&original) {
            return Err(ConvertError::SqliteInUse {
                path: original,
                detail: why,
            });
        }
    }

    let sled = match &options.source {
        MergeSource::Sled => {
            let location = StoreLocation::new(dir);
            location.check()?;
            Some(SledStore::open(
                &location,
                OpenOptions {
                    passphrase: options.sled_passphrase.clone(),
                },
            )?)
        }
        MergeSource::KeyFile { .. } | MergeSource::SqliteStore { .. } => None,
    };
    let sled_account = match (&sled, &options.source) {
        (Some(s), _) => sled_account_keys(s),
        (None, MergeSource::SqliteStore { path }) => {
            let (_, _, account) =
                open_copy(dir, path, options.sqlite_passphrase.as_deref()).await?;
            Some(AccountKeys::of(&account))
        }
        (None, _) => None,
    };

    let (mut temp, store, account) =
        open_copy(dir, &original, options.sqlite_passphrase.as_deref()).await?;
    let unusable = |detail: String| ConvertError::SqliteUnusable {
        path: original.clone(),
        detail,
    };
    let (user, device) = (account.user_id().to_owned(), account.device_id().to_owned());
    let identity = account.identity_keys();
    if let Some(old) = &sled_account {
        match Relation::between(&AccountKeys::of(&account), old) {
            Relation::OtherUser => {
                return Err(unusable(format!(
                    "it belongs to {user}, the Sled store to {}",
                    old.user_id
                )))
            }
            Relation::SameDeviceOtherKeys if !options.force => {
                return Err(ConvertError::SameDeviceOtherKeys {
                    device: device.to_string(),
                    sled_ed25519: old.ed25519.clone(),
                    sqlite_ed25519: identity.ed25519.to_base64(),
                })
            }
            _ => {}
        }
    }
    drop(account);

    let mut report = MergeReport {
        dry_run: options.dry_run,
        user_id: user.to_string(),
        device_id: device.to_string(),
        curve25519: identity.curve25519.to_base64(),
        ed25519: identity.ed25519.to_base64(),
        sled_account,
        republishes_device_keys: false,
        source: match &options.source {
            MergeSource::Sled => "sled".into(),
            MergeSource::KeyFile { path, .. } | MergeSource::SqliteStore { path } => {
                path.display().to_string()
            }
        },
        read: 0,
        added: 0,
        already_present: 0,
        improved: 0,
        damaged: Vec::new(),
        room_keys_before: room_key_count(&store).await?,
        room_keys_after: 0,
        written: None,
        kept_as: None,
        sled_would_refuse: sled
            .as_ref()
            .map(|s| s.info().sled_would_refuse.clone())
            .unwrap_or_default(),
    };

    // The bot's own machine over the copy: the import below is the one the bot itself would run.
    let machine = OlmMachine::with_store(&user, &device, store.clone(), None)
        .await
        .map_err(|e| {
            unusable(format!(
                "matrix-sdk-crypto 0.9 does not adopt its account ({e})"
            ))
        })?;
    let mut tally = TreeCount::new(sled_entries::INBOUND_GROUP_SESSIONS);
    let mut keys = KeySource::open(sled.as_ref(), options).await?;
    loop {
        let batch = keys.next_batch(options, &mut tally).await?;
        if batch.is_empty() {
            break;
        }
        let batch = best_of_each(batch).await;
        report.already_present += batch.duplicates;
        for (candidate, _) in &batch.keys {
            match store
                .get_inbound_group_session(candidate.room_id(), candidate.session_id())
                .await
                .map_err(write_error)?
            {
                None => report.added += 1,
                Some(held) if candidate.compare(&held).await == SessionOrdering::Better => {
                    report.improved += 1
                }
                Some(_) => report.already_present += 1,
            }
        }
        report.read += batch.read;
        if !options.dry_run {
            let exported: Vec<ExportedRoomKey> = batch.keys.into_iter().map(|(_, k)| k).collect();
            machine
                .store()
                .import_exported_room_keys(exported, |_, _| {})
                .await
                .map_err(write_error)?;
        }
        progress(Progress {
            tree: sled_entries::INBOUND_GROUP_SESSIONS,
            entries: report.read,
        });
    }
    drop(keys);
    drop(machine);
    if options.republish_device_keys && !options.dry_run {
        let account = store
            .load_account()
            .await
            .map_err(write_error)?
            .ok_or_else(|| ConvertError::MergeCheckFailed("the account is gone".into()))?;
        let mut pickle = account.pickle();
        pickle.shared = false;
        let account = Account::from_pickle(pickle).map_err(write_error)?;
        store
            .save_pending_changes(PendingChanges {
                account: Some(account),
            })
            .await
            .map_err(write_error)?;
        report.republishes_device_keys = true;
    }
    drop(store);
    report.damaged = tally.take_records();

    if options.dry_run {
        report.room_keys_after = report.room_keys_before + report.added;
        return Ok(report);
    }

    // Reopened as the bot opens it: the same account, and every key of the source held at least as
    // well as the source holds it (a second read of the source, so memory stays flat).
    let store = temp.reopen().await?;
    let account = store
        .load_account()
        .await
        .map_err(write_error)?
        .ok_or_else(|| ConvertError::MergeCheckFailed("the account is gone".into()))?;
    if account.user_id() != user
        || account.device_id() != device
        || account.identity_keys() != identity
        || (options.republish_device_keys && account.shared())
    {
        return Err(ConvertError::MergeCheckFailed("the account changed".into()));
    }
    drop(account);
    report.room_keys_after = room_key_count(&store).await?;
    if report.room_keys_after != report.room_keys_before + report.added {
        return Err(ConvertError::MergeCheckFailed(format!(
            "{} room keys before, {} added, {} after",
            report.room_keys_before, report.added, report.room_keys_after
        )));
    }
    let mut keys = KeySource::open(sled.as_ref(), options).await?;
    let mut recheck = TreeCount::new(sled_entries::INBOUND_GROUP_SESSIONS);
    let checking = MergeOptions {
        skip_errors: true,
        ..options.clone()
    };
    loop {
        let batch = keys.next_batch(&checking, &mut recheck).await?;
        if batch.is_empty() {
            break;
        }
        for (candidate, _) in batch {
            let held = store
                .get_inbound_group_session(candidate.room_id(), candidate.session_id())
                .await
                .map_err(write_error)?;
            let as_good = match &held {
                Some(h) => matches!(
                    candidate.compare(h).await,
                    SessionOrdering::Equal | SessionOrdering::Worse
                ),
                None => false,
            };
            if !as_good {
                return Err(ConvertError::MergeCheckFailed(format!(
                    "room key {} of {} is {}",
                    candidate.session_id(),
                    candidate.room_id(),
                    if held.is_some() {
                        "held at a later index or from another sender"
                    } else {
                        "missing"
                    }
                )));
            }
        }
    }
    drop(keys);
    drop(store);
    drop(sled);

    report.kept_as = temp.finish(dir, "before-merge", &timestamp(), &original)?;
    report.written = Some(original);
    Ok(report)
}

/// A copy of the SQLite store `path` in a temporary folder of `dir`, opened with the genuine 0.9
/// code, and its account. Every way it can be unusable is one line naming `path`.
async fn open_copy(
    dir: &Path,
    path: &Path,
    passphrase: Option<&str>,
) -> Result<(TempStore, Arc<SqliteCryptoStore>, Account), ConvertError> {
    let unusable = |detail: String| ConvertError::SqliteUnusable {
        path: path.to_path_buf(),
        detail,
    };
    let mut temp = TempStore::copy_of(dir, path, passphrase)?;
    if let Some(version) = schema_version(&temp.db_path()).map_err(unusable)? {
        if version > KNOWN_SCHEMA_VERSION {
            return Err(unusable(format!("its schema is version {version}, newer than matrix-sdk-sqlite 0.9 (matrix-bot-sdk 0.8) understands ({KNOWN_SCHEMA_VERSION}): a newer bot wrote it")));
        }
    }
    let store = temp.open_copy().await.map_err(|e| {
        unusable(format!(
            "matrix-sdk-sqlite 0.9 cannot open it with this SQLITE_PASSPHRASE ({e})"
        ))
    })?;
    let account = store
        .load_account()
        .await
        .map_err(|e| unusable(format!("its Olm account cannot be read ({e})")))?
        .ok_or_else(|| unusable("it holds no Olm account: the bot never started on it".into()))?;
    Ok((temp, store, account))
}

/// State 1 of an upgrade gone wrong: the upgraded bot made a new account under the old device ID,
/// the server now publishes the new account's keys for it, and peers that knew the device keep
/// the old ones (matrix-sdk-crypto rejects a known device's changed Ed25519 key; measured in
/// docs/convert.md). `convert --force` has just put the old account back; when the store it
/// replaced (`replaced`) is that new account, its room keys are merged into the old account and
/// the old account is told to publish its device keys again. Any other replaced store is left as
/// it is (`None`).
pub async fn repair_same_device(
    dir: &Path,
    replaced: &Path,
    restored: &crate::ConvertReport,
    sqlite_passphrase: Option<&str>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Option<MergeReport>, ConvertError> {
    let account = match open_copy(dir, replaced, sqlite_passphrase).await {
        Ok((_, _, account)) => account,
        // A store without an account, or one that does not open: nothing of it to bring over.
        Err(ConvertError::SqliteUnusable { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let restored = AccountKeys {
        user_id: restored.user_id.clone(),
        device_id: restored.device_id.clone(),
        curve25519: restored.curve25519.clone(),
        ed25519: restored.ed25519.clone(),
    };
    if Relation::between(&AccountKeys::of(&account), &restored) != Relation::SameDeviceOtherKeys {
        return Ok(None);
    }
    drop(account);
    let mut options = MergeOptions::new(dir);
    options.source = MergeSource::SqliteStore {
        path: replaced.to_path_buf(),
    };
    options.sqlite_passphrase = sqlite_passphrase.map(str::to_owned);
    // The store was written a moment ago by this run; the replaced store is the new account's.
    options.force = true;
    options.republish_device_keys = true;
    merge_async(&options, progress).await.map(Some)
}

/// Whether the bot looks like it has the store open: a lock SQLite holds on the file or on the
/// shared-memory index of its log (a connection keeps a read lock there while open), or frames in
/// its write-ahead log (a clean close folds them into the file; a bot killed without closing leaves
/// them too, which `--force` then carries over: the copy takes the log along). Only looked at:
/// `F_GETLK` takes nothing.
fn in_use(db: &Path) -> Option<String> {
    let shm = crate::sqlite_target::with_suffix(db, "-shm");
    // SQLite's lock bytes: on the database file from its PENDING byte (1 GiB) up; on `-shm`, the
    // WAL locks from byte 120.
    for (file, start, len) in [(db, 0x4000_0000i64, 0x202i64), (shm.as_path(), 120, 16)] {
        let Ok(f) = std::fs::File::open(file) else {
            continue;
        };
        if let Some(pid) = locked_by(&f, start, len) {
            return Some(format!(
                "process {pid} holds a SQLite lock on {}",
                file.display()
            ));
        }
    }
    let wal = crate::sqlite_target::with_suffix(db, "-wal");
    match std::fs::metadata(&wal) {
        Ok(m) if m.len() > 0 => Some(format!(
            "{} holds {} bytes not yet folded into the store (the bot is running, or was stopped without closing it)",
            wal.display(),
            m.len()
        )),
        _ => None,
    }
}

fn locked_by(file: &std::fs::File, start: i64, len: i64) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = start as _;
    lock.l_len = len as _;
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
    (r == 0 && lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid)
}

/// The schema version matrix-sdk-sqlite records in its `kv` table (one byte), read from the copy.
fn schema_version(db: &Path) -> Result<Option<u8>, String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| format!("SQLite cannot open it ({e})"))?;
    let value: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM kv WHERE key = 'version'", [], |row| {
            row.get(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(format!("it is not a matrix-sdk-sqlite crypto store ({e})")),
        })?;
    Ok(value.and_then(|v| v.first().copied()))
}

async fn room_key_count(store: &SqliteCryptoStore) -> Result<u64, ConvertError> {
    Ok(store
        .inbound_group_session_counts(None)
        .await
        .map_err(write_error)?
        .total as u64)
}

fn write_error(e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Write(format!(
        "matrix-sdk-crypto 0.9 could not merge into the copy: {e}"
    ))
}

/// One batch, each key with the session 0.9 builds from it (to compare with what the store holds).
type Batch = Vec<(InboundGroupSession, ExportedRoomKey)>;

struct Deduplicated {
    keys: Batch,
    read: u64,
    /// Later copies of a session already in this batch, no better than the one kept.
    duplicates: u64,
}

/// Within one batch, the best copy of each session: the store is only asked once the batch is in,
/// so two copies in one batch would both look new (a Sled store can hold a session twice).
async fn best_of_each(batch: Batch) -> Deduplicated {
    let read = batch.len() as u64;
    let mut keys: Batch = Vec::with_capacity(batch.len());
    let mut index = std::collections::HashMap::new();
    let mut duplicates = 0;
    for (session, key) in batch {
        let id = (
            session.room_id().to_owned(),
            session.session_id().to_owned(),
        );
        match index.get(&id) {
            Some(&i) => {
                duplicates += 1;
                let (kept, _): &(InboundGroupSession, ExportedRoomKey) = &keys[i];
                if session.compare(kept).await == SessionOrdering::Better {
                    keys[i] = (session, key);
                }
            }
            None => {
                index.insert(id, keys.len());
                keys.push((session, key));
            }
        }
    }
    Deduplicated {
        keys,
        read,
        duplicates,
    }
}

/// The source's keys in batches, as exported keys (what a key import takes).
enum KeySource {
    Sled(TreeScanner<InboundGroupSession>),
    /// Every room key of another SQLite store, read from its copy (kept until the end).
    Sqlite {
        sessions: std::vec::IntoIter<InboundGroupSession>,
        _copy: TempStore,
    },
    /// The key file is parsed on its own thread (its reader is callback-driven), a few batches
    /// ahead at most.
    File {
        batches: Receiver<Result<Vec<(u64, KeyFileItem)>, ConvertError>>,
        path: PathBuf,
    },
}

impl KeySource {
    async fn open(sled: Option<&SledStore>, options: &MergeOptions) -> Result<Self, ConvertError> {
        match (&options.source, sled) {
            (MergeSource::SqliteStore { path }, _) => {
                let (temp, store, _) = open_copy(
                    &options.crypto_store_dir,
                    path,
                    options.sqlite_passphrase.as_deref(),
                )
                .await?;
                let sessions = store
                    .get_inbound_group_sessions()
                    .await
                    .map_err(write_error)?;
                Ok(KeySource::Sqlite {
                    sessions: sessions.into_iter(),
                    _copy: temp,
                })
            }
            (MergeSource::Sled, Some(sled)) => Ok(KeySource::Sled(sled.entries(
                sled_entries::INBOUND_GROUP_SESSIONS,
                sled_entries::inbound_group_session,
                None,
            ))),
            (
                MergeSource::KeyFile {
                    path,
                    export_passphrase,
                },
                _,
            ) => Self::open_file(path, export_passphrase.as_deref()),
            (MergeSource::Sled, None) => unreachable!("a Sled merge opens the Sled store first"),
        }
    }

    fn open_file(path: &Path, export_passphrase: Option<&str>) -> Result<Self, ConvertError> {
        let bad_file =
            |detail: String| ConvertError::KeyFile(format!("{}: {detail}", path.display()));
        let mut file = std::fs::File::open(path).map_err(|e| bad_file(e.to_string()))?;
        let mut head = [0u8; megolm_backup::EXPORT_HEADER.len()];
        let n = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
        // An export is one authenticated blob: decrypted whole (a wrong passphrase stops here,
        // before anything is written), then parsed as a stream like any key file.
        let plaintext = if &head[..n] == megolm_backup::EXPORT_HEADER.as_bytes() {
            let passphrase = export_passphrase.ok_or_else(|| {
                ConvertError::ExportPassphrase(format!(
                    "{} is an encrypted key export and no passphrase was given",
                    path.display()
                ))
            })?;
            let text = std::fs::read_to_string(path).map_err(|e| bad_file(e.to_string()))?;
            Some(
                megolm_backup::decrypt_export(&text, passphrase).map_err(|e| {
                    ConvertError::ExportPassphrase(format!("cannot read the key export: {e}"))
                })?,
            )
        } else {
            None
        };
        let (send, batches) = sync_channel(2);
        let path_owned = path.to_path_buf();
        std::thread::Builder::new()
            .name("merge-key-file".into())
            .spawn(move || {
                let mut batch = Vec::new();
                let each = |index: u64, item: KeyFileItem| {
                    batch.push((index, item));
                    if batch.len() >= 1000 {
                        return send.send(Ok(std::mem::take(&mut batch))).is_ok();
                    }
                    true
                };
                let outcome = match &plaintext {
                    Some(p) => megolm_backup::for_each_key(&p[..], each),
                    None => match std::fs::File::open(&path_owned) {
                        Ok(f) => megolm_backup::for_each_key(f, each),
                        Err(e) => Err(megolm_backup::KeyFileError::Json(e.to_string())),
                    },
                };
                let last = match outcome {
                    Ok(()) => Ok(batch),
                    Err(megolm_backup::KeyFileError::Stopped) => return,
                    Err(e) => Err(ConvertError::KeyFile(format!(
                        "{}: {e}",
                        path_owned.display()
                    ))),
                };
                let _ = send.send(last);
            })
            .map_err(|e| ConvertError::io("cannot start the key file reader", e))?;
        Ok(KeySource::File {
            batches,
            path: path.to_path_buf(),
        })
    }

    /// The next keys (empty at the end). Damaged entries go to `tally`, or stop a strict run.
    async fn next_batch(
        &mut self,
        options: &MergeOptions,
        tally: &mut TreeCount,
    ) -> Result<Batch, ConvertError> {
        match self {
            KeySource::Sled(scanner) => {
                let sessions = next_chunk(
                    scanner,
                    options.chunk_size.max(1),
                    tally,
                    options.skip_errors,
                )?;
                as_candidates(sessions, tally, options).await
            }
            KeySource::Sqlite { sessions, .. } => {
                let chunk: Vec<_> = sessions.by_ref().take(options.chunk_size.max(1)).collect();
                tally.converted += chunk.len() as u64;
                as_candidates(chunk, tally, options).await
            }
            KeySource::File { batches, path } => {
                let items = match batches.recv() {
                    Ok(r) => r?,
                    Err(_) => return Ok(Vec::new()),
                };
                if items.is_empty() {
                    return Ok(Vec::new());
                }
                let mut out = Vec::with_capacity(items.len());
                for (index, item) in items {
                    let position_key = index.to_string().into_bytes();
                    match item {
                        KeyFileItem::Key(key) => match as_09_export(&key) {
                            Ok(k) => match InboundGroupSession::from_export(&k) {
                                Ok(candidate) => {
                                    tally.converted += 1;
                                    out.push((candidate, k))
                                }
                                Err(e) => damaged(tally, options, position_key, DamageKind::InvalidPickle, format!("element {index} of {}: matrix-sdk-crypto 0.9 cannot import the key: {e}", path.display()))?,
                            },
                            Err(message) => damaged(tally, options, position_key, DamageKind::InvalidPickle, format!("element {index}: {message}"))?,
                        },
                        KeyFileItem::Malformed { kind, message } => {
                            let kind = match kind {
                                "invalid_room_id" => DamageKind::InvalidRoomId,
                                "missing_field" => DamageKind::MissingField,
                                "invalid_json" => DamageKind::InvalidJson,
                                _ => DamageKind::InvalidPickle,
                            };
                            damaged(tally, options, position_key, kind, format!("element {index}: {message}"))?
                        }
                    }
                }
                if out.is_empty() {
                    // A batch of nothing but damage: read on.
                    return Box::pin(self.next_batch(options, tally)).await;
                }
                Ok(out)
            }
        }
    }
}

/// Stored sessions as a key import takes them: exported from their first known index, each with the
/// session 0.9 makes of the export (the one the import compares with what the store holds).
async fn as_candidates(
    sessions: Vec<InboundGroupSession>,
    tally: &mut TreeCount,
    options: &MergeOptions,
) -> Result<Batch, ConvertError> {
    let mut out = Vec::with_capacity(sessions.len());
    for s in sessions {
        let key = s.export().await;
        match InboundGroupSession::from_export(&key) {
            Ok(candidate) => out.push((candidate, key)),
            Err(e) => {
                tally.converted -= 1;
                damaged(
                    tally,
                    options,
                    Vec::new(),
                    DamageKind::InvalidPickle,
                    format!("matrix-sdk-crypto 0.9 cannot import the key: {e}"),
                )?
            }
        }
    }
    Ok(out)
}

fn damaged(
    tally: &mut TreeCount,
    options: &MergeOptions,
    sled_key: Vec<u8>,
    kind: DamageKind,
    message: String,
) -> Result<(), ConvertError> {
    let entry = DamagedEntry {
        position: tally.converted + tally.damaged,
        sled_key,
        damage: Damage::new(kind, message),
    };
    let tree = tally.tree;
    tally.damaged(entry, options.skip_errors, tree)
}

/// The interchange format as matrix-sdk-crypto 0.9 reads it (its own serde, through a wiped
/// buffer: the JSON holds the session key).
fn as_09_export(key: &megolm_backup::ExportedRoomKey) -> Result<ExportedRoomKey, String> {
    let json = zeroize::Zeroizing::new(serde_json::to_vec(key).map_err(|e| e.to_string())?);
    serde_json::from_slice(&json).map_err(|e| {
        format!(
            "matrix-sdk-crypto 0.9 does not read it as a room key ({})",
            e.to_string().split(" at line").next().unwrap_or("")
        )
    })
}
