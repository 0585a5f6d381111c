//! `SessionStream`: a reader thread walks the store and sends batches through a bounded channel;
//! JavaScript pulls them with `await next()`. When JavaScript is slow the channel fills and the
//! reader blocks: that is the backpressure, and what keeps memory flat.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use megolm_backup::BackupPublicKey;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use rayon::prelude::*;
use sled_store::{OpenOptions, ScanItem, SledStore, StoreLocation};
use tokio::sync::mpsc;

use crate::backup::{backup_entry, key_digest, BackupEntry};
use crate::errors::{invalid_argument, open_error};

#[napi(object)]
pub struct StreamOptions {
    /// The bot's crypto store folder (holds `matrix-sdk-crypto/` and `bot-sdk.json`).
    pub crypto_store_path: String,
    pub passphrase: Option<String>,
    /// Parent folder for the private working copy (Sled never opens the source itself).
    pub work_dir: String,
    /// `exported`: plaintext room keys (extract); `backup`: entries encrypted for `backup_public_key`
    /// (upload: plaintext never reaches JavaScript); `digest`: fingerprints (verify).
    pub mode: String,
    pub backup_public_key: Option<String>,
    /// Items per batch (default 256).
    pub batch_size: Option<u32>,
    /// Batches the reader may run ahead of the consumer (default 4).
    pub read_ahead: Option<u32>,
    /// Resume after this Sled key (hex), as recorded in migration-state.json.
    pub start_after: Option<String>,
    pub reopen_every: Option<u32>,
    pub cache_capacity: Option<u32>,
}

#[napi(object)]
pub struct ExportedRoomKey {
    pub algorithm: String,
    pub room_id: String,
    pub sender_key: String,
    pub session_id: String,
    pub session_key: String,
    pub sender_claimed_keys: BTreeMap<String, String>,
    pub forwarding_curve25519_key_chain: Vec<String>,
    pub first_message_index: u32,
    pub imported: bool,
}

#[napi(object)]
pub struct KeyDigest {
    pub room_id: String,
    pub session_id: String,
    /// SHA-256 over the exported key's fields: equal digests mean equal keys.
    pub digest: String,
}

#[napi(object)]
pub struct DamagedRecord {
    pub position: i64,
    pub key_hex: String,
    pub kind: String,
    pub message: String,
}

#[napi(object)]
pub struct SessionBatch {
    pub exported: Vec<ExportedRoomKey>,
    pub backup: Vec<BackupEntry>,
    pub digests: Vec<KeyDigest>,
    pub damaged: Vec<DamagedRecord>,
    /// Entries visited so far in this run, damaged ones included.
    pub position: i64,
    /// The Sled key (hex) of the last entry of this batch: resuming after it skips this batch.
    pub resume_after: String,
}

#[napi(object)]
pub struct StoreInfo {
    pub crypto_store_path: String,
    pub store_version: Option<u32>,
    pub cipher_format: Option<String>,
    pub device_id: Option<String>,
    pub account_user_id: Option<String>,
    pub account_device_id: Option<String>,
    pub working_copy_cloned: bool,
    pub store_bytes: i64,
}

#[derive(Clone)]
enum Mode {
    Exported,
    Backup(Arc<BackupPublicKey>),
    Digest,
}

#[napi]
pub struct SessionStream {
    receiver: tokio::sync::Mutex<mpsc::Receiver<Result<SessionBatch>>>,
    stop: Arc<AtomicBool>,
    info: StoreInfo,
    // Dropping the store handle (on close) removes the working copy and releases the source lock.
    store: Mutex<Option<Arc<SledStore>>>,
}

/// Opens the store (lock, working copy, cipher) off the main thread and starts the reader.
#[napi]
pub async fn open_session_stream(options: StreamOptions) -> Result<SessionStream> {
    let mode = match options.mode.as_str() {
        "exported" => Mode::Exported,
        "digest" => Mode::Digest,
        "backup" => {
            let key = options.backup_public_key.as_deref().ok_or_else(|| invalid_argument("backup mode needs backupPublicKey"))?;
            Mode::Backup(Arc::new(BackupPublicKey::from_base64(key).map_err(|e| invalid_argument(format!("backup public key: {e}")))?))
        }
        other => return Err(invalid_argument(format!("unknown stream mode {other}"))),
    };
    let start_after = match &options.start_after {
        Some(h) if !h.is_empty() => Some(hex::decode(h).map_err(|_| invalid_argument("startAfter is not hex"))?),
        _ => None,
    };
    let mut open_options = OpenOptions::new(PathBuf::from(&options.work_dir));
    if let Some(p) = &options.passphrase {
        open_options.passphrase = p.clone();
    }
    if let Some(n) = options.reopen_every {
        open_options.reopen_every = n as usize;
    }
    if let Some(n) = options.cache_capacity {
        open_options.cache_capacity = n as u64;
    }
    let location = StoreLocation::new(&options.crypto_store_path);
    let store = tokio::task::spawn_blocking(move || SledStore::open(&location, open_options, &mut |_| {}))
        .await
        .map_err(|e| Error::from_reason(e.to_string()))?
        .map_err(open_error)?;
    let store = Arc::new(store);
    let info = store_info(&store);

    let batch_size = options.batch_size.unwrap_or(256).max(1) as usize;
    let (tx, rx) = mpsc::channel(options.read_ahead.unwrap_or(4).max(1) as usize);
    let stop = Arc::new(AtomicBool::new(false));
    let reader_store = store.clone();
    let reader_stop = stop.clone();
    std::thread::Builder::new()
        .name("sled-reader".into())
        .spawn(move || read_batches(&reader_store, start_after, mode, batch_size, &reader_stop, &tx))
        .map_err(|e| Error::from_reason(e.to_string()))?;

    Ok(SessionStream { receiver: tokio::sync::Mutex::new(rx), stop, info, store: Mutex::new(Some(store)) })
}

