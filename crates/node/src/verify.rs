//! verify's reading of the store: every key's fingerprint gathered on a native thread into
//! megolm-backup's compact `FingerprintSet` (28 bytes a key, where JavaScript maps cost about a
//! kilobyte), then checked room by room against what JavaScript downloads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use megolm_backup::{BackupDecryptionKey, FingerprintSet, RoomAnswerSplitter, ServerEntry, SessionData};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use rayon::prelude::*;
use sled_store::{LeafItem, OpenOptions, ScanItem, SledStore, StoreLocation};

use crate::backup::{key_digest_bytes, server_fingerprint};
use crate::errors::{coded, invalid_argument, open_error};
use crate::job::Outcome;
use crate::stream::exported_key;

/// Values decoded together on the pool; as the stream's batches.
const CHUNK: usize = 256;

#[napi(object)]
#[derive(Clone)]
pub struct FingerprintScanOptions {
    pub crypto_store_path: String,
    pub passphrase: Option<String>,
    /// Keys expected (the backup's count): reserved for at once.
    pub expected_keys: Option<u32>,
}

#[napi(object)]
pub struct ScanProgress {
    pub keys: i64,
    pub damaged: i64,
}

#[napi(object)]
pub struct RoomKeyCount {
    pub room_id: String,
    pub keys: u32,
}

#[napi(object)]
pub struct StoreScanSummary {
    /// Keys read, duplicates of a room and session included.
    pub keys: i64,
    pub damaged: i64,
    /// Each room with its distinct keys, in the order first read.
    pub rooms: Vec<RoomKeyCount>,
    /// Why Sled's own open would refuse this store, which is read anyway: to be told to the user.
    pub sled_would_refuse: Vec<String>,
}

#[napi(object)]
pub struct DifferentKey {
    pub session_id: String,
    pub reason: String,
}

#[napi(object)]
pub struct RoomCheckResult {
    pub checked: u32,
    pub missing: u32,
    pub different: Vec<DifferentKey>,
}

#[napi(object)]
pub struct MissingKey {
    pub room_id: String,
    pub session_id: String,
}

/// A server entry's value: only what the check reads.
#[derive(serde::Deserialize)]
struct ServerKey {
    session_data: SessionData,
}

/// One room's answer being checked as it arrives (`StoreFingerprints::start_room`).
struct RoomAnswer {
    splitter: Option<RoomAnswerSplitter>,
    different: Vec<(String, String)>,
    /// Bytes taken so far: a large room's parse is worth handing back to the allocator.
    bytes: usize,
}

#[napi]
pub struct RoomAnswerCheck {
    set: Arc<Mutex<FingerprintSet>>,
    key: Arc<BackupDecryptionKey>,
    room_id: String,
    answer: Arc<Mutex<RoomAnswer>>,
}

fn not_a_backup(room_id: &str, why: impl std::fmt::Display) -> Error {
    coded(
        "NOT_A_HOMESERVER",
        format!("the homeserver's backup of {room_id} is not the JSON the key backup API defines ({why})"),
        "check that HOMESERVER_URL is the homeserver's client API and that no proxy rewrites its answers",
    )
}

pub struct PushRoomBytes {
    set: Arc<Mutex<FingerprintSet>>,
    key: Arc<BackupDecryptionKey>,
    room_id: String,
    answer: Arc<Mutex<RoomAnswer>>,
    chunk: Buffer,
}

impl Task for PushRoomBytes {
    type Output = ();
    type JsValue = ();

