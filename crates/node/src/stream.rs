//! `SessionStream`: a reader thread walks the store and sends batches through a bounded channel;
//! JavaScript pulls them with `await next()`. When JavaScript is slow the channel fills and the
//! reader blocks: that is the backpressure, and what keeps memory flat.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use megolm_backup::{
    to_json_elements, BackupEncryptor, BackupPublicKey, ExportedRoomKey, KeyFileItem, EXPORT_HEADER,
};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use rayon::prelude::*;
use sled_store::{Leaf, LeafItem, OpenOptions, RoomKey, SledStore, StoreCipher, StoreLocation};
use tokio::sync::mpsc;

use crate::backup::{backup_entry, key_digest, BackupEntry};
use crate::errors::{coded, invalid_argument, open_error};

#[napi(object)]
pub struct StreamOptions {
    /// The bot's crypto store folder (holds `matrix-sdk-crypto/` and `bot-sdk.json`).
    pub crypto_store_path: String,
    pub passphrase: Option<String>,
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
    /// `exported` mode: the batch's keys as JSON array elements (`{..},\n{..}`), so that plaintext
    /// session keys stay in a buffer JavaScript can wipe instead of becoming strings it cannot.
    pub exported_json: Option<Buffer>,
    /// `exported` mode: the room of each key in `exported_json`, in order (for per-room counts).
    pub exported_rooms: Vec<String>,
    /// `backup` mode: the batch's encrypted keys.
    pub backup: Option<BackupEntries>,
    pub digests: Vec<KeyDigest>,
    pub damaged: Vec<DamagedRecord>,
    /// Entries visited so far in this run, damaged ones included.
    pub position: i64,
    /// Where this batch ends (a Sled key in hex, or an element index in a key file): resuming
    /// after it skips this batch.
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
    pub store_bytes: i64,
    /// Why Sled's own open would refuse this store, which is read anyway: to be told to the user.
    pub sled_would_refuse: Vec<String>,
}

#[derive(Clone)]
enum Mode {
    Exported,
    /// The key prepared once per stream: each session's agreement then costs a quarter as much.
    Backup(Arc<BackupEncryptor>),
    Digest,
}

#[napi]
pub struct SessionStream {
    receiver: tokio::sync::Mutex<mpsc::Receiver<Result<SessionBatch>>>,
    stop: Arc<AtomicBool>,
    info: StoreInfo,
    // Dropping the store handle (on close) releases the source lock.
    store: Mutex<Option<Arc<SledStore>>>,
}

fn parse_mode(mode: &str, backup_public_key: Option<&str>) -> Result<Mode> {
    Ok(match mode {
        "exported" => Mode::Exported,
        "digest" => Mode::Digest,
        "backup" => {
            let key = backup_public_key
                .ok_or_else(|| invalid_argument("backup mode needs backupPublicKey"))?;
            Mode::Backup(Arc::new(BackupEncryptor::new(
                &BackupPublicKey::from_base64(key)
                    .map_err(|e| invalid_argument(format!("backup public key: {e}")))?,
            )))
        }
        other => return Err(invalid_argument(format!("unknown stream mode {other}"))),
    })
}

/// Opens the store (lock, recovery, cipher) off the main thread and starts the reader.
#[napi]
pub async fn open_session_stream(options: StreamOptions) -> Result<SessionStream> {
    let mode = parse_mode(&options.mode, options.backup_public_key.as_deref())?;
    let start_after = match &options.start_after {
        Some(h) if !h.is_empty() => {
            Some(hex::decode(h).map_err(|_| invalid_argument("startAfter is not hex"))?)
        }
        _ => None,
    };
    let open_options = OpenOptions { passphrase: options.passphrase.clone().unwrap_or_default() };
    let location = StoreLocation::new(&options.crypto_store_path);
    let store =
        tokio::task::spawn_blocking(move || SledStore::open(&location, open_options))
            .await
            .map_err(|e| Error::from_reason(e.to_string()))?
            .map_err(open_error)?;
    let store = Arc::new(store);
    let info = store_info(&store);
    let reader_store = store.clone();
    let cipher = store.cipher();
    SessionStream::start(
        info,
        Some(store),
        mode,
        cipher,
        options.batch_size,
        options.read_ahead,
        move |batcher| {
            // The reader thread only walks the tree: values are decoded on the converter's cores,
            // together with their encryption.
            // Values stay in the leaf they were read into: each item points at its entry.
            for item in reader_store.session_leaves(start_after) {
                match item {
                    LeafItem::Leaf { position, leaf } => {
                        for index in 0..leaf.len() {
                            let item = SourceItem::Stored { position: position + index as u64, cursor: Cursor::Entry(leaf.clone(), index) };
                            if !batcher.push(item) {
                                return;
                            }
                        }
                    }
                    LeafItem::Lost(d) => {
                        let item = SourceItem::Damaged {
                            cursor: Cursor::SledKey(d.sled_key.clone()),
                            record: DamagedRecord {
                                position: d.position as i64,
                                key_hex: hex::encode(&d.sled_key),
                                kind: d.damage.kind.as_str().to_owned(),
                                message: d.damage.message,
                            },
                        };
                        if !batcher.push(item) {
                            return;
                        }
                    }
                }
            }
            batcher.finish();
        },
    )
}