fn read_batches(
    store: &SledStore,
    start_after: Option<Vec<u8>>,
    mode: Mode,
    batch_size: usize,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Result<SessionBatch>>,
) {
    let mut scanner = store.sessions(start_after);
    loop {
        let mut items = Vec::with_capacity(batch_size);
        for item in scanner.by_ref() {
            items.push(item);
            if items.len() == batch_size {
                break;
            }
        }
        if items.is_empty() || stop.load(Ordering::Relaxed) {
            return; // dropping tx ends the stream
        }
        let batch = build_batch(items, &mode, scanner.position());
        if tx.blocking_send(Ok(batch)).is_err() {
            return; // the consumer closed the stream
        }
    }
}

fn build_batch(items: Vec<ScanItem>, mode: &Mode, position: u64) -> SessionBatch {
    let mut batch = SessionBatch {
        exported: Vec::new(),
        backup: Vec::new(),
        digests: Vec::new(),
        damaged: Vec::new(),
        position: position as i64,
        resume_after: String::new(),
    };
    if let Some(last) = items.last() {
        batch.resume_after = hex::encode(match last {
            ScanItem::Key(k) => &k.sled_key,
            ScanItem::Damaged(d) => &d.sled_key,
        });
    }
    let mut keys = Vec::with_capacity(items.len());
    for item in items {
        match item {
            ScanItem::Key(k) => keys.push(k.key),
            ScanItem::Damaged(d) => batch.damaged.push(DamagedRecord {
                position: d.position as i64,
                key_hex: hex::encode(&d.sled_key),
                kind: d.damage.kind.as_str().to_owned(),
                message: d.damage.message,
            }),
        }
    }
    match mode {
        // One fresh X25519 agreement per key is the cost of a backup: spread it over the cores.
        Mode::Backup(public_key) => batch.backup = keys.par_iter().map(|k| backup_entry(public_key, k)).collect(),
        Mode::Digest => {
            batch.digests = keys
                .iter()
                .map(|k| KeyDigest { room_id: k.room_id.clone(), session_id: k.session_id.clone(), digest: key_digest(k) })
                .collect()
        }
        Mode::Exported => {
            batch.exported = keys
                .into_iter()
                .map(|k| ExportedRoomKey {
                    session_key: k.session_key.to_base64().to_string(),
                    algorithm: k.algorithm,
                    room_id: k.room_id,
                    sender_key: k.sender_key,
                    session_id: k.session_id,
                    sender_claimed_keys: k.sender_claimed_keys,
                    forwarding_curve25519_key_chain: k.forwarding_curve25519_key_chain,
                    first_message_index: k.first_message_index,
                    imported: k.imported,
                })
                .collect()
        }
    }
    batch
}

fn store_info(store: &SledStore) -> StoreInfo {
    let i = store.info();
    StoreInfo {
        crypto_store_path: i.crypto_store_dir.display().to_string(),
        store_version: i.store_version.map(u32::from),
        cipher_format: i.cipher_format.map(|f| f.as_str().to_owned()),
        device_id: i.device_id.clone(),
        account_user_id: i.account_user_id.clone(),
        account_device_id: i.account_device_id.clone(),
        working_copy_cloned: i.working_copy_cloned,
        store_bytes: i.store_bytes as i64,
    }
}

#[napi]
impl SessionStream {
    /// The next batch, or `null` at the end of the store.
    #[napi]
    pub async fn next(&self) -> Result<Option<SessionBatch>> {
        let mut rx = self.receiver.lock().await;
        match rx.recv().await {
            Some(batch) => batch.map(Some),
            None => {
                self.release();
                Ok(None)
            }
        }
    }

    /// Stops the reader and removes the working copy; safe to call twice.
    #[napi]
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut rx) = self.receiver.try_lock() {
            rx.close();
            while rx.try_recv().is_ok() {}
        }
        self.release();
    }

    #[napi(getter)]
    pub fn info(&self) -> StoreInfo {
        let i = &self.info;
        StoreInfo {
            crypto_store_path: i.crypto_store_path.clone(),
            store_version: i.store_version,
            cipher_format: i.cipher_format.clone(),
            device_id: i.device_id.clone(),
            account_user_id: i.account_user_id.clone(),
            account_device_id: i.account_device_id.clone(),
            working_copy_cloned: i.working_copy_cloned,
            store_bytes: i.store_bytes,
        }
    }

    fn release(&self) {
        if let Ok(mut store) = self.store.lock() {
            store.take();
        }
    }
}