    /// Splits off the entries these bytes complete, decrypts them on the pool and marks them.
    fn compute(&mut self) -> Result<()> {
        let mut answer = self.answer.lock().map_err(|_| poisoned())?;
        answer.bytes += self.chunk.len();
        let room_id = self.room_id.as_str();
        let splitter = answer.splitter.as_mut().ok_or_else(|| Error::from_reason("the room's answer was already finished"))?;
        let entries = splitter.push(&self.chunk).map_err(|e| not_a_backup(room_id, e))?;
        crate::pool::start_crypto_pool();
        let key = &*self.key;
        let fingerprints: Vec<(String, std::result::Result<[u8; 32], String>)> = entries
            .into_par_iter()
            .map(|e| {
                let fingerprint = serde_json::from_slice::<ServerKey>(&e.value)
                    .map_err(|err| not_a_backup(room_id, err))
                    .map(|k| server_fingerprint(key, room_id, &e.session_id, &k.session_data));
                fingerprint.map(|f| (e.session_id, f))
            })
            .collect::<Result<_>>()?;
        let different = self.set.lock().map_err(|_| poisoned())?.mark_entries(
            room_id,
            fingerprints.iter().map(|(session_id, f)| ServerEntry { session_id, fingerprint: f.as_ref().map(|f| *f).map_err(|e| e.as_str()) }),
        );
        answer.different.extend(different);
        Ok(())
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

#[napi]
impl RoomAnswerCheck {
    /// The next bytes of the room's answer, as received; resolves when they are checked (so the
    /// download goes no faster than the check, and holds no more than a chunk).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn push(&self, chunk: Buffer) -> AsyncTask<PushRoomBytes> {
        AsyncTask::new(PushRoomBytes { set: self.set.clone(), key: self.key.clone(), room_id: self.room_id.clone(), answer: self.answer.clone(), chunk })
    }

    /// The answer has ended: the room's outcome (its store keys the server did not have included).
    #[napi]
    pub fn finish(&self) -> Result<RoomCheckResult> {
        let mut answer = self.answer.lock().map_err(|_| poisoned())?;
        let splitter = answer.splitter.take().ok_or_else(|| Error::from_reason("the room's answer was already finished"))?;
        splitter.finish().map_err(|e| not_a_backup(&self.room_id, e))?;
        let (checked, missing) = self.set.lock().map_err(|_| poisoned())?.room_outcome(&self.room_id);
        // The entries were parsed and decrypted on the pool's threads, whose glibc arenas keep
        // what they freed: hand it back before the next room. Small rooms free too little to matter.
        if answer.bytes >= 1 << 20 {
            sled_store::release_freed_memory();
        }
        Ok(RoomCheckResult {
            checked,
            missing,
            different: std::mem::take(&mut answer.different).into_iter().map(|(session_id, reason)| DifferentKey { session_id, reason }).collect(),
        })
    }
}

#[napi]
pub struct StoreFingerprints {
    options: FingerprintScanOptions,
    set: Arc<Mutex<FingerprintSet>>,
    keys: Arc<AtomicU64>,
    damaged: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    outcome: Outcome<()>,
    sled_would_refuse: Vec<String>,
}

fn open_store(options: &FingerprintScanOptions) -> std::result::Result<SledStore, sled_store::OpenError> {
    let open_options = OpenOptions { passphrase: options.passphrase.clone().unwrap_or_default() };
    SledStore::open(&StoreLocation::new(&options.crypto_store_path), open_options)
}

/// verify's threads (the reader, the pool, libuv's workers parsing each room's download) each got
/// a glibc arena of their own, and each arena kept what its thread freed: two arenas for the
/// threads started from here on (measured on the 1M store with MALLOC_ARENA_MAX=2: verify's peak
/// 287 -> 227 MB). Not for upload, whose encryption threads allocate in parallel all the time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; arenas that exist are kept.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn poisoned() -> Error {
    Error::from_reason("the fingerprint set was poisoned by a panic")
}