#[napi(object)]
pub struct KeyFileStreamOptions {
    /// `extracted-keys.json`, a bare JSON array of exported keys, or an Element key export.
    pub path: String,
    /// For an Element key export.
    pub export_passphrase: Option<String>,
    /// `backup` or `digest`; see `StreamOptions`.
    pub mode: String,
    pub backup_public_key: Option<String>,
    pub batch_size: Option<u32>,
    pub read_ahead: Option<u32>,
    /// Resume after this element index, as recorded in migration-state.json.
    pub start_after: Option<String>,
}

/// `upload --from FILE`: the same stream, fed from a key file instead of the Sled store.
#[napi]
pub async fn open_key_file_stream(options: KeyFileStreamOptions) -> Result<SessionStream> {
    let mode = parse_mode(&options.mode, options.backup_public_key.as_deref())?;
    let skip_through: Option<u64> = match &options.start_after {
        Some(s) if !s.is_empty() => Some(
            s.parse()
                .map_err(|_| invalid_argument("startAfter is not an element index"))?,
        ),
        _ => None,
    };
    let path = PathBuf::from(&options.path);
    let file = std::fs::File::open(&path).map_err(|e| {
        coded(
            "KEY_FILE",
            format!("cannot read {}: {e}", path.display()),
            "check the path given to --from",
        )
    })?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; EXPORT_HEADER.len()];
    let is_export = {
        use std::io::Read;
        let n = (&file).read(&mut head).unwrap_or(0);
        &head[..n] == EXPORT_HEADER.as_bytes()
    };
    let export_plaintext = if is_export {
        let passphrase = options.export_passphrase.clone().ok_or_else(|| {
            coded(
                "WRONG_PASSPHRASE",
                format!("{} is an encrypted key export", path.display()),
                "give its passphrase (EXPORT_PASSPHRASE or --export-passphrase-file)",
            )
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            coded(
                "KEY_FILE",
                format!("cannot read {}: {e}", path.display()),
                "check the path given to --from",
            )
        })?;
        // Decrypted here, once (it is one authenticated blob): a wrong passphrase is a clear error
        // before anything is sent, and the reader thread parses the plaintext.
        let plaintext = megolm_backup::decrypt_export(&text, &passphrase).map_err(|e| {
            coded(
                "WRONG_PASSPHRASE",
                format!("cannot read the key export: {e}"),
                "check the export passphrase",
            )
        })?;
        Some(plaintext)
    } else {
        None
    };
    let info = StoreInfo {
        crypto_store_path: path.display().to_string(),
        store_version: None,
        cipher_format: None,
        device_id: None,
        account_user_id: None,
        account_device_id: None,
        store_bytes: bytes as i64,
        sled_would_refuse: Vec::new(),
    };
    SessionStream::start(
        info,
        None,
        mode,
        None,
        options.batch_size,
        options.read_ahead,
        move |batcher| {
            let each = |index: u64, item: KeyFileItem| {
                if skip_through.is_some_and(|last| index <= last) {
                    return true;
                }
                batcher.push(match item {
                    KeyFileItem::Key(key) => SourceItem::Key {
                        cursor: Cursor::Index(index),
                        forwarded: !key.forwarding_curve25519_key_chain.is_empty(),
                        // Validated keys always carry their index.
                        first_message_index: key.first_message_index().unwrap_or(0),
                        key,
                    },
                    KeyFileItem::Malformed { kind, message } => SourceItem::Damaged {
                        cursor: Cursor::Index(index),
                        record: DamagedRecord {
                            position: index as i64,
                            key_hex: String::new(),
                            kind: kind.to_owned(),
                            message,
                        },
                    },
                })
            };
            let outcome = match &export_plaintext {
                Some(plaintext) => megolm_backup::for_each_key(&plaintext[..], each),
                None => match std::fs::File::open(&path) {
                    Ok(f) => megolm_backup::for_each_key(f, each),
                    Err(e) => Err(megolm_backup::KeyFileError::Json(e.to_string())),
                },
            };
            match outcome {
            Ok(()) => batcher.finish(),
            Err(megolm_backup::KeyFileError::Stopped) => {}
            Err(e) => batcher.fail(coded("KEY_FILE", format!("{}: {e}", path.display()), "give --from an extracted-keys.json, a JSON array of exported keys, or an Element key export")),
        }
        },
    )
}

