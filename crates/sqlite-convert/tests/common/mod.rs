//! What the integration tests share: private copies of the committed fixtures, and file hashes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

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