/// Opens the store (lock, recovery, cipher) off the main thread, so that its errors are the
/// stream's, and starts reading it on a thread of its own.
#[napi]
pub async fn start_fingerprint_scan(options: FingerprintScanOptions) -> Result<StoreFingerprints> {
    let opened = options.clone();
    let store = tokio::task::spawn_blocking(move || open_store(&opened))
        .await
        .map_err(|e| Error::from_reason(e.to_string()))?
        .map_err(open_error)?;
    let sled_would_refuse = store.info().sled_would_refuse.clone();
    limit_malloc_arenas();
    crate::pool::start_crypto_pool();
    let set = Arc::new(Mutex::new(FingerprintSet::with_capacity(options.expected_keys.unwrap_or(0) as usize)));
    let (keys, damaged, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let outcome = {
        let (set, keys, damaged, stop) = (set.clone(), keys.clone(), damaged.clone(), stop.clone());
        Outcome::spawn("fingerprint-scan", move || {
            let cipher = store.cipher();
            let mut chunk = Vec::with_capacity(CHUNK);
            let add = |chunk: &mut Vec<_>| -> Result<()> {
                let read: Vec<_> = chunk
                    .par_drain(..)
                    .map(|(leaf, index): (Arc<sled_store::Leaf>, usize)| match leaf.value(index) {
                        Some(value) => sled_store::decode_value(value, cipher.as_deref()),
                        None => unreachable!("the chunk holds entries of their leaves"),
                    })
                    .collect();
                let mut set = set.lock().map_err(|_| poisoned())?;
                for key in read {
                    match key {
                        Ok(key) => {
                            let key = exported_key(key);
                            set.insert(&key.room_id, &key.session_id, &key_digest_bytes(&key));
                            keys.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            damaged.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            };
            for item in store.session_leaves(None) {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::from_reason("the store read was stopped"));
                }
                match item {
                    LeafItem::Leaf { leaf, .. } => {
                        for index in 0..leaf.len() {
                            chunk.push((leaf.clone(), index));
                            if chunk.len() == CHUNK {
                                add(&mut chunk)?;
                            }
                        }
                    }
                    LeafItem::Lost(_) => {
                        damaged.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            add(&mut chunk)?;
            drop(store); // the source lock goes before the server is asked
            sled_store::release_freed_memory(); // the page table and the pool's buffers: for the download
            set.lock().map_err(|_| poisoned())?.seal();
            Ok(())
        })?
    };
    Ok(StoreFingerprints { options, set, keys, damaged, stop, outcome, sled_would_refuse })
}

#[napi]
impl StoreFingerprints {
    #[napi]
    pub fn progress(&self) -> ScanProgress {
        ScanProgress {
            keys: self.keys.load(Ordering::Relaxed) as i64,
            damaged: self.damaged.load(Ordering::Relaxed) as i64,
        }
    }

    /// Resolves when the whole store is read.
    #[napi]
    pub async fn wait(&self) -> Result<StoreScanSummary> {
        self.outcome.wait().await?;
        let set = self.set.lock().map_err(|_| poisoned())?;
        Ok(StoreScanSummary {
            keys: self.keys.load(Ordering::Relaxed) as i64,
            damaged: self.damaged.load(Ordering::Relaxed) as i64,
            rooms: set.rooms().map(|(room_id, keys)| RoomKeyCount { room_id: room_id.to_owned(), keys }).collect(),
            sled_would_refuse: self.sled_would_refuse.clone(),
        })
    }

    /// One room's store keys against the server's answer for that room (`GET
    /// /room_keys/keys/{roomId}`), after `wait`: the answer's bytes are pushed as they arrive and
    /// parsed, decrypted and compared here, so a room's entries never become JavaScript objects
    /// nor one string of the whole answer. A retried download starts a new check of the room
    /// (marking a key found twice is harmless).
    #[napi]
    pub fn start_room(&self, room_id: String, private_key: Buffer) -> Result<RoomAnswerCheck> {
        let bytes: [u8; 32] = private_key
            .as_ref()
            .try_into()
            .map_err(|_| invalid_argument("a backup private key has 32 bytes"))?;
        Ok(RoomAnswerCheck {
            set: self.set.clone(),
            key: Arc::new(BackupDecryptionKey::from_bytes(bytes)),
            room_id,
            answer: Arc::new(Mutex::new(RoomAnswer { splitter: Some(RoomAnswerSplitter::new()), different: Vec::new(), bytes: 0 })),
        })
    }

    /// Names up to `limit` of the keys the checks did not find, reading the store once more: the
    /// set holds hashes, not session IDs, and only a failed check needs the names.
    #[napi]
    pub async fn missing_keys(&self, limit: u32) -> Result<Vec<MissingKey>> {
        let (options, set) = (self.options.clone(), self.set.clone());
        tokio::task::spawn_blocking(move || -> Result<Vec<MissingKey>> {
            let store = open_store(&options).map_err(open_error)?;
            let set = set.lock().map_err(|_| poisoned())?;
            let mut missing = Vec::new();
            for item in store.sessions(None) {
                if missing.len() >= limit as usize {
                    break;
                }
                if let ScanItem::Key(k) = item {
                    // The set's lookup first: the list is searched only for the few keys it flags.
                    if set.is_missing(&k.key.room_id, &k.key.session_id)
                        && !missing.iter().any(|m: &MissingKey| m.room_id == k.key.room_id && m.session_id == k.key.session_id)
                    {
                        missing.push(MissingKey { room_id: k.key.room_id.clone(), session_id: k.key.session_id.clone() });
                    }
                }
            }
            Ok(missing)
        })
        .await
        .map_err(|e| Error::from_reason(e.to_string()))?
    }

    /// Stops a read still under way; safe to call twice.
    #[napi]
    pub fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