/// One entry from a source, with the cursor that resumes after it.
enum SourceItem {
    /// An entry of the store as it is stored (its cursor points at it in its leaf), decoded by
    /// the converter.
    Stored {
        position: u64,
        cursor: Cursor,
    },
    Key {
        cursor: Cursor,
        key: ExportedRoomKey,
        forwarded: bool,
        first_message_index: u32,
    },
    Damaged {
        cursor: Cursor,
        record: DamagedRecord,
    },
}

/// Where a source stands after an entry; only a batch's last one is ever written out.
enum Cursor {
    SledKey(Vec<u8>),
    /// An entry of a leaf: its Sled key is built only when it is needed.
    Entry(Arc<Leaf>, usize),
    Index(u64),
}

impl Cursor {
    /// As `resume_after` and `startAfter` spell it: a Sled key in hex, an element index in decimal.
    fn encode(&self) -> String {
        match self {
            Cursor::SledKey(key) => hex::encode(key),
            Cursor::Entry(leaf, index) => leaf.entry(*index).map(|(key, _)| hex::encode(key)).unwrap_or_default(),
            Cursor::Index(index) => index.to_string(),
        }
    }
}

pub(crate) fn exported_key(k: RoomKey) -> ExportedRoomKey {
    ExportedRoomKey {
        session_key: k.session_key.to_base64(),
        algorithm: k.algorithm,
        room_id: k.room_id,
        sender_key: k.sender_key,
        session_id: k.session_id,
        sender_claimed_keys: k.sender_claimed_keys,
        forwarding_curve25519_key_chain: k.forwarding_curve25519_key_chain,
    }
}

/// Gathers source items into batches and hands them to the converter thread; `push` and `finish`
/// block while the pipeline is full (the backpressure) and report false once the consumer has gone.
struct Batcher {
    batch_size: usize,
    stop: Arc<AtomicBool>,
    to_converter: std::sync::mpsc::SyncSender<Result<(Vec<SourceItem>, u64)>>,
    items: Vec<SourceItem>,
    position: u64,
}

impl Batcher {
    fn push(&mut self, item: SourceItem) -> bool {
        self.items.push(item);
        self.position += 1;
        self.items.len() < self.batch_size || self.flush()
    }

    fn finish(&mut self) {
        if !self.items.is_empty() {
            self.flush();
        }
    }

    fn fail(&mut self, error: Error) {
        if !self.items.is_empty() && !self.flush() {
            return;
        }
        let _ = self.to_converter.send(Err(error));
    }

    fn flush(&mut self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let items = std::mem::replace(&mut self.items, Vec::with_capacity(self.batch_size));
        self.to_converter.send(Ok((items, self.position))).is_ok()
    }
}

/// Converts batches for the mode (decoding and encryption, on every core) while the reader reads
/// the next one. Four batches are in the pool at once, so that a core never waits for work: with
/// one, a core idled while the other finished the batch's last keys and while the batch was
/// gathered and handed on; with two, both finished at about the same time and waited together for
/// the next to be handed in (the cores were idle 4–7% of a scan, 2–4% with four).
fn convert_batches(mode: Mode, cipher: Option<Arc<StoreCipher>>, from_reader: std::sync::mpsc::Receiver<Result<(Vec<SourceItem>, u64)>>, tx: mpsc::Sender<Result<SessionBatch>>) {
    const IN_POOL: usize = 4;
    let mut converting = std::collections::VecDeque::with_capacity(IN_POOL);
    let deliver = |converting: &mut std::collections::VecDeque<std::sync::mpsc::Receiver<Result<SessionBatch>>>| {
        let batch = converting.pop_front().and_then(|done| done.recv().ok());
        // An error means the consumer closed the stream; dropping the receiver stops the reader.
        batch.is_some_and(|batch| tx.blocking_send(batch).is_ok())
    };
    for raw in from_reader {
        let (mode, cipher) = (mode.clone(), cipher.clone());
        let (done, converted) = std::sync::mpsc::sync_channel(1);
        rayon::spawn(move || {
            // A panic would abort the process from a pool thread: it ends the stream with an error
            // instead (never as a short, seemingly complete stream).
            let batch = raw.and_then(|(items, position)| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build_batch(items, &mode, cipher.as_deref(), position)))
                    .map_err(|_| Error::from_reason("internal error while converting keys (a bug: please report it)"))
            });
            let _ = done.send(batch);
        });
        converting.push_back(converted);
        if converting.len() == IN_POOL && !deliver(&mut converting) {
            return;
        }
    }
    while !converting.is_empty() {
        if !deliver(&mut converting) {
            return;
        }
    }
}

