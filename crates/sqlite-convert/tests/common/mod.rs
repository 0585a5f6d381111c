//! What the integration tests share: private copies of the committed fixtures, and file hashes.
#![allow(dead_code)]

pub mod olm;
pub mod upgraded;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use matrix_sdk_crypto::{DecryptionSettings, TrustRequirement};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlite_convert::ConvertOptions;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures")
}

/// A private copy of a committed fixture's crypto store folder (`store/`), with its expected.json.
pub fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf, serde_json::Value) {
    let src = fixtures_dir().join(name);
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(src.join("store"))
        .arg(&store)
        .status()
        .unwrap();
    assert!(status.success());
    let expected =
        serde_json::from_slice(&std::fs::read(src.join("expected.json")).unwrap()).unwrap();
    (tmp, store, expected)
}

/// Every file at or under `paths` with its SHA-256: "nothing written, nothing created" is checked on it.
pub fn hash_files(paths: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = paths.to_vec();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            let digest = Sha256::digest(std::fs::read(&p).unwrap());
            out.insert(p, digest.iter().map(|b| format!("{b:02x}")).collect());
        }
    }
    out
}

/// A private copy of a fixture's store (convert and merge write beside the Sled one).
pub struct Case {
    pub _tmp: tempfile::TempDir,
    pub store: PathBuf,
    pub expected: Value,
}

pub fn case(name: &str) -> Case {
    let (_tmp, store, expected) = copy_fixture(name);
    Case {
        _tmp,
        store,
        expected,
    }
}

impl Case {
    pub fn options(&self) -> ConvertOptions {
        let mut o = ConvertOptions::new(&self.store);
        if let Some(p) = self.expected["passphrase"].as_str() {
            o.sled_passphrase = p.to_owned();
        }
        o
    }
    pub fn sqlite(&self) -> PathBuf {
        self.store.join("matrix-sdk-crypto.sqlite3")
    }
}

/// The Sled store's files and bot-sdk.json (SQLite files aside) with their SHA-256.
pub fn hash_tree(dir: &Path) -> BTreeMap<PathBuf, String> {
    hash_files(&[dir.join("matrix-sdk-crypto"), dir.join("bot-sdk.json")])
}

/// Events decrypt whatever the sender's verification state (the fixtures verify no one).
pub fn settings() -> DecryptionSettings {
    DecryptionSettings {
        sender_device_trust_requirement: TrustRequirement::Untrusted,
    }
}
