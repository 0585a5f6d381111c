//! `convert`, the keep-your-device path: everything of a matrix-bot-sdk 0.6–0.7 Sled crypto store that
//! the upgraded bot can use — the Olm account (same device, same identity keys, its one-time keys as
//! stored), Olm sessions, room keys with their flags, the private cross-signing identity, the backup
//! version and key, known devices and identities, tracked users, Olm message hashes — written into
//! `CRYPTO_STORE_PATH/matrix-sdk-crypto.sqlite3` by the genuine matrix-sdk-sqlite / matrix-sdk-crypto
//! 0.9.0, the store matrix-bot-sdk 0.8 opens.
//!
//! The flow: [`sled_entries`] decodes each Sled entry into the 0.9 type the SQLite store saves →
//! chunks go into a [`sqlite_target::TempStore`] beside the real one → the finished store is reopened
//! as the bot would open it and checked → renamed into place. The Sled store is read through
//! `sled-store`, which never writes to it.

pub mod error;
pub mod existing;
pub mod inspect;
pub mod merge;
pub mod report;
pub mod sled_entries;
pub mod sqlite_target;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use matrix_sdk_crypto::olm::{Account, Session};
use matrix_sdk_crypto::store::{Changes, DeviceChanges, IdentityChanges};
use sled_store::{Decoder, OpenOptions, ScanItem, SledStore, StoreLocation, TreeScanner};

pub use error::ConvertError;
use existing::{read_existing, ExistingStore};
pub use merge::{merge, merge_async, MergeOptions, MergeReport, MergeSource};
pub use report::{ConvertReport, DamagedRecord, TreeCount};
use sled_entries::AccountEntry;
use sqlite_target::TempStore;

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The bot's crypto store folder: holds `matrix-sdk-crypto/` (Sled) and gets `matrix-sdk-crypto.sqlite3`.
    pub crypto_store_dir: PathBuf,
    /// Unlocks the Sled store cipher; matrix-bot-sdk 0.6.6+ uses "".
    pub sled_passphrase: String,
    /// The SQLite store's passphrase; matrix-bot-sdk 0.8 passes "". `None` writes it unencrypted.
    pub sqlite_passphrase: Option<String>,
    /// Read and decode everything, write nothing.
    pub dry_run: bool,
    /// Carry on past damaged entries (they are listed in the report) instead of stopping.
    pub skip_errors: bool,
    /// Rename an existing SQLite store aside instead of refusing.
    pub force: bool,
    /// Entries per SQLite transaction: memory is bounded by this, whatever the store's size.
    pub chunk_size: usize,
    /// Who the bot's access token belongs to (`whoami`), when the caller asked the homeserver: a
    /// token of another user or device is refused before anything is written.
    pub token_owner: Option<TokenOwner>,
}

/// The user and device of an access token, as `GET /account/whoami` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub user_id: String,
    /// Absent where the server names no device for the token (an appservice's): then only the
    /// user is checked.
    pub device_id: Option<String>,
}

impl ConvertOptions {
    pub fn new(crypto_store_dir: impl Into<PathBuf>) -> Self {
        ConvertOptions {
            crypto_store_dir: crypto_store_dir.into(),
            sled_passphrase: String::new(),
            sqlite_passphrase: Some(String::new()),
            dry_run: false,
            skip_errors: false,
            force: false,
            chunk_size: 1000,
            token_owner: None,
        }
    }
}

/// Entries of `tree` read (and, unless a dry run, written) so far.
pub struct Progress {
    pub tree: &'static str,
    pub entries: u64,
}

/// Runs a whole conversion on the calling thread (its own single-threaded runtime: matrix-sdk-sqlite
/// is async). From async code, use [`convert_async`].
pub fn convert(
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ConvertReport, ConvertError> {
    on_this_thread(convert_async(options, progress))
}

/// Runs `work` to its end on the calling thread: matrix-sdk-sqlite is async, the callers are not.
fn on_this_thread<T>(
    work: impl std::future::Future<Output = Result<T, ConvertError>>,
) -> Result<T, ConvertError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConvertError::io("cannot start the async runtime", e))?
        .block_on(work)
}