/// A raw store value decoded into the key it holds (or its damage, named as the scanner would).
fn decode_raw(item: SourceItem, cipher: Option<&StoreCipher>) -> SourceItem {
    let SourceItem::Stored { position, cursor } = item else {
        return item;
    };
    let Cursor::Entry(leaf, index) = &cursor else {
        unreachable!("stored items point into their leaf");
    };
    let decoded = match leaf.value(*index) {
        Some(value) => sled_store::decode_value(value, cipher),
        None => unreachable!("the reader made an item for each entry of the leaf"),
    };
    match decoded {
        Ok(key) => SourceItem::Key {
            cursor,
            forwarded: key.imported,
            first_message_index: key.first_message_index,
            key: exported_key(key),
        },
        Err(damage) => {
            let key_hex = match &cursor {
                Cursor::Index(_) => String::new(),
                other => other.encode(),
            };
            SourceItem::Damaged {
                cursor,
                record: DamagedRecord {
                    position: position as i64,
                    key_hex,
                    kind: damage.kind.as_str().to_owned(),
                    message: damage.message,
                },
            }
        }
    }
}

/// What one item becomes in a backup batch.
enum BackupOutcome {
    Entry(BackupEntry),
    Damaged(DamagedRecord),
}

/// A batch's encrypted keys in a few values rather than an object per key (which JavaScript would
/// receive as three strings each): their fragments in one buffer, and where each ends and which
/// room it is for.
#[napi(object)]
pub struct BackupEntries {
    /// `"sessionId":{KeyBackupData}` of each key, one after another, as UTF-8 JSON: the members of
    /// a room's `sessions` object in a `PUT /room_keys/keys` body. A buffer, not a string: it
    /// moves to JavaScript without a copy, and request bodies are spliced from its slices as
    /// bytes, never decoded into strings and encoded again.
    pub fragments: Buffer,
    /// Where each key's fragment ends in `fragments`, in bytes.
    pub ends: Uint32Array,
    /// Each key's room, as an index into `rooms`.
    pub room_of: Uint32Array,
    /// The rooms of the batch's keys, each once.
    pub rooms: Vec<String>,
}

impl BackupEntries {
    fn collect(entries: Vec<BackupEntry>) -> Self {
        let mut fragments = Vec::with_capacity(entries.iter().map(|e| e.fragment.len()).sum());
        let (mut ends, mut room_of) = (Vec::with_capacity(entries.len()), Vec::with_capacity(entries.len()));
        let mut rooms: Vec<String> = Vec::new();
        for entry in entries {
            fragments.extend_from_slice(entry.fragment.as_bytes());
            ends.push(fragments.len() as u32);
            // A batch holds a few hundred keys over a few rooms: a linear search is the fastest.
            let room = match rooms.iter().position(|r| *r == entry.room_id) {
                Some(i) => i,
                None => {
                    rooms.push(entry.room_id);
                    rooms.len() - 1
                }
            };
            room_of.push(room as u32);
        }
        BackupEntries { fragments: Buffer::from(fragments), ends: Uint32Array::new(ends), room_of: Uint32Array::new(room_of), rooms }
    }
}

