//! Sled files damaged at the byte level (a truncated `db`, flipped bytes in its segments, a missing
//! `conf`), on a genuine store: the reader opens with a classified error or recovers what Sled can
//! give, reports the rest, never hangs and never returns a key the store did not hold.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use sled_store::{OpenOptions, ScanItem, SledStore, StoreLocation};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures/empty-passphrase")
}

/// (session_id, session_key) of every key the genuine code says it wrote.
fn genuine_keys() -> HashSet<(String, String)> {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["keys"].as_array().unwrap().iter().map(|k| (k["session_id"].as_str().unwrap().to_owned(), k["session_key"].as_str().unwrap().to_owned())).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

struct Outcome {
    opened: bool,
    keys: Vec<(String, String)>,
    damaged: usize,
}

/// Opens and scans on another thread; a scan that takes more than a minute is a hang.
fn read(store: &Path) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let store = store.to_owned();
    std::thread::spawn(move || {
        let outcome = match SledStore::open(&StoreLocation::new(&store), OpenOptions::default()) {
            Err(e) => {
                assert!(!e.code().is_empty() && !e.to_string().is_empty());
                Outcome { opened: false, keys: vec![], damaged: 0 }
            }
            Ok(s) => {
                let mut o = Outcome { opened: true, keys: vec![], damaged: 0 };
                for item in s.sessions(None) {
                    match item {
                        ScanItem::Key(k) => o.keys.push((k.key.session_id.clone(), k.key.session_key.to_base64().to_string())),
                        ScanItem::Damaged(_) => o.damaged += 1,
                    }
                }
                o
            }
        };
        let _ = tx.send(outcome);
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the reader hung on a damaged store")
}

fn damaged_copy(damage: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    copy_dir(&fixture().join("store"), &store);
    damage(&store.join("matrix-sdk-crypto"));
    (dir, store)
}

fn assert_only_genuine_keys(o: &Outcome) {
    let genuine = genuine_keys();
    for k in &o.keys {
        assert!(genuine.contains(k), "a key the store never held: {}", k.0);
    }
}

#[test]
fn the_undamaged_copy_gives_every_key() {
    let (_d, store) = damaged_copy(|_| {});
    let o = read(&store);
    assert!(o.opened && o.damaged == 0);
    assert_eq!(o.keys.into_iter().collect::<HashSet<_>>(), genuine_keys());
}

#[test]
fn a_truncated_db_never_hangs_and_never_invents_keys() {
    for fraction in [0.9, 0.5, 0.1] {
        let (_d, store) = damaged_copy(|sled| {
            let db = sled.join("db");
            let len = std::fs::metadata(&db).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len((len as f64 * fraction) as u64).unwrap();
        });
        assert_only_genuine_keys(&read(&store));
    }
}

#[test]
fn flipped_bytes_in_segments_never_hang_and_never_invent_keys() {
    let mut state = 99u64;
    for _ in 0..12 {
        let (_d, store) = damaged_copy(|sled| {
            let db = sled.join("db");
            let mut bytes = std::fs::read(&db).unwrap();
            for _ in 0..8 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (state >> 33) as usize % bytes.len();
                bytes[i] ^= 0xA5;
            }
            std::fs::write(&db, bytes).unwrap();
        });
        assert_only_genuine_keys(&read(&store));
    }
}

#[test]
fn a_missing_conf_is_a_clear_refusal_or_a_full_read() {
    let (_d, store) = damaged_copy(|sled| std::fs::remove_file(sled.join("conf")).unwrap());
    let o = read(&store);
    assert_only_genuine_keys(&o);
}