pub async fn convert_async(
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<ConvertReport, ConvertError> {
    let dir = &options.crypto_store_dir;
    let location = StoreLocation::new(dir);
    location.check()?;
    let existing = read_existing(dir, options.sqlite_passphrase.as_deref()).await;
    if !options.dry_run && !options.force {
        match &existing {
            ExistingStore::Readable(store) if store.account.is_some() => {
                return Err(ConvertError::SqliteAccountExists {
                    path: location.sqlite_store(),
                })
            }
            ExistingStore::Unreadable { reason, .. } => {
                return Err(ConvertError::SqliteUnreadable {
                    path: location.sqlite_store(),
                    detail: reason.to_string(),
                })
            }
            ExistingStore::None | ExistingStore::Readable(_) => {}
        }
    }

    let sled = SledStore::open(
        &location,
        OpenOptions {
            passphrase: options.sled_passphrase.clone(),
        },
    )?;
    let mut report = ConvertReport::new(
        options.dry_run,
        &existing,
        sled.info().device_id.clone(),
        sled.info().sled_would_refuse.clone(),
    );

    // The account first: without it there is no device to keep, and Olm sessions need its keys.
    let mut account = None;
    let mut changes = Changes::default();
    let mut tally = report.tree(sled_entries::ACCOUNT);
    for item in sled.entries(sled_entries::ACCOUNT, sled_entries::account_entry, None) {
        match item {
            ScanItem::Key(entry) => {
                match entry.key {
                    AccountEntry::Account(a) => account = Some(a),
                    AccountEntry::BackupVersion(v) => changes.backup_version = Some(v),
                    AccountEntry::BackupKey(k) => changes.backup_decryption_key = Some(k),
                    AccountEntry::Unknown => {
                        tally.left_behind += 1;
                        continue;
                    }
                }
                tally.converted += 1;
            }
            ScanItem::Damaged(d) if d.sled_key == b"account\xff" => {
                return Err(ConvertError::AccountUnreadable(format!(
                    "{}: {}",
                    d.damage.kind.as_str(),
                    d.damage.message
                )))
            }
            ScanItem::Damaged(d) => tally.damaged(d, options.skip_errors, sled_entries::ACCOUNT)?,
        }
    }
    report.put(tally);
    let account: Box<Account> = account.ok_or(ConvertError::NoAccount)?;
    report.set_account(&account);
    check_the_bots_device(&report, options.token_owner.as_ref())?;
    report.backup_version = changes.backup_version.clone();
    report.has_backup_key = changes.backup_decryption_key.is_some();
    let device_keys = account.device_keys();

    let mut target = if options.dry_run {
        None
    } else {
        let t = TempStore::create(dir, options.sqlite_passphrase.as_deref()).await?;
        t.save_account(*account).await?;
        Some(t)
    };

    let mut tally = report.tree(sled_entries::PRIVATE_IDENTITY);
    for item in sled.entries(
        sled_entries::PRIVATE_IDENTITY,
        sled_entries::private_identity,
        None,
    ) {
        match item {
            ScanItem::Key(entry) => {
                tally.converted += 1;
                changes.private_identity = Some(entry.key);
            }
            ScanItem::Damaged(d) => {
                tally.damaged(d, options.skip_errors, sled_entries::PRIVATE_IDENTITY)?
            }
        }
    }
    report.has_cross_signing_identity = changes.private_identity.is_some();
    report.put(tally);
    save(target.as_ref(), changes).await?;

    // Room keys: the one tree that can be huge. Each chunk is one SQLite transaction.
    let target_ref = target.as_ref();
    let mut room_key_ids = Vec::new();
    carry(
        &sled,
        &mut report,
        options,
        progress,
        sled_entries::INBOUND_GROUP_SESSIONS,
        sled_entries::inbound_group_session,
        async |sessions, _| {
            // 8 bytes a key, to count distinct (room, session) pairs afterwards: the SQLite store keys
            // them so, and a Sled store can hold one session under two keys (older key layouts).
            room_key_ids.extend(
                sessions
                    .iter()
                    .map(|s| fingerprint(s.room_id().as_str(), s.session_id())),
            );
            save(
                target_ref,
                Changes {
                    inbound_group_sessions: sessions,
                    ..Default::default()
                },
            )
            .await
        },
    )
    .await?;
    room_key_ids.sort_unstable();
    room_key_ids.dedup();
    report.distinct_room_keys = room_key_ids.len() as u64;
    drop(room_key_ids);

    carry(
        &sled,
        &mut report,
        options,
        progress,
        sled_entries::OLM_SESSIONS,
        sled_entries::olm_session,
        async |pickles, tally| {
            let mut sessions = Vec::with_capacity(pickles.len());
            for pickle in pickles {
                match Session::from_pickle(device_keys.clone(), pickle) {
                    Ok(s) => sessions.push(s),
                    Err(e) => {
                        tally.converted -= 1;
                        let damage = sled_store::Damage::new(
                            sled_store::DamageKind::InvalidPickle,
                            format!("matrix-sdk-crypto 0.9 rejects the Olm session: {e}"),
                        );
                        let entry = sled_store::DamagedEntry {
                            position: tally.converted + tally.damaged,
                            sled_key: Vec::new(),
                            damage,
                        };
                        tally.damaged(entry, options.skip_errors, sled_entries::OLM_SESSIONS)?;
                    }
                }
            }
            save(
                target_ref,
                Changes {
                    sessions,
                    ..Default::default()
                },
            )
            .await
        },
    )
    .await?;
    carry(
        &sled,
        &mut report,
        options,
        progress,
        sled_entries::DEVICES,
        sled_entries::device,
        async |devices, _| {
            save(
                target_ref,
                Changes {
                    devices: DeviceChanges {
                        new: devices,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
        },
    )
    .await?;
    carry(
        &sled,
        &mut report,
        options,
        progress,
        sled_entries::IDENTITIES,
        sled_entries::identity,
        async |identities, _| {
            save(
                target_ref,
                Changes {
                    identities: IdentityChanges {
                        new: identities,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
        },
    )
    .await?;
    let tracked_users = carry(
        &sled,
        &mut report,
        options,
        progress,
        sled_entries::TRACKED_USERS,
        sled_entries::tracked_user,
        async |users, _| match target_ref {
            Some(t) => t.save_tracked_users(&users).await,
            None => Ok(()),
        },
    )
    .await?;
    carry(
        &sled,
        &mut report,
        options,
        progress,
        sled_entries::OLM_HASHES,
        sled_entries::olm_hash,
        async |message_hashes, _| {
            save(
                target_ref,
                Changes {
                    message_hashes,
                    ..Default::default()
                },
            )
            .await
        },
    )
    .await?;

    for (tree, why) in sled_entries::LEFT_BEHIND {
        let mut tally = report.tree(tree);
        tally.reason = Some((*why).to_owned());
        for item in sled.entries(tree, sled_entries::count_only, None) {
            match item {
                ScanItem::Key(_) => tally.left_behind += 1,
                ScanItem::Damaged(_) => tally.left_behind += 1,
            }
        }
        report.put(tally);
    }
    drop(sled);

    if let Some(mut t) = target.take() {
        let written = t
            .reopen_as_the_bot(&report.user_id, &report.device_id)
            .await?;
        check_written(&report, &written, tracked_users)?;
        let stamp = report::timestamp();
        let sled_db = dir.join(sled_store::locate::SLED_DIR_NAME).join("db");
        report.moved_aside = t.finish(dir, "before-convert", &stamp, &sled_db)?;
        report.written = Some(location.sqlite_store());
        if let Some(replaced) = report.moved_aside.clone() {
            report.same_device_repair = merge::repair_same_device(
                dir,
                &replaced,
                &report,
                options.sqlite_passphrase.as_deref(),
                progress,
            )
            .await?;
        }
    }
    Ok(report)
}

/// matrix-bot-sdk 0.8 opens the store as the device `bot-sdk.json` names (or, without one, the
/// device of its access token): both must be the account's, or the bot refuses the account at start
/// (another device in bot-sdk.json) or runs it under another device (another device's token).
fn check_the_bots_device(
    report: &ConvertReport,
    token_owner: Option<&TokenOwner>,
) -> Result<(), ConvertError> {
    if let Some(bot_sdk) = &report.bot_sdk_device_id {
        if *bot_sdk != report.device_id {
            return Err(ConvertError::BotSdkDevice {
                bot_sdk: bot_sdk.clone(),
                account: report.device_id.clone(),
            });
        }
    }
    if let Some(t) = token_owner {
        let other_device = t.device_id.as_ref().is_some_and(|d| *d != report.device_id);
        if t.user_id != report.user_id || other_device {
            return Err(ConvertError::TokenDevice {
                token_user: t.user_id.clone(),
                token_device: t.device_id.clone().unwrap_or_else(|| "(none)".into()),
                user: report.user_id.clone(),
                device: report.device_id.clone(),
            });
        }
    }
    Ok(())
}

/// The reopened store must hold what went in: the same account, every distinct room key, every
/// tracked user, the backup version.
fn check_written(
    report: &ConvertReport,
    written: &sqlite_target::WrittenStore,
    tracked_users: u64,
) -> Result<(), ConvertError> {
    let bot = &written.bot;
    if bot.user_id != report.user_id || bot.device_id != report.device_id {
        return Err(ConvertError::CheckFailed(
            "the bot opens it as another user or device".into(),
        ));
    }
    if bot.curve25519 != report.curve25519 || bot.ed25519 != report.ed25519 {
        return Err(ConvertError::CheckFailed(
            "the bot's identity keys differ from the Sled account's".into(),
        ));
    }
    if written.room_keys.total as u64 != report.distinct_room_keys {
        return Err(ConvertError::CheckFailed(format!(
            "{} room keys read back, {} written",
            written.room_keys.total, report.distinct_room_keys
        )));
    }
    if written.tracked_users != tracked_users {
        return Err(ConvertError::CheckFailed(format!(
            "{} tracked users read back, {tracked_users} written",
            written.tracked_users
        )));
    }
    if written.backup_version != report.backup_version
        || written.has_backup_key != report.has_backup_key
    {
        return Err(ConvertError::CheckFailed(
            "the backup version or key differs".into(),
        ));
    }
    Ok(())
}

/// Streams one tree in chunks of `chunk_size`: each chunk of decoded entries goes to `write` (one
/// SQLite transaction, or nothing in a dry run), damaged entries to the report (a strict run stops
/// on the first). Returns how many entries were converted.
async fn carry<T>(
    sled: &SledStore,
    report: &mut ConvertReport,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(Progress),
    tree: &'static str,
    decode: Decoder<T>,
    mut write: impl AsyncFnMut(Vec<T>, &mut TreeCount) -> Result<(), ConvertError>,
) -> Result<u64, ConvertError> {
    let mut scanner = sled.entries(tree, decode, None);
    let mut tally = report.tree(tree);
    loop {
        let chunk = next_chunk(
            &mut scanner,
            options.chunk_size.max(1),
            &mut tally,
            options.skip_errors,
        )?;
        if chunk.is_empty() {
            break;
        }
        write(chunk, &mut tally).await?;
        progress(Progress {
            tree,
            entries: tally.converted + tally.damaged,
        });
    }
    let converted = tally.converted;
    report.put(tally);
    Ok(converted)
}

async fn save(target: Option<&TempStore>, changes: Changes) -> Result<(), ConvertError> {
    match target {
        Some(t) => t.save(changes).await,
        None => Ok(()),
    }
}

/// Up to `n` decoded entries; damaged ones are recorded in `tally` (or stop the run when strict).
pub(crate) fn next_chunk<T>(
    scanner: &mut TreeScanner<T>,
    n: usize,
    tally: &mut TreeCount,
    skip_errors: bool,
) -> Result<Vec<T>, ConvertError> {
    let mut out = Vec::with_capacity(n.min(1024));
    while out.len() < n {
        match scanner.next() {
            None => break,
            Some(ScanItem::Key(entry)) => {
                tally.converted += 1;
                out.push(entry.key);
            }
            Some(ScanItem::Damaged(d)) => {
                let tree = tally.tree;
                tally.damaged(d, skip_errors, tree)?;
            }
        }
    }
    Ok(out)
}

fn fingerprint(room_id: &str, session_id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    room_id.hash(&mut h);
    session_id.hash(&mut h);
    h.finish()
}