fn build_batch(items: Vec<SourceItem>, mode: &Mode, cipher: Option<&StoreCipher>, position: u64) -> SessionBatch {
    let mut batch = SessionBatch {
        exported_json: None,
        exported_rooms: Vec::new(),
        backup: None,
        digests: Vec::new(),
        damaged: Vec::new(),
        position: position as i64,
        resume_after: String::new(),
    };
    if let Some(SourceItem::Stored { cursor, .. } | SourceItem::Key { cursor, .. } | SourceItem::Damaged { cursor, .. }) = items.last() {
        batch.resume_after = cursor.encode();
    }
    // Backup: decoding and encryption of each entry in one pass, spread over the cores (one fresh
    // X25519 agreement per key is the cost of a backup); the order of the entries is kept.
    if let Mode::Backup(encryptor) = mode {
        let outcomes: Vec<BackupOutcome> = items
            .into_par_iter()
            .map(|item| match decode_raw(item, cipher) {
                SourceItem::Key { key, forwarded, first_message_index, .. } => {
                    BackupOutcome::Entry(backup_entry(encryptor, key, forwarded, first_message_index))
                }
                SourceItem::Damaged { record, .. } => BackupOutcome::Damaged(record),
                SourceItem::Stored { .. } => unreachable!("decode_raw decodes every stored value"),
            })
            .collect();
        let mut entries = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            match outcome {
                BackupOutcome::Entry(entry) => entries.push(entry),
                BackupOutcome::Damaged(record) => batch.damaged.push(record),
            }
        }
        batch.backup = Some(BackupEntries::collect(entries));
        return batch;
    }
    let items: Vec<SourceItem> = items.into_par_iter().map(|item| decode_raw(item, cipher)).collect();
    let mut keys = Vec::with_capacity(items.len());
    for item in items {
        match item {
            SourceItem::Key {
                key,
                forwarded,
                first_message_index,
                ..
            } => keys.push((key, forwarded, first_message_index)),
            SourceItem::Damaged { record, .. } => batch.damaged.push(record),
            SourceItem::Stored { .. } => unreachable!("decode_raw decodes every stored value"),
        }
    }
    match mode {
        Mode::Backup(_) => unreachable!("handled above"),
        Mode::Digest => {
            batch.digests = keys
                .iter()
                .map(|(k, _, _)| KeyDigest {
                    room_id: k.room_id.clone(),
                    session_id: k.session_id.clone(),
                    digest: key_digest(k),
                })
                .collect()
        }
        Mode::Exported => {
            let mut json = to_json_elements(keys.iter().map(|(k, _, _)| k));
            // The buffer moves (not copies) to JavaScript, which wipes it after writing.
            batch.exported_json = Some(Buffer::from(std::mem::take(&mut *json)));
            batch.exported_rooms = keys.into_iter().map(|(k, _, _)| k.room_id.clone()).collect();
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
        store_bytes: i.store_bytes as i64,
        sled_would_refuse: i.sled_would_refuse.clone(),
    }
}

impl SessionStream {
    /// Runs `read` on its own thread, feeding a bounded channel of `read_ahead` batches.
    fn start(
        info: StoreInfo,
        store: Option<Arc<SledStore>>,
        mode: Mode,
        cipher: Option<Arc<StoreCipher>>,
        batch_size: Option<u32>,
        read_ahead: Option<u32>,
        read: impl FnOnce(&mut Batcher) + Send + 'static,
    ) -> Result<SessionStream> {
        crate::pool::start_crypto_pool();
        let (tx, rx) = mpsc::channel(read_ahead.unwrap_or(4).max(1) as usize);
        let stop = Arc::new(AtomicBool::new(false));
        let batch_size = batch_size.unwrap_or(256).max(1) as usize;
        // One raw batch waits between reader and converter: enough to overlap them, no more.
        let (to_converter, from_reader) = std::sync::mpsc::sync_channel(1);
        let mut batcher = Batcher { batch_size, stop: stop.clone(), to_converter, items: Vec::with_capacity(batch_size), position: 0 };
        std::thread::Builder::new()
            .name("key-converter".into())
            .spawn(move || convert_batches(mode, cipher, from_reader, tx))
            .map_err(|e| Error::from_reason(e.to_string()))?;
        std::thread::Builder::new()
            .name("key-reader".into())
            .spawn(move || read(&mut batcher)) // dropping the batcher's sender ends the stream
            .map_err(|e| Error::from_reason(e.to_string()))?;
        Ok(SessionStream {
            receiver: tokio::sync::Mutex::new(rx),
            stop,
            info,
            store: Mutex::new(store),
        })
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

    /// Stops the reader and releases the store's lock; safe to call twice.
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
                store_bytes: i.store_bytes,
            sled_would_refuse: i.sled_would_refuse.clone(),
        }
    }

    fn release(&self) {
        if let Ok(mut store) = self.store.lock() {
            store.take();
        }
    }
}
